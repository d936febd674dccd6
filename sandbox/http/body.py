"""The one reader of ASGI request bodies: limits, disconnects, the whole body or chunks."""

from __future__ import annotations

import json
from typing import Any

import trio

from ..errors import BodyTooLarge, RequestError, RequestTimeout
from .clients import ClientLimits
from .types import Receive

DEFAULT_CLIENTS = ClientLimits()


class Body:
    """Reads the ASGI request body once; watches for the client going away.

    The body has ``clients.body_timeout`` seconds, plus a second per
    ``clients.body_min_rate`` bytes received, from when the request's head
    was read: a client trickling its body cannot hold a connection (and,
    for a streamed body, a call) for longer.
    """

    def __init__(self, receive: Receive, limit: int | None,
                 clients: ClientLimits | None = None) -> None:  # fmt: skip
        self.receive = receive
        self.limit = limit
        self.clients = clients or DEFAULT_CLIENTS
        self.started = trio.current_time()
        self.received = 0
        self.done = False
        self.disconnected = trio.Event()
        self._finished = trio.Event()

    async def chunk(self) -> bytes:
        """The next body bytes; b"" at the end.

        Raises:
            BodyTooLarge: past the body limit.
            RequestTimeout: the body is late (see the class).
        """
        while not self.done:
            deadline = self.clients.body_deadline(self.started, self.received)
            with trio.move_on_at(deadline) as waited:
                message = await self.receive()
            if waited.cancelled_caught:
                self.done = True
                raise RequestTimeout(
                    f"the request body came too slowly ({self.received} bytes in "
                    f"{trio.current_time() - self.started:.1f} s; a body has "
                    f"{self.clients.body_timeout:g} s plus a second per "
                    f"{self.clients.body_min_rate} bytes): send it faster"
                )
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


async def read_body(receive: Receive, limit: int | None,
                    clients: ClientLimits | None = None) -> bytes:  # fmt: skip
    """The whole request body.

    Raises:
        BodyTooLarge: over ``limit`` bytes.
        RequestTimeout: the body came too slowly (see :class:`Body`).
        RequestError: the client went away before the body's end.
    """
    body = Body(receive, limit, clients)
    data = await body.read_all()
    if body.disconnected.is_set():
        raise RequestError("the client went away before the end of the request body")
    return data


async def read_json(receive: Receive, limit: int | None,
                    clients: ClientLimits | None = None) -> Any:  # fmt: skip
    """The whole request body decoded as JSON.

    Raises:
        BodyTooLarge, RequestTimeout, RequestError: as :func:`read_body`;
            RequestError also when the body is not JSON.
    """
    data = await read_body(receive, limit, clients)
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(f"the body is not valid JSON: {exc}") from exc
