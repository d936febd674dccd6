"""What one HTTP client may hold: connections, time for its request, patience for its answer.

A client that opens many connections, sends its request a byte at a time or
never reads its response must not take the server's file descriptors,
memory or call slots from everyone else. :class:`ClientLimits` holds the
bounds; :class:`GuardedListener` enforces the connection caps at accept and
gives Hypercorn :class:`GuardedStream` s, whose writes give up on a client
that has stopped reading (less than 64 KiB taken in ``send_timeout``
seconds). The request body's deadline is kept by
:func:`sandbox.http.body.timed_receive`; the head's by Hypercorn's
keep-alive timer, which runs from the connection's start (or
its previous response) until a whole request head is parsed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import socket
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from ..core.limits import parse_duration, parse_size
from ..errors import ConfigError

log = logging.getLogger("stack")

# At most this share of the server's file descriptors goes to connections:
# the rest is for calls (about eight each), files and logs.
CONNECTION_SHARE = 0.5
# A write to a client is given send_timeout per this many bytes.
PIECE = 64 * 1024
REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
    b"retry-after: 1\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
)
REFUSED_BODY = b'{"error":"too_many_connections","message":"%s; retry later"}\n'


@dataclass(frozen=True)
class ClientLimits:
    """Bounds on what HTTP clients hold (the ``http:`` section of the config).

    Attributes:
        max_connections: open connections in all (further ones get a 503 and
            are closed); lowered at start to half the file-descriptor limit.
        max_connections_per_client: open connections from one address.
        head_timeout: seconds a connection has to send a whole request head,
            from its start or from its previous response.
        body_timeout: seconds the server waits for a request body, plus
            ``received / body_min_rate``: a body that arrives more slowly is
            answered 408 and its connection closed.
        body_min_rate: bytes per second a long body must keep up, on average
            (0: a body has ``body_timeout`` whatever its size).
        send_timeout: seconds a client may take to read 64 KiB of its
            response before its connection is closed (the response is then
            incomplete): a client that stopped reading.
        output_buffer: stdout bytes of one call held for a client that
            reads slowly; past it the call's output waits for the client.
    """

    max_connections: int = 1024
    max_connections_per_client: int = 64
    head_timeout: float = 1.0
    body_timeout: float = 10.0
    body_min_rate: int = 4096
    send_timeout: float = 30.0
    output_buffer: int = 256 * 1024

    def __post_init__(self) -> None:
        for name in ("max_connections", "max_connections_per_client", "output_buffer"):
            if getattr(self, name) < 1:
                raise ConfigError(f"http: {name} must be at least 1")
        for name in ("head_timeout", "body_timeout", "send_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"http: {name} must be more than 0 seconds")
        if self.body_min_rate < 0:
            raise ConfigError("http: body_min_rate must be 0 or more bytes per second")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: ClientLimits | None = None,
                     source: str = "http") -> ClientLimits:  # fmt: skip
        """The ``http:`` section of a config file over ``base``: counts, durations, sizes.

        Raises:
            ConfigError: an unknown key or a bad value, naming it.
        """
        base = base or cls()
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        changes: dict[str, Any] = {}
        for key, value in data.items():
            if key in ("max_connections", "max_connections_per_client"):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConfigError(f"{source}: '{key}' must be a whole number, got {value!r}")
                changes[key] = value
                continue
            try:
                if key in ("head_timeout", "body_timeout", "send_timeout"):
                    changes[key] = parse_duration(value, default_unit="s")
                else:  # body_min_rate (bytes a second), output_buffer
                    changes[key] = parse_size(value)
            except ConfigError as exc:
                raise ConfigError(f"{source}: '{key}': {exc.message}") from exc
        try:
            return dataclasses.replace(base, **changes)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc.message.removeprefix('http: ')}") from exc

    def body_deadline(self, started: float, received: int) -> float:
        """When a body that began at ``started`` and has ``received`` bytes so far must end.

        (The server counts only the time it waits for the body: see
        :func:`sandbox.http.body.timed_receive`.)
        """
        allowance = received / self.body_min_rate if self.body_min_rate else 0.0
        return started + self.body_timeout + allowance


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns the soft limit now.

    Where the hard limit cannot be reached (some systems cap the soft limit
    lower), the limit stays as it was.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return soft


class GuardedStream(trio.abc.HalfCloseableStream):
    """One accepted connection: counted until closed; its writes give up on a stuck client.

    ``socket`` is the underlying trio socket, as on a :class:`trio.SocketStream`
    (Hypercorn reads the addresses from it).
    """

    def __init__(self, inner: trio.SocketStream, listener: GuardedListener, peer: str) -> None:
        self._inner = inner
        self._listener = listener
        self._peer = peer
        self._counted = True
        self.socket = inner.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        # Hypercorn shields its writes from cancellation, so a client that
        # never reads would hold the write (and the response's task) forever:
        # each piece must be taken within send_timeout, or the connection ends.
        view = memoryview(data)
        timeout = self._listener.limits.send_timeout
        for start in range(0, max(len(view), 1), PIECE):
            with trio.move_on_after(timeout) as waited:
                await self._inner.send_all(view[start : start + PIECE])
            if waited.cancelled_caught:
                self._listener.stalled += 1
                log.info("closing a connection from %s: it took no response bytes for "
                         "%g s", self._peer, timeout)  # fmt: skip
                await trio.aclose_forcefully(self)
                raise trio.BrokenResourceError(
                    f"the client took no bytes for {timeout:g} s: connection closed"
                )

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self._inner.send_eof()

    async def aclose(self) -> None:
        if self._counted:
            self._counted = False
            self._listener.release(self._peer)
        await self._inner.aclose()

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        self._inner.setsockopt(level, option, value)

    def getsockopt(self, level: int, option: int, buffersize: int = 0) -> Any:
        return self._inner.getsockopt(level, option, buffersize)


class GuardedListener(trio.abc.Listener[GuardedStream]):
    """Accepts connections up to the caps; past them answers 503 and closes at once.

    A refused connection costs the accept loop one non-blocking write and a
    close: it never waits for the client.
    """

    def __init__(self, inner: trio.SocketListener, limits: ClientLimits,
                 max_connections: int | None = None) -> None:  # fmt: skip
        self._inner = inner
        self.limits = limits
        self.max_connections = max_connections or limits.max_connections
        self.open = 0
        self.per_client: Counter[str] = Counter()
        self.refused = 0
        self.stalled = 0

    async def accept(self) -> GuardedStream:
        while True:
            stream = await self._inner.accept()
            try:
                peer = str(stream.socket.getpeername()[0])
            except OSError:
                await trio.aclose_forcefully(stream)  # gone already
                continue
            why = self._over(peer)
            if why is None:
                self.open += 1
                self.per_client[peer] += 1
                return GuardedStream(stream, self, peer)
            self.refused += 1
            self._refuse(stream, why)

    def _over(self, peer: str) -> str | None:
        if self.open >= self.max_connections:
            return f"the server has {self.open} connections open, its maximum"
        if self.per_client[peer] >= self.limits.max_connections_per_client:
            return (
                f"{self.per_client[peer]} connections from {peer} are open, the maximum per client"
            )
        return None

    def _refuse(self, stream: trio.SocketStream, why: str) -> None:
        body = REFUSED_BODY % why.encode()
        sock = stream.socket
        try:
            # A fresh socket's send buffer is empty: this write never blocks.
            os.write(sock.fileno(), REFUSED % (len(body), body))
            sock.shutdown(socket.SHUT_WR)
            # Read what the request sent already: closing with unread bytes
            # would reset the connection, and the client might lose the 503.
            for _ in range(4):
                if not os.read(sock.fileno(), 16384):
                    break
        except OSError:
            pass  # nothing more to read (EAGAIN), or the client left
        sock.close()

    def release(self, peer: str) -> None:
        """A connection from ``peer`` closed."""
        self.open -= 1
        self.per_client[peer] -= 1
        if self.per_client[peer] <= 0:
            del self.per_client[peer]

    async def aclose(self) -> None:
        await self._inner.aclose()


__all__ = ["ClientLimits", "GuardedListener", "GuardedStream", "raise_fd_limit"]
