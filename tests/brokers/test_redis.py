"""What only the Redis broker does: the envelope, plain payloads from other clients, AUTH."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from sandbox.brokers import BrokerConfig, BrokerUnavailable, InvalidMessage, Message, open_broker
from sandbox.brokers.redis import ENVELOPE_MAGIC, decode_envelope, encode_envelope

from .conftest import Certificates, Server, start_redis


def test_a_plain_message_travels_as_its_bare_payload() -> None:
    assert encode_envelope(Message("a", b"data")) == b"data"
    assert decode_envelope("a", b"data") == Message("a", b"data")


def test_reply_and_headers_travel_in_an_envelope() -> None:
    message = Message("a", b"\x00\n{payload}\n", "inbox.1", {"k": "v", "trace": "1"})
    payload = encode_envelope(message)
    assert payload.startswith(ENVELOPE_MAGIC)
    assert decode_envelope("a", payload) == message


def test_data_that_looks_like_an_envelope_is_wrapped_so_it_survives() -> None:
    tricky = Message("a", ENVELOPE_MAGIC + b"not json\n")
    assert decode_envelope("a", encode_envelope(tricky)) == tricky


@pytest.mark.parametrize(
    "payload",
    [
        ENVELOPE_MAGIC + b"{not json\nx",
        ENVELOPE_MAGIC + b"[1]\nx",
        ENVELOPE_MAGIC + b'{"reply": 5}\n',
    ],
)
def test_a_damaged_envelope_is_refused(payload: bytes) -> None:
    with pytest.raises(InvalidMessage, match="damaged stack envelope"):
        decode_envelope("a", payload)


def redis_cli() -> str:
    path = shutil.which("redis-cli")
    if path is None:
        pytest.skip("redis-cli is not installed: apt-get install redis-tools")
    return path


async def cli(server: Server, *args: str) -> str:
    result = await trio.run_process(
        [redis_cli(), "-p", str(server.port), *args], capture_stdout=True, capture_stderr=True
    )
    return result.stdout.decode()


async def test_a_payload_from_another_redis_client_arrives_as_a_plain_message(
    redis_server: Server,
) -> None:
    config = BrokerConfig(url=redis_server.url, reconnect_wait=0.2)
    async with open_broker(config) as broker, broker.subscribe("sensors.*") as sensors:
        assert await cli(redis_server, "PUBLISH", "sensors.kitchen", "21.5") == "1\n"
        with trio.fail_after(5):
            assert await sensors.receive() == Message("sensors.kitchen", b"21.5")


async def test_the_server_sees_our_connections_come_and_go(redis_server: Server) -> None:
    async def ours() -> int:
        return (await cli(redis_server, "CLIENT", "LIST")).count("name=stack:counted")

    config = BrokerConfig(url=redis_server.url, name="counted")
    async with open_broker(config) as broker, broker.subscribe("a.*"):
        await broker.publish("a.b", b"")
        assert await ours() >= 2  # the pub/sub connection and one for commands
    with trio.fail_after(5):
        while await ours():
            await trio.sleep(0.02)


async def test_password(tmp_path: Path) -> None:
    async with start_redis(tmp_path, "--requirepass", "pa55") as server:
        good = BrokerConfig(url=server.url, password="pa55")
        async with open_broker(good) as broker, broker.subscribe("x") as sub:
            await broker.publish("x", b"1")
            with trio.fail_after(5):
                assert (await sub.receive()).data == b"1"
        async with open_broker(f"redis://:pa55@127.0.0.1:{server.port}") as broker:
            assert broker.connected()
        with pytest.raises(BrokerUnavailable, match="(?i)password"):
            async with open_broker(BrokerConfig(url=server.url, password="x", connect_timeout=1)):
                pass  # pragma: no cover


async def test_tls_with_a_client_certificate(tmp_path: Path, certificates: Certificates) -> None:
    c = certificates
    async with start_redis(tmp_path, tls=c) as server:
        assert server.url.startswith("rediss://")
        config = BrokerConfig(url=server.url, tls_ca=c.ca, tls_cert=c.client_cert,
                              tls_key=c.client_key, connect_timeout=2)  # fmt: skip
        async with open_broker(config) as broker, broker.subscribe("x") as sub:
            await broker.publish("x", b"secret")
            with trio.fail_after(5):
                assert (await sub.receive()).data == b"secret"
        with pytest.raises(BrokerUnavailable, match="(?i)certificate verify failed"):
            async with open_broker(BrokerConfig(url=server.url, connect_timeout=1)):
                pass  # pragma: no cover
