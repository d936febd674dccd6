"""The MQTT broker: ``mqtt://`` and ``mqtts://`` URLs, MQTT 5 through aiomqtt (paho-mqtt).

Subjects map onto topics (``a.b.*`` <-> ``a/b/+``, ``>`` <-> ``#``; tokens
cannot hold ``/``, ``+`` or ``#``). Queue groups are MQTT 5 shared
subscriptions (``$share/<group>/<filter>``): the server gives each message to
one member. Headers travel as user properties and the reply subject as the
response topic, so request/reply works between stack processes (a request
nobody answers ends in ``BrokerTimeout``: MQTT cannot tell that nobody
listens). Messages are sent and subscribed with QoS 1.

Each MQTT subscription carries a subscription identifier, and the server
names it in every message it delivers for it; that is how a message is
routed to the right local subscriptions when several overlap (say ``a.*``,
``a.>`` and a queue group on ``a.*`` in one process). Local subscriptions
with the same filter share one MQTT subscription; members of one queue group
within one process take turns.

aiomqtt does not reconnect: a supervisor task connects, subscribes every
filter again, reads messages, and on a broken connection starts over
(pausing up to ``reconnect_wait``). ``connected()`` is False from the break
until the subscriptions are back. Needs an MQTT 5 server (mosquitto 2,
EMQX, HiveMQ...).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from urllib.parse import unquote, urlsplit

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from . import subjects
from ._base import BrokerError, BrokerUnavailable, InvalidMessage, Message, _Feed
from ._bridged import BridgedBroker, open_bridged
from ._config import BrokerConfig, ssl_context

log = logging.getLogger("sandbox.brokers")

QOS = 1
#: How long a subscribe, unsubscribe or publish may wait for the server's answer.
OPERATION_TIMEOUT = 5.0
#: The first pause before reconnecting; it doubles up to ``reconnect_wait``.
FIRST_PAUSE = 0.05


class _Filter:
    """One MQTT subscription and the local subscriptions it feeds."""

    def __init__(self, topic_filter: str, ident: int, queue: str | None) -> None:
        self.topic_filter = topic_filter
        self.ident = ident
        self.queue = queue
        self.feeds: list[_Feed] = []
        self.acked: asyncio.Event = asyncio.Event()
        self._turn = 0

    def targets(self, subject: str) -> list[_Feed]:
        # MQTT's '#' also matches the parent level, which NATS's '>' does not.
        feeds = [feed for feed in self.feeds if subjects.match(feed.pattern, subject)]
        if self.queue is None or not feeds:
            return feeds
        self._turn += 1
        return [feeds[self._turn % len(feeds)]]


class MqttBroker(BridgedBroker):
    """A broker on an MQTT 5 server (see the module docstring)."""

    kind = "MQTT"

    _client: aiomqtt.Client | None = None
    _supervisor: asyncio.Task[None] | None = None

    def _check_subscribe(self, pattern: str, queue: str | None) -> None:
        subjects.to_mqtt_filter(pattern)

    def _check_subject(self, subject: str) -> None:
        subjects.to_mqtt_topic(subject)

    # On the loop ---------------------------------------------------------------------

    async def _aio_open(self) -> None:
        self._filters: dict[str, _Filter] = {}
        self._by_ident: dict[int, _Filter] = {}
        self._idents = itertools.count(1)
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _aio_close(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            with suppress(asyncio.CancelledError):
                await self._supervisor

    def _new_client(self) -> aiomqtt.Client:
        config = self.config
        parts = urlsplit(config.urls[0])
        secure = config.tls
        user = config.user if config.user is not None else _unquote(parts.username)
        password = config.password if config.password is not None else _unquote(parts.password)
        return aiomqtt.Client(
            parts.hostname or "127.0.0.1",
            parts.port or (8883 if secure else 1883),
            username=user,
            password=password,
            identifier=config.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=max(1, round(config.keepalive)),
            tls_context=_mqtt_ssl_context(config),
            timeout=min(OPERATION_TIMEOUT, config.connect_timeout),
            logger=logging.getLogger("sandbox.brokers.mqtt"),
        )

    async def _supervise(self) -> None:
        pause = FIRST_PAUSE
        while True:
            client = self._new_client()
            try:
                await _enter(client)
            except aiomqtt.MqttError as exc:
                self._lost(_describe(exc))
            else:
                try:
                    self._client = client
                    for entry in list(self._filters.values()):
                        try:
                            await self._send_subscribe(client, entry)
                        except BrokerError as exc:
                            log.warning("broker %s (MQTT): %s", self.name, exc.message)
                    self._set_connected(True)
                    pause = FIRST_PAUSE
                    async for message in client.messages:
                        self._dispatch(message)
                except aiomqtt.MqttError as exc:
                    self._lost(_describe(exc))
                finally:
                    self._client = None
                    for entry in self._filters.values():
                        entry.acked.clear()
                    with suppress(aiomqtt.MqttError):
                        await client.__aexit__(None, None, None)
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.config.reconnect_wait)

    def _lost(self, reason: str) -> None:
        if self._state.value:  # read across threads: only to log once per outage
            log.warning("broker %s (MQTT): connection lost: %s", self.name, reason)
        self._set_connected(False, reason)

    async def _send_subscribe(self, client: aiomqtt.Client, entry: _Filter) -> None:
        properties = Properties(PacketTypes.SUBSCRIBE)  # type: ignore[no-untyped-call]
        properties.SubscriptionIdentifier = entry.ident
        codes = await client.subscribe(entry.topic_filter, qos=QOS, properties=properties)
        refused = [code for code in codes if not isinstance(code, int) and code.is_failure]
        if refused:
            raise BrokerError(
                f"the MQTT server refused the subscription to {entry.topic_filter!r}: "
                f"{refused[0].getName()}",
                broker=self.name,
            )
        entry.acked.set()

    def _dispatch(self, received: aiomqtt.Message) -> None:
        properties = received.properties
        subject = subjects.from_mqtt_topic(received.topic.value)
        idents: list[int] = list(getattr(properties, "SubscriptionIdentifier", None) or [])
        if idents:
            entries = [self._by_ident[i] for i in idents if i in self._by_ident]
        else:  # a server that does not send identifiers: match the plain filters
            entries = [
                entry
                for entry in self._filters.values()
                if entry.queue is None and received.topic.matches(entry.topic_filter)
            ]
        targets = [feed for entry in entries for feed in entry.targets(subject)]
        if not targets:
            return
        reply = getattr(properties, "ResponseTopic", None)
        headers = dict(getattr(properties, "UserProperty", None) or [])
        try:
            message = Message(
                subject,
                _payload(received.payload),
                subjects.from_mqtt_topic(reply) if reply else None,
                headers,
            )
        except InvalidMessage as exc:
            log.warning("broker %s: dropped a message on %r: %s", self.name, subject, exc)
            return
        for feed in targets:
            self._deliver(feed, message)

    async def _aio_publish(self, message: Message) -> int | None:
        client = self._client
        if client is None:
            raise BrokerUnavailable(f"broker {self.name!r} is not connected", broker=self.name)
        properties: Properties | None = None
        if message.reply is not None or message.headers:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            if message.reply is not None:
                properties.ResponseTopic = subjects.to_mqtt_topic(message.reply)
            if message.headers:
                properties.UserProperty = list(message.headers.items())
        try:
            await client.publish(
                subjects.to_mqtt_topic(message.subject),
                message.data,
                qos=QOS,
                properties=properties,
            )
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(
                f"broker {self.name!r} (MQTT): cannot publish to {message.subject!r}: "
                f"{_describe(exc)}",
                broker=self.name,
            ) from exc
        return None

    async def _aio_subscribe(self, feed: _Feed) -> tuple[str, _Feed]:
        topic_filter = subjects.to_mqtt_filter(feed.pattern)
        if feed.queue is not None:
            topic_filter = f"$share/{feed.queue}/{topic_filter}"
        entry = self._filters.get(topic_filter)
        first = entry is None
        if entry is None:
            entry = _Filter(topic_filter, next(self._idents), feed.queue)
            self._filters[topic_filter] = entry
            self._by_ident[entry.ident] = entry
        entry.feeds.append(feed)
        client = self._client
        if client is None:
            return topic_filter, feed  # subscribed when the connection comes back
        try:
            if first:
                await self._send_subscribe(client, entry)
            else:
                await asyncio.wait_for(entry.acked.wait(), OPERATION_TIMEOUT)
        except BrokerError:
            await self._aio_unsubscribe((topic_filter, feed))
            raise
        except (TimeoutError, aiomqtt.MqttError) as exc:
            # The connection broke: the supervisor subscribes again.
            log.debug("broker %s: SUBSCRIBE %s: %r", self.name, topic_filter, exc)
        return topic_filter, feed

    async def _aio_unsubscribe(self, handle: tuple[str, _Feed]) -> None:
        topic_filter, feed = handle
        entry = self._filters.get(topic_filter)
        if entry is None:
            return
        if feed in entry.feeds:
            entry.feeds.remove(feed)
        if entry.feeds:
            return
        del self._filters[topic_filter]
        del self._by_ident[entry.ident]
        client = self._client
        if client is not None:
            with suppress(aiomqtt.MqttError, asyncio.TimeoutError):
                await client.unsubscribe(topic_filter)


async def _enter(client: aiomqtt.Client) -> None:
    """Connect ``client``; when cancelled, let the attempt end, then disconnect.

    aiomqtt runs paho's blocking ``connect()`` in an executor thread, which a
    cancellation cannot stop: the socket it opens would be left behind.
    """
    entering = asyncio.ensure_future(client.__aenter__())
    try:
        await asyncio.shield(entering)
    except asyncio.CancelledError:
        with suppress(Exception):
            await entering
            await client.__aexit__(None, None, None)
        raise


class _ClosingSSLSocket(ssl.SSLSocket):
    """An ``SSLSocket`` that closes itself when its handshake fails.

    paho-mqtt's ``_ssl_wrap_socket`` does not close the socket when
    ``do_handshake()`` raises (a refused certificate), leaking it to the
    garbage collector (ResourceWarning); ``SSLContext.sslsocket_class`` is
    the documented hook to return a subclass that cleans up after itself.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _mqtt_ssl_context(config: BrokerConfig) -> ssl.SSLContext | None:
    context = ssl_context(config)  # mqtts:// or any TLS setting
    if context is not None:
        context.sslsocket_class = _ClosingSSLSocket
    return context


def _payload(payload: object) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray):
        return bytes(payload)
    if payload is None:
        return b""
    return str(payload).encode()


def _unquote(value: str | None) -> str | None:
    return unquote(value) if value is not None else None


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        text = f"{text}: {str(cause).strip()}" if text else str(cause).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@asynccontextmanager
async def open_mqtt_broker(config: BrokerConfig) -> AsyncIterator[MqttBroker]:
    """Connect to an MQTT 5 server; on exit disconnect and stop the thread.

    Raises:
        BrokerUnavailable: no connection within ``config.connect_timeout`` (the
            message says why: refused, not authorized...).
    """
    async with open_bridged(MqttBroker, config) as broker:
        yield broker


__all__ = ["MqttBroker", "open_mqtt_broker"]
