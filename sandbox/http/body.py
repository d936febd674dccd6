"""The one reader of ASGI request bodies: limits, deadlines, disconnects, whole or in chunks."""

from __future__ import annotations

import json
from typing import Any

import trio

from ..errors import BodyTooLarge, RequestError, RequestTimeout
from .clients import ClientLimits
from .types import Message, Receive


def timed_receive(receive: Receive, clients: ClientLimits) -> Receive:
    """``receive`` of one HTTP request, with its body's deadline.

    The server waits for the body at most ``clients.body_timeout`` seconds,
    plus a second per ``clients.body_min_rate`` bytes received: a client
    trickling its body cannot hold a connection (and, for a streamed body, a
    call) for longer. Only time spent waiting for the client counts: a body
    that waited in the server (its call queued for a slot) is not late for
    it. Once the body is complete, or late, ``receive`` is waited for
    without a deadline (``http.disconnect`` comes when it comes).

    Raises (from the returned function):
        RequestTimeout: the body is late.
    """
    waited = 0.0
    received = 0
    open_ = True

    async def receive_in_time() -> Message:
        nonlocal waited, received, open_
        if not open_:
            return await receive()
        allowed = clients.body_deadline(0.0, received)
        began = trio.current_time()
        with trio.move_on_after(max(0.0, allowed - waited)) as late:
            message = await receive()
        waited += trio.current_time() - began
        if late.cancelled_caught:
            open_ = False
            raise RequestTimeout(
                f"the request body came too slowly ({received} bytes in {waited:.1f} s; "
                f"a body has {clients.body_timeout:g} s plus a second per "
                f"{clients.body_min_rate} bytes): send it faster"
            )
        received += len(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            open_ = False
        return message

    return receive_in_time


class Body:
    """Reads the ASGI request body once; watches for the client going away.

    Its deadline, if any, is the ``receive`` it is given (see :func:`timed_receive`).
    """

    def __init__(self, receive: Receive, limit: int | None) -> None:
        self.receive = receive
        self.limit = limit
        self.received = 0
        self.done = False
        self.disconnected = trio.Event()
        self._finished = trio.Event()

    async def chunk(self) -> bytes:
        """The next body bytes; b"" at the end.

        Raises:
            BodyTooLarge: past the body limit.
            RequestTimeout: the body is late (see :func:`timed_receive`).
        """
        while not self.done:
            try:
                message = await self.receive()
            except RequestTimeout:
                self.done = True
                raise
            if message["type"] == "http.disconnect":
                self.done = True
                self.disconnected.set()
                self._finished.set()
                return b""
            data: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                self.done = True
            self.received += len(data)
            if self.limit is not None and self.received > self.limit:
                self.done = True
                raise BodyTooLarge(
                    f"the request body is over the limit of {self.limit} bytes", limit=self.limit
                )
            if data:
                return data
        return b""

    async def read_all(self) -> bytes:
        """The whole body (what came, if the client left before its end).

        Raises:
            BodyTooLarge: past the body limit.
        """
        parts = []
        while data := await self.chunk():
            parts.append(data)
        return b"".join(parts)

    async def wait_disconnect(self) -> None:
        """Wait until the body is read, then for ``http.disconnect``."""
        await self._finished.wait()
        while not self.disconnected.is_set():
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected.set()

    def mark_done(self) -> None:
        """The body has been read to its end (or the client left)."""
        self._finished.set()


async def read_body(receive: Receive, limit: int | None) -> bytes:
    """The whole request body.

    Raises:
        BodyTooLarge: over ``limit`` bytes.
        RequestTimeout: the body came too slowly (see :func:`timed_receive`).
        RequestError: the client went away before the body's end.
    """
    body = Body(receive, limit)
    data = await body.read_all()
    if body.disconnected.is_set():
        raise RequestError("the client went away before the end of the request body")
    return data


async def read_json(receive: Receive, limit: int | None) -> Any:
    """The whole request body decoded as JSON.

    Raises:
        BodyTooLarge, RequestTimeout, RequestError: as :func:`read_body`;
            RequestError also when the body is not JSON.
    """
    data = await read_body(receive, limit)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from exc
    except RecursionError:
        raise RequestError(
            "the body is JSON nested too deeply to read (arrays or objects hundreds of levels deep)"
        ) from None
