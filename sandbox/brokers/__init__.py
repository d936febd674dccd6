"""Message brokers behind one protocol: in-memory, NATS, Redis pub/sub and MQTT.

    async with open_broker("nats://127.0.0.1:4222") as broker:
        async with broker.subscribe("orders.*", queue="workers") as orders:
            async for message in orders:
                if message.reply:
                    await broker.publish(message.reply, b"done")

``open_broker`` picks the implementation by URL scheme:

    memory://[bus]            in-process (MemoryBroker)
    nats://, tls://           NATS, nats-py (NatsBroker)
    redis://, rediss://       Redis pub/sub, redis-py (RedisBroker): no queue groups
    mqtt://, mqtts://         MQTT 5, aiomqtt (MqttBroker); queue groups are shared subscriptions

Subjects are NATS style everywhere (``sandbox.brokers.subjects``). The NATS,
Redis and MQTT clients are asyncio libraries: each broker runs its client on
an asyncio loop in a thread of its own and is Trio-native to its caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from . import subjects
from ._base import (
    PENDING_LIMIT,
    Broker,
    BrokerError,
    BrokerTimeout,
    BrokerUnavailable,
    BrokerUnsupported,
    InvalidMessage,
    InvalidSubject,
    Message,
    NoResponders,
    Subscription,
)
from ._config import BrokerConfig, brokers_from_mapping


@asynccontextmanager
async def open_broker(
    config: BrokerConfig | str, *, name: str | None = None
) -> AsyncIterator[Broker]:
    """Connect to the broker ``config`` describes (a ``BrokerConfig`` or a URL).

    Returns once connected; on exit every subscription ends and the connection,
    and the thread of an asyncio client, are closed (also when cancelled).

    Args:
        config: the broker, or its URL (``nats://127.0.0.1:4222``).
        name: the broker's name in logs and errors, when ``config`` is a URL.

    Raises:
        ConfigError: a bad URL or setting.
        BrokerUnavailable: no connection within ``config.connect_timeout``.
    """
    if isinstance(config, str):
        config = BrokerConfig(url=config, name=name or "default")
    kind = config.kind
    if kind == "memory":
        from .memory import open_memory_broker

        async with open_memory_broker(config) as memory:
            yield memory
    elif kind == "nats":
        from .nats import open_nats_broker

        async with open_nats_broker(config) as nats:
            yield nats
    elif kind == "redis":
        from .redis import open_redis_broker

        async with open_redis_broker(config) as redis:
            yield redis
    else:
        from .mqtt import open_mqtt_broker

        async with open_mqtt_broker(config) as mqtt:
            yield mqtt


__all__ = [
    "Broker",
    "BrokerConfig",
    "BrokerError",
    "BrokerTimeout",
    "BrokerUnavailable",
    "BrokerUnsupported",
    "InvalidMessage",
    "InvalidSubject",
    "Message",
    "NoResponders",
    "PENDING_LIMIT",
    "Subscription",
    "brokers_from_mapping",
    "open_broker",
    "subjects",
]
