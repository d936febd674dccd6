"""Smoke tests of the benchmark suite: it runs end to end and prints its tables.

They assert what a reader of the report sees (rows, numbers, no failed
requests, nothing left behind), never a speed. The last two tests check the
warm pool phase's sans-IO parts (reading /metrics, its target) on made-up
figures.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.load import LoadResult
from benchmarks.report import PACED, WarmLoad, WarmResult, evaluate_targets
from benchmarks.servers import PoolFigures, find_lighttpd, pool_figures

from .conftest import need

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"\d+(?:\.\d+)?"
WARM_GOAL = "warm pool (paced): stack p50 ÷ python3 spawn p50 ≤ 0.25"
WARM_LOADS = ["paced c=1", "back-to-back c=1", "c=8"]

pytestmark = pytest.mark.slow


def _rows(output: str, first: str) -> list[list[str]]:
    """Cells of the markdown rows whose first cell is ``first``."""
    rows = []
    for line in output.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[0] == first:
                rows.append(cells)
    return rows


def test_quick_run_prints_every_table() -> None:
    if find_lighttpd() is None:
        pytest.skip("lighttpd is not installed (apt-get install lighttpd): no baseline to compare")
    command = [sys.executable, "-m", "benchmarks", "--quick", "--languages", "bash"]
    command += ["--concurrency", "1,4", "--isolate", "none", "--client", "builtin", "--warm", "0"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout

    figures = {(row[1], row[2]): row for row in _rows(out, "bash") if len(row) == 9}
    for c in ("1", "4"):
        for server in ("floor (spawn)", "lighttpd cgi", "stack none"):
            row = figures[(c, server)]
            requests, errors, rate, p50, p99 = row[3:8]
            assert int(requests) > 0, row
            assert errors == "0", row
            for value in (rate, p50, p99):
                assert re.fullmatch(NUMBER, value), row

    ratios = [row for row in _rows(out, "bash") if len(row) == 10]
    assert {row[1] for row in ratios} == {"1", "4"}
    for row in ratios:
        assert all(re.fullmatch(NUMBER, value) for value in row[3:9]), row

    memory = [row for row in out.splitlines() if re.match(r"\| \d+ +\| +\d+\.\d \|", row)]
    assert len(memory) == 3, out
    assert re.search(r"\| [+-]\d+\.\d\d% \|", memory[-1])

    # Socket errors are counted but not asserted: httpx reuses idle keep-alive
    # connections that the server may be closing at that moment.
    (overload,) = _rows(out, "256 clients, cap 16 + queue 64")
    responses, ok, unavailable, other, errors, children, left = overload[1:]
    assert int(ok) > 0, overload
    assert int(unavailable) > 0, overload
    assert int(ok) + int(unavailable) == int(responses), overload
    assert re.fullmatch(r"\d+", errors), overload
    assert (other, children, left) == ("0", "0", "0"), overload

    assert "## Targets" in out
    assert "bash c=1 none: stack p50 − spawn floor p50 ≤ 1.5 ms" in out
    # No warm pool phase (--warm 0): its target says so.
    assert "## Warm pool" not in out
    (warm_target,) = _rows(out, f"python c=1, {WARM_GOAL}")
    assert warm_target[1:] == ["-", "not measured (the warm pool phase did not run for python)"]


def test_warm_pool_phase_prints_its_table_and_target(tmp_path: Path) -> None:
    need("python3")
    saved = tmp_path / "bench.json"
    command = [sys.executable, "-m", "benchmarks", "--quick", "--languages", "python"]
    command += ["--concurrency", "1", "--isolate", "none", "--client", "builtin"]
    command += ["--requests", "20", "--memory-calls", "20", "--warm", "2", "--json", str(saved)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout

    assert "## Warm pool" in out
    assert "A stack with `--warm LANG=2` beside one without" in out
    rows = [row for row in _rows(out, "python") if len(row) == 13]
    progress = done.stderr[-3000:]  # says why a phase did not run
    assert [row[1:3] for row in rows] == [["none", load] for load in WARM_LOADS], progress
    for row in rows:
        floor, cold50, cold99, warm50, warm99, over, cold_rate, warm_rate, hits = row[3:12]
        for value in (cold50, cold99, warm50, warm99):
            assert re.fullmatch(NUMBER, value), row
        one = row[2] != "c=8"
        for value in (floor, over):
            assert re.fullmatch(NUMBER, value) if one else value == "-", row
        for value in (cold_rate, warm_rate):
            assert re.fullmatch(NUMBER, value) if row[2] != "paced c=1" else value == "-", row
        assert re.fullmatch(r"\d+% \(\d+/\d+\)", hits), row
        assert row[12] == "", (row, progress)  # no errors, every pool full

    (target,) = _rows(out, f"python c=1 none, {WARM_GOAL}")
    assert re.fullmatch(rf"{NUMBER} \({NUMBER} vs {NUMBER} ms; cold {NUMBER} ms; "
                        r"hit rate \d+/\d+\)", target[1]), target  # fmt: skip
    assert target[2] in ("met", "MISSED"), target

    (warm,) = json.loads(saved.read_text())["warm"]
    assert (warm["language"], warm["isolate"], warm["size"]) == ("python", "none", 2)
    assert [load["load"] for load in warm["loads"]] == ["paced", "back-to-back", "saturation"]
    # --quick: 30 requests, one at a time, so the pool counts each call once.
    for load in warm["loads"][:2]:
        assert load["warm"]["statuses"] == {"200": 30}, load
        assert load["cold"]["statuses"] == {"200": 30}, load
        assert load["hits"] + load["early"] + load["misses"] == 30, load
    assert warm["loads"][0]["hits"] > 0, warm["loads"][0]


METRICS = """\
# TYPE stack_warm_pool_size gauge
stack_warm_pool_size{language="python"} 3.0
stack_warm_pool_size{language="javascript"} 1.0
# TYPE stack_warm_pool_hits_total counter
stack_warm_pool_hits_total{language="python"} 5.0
stack_warm_pool_hits_created{language="python"} 1.7954540009780622e+09
"""


def test_pool_figures_read_one_language_and_absent_counters_as_zero() -> None:
    assert pool_figures(METRICS, "python") == PoolFigures(size=3, hits=5, misses=0)
    assert pool_figures(METRICS, "javascript") == PoolFigures(size=1, hits=0, misses=0)
    assert pool_figures("", "python") == PoolFigures(0, 0, 0)


def test_warm_target_compares_paced_warm_p50_with_the_spawn_floor() -> None:
    def result(p50: float) -> LoadResult:
        return LoadResult(requests=10, errors=0, statuses={200: 10}, duration=1.0, p50=p50)

    paced = WarmLoad(PACED, 1, result(0.030), result(0.004), hits=9, misses=1)
    warm = WarmResult("python", "bwrap", 4, 0.05, result(0.020), [paced])
    target = next(t for t in evaluate_targets([], None, None, [warm]) if "warm" in t.name)
    assert target.goal == f"python c=1 bwrap, {WARM_GOAL}"
    assert target.measured == "0.20 (4.00 vs 20.00 ms; cold 30.00 ms; hit rate 9/10)"
    assert target.verdict == "met"

    broken = WarmResult("python", "none", 4, 0.05, result(0.020), [], "stack did not start")
    target = next(t for t in evaluate_targets([], None, None, [broken]) if "warm" in t.name)
    assert (target.verdict, target.note) == ("not measured", "stack did not start")
