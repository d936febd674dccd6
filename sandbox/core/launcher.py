"""The small C launcher every call is started through: its build and its interface.

The launcher (``_launcher.c``) sets the call's rlimits, drops to its uid,
enters its cgroups, starts it in a fresh pid namespace (unless bubblewrap
makes one) and kills whatever is left when it ends. It is compiled with the
system C compiler on first use and cached by the hash of its source and of
the compile line.

This module owns the interface: :class:`Launch` builds the command line,
:data:`CONTROL_FD` and :data:`STATUS_FD` are the descriptors a spawn gives
it, and :class:`LauncherStatus` reads what it reports on the status fd.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SpawnError

SOURCE = Path(__file__).with_name("_launcher.c")

CONTROL_FD = 3
"""The call's response-control descriptor (fd 3 messages), as the program sees it."""
STATUS_FD = 4
"""Where the launcher reports (``-s``): a ``{"reaper": PID}`` line, then its status line."""
SECCOMP_FD = 5
"""Where the launcher gives the program its compiled seccomp filter (``-f``): bubblewrap's
``--seccomp`` descriptor."""


@dataclass(frozen=True)
class Launch:
    """One launcher command line (up to and including ``--``; the program follows).

    Attributes:
        launcher: the launcher executable.
        uid: run the program as this uid and gid, with no other group (root only).
        rlimits: ``(name, value)`` pairs: cpu, as, data, nproc, nofile, fsize, stack, core.
        cgroup_procs: ``cgroup.procs`` files the launcher enters before it forks.
        pidns: a new pid namespace of the launcher's (not under bubblewrap,
            which makes its own).
        cwd: the program's working directory.
        status: report on :data:`STATUS_FD`.
        seccomp: install the call's seccomp filter in the program, last thing
            before its exec (``-F``).
        seccomp_fd: instead, give the program the compiled filter to read on
            this descriptor (``-f``; bubblewrap's ``--seccomp``, which
            installs it in what it runs: bubblewrap itself needs the
            namespace calls the filter denies).
    """

    launcher: Path
    uid: int | None = None
    rlimits: tuple[tuple[str, int], ...] = ()
    cgroup_procs: tuple[str, ...] = ()
    pidns: bool = False
    cwd: Path | None = None
    status: bool = True
    seccomp: bool = False
    seccomp_fd: int | None = None

    def argv(self) -> list[str]:
        """The command line; ``no_new_privs`` is always set."""
        argv = [str(self.launcher), "-n"]
        if self.status:
            argv += ["-s", str(STATUS_FD)]
        if self.pidns:
            argv.append("-p")
        if self.uid is not None:
            argv += ["-u", str(self.uid), "-g", str(self.uid)]
        for procs in self.cgroup_procs:
            argv += ["-G", procs]
        if self.seccomp:
            argv.append("-F")
        if self.seccomp_fd is not None:
            argv += ["-f", str(self.seccomp_fd)]
        for name, value in self.rlimits:
            argv += ["-r", f"{name}={value}"]
        if self.cwd is not None:
            argv += ["-c", str(self.cwd)]
        argv.append("--")
        return argv


@dataclass(frozen=True)
class LauncherStatus:
    """The launcher's last status line: how the program ended and what the tree used.

    Attributes:
        exit: the program's exit status, or None (killed by a signal, or never ran).
        signal: the signal that ended it, or None.
        cpu: user + system CPU seconds of every process it reaped.
        maxrss: the largest process's peak resident memory, in bytes.
        killed: the launcher killed processes left behind.
        exec_errno: the errno of a failed exec of the program (0: it ran).
        pidns: whether the launcher's pid namespace was made (False: the
            process-group fallback), or None when it was not asked for.
    """

    exit: int | None
    signal: int | None
    cpu: float
    maxrss: int
    killed: bool
    exec_errno: int
    pidns: bool | None

    @classmethod
    def parse(cls, data: bytes, *, asked_pidns: bool) -> LauncherStatus | None:
        """The status in what the launcher wrote on its status fd, or None if it wrote none."""
        found: dict[str, Any] | None = None
        for line in data.splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict) and "exit" in parsed:
                found = parsed
        if found is None:
            return None
        code = int(found.get("exit", -1))
        return cls(
            exit=code if code >= 0 else None,
            signal=int(found.get("signal", 0)) or None,
            cpu=float(found.get("utime", 0.0)) + float(found.get("stime", 0.0)),
            maxrss=int(found.get("maxrss_kb", 0)) * 1024,
            killed=bool(found.get("killed", False)),
            exec_errno=int(found.get("exec_errno", 0)),
            pidns=bool(found["pidns"]) if asked_pidns and "pidns" in found else None,
        )


def seccomp_filter(launcher: Path) -> bytes:
    """The launcher's compiled seccomp filter (``stack-launch -S``; blocking).

    Empty on an architecture the filter does not know (calls then run
    without one).
    """
    done = subprocess.run([str(launcher), "-S"], capture_output=True, timeout=10, check=True)
    return done.stdout


def parse_reaper(line: bytes) -> int | None:
    """The reaper's pid from the launcher's first status line (None if unreadable)."""
    try:
        value = json.loads(line).get("reaper", 0)
    except (ValueError, AttributeError, TypeError):
        return None
    return int(value) or None if isinstance(value, int) else None


FLAGS = ("-O2", "-std=gnu11")


def cache_directory() -> Path:
    """Where built helpers are kept: ``$STACK_CACHE_DIR`` or ``~/.cache/stack``."""
    explicit = os.environ.get("STACK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stack"


def compile_lines() -> list[list[str]]:
    """The compile commands to try (without flags and files), fastest launcher first.

    The launcher is exec'd once per call, so its start-up is on every call's
    path: a static one skips the dynamic loader (about 0.2 ms here), and a
    static musl one also skips glibc's start-up, which probes the CPU with
    ``cpuid`` (slow in a virtual machine; another 0.2 ms). musl-gcc is used
    when installed (``apt-get install musl-tools``), else the C compiler,
    static if the C library allows it.
    """
    lines: list[list[str]] = []
    musl = shutil.which("musl-gcc")
    if musl is not None:
        lines.append([musl, "-static"])
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is not None:
        lines += [[compiler, "-static"], [compiler]]
    return lines


def launcher_path() -> Path:
    """The launcher executable, built now if it is not in the cache (blocking).

    Raises:
        SpawnError: no C compiler, or the build failed.
    """
    source = SOURCE.read_bytes()
    directory = cache_directory()
    prefix = f"stack-launch-{hashlib.sha256(source).hexdigest()[:16]}"
    lines = compile_lines()
    if not lines:
        # No compiler now: any build of this source made before will do.
        built = sorted(directory.glob(f"{prefix}-*"))
        if built and os.access(built[0], os.X_OK):
            return built[0]
        raise SpawnError(
            "stack needs a C compiler once, to build its process launcher: "
            "install gcc (apt-get install gcc), then start stack again"
        )
    # Named by the best line this machine has: installing musl-tools later
    # gets the faster launcher built on the next start.
    best = hashlib.sha256(" ".join(lines[0]).encode()).hexdigest()[:8]
    target = directory / f"{prefix}-{best}"
    if os.access(target, os.X_OK):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as work:
        out = Path(work) / "stack-launch"
        errors = ""
        for line in lines:
            done = subprocess.run(
                [*line, *FLAGS, "-o", str(out), str(SOURCE)], capture_output=True, check=False
            )
            if done.returncode == 0:
                break
            errors = done.stderr.decode(errors="replace")[:2000]
        else:
            raise SpawnError(f"building the launcher failed: {errors}")
        out.chmod(0o755)
        os.replace(out, target)
    return target
