"""One asyncio event loop in a thread of its own, driven from Trio.

The NATS, Redis and MQTT clients are asyncio libraries. Each broker runs its
client on a private asyncio loop in a dedicated thread, and the Trio side
talks to it through this bridge:

- ``await bridge.run(fn, *args)`` runs the coroutine ``fn(*args)`` on the loop
  and returns (or raises) its outcome in Trio. Cancelling the Trio caller
  cancels the asyncio task and waits until that task has finished (as trio's
  threads do with ``abandon_on_cancel=False``), so no work is left running
  behind a cancelled call.
- ``bridge.to_trio(fn, *args)``, called on the loop's thread, schedules the
  plain function ``fn(*args)`` in the Trio thread (``TrioToken.run_sync_soon``):
  received messages and connection changes travel this way, in order.

``open_bridge`` starts the thread and, on the way out, lets the broker close
its client, cancels whatever is left on the loop, shuts down async generators
and the default executor (aiomqtt connects in it), closes the loop and joins
the thread. That cleanup runs shielded, bounded by ``CLOSE_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple, Unpack

import outcome
import trio

from ._base import BrokerUnavailable

log = logging.getLogger("sandbox.brokers")

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

#: How long closing a broker may take before its thread is given up on.
CLOSE_TIMEOUT = 10.0
#: A cancelled asyncio task still running after this long is cancelled again.
RECANCEL_INTERVAL = 0.5


class AsyncioBridge:
    """A running asyncio loop in a thread, and the ways to reach it from Trio."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self._token = trio.lowlevel.current_trio_token()
        self._closed = False
        self._stopped = trio.Event()
        self._thread = threading.Thread(target=self._main, name=f"stack-broker-{name}", daemon=True)

    # The loop's thread ------------------------------------------------------------

    def _main(self) -> None:
        loop = self.loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._drain())
            finally:
                asyncio.set_event_loop(None)
                loop.close()
                self.to_trio(self._stopped.set)

    async def _drain(self) -> None:
        """Cancel every task still on the loop and wait for them; stop the executor."""
        current = asyncio.current_task()
        # Repeat: a task cancelled here may start others while it unwinds.
        while tasks := [task for task in asyncio.all_tasks() if task is not current]:
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception):
                    log.debug("broker %s: task ended with %r while closing", self.name, result)
        await self.loop.shutdown_asyncgens()
        await self.loop.shutdown_default_executor()

    def to_trio(self, fn: Callable[[Unpack[Ts]], object], *args: *Ts) -> None:
        """Run ``fn(*args)`` soon in the Trio thread (callable from any thread).

        ``fn`` must not raise: it runs as a Trio system callback.
        """
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(fn, *args)

    # The Trio side -------------------------------------------------------------------

    async def run(self, fn: Callable[[Unpack[Ts]], Coroutine[Any, Any, T]], *args: *Ts) -> T:
        """Run the coroutine ``fn(*args)`` on the loop and return its result in Trio.

        Cancellation: the asyncio task is cancelled and awaited (cancelled
        again every ``RECANCEL_INTERVAL`` while it runs on, in case a library
        swallowed the first one); if it still finishes with a result, that
        result is returned (the Trio cancellation then strikes at the next
        checkpoint).

        Raises:
            BrokerUnavailable: the loop is closed (the broker was closed).
            Exception: whatever the coroutine raised.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:
            raise BrokerUnavailable(f"broker {self.name!r} is closed", broker=self.name)
        trio_task = trio.lowlevel.current_task()
        state: dict[str, Any] = {}

        def finished(task: asyncio.Task[T]) -> None:
            # On the loop's thread: hand the outcome to Trio.
            self.to_trio(wake, task)

        def wake(task: asyncio.Task[T]) -> None:
            if task.cancelled() and "raise_cancel" in state:
                trio.lowlevel.reschedule(trio_task, outcome.capture(state["raise_cancel"]))
            elif task.cancelled():
                error = BrokerUnavailable(f"broker {self.name!r} closed during the call")
                trio.lowlevel.reschedule(trio_task, outcome.Error(error))
            elif (exc := task.exception()) is not None:
                trio.lowlevel.reschedule(trio_task, outcome.Error(exc))
            else:
                trio.lowlevel.reschedule(trio_task, outcome.Value(task.result()))

        def start() -> None:
            # On the loop's thread.
            task = self.loop.create_task(_call(fn, *args))
            state["task"] = task
            task.add_done_callback(finished)
            if "raise_cancel" in state:
                task.cancel()

        def cancel() -> None:
            task = state.get("task")
            if task is None:
                return  # start() has not run yet; it sees raise_cancel and cancels at once
            if not task.done():
                task.cancel()
                # On Python 3.11 asyncio.wait_for can swallow a cancellation that
                # races with its inner future (nats-py's connect loop is built on
                # it): repeat until the task really ends.
                self.loop.call_later(RECANCEL_INTERVAL, cancel)

        def abort(raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            state["raise_cancel"] = raise_cancel
            try:
                self.loop.call_soon_threadsafe(cancel)
            except RuntimeError:  # the loop is closed: the task ended already
                pass
            return trio.lowlevel.Abort.FAILED

        try:
            self.loop.call_soon_threadsafe(start)
        except RuntimeError:
            raise BrokerUnavailable(f"broker {self.name!r} is closed", broker=self.name) from None
        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    def start(self) -> None:
        self._thread.start()

    async def stop(self) -> None:
        """Stop the loop (cancelling what runs on it) and join the thread. Shielded."""
        if self._closed:
            return
        self._closed = True
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_TIMEOUT) as scope:
                self.loop.call_soon_threadsafe(self.loop.stop)
                await self._stopped.wait()
            if scope.cancelled_caught:
                log.error(
                    "broker %s: its asyncio thread did not stop within %.0f s; leaving it",
                    self.name,
                    CLOSE_TIMEOUT,
                )
                return
        # The thread has called its last callback and is returning.
        self._thread.join()


async def _call(fn: Callable[[Unpack[Ts]], Awaitable[T]], *args: *Ts) -> T:
    return await fn(*args)


@contextlib.asynccontextmanager
async def open_bridge(name: str) -> AsyncIterator[AsyncioBridge]:
    """An asyncio loop in a new thread, stopped and joined on exit (even when cancelled)."""
    bridge = AsyncioBridge(name)
    bridge.start()
    try:
        yield bridge
    finally:
        await bridge.stop()
