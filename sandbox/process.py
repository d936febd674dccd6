"""Runs one call's process: pumps its pipes, reads its control channel, ends it.

One nursery per call: stdin pump, stdout pump, stderr pump, fd 3 reader,
status reader and exit watcher, all under the call's wall timeout.

Cancellation (the client went away, the server stops) and every other way a
call ends go through the same path: the launcher is asked to kill the whole
process tree (SIGTERM to it; it SIGKILLs everything in the call's pid
namespace and reports usage), escalated to SIGKILL of its process group if it
does not answer, and reaped, in a shielded scope.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psutil
import trio

from .control import CGIHead, Control, Event, Head

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
        memory: peak resident memory of the largest process, in bytes.
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

    def header(self) -> str:
        """The ``X-Stack-Usage`` header value."""
        return (
            f"wall={self.wall:.6f}; cpu={self.cpu:.6f}; memory={self.memory}; "
            f"in={self.bytes_in}; out={self.bytes_out}"
        )


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
        stream: with reason ``output``: which stream went over, ``stdout`` or ``stderr``.
        spawn: seconds from the spawn to the launcher reporting the tree running.
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

    def __init__(self, call: _Call) -> None:
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


class _Call:
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
        self.status: dict[str, Any] | None = None
        self.status_buf = b""
        self.pid = -1
        self.exited = trio.Event()
        self.ctl_fd = -1
        self.ctl_eof = False
        self.stdout_wait: trio.CancelScope | None = None
        self.reaper: int | None = None
        self.started_at = 0.0
        self.spawned_at: float | None = None
        self.preamble = b""

    # -- control channel ---------------------------------------------------

    def drain_control(self) -> None:
        """Read every control message already written (non-blocking)."""
        while not self.ctl_eof:
            try:
                data = os.read(self.ctl_fd, CHUNK)
            except BlockingIOError:
                return
            if not data:
                self.ctl_eof = True
                self._events(self.control.close())
                return
            self._events(self.control.feed(data))

    def _events(self, events: list[Event]) -> None:
        for event in events:
            if event.kind == "error" and self.reason is None:
                self.reason = "error"
                self.message = event.text
            if event.kind == "end" and self.stdout_wait is not None:
                self.stdout_wait.cancel()  # let the stdout pump end the body
            self.io.on_event(event)

    async def read_control(self) -> None:
        while not self.ctl_eof:
            await trio.lowlevel.wait_readable(self.ctl_fd)
            self.drain_control()

    # -- pumps -------------------------------------------------------------

    async def pump_stdin(self, stream: trio.lowlevel.FdStream, scope: trio.CancelScope) -> None:
        with scope:
            await self._pump_stdin(stream)

    async def _pump_stdin(self, stream: trio.lowlevel.FdStream) -> None:
        try:
            if self.preamble:
                await stream.send_all(self.preamble)
            if self.spawn.stdin_data:
                await stream.send_all(self.spawn.stdin_data)
                self.bytes_in += len(self.spawn.stdin_data)
            while True:
                data = await self.io.receive_stdin()
                if not data:
                    break
                await stream.send_all(data)
                self.bytes_in += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the script closed stdin or exited: the rest is not wanted
        finally:
            await stream.aclose()

    async def pump_stdout(self, fd: int, cancel: trio.CancelScope) -> None:
        """Forward stdout to the body until EOF; honour an ``end`` on fd 3.

        An ``end`` message completes the body at once, after the stdout bytes
        already written before it; later output is read and dropped.
        """
        while True:
            if self.control.ended and not self.body_ended:
                # Everything written before ``end`` is in the pipe already.
                while (data := self._read_now(fd)) is not None and data:
                    if not await self._forward(data, cancel):
                        return
                await self._end_explicitly()
            with trio.CancelScope() as self.stdout_wait:
                await trio.lowlevel.wait_readable(fd)
            self.stdout_wait = None
            data = self._read_now(fd)
            if data is None:
                continue
            if not data:
                break
            if not self.body_ended and not await self._forward(data, cancel):
                return
        if self.cgi is not None and not self.cgi.done:
            try:
                self.cgi.finish()
            except ValueError as exc:
                self._cgi_failed(str(exc))

    @staticmethod
    def _read_now(fd: int) -> bytes | None:
        """Bytes ready on ``fd``; b"" at EOF; None when nothing is ready."""
        try:
            return os.read(fd, CHUNK)
        except BlockingIOError:
            return None

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
            if self.reason == "error":
                return
            self.head_sent = True
            await self.io.send_head(self.control.freeze())
        if data:
            await self.io.send_body(data)

    def _cgi_failed(self, why: str) -> None:
        if self.reason is None:
            self.reason = "error"
            self.message = f"bad CGI response: {why}"

    async def pump_stderr(self, stream: trio.lowlevel.FdStream, cancel: trio.CancelScope) -> None:
        """Keep stderr's tail, log its first lines, hand it raw to the front door.

        At most STDERR_LOG bytes of a call's stderr are logged (a flood must
        not flood the server's log); the rest is counted.
        """
        pending = b""
        logged = 0
        limit = self.spawn.stderr_limit
        while True:
            data = await stream.receive_some(CHUNK)
            if not data:
                break
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
            if logged >= STDERR_LOG:
                continue
            pending += data
            *lines, pending = pending.split(b"\n")
            if len(pending) > STDERR_KEEP:
                lines.append(pending)
                pending = b""
            for line in lines:
                logged += len(line) + 1
                self.io.on_event(Event("stderr", line.decode("utf-8", "replace")))
                if logged >= STDERR_LOG:
                    break
            if cancel.cancel_called:
                break
        if pending and logged < STDERR_LOG:
            self.io.on_event(Event("stderr", pending.decode("utf-8", "replace")))
        if self.bytes_err > logged and logged >= STDERR_LOG:
            self.io.on_event(
                Event("stderr", f"[stderr: {self.bytes_err - logged} more bytes not logged]")
            )

    async def read_status(self, stream: trio.lowlevel.FdStream) -> None:
        await self.read_reaper(stream)
        while chunk := await stream.receive_some(CHUNK):
            self.status_buf += chunk
        self.parse_status()

    def parse_status(self) -> None:
        status = None
        for line in self.status_buf.splitlines():
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            if isinstance(parsed, dict) and "exit" in parsed:
                status = parsed
        self.status = status

    async def read_reaper(self, stream: trio.lowlevel.FdStream) -> None:
        """The first status line names the reaper; then the rest is read."""
        while b"\n" not in self.status_buf:
            chunk = await stream.receive_some(CHUNK)
            if not chunk:
                return
            self.status_buf += chunk
        if self.spawned_at is None:
            self.spawned_at = time.monotonic()
        first = self.status_buf.split(b"\n", 1)[0]
        try:
            self.reaper = int(json.loads(first).get("reaper", 0)) or None
        except (ValueError, AttributeError, TypeError):
            self.reaper = None
        self.io.on_started(Running(self))

    async def wait_exit(self) -> None:
        await _wait_pid(self.pid)
        self.exited.set()

    async def kill(self) -> None:
        """Ask the launcher to end the call; force it if it does not."""
        if self.exited.is_set():
            return
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        with trio.move_on_after(KILL_GRACE):
            await self.exited.wait()
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await self.exited.wait()


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
        call = _Call(self.spawn, CollectIO())
        call.pid = self.pid
        try:
            if not self.reaped:
                with trio.CancelScope(shield=True):
                    await _force_reap(call)
                self.reaped = True
        finally:
            for fd in self.fds():
                os.close(fd)


def start(spawn: Spawn) -> Started:
    """Launch ``spawn`` with its five pipes; nothing is read or written yet.

    Raises:
        OSError: the launcher could not be started.
    """
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
        started = time.monotonic()
        # posix_spawn is a vfork + exec: it returns within microseconds.
        pid = os.posix_spawn(
            spawn.argv[0],
            list(spawn.argv),
            dict(spawn.env),
            file_actions=[
                (os.POSIX_SPAWN_DUP2, stdin_r, 0),
                (os.POSIX_SPAWN_DUP2, stdout_w, 1),
                (os.POSIX_SPAWN_DUP2, stderr_w, 2),
                (os.POSIX_SPAWN_DUP2, ctl_w, 3),
                (os.POSIX_SPAWN_DUP2, status_w, 4),
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
    call = _Call(spawn, io)
    call.pid = started.pid
    call.ctl_fd = ctl_r = started.control
    stdout_r = started.stdout
    if preamble:
        # A warm process: already running; the call starts now.
        started_at = call.started_at = call.spawned_at = time.monotonic()
    else:
        started_at = call.started_at = started.started_at
    call.preamble = preamble
    stdin = trio.lowlevel.FdStream(started.stdin)
    stderr = trio.lowlevel.FdStream(started.stderr)
    status = trio.lowlevel.FdStream(started.status)
    cancelled = False
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.wait_exit)
            with trio.CancelScope() as scope:
                if spawn.timeout is not None:
                    scope.deadline = trio.current_time() + spawn.timeout
                stdin_scope = trio.CancelScope()
                async with trio.open_nursery() as pumps:
                    pumps.start_soon(call.pump_stdin, stdin, stdin_scope)
                    pumps.start_soon(call.read_control)
                    pumps.start_soon(call.pump_stderr, stderr, scope)
                    pumps.start_soon(call.read_status, status)

                    async def outputs() -> None:
                        await call.pump_stdout(stdout_r, scope)
                        # The body is done; once the tree is dead nobody
                        # reads stdin, and the other pipes reach their end.
                        await call.exited.wait()
                        stdin_scope.cancel()

                    pumps.start_soon(outputs)
            if scope.cancelled_caught and call.reason is None:
                call.reason = "timeout"
                call.message = f"the call ran over its wall-clock limit of {spawn.timeout:g} s"
            with trio.CancelScope(shield=True):
                await call.kill()
    except trio.Cancelled:
        cancelled = True
        raise
    finally:
        with trio.CancelScope(shield=True):
            if not call.exited.is_set():
                await _force_reap(call)
            # A last look: the status line and control messages left.
            await _finish_reads(call, status)
            for stream in (stdin, stderr, status):
                await stream.aclose()
            for fd in (ctl_r, stdout_r):
                trio.lowlevel.notify_closing(fd)
                os.close(fd)
        if cancelled and call.reason is None:
            call.reason = "killed"
    wall = time.monotonic() - started_at
    return _outcome(call, wall)


async def _wait_pid(pid: int) -> None:
    """Wait for ``pid`` to exit and reap it, without blocking the event loop."""
    pidfd = os.pidfd_open(pid)
    try:
        while os.waitpid(pid, os.WNOHANG) == (0, 0):  # noqa: ASYNC222 (WNOHANG)
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        trio.lowlevel.notify_closing(pidfd)
        os.close(pidfd)


async def _force_reap(call: _Call) -> None:
    """The call was cancelled before its exit was seen: end it and reap it."""
    try:
        os.kill(call.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    with trio.move_on_after(KILL_GRACE) as grace:
        await _wait_pid(call.pid)
    if grace.cancelled_caught:
        try:
            os.killpg(call.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        await _wait_pid(call.pid)
    call.exited.set()


async def _finish_reads(call: _Call, status: trio.lowlevel.FdStream) -> None:
    call.drain_control()
    if call.status is None:
        # The tree is dead, so the status pipe is at its end or close to it.
        with trio.move_on_after(0.5):
            try:
                while chunk := await status.receive_some(CHUNK):
                    call.status_buf += chunk
            except (trio.ClosedResourceError, trio.BusyResourceError):
                pass
        call.parse_status()


def _outcome(call: _Call, wall: float) -> Outcome:
    st = call.status or {}
    exit_code: int | None = st.get("exit")
    sig: int | None = st.get("signal") or None
    if exit_code is not None and exit_code < 0:
        exit_code = None
    if call.spawn.exit_is_signal and exit_code is not None and 128 < exit_code < 128 + 65:
        # bubblewrap reports a child killed by signal N as exit 128 + N.
        sig = exit_code - 128
        exit_code = None
    usage = Usage(
        wall=wall,
        cpu=float(st.get("utime", 0.0)) + float(st.get("stime", 0.0)),
        memory=int(st.get("maxrss_kb", 0)) * 1024,
        bytes_in=call.bytes_in,
        bytes_out=call.bytes_out,
    )
    reason, message = call.reason, call.message
    stderr = bytes(call.stderr_tail)
    if reason is None:
        if st.get("exec_errno"):
            reason = "spawn"
            message = f"could not run the interpreter: {os.strerror(int(st['exec_errno']))}"
        elif not st:
            reason, message = "spawn", "the launcher ended without a status"
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
            elif sig in _MEMORY_SIGNALS and _memory_failure(call, stderr, usage):
                reason, message = "memory", "the script ran out of its memory limit"
        elif exit_code:
            reason = "exit"
            message = f"the script exited with status {exit_code}"
            if b"File too large" in stderr[-4096:]:
                # Runtimes that ignore SIGXFSZ (Python) fail the write with EFBIG.
                reason = "file_size"
                message = "the script wrote a file larger than its file-size limit"
            elif _memory_failure(call, stderr, usage):
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
    )


def _memory_failure(call: _Call, stderr: bytes, usage: Usage) -> bool:
    limit = call.spawn.memory
    if limit is None:
        return False
    return bool(_MEMORY_ERRORS.search(stderr[-4096:])) or usage.memory >= limit * 0.9
