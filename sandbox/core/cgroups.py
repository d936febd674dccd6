"""A cgroup per sandbox uid: the memory (tmpfs and shm included), processes and CPU share of a call.

Rlimits are per process: five processes of one call could each hold the
memory limit, and files written to a tmpfs belong to no process at all. A
cgroup counts all of it. Each sandbox uid (held by one call, or one warm
process, at a time) gets one, made on its first use below a parent of the
server's (``stack-<pid>``, in the cgroup the server runs in, per
controller) and reused by every call of that uid; :meth:`Cgroups.close`
removes them. Reusing costs a few small file writes per call; making and
removing a cgroup per call would cost more.

The launcher, still root, writes its own pid into each ``cgroup.procs``
(its ``-G`` option) before it forks: the call's processes are in the group
from their first instruction, with no window to escape it.

Per call, :meth:`Group.prepare` sets the memory and process limits (only
when they changed), resets the peak and notes the OOM-kill count;
:meth:`Group.finish` kills anything left in the group and reads the peak
and whether the kernel's OOM killer ended a process of the call.

cgroup v1 (each controller its own hierarchy; "hybrid" when a v2 hierarchy
without these controllers is mounted beside) and v2 are both handled.
Without root, or without a writable hierarchy, there are no per-call
cgroups and :func:`detect` says why.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("stack")

# v1 controllers: memory and pids are required, cpu is used when mounted.
_V1_REQUIRED = ("memory", "pids")
_V1_OPTIONAL = ("cpu", "cpuacct")
_V2_CONTROLLERS = ("memory", "pids", "cpu")
# The launcher, its reaper and bubblewrap's two processes are in the group
# too, besides the call's own processes (RLIMIT_NPROC counts only the call's uid).
PIDS_SLACK = 4
# Memory still charged to a group after its call, past which the group is
# replaced by a fresh one before the next call (see Group.finish).
STALE = 64 * 1024 * 1024


@dataclass(frozen=True)
class Measured:
    """What the cgroup saw of one call.

    Attributes:
        peak: the highest memory charged to the call (processes, tmpfs,
            shared memory, page cache it brought in, kernel memory), in
            bytes; None when the kernel cannot reset the peak between calls.
        oom_killed: the kernel's OOM killer ended a process of the call.
        cpu: CPU seconds of every process of the call, however it ended
            (None without CPU accounting: v1 with no cpuacct hierarchy).
        leftovers: processes found in the group after the call and killed
            (always 0 unless something escaped the launcher's pid namespace).
    """

    peak: int | None
    oom_killed: bool
    leftovers: int = 0
    cpu: float | None = None


def _read(path: Path) -> str:
    # os.open and one read: a third of what open() costs, on every call's path.
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 65536).decode("ascii")
    finally:
        os.close(fd)


def _write(path: Path, value: str) -> None:
    # O_TRUNC as a shell's ">" does: nothing to cgroupfs, right for plain files (tests).
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _counter(text: str, name: str) -> int:
    """The value of ``name`` in a flat-keyed file (``memory.events``, ``memory.oom_control``)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    return 0


class Group:
    """The cgroup of one sandbox uid: one directory per controller (v1) or one (v2)."""

    def __init__(self, version: str, dirs: dict[str, Path]) -> None:
        self.version = version
        self.dirs = dirs
        self.memory_dir = dirs["memory"]
        unique = dict.fromkeys(dirs.values())
        self.procs = [str(d / "cgroup.procs") for d in unique]
        self._memory: int | None | bool = False  # False: not set yet
        self._pids: int | None | bool = False
        self._oom = -1  # the OOM-kill count before the call; -1: read it at prepare
        self._peak_fd = -1  # v2: memory.peak, reset through this descriptor
        self._swap = (self.memory_dir / "memory.memsw.limit_in_bytes").exists()
        self.stale = False
        # CPU used by the group, read before and after each call: unlike the
        # launcher's rusage it counts processes killed before anyone reaped
        # them (bubblewrap's, at a timeout).
        if version == "v1":
            self._cpu_file = dirs["cpuacct"] / "cpuacct.usage" if "cpuacct" in dirs else None
        else:
            self._cpu_file = self.memory_dir / "cpu.stat"
        self._cpu_before = 0.0

    # -- per call ---------------------------------------------------------------

    def prepare(self, memory: int | None, processes: int | None) -> None:
        """Set the call's limits, reset the peak and note the OOM-kill count (blocking, cheap).

        Raises:
            OSError: the cgroup cannot be written (the call must not run).
        """
        if memory != self._memory:
            try:
                self._set_memory(memory)
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    raise
                # v1 refuses a limit below what it cannot reclaim: tmpfs files
                # an earlier step of the call (its compile) left.
                why = (
                    f"the call already holds more than its memory limit of {memory} bytes "
                    "(files in its directory count)"
                )
                raise OSError(exc.errno, why) from exc
            self._memory = memory
        pids = None if processes is None else processes + PIDS_SLACK
        if pids != self._pids:
            _write(self.dirs["pids"] / "pids.max", "max" if pids is None else str(pids))
            self._pids = pids
        self._cpu_before = self._cpu() or 0.0
        if self.version == "v1":
            _write(self.memory_dir / "memory.max_usage_in_bytes", "0")
            if self._oom < 0:  # else known since the last call's finish
                self._oom = _counter(_read(self.memory_dir / "memory.oom_control"), "oom_kill")
        else:
            self._close_peak()
            try:
                fd = os.open(self.memory_dir / "memory.peak", os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                fd = -1
            if fd >= 0:
                try:
                    os.write(fd, b"reset")  # resets the peak seen through fd (Linux 6.12+)
                    self._peak_fd = fd
                except OSError:
                    os.close(fd)
            if self._oom < 0:
                self._oom = _counter(_read(self.memory_dir / "memory.events"), "oom_kill")

    def finish(self) -> Measured:
        """After the call: kill what is left in the group, read the peak and OOM kills.

        Memory can stay charged to the group after its call: files a call
        left in a tmpfs that outlives it (the host's /dev/shm without
        bubblewrap), page cache it read in. Past :data:`STALE` (or a quarter
        of the limit) the group is marked ``stale`` and :meth:`Cgroups.group`
        gives the uid a fresh one, so that no call starts with what an
        earlier one left counted against its limit.
        """
        left = self.kill()
        if self.version == "v1":
            peak: int | None = int(_read(self.memory_dir / "memory.max_usage_in_bytes"))
            oom = _counter(_read(self.memory_dir / "memory.oom_control"), "oom_kill")
            usage = int(_read(self.memory_dir / "memory.usage_in_bytes"))
        else:
            peak = None
            if self._peak_fd >= 0:
                peak = int(os.pread(self._peak_fd, 64, 0))
            self._close_peak()
            oom = _counter(_read(self.memory_dir / "memory.events"), "oom_kill")
            usage = int(_read(self.memory_dir / "memory.current"))
        limit = self._memory if isinstance(self._memory, int) and self._memory else None
        self.stale = usage > (min(STALE, limit // 4) if limit else STALE)
        killed, self._oom = oom > self._oom, oom
        cpu = self._cpu()
        used = max(0.0, cpu - self._cpu_before) if cpu is not None else None
        return Measured(peak, killed, left, used)

    def _cpu(self) -> float | None:
        """The group's CPU seconds so far, or None without CPU accounting."""
        if self._cpu_file is None:
            return None
        try:
            text = _read(self._cpu_file)
        except OSError:
            return None
        if self.version == "v1":
            return int(text) / 1e9  # nanoseconds
        return _counter(text, "usage_usec") / 1e6

    def occupied(self) -> bool:
        """Whether any process is in the group (one read; the usual answer after a call: no)."""
        return bool(_read(self.memory_dir / "cgroup.procs").split())

    def kill(self) -> int:
        """SIGKILL every process in the group until it is empty; returns how many there were."""
        procs = self.memory_dir / "cgroup.procs"
        found = _read(procs).split()
        if not found:
            return 0
        if self.version == "v2":
            with contextlib.suppress(OSError):  # cgroup.kill: Linux 5.14+
                _write(self.memory_dir / "cgroup.kill", "1")
        deadline = time.monotonic() + 2.0
        pids = found
        while pids and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(0.001)
            pids = _read(procs).split()
        log.warning("cgroup %s: killed %d process(es) left after the call", procs.parent,
                    len(found))  # fmt: skip
        return len(found)

    # -- internals -------------------------------------------------------------

    def _set_memory(self, memory: int | None) -> None:
        if self.version == "v2":
            _write(self.memory_dir / "memory.max", "max" if memory is None else str(memory))
            with contextlib.suppress(OSError):  # no swap accounting: nothing to cap
                _write(self.memory_dir / "memory.swap.max", "0")
            return
        value = "-1" if memory is None else str(memory)
        limit = self.memory_dir / "memory.limit_in_bytes"
        if not self._swap:
            _write(limit, value)
            return
        # memory+swap must stay >= memory: raised first when going up, lowered
        # after it when going down.
        swap = self.memory_dir / "memory.memsw.limit_in_bytes"
        current = int(_read(limit))
        if memory is None or memory >= current:
            _write(swap, value)
            _write(limit, value)
        else:
            _write(limit, value)
            _write(swap, value)

    def _close_peak(self) -> None:
        if self._peak_fd >= 0:
            os.close(self._peak_fd)
            self._peak_fd = -1

    def retire(self) -> bool:
        """Remove the group's directories if that can be done at once (it holds no process).

        What is still charged to it stays counted in the server's parent
        group, which has no limit.
        """
        try:
            for directory in dict.fromkeys(self.dirs.values()):
                directory.rmdir()
        except OSError:
            return False
        return True

    def remove(self) -> None:
        """Empty the group and remove its directories (at engine close)."""
        self._close_peak()
        with contextlib.suppress(OSError):
            self.kill()
        for directory in dict.fromkeys(self.dirs.values()):
            for _ in range(50):  # the last processes may still be exiting
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


class Cgroups:
    """The per-uid cgroups of one engine. Make it with :func:`detect`.

    Attributes:
        version: ``v1`` or ``v2``.
        parents: the server's parent directory of the groups, per controller.
        detail: a sentence for the start banner and ``/healthz``.
    """

    def __init__(self, version: str, parents: dict[str, Path], detail: str) -> None:
        self.version = version
        self.parents = parents
        self.detail = detail
        self._groups: dict[int, Group] = {}
        self._retired: list[Group] = []  # stale groups not removed yet (see close)
        self._made = 0

    def group(self, uid: int) -> Group:
        """The cgroup of ``uid``, made on its first use or when the last one went stale.

        Blocking: a few mkdirs (and rmdirs) when one is made.

        Raises:
            OSError: it cannot be made.
        """
        found = self._groups.get(uid)
        if found is not None and not found.stale:
            return found
        if found is not None and not found.retire():
            self._retired.append(found)
        self._made += 1
        dirs: dict[str, Path] = {}
        for controller, parent in self.parents.items():
            path = parent / f"u{uid}.{self._made}"
            if path not in dirs.values():
                path.mkdir(exist_ok=True)
            dirs[controller] = path
        made = Group(self.version, dirs)
        self._groups[uid] = made
        return made

    def close(self) -> None:
        """Remove every group and the parents (blocking)."""
        for group in [*self._groups.values(), *self._retired]:
            group.remove()
        self._groups.clear()
        self._retired.clear()
        for parent in dict.fromkeys(self.parents.values()):
            with contextlib.suppress(OSError):
                parent.rmdir()


def _mounts() -> list[tuple[str, str, list[str]]]:
    """(mount point, type, options) of every cgroup mount."""
    found = []
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
                found.append((fields[1], fields[2], fields[3].split(",")))
    return found


def _own_paths() -> dict[str, str]:
    """This process's cgroup path per v1 controller, and ``""`` for v2."""
    paths = {}
    with open("/proc/self/cgroup", encoding="utf-8") as own:
        for line in own:
            number, controllers, path = line.rstrip("\n").split(":", 2)
            if number == "0" and controllers == "":
                paths[""] = path
            for controller in controllers.split(","):
                if controller:
                    paths[controller] = path
    return paths


def _v1_parents(mounts: list[tuple[str, str, list[str]]], own: dict[str, str],
                name: str) -> dict[str, Path]:  # fmt: skip
    parents: dict[str, Path] = {}
    made: list[Path] = []
    try:
        for controller in (*_V1_REQUIRED, *_V1_OPTIONAL):
            point = next((m for m, kind, opts in mounts if kind == "cgroup" and controller in opts),
                         None)  # fmt: skip
            if point is None or controller not in own:
                if controller in _V1_REQUIRED:
                    raise OSError(f"no cgroup v1 {controller} hierarchy is mounted")
                continue
            parent = Path(point) / own[controller].lstrip("/") / name
            if parent not in parents.values():
                parent.mkdir()
                made.append(parent)
            parents[controller] = parent
    except OSError:
        for path in reversed(made):
            with contextlib.suppress(OSError):
                path.rmdir()
        raise
    return parents


def _v2_parent(point: str, own: str, name: str) -> Path:
    here = Path(point) / own.lstrip("/")
    available = _read(here / "cgroup.controllers").split()
    missing = [c for c in _V2_CONTROLLERS[:2] if c not in available]
    if missing:
        raise OSError(f"controllers {', '.join(missing)} are not delegated to {here}")
    wanted = [c for c in _V2_CONTROLLERS if c in available]
    enabled = _read(here / "cgroup.subtree_control").split()
    if any(c not in enabled for c in wanted):
        # EBUSY when the server's cgroup holds processes itself (v2's
        # no-internal-process rule): run stack in a delegated cgroup of its own.
        _write(here / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    parent = here / name
    parent.mkdir()
    try:
        _write(parent / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    except OSError:
        parent.rmdir()
        raise
    return parent


def detect(root: bool) -> tuple[Cgroups | None, str]:
    """Make the server's parent cgroups, if this machine allows; returns them and a sentence.

    Blocking (a few reads and mkdirs). Returns None (and why) when the
    server is not root or no memory and pids hierarchy is writable here.
    """
    if not root:
        return None, "no per-call cgroups: the server is not root (only per-process rlimits apply)"
    name = f"stack-{os.getpid()}"
    try:
        mounts = _mounts()
        own = _own_paths()
        v1 = any(kind == "cgroup" and "memory" in opts for _, kind, opts in mounts)
        v2 = next((point for point, kind, _ in mounts if kind == "cgroup2"), None)
        if v1:
            parents = _v1_parents(mounts, own, name)
            hybrid = " (hybrid)" if v2 is not None else ""
            version, detail = "v1", f"cgroup v1{hybrid}: {', '.join(parents)}"
        elif v2 is not None and "" in own:
            parent = _v2_parent(v2, own[""], name)
            parents = {c: parent for c in _V2_CONTROLLERS}
            version, detail = "v2", "cgroup v2: memory, pids, cpu"
        else:
            return None, "no per-call cgroups: no cgroup hierarchy with memory is mounted"
    except OSError as exc:
        return None, f"no per-call cgroups: the cgroup hierarchy is not writable here ({exc})"
    where = next(iter(parents.values()))
    made = Cgroups(version, parents, f"{detail} per call, in {where}")
    return made, made.detail
