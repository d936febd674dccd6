"""The C launcher (sandbox/core/launcher.py, _launcher.c), run on its own.

The launcher is built into a cache once; every call then goes through it:
it sets the rlimits it is given, drops to the call's uid and gid, starts the
program in a pid namespace of its own, kills what the program left behind
when it exits, and reports on its status fd: first ``{"reaper": PID}``, at the
end one line with the exit, the signal and the tree's usage. Here it is run
with ``subprocess`` and its status read from a pipe, without the engine; the
Python side (``Launch``, ``LauncherStatus``, ``parse_reaper``) is checked
against what it really writes.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import signal
import stat
import struct
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from sandbox.core.launcher import (
    SECCOMP_FD,
    STATUS_FD,
    Launch,
    LauncherStatus,
    launcher_path,
    parse_reaper,
    seccomp_filter,
)

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
SANDBOX_UID = 61917  # in the range the conftest's leftover check watches


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the launcher's uid switch and direct pid namespace need root")


@pytest.fixture(scope="module")
def launcher() -> Path:
    return launcher_path()


@dataclass
class Ran:
    """What one launcher run showed: its exit, the program's output, the status lines."""

    returncode: int
    stdout: str
    stderr: str
    reaper: int
    status: dict[str, Any]
    seconds: float
    status_fd: int
    raw: bytes


def launch(launcher: Path, options: Sequence[str], program: Sequence[str], *,
           extra_fds: Sequence[int] = (), pipe: tuple[int, int] | None = None,
           timeout: float = 30) -> Ran:  # fmt: skip
    """Run the launcher with its status on a pipe; parse both status lines."""
    read, status_fd = pipe or os.pipe()
    status = os.fdopen(read, "rb")
    began = time.monotonic()
    try:
        done = subprocess.run(
            [str(launcher), *options, "-s", str(status_fd), "--", *program],
            pass_fds=(status_fd, *extra_fds),
            capture_output=True,
            text=True,
            env={"PATH": SYSTEM_PATH},
            timeout=timeout,
            check=False,
        )
    finally:
        os.close(status_fd)
    seconds = time.monotonic() - began
    with status:
        raw = status.read()
    lines = [json.loads(line) for line in raw.splitlines()]
    # Two lines: the reaper's pid and, at the end, the status. The launcher
    # writes the first after its fork, so a quick program's status can come first.
    assert len(lines) == 2, f"expected the reaper line and the status line, got {lines}"
    lines.sort(key=lambda line: "reaper" not in line)
    return Ran(
        done.returncode,
        done.stdout,
        done.stderr,
        lines[0]["reaper"],
        lines[1],
        seconds,
        status_fd,
        raw,
    )


def shell(code: str) -> list[str]:
    return ["/bin/sh", "-c", code]


# -- the build -----------------------------------------------------------------


def test_built_once_into_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STACK_CACHE_DIR", str(tmp_path / "cache"))
    first = launcher_path()
    assert first.parent == tmp_path / "cache"
    assert first.name.startswith("stack-launch-")
    mode = first.stat().st_mode
    assert stat.S_ISREG(mode)
    assert mode & 0o111 == 0o111, oct(mode)
    before = first.stat()
    second = launcher_path()
    assert second == first
    after = second.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # Only the launcher is left: the build's scratch folder is gone.
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.name]


def test_the_built_launcher_runs_a_program(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("STACK_CACHE_DIR", str(tmp_path))
    done = subprocess.run(
        [str(launcher_path()), "--", "/bin/echo", "hello"], capture_output=True, check=False
    )
    assert (done.returncode, done.stdout) == (0, b"hello\n")


def test_without_a_program_it_says_so(launcher: Path) -> None:
    done = subprocess.run([str(launcher), "-p"], capture_output=True, text=True, check=False)
    assert done.returncode == 125
    assert "no program" in done.stderr


def test_an_unknown_limit_is_refused(launcher: Path) -> None:
    done = subprocess.run(
        [str(launcher), "-r", "colour=3", "--", "true"], capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert done.returncode == 125
    assert "unknown limit colour" in done.stderr


# -- limits, uid, pid namespace -------------------------------------------------


def test_the_rlimits_given_are_what_the_program_sees(launcher: Path) -> None:
    need_root()
    ran = launch(
        launcher,
        ["-p", "-r", "nofile=37", "-r", "fsize=123456", "-r", "cpu=3"],
        ["cat", "/proc/self/limits"],
    )
    limits = {line[:26].strip(): line[26:].split() for line in ran.stdout.splitlines()[1:]}
    assert limits["Max open files"][:2] == ["37", "37"]
    assert limits["Max file size"][:2] == ["123456", "123456"]
    # CPU: SIGXCPU at the soft limit, SIGKILL a second later at the hard one.
    assert limits["Max cpu time"][:2] == ["3", "4"]


def test_the_program_runs_as_the_uid_and_gid_given(launcher: Path) -> None:
    need_root()
    ran = launch(
        launcher,
        ["-p", "-n", "-u", str(SANDBOX_UID), "-g", str(SANDBOX_UID), "-c", "/"],
        shell("echo $(id -u) $(id -g) / $(id -G); grep NoNewPrivs /proc/self/status"),
    )
    assert ran.returncode == 0, ran.stderr
    ids, nnp = ran.stdout.splitlines()
    # No supplementary group of root's is kept.
    assert ids == f"{SANDBOX_UID} {SANDBOX_UID} / {SANDBOX_UID}"
    assert nnp.split() == ["NoNewPrivs:", "1"]


def test_the_program_starts_in_the_folder_given(launcher: Path, tmp_path: Path) -> None:
    need_root()
    ran = launch(launcher, ["-p", "-c", str(tmp_path)], ["pwd"])
    assert ran.stdout == f"{tmp_path}\n"


def test_a_folder_the_uid_cannot_enter_fails_the_start(launcher: Path, tmp_path: Path) -> None:
    need_root()
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    uid = str(SANDBOX_UID)
    ran = launch(launcher, ["-p", "-u", uid, "-g", uid, "-c", str(private)], ["pwd"])
    assert ran.stdout == ""
    assert (ran.status["exit"], ran.status["exec_errno"]) == (127, errno.EACCES)


def test_in_a_pid_namespace_the_program_is_pid_2(launcher: Path) -> None:
    need_root()
    ran = launch(launcher, ["-p"], shell("echo $$ $PPID"))
    # The reaper is pid 1 of the namespace, the program its first child.
    assert ran.stdout.split() == ["2", "1"]
    assert ran.status["pidns"] is True
    assert ran.reaper > 1


def test_without_a_pid_namespace_the_launcher_is_the_reaper(launcher: Path) -> None:
    need_root()
    # The status on stdout (the launcher keeps it from the program, which writes to stderr).
    with subprocess.Popen(
        [str(launcher), "-s", "1", "--", *shell("echo $PPID >&2")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={"PATH": SYSTEM_PATH},
    ) as proc:  # fmt: skip
        status, shown = proc.communicate(timeout=30)
    reaper, final = (json.loads(line) for line in status.splitlines())
    assert int(shown) == proc.pid
    assert reaper == {"reaper": proc.pid}
    assert final["pidns"] is False


# -- nothing outlives the program ------------------------------------------------


def sleepers(marker: str) -> list[int]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if marker in (proc.info["cmdline"] or []):
            found.append(proc.info["pid"])
    return found


@pytest.mark.parametrize("options", [["-p"], []], ids=["pidns", "process-group"])
def test_what_the_program_leaves_running_is_killed(launcher: Path, options: list[str]) -> None:
    need_root()
    marker = f"{600 + secrets.randbelow(10**6) / 1000:.3f}"  # a sleep nobody else runs
    # One child in the background, one double-forked into a session of its own.
    code = f"sleep {marker} & (setsid sleep {marker} &) ; sleep 0.2; echo started"
    ran = launch(launcher, options, shell(code))
    assert ran.stdout == "started\n"
    assert (ran.status["exit"], ran.status["signal"]) == (0, 0)
    assert ran.seconds < 20  # it did not wait for the sleeps
    assert sleepers(marker) == []


def test_sigterm_ends_the_whole_tree_and_says_killed(launcher: Path) -> None:
    need_root()
    marker = f"{600 + secrets.randbelow(10**6) / 1000:.3f}"
    read, write = os.pipe()
    with subprocess.Popen(
        [str(launcher), "-p", "-s", str(write), "--", *shell(f"sleep {marker} & sleep {marker}")],
        pass_fds=(write,), env={"PATH": SYSTEM_PATH},
    ) as proc:  # fmt: skip
        os.close(write)
        with os.fdopen(read, "rb") as pipe:
            first = json.loads(pipe.readline())
            deadline = time.monotonic() + 10
            while len(sleepers(marker)) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            assert len(sleepers(marker)) == 2
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 0
            final = json.loads(pipe.readline())
    assert first["reaper"] > 1
    assert final["killed"] is True
    assert (final["exit"], final["signal"]) == (-1, signal.SIGKILL)
    assert sleepers(marker) == []


# -- the status line ---------------------------------------------------------------


def test_the_status_line_of_an_exit(launcher: Path) -> None:
    need_root()
    ran = launch(launcher, ["-p"], shell("echo out; echo err >&2; exit 7"))
    assert (ran.returncode, ran.stdout, ran.stderr) == (0, "out\n", "err\n")
    assert set(ran.status) == {
        "exit", "signal", "utime", "stime", "maxrss_kb", "killed", "exec_errno", "pidns",
    }  # fmt: skip
    assert ran.status["exit"] == 7
    assert ran.status["signal"] == 0
    assert ran.status["killed"] is False
    assert ran.status["exec_errno"] == 0
    assert ran.status["utime"] >= 0
    assert ran.status["stime"] >= 0
    assert ran.status["maxrss_kb"] > 0


def test_the_status_line_of_a_signal_death(launcher: Path) -> None:
    need_root()
    ran = launch(launcher, ["-p"], shell("kill -SEGV $$"))
    assert (ran.status["exit"], ran.status["signal"]) == (-1, signal.SIGSEGV)
    assert ran.status["killed"] is False


def test_the_status_line_counts_the_cpu_of_the_tree(launcher: Path) -> None:
    need_root()
    # The CPU is burnt by a grandchild: the reaper's RUSAGE_CHILDREN still counts it.
    ran = launch(launcher, ["-p", "-r", "cpu=1"], shell("sh -c 'while :; do :; done'; exit 3"))
    assert ran.status["exit"] == 3
    assert ran.status["utime"] + ran.status["stime"] >= 0.5


def test_a_program_that_cannot_run_reports_its_errno(launcher: Path) -> None:
    need_root()
    ran = launch(launcher, ["-p"], ["/nonexistent/interpreter"])
    assert ran.status["exec_errno"] == errno.ENOENT
    assert ran.status["exit"] == 127


def test_only_the_standard_fds_and_fd_3_reach_the_program(launcher: Path) -> None:
    need_root()
    # One stray descriptor numbered below the status fd, one above it.
    below = os.open("/dev/null", os.O_RDONLY)
    pipe = os.pipe()
    above = os.open("/dev/null", os.O_RDONLY)
    assert below < pipe[1] < above
    try:
        ran = launch(launcher, ["-p"], ["ls", "/proc/self/fd"], extra_fds=(below, above),
                     pipe=pipe)  # fmt: skip
    finally:
        os.close(below)
        os.close(above)
    # ls's own directory fd shows up too (the lowest free: 3).
    assert sorted(int(fd) for fd in ran.stdout.split()) == [0, 1, 2, 3]


# -- the seccomp filter -----------------------------------------------------------------


def test_the_filter_is_printed_and_checks_the_architecture_first(launcher: Path) -> None:
    program = seccomp_filter(launcher)
    if not program:
        pytest.skip(f"no filter for {os.uname().machine}")
    assert len(program) % 8 == 0  # whole instructions
    assert 8 * 16 <= len(program) <= 8 * 192
    code, _, _, k = struct.unpack("<HBBI", program[:8])
    assert (code, k) == (0x20, 4)  # load the architecture word of seccomp_data


def test_with_F_the_program_cannot_make_a_namespace(launcher: Path) -> None:
    if not seccomp_filter(launcher):
        pytest.skip(f"no filter for {os.uname().machine}")
    probe = shell("unshare -U true 2>/dev/null; echo rc=$?")
    unfiltered = launch(launcher, ["-n"], probe)
    if unfiltered.stdout != "rc=0\n":
        pytest.skip("user namespaces are not available here: nothing to deny")
    filtered = launch(launcher, ["-n", "-F"], probe)
    assert filtered.stdout == "rc=1\n"
    assert filtered.status["exit"] == 0


def test_with_f_the_program_reads_the_compiled_filter(launcher: Path) -> None:
    program = seccomp_filter(launcher)
    read = ["python3", "-c", "import os, sys; sys.stdout.buffer.write(os.read(7, 65536))"]
    done = subprocess.run([str(launcher), "-n", "-f", "7", "--", *read], capture_output=True,
                          env={"PATH": SYSTEM_PATH}, timeout=30, check=False)  # fmt: skip
    assert (done.returncode, done.stdout) == (0, program)
    refused = subprocess.run([str(launcher), "-n", "-f", "3", "--", "true"], capture_output=True,
                             text=True, timeout=30, check=False)  # fmt: skip
    assert refused.returncode == 125
    assert "-f" in refused.stderr


# -- the Python side of the interface ----------------------------------------------------


def test_launch_builds_the_command_line(launcher: Path, tmp_path: Path) -> None:
    launch = Launch(launcher, uid=SANDBOX_UID, rlimits=(("core", 0), ("nofile", 64)),
                    cgroup_procs=("/cg/cgroup.procs",), pidns=True, cwd=tmp_path)  # fmt: skip
    uid = str(SANDBOX_UID)
    assert launch.argv() == [
        str(launcher), "-n", "-s", str(STATUS_FD), "-p", "-u", uid, "-g", uid,
        "-G", "/cg/cgroup.procs", "-r", "core=0", "-r", "nofile=64", "-c", str(tmp_path), "--",
    ]  # fmt: skip
    assert Launch(launcher, status=False).argv() == [str(launcher), "-n", "--"]
    assert "-F" in Launch(launcher, seccomp=True).argv()
    handed = Launch(launcher, seccomp_fd=SECCOMP_FD).argv()
    assert handed[handed.index("-f") + 1] == str(SECCOMP_FD)


def test_the_status_of_an_exit_as_parsed(launcher: Path) -> None:
    need_root()
    ran = launch(launcher, ["-p"], shell("exit 5"))
    status = LauncherStatus.parse(ran.raw, asked_pidns=True)
    assert status is not None
    assert (status.exit, status.signal, status.killed, status.exec_errno) == (5, None, False, 0)
    assert status.pidns is True
    assert status.cpu >= 0
    assert status.cpu == pytest.approx(ran.status["utime"] + ran.status["stime"])
    assert status.maxrss == ran.status["maxrss_kb"] * 1024 > 0  # bytes
    unasked = LauncherStatus.parse(ran.raw, asked_pidns=False)
    assert unasked is not None
    assert unasked.pidns is None


def test_the_status_of_a_signal_death_as_parsed(launcher: Path) -> None:
    need_root()
    ran = launch(launcher, ["-p"], shell("kill -KILL $$"))
    status = LauncherStatus.parse(ran.raw, asked_pidns=True)
    assert status is not None
    assert (status.exit, status.signal) == (None, signal.SIGKILL)


def test_the_reaper_line_as_parsed(launcher: Path) -> None:
    need_root()
    ran = launch(launcher, ["-p"], ["true"])
    first = next(line for line in ran.raw.splitlines() if b"reaper" in line)
    assert parse_reaper(first) == ran.reaper
    assert parse_reaper(b"not json") is None
    assert parse_reaper(b'{"reaper": "12"}') is None


def test_no_status_line_parses_as_none() -> None:
    assert LauncherStatus.parse(b'{"reaper":123}\n', asked_pidns=True) is None
    assert LauncherStatus.parse(b"", asked_pidns=True) is None
