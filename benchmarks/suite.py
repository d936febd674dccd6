"""The suite's phases, run in order by ``cli.main``.

1-3. for each language and concurrency: the spawn floor, lighttpd + mod_cgi
   on the CGI scripts, and stack under each ``--isolate`` mode, one after
   the other (``run_matrix``);
4. for python, javascript (warm interpreters) and bash (a warm sandbox)
   under each ``--isolate`` mode: stack with a warm pool against stack without, paced, back to back and at c=8 (``run_warm``);
5. stack's RSS after two equal batches of calls;
6. concurrency 256 against ``--max-running 16 --max-queue 64``;
7. optionally, a py-spy profile of stack serving bash hello.

Every phase is bounded: each load stops after its request count or its
duration, and every server is stopped when its phase ends.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from . import profile as prof
from .floor import spawn_floor
from .hellos import EXPECTED_BODY, HELLOS, Interpreter
from .load import Load, LoadResult, paced_load
from .report import (
    FLOOR,
    LIGHTTPD,
    PACED,
    SATURATION,
    STACK,
    WARM_LOADS,
    Cell,
    MemoryResult,
    OverloadResult,
    WarmLoad,
    WarmResult,
)
from .servers import (
    ServerError,
    StackServer,
    fetch,
    find_lighttpd,
    running_lighttpd,
    running_stack,
    sandbox_processes,
)

TIMEOUT = 30.0  # per request: a slow language at c=64 on 2 cores stays well under it
# Languages of the warm pool phase: two with a warm prelude, one with the
# exec stub (a warm sandbox, the interpreter started at the call).
WARM_LANGUAGES = ("python", "javascript", "bash")
WARM_FILL_TIMEOUT = 60.0  # the most seconds to wait for a pool to fill
# A pool counts an interpreter as waiting once it is spawned, before it has
# started up: give the last ones this long to reach their wait for a call.
WARM_SETTLE = 0.5


@dataclass(frozen=True)
class Settings:
    """What to run, from the command line.

    Attributes:
        isolate: stack's modes; the first also runs phases 5-7.
        requests: responses per load cell (it also stops after ``duration`` seconds).
        memory_calls: calls per batch of the memory phase (two batches), each
            batch stopping after ``memory_duration`` seconds at the latest.
        overload_requests: requests of the overload phase, from
            ``overload_concurrency`` clients against ``--max-running
            overload_running --max-queue overload_queue``.
        warm: the warm pool phase's pool size (0: no such phase).
        warm_requests: requests of each c=1 load of that phase, sent one at a
            time, ``warm_gap`` seconds apart when paced; each load stops after
            ``warm_duration`` seconds at the latest.
    """

    languages: list[str]
    concurrency: list[int]
    isolate: list[str]
    requests: int
    duration: float
    memory_calls: int
    memory_duration: float
    overload_requests: int
    overload_concurrency: int = 256
    overload_running: int = 16
    overload_queue: int = 64
    warm: int = 0
    warm_requests: int = 100
    warm_gap: float = 0.05
    warm_duration: float = 60.0


Progress = Callable[[str], None]


def _describe(result: LoadResult) -> str:
    return (
        f"{result.requests} in {result.duration:.1f}s, {result.rate:.1f}/s, "
        f"p50 {result.p50 * 1000:.2f} ms, p99 {result.p99 * 1000:.2f} ms, "
        f"{result.failures} errors"
    )


def _cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of a server process: its own, and its reaped descendants' (the calls)."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return math.nan, math.nan
    return times.user + times.system, times.children_user + times.children_system


def _check(url: str) -> str | None:
    """GET the hello service a few times (a warm-up); what is wrong with it, or None."""
    for _ in range(3):
        try:
            status, _, body = fetch(url, TIMEOUT)
        except OSError as exc:
            return f"GET failed: {exc}"
        if status != 200 or body != EXPECTED_BODY:
            return f"GET gave {status} {body[:80]!r}"
    return None


_USAGE_WALL = re.compile(r"wall=([0-9.]+)")


def usage_wall(url: str, calls: int = 30) -> float:
    """Median of the ``wall`` stack reports in X-Stack-Usage over sequential calls.

    That is the call's own time, from spawning the launcher to the end of its
    process tree; the rest of a response's latency is the server's.
    """
    walls = []
    for _ in range(calls):
        try:
            _, headers, _ = fetch(url, TIMEOUT)
        except OSError:
            continue
        match = _USAGE_WALL.search(headers.get("x-stack-usage", ""))
        if match:
            walls.append(float(match.group(1)))
    return statistics.median(walls) if walls else math.nan


@contextmanager
def _stack(say: Progress, services: Path, **options: Any) -> Iterator[StackServer]:
    """``running_stack``, saying so when the server did not stop on the first SIGTERM."""
    started: list[StackServer] = []
    try:
        with running_stack(services, **options) as server:
            started.append(server)
            yield server
    finally:
        if started and started[0].shutdown != "exited":
            server = started[0]
            tail = server.log.read_text(errors="replace").strip().splitlines()[-3:]
            say(
                f"WARNING: stack --isolate {options.get('isolate')} did not exit within 15 s "
                f"of SIGTERM (stopped by: {server.shutdown}); its log ended with: "
                + " / ".join(tail)
            )


@dataclass
class _Server:
    """A server of the matrix: running (``base``, ``pid``), or not (``note`` says why)."""

    kind: str
    isolate: str
    base: str = ""
    pid: int = 0
    note: str = ""

    @property
    def name(self) -> str:
        return f"{self.kind} {self.isolate}".strip()


def _start_lighttpd(
    stack: ExitStack,
    settings: Settings,
    interpreters: dict[str, Interpreter],
    cgi: Path,
    workdir: Path,
    say: Progress,
) -> _Server:
    binary = find_lighttpd()
    if binary is None:
        note = "lighttpd not installed (apt-get install lighttpd)"
        say(f"lighttpd: {note}; that baseline is skipped")
        return _Server(LIGHTTPD, "", note=note)
    assign: dict[str, str] = {}
    env: dict[str, str] = {}
    for language in settings.languages:
        path = interpreters[language].path
        assert path is not None
        assign[HELLOS[language].extension] = path
        env.update(HELLOS[language].cgi_env)
    try:
        base, pid = stack.enter_context(running_lighttpd(binary, cgi, assign, env, workdir))
    except ServerError as exc:
        say(f"lighttpd: {exc}")
        return _Server(LIGHTTPD, "", note="lighttpd did not start")
    say(f"lighttpd at {base} (pid {pid})")
    return _Server(LIGHTTPD, "", base, pid)


def _start_stack(
    stack: ExitStack, settings: Settings, mode: str, services: Path, workdir: Path, say: Progress
) -> _Server:
    try:
        server = stack.enter_context(
            _stack(
                say,
                services,
                isolate=mode,
                max_running=max(settings.concurrency),
                log=workdir / f"stack-{mode}.log",
            )
        )
    except ServerError as exc:
        say(f"stack --isolate {mode}: {exc}")
        return _Server(STACK, mode, note=f"stack --isolate {mode} did not start")
    say(f"stack {mode} at {server.url} (pid {server.process.pid})")
    return _Server(STACK, mode, server.url, server.process.pid)


def _load_cell(
    server: _Server, language: str, c: int, wall: float, settings: Settings, load: Load
) -> Cell:
    """One load run against a running server, with the server's CPU over it."""
    url = f"{server.base}/{HELLOS[language].filename}"
    own, calls = _cpu(server.pid)
    result = load(url, c, settings.requests, settings.duration, TIMEOUT)
    own_after, calls_after = _cpu(server.pid)
    n = max(result.requests, 1)
    return Cell(
        server.kind,
        server.isolate,
        language,
        c,
        result,
        usage_wall=wall,
        server_cpu=(own_after - own) / n,
        calls_cpu=(calls_after - calls) / n,
    )


def _floor_argv(interpreter: Interpreter, services: Path) -> list[str]:
    """The spawn floor's command: the interpreter, stack's start-up options, the hello script."""
    hello = HELLOS[interpreter.language]
    assert interpreter.path is not None
    return [interpreter.path, *hello.flags, str(services / hello.filename)]


def run_matrix(
    settings: Settings,
    interpreters: dict[str, Interpreter],
    services: Path,
    cgi: Path,
    workdir: Path,
    load: Load,
    say: Progress,
) -> list[Cell]:
    """Phases 1-3, interleaved: for each language and concurrency, the floor, then each server.

    lighttpd and one stack per isolate mode run side by side for the whole
    matrix (an idle server costs nothing), so the figures of one cell are
    taken within seconds of each other: a burst of other work on the machine
    then hits every server of that cell alike, and their ratios hold.
    """
    cells: list[Cell] = []
    with ExitStack() as stack:
        servers = [_start_lighttpd(stack, settings, interpreters, cgi, workdir, say)]
        for mode in settings.isolate:
            servers.append(_start_stack(stack, settings, mode, services, workdir, say))
        for language in settings.languages:
            hello = HELLOS[language]
            argv = _floor_argv(interpreters[language], services)
            # Warm each server up on this script; stack also reports its calls' own time.
            problems: dict[str, str | None] = {}
            walls: dict[str, float] = {}
            for server in servers:
                if server.note:
                    continue
                url = f"{server.base}/{hello.filename}"
                problems[server.name] = problem = _check(url)
                if problem:
                    say(f"{server.name} {language}: {problem}")
                walls[server.name] = (
                    usage_wall(url) if server.kind == STACK and not problem else math.nan
                )
            for c in settings.concurrency:
                result, calls_cpu = spawn_floor(
                    argv,
                    home=services,
                    concurrency=c,
                    requests=settings.requests,
                    duration=settings.duration,
                )
                say(f"{'floor':<11} {language:<10} c={c:<3} {_describe(result)}")
                cells.append(Cell(FLOOR, "", language, c, result, calls_cpu=calls_cpu))
                for server in servers:
                    note = server.note or problems.get(server.name)
                    if note:
                        cells.append(Cell(server.kind, server.isolate, language, c, None, note))
                        continue
                    cell = _load_cell(server, language, c, walls[server.name], settings, load)
                    assert cell.result is not None
                    say(f"{server.name:<11} {language:<10} c={c:<3} {_describe(cell.result)}")
                    cells.append(cell)
    return cells


def run_warm(
    settings: Settings,
    interpreters: dict[str, Interpreter],
    services: Path,
    cells: list[Cell],
    workdir: Path,
    load: Load,
    say: Progress,
) -> list[WarmResult]:
    """Phase 4: for each warm-capable language and isolate mode, stack with a warm pool vs without.

    The spawn floor at c=1 is the matrix's when it measured one, else it is
    measured here. See :func:`_warm_pair` for the loads.
    """
    results: list[WarmResult] = []
    if settings.warm < 1:
        return results
    for language in [name for name in settings.languages if name in WARM_LANGUAGES]:
        floor = next(
            (
                cell.result
                for cell in cells
                if (cell.server, cell.language, cell.concurrency) == (FLOOR, language, 1)
            ),
            None,
        )
        if floor is None:
            floor, _ = spawn_floor(
                _floor_argv(interpreters[language], services),
                home=services,
                concurrency=1,
                requests=settings.requests,
                duration=settings.duration,
            )
            say(f"{'floor':<11} {language:<10} c=1   {_describe(floor)}")
        for mode in settings.isolate:
            results.append(
                _warm_pair(settings, language, mode, floor, services, workdir, load, say)
            )
    return results


def _warm_pair(
    settings: Settings,
    language: str,
    mode: str,
    floor: LoadResult,
    services: Path,
    workdir: Path,
    load: Load,
    say: Progress,
) -> WarmResult:
    """One language and isolate mode: a stack with ``--warm LANG=N`` beside one without.

    Three loads, each on the cold server and then on the warm one, both
    servers idle and the pool full before each: paced c=1 (one request at a
    time, ``warm_gap`` apart: the pool refills between calls), back-to-back
    c=1 (it may not), and the suite's load at c=8 (saturation). The pool's
    hits and misses are read from /metrics before and after each warm load.
    Both servers are stopped when it returns, whatever happened.
    """
    size, script = settings.warm, HELLOS[language].filename
    # Far longer than the phase: a pool idle this long would shrink to one.
    extra = ["--warm", f"{language}={size}", "--warm-idle", "1h"]
    options = {"isolate": mode, "max_running": max(settings.concurrency)}
    loads: list[WarmLoad] = []

    def measure(url: str, kind: str, c: int) -> LoadResult:
        if kind == SATURATION:
            return load(url, c, settings.requests, settings.duration, TIMEOUT)
        gap = settings.warm_gap if kind == PACED else 0.0
        return paced_load(url, settings.warm_requests, gap, settings.warm_duration, TIMEOUT)

    def result(note: str = "") -> WarmResult:
        return WarmResult(language, mode, size, settings.warm_gap, floor, loads, note)

    try:
        with ExitStack() as stack:
            base = f"stack-warm-{language}-{mode}"
            cold = stack.enter_context(
                _stack(say, services, **options, log=workdir / f"{base}-cold.log")
            )
            warm = stack.enter_context(
                _stack(say, services, **options, extra=extra, log=workdir / f"{base}.log")
            )
            say(f"stack {mode} --warm {language}={size} at {warm.url}; without: {cold.url}")
            for server in (cold, warm):
                if problem := _check(f"{server.url}/{script}"):
                    say(f"warm {mode} {language}: {problem}")
                    return result(problem)
            for kind in WARM_LOADS:
                c = 8 if kind == SATURATION else 1
                ready = warm.wait_pool(language, size, WARM_FILL_TIMEOUT).size
                time.sleep(WARM_SETTLE)
                note = ""
                if ready < size:
                    note = f"pool held {ready} of {size} after {WARM_FILL_TIMEOUT:.0f} s"
                    say(f"WARNING: warm {mode} {language}: {note}")
                cold_result = measure(f"{cold.url}/{script}", kind, c)
                cold.wait_idle()
                before = warm.pool(language)
                warm_result = measure(f"{warm.url}/{script}", kind, c)
                after = warm.pool(language)
                item = WarmLoad(
                    kind,
                    c,
                    cold_result,
                    warm_result,
                    after.hits - before.hits,
                    after.misses - before.misses,
                    note,
                    after.early - before.early,
                )
                loads.append(item)
                say(
                    f"warm {mode:<5} {language:<10} {WARM_LOADS[item.kind]:<16} "
                    f"cold p50 {cold_result.p50 * 1000:.2f} ms, {cold_result.rate:.1f}/s; "
                    f"warm p50 {warm_result.p50 * 1000:.2f} ms, {warm_result.rate:.1f}/s, "
                    f"hits {item.hits}/{item.calls} ({item.early} early), "
                    f"{cold_result.failures + warm_result.failures} errors"
                )
    except (ServerError, OSError) as exc:
        say(f"warm {mode} {language}: {exc}")
        first = str(exc).splitlines()[0].rstrip(":") if str(exc) else type(exc).__name__
        return result(first)  # the log's tail is in the progress line
    return result()


def run_memory(
    settings: Settings, services: Path, workdir: Path, load: Load, say: Progress
) -> MemoryResult | None:
    """Phase 5: RSS of a fresh stack after a warm-up, then after each of two batches of bash hello."""
    mode, c = settings.isolate[0], 8
    url_path = HELLOS["bash"].filename
    points: list[tuple[int, int]] = []
    try:
        with _stack(
            say, services, isolate=mode, max_running=16, log=workdir / "stack-memory.log"
        ) as server:
            url = f"{server.url}/{url_path}"
            if problem := _check(url):
                return MemoryResult(mode, "bash", c, [], problem)
            time.sleep(0.5)
            calls = 3
            points.append((calls, server.rss()))
            for _ in range(2):
                result = load(url, c, settings.memory_calls, settings.memory_duration, TIMEOUT)
                calls += result.requests
                server.wait_idle()
                time.sleep(0.5)  # let the last responses' buffers go before reading RSS
                points.append((calls, server.rss()))
                say(
                    f"memory   after {calls} calls: RSS {points[-1][1] / 2**20:.1f} MiB ({_describe(result)})"
                )
            note = ""
            if calls - 3 < 2 * settings.memory_calls:
                note = f"time bound hit: {calls - 3} of {2 * settings.memory_calls} calls"
            return MemoryResult(mode, "bash", c, points, note)
    except ServerError as exc:
        say(f"memory: {exc}")
        return None


def run_overload(
    settings: Settings, services: Path, workdir: Path, load: Load, say: Progress
) -> OverloadResult | None:
    """Phase 6: 256 clients against 16 slots and a queue of 64; then look for leftovers."""
    mode = settings.isolate[0]
    c, running, queue = (
        settings.overload_concurrency,
        settings.overload_running,
        settings.overload_queue,
    )
    try:
        with _stack(
            say,
            services,
            isolate=mode,
            max_running=running,
            max_queue=queue,
            log=workdir / "stack-overload.log",
        ) as server:
            url = f"{server.url}/{HELLOS['bash'].filename}"
            if problem := _check(url):
                return OverloadResult(mode, "bash", c, running, queue, None, note=problem)
            result = load(url, c, settings.overload_requests, max(settings.duration, 10), TIMEOUT)
            children = server.wait_idle()
            started = server.started
            say(
                f"overload c={c} cap {running}+{queue}: {result.statuses}, {result.errors} socket errors, {len(children)} children left"
            )
        # After the server stopped too: nothing of its calls may be alive.
        time.sleep(0.2)
        left = sandbox_processes(started)
        if left:
            say(f"overload: sandbox processes left: {left}")
        return OverloadResult(mode, "bash", c, running, queue, result, children, left)
    except ServerError as exc:
        say(f"overload: {exc}")
        return None


def run_profile(
    settings: Settings, services: Path, workdir: Path, load: Load, say: Progress, seconds: int = 8
) -> prof.Profile | None:
    """Phase 7: py-spy on stack (first isolate mode) serving bash hello at c=8."""
    py_spy = prof.find_py_spy()
    if py_spy is None:
        say("profile: py-spy is not installed (pip install py-spy); no profile")
        return None
    mode = settings.isolate[0]
    raw = workdir / "profile.txt"
    try:
        with _stack(
            say, services, isolate=mode, max_running=16, log=workdir / "stack-profile.log"
        ) as server:
            url = f"{server.url}/{HELLOS['bash'].filename}"
            _check(url)
            recorder = prof.record(py_spy, server.process.pid, seconds, raw)
            time.sleep(0.5)  # py-spy attaches
            load(url, 8, 1_000_000, seconds - 1, TIMEOUT)
            _, err = recorder.communicate(timeout=seconds + 30)
    except ServerError as exc:
        say(f"profile: {exc}")
        return None
    if recorder.returncode != 0 or not raw.exists():
        say(f"profile: py-spy failed: {err.decode(errors='replace')[-500:]}")
        return None
    profile = prof.summarize(raw.read_text())
    say(f"profile: {profile.samples} working samples")
    return profile


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    os_name = "?"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "cpu": model,
        "os": os_name,
        "python": platform.python_version(),
        "load_average": os.getloadavg()[0],
        "lighttpd": _version(["lighttpd", "-v"]),
        "wrk": _version(["wrk", "--version"]),
        "bwrap": _version(["bwrap", "--version"]),
    }


def _version(command: list[str]) -> str | None:
    try:
        if command[0] == "lighttpd":
            binary = find_lighttpd()
            if binary is None:
                return None
            command = [binary, *command[1:]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0][:80] if text else None


def command_line() -> str:
    """The command as typed (``python -m benchmarks ...``)."""
    args = " ".join(sys.argv[1:])
    exe = sys.executable
    try:
        exe = os.path.relpath(exe)
    except ValueError:
        pass
    return f"{exe} -m benchmarks {args}".strip()
