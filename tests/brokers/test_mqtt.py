"""What only the MQTT broker does: routing by subscription identifier, logins."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from sandbox.brokers import BrokerConfig, BrokerUnavailable, open_broker

from .conftest import Certificates, Server, start_mosquitto, take


async def test_overlapping_subscriptions_in_one_connection_each_get_their_messages(
    mosquitto_server: Server,
) -> None:
    config = BrokerConfig(url=mosquitto_server.url, client_id="stack-test-1")
    async with (
        open_broker(config) as broker,
        broker.subscribe("a.*") as one,
        broker.subscribe("a.*") as same_filter,
        broker.subscribe("a.>") as tail,
        broker.subscribe("a.b") as exact,
        broker.subscribe("a.*", queue="g") as member_1,
        broker.subscribe("a.*", queue="g") as member_2,
    ):
        for subject in ["a.b", "a.c", "a.b.c"]:
            await broker.publish(subject, subject.encode())
        assert [m.subject for m in await take(one, 2)] == ["a.b", "a.c"]
        assert [m.subject for m in await take(same_filter, 2)] == ["a.b", "a.c"]
        assert [m.subject for m in await take(tail, 3)] == ["a.b", "a.c", "a.b.c"]
        assert [m.subject for m in await take(exact, 1)] == ["a.b"]
        # the group's two messages go one to each member, in turn
        assert len(await take(member_1, 1)) == len(await take(member_2, 1)) == 1


async def test_user_and_password(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    if tool is None:
        pytest.skip("mosquitto_passwd is not installed: apt-get install mosquitto")
    passwords = tmp_path / "passwords"
    await trio.run_process([tool, "-c", "-b", str(passwords), "stack", "pa55"])
    passwords.chmod(0o600)
    lines = [f"password_file {passwords}"]
    async with start_mosquitto(tmp_path, *lines, anonymous=False) as server:
        good = BrokerConfig(url=server.url, user="stack", password="pa55")
        async with open_broker(good) as broker, broker.subscribe("x.*") as sub:
            await broker.publish("x.y", b"1")
            with trio.fail_after(5):
                assert (await sub.receive()).data == b"1"
        with pytest.raises(BrokerUnavailable, match="(?i)not authori[sz]ed|bad user name"):
            async with open_broker(
                BrokerConfig(url=server.url, user="stack", password="no", connect_timeout=1)
            ):
                pass  # pragma: no cover


async def test_tls_with_a_client_certificate(tmp_path: Path, certificates: Certificates) -> None:
    c = certificates
    async with start_mosquitto(tmp_path, tls=c) as server:
        assert server.url.startswith("mqtts://")
        config = BrokerConfig(url=server.url, tls_ca=c.ca, tls_cert=c.client_cert,
                              tls_key=c.client_key, connect_timeout=2)  # fmt: skip
        async with open_broker(config) as broker, broker.subscribe("x") as sub:
            await broker.publish("x", b"secret")
            with trio.fail_after(5):
                assert (await sub.receive()).data == b"secret"
        with pytest.raises(BrokerUnavailable, match="(?i)certificate verify failed"):
            async with open_broker(BrokerConfig(url=server.url, connect_timeout=1)):
                pass  # pragma: no cover
