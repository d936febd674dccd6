"""The asyncio thread behind the NATS, Redis and MQTT brokers, driven from Trio."""

from __future__ import annotations

import asyncio
import threading

import pytest
import trio

from sandbox.brokers import BrokerUnavailable
from sandbox.brokers._bridge import open_bridge

from .conftest import broker_threads


async def test_results_and_errors_come_back_to_trio() -> None:
    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    async def fail() -> None:
        raise KeyError("nope")

    async with open_bridge("t") as bridge:
        assert await bridge.run(add, 2, 3) == 5
        with pytest.raises(KeyError, match="nope"):
            await bridge.run(fail)


async def test_cancelling_the_trio_side_cancels_and_awaits_the_asyncio_task() -> None:
    log: list[str] = []

    async def slow() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # cleanup that takes a while
            log.append("asyncio task cleaned up")
            raise

    async with open_bridge("t") as bridge:
        with trio.move_on_after(0.05) as scope:
            await bridge.run(slow)
        log.append("trio caller resumed")
    assert scope.cancelled_caught
    assert log == ["asyncio task cleaned up", "trio caller resumed"]


async def test_a_result_that_beats_the_cancellation_is_kept() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "finished anyway"
        return "unreachable"  # pragma: no cover

    results: list[str] = []
    async with open_bridge("t") as bridge:
        with trio.move_on_after(0.05) as scope:
            results.append(await bridge.run(stubborn))
            await trio.sleep(1)  # the pending cancellation strikes at this checkpoint
            results.append("not reached")  # pragma: no cover
    assert scope.cancelled_caught
    assert results == ["finished anyway"]


async def test_callbacks_reach_trio_in_order_and_the_thread_goes_away() -> None:
    before = broker_threads()
    seen: list[int] = []
    async with open_bridge("t") as bridge:
        assert {t.name for t in broker_threads() - before} == {"stack-broker-t"}
        assert threading.current_thread() is threading.main_thread()

        async def post() -> None:
            for i in range(100):
                bridge.to_trio(seen.append, i)

        await bridge.run(post)
    assert seen == list(range(100))
    assert broker_threads() == before
    with pytest.raises(BrokerUnavailable, match="closed"):
        await bridge.run(asyncio.sleep, 0)


async def test_work_left_on_the_loop_is_cancelled_at_close() -> None:
    cancelled = threading.Event()

    async def forever() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def spawn() -> None:
        asyncio.get_running_loop().create_task(forever())
        await asyncio.sleep(0)

    async with open_bridge("t") as bridge:
        await bridge.run(spawn)
    assert cancelled.is_set()
