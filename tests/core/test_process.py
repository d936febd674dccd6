"""One call's process (sandbox/core/process.py), run without the engine.

``process.run`` is given a ``Spawn`` with the launcher's command line, as
``Call._spawn`` builds it (a ``Launch``: the call's uid, its rlimits, a pid
namespace, the call's folder), and a ``CollectIO`` in place of a front door. What comes back is
what every front door shows: the streams, the ``Outcome`` and its JSON.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from sandbox.core import process
from sandbox.core.control import Head
from sandbox.core.launcher import Launch, launcher_path
from sandbox.core.process import CollectIO, Outcome, Spawn, Usage, signal_name

from ..conftest import need

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_UID = 61918  # in the range the conftest's leftover check watches


@pytest.fixture(scope="module")
def launcher() -> Path:
    return launcher_path()


@pytest.fixture
def workdir() -> Iterator[Path]:
    """The call's folder, where the call's uid can reach it (tmp_path's parents are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="stack-test-call-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


def spawn(launcher: Path, workdir: Path, code: str, *, cpu: float | None = None,
          memory: int | None = None, file_size: int | None = None,
          timeout: float | None = 30, output: int | None = None,
          stderr_limit: int | None = None, stdin_data: bytes = b"",
          program: Sequence[str] | None = None) -> Spawn:  # fmt: skip
    """A Spawn of ``sh -c code`` through the launcher, as the engine makes one under none."""
    uid = None
    if os.geteuid() == 0:
        uid = SANDBOX_UID
        os.chown(workdir, uid, uid)
    rlimits = [("core", 0)]
    if cpu is not None:
        rlimits.append(("cpu", math.ceil(cpu)))
    if memory is not None:
        rlimits.append(("as", memory))
    if file_size is not None:
        rlimits.append(("fsize", file_size))
    launch = Launch(launcher, uid=uid, rlimits=tuple(rlimits), pidns=True, cwd=workdir).argv()
    return Spawn(
        argv=[*launch, *(program or ["/bin/sh", "-c", code])],
        env={"PATH": SYSTEM_PATH, "HOME": str(workdir), "LANG": "C.UTF-8"},
        timeout=timeout,
        output=output,
        stderr_limit=stderr_limit,
        memory=memory,
        cpu=math.ceil(cpu) if cpu is not None else None,
        stdin_data=stdin_data,
        program_at=len(launch),
        pidns=True,
    )


async def run(launcher: Path, workdir: Path, code: str, *, stdin: bytes = b"",
              **options: Any) -> tuple[Outcome, CollectIO]:  # fmt: skip
    io = CollectIO(stdin)
    with trio.fail_after(60):
        outcome = await process.run(spawn(launcher, workdir, code, **options), io)
    return outcome, io


# -- streams and exit ----------------------------------------------------------


async def test_a_clean_exit(launcher: Path, workdir: Path) -> None:
    outcome, io = await run(launcher, workdir, "echo hello")
    assert outcome.ok
    assert (outcome.reason, outcome.exit_code, outcome.signal) == ("ok", 0, None)
    assert outcome.message == ""
    assert io.stdout == b"hello\n"
    assert io.head == Head()
    assert outcome.head_sent is True


async def test_stdout_stderr_and_the_exit_code(launcher: Path, workdir: Path) -> None:
    outcome, io = await run(launcher, workdir, "echo out; echo err >&2; exit 3")
    assert (outcome.reason, outcome.exit_code) == ("exit", 3)
    assert outcome.message == "the script exited with status 3"
    assert (io.stdout, io.stderr) == (b"out\n", b"err\n")
    assert outcome.stderr == b"err\n"
    assert not outcome.ok


async def test_the_streams_interleave_in_the_order_written(launcher: Path, workdir: Path) -> None:
    code = "echo 1; sleep 0.1; echo 2 >&2; sleep 0.1; echo 3"
    _, io = await run(launcher, workdir, code)
    assert io.output == b"1\n2\n3\n"


async def test_stdin_data_then_the_front_doors_stdin(launcher: Path, workdir: Path) -> None:
    outcome, io = await run(launcher, workdir, "cat", stdin=b"world\n", stdin_data=b"hello ")
    assert io.stdout == b"hello world\n"
    assert outcome.usage.bytes_in == len(b"hello world\n")
    assert outcome.usage.bytes_out == len(b"hello world\n")


async def test_the_program_runs_in_its_folder_with_only_its_environment(
    launcher: Path, workdir: Path
) -> None:
    _, io = await run(launcher, workdir, "pwd; env | sort")
    cwd, *env = io.stdout.decode().splitlines()
    assert cwd == str(workdir)
    names = {line.split("=", 1)[0] for line in env}
    assert {"PATH", "HOME", "LANG"} <= names
    assert names <= {"PATH", "HOME", "LANG", "PWD", "SHLVL", "_"}, names


async def test_fd_3_shapes_the_head(launcher: Path, workdir: Path) -> None:
    code = (
        """echo '{"type":"writeHead","payload":{"code":201,"headers":{"X-Made":"yes"}}}' >&3;"""
        " echo body"
    )
    outcome, io = await run(launcher, workdir, code)
    assert io.head is not None
    assert io.head.status == 201
    assert io.head.get("x-made") == "yes"
    assert outcome.head.status == 201
    assert io.stdout == b"body\n"


async def test_an_error_on_fd_3_fails_the_call(launcher: Path, workdir: Path) -> None:
    code = """echo '{"type":"error","payload":{"error":"no such user"}}' >&3"""
    outcome, io = await run(launcher, workdir, code)
    assert (outcome.reason, outcome.message) == ("error", "no such user")
    assert outcome.exit_code == 0
    assert io.head is None


# -- limits ----------------------------------------------------------------------


async def test_the_wall_timeout_kills_the_tree(launcher: Path, workdir: Path) -> None:
    outcome, io = await run(launcher, workdir, "echo started; sleep 60 & sleep 60", timeout=0.5)
    assert outcome.reason == "timeout"
    assert outcome.message == "the call ran over its wall-clock limit of 0.5 s"
    assert io.stdout == b"started\n"
    assert 0.5 <= outcome.usage.wall < 10


async def test_output_past_the_limit_is_cut(launcher: Path, workdir: Path) -> None:
    outcome, io = await run(launcher, workdir, "yes | head -c 1000000", output=1000)
    assert (outcome.reason, outcome.stream) == ("output", "stdout")
    assert outcome.message == "the script wrote more than the output limit of 1000 bytes"
    assert io.stdout == b"y\n" * 500
    assert outcome.usage.bytes_out == 1000


async def test_stderr_past_its_limit_is_cut(launcher: Path, workdir: Path) -> None:
    outcome, io = await run(launcher, workdir, "yes >&2", stderr_limit=100)
    assert (outcome.reason, outcome.stream) == ("output", "stderr")
    assert io.stderr == b"y\n" * 50
    assert io.stdout == b""


async def test_the_cpu_limit(launcher: Path, workdir: Path) -> None:
    outcome, _ = await run(launcher, workdir, "while :; do :; done", cpu=1)
    assert outcome.reason == "cpu"
    assert outcome.signal == signal.SIGXCPU
    assert outcome.message == "the script ran over its CPU time limit of 1 s"
    assert outcome.usage.cpu >= 0.5


async def test_the_memory_limit(launcher: Path, workdir: Path) -> None:
    need("python3")
    code = "x = bytearray(512 * 1024 * 1024); print('allocated')"
    outcome, io = await run(launcher, workdir, "", memory=64 * 1024 * 1024,
                            program=["python3", "-c", code])  # fmt: skip
    assert outcome.reason == "memory"
    assert outcome.message == "the script ran out of its memory limit"
    assert b"MemoryError" in outcome.stderr
    assert io.stdout == b""


async def test_the_file_size_limit(launcher: Path, workdir: Path) -> None:
    outcome, _ = await run(launcher, workdir, "exec head -c 100000 /dev/zero > big", file_size=4096)
    assert (outcome.reason, outcome.signal) == ("file_size", signal.SIGXFSZ)
    assert outcome.message == "the script wrote a file larger than its file-size limit"
    assert (workdir / "big").stat().st_size == 4096


# -- signals and failures to start -------------------------------------------------


async def test_a_signal_death_is_reported_by_name(launcher: Path, workdir: Path) -> None:
    outcome, _ = await run(launcher, workdir, "kill -TERM $$")
    assert (outcome.reason, outcome.exit_code, outcome.signal) == ("signal", None, signal.SIGTERM)
    assert outcome.message == "the script was killed by SIGTERM"
    assert outcome.to_json()["signal"] == "SIGTERM"


@pytest.mark.parametrize(
    ("number", "name"),
    [(signal.SIGKILL, "SIGKILL"), (signal.SIGSEGV, "SIGSEGV"), (11, "SIGSEGV"), (200, "SIG200")],
)
def test_signal_name(number: int, name: str) -> None:
    assert signal_name(number) == name


async def test_a_missing_program_is_a_spawn_failure(launcher: Path, workdir: Path) -> None:
    outcome, _ = await run(launcher, workdir, "", program=["/nonexistent/interpreter"])
    assert outcome.reason == "spawn"
    assert outcome.message == "could not run the interpreter: No such file or directory"


async def test_a_missing_launcher_is_a_spawn_failure(workdir: Path) -> None:
    outcome, _ = await run(workdir / "no-launcher", workdir, "true")
    assert outcome.reason == "spawn"
    assert outcome.message.startswith("could not start the call: ")
    assert outcome.usage == Usage()


async def test_bubblewraps_exit_above_128_is_a_signal(launcher: Path, workdir: Path) -> None:
    # bubblewrap reports its child's death by signal N as exit 128 + N.
    plain = spawn(launcher, workdir, "exit 137")
    outcome = await process.run(dataclasses.replace(plain, exit_is_signal=True), CollectIO())
    assert (outcome.reason, outcome.exit_code, outcome.signal) == ("signal", None, signal.SIGKILL)
    assert outcome.to_json()["signal"] == "SIGKILL"


async def test_cancelling_the_call_kills_its_tree(launcher: Path, workdir: Path) -> None:
    # The front door went away: the call is cancelled, every process ends
    # (the conftest checks that none is left).
    marker = f"{600 + secrets.randbelow(10**6) / 1000:.3f}"  # a sleep nobody else runs
    code = f"sleep {marker} & sleep {marker}"
    began = trio.current_time()
    with trio.move_on_after(0.5) as scope:
        await process.run(spawn(launcher, workdir, code, timeout=None), CollectIO())
    assert scope.cancelled_caught
    assert trio.current_time() - began < 10  # it did not wait for the sleeps
    left = [p for p in psutil.process_iter(["cmdline"]) if marker in (p.info["cmdline"] or [])]
    assert left == []


# -- the outcome as JSON -------------------------------------------------------------


async def test_the_outcome_as_json(launcher: Path, workdir: Path) -> None:
    outcome, _ = await run(launcher, workdir, "head -c 1000 /dev/zero; exit 2", stdin=b"abc")
    data = outcome.to_json()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"reason", "exit_code", "signal", "message", "usage"}
    assert (data["reason"], data["exit_code"], data["signal"]) == ("exit", 2, None)
    assert data["message"] == "the script exited with status 2"
    usage = data["usage"]
    assert set(usage) == {"wall", "cpu", "memory", "bytes_in", "bytes_out"}
    assert usage["bytes_out"] == 1000
    assert usage["bytes_in"] == 3
    assert usage["wall"] > 0
    assert usage["cpu"] >= 0
    assert usage["memory"] > 0


async def test_usage_and_the_pid_namespace(launcher: Path, workdir: Path) -> None:
    outcome, io = await run(launcher, workdir, "echo $$")
    assert io.stdout == b"2\n"
    assert outcome.pidns is True
    assert outcome.usage.wall > 0
    assert outcome.usage.cpu >= 0
    assert outcome.usage.memory > 0
    assert outcome.spawn is not None
    assert 0 <= outcome.spawn <= outcome.usage.wall
