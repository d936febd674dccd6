"""Request/reply over plain publish and subscribe: one shared inbox per broker.

Used by the brokers without a native request (memory, Redis, MQTT); NATS has
its own. The first request subscribes to ``_INBOX.<random>.*``; each request
publishes with ``reply=_INBOX.<random>.<n>`` and waits for the first message
on that subject. Later replies to the same request are ignored. The inbox
subscription lives as long as the broker (it ends when the broker closes).
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Awaitable, Callable, Mapping

import trio

from ._base import BrokerTimeout, Message, NoResponders, _Feed, check_timeout

#: publish(subject, data, reply=..., headers=...) -> how many received it, or None if unknown.
CountingPublish = Callable[..., Awaitable[int | None]]


class _Replies(_Feed):
    """The inbox's subscription: hands each reply straight to its waiting request."""

    def __init__(self, pattern: str, waiting: dict[str, trio.MemorySendChannel[Message]]) -> None:
        super().__init__(pattern, None)
        self._waiting = waiting
        self._skip = len(pattern) - 1

    def put(self, message: Message) -> None:
        waiting = self._waiting.pop(message.subject[self._skip :], None)
        if waiting is not None:
            waiting.send_nowait(message)


class Inbox:
    """The inbox of one broker; needs no task: replies are routed as they arrive."""

    def __init__(
        self,
        name: str,
        attach: Callable[[_Feed], Awaitable[None]],
        publish: CountingPublish,
    ) -> None:
        self.name = name
        self.prefix = f"_INBOX.{secrets.token_hex(10)}"
        self._attach = attach
        self._publish = publish
        self._waiting: dict[str, trio.MemorySendChannel[Message]] = {}
        self._counter = itertools.count()
        self._lock = trio.Lock()
        self._started = False

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 (the reply deadline, as in NATS)
        headers: Mapping[str, str] | None,
    ) -> Message:
        timeout = check_timeout(timeout)
        with trio.move_on_after(timeout):
            await self._start()
            token = str(next(self._counter))
            send, receive = trio.open_memory_channel[Message](1)
            self._waiting[token] = send
            try:
                receivers = await self._publish(
                    subject, data, reply=f"{self.prefix}.{token}", headers=headers
                )
                if receivers == 0:
                    raise NoResponders(
                        f"no subscriber for request subject {subject!r} on broker {self.name!r}",
                        broker=self.name,
                        subject=subject,
                    )
                return await receive.receive()
            finally:
                self._waiting.pop(token, None)
        raise BrokerTimeout(
            f"no reply to the request on {subject!r} within {timeout:g} s (broker {self.name!r})",
            broker=self.name,
            subject=subject,
        )

    async def _start(self) -> None:
        async with self._lock:
            if not self._started:
                await self._attach(_Replies(f"{self.prefix}.*", self._waiting))
                self._started = True
