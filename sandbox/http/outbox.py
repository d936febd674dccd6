"""A response on its way to a client that may read slowly: bounded, never holding the call.

An ASGI server's ``send`` waits until the client takes the bytes (Hypercorn's
trio worker even shields that wait from cancellation). Awaited in the call's
own task, a client that never reads would stop the call there, past its wall
timeout. An :class:`Outbox` puts a bounded buffer and a task between the two:
the call's output waits (cancellably) while ``limit`` bytes are held, and
the task hands them to the server as the client reads. The call ends on its
own terms (its wall timeout included); the client gets what is held, or, when
it takes nothing for the server's ``send_timeout``, a closed connection.
"""

from __future__ import annotations

from collections import deque

import trio

from .types import Message, Send


class Outbox:
    """ASGI messages for one response, at most ``limit`` body bytes held.

    Args:
        nursery: where the delivering task runs; it should outlive the call
            (the call's slot is then free while the client reads).
        send: the server's ``send``.
        limit: body bytes held before :meth:`send` waits.
    """

    def __init__(self, nursery: trio.Nursery, send: Send, limit: int) -> None:
        self._nursery = nursery
        self._send = send
        self.limit = limit
        self._queue: deque[Message] = deque()
        self.held = 0
        self._room = trio.lowlevel.ParkingLot()
        self._work = trio.lowlevel.ParkingLot()
        self._delivering = False
        self._closed = False

    async def send(self, message: Message) -> None:
        """Queue ``message``; waits while ``limit`` body bytes are held (cancellable)."""
        if not self._delivering:
            self._delivering = True
            self._nursery.start_soon(self._deliver)
        while self.held >= self.limit and not self._closed:
            await self._room.park()
        self._put(message)
        await trio.lowlevel.checkpoint()

    async def send_after(self, message: Message) -> None:
        """Send ``message`` after the call: straight to the server when nothing was queued.

        Otherwise it is queued without waiting for room: the call is over and
        its last messages are small (the end of the body), so the caller
        never waits for the client, and the call's slot is not held for it.
        """
        if self._delivering:
            self._put(message)
            await trio.lowlevel.checkpoint()
        else:
            await self._send(message)

    def _put(self, message: Message) -> None:
        if self._closed:
            return  # aborted: the response is incomplete anyway
        self._queue.append(message)
        self.held += len(message.get("body", b""))
        self._work.unpark_all()

    def close(self) -> None:
        """No more messages: the task delivers what is held, then ends."""
        self._closed = True
        self._work.unpark_all()
        self._room.unpark_all()

    def abort(self) -> None:
        """Drop what is held (the response is cut anyway); the task ends."""
        self._queue.clear()
        self.held = 0
        self.close()

    async def _deliver(self) -> None:
        while True:
            if not self._queue:
                if self._closed:
                    return
                await self._work.park()
                continue
            message = self._queue.popleft()
            # Blocks while the client does not read (up to the server's send_timeout).
            await self._send(message)
            self.held = max(0, self.held - len(message.get("body", b"")))
            if self.held < self.limit:
                self._room.unpark_all()


__all__ = ["Outbox"]
