"""The in-process broker: ``memory://`` (and ``memory://<bus>`` for a named bus).

Every broker opened on the same URL within one Trio run shares one bus, so a
gateway and workers in one process find each other; buses of different runs
(each test) never meet. Plain subscribers get every matching message; each
queue group gets each message once, round-robin among its members (as NATS,
a group is its name: members may subscribe with different patterns).
Request/reply goes through an inbox subject, and a request nobody listens to
fails at once with ``NoResponders``.

It never disconnects; ``connected()`` is True until it is closed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio

from . import subjects
from ._base import Message, Subscription, _Connectivity, _Feed
from ._config import BrokerConfig
from ._inbox import Inbox


class _Bus:
    """Subscriptions of one bus, and delivery to them."""

    def __init__(self) -> None:
        self.feeds: list[_Feed] = []
        self._turn: dict[str, int] = {}

    def deliver(self, message: Message) -> int:
        """Hand ``message`` to every plain subscriber and one member per group."""
        receivers = 0
        groups: dict[str, list[_Feed]] = {}
        for feed in self.feeds:
            if subjects.match(feed.pattern, message.subject):
                if feed.queue is None:
                    feed.put(message)
                    receivers += 1
                else:
                    groups.setdefault(feed.queue, []).append(feed)
        for group, members in groups.items():
            turn = self._turn.get(group, 0)
            self._turn[group] = turn + 1
            members[turn % len(members)].put(message)
            receivers += 1
        return receivers


_BUSES: trio.lowlevel.RunVar[dict[str, _Bus]] = trio.lowlevel.RunVar("stack_memory_buses")


def _bus(name: str) -> _Bus:
    try:
        buses = _BUSES.get()
    except LookupError:
        buses = {}
        _BUSES.set(buses)
    return buses.setdefault(name, _Bus())


class MemoryBroker:
    """An in-process broker (see the module docstring)."""

    def __init__(self, config: BrokerConfig) -> None:
        self.name = config.name
        self.config = config
        parts = urlsplit(config.url)
        self._bus = _bus(parts.netloc + parts.path)
        self._feeds: set[_Feed] = set()
        self._state = _Connectivity(config.name)
        self._state.set(True)
        self._inbox = Inbox(config.name, self._attach, self._publish_counted)

    def __repr__(self) -> str:
        return f"<MemoryBroker {self.name!r} {self.config.url}>"

    async def publish(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """See ``Broker.publish``."""
        await self._publish_counted(subject, data, reply=reply, headers=headers)

    async def _publish_counted(
        self,
        subject: str,
        data: bytes,
        *,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        subjects.validate_subject(subject)
        if reply is not None:
            subjects.validate_subject(reply)
        message = Message(subject, data, reply, headers or {})
        await trio.lowlevel.checkpoint()
        self._state.require(f"publish to {subject!r}")
        return self._bus.deliver(message)

    @asynccontextmanager
    async def subscribe(
        self, pattern: str, *, queue: str | None = None
    ) -> AsyncIterator[Subscription]:
        """See ``Broker.subscribe``."""
        subjects.validate_pattern(pattern)
        subjects.validate_queue(queue)
        self._state.require(f"subscribe to {pattern!r}")
        feed = _Feed(pattern, queue)
        await self._attach(feed)

        async def drain() -> None:
            self._drop(feed)  # no new deliveries; what is buffered stays readable

        feed.stopper = drain
        try:
            yield feed.subscription()
        finally:
            self._drop(feed)

    async def _attach(self, feed: _Feed) -> None:
        await trio.lowlevel.checkpoint()
        self._feeds.add(feed)
        self._bus.feeds.append(feed)

    def _drop(self, feed: _Feed) -> None:
        feed.close()
        self._feeds.discard(feed)
        if feed in self._bus.feeds:
            self._bus.feeds.remove(feed)

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 (the reply deadline, as in NATS)
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """See ``Broker.request``."""
        subjects.validate_subject(subject)
        self._state.require(f"send a request to {subject!r}")
        return await self._inbox.request(subject, data, timeout=timeout, headers=headers)

    async def wait_connected(self) -> None:
        """See ``Broker.wait_connected``."""
        await self._state.wait()

    def connected(self) -> bool:
        """See ``Broker.connected``."""
        return self._state.value

    def _close(self) -> None:
        self._state.close()
        for feed in list(self._feeds):
            self._drop(feed)


@asynccontextmanager
async def open_memory_broker(config: BrokerConfig) -> AsyncIterator[MemoryBroker]:
    """Open a memory broker on the bus its URL names. Closing ends its subscriptions."""
    broker = MemoryBroker(config)
    try:
        yield broker
    finally:
        broker._close()


__all__ = ["MemoryBroker", "open_memory_broker"]
