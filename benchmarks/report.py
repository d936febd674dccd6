"""Figures into tables: results side by side, ratios to the baselines, the targets.

Sans-IO: plain functions from result values to text. Tables are GitHub
markdown with aligned columns, readable in a terminal and pasted as they are
into docs/BENCHMARKS.md.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .load import LoadResult
from .profile import Profile

FLOOR, LIGHTTPD, STACK = "floor", "lighttpd", "stack"
SERVER_LABELS = {FLOOR: "floor (spawn)", LIGHTTPD: "lighttpd cgi", STACK: "stack"}


@dataclass(frozen=True)
class Cell:
    """One measured configuration: a server, a language, a concurrency.

    Attributes:
        server: ``floor``, ``lighttpd`` or ``stack``.
        isolate: stack's ``--isolate`` mode; empty for the baselines.
        result: None when it could not be measured (``note`` says why).
        usage_wall: stack only: the median call wall from X-Stack-Usage, seconds.
        server_cpu: CPU seconds per request of the server process itself.
        calls_cpu: CPU seconds per request of its reaped children (the calls;
            for the floor, the spawned interpreters).
    """

    server: str
    isolate: str
    language: str
    concurrency: int
    result: LoadResult | None
    note: str = ""
    usage_wall: float = math.nan
    server_cpu: float = math.nan
    calls_cpu: float = math.nan

    @property
    def label(self) -> str:
        if self.server == STACK:
            return f"stack {self.isolate}"
        return SERVER_LABELS[self.server]

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "isolate": self.isolate or None,
            "language": self.language,
            "concurrency": self.concurrency,
            "result": self.result.to_json() if self.result else None,
            "note": self.note or None,
            "usage_wall": _or_none(self.usage_wall),
            "server_cpu": _or_none(self.server_cpu),
            "calls_cpu": _or_none(self.calls_cpu),
        }


def _or_none(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class MemoryResult:
    """The stack process's RSS after successive batches of calls.

    Attributes:
        points: (calls so far, RSS bytes), the first one after the warm-up.
    """

    isolate: str
    language: str
    concurrency: int
    points: list[tuple[int, int]]
    note: str = ""

    @property
    def growth(self) -> float:
        """RSS growth from the second-last point to the last, as a fraction."""
        if len(self.points) < 2 or self.points[-2][1] <= 0:
            return math.nan
        return (self.points[-1][1] - self.points[-2][1]) / self.points[-2][1]

    def to_json(self) -> dict[str, Any]:
        return {
            "isolate": self.isolate,
            "language": self.language,
            "concurrency": self.concurrency,
            "points": [{"calls": c, "rss": r} for c, r in self.points],
            "growth": self.growth,
            "note": self.note or None,
        }


@dataclass(frozen=True)
class OverloadResult:
    """Many more clients than slots: what they got and what was left behind.

    Attributes:
        children_left: the stack process's descendants once the load stopped.
        sandbox_left: sandbox-uid processes still alive (also after the server stopped).
    """

    isolate: str
    language: str
    concurrency: int
    max_running: int
    max_queue: int
    result: LoadResult | None
    children_left: list[str] = field(default_factory=list)
    sandbox_left: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def ok(self) -> bool:
        """Only 200s and 503s, at least one 503, no socket error, nothing left."""
        r = self.result
        return (
            r is not None
            and r.errors == 0
            and set(r.statuses) <= {200, 503}
            and r.statuses.get(503, 0) > 0
            and not self.children_left
            and not self.sandbox_left
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "isolate": self.isolate,
            "language": self.language,
            "concurrency": self.concurrency,
            "max_running": self.max_running,
            "max_queue": self.max_queue,
            "result": self.result.to_json() if self.result else None,
            "children_left": self.children_left,
            "sandbox_left": self.sandbox_left,
            "ok": self.ok,
            "note": self.note or None,
        }


PACED, BACK_TO_BACK, SATURATION = "paced", "back-to-back", "saturation"
WARM_LOADS = {PACED: "paced c=1", BACK_TO_BACK: "back-to-back c=1", SATURATION: "c=8"}


@dataclass(frozen=True)
class WarmLoad:
    """One load against a stack without a warm pool (cold) and one with it (warm).

    Attributes:
        kind: ``paced``, ``back-to-back`` or ``saturation`` (see ``WARM_LOADS``).
        hits, misses, early: the warm pool's counters over the warm measurement
            (early: handed an interpreter still loading).
        note: what went wrong, or what to know about the figures.
    """

    kind: str
    concurrency: int
    cold: LoadResult
    warm: LoadResult
    hits: int = 0
    misses: int = 0
    note: str = ""
    early: int = 0

    @property
    def calls(self) -> int:
        """The calls the pool counted."""
        return self.hits + self.early + self.misses

    @property
    def hit_rate(self) -> float:
        """Calls given a loaded interpreter over the pool's calls (nan without calls)."""
        return self.hits / self.calls if self.calls else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "load": self.kind,
            "concurrency": self.concurrency,
            "cold": self.cold.to_json(),
            "warm": self.warm.to_json(),
            "hits": self.hits,
            "early": self.early,
            "misses": self.misses,
            "hit_rate": _or_none(self.hit_rate),
            "note": self.note or None,
        }


@dataclass(frozen=True)
class WarmResult:
    """The warm pool phase for one language and isolate mode.

    Attributes:
        size: the pool (``--warm LANG=size``).
        gap: seconds between the paced requests.
        floor: the interpreter's raw spawn at c=1.
        loads: paced, back-to-back, saturation (fewer when it stopped early).
        note: why it stopped early or did not run.
    """

    language: str
    isolate: str
    size: int
    gap: float
    floor: LoadResult
    loads: list[WarmLoad]
    note: str = ""

    def load(self, kind: str) -> WarmLoad | None:
        for item in self.loads:
            if item.kind == kind:
                return item
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "isolate": self.isolate,
            "size": self.size,
            "gap": self.gap,
            "floor": self.floor.to_json(),
            "loads": [item.to_json() for item in self.loads],
            "note": self.note or None,
        }


@dataclass(frozen=True)
class Target:
    """A target of the issue, with what was measured against it."""

    name: str
    goal: str
    measured: str
    verdict: str  # "met", "MISSED", "not measured"
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "goal": self.goal,
            "measured": self.measured,
            "verdict": self.verdict,
            "note": self.note or None,
        }


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], right: int = 0) -> str:
    """A markdown table; columns from ``right`` on are right-aligned (numbers)."""
    body = [list(map(str, row)) for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            out.append(cell.rjust(width) if right and i >= right else cell.ljust(width))
        return "| " + " | ".join(out) + " |"

    rule = [
        "-" * (w + 1) + ":" if right and i >= right else "-" * (w + 2) for i, w in enumerate(widths)
    ]
    return "\n".join([line(headers), "|" + "|".join(rule) + "|"] + [line(r) for r in body])


def ms(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1000:.2f}"


def num(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _order(cell: Cell, languages: Sequence[str]) -> tuple[int, int, int, str]:
    server = {FLOOR: 0, LIGHTTPD: 1, STACK: 2}[cell.server]
    lang = languages.index(cell.language) if cell.language in languages else len(languages)
    return (lang, cell.concurrency, server, cell.isolate)


def _languages(cells: Sequence[Cell]) -> list[str]:
    seen: list[str] = []
    for cell in cells:
        if cell.language not in seen:
            seen.append(cell.language)
    return seen


def figures_table(cells: Sequence[Cell]) -> str:
    """Every server side by side: per language and concurrency, the floor, lighttpd, stack."""
    languages = _languages(cells)
    rows = []
    for cell in sorted(cells, key=lambda c: _order(c, languages)):
        r = cell.result
        if r is None:
            rows.append(
                [
                    cell.language,
                    str(cell.concurrency),
                    cell.label,
                    "-",
                    "-",
                    "-",
                    "-",
                    "-",
                    cell.note,
                ]
            )
            continue
        rows.append(
            [
                cell.language,
                str(cell.concurrency),
                cell.label,
                str(r.requests),
                str(r.failures),
                num(r.rate),
                ms(r.p50),
                ms(r.p99),
                cell.note,
            ]
        )
    headers = ["language", "c", "server", "requests", "errors", "req/s", "p50 ms", "p99 ms", "note"]
    return markdown_table(headers, rows, right=3)


def _baseline(
    cells: Sequence[Cell], server: str, language: str, concurrency: int
) -> LoadResult | None:
    for cell in cells:
        if (cell.server, cell.language, cell.concurrency) == (server, language, concurrency):
            return cell.result
    return None


def ratios_table(cells: Sequence[Cell]) -> str:
    """Each stack figure over the same figure of each baseline (same language and concurrency).

    ``p50 - floor`` is the latency stack adds to a bare spawn, in ms.
    """
    languages = _languages(cells)
    nan = math.nan
    rows = []
    for cell in sorted(cells, key=lambda c: _order(c, languages)):
        if cell.server != STACK or cell.result is None:
            continue
        r = cell.result
        floor = _baseline(cells, FLOOR, cell.language, cell.concurrency)
        light = _baseline(cells, LIGHTTPD, cell.language, cell.concurrency)
        row = [cell.language, str(cell.concurrency), cell.label]
        for base in (floor, light):
            row += [
                num(ratio(r.rate, base.rate if base else nan), 2),
                num(ratio(r.p50, base.p50 if base else nan), 2),
                num(ratio(r.p99, base.p99 if base else nan), 2),
            ]
        row.append(ms(r.p50 - floor.p50) if floor else "-")
        rows.append(row)
    headers = [
        "language",
        "c",
        "server",
        "req/s ÷ floor",
        "p50 ÷ floor",
        "p99 ÷ floor",
        "req/s ÷ lighttpd",
        "p50 ÷ lighttpd",
        "p99 ÷ lighttpd",
        "p50 − floor ms",
    ]
    return markdown_table(headers, rows, right=3)


def cpu_table(cells: Sequence[Cell]) -> str:
    """CPU per request: the server process's own, and its calls' (all measured processes).

    On 2 cores, the server's own CPU per request bounds its throughput at
    1/server_cpu (one thread), and the sum at 2/(server + calls).
    """
    languages = _languages(cells)
    rows = []
    for cell in sorted(cells, key=lambda c: _order(c, languages)):
        if cell.result is None or math.isnan(cell.calls_cpu):
            continue
        total = cell.calls_cpu + (0.0 if math.isnan(cell.server_cpu) else cell.server_cpu)
        rows.append(
            [
                cell.language,
                str(cell.concurrency),
                cell.label,
                ms(cell.server_cpu),
                ms(cell.calls_cpu),
                ms(total),
            ]
        )
    headers = ["language", "c", "server", "server CPU ms/req", "calls CPU ms/req", "total ms/req"]
    return markdown_table(headers, rows, right=3)


def breakdown_table(cells: Sequence[Cell]) -> str:
    """Where a lone call's latency goes: the bare spawn, the sandboxed call, the server.

    ``call wall`` is what stack reports in X-Stack-Usage (launcher spawned to
    process tree ended: launcher, pid namespace, uid switch, bwrap, prelude,
    interpreter), as a median over sequential calls; ``server`` is the rest of
    stack's p50 at c=1 (HTTP, routing, call directory and Hook files, the head
    hold, clean-up).
    """
    languages = _languages(cells)
    rows = []
    for cell in sorted(cells, key=lambda c: _order(c, languages)):
        if cell.server != STACK or cell.concurrency != 1 or cell.result is None:
            continue
        floor = _baseline(cells, FLOOR, cell.language, 1)
        floor_p50 = floor.p50 if floor else math.nan
        wall = cell.usage_wall
        rows.append(
            [
                cell.language,
                cell.label,
                ms(floor_p50),
                ms(wall),
                ms(cell.result.p50),
                ms(wall - floor_p50),
                ms(cell.result.p50 - wall),
            ]
        )
    headers = [
        "language",
        "server",
        "floor p50 ms",
        "call wall ms",
        "stack p50 ms",
        "sandbox (wall − floor) ms",
        "server (p50 − wall) ms",
    ]
    return markdown_table(headers, rows, right=2)


def memory_table(memory: MemoryResult) -> str:
    rows = []
    for i, (calls, rss) in enumerate(memory.points):
        growth = "-"
        if i:
            before = memory.points[i - 1][1]
            growth = f"{(rss - before) / before * 100:+.2f}%" if before else "-"
        rows.append([str(calls), f"{rss / 2**20:.1f}", growth])
    return markdown_table(["calls", "RSS MiB", "growth"], rows, right=1)


def overload_table(over: OverloadResult) -> str:
    r = over.result
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(r.statuses.items())) if r else "-"
    row = [
        f"{over.concurrency} clients, cap {over.max_running} + queue {over.max_queue}",
        str(r.requests) if r else "-",
        str(r.statuses.get(200, 0)) if r else "-",
        str(r.statuses.get(503, 0)) if r else "-",
        str(sum(n for s, n in r.statuses.items() if s not in (200, 503))) if r else "-",
        str(r.errors) if r else "-",
        str(len(over.children_left)),
        str(len(over.sandbox_left)),
    ]
    headers = [
        "load",
        "responses",
        "200",
        "503",
        "other",
        "socket errors",
        "children left",
        "sandbox processes left",
    ]
    return markdown_table(headers, [row], right=1) + f"\n\nstatuses: {statuses}"


def profile_table(profile: Profile) -> str:
    total = profile.samples or 1
    self_rows = [[f"{n / total * 100:.1f}%", f] for f, n in profile.self_time]
    incl_rows = [[f"{n / total * 100:.1f}%", f] for f, n in profile.inclusive]
    package_rows = [[f"{n / total * 100:.1f}%", p] for p, n in profile.by_package]
    return (
        f"{profile.samples} working samples, {profile.in_threads / total * 100:.0f}% of them "
        "in worker threads (trio.to_thread), the rest in the event loop\n\n"
        "self (innermost frame):\n\n"
        + markdown_table(["samples", "function"], self_rows)
        + "\n\nself, by package or module:\n\n"
        + markdown_table(["samples", "package"], package_rows)
        + "\n\ninclusive, by function of stack's own code:\n\n"
        + markdown_table(["samples", "function"], incl_rows)
    )


def _failures(name: str, result: LoadResult) -> list[str]:
    return [f"{name}: {result.failures} errors"] if result.failures else []


def warm_table(results: Sequence[WarmResult]) -> str:
    """Per language, isolate mode and load: stack without and with a warm pool.

    ``warm ÷ floor`` (c=1 loads) is the warm p50 over the interpreter's raw
    spawn p50; the hit rate is the pool's over the warm measurement.
    """
    rows = []
    for res in results:
        floor_p50 = res.floor.p50
        if not res.loads:
            rows.append([res.language, res.isolate, "-", *["-"] * 9, res.note])
        for item in res.loads:
            cold, warm = item.cold, item.warm
            c1 = item.concurrency == 1
            paced = item.kind == PACED  # its rate is set by the gap: not shown
            notes = [*_failures("cold", cold), *_failures("warm", warm)]
            notes += [n for n in (item.note, res.note if item is res.loads[-1] else "") if n]
            rate = "-" if math.isnan(item.hit_rate) else f"{item.hit_rate:.0%}"
            rows.append(
                [
                    res.language,
                    res.isolate,
                    WARM_LOADS[item.kind],
                    ms(floor_p50) if c1 else "-",
                    ms(cold.p50),
                    ms(cold.p99),
                    ms(warm.p50),
                    ms(warm.p99),
                    num(ratio(warm.p50, floor_p50), 2) if c1 else "-",
                    "-" if paced else num(cold.rate),
                    "-" if paced else num(warm.rate),
                    f"{rate} ({item.hits}/{item.calls})",
                    "; ".join(notes),
                ]
            )
    headers = [
        "language",
        "isolate",
        "load",
        "floor p50 ms",
        "cold p50 ms",
        "cold p99 ms",
        "warm p50 ms",
        "warm p99 ms",
        "warm ÷ floor p50",
        "cold req/s",
        "warm req/s",
        "hit rate",
        "note",
    ]
    return markdown_table(headers, rows, right=3)


def _cell(
    cells: Sequence[Cell], server: str, isolate: str, language: str, c: int
) -> LoadResult | None:
    for cell in cells:
        if (cell.server, cell.isolate, cell.language, cell.concurrency) == (
            server,
            isolate,
            language,
            c,
        ):
            return cell.result
    return None


def _warm_target(warm: Sequence[WarmResult]) -> Target:
    """Python, the first isolate mode, paced c=1: warm p50 over the raw spawn p50 ≤ 0.25."""
    name = "python warm pool"
    found = next((res for res in warm if res.language == "python"), None)
    mode = f" {found.isolate}" if found else ""
    goal = f"python c=1{mode}, warm pool (paced): stack p50 ÷ python3 spawn p50 ≤ 0.25"
    paced = found.load(PACED) if found else None
    if found is None or paced is None:
        why = found.note if found else "the warm pool phase did not run for python"
        return Target(name, goal, "-", "not measured", why)
    value = ratio(paced.warm.p50, found.floor.p50)
    if math.isnan(value):
        return Target(name, goal, "-", "not measured", "no response")
    measured = (
        f"{value:.2f} ({paced.warm.p50 * 1000:.2f} vs {found.floor.p50 * 1000:.2f} ms; "
        f"cold {paced.cold.p50 * 1000:.2f} ms; hit rate {paced.hits}/{paced.calls})"
    )
    return Target(name, goal, measured, "met" if value <= 0.25 else "MISSED")


def evaluate_targets(
    cells: Sequence[Cell],
    memory: MemoryResult | None,
    overload: OverloadResult | None,
    warm: Sequence[WarmResult] = (),
) -> list[Target]:
    """The issue's targets against what was measured ("not measured" when a figure is missing)."""
    targets: list[Target] = []

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    stack8, light8 = _cell(cells, STACK, "none", "bash", 8), _cell(cells, LIGHTTPD, "", "bash", 8)
    if stack8 and light8:
        value = ratio(stack8.rate, light8.rate)
        measured = f"{value:.2f} ({stack8.rate:.0f} vs {light8.rate:.0f} req/s)"
        targets.append(
            Target(
                "throughput vs lighttpd",
                "bash c=8 none: stack req/s ÷ lighttpd req/s ≥ 0.7",
                measured,
                verdict(value >= 0.7),
            )
        )
    else:
        targets.append(
            Target(
                "throughput vs lighttpd",
                "bash c=8 none: stack req/s ÷ lighttpd req/s ≥ 0.7",
                "-",
                "not measured",
            )
        )

    stack1, floor1 = _cell(cells, STACK, "none", "bash", 1), _cell(cells, FLOOR, "", "bash", 1)
    goal = "bash c=1 none: stack p50 − spawn floor p50 ≤ 1.5 ms"
    if stack1 and floor1:
        added = (stack1.p50 - floor1.p50) * 1000
        measured = f"+{added:.2f} ms ({stack1.p50 * 1000:.2f} vs {floor1.p50 * 1000:.2f} ms)"
        targets.append(Target("added latency", goal, measured, verdict(added <= 1.5)))
    else:
        targets.append(Target("added latency", goal, "-", "not measured"))

    targets.append(_warm_target(warm))

    bwrap1 = _cell(cells, STACK, "bwrap", "bash", 1)
    goal = "bash c=1: stack bwrap p50 − stack none p50 ≤ +5 ms"
    if bwrap1 and stack1:
        added = (bwrap1.p50 - stack1.p50) * 1000
        measured = f"{added:+.2f} ms ({bwrap1.p50 * 1000:.2f} vs {stack1.p50 * 1000:.2f} ms)"
        targets.append(Target("bwrap cost", goal, measured, verdict(added <= 5)))
    else:
        targets.append(Target("bwrap cost", goal, "-", "not measured"))

    if memory is not None and len(memory.points) >= 3:
        (_, _), (c1, _), (c2, _) = memory.points[-3:]
        growth = memory.growth * 100
        goal = "stack RSS growth from 10k to 20k calls < 5%"
        measured = f"{growth:+.2f}% ({c1} → {c2} calls)"
        targets.append(Target("memory", goal, measured, verdict(growth < 5)))
    else:
        targets.append(
            Target("memory", "stack RSS growth from 10k to 20k calls < 5%", "-", "not measured")
        )

    goal = "c=256 vs cap 16: only 200s and 503s, no process left"
    if overload is not None and overload.result is not None:
        r = overload.result
        statuses = ", ".join(f"{s}×{n}" for s, n in sorted(r.statuses.items()))
        left = len(overload.children_left) + len(overload.sandbox_left)
        measured = f"{statuses}; {r.errors} socket errors; {left} processes left"
        targets.append(Target("overload", goal, measured, verdict(overload.ok)))
    else:
        targets.append(Target("overload", goal, "-", "not measured"))
    return targets


def targets_table(targets: Sequence[Target]) -> str:
    rows = [[t.goal, t.measured, t.verdict + (f" ({t.note})" if t.note else "")] for t in targets]
    return markdown_table(["target", "measured", "verdict"], rows)
