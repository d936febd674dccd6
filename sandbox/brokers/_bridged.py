"""The Trio half shared by the brokers whose client runs on an asyncio loop (NATS, Redis, MQTT).

A subclass implements the ``_aio_*`` coroutines, which run on the broker's
asyncio thread (``_bridge.py``), and calls ``_deliver`` and ``_set_connected``
from there; this class gives the ``Broker`` methods around them: validation,
the connected flag, subscriptions that unsubscribe on exit (shielded), and
opening and closing in order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import trio

from . import subjects
from ._base import (
    BrokerUnavailable,
    Message,
    Subscription,
    _Connectivity,
    _Feed,
)
from ._bridge import CLOSE_TIMEOUT, AsyncioBridge, open_bridge
from ._config import BrokerConfig
from ._inbox import Inbox

log = logging.getLogger("sandbox.brokers")

#: How long leaving a subscription may wait for the server's acknowledgement.
UNSUBSCRIBE_TIMEOUT = 5.0

B = TypeVar("B", bound="BridgedBroker")


class BridgedBroker:
    """Base of the brokers driven through an asyncio thread."""

    kind = "?"

    def __init__(self, config: BrokerConfig, bridge: AsyncioBridge) -> None:
        self.name = config.name
        self.config = config
        self._bridge = bridge
        self._state = _Connectivity(config.name)
        self._feeds: set[_Feed] = set()
        self._inbox: Inbox | None = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self.config.safe_url}>"

    # Called on the loop's thread ----------------------------------------------------

    def _deliver(self, feed: _Feed, message: Message) -> None:
        self._bridge.to_trio(feed.put, message)

    def _set_connected(self, value: bool, error: str | None = None) -> None:
        self._bridge.to_trio(self._state.set, value, error)

    # To implement (they run on the loop) ----------------------------------------

    async def _aio_open(self) -> None:
        """Start connecting; return once connected or once a supervisor is started."""
        raise NotImplementedError

    async def _aio_close(self) -> None:
        raise NotImplementedError

    async def _aio_publish(self, message: Message) -> int | None:
        """Publish; return how many subscribers got it when the server says so."""
        raise NotImplementedError

    async def _aio_subscribe(self, feed: _Feed) -> Any:
        """Subscribe ``feed``; return a handle for ``_aio_unsubscribe``."""
        raise NotImplementedError

    async def _aio_drain(self, handle: Any) -> None:
        """Stop deliveries to a subscription, letting those on the way arrive.

        The default unsubscribes; a broker with a better primitive overrides it.
        """
        await self._aio_unsubscribe(handle)

    async def _aio_unsubscribe(self, handle: Any) -> None:
        raise NotImplementedError

    def _check_subscribe(self, pattern: str, queue: str | None) -> None:
        """Refuse what this broker cannot subscribe to (before anything is sent)."""

    def _check_subject(self, subject: str) -> None:
        """Refuse a concrete subject this broker cannot spell."""

    # The Broker methods ------------------------------------------------------------

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
    ) -> int | None:
        subjects.validate_subject(subject)
        self._check_subject(subject)
        if reply is not None:
            subjects.validate_subject(reply)
            self._check_subject(reply)
        message = Message(subject, data, reply, headers or {})
        await trio.lowlevel.checkpoint_if_cancelled()
        self._state.require(f"publish to {subject!r}")
        return await self._bridge.run(self._aio_publish, message)

    @asynccontextmanager
    async def subscribe(
        self, pattern: str, *, queue: str | None = None
    ) -> AsyncIterator[Subscription]:
        """See ``Broker.subscribe``.

        While disconnected the subscription is recorded and made when the
        connection comes back.
        """
        subjects.validate_pattern(pattern)
        subjects.validate_queue(queue)
        self._check_subscribe(pattern, queue)
        if self._state.closed:
            raise BrokerUnavailable(f"broker {self.name!r} is closed", broker=self.name)
        feed = _Feed(pattern, queue)
        self._feeds.add(feed)
        try:
            handle = await self._bridge.run(self._aio_subscribe, feed)
        except BaseException:
            self._feeds.discard(feed)
            feed.close()
            raise

        async def drain() -> None:
            with trio.move_on_after(UNSUBSCRIBE_TIMEOUT):
                try:
                    await self._bridge.run(self._aio_drain, handle)
                except Exception as exc:  # the connection is gone: nothing to undo
                    log.debug("broker %s: drain %r: %r", self.name, pattern, exc)

        feed.stopper = drain
        try:
            yield feed.subscription()
        finally:
            feed.close()
            self._feeds.discard(feed)
            if not feed.drained:
                with trio.CancelScope(shield=True), trio.move_on_after(UNSUBSCRIBE_TIMEOUT):
                    try:
                        await self._bridge.run(self._aio_unsubscribe, handle)
                    except Exception as exc:  # the connection is gone: nothing to undo
                        log.debug("broker %s: unsubscribe %r: %r", self.name, pattern, exc)

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
        self._check_subject(subject)
        self._state.require(f"send a request to {subject!r}")
        if self._inbox is None:
            self._inbox = Inbox(self.name, self._attach, self._publish_counted)
        return await self._inbox.request(subject, data, timeout=timeout, headers=headers)

    async def _attach(self, feed: _Feed) -> None:
        """Subscribe ``feed`` until the broker closes."""
        self._feeds.add(feed)
        await self._bridge.run(self._aio_subscribe, feed)

    async def wait_connected(self) -> None:
        """See ``Broker.wait_connected``."""
        await self._state.wait()

    def connected(self) -> bool:
        """See ``Broker.connected``."""
        return self._state.value

    # Opening and closing ----------------------------------------------------------------

    async def _open(self) -> None:
        with trio.move_on_after(self.config.connect_timeout):
            await self._bridge.run(self._aio_open)
            await self._state.wait()
            return
        reason = self._state.last_error or "no answer"
        raise BrokerUnavailable(
            f"cannot connect to the {self.kind} broker {self.name!r} at {self.config.safe_url} "
            f"within {self.config.connect_timeout:g} s: {reason}",
            broker=self.name,
        )

    async def _close(self) -> None:
        self._state.close()
        for feed in list(self._feeds):
            feed.close()
        self._feeds.clear()
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            try:
                await self._bridge.run(self._aio_close)
            except Exception as exc:
                log.warning("broker %s: error while closing: %r", self.name, exc)


@asynccontextmanager
async def open_bridged(
    factory: Callable[[BrokerConfig, AsyncioBridge], B], config: BrokerConfig
) -> AsyncIterator[B]:
    """Open a bridged broker: its thread, its connection; on exit close both, in order.

    Raises:
        BrokerUnavailable: no connection within ``config.connect_timeout``.
    """
    async with open_bridge(config.name) as bridge:
        broker = factory(config, bridge)
        try:
            await broker._open()
            yield broker
        finally:
            await broker._close()
