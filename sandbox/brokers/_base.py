"""What every broker shares: ``Message``, ``Subscription`` and the ``Broker`` protocol.

The broker errors (``BrokerError`` and its subclasses) are in
``sandbox/errors.py`` with the rest of the error tree, re-exported here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol, runtime_checkable

import trio

from ..errors import (
    BrokerError,
    BrokerTimeout,
    BrokerUnavailable,
    BrokerUnsupported,
    InvalidMessage,
    InvalidSubject,
    NoResponders,
)

# The errors live in sandbox/errors.py with the rest of the tree; they are
# re-exported here for the broker modules.
__all__ = [
    "PENDING_LIMIT",
    "Broker",
    "BrokerError",
    "BrokerTimeout",
    "BrokerUnavailable",
    "BrokerUnsupported",
    "InvalidMessage",
    "InvalidSubject",
    "Message",
    "NoResponders",
    "Subscription",
    "check_timeout",
]

log = logging.getLogger("sandbox.brokers")

#: How many received messages a subscription holds before it drops new ones
#: (a slow consumer, in NATS's words). Each dropped message is counted.
PENDING_LIMIT = 65536


def _check_headers(headers: Mapping[str, str]) -> None:
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise InvalidMessage(f"header {name!r}: names and values must be strings")
        if not name or any(c in name for c in ": \t\r\n\x00"):
            raise InvalidMessage(
                f"header name {name!r} must be non-empty, without ':', whitespace or NUL"
            )
        if any(c in value for c in "\r\n\x00"):
            raise InvalidMessage(f"header {name!r}: the value cannot hold CR, LF or NUL")


@dataclass(frozen=True)
class Message:
    """One message, as received (or as published).

    Attributes:
        subject: the concrete subject it was published to (``orders.eu.created``).
        data: the payload.
        reply: where a reply goes (a request's inbox), or None.
        headers: string headers (NATS headers, MQTT 5 user properties, or the
            Redis envelope); read-only.
    """

    subject: str
    data: bytes
    reply: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.data, bytearray | memoryview):
            object.__setattr__(self, "data", bytes(self.data))
        if not isinstance(self.data, bytes):
            raise InvalidMessage(f"message data must be bytes, got {type(self.data).__name__}")
        headers = dict(self.headers)
        _check_headers(headers)
        object.__setattr__(self, "headers", MappingProxyType(headers))


class _Feed:
    """The sending half of a subscription: where an implementation puts messages.

    ``put`` never blocks and never raises: a full buffer drops the message and
    counts it (logged once per subscription), a closed one ignores it.
    """

    def __init__(self, pattern: str, queue: str | None, limit: int | None = None) -> None:
        self.pattern = pattern
        self.queue = queue
        self.dropped = 0
        self.stopper: Callable[[], Awaitable[None]] | None = None
        self.drained = False
        size = PENDING_LIMIT if limit is None else limit
        self._send, self._receive = trio.open_memory_channel[Message](size)

    def put(self, message: Message) -> None:
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            if not self.dropped:
                log.warning(
                    "subscription %r is not keeping up: dropping messages (slow consumer)",
                    self.pattern,
                )
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def close(self) -> None:
        self._send.close()

    def subscription(self) -> Subscription:
        return Subscription(self)


class Subscription:
    """Messages matching a pattern, as an async iterator.

    ``async for message in subscription`` ends when the broker is closed; while
    the broker reconnects it just waits. Messages that arrive faster than they
    are read are buffered up to ``PENDING_LIMIT``, then dropped and counted in
    ``dropped``.

    Attributes:
        pattern: the subscribed pattern.
        queue: the queue group, or None for a plain (topic) subscription.
    """

    def __init__(self, feed: _Feed) -> None:
        self._feed = feed
        self._receive = feed._receive
        self.pattern = feed.pattern
        self.queue = feed.queue

    @property
    def dropped(self) -> int:
        """How many messages were dropped because this subscription fell behind."""
        return self._feed.dropped

    async def drain(self) -> None:
        """Leave the subscription (and its queue group) without losing messages.

        The broker stops routing messages here first (NATS: an unsubscribe
        confirmed by the server, so messages already on the way arrive);
        iteration then yields what is buffered and ends. A worker that stops
        this way loses no message of its queue group.
        """
        feed = self._feed
        if feed.drained:
            return
        feed.drained = True
        if feed.stopper is not None:
            with trio.CancelScope(shield=True):
                await feed.stopper()
        feed.close()

    async def receive(self) -> Message:
        """The next message.

        Raises:
            BrokerUnavailable: the broker was closed.
        """
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise BrokerUnavailable(
                f"the subscription to {self.pattern!r} ended: its broker was closed"
            ) from None

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise StopAsyncIteration from None

    def __repr__(self) -> str:
        queue = f" queue={self.queue!r}" if self.queue else ""
        return f"<Subscription {self.pattern!r}{queue}>"


@runtime_checkable
class Broker(Protocol):
    """A message broker, as the gateway, the triggers and the workers see it.

    Subjects are NATS style (``a.b.c``; patterns add ``*`` for one token and
    ``>`` for the rest; see ``sandbox.brokers.subjects``). Delivery is at most
    once: a message published while a subscriber is disconnected is not
    delivered to it.
    """

    name: str

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish ``data`` to ``subject``.

        Raises:
            InvalidSubject: the subject is malformed or holds a wildcard.
            BrokerUnavailable: not connected right now.
        """
        ...

    def subscribe(
        self, pattern: str, *, queue: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]:
        """Subscribe to ``pattern``; with ``queue``, join that queue group.

        Each message reaches every plain subscriber, and one member of each
        queue group. The subscription is active (known to the server) when the
        ``async with`` block starts, and survives reconnections.

        Raises:
            InvalidSubject: the pattern is malformed.
            BrokerUnsupported: queue groups on a broker without them.
        """
        ...

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 (the reply deadline, as in NATS)
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Publish a request and wait up to ``timeout`` seconds for the first reply.

        Raises:
            BrokerTimeout: no reply in time.
            NoResponders: (a ``BrokerTimeout``) nobody is subscribed, where the broker can tell.
            BrokerUnavailable: not connected right now.
        """
        ...

    async def wait_connected(self) -> None:
        """Return once connected (at once if connected now).

        Raises:
            BrokerUnavailable: the broker was closed.
        """
        ...

    def connected(self) -> bool:
        """Whether the broker is connected now (False while the server is down)."""
        ...


class _Connectivity:
    """Connected or not, as seen from Trio: a flag and a way to wait for it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.value = False
        self.closed = False
        self.last_error: str | None = None
        self._changed = trio.Event()

    def set(self, value: bool, error: str | None = None) -> None:
        if error is not None:
            self.last_error = error
        if value != self.value:
            self.value = value
            self._changed.set()
            self._changed = trio.Event()

    def close(self) -> None:
        self.closed = True
        self.set(False)
        self._changed.set()

    async def wait(self) -> None:
        while not self.value:
            if self.closed:
                raise BrokerUnavailable(f"broker {self.name!r} is closed", broker=self.name)
            await self._changed.wait()
        await trio.lowlevel.checkpoint()

    def require(self, what: str) -> None:
        """Raise ``BrokerUnavailable`` when not connected."""
        if self.closed:
            raise BrokerUnavailable(
                f"broker {self.name!r} is closed: cannot {what}", broker=self.name
            )
        if not self.value:
            reason = f" ({self.last_error})" if self.last_error else ""
            raise BrokerUnavailable(
                f"broker {self.name!r} is not connected{reason}: cannot {what}; it reconnects "
                "by itself, retry later",
                broker=self.name,
            )


def check_timeout(timeout: float) -> float:
    if not isinstance(timeout, int | float) or math.isnan(timeout) or timeout <= 0:
        raise ValueError(f"a request timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)
