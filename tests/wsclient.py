"""A small WebSocket client for the tests, on wsproto (sans-IO) and a Trio TCP stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)


class Closed(Exception):
    """The server closed the WebSocket."""


class WebSocket:
    def __init__(self, stream: trio.SocketStream, conn: WSConnection) -> None:
        self.stream = stream
        self.conn = conn
        self.close_code: int | None = None
        self._pending: list[str] = []
        self._text = ""

    async def send_json(self, value: Any) -> None:
        await self.stream.send_all(self.conn.send(TextMessage(data=json.dumps(value))))

    async def receive_json(self) -> Any:
        """The next message; raises Closed once the server closed."""
        while not self._pending:
            if self.close_code is not None:
                raise Closed(self.close_code)
            data = await self.stream.receive_some(65536)
            if not data:
                self.close_code = self.close_code or 1006
                raise Closed(self.close_code)
            self.conn.receive_data(data)
            for event in self.conn.events():
                if isinstance(event, TextMessage):
                    self._text += event.data
                    if event.message_finished:
                        self._pending.append(self._text)
                        self._text = ""
                elif isinstance(event, BytesMessage):
                    self._pending.append(bytes(event.data).decode())
                elif isinstance(event, Ping):
                    await self.stream.send_all(self.conn.send(event.response()))
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                    try:
                        await self.stream.send_all(self.conn.send(event.response()))
                    except trio.BrokenResourceError:
                        pass
        return json.loads(self._pending.pop(0))


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[WebSocket]:
    """Open ``ws://host:port/path``; the stream is closed on exit whatever happened."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
    async with stream:
        conn = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(conn.send(Request(host=parts.netloc, target=parts.path or "/")))
        while True:
            data = await stream.receive_some(65536)
            if not data:
                raise Closed(1006)
            conn.receive_data(data)
            events = list(conn.events())
            if any(isinstance(e, AcceptConnection) for e in events):
                break
            if any(isinstance(e, RejectConnection) for e in events):
                raise Closed(403)
        yield WebSocket(stream, conn)
