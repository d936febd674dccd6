"""What every broker promises, checked against each: memory, NATS, Redis and MQTT (real servers)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio

from sandbox.brokers import (
    Broker,
    BrokerConfig,
    BrokerTimeout,
    BrokerUnavailable,
    BrokerUnsupported,
    InvalidSubject,
    Message,
    NoResponders,
    Subscription,
    open_broker,
)

from .conftest import QUIET, STARTERS, Server, broker_threads, connections_to, free_port, take

KINDS = ["memory", "nats", "redis", "mqtt"]
SERVERS = ["nats", "redis", "mqtt"]
SCHEMES = {"nats": "nats", "redis": "redis", "mqtt": "mqtt"}
#: How long a test waits to be sure that no further message comes.


@dataclass
class Target:
    kind: str
    server: Server | None

    def config(self, **changes: object) -> BrokerConfig:
        url = "memory://" if self.server is None else self.server.url
        config = BrokerConfig(url=url, name=self.kind, reconnect_wait=0.2, connect_timeout=5)
        return replace(config, **changes)  # type: ignore[arg-type]


@pytest.fixture(params=KINDS)
async def target(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    kind: str = request.param
    if kind == "memory":
        yield Target(kind, None)
        return
    async with STARTERS[kind](tmp_path) as server:
        yield Target(kind, server)


@pytest.fixture(params=SERVERS)
async def served(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Target]:
    async with STARTERS[request.param](tmp_path) as server:
        yield Target(request.param, server)




async def test_publish_subscribe_with_wildcards(target: Target) -> None:
    async with (
        open_broker(target.config()) as broker,
        broker.subscribe("orders.*") as one_token,
        broker.subscribe("orders.>") as the_rest,
        broker.subscribe("orders.eu.created") as exact,
        broker.subscribe("*.eu.*") as middle,
    ):
        for subject in [
            "orders.eu",
            "orders.eu.created",
            "orders.us.created.late",
            "orders",
            "other.eu",
            "other.eu.x",
        ]:
            await broker.publish(subject, subject.encode())

        def subjects(messages: list[Message]) -> list[str]:
            assert all(m.data == m.subject.encode() for m in messages)
            return [m.subject for m in messages]

        assert subjects(await take(one_token, 1)) == ["orders.eu"]
        assert subjects(await take(the_rest, 3)) == [
            "orders.eu",
            "orders.eu.created",
            "orders.us.created.late",
        ]
        assert subjects(await take(exact, 1)) == ["orders.eu.created"]
        assert subjects(await take(middle, 2)) == ["orders.eu.created", "other.eu.x"]


async def test_glob_characters_in_subjects_are_literal(target: Target) -> None:
    async with (
        open_broker(target.config()) as broker,
        broker.subscribe("a.[x]?") as literal,
        broker.subscribe("a.*") as wildcard,
    ):
        await broker.publish("a.x", b"1")
        await broker.publish("a.[x]?", b"2")
        assert [m.data for m in await take(literal, 1)] == [b"2"]
        assert [m.data for m in await take(wildcard, 2)] == [b"1", b"2"]


async def test_headers_reply_and_payload_arrive_unchanged(target: Target) -> None:
    payload = bytes(range(256)) * 4
    headers = {"trace-id": "abc-123", "Content-Type": "application/octet-stream"}
    async with open_broker(target.config()) as broker, broker.subscribe("blob.*") as blobs:
        await broker.publish("blob.raw", payload, reply="answers.here", headers=headers)
        await broker.publish("blob.empty", b"")
        first, second = await take(blobs, 2)
    assert first == Message("blob.raw", payload, "answers.here", headers)
    assert second == Message("blob.empty", b"", None, {})


async def test_queue_group_gives_each_message_to_exactly_one_member(target: Target) -> None:
    config = target.config()
    async with open_broker(config) as first, open_broker(config) as second:
        if target.kind == "redis":
            with pytest.raises(BrokerUnsupported, match="no queue groups"):
                async with first.subscribe("jobs.*", queue="workers"):
                    pass  # pragma: no cover
            return
        async with (
            first.subscribe("jobs.*", queue="workers") as member_a,
            first.subscribe("jobs.*", queue="workers") as member_b,
            second.subscribe("jobs.*", queue="workers") as member_c,
            second.subscribe("jobs.*", queue="auditors") as auditor,
            second.subscribe("jobs.*") as watcher,
        ):
            sent = [str(i).encode() for i in range(30)]
            for i, data in enumerate(sent):
                await first.publish(f"jobs.{i % 3}", data)

            assert [m.data for m in await take(watcher, 30)] == sent
            assert [m.data for m in await take(auditor, 30)] == sent
            got: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}

            async def collect(name: str, member: Subscription) -> None:
                async for message in member:
                    got[name].append(message.data)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(collect, "a", member_a)
                nursery.start_soon(collect, "b", member_b)
                nursery.start_soon(collect, "c", member_c)
                with trio.fail_after(5):
                    while sum(map(len, got.values())) < 30:
                        await trio.sleep(0.01)
                await trio.sleep(QUIET)
                nursery.cancel_scope.cancel()
    everything = got["a"] + got["b"] + got["c"]
    assert sorted(everything) == sorted(sent), "each message once, to one member"
    assert got["c"], "the member on the other connection had its share"


async def responder(
    broker: Broker,
    subject: str,
    *,
    answer: bool = True,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    async with broker.subscribe(subject) as requests:
        task_status.started()
        async for request in requests:
            if answer and request.reply:
                await broker.publish(
                    request.reply, request.data.upper(), headers={"served-by": broker.name}
                )


async def test_request_gets_the_reply(target: Target) -> None:
    config = target.config()
    async with (
        open_broker(config) as client,
        open_broker(replace(config, name="server")) as server,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(responder, server, "svc.upper")
        reply = await client.request("svc.upper", b"hello", timeout=5)
        assert (reply.data, dict(reply.headers)) == (b"HELLO", {"served-by": "server"})

        replies: dict[int, bytes] = {}

        async def ask(i: int) -> None:
            replies[i] = (await client.request("svc.upper", f"x{i}".encode(), timeout=5)).data

        async with trio.open_nursery() as asking:
            for i in range(10):
                asking.start_soon(ask, i)
        assert replies == {i: f"X{i}".encode() for i in range(10)}
        nursery.cancel_scope.cancel()


async def test_request_times_out_when_nobody_answers(target: Target) -> None:
    async with open_broker(target.config()) as broker, trio.open_nursery() as nursery:
        await nursery.start(
            lambda task_status: responder(
                broker, "svc.silent", answer=False, task_status=task_status
            )
        )
        started = time.monotonic()
        with pytest.raises(BrokerTimeout, match="no reply") as caught:
            await broker.request("svc.silent", b"?", timeout=0.3)
        assert not isinstance(caught.value, NoResponders)
        assert 0.25 < time.monotonic() - started < 2
        assert caught.value.status == 504
        nursery.cancel_scope.cancel()


async def test_request_without_subscribers(target: Target) -> None:
    async with open_broker(target.config()) as broker:
        started = time.monotonic()
        if target.kind == "mqtt":  # MQTT cannot tell: it waits for the timeout
            with pytest.raises(BrokerTimeout):
                await broker.request("svc.nobody", b"?", timeout=0.3)
            return
        with pytest.raises(NoResponders, match="no subscriber") as caught:
            await broker.request("svc.nobody", b"?", timeout=5)
        assert time.monotonic() - started < 1, "known at once, not after the timeout"
        assert caught.value.status == 503


async def test_bad_subjects_are_refused_before_sending(target: Target) -> None:
    async with open_broker(target.config()) as broker:
        with pytest.raises(InvalidSubject, match="wildcard"):
            await broker.publish("orders.*", b"")
        with pytest.raises(InvalidSubject, match="last token"):
            async with broker.subscribe("orders.>.x"):
                pass  # pragma: no cover
        with pytest.raises(InvalidSubject, match="empty token"):
            await broker.request("orders..x", b"", timeout=1)
        with pytest.raises(InvalidSubject, match="queue group name"):
            async with broker.subscribe("orders.*", queue="a b"):
                pass  # pragma: no cover
        if target.kind == "mqtt":
            with pytest.raises(InvalidSubject, match="MQTT"):
                await broker.publish("sensors.a/b", b"")


async def test_closing_leaves_no_thread_or_connection(target: Target) -> None:
    before = broker_threads()
    ended = trio.Event()

    async def reader(broker: Broker, task_status: trio.TaskStatus[None]) -> None:
        async with broker.subscribe("x.>") as subscription:
            task_status.started()
            async for _ in subscription:
                pass
        ended.set()  # the broker closed under it: iteration ended, no error

    async with trio.open_nursery() as nursery:
        async with open_broker(target.config()) as broker:
            assert broker.connected()
            await broker.wait_connected()
            if target.server is not None:
                assert connections_to(target.server.port) >= 1
                assert len(broker_threads()) > len(before)
            await nursery.start(reader, broker)
            with trio.move_on_after(0.05):  # a cancelled receive loses nothing
                async with broker.subscribe("y") as other:
                    await other.receive()
        with trio.fail_after(5):
            await ended.wait()
    assert not broker.connected()
    with pytest.raises(BrokerUnavailable, match="closed"):
        await broker.publish("x.y", b"")
    with pytest.raises(BrokerUnavailable, match="closed"):
        await broker.wait_connected()
    assert broker_threads() == before
    if target.server is not None:
        assert connections_to(target.server.port) == 0


@pytest.mark.parametrize("after", [0, 0.001, 0.005, 0.02])
async def test_cancelled_open_leaves_nothing(served: Target, after: float) -> None:
    """Cancelled at any moment of connecting: no thread, no connection left."""
    before = broker_threads()
    with trio.move_on_after(after):
        async with open_broker(served.config()):
            await trio.sleep_forever()  # pragma: no cover
    assert broker_threads() == before
    assert served.server is not None
    assert connections_to(served.server.port) == 0


async def test_unreachable_server_fails_open_with_the_reason(served: Target) -> None:
    before = broker_threads()
    url = f"{SCHEMES[served.kind]}://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable, match="(?i)refused|connect call failed") as caught:
        async with open_broker(BrokerConfig(url=url, connect_timeout=0.5)):
            pass  # pragma: no cover
    assert time.monotonic() - started < 3
    assert "within 0.5 s" in caught.value.message
    assert broker_threads() == before


async def test_server_restart(served: Target) -> None:
    """Stop the real server, start it again on the same port: everything works again."""
    server = served.server
    assert server is not None
    queue = None if served.kind == "redis" else "workers"
    async with (
        open_broker(served.config()) as broker,
        trio.open_nursery() as nursery,
        broker.subscribe("events.*") as events,
        broker.subscribe("jobs.>", queue=queue) as jobs,
        AsyncExitStack() as stack,
    ):
        await nursery.start(responder, broker, "svc.upper")
        await broker.publish("events.before", b"1")
        assert [m.subject for m in await take(events, 1)] == ["events.before"]

        await server.stop()
        with trio.fail_after(5):
            while broker.connected():
                await trio.sleep(0.01)
        with pytest.raises(BrokerUnavailable, match="not connected") as caught:
            await broker.publish("events.during", b"2")
        assert caught.value.status == 503
        with pytest.raises(BrokerUnavailable):
            await broker.request("svc.upper", b"x", timeout=1)
        # A subscription made while the server is down is made when it is back.
        late = await stack.enter_async_context(broker.subscribe("late.*"))

        await server.start()
        with trio.fail_after(10):
            await broker.wait_connected()
        assert broker.connected()
        await broker.publish("events.after", b"3")
        await broker.publish("jobs.a.b", b"4")
        await broker.publish("late.x", b"5")
        assert [m.subject for m in await take(events, 1)] == ["events.after"]
        assert [m.data for m in await take(jobs, 1)] == [b"4"]
        assert [m.data for m in await take(late, 1)] == [b"5"]
        reply = await broker.request("svc.upper", b"again", timeout=5)
        assert reply.data == b"AGAIN"
        nursery.cancel_scope.cancel()
