"""The ASGI side of submitted code: Piston's v2 routes over HTTP and WebSocket.

GET  /api/v2/runtimes
POST /api/v2/execute     (a JSON body, whatever its Content-Type: real clients send text/plain)
WS   /api/v2/connect
"""

from __future__ import annotations

import codecs
import itertools
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from ..core.builds import Build
from ..core.control import Event, Head
from ..core.engine import Engine
from ..core.process import CollectIO, Running
from ..errors import StackError
from ..features import jobs as ex
from .body import read_json
from .types import Message, Receive, Scope, Send

PREFIX = "/api/v2"
MAX_REQUEST = 64 * 1024 * 1024
log = logging.getLogger("stack")

# WebSocket close codes, as Piston's.
COMPLETED, ALREADY_INITIALIZED, INIT_TIMEOUT, NOTIFIED_ERROR = 4999, 4000, 4001, 4002
NOT_INITIALIZED, STDIN_ONLY, INVALID_SIGNAL = 4003, 4004, 4005
INIT_WAIT = 1.0


async def handle_http(engine: Engine, scope: Scope, receive: Receive, send: Send,
                      send_json: Callable[..., Awaitable[None]], request_id: str,
                      output: int) -> bool:  # fmt: skip
    """Serve a Piston HTTP route; False when the path is not one."""
    path = scope.get("path", "")
    method = scope.get("method", "GET")
    if path == f"{PREFIX}/runtimes":
        if method not in ("GET", "HEAD"):
            await send_json(
                send, 405, {"message": "use GET"}, request_id, [(b"allow", b"GET, HEAD")]
            )
            return True
        await send_json(send, 200, ex.runtimes(engine.registry), request_id)
        return True
    if path == f"{PREFIX}/execute":
        if method != "POST":
            await send_json(send, 405, {"message": "use POST"}, request_id, [(b"allow", b"POST")])
            return True
        body = await read_json(receive, MAX_REQUEST)
        principal = scope.get("stack.principal")
        ceiling = principal.limits if principal is not None else None
        job = ex.parse_job(body, engine, output=output, ceiling=ceiling)
        # Raw output, encoded piece by piece as the client takes it.
        await _send_pieces(send, ex.json_pieces(await ex.execute(engine, job, raw=True)),
                           request_id)  # fmt: skip
        return True
    if path.startswith(PREFIX + "/") or path == PREFIX:
        await send_json(send, 404, {"message": "Not Found"}, request_id)
        return True
    return False


async def _send_pieces(send: Send, pieces: Iterator[bytes], request_id: str) -> None:
    """A 200 JSON response made of ``pieces``: whole (with a Content-Length) if only one."""
    headers = [(b"content-type", b"application/json"), (b"x-request-id", request_id.encode())]
    first = next(pieces, b"")
    second = next(pieces, None)
    if second is None:
        headers.append((b"content-length", str(len(first)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": first, "more_body": False})
        return
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for piece in itertools.chain((first, second), pieces):
        await send({"type": "http.response.body", "body": piece, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class _WsIO:
    """A call's IO over a Piston WebSocket: stdin from ``data`` messages, output as ``data``."""

    def __init__(self, outgoing: trio.MemorySendChannel[dict[str, Any]],
                 stdin: trio.MemoryReceiveChannel[bytes]) -> None:  # fmt: skip
        self.outgoing = outgoing
        self.stdin = stdin
        self.running: Running | None = None
        self._out = codecs.getincrementaldecoder("utf-8")("replace")
        self._err = codecs.getincrementaldecoder("utf-8")("replace")

    async def receive_stdin(self) -> bytes:
        try:
            return await self.stdin.receive()
        except trio.EndOfChannel:
            return b""

    async def send_head(self, head: Head) -> None:
        pass

    async def send_body(self, data: bytes) -> None:
        text = self._out.decode(data)
        if text:
            await self.outgoing.send({"type": "data", "stream": "stdout", "data": text})

    async def end_body(self) -> None:
        pass

    def on_stderr(self, data: bytes) -> None:
        text = self._err.decode(data)
        if text:
            self.outgoing.send_nowait({"type": "data", "stream": "stderr", "data": text})

    def on_event(self, event: Event) -> None:
        pass

    def on_started(self, running: Running) -> None:
        self.running = running


async def handle_connect(engine: Engine, scope: Scope, receive: Receive, send: Send,
                         output: int) -> None:  # fmt: skip
    """``WS /api/v2/connect``: an interactive job, Piston's protocol.

    The client sends ``init`` (an execute request) within a second, then any
    number of ``{"type":"data","stream":"stdin","data":...}`` and
    ``{"type":"signal","signal":"SIGINT"}``; the server sends ``runtime``,
    ``stage``, ``data`` (stdout/stderr), ``exit`` per stage, and closes with
    4999 when the job is done.
    """
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})

    async def send_json(value: Any) -> None:
        await send({"type": "websocket.send", "text": json.dumps(value)})

    async def close(code: int, reason: str) -> None:
        await send({"type": "websocket.close", "code": code, "reason": reason})

    init: Any = None
    with trio.move_on_after(INIT_WAIT):
        while init is None:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            try:
                init = _decode(message)
            except ValueError as exc:
                await send_json({"type": "error", "message": str(exc)})
                await close(NOTIFIED_ERROR, "Notified Error")
                return
            if init.get("type") != "init":
                await close(NOT_INITIALIZED, "Not yet initialized")
                return
    if init is None:
        await close(INIT_TIMEOUT, "Initialization Timeout")
        return
    principal = scope.get("stack.principal")
    try:
        ceiling = principal.limits if principal is not None else None
        job = ex.parse_job(init, engine, output=output, ceiling=ceiling)
    except StackError as exc:
        await send_json({"type": "error", "message": exc.message})
        await close(NOTIFIED_ERROR, "Notified Error")
        return
    await send_json({"type": "runtime", "language": job.language.name, "version": job.version})
    outgoing, outgoing_rx = trio.open_memory_channel[dict[str, Any]](math.inf)
    stdin_tx, stdin_rx = trio.open_memory_channel[bytes](16)
    io = _WsIO(outgoing, stdin_rx)
    closing: list[tuple[int, str]] = []

    async def pump_out() -> None:
        async for item in outgoing_rx:
            await send_json(item)

    reading = trio.CancelScope()

    async def read_client(job_scope: trio.CancelScope) -> None:
        with reading:
            await _read_client(job_scope)

    async def _read_client(job_scope: trio.CancelScope) -> None:
        async with stdin_tx:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    job_scope.cancel()
                    return
                try:
                    msg = _decode(message)
                except ValueError as exc:
                    await outgoing.send({"type": "error", "message": str(exc)})
                    continue
                kind = msg.get("type")
                if kind == "init":
                    closing.append((ALREADY_INITIALIZED, "Already Initialized"))
                    job_scope.cancel()
                    return
                if kind == "data":
                    if msg.get("stream") != "stdin" or not isinstance(msg.get("data"), str):
                        closing.append((STDIN_ONLY, "Can only write to stdin"))
                        job_scope.cancel()
                        return
                    await stdin_tx.send(msg["data"].encode())
                elif kind == "signal":
                    try:
                        number = ex.parse_signal(msg.get("signal"))
                    except ValueError:
                        closing.append((INVALID_SIGNAL, "Invalid signal"))
                        job_scope.cancel()
                        return
                    if io.running is not None:
                        await trio.to_thread.run_sync(io.running.signal, number)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(pump_out)
        with trio.CancelScope() as job_scope:
            nursery.start_soon(read_client, job_scope)
            await _run_job(engine, job, io, outgoing)
        reading.cancel()
        # Not cancelled: pump_out sends everything queued (the exit last), then ends.
        await outgoing.aclose()
    code, reason = closing[0] if closing else (COMPLETED, "Job Completed")
    await close(code, reason)


async def _run_job(engine: Engine, job: ex.Job, io: _WsIO,
                   outgoing: trio.MemorySendChannel[dict[str, Any]]) -> None:  # fmt: skip
    async def stage(name: str) -> None:
        await outgoing.send({"type": "stage", "stage": name})

    async def compiled(build: Build) -> None:
        for stream, data in (("stdout", build.stdout), ("stderr", build.stderr)):
            if data:
                text = data.decode("utf-8", "replace")
                await outgoing.send({"type": "data", "stream": stream, "data": text})
        await outgoing.send(_exit("compile", ex.stage_result(build.outcome, build)))

    done = await ex.run_job(engine, job, io, on_stage=stage, on_compiled=compiled)
    if done.outcome is not None:
        await outgoing.send(_exit("run", ex.stage_result(done.outcome, CollectIO())))


def _exit(stage: str, result: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "exit",
        "stage": stage,
        "code": result["code"],
        "signal": result["signal"],
        "status": result["status"],
        "message": result["message"],
        "error": result["message"] if result["status"] else None,
    }


def _decode(message: Message) -> dict[str, Any]:
    raw = message.get("text")
    if raw is None:
        raw = (message.get("bytes") or b"").decode("utf-8", "replace")
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"message is not JSON: {exc}") from exc
    except RecursionError:
        raise ValueError("message is JSON nested too deeply to read") from None
    if not isinstance(value, dict):
        raise ValueError("message must be a JSON object")
    return value
