"""What only the in-process broker does: shared buses, exact round-robin, slow consumers."""

from __future__ import annotations

import pytest
import trio

from sandbox.brokers import BrokerUnavailable, Message, open_broker
from sandbox.brokers import _base as base


async def test_brokers_on_one_url_share_a_bus_and_other_buses_are_apart() -> None:
    async with (
        open_broker("memory://") as gateway,
        open_broker("memory://") as worker,
        open_broker("memory://other") as elsewhere,
        worker.subscribe("jobs.*") as jobs,
        elsewhere.subscribe("jobs.*") as elsewhere_jobs,
    ):
        await gateway.publish("jobs.1", b"x")
        assert await jobs.receive() == Message("jobs.1", b"x")
        with trio.move_on_after(0.05):
            await elsewhere_jobs.receive()
            pytest.fail("a message crossed to another bus")


async def test_queue_groups_take_turns_in_order() -> None:
    async with (
        open_broker("memory://") as broker,
        broker.subscribe("jobs.*", queue="w") as first,
        broker.subscribe("jobs.>", queue="w") as second,
    ):
        for i in range(6):
            await broker.publish(f"jobs.{i}", b"")
        got_first = [(await first.receive()).subject for _ in range(3)]
        got_second = [(await second.receive()).subject for _ in range(3)]
    assert got_first == ["jobs.0", "jobs.2", "jobs.4"]
    assert got_second == ["jobs.1", "jobs.3", "jobs.5"]


async def test_a_slow_subscriber_drops_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(base, "PENDING_LIMIT", 3)
    async with open_broker("memory://") as broker, broker.subscribe("s") as slow:
        for i in range(5):
            await broker.publish("s", str(i).encode())
        assert slow.dropped == 2
        assert [(await slow.receive()).data for _ in range(3)] == [b"0", b"1", b"2"]


async def test_a_closed_memory_broker_refuses_work() -> None:
    async with open_broker("memory://", name="internal") as broker:
        assert broker.name == "internal"
        assert broker.connected()
    assert not broker.connected()
    with pytest.raises(BrokerUnavailable, match="'internal' is closed"):
        await broker.publish("a", b"")
    with pytest.raises(BrokerUnavailable, match="closed"):
        async with broker.subscribe("a"):
            pass  # pragma: no cover


async def test_messages_are_read_only_and_checked() -> None:
    message = Message("a", bytearray(b"x"), None, {"k": "v"})  # type: ignore[arg-type]
    assert message.data == b"x"
    assert isinstance(message.data, bytes)
    with pytest.raises(TypeError):
        message.headers["k"] = "w"  # type: ignore[index]
    with pytest.raises(base.InvalidMessage, match="CR, LF"):
        Message("a", b"", None, {"k": "v\r\nX-Injected: 1"})
    with pytest.raises(base.InvalidMessage, match="header name"):
        Message("a", b"", None, {"bad name": "v"})
    with pytest.raises(base.InvalidMessage, match="must be bytes"):
        Message("a", "text", None, {})  # type: ignore[arg-type]
    async with open_broker("memory://") as broker:
        with pytest.raises(ValueError, match="positive number"):
            await broker.request("a", b"", timeout=0)
