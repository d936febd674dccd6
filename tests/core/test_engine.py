"""The core on its own: calls run through the engine with a CollectIO, no server.

Each behaviour a front door relies on (exit codes, streams, stdin, the wall
timeout, the CPU, memory and output limits, fd 3, warm hand-off, the observer)
is checked here without HTTP, under both isolation modes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from sandbox.core.engine import Engine, EngineConfig, open_engine
from sandbox.core.invocation import Invocation
from sandbox.core.limits import Limits
from sandbox.core.observer import WarmUse
from sandbox.core.process import CollectIO, Outcome

from ..conftest import bwrap_problem, need


@pytest.fixture(params=["none", "bwrap"])
async def engine(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    if request.param == "bwrap" and (problem := bwrap_problem()):
        pytest.skip(problem)
    async with open_engine(EngineConfig(isolate=request.param)) as opened:
        yield opened


async def run(engine: Engine, language: str, code: str, *, limits: Limits | None = None,
              stdin: bytes = b"", name: str = "main") -> tuple[Outcome, CollectIO]:  # fmt: skip
    """Run ``code`` once, as submitted code runs: written into the call's directory."""
    lang = engine.registry.get(language)
    need(Path(lang.interpreter).name)
    collect = CollectIO(stdin)
    async with engine.open_call(limits or engine.config.limits) as call:
        script = call.write_file(name + lang.extensions[0], code.encode())
        outcome = await call.run(Invocation(lang, script, door="test"), collect)
    return outcome, collect


async def test_exit_code_and_both_streams(engine: Engine) -> None:
    outcome, out = await run(engine, "bash", "echo out; echo err >&2; exit 3")
    assert (outcome.reason, outcome.exit_code) == ("exit", 3)
    assert (out.stdout, out.stderr) == (b"out\n", b"err\n")
    assert outcome.usage.wall > 0


async def test_stdin_reaches_the_program(engine: Engine) -> None:
    outcome, out = await run(engine, "bash", "tr a-z A-Z", stdin=b"quiet\n")
    assert outcome.ok
    assert out.stdout == b"QUIET\n"


async def test_the_wall_timeout_kills_the_whole_tree(engine: Engine) -> None:
    code = "sleep 60 & sleep 60 & wait"
    with trio.fail_after(30):
        outcome, _ = await run(engine, "bash", code, limits=Limits(timeout=0.5))
    assert outcome.reason == "timeout"
    assert 0.5 <= outcome.usage.wall < 20


async def test_the_cpu_limit(engine: Engine) -> None:
    with trio.fail_after(60):
        outcome, _ = await run(engine, "bash", "while :; do :; done", limits=Limits(cpu=1))
    assert outcome.reason == "cpu"
    assert outcome.usage.cpu >= 0.5


async def test_the_memory_limit(engine: Engine) -> None:
    code = "x = bytearray(512 * 1024 * 1024)\nprint('allocated')\n"
    outcome, out = await run(engine, "python", code, limits=Limits(memory=64 * 1024 * 1024))
    assert outcome.reason == "memory"
    assert b"allocated" not in out.stdout


async def test_output_past_the_limit_is_cut(engine: Engine) -> None:
    outcome, out = await run(engine, "bash", "yes", limits=Limits(output=10_000))
    assert (outcome.reason, outcome.stream) == ("output", "stdout")
    assert len(out.stdout) <= 10_000


async def test_fd3_shapes_the_head(engine: Engine) -> None:
    code = (
        """echo '{"type":"writeHead","payload":{"code":201,"headers":{"X-A":"b"}}}' >&3\n"""
        """echo '{"type":"setHeader","payload":{"name":"X-C","value":"d"}}' >&3\n"""
        "echo body\n"
    )
    outcome, out = await run(engine, "bash", code)
    assert outcome.ok
    assert out.head is not None
    assert (out.head.status, out.head.get("x-a"), out.head.get("x-c")) == (201, "b", "d")
    assert out.stdout == b"body\n"


async def test_an_error_message_on_fd3_ends_the_call_as_error(engine: Engine) -> None:
    code = """echo '{"type":"error","payload":{"error":"no such user","code":404}}' >&3\n"""
    outcome, _ = await run(engine, "bash", code)
    assert outcome.reason == "error"
    assert "no such user" in outcome.message


class Seen:
    """An observer that keeps what the engine told it."""

    def __init__(self) -> None:
        self.ended: list[tuple[str, str, str]] = []
        self.refused = 0
        self.warm: list[tuple[str, WarmUse]] = []

    def call_ended(self, door: str, language: str, outcome: Outcome) -> None:
        self.ended.append((door, language, outcome.reason))

    def call_refused(self) -> None:
        self.refused += 1

    def warm_served(self, language: str, use: WarmUse) -> None:
        self.warm.append((language, use))


async def test_observers_hear_of_every_call(engine: Engine) -> None:
    seen = Seen()
    engine.observe(seen)
    await run(engine, "bash", "exit 0")
    await run(engine, "bash", "exit 1")
    assert seen.ended == [("test", "bash", "ok"), ("test", "bash", "exit")]


async def test_a_warm_process_takes_the_call() -> None:
    need("python3")
    async with open_engine(EngineConfig(isolate="none")) as engine:
        seen = Seen()
        engine.observe(seen)
        python = engine.registry.get("python")
        limits = engine.config.limits
        engine.add_pool("k", Invocation(python, Path("main.py"), door="test"), 1, limits)
        with trio.fail_after(30):
            while engine.pool_stats()[0].ready < 1:
                await trio.sleep(0.02)
        collect = CollectIO(b"from stdin")
        async with engine.open_call(limits, warm="k") as call:
            call.write_file("main.py", b"import sys\nprint('warm', sys.stdin.read())\n")
            outcome = await call.run(Invocation(python, call.workdir / "main.py"), collect)
        assert outcome.ok, outcome.message
        assert collect.stdout == b"warm from stdin\n"
        assert engine.pool_stats()[0].hits == 1
        assert seen.warm == [("python", "hit")]


async def test_a_call_with_other_limits_leaves_the_warm_process_waiting() -> None:
    need("python3")
    async with open_engine(EngineConfig(isolate="none")) as engine:
        python = engine.registry.get("python")
        limits = engine.config.limits
        engine.add_pool("k", Invocation(python, Path("main.py"), door="test"), 1, limits)
        with trio.fail_after(30):
            while engine.pool_stats()[0].ready < 1:
                await trio.sleep(0.02)
        own = Limits(**{**limits.to_json(), "timeout": 3.0})
        async with engine.open_call(own, warm="k") as call:
            call.write_file("main.py", b"print('cold')\n")
            outcome = await call.run(Invocation(python, call.workdir / "main.py"), CollectIO())
        assert outcome.ok
        stats = engine.pool_stats()[0]
        assert (stats.hits, stats.early, stats.misses, stats.ready) == (0, 0, 1, 1)


# -- usage is the whole call's, whatever ended it ----------------------------------

SPIN = "x = bytearray(64 * 1024 * 1024)\nwhile True:\n    pass\n"


async def test_a_timed_out_call_reports_the_cpu_and_memory_it_used(engine: Engine) -> None:
    outcome, _ = await run(engine, "python", SPIN, limits=Limits(timeout=1.5))
    assert outcome.reason == "timeout"
    # It spun until killed: most of its wall time on a CPU (a loaded machine
    # shares it), and it held its 64 MiB.
    assert outcome.usage.cpu >= 0.25 * outcome.usage.wall, outcome.usage
    assert outcome.usage.memory >= 64 * 1024 * 1024, outcome.usage


async def test_a_cpu_limited_call_reports_its_cpu(engine: Engine) -> None:
    outcome, _ = await run(engine, "python", SPIN, limits=Limits(cpu=1, timeout=30))
    assert outcome.reason == "cpu"
    assert outcome.usage.cpu >= 0.9, outcome.usage


async def test_an_output_limited_call_reports_its_usage(engine: Engine) -> None:
    code = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n"
    outcome, out = await run(engine, "python", code, limits=Limits(output=1_000_000))
    assert outcome.reason == "output"
    assert outcome.usage.bytes_out == len(out.stdout) == 1_000_000
    assert outcome.usage.cpu > 0
    assert outcome.usage.memory > 1024 * 1024
