"""Runs one call's process: pumps its pipes, reads its control channel, ends it.

One loop per call serves its stdout, stderr, fd 3 and status pipes and the
launcher's exit, with a task beside it pumping stdin, all under the call's
wall timeout.

Cancellation (the client went away, the server stops) and every other way a
call ends go through the same path: the launcher is asked to kill the whole
process tree (SIGTERM to it; it SIGKILLs everything in the call's pid
namespace and reports usage), escalated to SIGKILL of its process group if it
does not answer, and reaped, in a shielded scope.

One module on purpose (about 1,000 lines): the per-call loop is one state
machine over six descriptors (stdout, stderr, fd 3, status, pidfd, stdin),
and the head, body, limits and kill decisions read each other's state; the
values it returns (``Outcome``, ``Usage``) and the ``CallIO`` seam live
beside it so that a change to one is seen with the others.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import psutil
import trio

from .control import CGIHead, Control, Event, Head
from .launcher import CONTROL_FD, STATUS_FD, LauncherStatus, parse_reaper

if TYPE_CHECKING:
    from .cgroups import Group, Measured

CHUNK = 65536
STDERR_KEEP = 16 * 1024
STDERR_LOG = 64 * 1024
KILL_GRACE = 1.0
_MEMORY_SIGNALS = (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT)
_MEMORY_ERRORS = re.compile(
    rb"MemoryError|Cannot allocate memory|out of memory|Out of memory|failed to allocate|"
    rb"Allowed memory size|heap out of memory|NoMemoryError|not enough memory|"
    rb"std::bad_alloc|memory allocation"
)


@dataclass(frozen=True)
class Usage:
    """What a call used.

    Attributes:
        wall: seconds from spawn to the end of the process tree.
        cpu: user + system CPU seconds of every process of the call.
        memory: peak memory in bytes: of the whole call (its processes,
            its tmpfs and shared-memory files, kernel memory) when it ran in
            a cgroup of its own, else the peak resident memory of its
            largest process.
        bytes_in: bytes written to stdin.
        bytes_out: bytes read from stdout.
    """

    wall: float = 0.0
    cpu: float = 0.0
    memory: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def to_json(self) -> dict[str, Any]:
        """The usage as JSON (times in seconds, sizes in bytes)."""
        return {
            "wall": round(self.wall, 6),
            "cpu": round(self.cpu, 6),
            "memory": self.memory,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }


REASONS = (
    "ok", "exit", "signal", "timeout", "cpu", "memory", "file_size", "output", "killed",
    "error", "spawn",
)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """How a call ended.

    Attributes:
        reason: one of :data:`REASONS`: ``ok`` (exit 0), ``exit`` (non-zero
            exit), ``signal`` (killed by a signal), ``timeout`` (wall limit),
            ``cpu`` (CPU limit), ``memory`` (memory limit), ``output`` (output
            limit), ``file_size`` (file-size limit), ``killed`` (the caller
            went away), ``error`` (the script reported an error on fd 3),
            ``spawn`` (it could not start).
        exit_code: the exit status, or None when killed by a signal.
        signal: the signal number that ended it, or None.
        usage: what it used.
        head: the response head the script asked for.
        head_sent: whether the head (and so the body) went out.
        message: a human sentence saying why it ended, when not ``ok``.
        stderr: the last bytes of its stderr.
        stream: with reason ``output``: which stream went over, ``stdout``, ``stderr``
            or ``control`` (fd 3: too many bytes, or a response head too large).
        spawn: seconds from the spawn to the launcher reporting the tree running.
        pidns: whether the call had a pid namespace of the launcher's: False
            when the launcher was asked for one and fell back to a process
            group (weaker: see docs/SECURITY.md); None when it was not asked
            (bubblewrap makes the namespace) or did not say.
    """

    reason: str
    exit_code: int | None
    signal: int | None
    usage: Usage
    head: Head = field(default_factory=Head)
    head_sent: bool = False
    message: str = ""
    stderr: bytes = b""
    stream: str | None = None
    spawn: float | None = None
    pidns: bool | None = None

    @property
    def ok(self) -> bool:
        """True when the call exited 0 and reported no error."""
        return self.reason == "ok"

    def to_json(self) -> dict[str, Any]:
        """The outcome as JSON."""
        return {
            "reason": self.reason,
            "exit_code": self.exit_code,
            "signal": signal_name(self.signal) if self.signal else None,
            "message": self.message,
            "usage": self.usage.to_json(),
        }


def signal_name(number: int) -> str:
    """``9`` -> ``SIGKILL``."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


class CallIO(Protocol):
    """What a front door gives the core to talk to a running call."""

    async def receive_stdin(self) -> bytes:
        """The next chunk of stdin; ``b""`` at the end."""

    async def send_head(self, head: Head) -> None:
        """The first body bytes are ready: send the status and headers."""

    async def send_body(self, data: bytes) -> None:
        """Send body bytes (only after :meth:`send_head`)."""

    async def end_body(self) -> None:
        """The script said the body is complete (``end`` on fd 3), before it exited.

        Without it, the body is complete when the call's :class:`Outcome`
        is returned and ``outcome.ok``; a front door should then abort, not
        complete, a body that was cut by a failure.
        """

    def on_stderr(self, data: bytes) -> None:
        """Raw stderr bytes, as read (the lines also come as ``stderr`` events)."""

    def on_event(self, event: Event) -> None:
        """A log line (stderr or fd 3) or an ignored control message."""

    def on_started(self, running: Running) -> None:
        """The process is running: ``running`` can signal it until it ends."""


class Running:
    """A handle on a running call, given to :meth:`CallIO.on_started`."""

    def __init__(self, call: _Pump) -> None:
        self._call = call

    def signal(self, number: int) -> int:
        """Send a signal to the call's program and everything it started.

        The launcher, its reaper and bubblewrap's own processes are skipped,
        so the signal reaches the script as if sent to it directly. Returns
        how many processes were signalled (blocking: reads /proc; cheap).
        """
        call = self._call
        if call.reaper is None or call.exited.is_set():
            return 0
        try:
            tree = psutil.Process(call.reaper).children(recursive=True)
        except psutil.Error:
            return 0
        sent = 0
        for proc in tree:
            try:
                if proc.name() == "bwrap":
                    continue
                proc.send_signal(number)
                sent += 1
            except psutil.Error:
                continue
        return sent


class CollectIO:
    """A CallIO that keeps stdout, stderr and both interleaved in the order read.

    Args:
        stdin: the whole of stdin.
    """

    def __init__(self, stdin: bytes = b"") -> None:
        self._stdin = stdin
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._both: list[bytes] = []
        self.head: Head | None = None

    @property
    def stdout(self) -> bytes:
        """Everything written to stdout."""
        return b"".join(self._out)

    @property
    def stderr(self) -> bytes:
        """Everything written to stderr."""
        return b"".join(self._err)

    @property
    def output(self) -> bytes:
        """Both streams, interleaved in the order they were read."""
        return b"".join(self._both)

    async def receive_stdin(self) -> bytes:
        data, self._stdin = self._stdin, b""
        return data

    async def send_head(self, head: Head) -> None:
        self.head = head

    async def send_body(self, data: bytes) -> None:
        self._out.append(data)
        self._both.append(data)

    async def end_body(self) -> None:
        pass

    def on_stderr(self, data: bytes) -> None:
        self._err.append(data)
        self._both.append(data)

    def on_event(self, event: Event) -> None:
        pass

    def on_started(self, running: Running) -> None:
        pass


@dataclass(frozen=True)
class Spawn:
    """A fully resolved process to start.

    Attributes:
        argv: the launcher command line (launcher, its options, ``--``, program).
        env: the complete environment.
        timeout: wall seconds, or None.
        output: stdout bytes allowed, or None.
        stderr_limit: stderr bytes allowed (past it the call is killed), or None.
        memory: the memory limit, to tell a memory failure from others.
        cpu: the CPU limit in seconds, to tell a CPU failure from others.
        cgi: read the head from the top of stdout instead of fd 3.
        stdin_data: stdin to write before reading from the front door.
        exit_is_signal: an exit status above 128 means death by signal
            (status - 128), as bubblewrap reports it.
        program_at: where the program's own command line starts in ``argv``
            (after the launcher's and bubblewrap's options).
        processes: the process limit, set on the cgroup.
        cgroup: the call's cgroup (the launcher enters it with ``-G``): its
            limits are set and its peak reset at the start, its peak and
            OOM kills read at the end.
        pidns: the launcher was asked for a pid namespace (``-p``).
    """

    argv: Sequence[str]
    env: Mapping[str, str]
    timeout: float | None
    output: int | None = None
    stderr_limit: int | None = None
    memory: int | None = None
    cpu: float | None = None
    cgi: bool = False
    stdin_data: bytes = b""
    exit_is_signal: bool = False
    program_at: int = 0
    processes: int | None = None
    cgroup: Group | None = None
    pidns: bool = False


def _high_fd(fd: int) -> int:
    """Move ``fd`` to 5 or above so the spawn's dup2 into 0-4 cannot clobber it."""
    if fd >= 5:
        return fd
    new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(fd)
    return new


def _pipe() -> tuple[int, int]:
    read, write = os.pipe()
    return _high_fd(read), _high_fd(write)


class _Pump:
    """One call's state while it runs: what its pipes said, and how it ended.

    Its output pipes (stdout, stderr, fd 3, status) and the launcher's pidfd
    are served by one loop, :meth:`pump`, over a private epoll set: the
    event loop then watches one descriptor per call instead of six, and one
    task, not one per pipe, runs for it.
    """

    def __init__(self, spawn: Spawn, io: CallIO) -> None:
        self.spawn = spawn
        self.io = io
        self.control = Control()
        self.cgi = CGIHead(self.control.head) if spawn.cgi else None
        self.head_sent = False
        self.body_ended = False
        self.reason: str | None = None
        self.message = ""
        self.bytes_in = 0
        self.bytes_out = 0
        self.bytes_err = 0
        self.stream: str | None = None
        self.stderr_tail = bytearray()
        self.stderr_pending = b""
        self.stderr_logged = 0
        self.status: LauncherStatus | None = None
        self.status_buf = b""
        self.pid = -1
        self.exited = trio.Event()
        self.ctl_fd = -1
        self.ctl_eof = False
        self.stdout_fd = -1
        self.stderr_fd = -1
        self.status_fd = -1
        self.pidfd = -1
        self.open: set[int] = set()  # output pipes not at their end yet
        self.reaper: int | None = None
        self.started_at = 0.0
        self.spawned_at: float | None = None
        self.told_started = False
        self.preamble = b""
        self.stdin_open = True

    # -- control channel ---------------------------------------------------

    def drain_control(self, cancel: trio.CancelScope | None = None, chunks: int = 16) -> None:
        """Read the control messages already written, up to ``chunks`` reads (non-blocking).

        Bounded so that a script writing fd 3 as fast as it can does not hold
        the event loop: what is left is read on the loop's next turn. Past the
        control channel's limits (see :class:`~sandbox.core.control.Control`)
        the call ends with an ``output`` outcome.
        """
        for _ in range(chunks):
            if self.ctl_eof:
                return
            try:
                data = os.read(self.ctl_fd, CHUNK)
            except BlockingIOError:
                return
            if not data:
                self.ctl_eof = True
                self.open.discard(self.ctl_fd)
                self._events(self.control.close())
                return
            self._events(self.control.feed(data))
            if self.control.overflow is not None:
                if self.reason is None:
                    self.reason, self.stream = "output", "control"
                    self.message = self.control.overflow
                if cancel is not None:
                    cancel.cancel()
                return

    def _events(self, events: list[Event]) -> None:
        for event in events:
            if event.kind == "error" and self.reason is None:
                self.reason = "error"
                self.message = event.text
            self.io.on_event(event)

    # -- the loop ----------------------------------------------------------

    async def pump(self, poll: select.epoll, cancel: trio.CancelScope) -> None:
        """Serve the pipes until each is at its end and the launcher has exited.

        Stdout goes to the body (an ``end`` on fd 3 completes it at once,
        after the stdout bytes written before it; later output is read and
        dropped), stderr to the log, fd 3 to the head, the status pipe to
        the usage. ``cancel`` is cancelled at an output limit.
        """
        while self.open or not self.exited.is_set():
            if self.control.ended and not self.body_ended:
                # Everything written before ``end`` is in the pipe already.
                if not await self._stdout_now(cancel):
                    return
                await self._end_explicitly()
            ready = poll.poll(0)
            if not ready:
                await trio.lowlevel.wait_readable(poll.fileno())
                continue
            fds = {fd for fd, _ in ready}
            # fd 3 first: what it says before stdout bytes shapes the head.
            if self.ctl_fd in fds:
                self.drain_control(cancel)
            # Just after an ``end``, stdout is left to the top of the loop.
            ending = self.control.ended and not self.body_ended
            if self.stdout_fd in fds and not ending and not await self._read_stdout(cancel):
                return
            if self.stderr_fd in fds:
                self._read_stderr(cancel)
            if self.status_fd in fds:
                self.read_status()
            if self.pidfd in fds:
                self._reap()
            for fd in fds - self.open:
                if fd != self.pidfd or self.exited.is_set():
                    poll.unregister(fd)
            # A script that keeps its pipes full must not hold the event loop.
            await trio.lowlevel.checkpoint()
            if cancel.cancel_called:
                return

    def _reap(self) -> None:
        """Reap the launcher if it has exited (non-blocking)."""
        if self.exited.is_set():
            return
        try:
            done = os.waitpid(self.pid, os.WNOHANG) != (0, 0)
        except ChildProcessError:
            done = True  # reaped already (a warm process checked before its call)
        if done:
            self.exited.set()

    async def wait_exited(self) -> None:
        """Wait for the launcher to exit and reap it."""
        self._reap()
        try:
            while not self.exited.is_set():
                await trio.lowlevel.wait_readable(self.pidfd)
                self._reap()
        finally:
            trio.lowlevel.notify_closing(self.pidfd)

    # -- stdout --------------------------------------------------------------

    def _stdout_chunk(self) -> bytes:
        """Bytes ready on stdout; b"" when none are, or at its end (then marked done)."""
        try:
            data = os.read(self.stdout_fd, CHUNK)
        except BlockingIOError:
            return b""
        if not data:
            self.open.discard(self.stdout_fd)
            self._stdout_done()
        return data

    async def _read_stdout(self, cancel: trio.CancelScope) -> bool:
        """One read of stdout; False when the output limit was hit."""
        data = self._stdout_chunk()
        if not data or self.body_ended:
            return True  # nothing yet, the end, or after ``end``: read and dropped
        return await self._forward(data, cancel)

    async def _stdout_now(self, cancel: trio.CancelScope) -> bool:
        """Forward all stdout already written; False when the output limit was hit."""
        while self.stdout_fd in self.open and (data := self._stdout_chunk()):
            if not await self._forward(data, cancel):
                return False
        return True

    def _stdout_done(self) -> None:
        if self.cgi is not None and not self.cgi.done:
            try:
                self.cgi.finish()
            except ValueError as exc:
                self._cgi_failed(str(exc))

    async def _forward(self, data: bytes, cancel: trio.CancelScope) -> bool:
        """Send stdout bytes on; False when the output limit was hit."""
        limit = self.spawn.output
        if limit is not None and self.bytes_out + len(data) > limit:
            await self._body(data[: limit - self.bytes_out])
            self.reason = "output"
            self.stream = "stdout"
            self.message = f"the script wrote more than the output limit of {limit} bytes"
            cancel.cancel()
            return False
        await self._body(data)
        return True

    async def _end_explicitly(self) -> None:
        if self.cgi is not None and not self.cgi.done:
            return  # no complete CGI head yet: its end of output judges it
        if not self.head_sent and self.reason != "error":
            self.drain_control()
            if self.control.overflow is not None:
                return
            self.head_sent = True
            await self.io.send_head(self.control.freeze())
        self.body_ended = True
        if self.head_sent:
            await self.io.end_body()

    async def _body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.cgi is not None and not self.cgi.done:
            try:
                data = self.cgi.feed(data)
            except ValueError as exc:
                self._cgi_failed(str(exc))
                return
            if not self.cgi.done:
                return
        if not data and not self.head_sent:
            return
        if not self.head_sent:
            # Everything written on fd 3 before these bytes shapes the head.
            self.drain_control()
            if self.reason == "error" or self.control.overflow is not None:
                return
            self.head_sent = True
            await self.io.send_head(self.control.freeze())
        if data:
            await self.io.send_body(data)

    def _cgi_failed(self, why: str) -> None:
        if self.reason is None:
            self.reason = "error"
            self.message = f"bad CGI response: {why}"

    # -- stderr --------------------------------------------------------------

    def _read_stderr(self, cancel: trio.CancelScope) -> None:
        """Keep stderr's tail, log its first lines, hand it raw to the front door.

        At most STDERR_LOG bytes of a call's stderr are logged (a flood must
        not flood the server's log); the rest is counted.
        """
        try:
            data = os.read(self.stderr_fd, CHUNK)
        except BlockingIOError:
            return
        if not data:
            self._stderr_done()
            return
        limit = self.spawn.stderr_limit
        if limit is not None and self.bytes_err + len(data) > limit:
            data = data[: limit - self.bytes_err]
            self.reason = "output"
            self.stream = "stderr"
            self.message = f"the script wrote more than the stderr limit of {limit} bytes"
            cancel.cancel()
        self.bytes_err += len(data)
        self.io.on_stderr(data)
        self.stderr_tail += data
        if len(self.stderr_tail) > STDERR_KEEP:
            del self.stderr_tail[: len(self.stderr_tail) - STDERR_KEEP]
        if self.stderr_logged < STDERR_LOG:
            pending = self.stderr_pending + data
            *lines, pending = pending.split(b"\n")
            if len(pending) > STDERR_KEEP:
                lines.append(pending)
                pending = b""
            self.stderr_pending = pending
            for line in lines:
                self.stderr_logged += len(line) + 1
                self.io.on_event(Event("stderr", line.decode("utf-8", "replace")))
                if self.stderr_logged >= STDERR_LOG:
                    break
        if cancel.cancel_called:
            self._stderr_done()

    def _stderr_done(self) -> None:
        if self.stderr_fd not in self.open:
            return
        self.open.discard(self.stderr_fd)
        logged = self.stderr_logged
        if self.stderr_pending and logged < STDERR_LOG:
            self.io.on_event(Event("stderr", self.stderr_pending.decode("utf-8", "replace")))
        if self.bytes_err > logged and logged >= STDERR_LOG:
            self.io.on_event(
                Event("stderr", f"[stderr: {self.bytes_err - logged} more bytes not logged]")
            )

    # -- status ----------------------------------------------------------------

    def read_status(self) -> None:
        """The first status line names the reaper; the last one, at the end, the usage."""
        try:
            chunk = os.read(self.status_fd, CHUNK)
        except BlockingIOError:
            return
        if not chunk:
            self.open.discard(self.status_fd)
            self.parse_status()
            return
        self.status_buf += chunk
        if not self.told_started and b"\n" in self.status_buf:
            self._tell_started()

    def _tell_started(self) -> None:
        self.told_started = True
        if self.spawned_at is None:
            self.spawned_at = time.monotonic()
        self.reaper = parse_reaper(self.status_buf.split(b"\n", 1)[0])
        self.io.on_started(Running(self))

    def parse_status(self) -> None:
        self.status = LauncherStatus.parse(self.status_buf, asked_pidns=self.spawn.pidns)

    # -- stdin -----------------------------------------------------------------

    async def pump_stdin(self, fd: int) -> None:
        """Write the preamble, ``stdin_data``, then the front door's stdin; close it."""
        try:
            if self.preamble:
                await _write_all(fd, self.preamble)
            if self.spawn.stdin_data:
                await _write_all(fd, self.spawn.stdin_data)
                self.bytes_in += len(self.spawn.stdin_data)
            while True:
                data = await self.io.receive_stdin()
                if not data:
                    break
                await _write_all(fd, data)
                self.bytes_in += len(data)
        except BrokenPipeError:
            pass  # the script closed stdin or exited: the rest is not wanted
        finally:
            self.stdin_open = False
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    # -- the end -----------------------------------------------------------------

    async def kill(self) -> None:
        """Ask the launcher to end the call; force it if it does not."""
        if self.exited.is_set():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        with trio.move_on_after(KILL_GRACE):
            await self.wait_exited()
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await self.wait_exited()


async def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to a non-blocking pipe."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await trio.lowlevel.wait_writable(fd)
            continue
        view = view[written:]
    await trio.lowlevel.checkpoint()


@dataclass
class Started:
    """A launched process whose pipes nobody pumps yet (see :func:`start`).

    Attributes:
        pid: the launcher's pid (our child: reap it with :meth:`discard` or :func:`drive`).
        spawn: what was launched.
        stdin, stdout, stderr, control, status: the server's ends of the pipes.
        started_at: ``time.monotonic()`` at the spawn.
    """

    pid: int
    spawn: Spawn
    stdin: int
    stdout: int
    stderr: int
    control: int
    status: int
    started_at: float
    reaped: bool = False

    def fds(self) -> tuple[int, ...]:
        """Every file descriptor it holds."""
        return (self.stdin, self.stdout, self.stderr, self.control, self.status)

    def alive(self) -> bool:
        """Whether the launcher still runs (False once it has exited; then it is reaped)."""
        if not self.reaped:
            try:
                self.reaped = os.waitpid(self.pid, os.WNOHANG) != (0, 0)
            except ChildProcessError:
                self.reaped = True
        return not self.reaped

    async def discard(self) -> None:
        """End it unused: the launcher kills its tree; reap it and close every pipe."""
        try:
            if not self.reaped:
                with trio.CancelScope(shield=True):
                    await _force_reap(self.pid)
                self.reaped = True
        finally:
            for fd in self.fds():
                os.close(fd)


def start(spawn: Spawn) -> Started:
    """Launch ``spawn`` with its five pipes; nothing is read or written yet.

    Raises:
        OSError: the launcher could not be started.
    """
    if spawn.cgroup is not None:
        spawn.cgroup.prepare(spawn.memory, spawn.processes)
    fds: list[int] = []
    try:
        stdin_r, stdin_w = _pipe()
        fds += [stdin_r, stdin_w]
        stdout_r, stdout_w = _pipe()
        fds += [stdout_r, stdout_w]
        stderr_r, stderr_w = _pipe()
        fds += [stderr_r, stderr_w]
        ctl_r, ctl_w = _pipe()
        fds += [ctl_r, ctl_w]
        status_r, status_w = _pipe()
        fds += [status_r, status_w]
        # The call runs as another uid than the server: without this, opening
        # /dev/stdin, /dev/stdout or /dev/stderr (a re-open through /proc/self/fd)
        # fails with EACCES on the server's 0600 pipes. Only processes that may
        # ptrace the call can reach them through /proc, so this opens nothing else.
        for fd in (stdin_r, stdout_w, stderr_w):
            os.fchmod(fd, 0o666)
        started = time.monotonic()
        # posix_spawn is a vfork + exec: it holds this thread until the child
        # has exec'd, about 0.15 ms on an idle machine; under load the child
        # waits for a CPU first (the largest item of the server's profile).
        # Spawning from a worker thread instead was measured: no gain.
        pid = os.posix_spawn(
            spawn.argv[0],
            list(spawn.argv),
            dict(spawn.env),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin_r, 0),
                (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                (os.POSIX_SPAWN_DUP2, stderr_w, 2),
                (os.POSIX_SPAWN_DUP2, ctl_w, CONTROL_FD),
                (os.POSIX_SPAWN_DUP2, status_w, STATUS_FD),
            ],
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM),
            setsigmask=(),
        )
    except OSError:
        for fd in fds:
            os.close(fd)
        raise
    for fd in (stdin_r, stdout_w, stderr_w, ctl_w, status_w):
        os.close(fd)
    os.set_blocking(ctl_r, False)
    os.set_blocking(stdout_r, False)
    return Started(pid, spawn, stdin_w, stdout_r, stderr_r, ctl_r, status_r, started)


async def run(spawn: Spawn, io: CallIO) -> Outcome:
    """Start ``spawn`` and run it to the end, talking to ``io``.

    Returns:
        the :class:`Outcome`; every process of the call is dead by then.

    Cancellation: the process tree is killed and reaped (shielded), then the
    cancellation propagates.
    """
    try:
        started = start(spawn)
    except OSError as exc:
        return Outcome("spawn", None, None, Usage(), message=f"could not start the call: {exc}")
    return await drive(started, io)


async def drive(started: Started, io: CallIO, spawn: Spawn | None = None,
                preamble: bytes = b"") -> Outcome:  # fmt: skip
    """Run a :func:`start`-ed process to the end, talking to ``io``.

    Args:
        started: the process; from here on this function owns it.
        io: the front door's side.
        spawn: the call's settings when they differ from the launch's (a warm
            process started ahead of its call); its timeout counts from now.
        preamble: bytes written to stdin first and not counted (a warm
            process's call message).
    """
    spawn = spawn or started.spawn
    call = _Pump(spawn, io)
    call.pid = started.pid
    call.ctl_fd = started.control
    call.stdout_fd = started.stdout
    call.stderr_fd = started.stderr
    call.status_fd = started.status
    call.open = {started.stdout, started.stderr, started.control, started.status}
    if preamble:
        # A warm process: already running; the call starts now.
        started_at = call.started_at = call.spawned_at = time.monotonic()
    else:
        started_at = call.started_at = started.started_at
    call.preamble = preamble
    stdin = started.stdin  # until the stdin task owns it
    poll: select.epoll | None = None
    cancelled = pumped = False
    try:
        if preamble and spawn.cgroup is not None:
            # Inside the try: if the group cannot be set, the waiting process
            # is still killed and reaped and its pipes closed.
            spawn.cgroup.prepare(spawn.memory, spawn.processes)  # the peak counts from here
        for fd in (started.stdin, started.stderr, started.status):
            os.set_blocking(fd, False)
        poll = select.epoll()
        for fd in call.open:
            poll.register(fd, select.EPOLLIN)
        try:
            call.pidfd = os.pidfd_open(call.pid)
        except ProcessLookupError:
            call.exited.set()  # reaped already (a warm process that died waiting)
        else:
            poll.register(call.pidfd, select.EPOLLIN)
        async with trio.open_nursery() as nursery:
            # The nursery's scope is the call's wall-clock limit.
            scope = nursery.cancel_scope
            if spawn.timeout is not None:
                scope.deadline = trio.current_time() + spawn.timeout
            nursery.start_soon(call.pump_stdin, stdin)
            stdin = -1
            await call.pump(poll, scope)
            pumped = True
            if call.stdin_open:
                scope.cancel()  # the tree is dead: nobody reads stdin
        if scope.cancelled_caught and not pumped and call.reason is None:
            call.reason = "timeout"
            call.message = f"the call ran over its wall-clock limit of {spawn.timeout:g} s"
        if not call.exited.is_set():
            with trio.CancelScope(shield=True):
                await call.kill()
    except trio.Cancelled:
        cancelled = True
        raise
    finally:
        # A last look: the status line and control messages left.
        call.drain_control()
        if not call.exited.is_set() or call.status_fd in call.open:
            with trio.CancelScope(shield=True):
                if not call.exited.is_set():
                    await _force_reap(call.pid)
                    call.exited.set()
                await _finish_status(call)
        # Only this task ever waited on these: no other to wake (notify_closing).
        if poll is not None:
            poll.close()
        for fd in (stdin, call.pidfd, call.ctl_fd, call.stdout_fd, call.stderr_fd, call.status_fd):
            if fd >= 0:
                os.close(fd)
        if cancelled and call.reason is None:
            call.reason = "killed"
        measured = None
        if spawn.cgroup is not None:
            try:
                if spawn.cgroup.occupied():
                    # Something escaped the call's pid namespace: killing it may
                    # take a while, away from the event loop.
                    with trio.CancelScope(shield=True):
                        await trio.to_thread.run_sync(spawn.cgroup.kill)
                measured = spawn.cgroup.finish()  # also kills anything left in the group
            except OSError:
                pass  # the group was removed under us: rlimit figures only
    wall = time.monotonic() - started_at
    return _outcome(call, wall, measured)


async def _wait_pid(pid: int) -> None:
    """Wait for ``pid`` to exit and reap it, without blocking the event loop."""
    pidfd = os.pidfd_open(pid)
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):  # noqa: ASYNC222 (WNOHANG)
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)


async def _force_reap(pid: int) -> None:
    """End a launcher whose exit was not seen (a cancelled or unused call) and reap it."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    with trio.move_on_after(KILL_GRACE) as grace:
        await _wait_pid(pid)
    if grace.cancelled_caught:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await _wait_pid(pid)


async def _finish_status(call: _Pump) -> None:
    """Read the status pipe to its end: the tree is dead, so it is there or close."""
    with trio.move_on_after(0.5):
        while call.status_fd in call.open:
            call.read_status()
            if call.status_fd in call.open:
                await trio.lowlevel.wait_readable(call.status_fd)
    trio.lowlevel.notify_closing(call.status_fd)
    call.parse_status()


def _outcome(call: _Pump, wall: float, measured: Measured | None = None) -> Outcome:
    st = call.status
    exit_code = st.exit if st is not None else None
    sig = st.signal if st is not None else None
    if call.spawn.exit_is_signal and exit_code is not None and 128 < exit_code < 128 + 65:
        # bubblewrap reports a child killed by signal N as exit 128 + N.
        sig = exit_code - 128
        exit_code = None
    rss = st.maxrss if st is not None else 0
    usage = Usage(
        wall=wall,
        cpu=max(
            st.cpu if st is not None else 0.0,
            measured.cpu if measured is not None and measured.cpu is not None else 0.0,
        ),
        memory=measured.peak if measured is not None and measured.peak is not None else rss,
        bytes_in=call.bytes_in,
        bytes_out=call.bytes_out,
    )
    reason, message = call.reason, call.message
    stderr = bytes(call.stderr_tail)
    if reason is None and measured is not None and measured.oom_killed:
        # The kernel ended a process of the call at its cgroup's memory limit
        # (all its processes and its tmpfs files together), whatever the exit.
        reason, message = "memory", "the call ran out of its memory limit"
        if call.spawn.memory is not None:
            message += (
                f" of {call.spawn.memory} bytes (all its processes and its files in /tmp, "
                "/dev/shm, /run and /var together)"
            )
    if reason is None:
        if st is None:
            reason, message = "spawn", "the launcher ended without a status"
        elif st.exec_errno:
            reason = "spawn"
            message = f"could not run the interpreter: {os.strerror(st.exec_errno)}"
        elif sig:
            reason = "signal"
            message = f"the script was killed by {signal_name(sig)}"
            cpu_limit = call.spawn.cpu
            over_cpu = cpu_limit is not None and usage.cpu >= cpu_limit
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and over_cpu):
                reason, message = (
                    "cpu",
                    f"the script ran over its CPU time limit of {cpu_limit:g} s",
                )
            elif sig == signal.SIGXFSZ:
                reason = "file_size"
                message = "the script wrote a file larger than its file-size limit"
            elif sig in _MEMORY_SIGNALS and _memory_failure(call, stderr, rss):
                reason, message = "memory", "the script ran out of its memory limit"
        elif exit_code:
            reason = "exit"
            message = f"the script exited with status {exit_code}"
            if b"File too large" in stderr[-4096:]:
                # Runtimes that ignore SIGXFSZ (Python) fail the write with EFBIG.
                reason = "file_size"
                message = "the script wrote a file larger than its file-size limit"
            elif _memory_failure(call, stderr, rss):
                reason, message = "memory", "the script ran out of its memory limit"
        else:
            reason = "ok"
    return Outcome(
        reason=reason,
        exit_code=exit_code,
        signal=sig,
        usage=usage,
        head=call.control.head.build(),
        head_sent=call.head_sent,
        message=message,
        stderr=stderr,
        stream=call.stream,
        spawn=call.spawned_at - call.started_at if call.spawned_at is not None else None,
        pidns=st.pidns if st is not None else None,
    )


def _memory_failure(call: _Pump, stderr: bytes, rss: int) -> bool:
    """Whether a failed call failed for want of memory under its rlimit.

    ``rss``: the largest process's peak resident memory (not the cgroup's
    peak, which also counts reclaimable page cache).
    """
    limit = call.spawn.memory
    if limit is None:
        return False
    return bool(_MEMORY_ERRORS.search(stderr[-4096:])) or rss >= limit * 0.9
