"""The Redis broker: ``redis://`` and ``rediss://`` URLs, Redis pub/sub through redis-py.

What it does: publish and subscribe with NATS-style patterns, request/reply
(with "no responders" known at once, from PUBLISH's receiver count), and
headers. What it does not: **queue groups**. Redis pub/sub gives every
message to every subscriber and has no message id that members of a group
could share, so ``subscribe(..., queue=...)`` raises ``BrokerUnsupported``;
use NATS, or MQTT's shared subscriptions, for queue groups.

Patterns become ``PSUBSCRIBE`` globs (``orders.*`` -> ``orders.*``), which
over-match (a glob ``*`` crosses dots); every message is checked with
``subjects.match`` before it is delivered. All subscriptions of a broker share
one pub/sub connection; a supervisor task reads it, answers for its health
(a PING when idle; no PONG within the next interval counts as a dead
connection) and, when it breaks, reconnects (pausing up to
``reconnect_wait``) and subscribes again before ``connected()`` turns True.

Redis messages have no headers or reply subject, so a message that has
either travels in an envelope: ``ENVELOPE_MAGIC``, one line of JSON
(``{"reply": ..., "headers": {...}}``), then the payload. A message without
them is sent as its bare payload, so other Redis clients read it as is, and
a payload from another client arrives as a plain message.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import redis.exceptions
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from . import subjects
from ._base import BrokerUnavailable, BrokerUnsupported, InvalidMessage, Message, _Feed
from ._bridged import BridgedBroker, open_bridged
from ._config import BrokerConfig

log = logging.getLogger("sandbox.brokers")

ENVELOPE_MAGIC = b"\x00stack.envelope.v1\n"
#: One TCP connection attempt, at most.
ATTEMPT_TIMEOUT = 2.0
#: An idle pub/sub connection is PINGed this often.
HEALTH_INTERVAL = 5.0
#: How long to wait for the server to confirm a PSUBSCRIBE.
CONFIRM_TIMEOUT = 5.0
#: The first pause before reconnecting; it doubles up to ``reconnect_wait``.
FIRST_PAUSE = 0.05

_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def encode_envelope(message: Message) -> bytes:
    """The Redis payload of ``message``: the bare data, or an envelope when needed."""
    if (
        message.reply is None
        and not message.headers
        and not message.data.startswith(ENVELOPE_MAGIC)
    ):
        return message.data
    head = {"reply": message.reply, "headers": dict(message.headers)}
    return ENVELOPE_MAGIC + json.dumps(head, separators=(",", ":")).encode() + b"\n" + message.data


def decode_envelope(subject: str, payload: bytes) -> Message:
    """The message carried by a Redis payload (an envelope, or a bare payload).

    Raises:
        InvalidMessage: it starts like an envelope but is not a valid one.
    """
    if not payload.startswith(ENVELOPE_MAGIC):
        return Message(subject, payload)
    head, newline, data = payload[len(ENVELOPE_MAGIC) :].partition(b"\n")
    try:
        fields = json.loads(head) if newline else None
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        raise InvalidMessage(f"a message on {subject!r} has a damaged stack envelope")
    reply, headers = fields.get("reply"), fields.get("headers") or {}
    if not (reply is None or isinstance(reply, str)) or not isinstance(headers, dict):
        raise InvalidMessage(f"a message on {subject!r} has a damaged stack envelope")
    return Message(subject, data, reply, headers)


class RedisBroker(BridgedBroker):
    """A broker on Redis pub/sub (see the module docstring)."""

    kind = "Redis"

    # Loop-side state (only touched on the loop's thread).
    _client: Redis | None = None
    _pubsub: PubSub | None = None
    _supervisor: asyncio.Task[None] | None = None

    def _check_subscribe(self, pattern: str, queue: str | None) -> None:
        if queue is not None:
            raise BrokerUnsupported(
                f"broker {self.name!r} is Redis, whose pub/sub has no queue groups (every "
                f"subscriber gets every message), so it cannot subscribe to {pattern!r} in "
                f"queue group {queue!r}; use a NATS broker, or MQTT (shared subscriptions), "
                "for queue groups, or subscribe without queue= in a single process",
                broker=self.name,
            )

    # On the loop ---------------------------------------------------------------------

    async def _aio_open(self) -> None:
        config = self.config
        url = config.urls[0]
        options: dict[str, Any] = {}
        if config.user is not None:
            options["username"] = config.user
        if config.password is not None:
            options["password"] = config.password
        if config.tls:
            if urlsplit(url).scheme == "redis":
                url = "rediss" + url[len("redis") :]
            options["ssl_cert_reqs"] = "required"
            if config.tls_ca is not None:
                options["ssl_ca_certs"] = str(config.tls_ca)
            if config.tls_cert is not None:
                options["ssl_certfile"] = str(config.tls_cert)
            if config.tls_key is not None:
                options["ssl_keyfile"] = str(config.tls_key)
        self._client = Redis.from_url(
            url,
            socket_connect_timeout=min(config.connect_timeout, ATTEMPT_TIMEOUT),
            socket_keepalive=True,
            # One quick retry on a fresh connection; the supervisor does the rest.
            retry=Retry(NoBackoff(), 1),
            client_name=f"stack:{config.name}",
            **options,
        )
        self._feeds_by_glob: dict[str, list[_Feed]] = {}
        self._confirmed: set[str] = set()
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        self._unconfirmed: set[str] = set()
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _aio_close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with suppress(asyncio.CancelledError):
                await self._supervisor
        if self._client is not None:
            await self._client.aclose()

    async def _supervise(self) -> None:
        assert self._client is not None
        pause = FIRST_PAUSE
        while True:
            pubsub = self._client.pubsub()
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]  # PubSub is unannotated
                self._pubsub = pubsub
                globs = list(self._feeds_by_glob)
                self._unconfirmed = set(globs)
                if globs:
                    await pubsub.psubscribe(*globs)
                else:
                    self._set_connected(True)
                pause = FIRST_PAUSE
                await self._read(pubsub)
            except _CONNECTION_ERRORS as exc:
                self._lost(_describe(exc))
            finally:
                self._pubsub = None
                with suppress(*_CONNECTION_ERRORS):
                    await pubsub.aclose()
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.config.reconnect_wait)

    def _lost(self, reason: str) -> None:
        if self._state.value:  # read across threads: only to log once per outage
            log.warning("broker %s (Redis): connection lost: %s", self.name, reason)
        self._set_connected(False, reason)
        self._confirmed.clear()
        for futures in self._waiting.values():
            for future in futures:
                if not future.done():
                    future.set_result(None)  # it is subscribed again on reconnection
        self._waiting.clear()

    async def _read(self, pubsub: PubSub) -> None:
        pinged = False
        while True:
            item = await pubsub.get_message(timeout=HEALTH_INTERVAL)
            if item is None:
                if pinged:
                    raise redis.exceptions.TimeoutError(
                        f"no answer to PING within {HEALTH_INTERVAL:g} s"
                    )
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            kind = item["type"]
            if kind == "pmessage":
                self._dispatch(item["pattern"], item["channel"], item["data"])
            elif kind == "psubscribe":
                self._confirm(_text(item["channel"]))

    def _confirm(self, glob: str) -> None:
        self._confirmed.add(glob)
        for future in self._waiting.pop(glob, []):
            if not future.done():
                future.set_result(None)
        if self._unconfirmed:
            self._unconfirmed.discard(glob)
            if not self._unconfirmed:
                self._set_connected(True)

    def _dispatch(self, glob: bytes, channel: bytes, payload: bytes) -> None:
        feeds = self._feeds_by_glob.get(_text(glob))
        if not feeds:
            return
        subject = _text(channel)
        message: Message | None = None
        for feed in feeds:
            if subjects.match(feed.pattern, subject):
                if message is None:
                    try:
                        message = decode_envelope(subject, payload)
                    except InvalidMessage as exc:
                        log.warning("broker %s: dropped a message: %s", self.name, exc)
                        return
                self._deliver(feed, message)

    async def _aio_publish(self, message: Message) -> int | None:
        assert self._client is not None
        try:
            receivers: int = await self._client.publish(message.subject, encode_envelope(message))
        except _CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(
                f"broker {self.name!r} (Redis): cannot publish to {message.subject!r}: "
                f"{_describe(exc)}",
                broker=self.name,
            ) from exc
        return receivers

    async def _aio_subscribe(self, feed: _Feed) -> tuple[str, _Feed]:
        glob = subjects.to_redis_glob(feed.pattern)
        feeds = self._feeds_by_glob.setdefault(glob, [])
        feeds.append(feed)
        pubsub = self._pubsub
        if pubsub is not None and glob not in self._confirmed:
            future = asyncio.get_running_loop().create_future()
            first = glob not in self._waiting
            self._waiting.setdefault(glob, []).append(future)
            try:
                if first:
                    await pubsub.psubscribe(glob)
                await asyncio.wait_for(future, CONFIRM_TIMEOUT)
            except (TimeoutError, *_CONNECTION_ERRORS) as exc:
                # The supervisor sees the broken connection and subscribes again.
                log.debug("broker %s: PSUBSCRIBE %s: %r", self.name, glob, exc)
        return glob, feed

    async def _aio_unsubscribe(self, handle: tuple[str, _Feed]) -> None:
        glob, feed = handle
        feeds = self._feeds_by_glob.get(glob, [])
        if feed in feeds:
            feeds.remove(feed)
        if feeds:
            return
        self._feeds_by_glob.pop(glob, None)
        self._confirmed.discard(glob)
        pubsub = self._pubsub
        if pubsub is not None:
            with suppress(*_CONNECTION_ERRORS):
                await pubsub.punsubscribe(glob)


def _text(value: bytes | str) -> str:
    return value if isinstance(value, str) else value.decode("utf-8", "replace")


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@asynccontextmanager
async def open_redis_broker(config: BrokerConfig) -> AsyncIterator[RedisBroker]:
    """Connect to Redis; on exit close the connections and their thread.

    Raises:
        BrokerUnavailable: no connection within ``config.connect_timeout`` (the
            message says why: refused, wrong password...).
    """
    async with open_bridged(RedisBroker, config) as broker:
        yield broker


__all__ = [
    "ENVELOPE_MAGIC",
    "RedisBroker",
    "decode_envelope",
    "encode_envelope",
    "open_redis_broker",
]
