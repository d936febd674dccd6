"""The NATS broker: ``nats://`` and ``tls://`` URLs, through nats-py.

Everything NATS has is native here: wildcards, queue groups, request/reply
(with "no responders" known at once), headers. The client reconnects by
itself (forever, pausing ``reconnect_wait`` between rounds) and replays the
subscriptions; ``connected()`` is False from the moment the connection drops
until the subscriptions are back.

Log in with a token, a user and password, a credentials file (JWT + nkey
seed), or a client certificate; ``tls_ca`` verifies the server.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription

from . import subjects
from ._base import (
    BrokerError,
    BrokerTimeout,
    BrokerUnavailable,
    InvalidMessage,
    InvalidSubject,
    Message,
    NoResponders,
    _Feed,
    check_timeout,
)
from ._bridged import BridgedBroker, open_bridged
from ._config import BrokerConfig, ssl_context

log = logging.getLogger("sandbox.brokers")

#: How long one TCP (and TLS) connection attempt may take, at most.
ATTEMPT_TIMEOUT = 2.0
#: How long to wait for the server to confirm a subscription.
FLUSH_TIMEOUT = 5.0


class NatsBroker(BridgedBroker):
    """A broker on a NATS server or cluster (see the module docstring)."""

    kind = "NATS"
    _nc: Client | None = None
    _last_logged: str | None = None
    _cause: str | None = None

    # On the loop ---------------------------------------------------------------------

    async def _aio_open(self) -> None:
        config = self.config
        self._nc = nc = Client()
        options: dict[str, Any] = {}
        if config.token is not None:
            options["token"] = config.token
        if config.user is not None:
            options["user"] = config.user
        if config.password is not None:
            options["password"] = config.password
        if config.credentials is not None:
            options["user_credentials"] = str(config.credentials)
        context = ssl_context(config)
        if context is not None:
            options["tls"] = context
        await nc.connect(
            servers=list(config.urls),
            name=f"stack:{config.name}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,  # forever; open_broker bounds the first connection
            reconnect_time_wait=config.reconnect_wait,  # type: ignore[arg-type]  # typed int, used as seconds
            connect_timeout=min(config.connect_timeout, ATTEMPT_TIMEOUT),  # type: ignore[arg-type]  # same
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
            **options,
        )
        self._last_logged = self._cause = None
        self._set_connected(True)

    async def _aio_close(self) -> None:
        nc = self._nc
        if nc is not None and not nc.is_closed:
            await nc.close()

    async def _on_error(self, exc: Exception) -> None:
        text = _describe(exc)
        if text != self._last_logged:
            log.warning("broker %s (NATS): %s", self.name, text)
            self._last_logged = text
        # A refused login or certificate explains the resets that follow it: keep it.
        if isinstance(exc, nats.errors.AuthorizationError | ssl.SSLError) or (
            "Authorization Violation" in text
        ):
            self._cause = text
        elif self._cause is not None:
            text = f"{self._cause}; then {text}"
        self._set_connected(self._nc is not None and self._nc.is_connected, text)

    async def _on_disconnected(self) -> None:
        self._set_connected(False)

    async def _on_reconnected(self) -> None:
        log.info("broker %s (NATS): reconnected", self.name)
        self._last_logged = self._cause = None
        self._set_connected(True)

    async def _on_closed(self) -> None:
        self._set_connected(False)

    def _client(self) -> Client:
        if self._nc is None:
            raise BrokerUnavailable(f"broker {self.name!r} is not connected", broker=self.name)
        return self._nc

    async def _aio_publish(self, message: Message) -> int | None:
        try:
            await self._client().publish(
                message.subject,
                message.data,
                reply=message.reply or "",
                headers=dict(message.headers) or None,
            )
        except nats.errors.Error as exc:
            raise _translate(exc, self.name) from exc
        return None

    async def _aio_subscribe(self, feed: _Feed) -> NatsSubscription:
        nc = self._client()

        async def received(msg: Msg) -> None:
            try:
                message = Message(msg.subject, msg.data, msg.reply or None, msg.headers or {})
            except InvalidMessage as exc:
                log.warning("broker %s: dropped a message on %r: %s", self.name, msg.subject, exc)
                return
            self._deliver(feed, message)

        try:
            subscription = await nc.subscribe(feed.pattern, queue=feed.queue or "", cb=received)
            if nc.is_connected:
                # Once the server answers this PING it has the SUB too.
                await nc.flush(timeout=FLUSH_TIMEOUT)  # type: ignore[arg-type]  # typed int, seconds
        except nats.errors.Error as exc:
            raise _translate(exc, self.name) from exc
        return subscription

    async def _aio_drain(self, handle: NatsSubscription) -> None:
        # nats-py's drain: UNSUB, then deliver what is pending (the server has
        # confirmed the UNSUB once the following flush returns).
        nc = self._nc
        if nc is not None and not nc.is_closed:
            await handle.drain()  # type: ignore[no-untyped-call]  # unannotated in nats-py
            await nc.flush()

    async def _aio_unsubscribe(self, handle: NatsSubscription) -> None:
        nc = self._nc
        if nc is not None and not nc.is_closed:
            await handle.unsubscribe()

    async def _aio_request(
        self,
        subject: str,
        data: bytes,
        timeout: float,  # noqa: ASYNC109 (the reply deadline, as in NATS)
        headers: dict[str, str] | None,
    ) -> Message:
        try:
            msg = await self._client().request(subject, data, timeout=timeout, headers=headers)
        except nats.errors.NoRespondersError:
            raise NoResponders(
                f"no subscriber for request subject {subject!r} on broker {self.name!r}",
                broker=self.name,
                subject=subject,
            ) from None
        except nats.errors.TimeoutError:
            raise BrokerTimeout(
                f"no reply to the request on {subject!r} within {timeout:g} s "
                f"(broker {self.name!r})",
                broker=self.name,
                subject=subject,
            ) from None
        except nats.errors.Error as exc:
            raise _translate(exc, self.name) from exc
        return Message(msg.subject, msg.data, msg.reply or None, msg.headers or {})

    # The Trio side -------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        data: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 (the reply deadline, as in NATS)
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """See ``Broker.request``: NATS's own request, over one shared inbox."""
        subjects.validate_subject(subject)
        timeout = check_timeout(timeout)
        message = Message(subject, data, None, headers or {})
        self._state.require(f"send a request to {subject!r}")
        return await self._bridge.run(
            self._aio_request, subject, message.data, timeout, dict(message.headers) or None
        )


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, nats.errors.Error) and text.startswith("nats: "):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _translate(exc: nats.errors.Error, name: str) -> BrokerError:
    text = _describe(exc)
    if isinstance(exc, nats.errors.BadSubjectError):
        return InvalidSubject(f"broker {name!r} (NATS) refused the subject: {text}", broker=name)
    if isinstance(exc, nats.errors.MaxPayloadError | nats.errors.BadHeaderError):
        return InvalidMessage(f"broker {name!r} (NATS) refused the message: {text}", broker=name)
    return BrokerUnavailable(f"broker {name!r} (NATS): {text}", broker=name)


@asynccontextmanager
async def open_nats_broker(config: BrokerConfig) -> AsyncIterator[NatsBroker]:
    """Connect to NATS; on exit close the connection and its thread.

    Raises:
        BrokerUnavailable: no connection within ``config.connect_timeout`` (the
            message says why: refused, authorization violation, TLS...).
        ConfigError: a TLS file cannot be read.
    """
    async with open_bridged(NatsBroker, config) as broker:
        yield broker


__all__ = ["NatsBroker", "open_nats_broker"]
