"""The broker gateway over HTTP and WebSocket.

    POST /publish/SUBJECT          the body is published on SUBJECT            -> 202
    GET|POST /request/PATH         the HTTP request, serialised, is sent as a request on
                                   ``http.<method>.<path with / as .>``; the first reply
                                   becomes the HTTP response (504 on timeout)
    WS   /subscribe/SUBJECT        every message on SUBJECT (wildcards) as a frame:
                                   text when the data is UTF-8, binary otherwise
    WS   /ws                       JSON: {"op": "subscribe", "subject": "a.*"},
                                   {"op": "unsubscribe", "subject": "a.*"},
                                   {"op": "publish", "subject": "a.b", "data": ...}
                                   (a string is sent as is, any other JSON value as JSON);
                                   receives {"subject", "data", "reply"?}

While the broker is down every route answers 503 (WebSocket: close 1013),
never a hang.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import trio

from ..brokers import Broker, BrokerError, BrokerTimeout, BrokerUnavailable, subjects
from ..errors import BodyTooLarge
from .body import read_body
from .types import Message, Receive, Scope, Send, SendJson

MAX_BODY = 8 * 1024 * 1024
REQUEST_TIMEOUT = 30.0
log = logging.getLogger("stack")


def request_subject(method: str, path: str) -> str:
    """``GET /orders/42`` -> ``http.get.orders.42`` (segments made subject-safe)."""
    parts = [p for p in path.strip("/").split("/") if p]
    safe = ["".join(c if c.isalnum() or c in "-_" else "_" for c in p) or "_" for p in parts]
    return ".".join(["http", method.lower(), *safe])


def encode_request(method: str, path: str, query: str, headers: list[tuple[str, str]],
                   body: bytes) -> bytes:  # fmt: skip
    """The message a /request/PATH call becomes (JSON; the body in base64)."""
    return json.dumps({
        "method": method, "path": path, "query": query,
        "headers": {k: v for k, v in headers if k not in ("authorization", "cookie")},
        "body": base64.b64encode(body).decode(),
    }).encode()  # fmt: skip


def decode_reply(data: bytes) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """A reply to an HTTP request: ``{"status", "headers", "body"(base64)}``, or raw bytes (200)."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return 200, [(b"content-type", b"application/octet-stream")], data
    if isinstance(value, dict) and "status" in value and isinstance(value["status"], int):
        headers = [(str(k).lower().encode("latin-1"), str(v).encode("latin-1"))
                   for k, v in (value.get("headers") or {}).items()]  # fmt: skip
        body = value.get("body", "")
        raw = base64.b64decode(body) if value.get("base64", True) and body else str(body).encode()
        return value["status"], headers, raw
    return 200, [(b"content-type", b"application/json")], data


class Gateway:
    """Serves the gateway routes for one broker."""

    def __init__(self, broker: Broker, *, timeout: float = REQUEST_TIMEOUT) -> None:
        self.broker = broker
        self.timeout = timeout

    async def http(self, path: str, scope: Scope, receive: Receive, send: Send,
                   send_json: SendJson, request_id: str) -> None:  # fmt: skip
        """Serve an HTTP gateway route."""
        method = scope.get("method", "GET")
        if not self.broker.connected():
            message = f"broker {self.broker.name!r} is not connected; retry shortly"
            body503 = {"error": "broker_unavailable", "message": message}
            await send_json(send, 503, body503, request_id, [(b"retry-after", b"2")])
            return
        body = await _read(receive)
        if body is None:
            await send_json(send, 413, {"error": "body_too_large",
                                        "message": f"the body is over {MAX_BODY} bytes"},
                            request_id)  # fmt: skip
            return
        try:
            if path.startswith("/publish/"):
                if method != "POST":
                    await send_json(send, 405, {"error": "method_not_allowed",
                                                "message": "use POST"}, request_id,
                                    [(b"allow", b"POST")])  # fmt: skip
                    return
                subject = path[len("/publish/") :]
                subjects.validate_subject(subject)
                await self.broker.publish(subject, body)
                await send_json(send, 202, {"published": subject, "bytes": len(body)}, request_id)
                return
            if path.startswith("/request/"):
                rest = path[len("/request") :]
                subject = request_subject(method, rest)
                headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                           for k, v in scope.get("headers", [])]  # fmt: skip
                query = scope.get("query_string", b"").decode("latin-1")
                data = encode_request(method, rest, query, headers, body)
                reply = await self.broker.request(subject, data, timeout=self.timeout)
                status, reply_headers, reply_body = decode_reply(reply.data)
                reply_headers.append((b"x-request-id", request_id.encode()))
                await send({"type": "http.response.start", "status": status,
                            "headers": reply_headers})  # fmt: skip
                await send({"type": "http.response.body", "body": reply_body})
                return
        except BrokerTimeout as exc:
            await send_json(send, 504, {"error": "broker_timeout", "message": exc.message},
                            request_id)  # fmt: skip
            return
        except BrokerUnavailable as exc:
            await send_json(send, 503, {"error": "broker_unavailable", "message": exc.message},
                            request_id, [(b"retry-after", b"2")])  # fmt: skip
            return
        except BrokerError as exc:
            await send_json(send, 400, {"error": exc.code, "message": exc.message}, request_id)
            return
        await send_json(send, 404, {"error": "not_found", "message": "no such gateway route"},
                        request_id)  # fmt: skip

    async def websocket(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve ``/subscribe/SUBJECT`` or ``/ws``."""
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if not self.broker.connected():
            # Accepted first: a close before the handshake reaches the client as
            # a bare 403, without the code and reason that say "retry later".
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": 1013, "reason": "broker unavailable"})
            return
        if path.startswith("/subscribe/"):
            pattern = path[len("/subscribe/") :]
            try:
                subjects.validate_pattern(pattern)
            except BrokerError as exc:
                await send({"type": "websocket.close", "code": 1008, "reason": exc.message[:120]})
                return
            await send({"type": "websocket.accept"})
            await self._subscribe_one(pattern, receive, send)
        else:
            await send({"type": "websocket.accept"})
            await self._json_session(receive, send)

    async def _subscribe_one(self, pattern: str, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:

            async def until_closed() -> None:
                while (await receive())["type"] != "websocket.disconnect":
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(until_closed)
            try:
                async with self.broker.subscribe(pattern) as subscription:
                    async for item in subscription:
                        await send(_frame(item.data))
            except BrokerUnavailable:
                pass
            await send({"type": "websocket.close", "code": 1013, "reason": "broker closed"})
            nursery.cancel_scope.cancel()

    async def _json_session(self, receive: Receive, send: Send) -> None:
        scopes: dict[str, trio.CancelScope] = {}
        lock = trio.Lock()

        async def emit(value: dict[str, Any]) -> None:
            async with lock:
                await send({"type": "websocket.send", "text": json.dumps(value)})

        async def forward(pattern: str, scope: trio.CancelScope,
                          task_status: trio.TaskStatus[None]) -> None:  # fmt: skip
            with scope:
                async with self.broker.subscribe(pattern) as subscription:
                    task_status.started()
                    async for item in subscription:
                        out: dict[str, Any] = {"subject": item.subject, **_payload(item.data)}
                        if item.reply:
                            out["reply"] = item.reply
                        await emit(out)

        async with trio.open_nursery() as nursery:
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                try:
                    op = json.loads(message.get("text") or message.get("bytes") or b"")
                    kind = op["op"]
                    subject = str(op["subject"])
                except (ValueError, KeyError, TypeError, RecursionError):
                    await emit({"error": "bad_message",
                                "message": 'send {"op": "subscribe|unsubscribe|publish", '
                                           '"subject": ...}'})  # fmt: skip
                    continue
                try:
                    if kind == "subscribe" and subject not in scopes:
                        scopes[subject] = trio.CancelScope()
                        await nursery.start(forward, subject, scopes[subject])
                        await emit({"ok": "subscribe", "subject": subject})
                    elif kind == "unsubscribe" and subject in scopes:
                        scopes.pop(subject).cancel()
                        await emit({"ok": "unsubscribe", "subject": subject})
                    elif kind == "publish":
                        raw = _publish_data(op)
                        if raw is None:
                            await emit({"error": "bad_data",
                                        "message": "with base64: true, data must be a "
                                                   "base64 string"})  # fmt: skip
                            continue
                        await self.broker.publish(subject, raw)
                        await emit({"ok": "publish", "subject": subject})
                    else:
                        await emit({"error": "bad_op", "message": f"unknown op {kind!r}"})
                except BrokerError as exc:
                    scopes.pop(subject, None)
                    await emit({"error": exc.code, "message": exc.message})
            nursery.cancel_scope.cancel()


def _publish_data(op: dict[str, Any]) -> bytes | None:
    """The bytes a ``publish`` op sends: a string as UTF-8 (or decoded, with
    ``base64: true``), any other JSON value (object, array, number, true, null) as
    its JSON text, so subscribers get JSON, never a Python repr. None: bad base64."""
    data = op.get("data", "")
    if op.get("base64"):
        if not isinstance(data, str):
            return None
        try:
            return base64.b64decode(data, validate=True)
        except ValueError:
            return None
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def _frame(data: bytes) -> Message:
    try:
        return {"type": "websocket.send", "text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"type": "websocket.send", "bytes": data}


def _payload(data: bytes) -> dict[str, Any]:
    try:
        return {"data": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(data).decode(), "base64": True}


async def _read(receive: Receive) -> bytes | None:
    """The body; None when it is over MAX_BODY."""
    try:
        return await read_body(receive, MAX_BODY)
    except BodyTooLarge:
        return None
