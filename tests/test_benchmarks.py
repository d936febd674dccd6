"""Smoke test of the benchmark suite: it runs end to end and prints its tables.

It asserts what a reader of the report sees (rows, numbers, no failed
requests, nothing left behind), never a speed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.servers import find_lighttpd

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"\d+(?:\.\d+)?"

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
    command += ["--concurrency", "1,4", "--isolate", "none", "--client", "builtin"]
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
