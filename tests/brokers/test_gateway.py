"""The broker gateway over real HTTP and WebSocket, on a real nats-server."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from sandbox.app import open_app
from sandbox.brokers import BrokerConfig, open_broker
from sandbox.core.engine import EngineConfig
from sandbox.http.server import bind, serve

from ..wsclient import Closed, connect


@asynccontextmanager
async def gateway(url: str) -> AsyncIterator[str]:
    config = BrokerConfig(url=url, name="public", reconnect_wait=0.2)
    async with open_app(None, EngineConfig(isolate="none"), gateway=config) as app:
        async with trio.open_nursery() as nursery:
            base = await nursery.start(serve, app, bind("127.0.0.1", 0))
            try:
                yield base
            finally:
                nursery.cancel_scope.cancel()


async def test_publish_request_and_subscribe(nats_server):
    async with gateway(nats_server.url) as base, open_broker(nats_server.url) as broker:
        async with broker.subscribe("orders.*") as orders, httpx.AsyncClient() as http:
            published = await http.post(f"{base}/publish/orders.new", content=b"pizza")
            message = await orders.receive()
            assert published.status_code == 202
            assert (message.subject, message.data) == ("orders.new", b"pizza")

        async def responder() -> None:
            async with broker.subscribe("http.*.hello.*") as requests:
                task_status_ready.set()
                async for request in requests:
                    data = json.loads(request.data)
                    body = (
                        f"{data['method']} {data['path']} {base64.b64decode(data['body']).decode()}"
                    )
                    reply = {"status": 201, "headers": {"x-from": "nats"},
                             "body": base64.b64encode(body.encode()).decode()}  # fmt: skip
                    await broker.publish(request.reply, json.dumps(reply).encode())

        task_status_ready = trio.Event()
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=30) as http:
            nursery.start_soon(responder)
            await task_status_ready.wait()
            answered = await http.post(f"{base}/request/hello/ann", content=b"hi")
            nursery.cancel_scope.cancel()
        assert answered.status_code == 201
        assert answered.headers["x-from"] == "nats"
        assert answered.text == "POST /hello/ann hi"

        async with httpx.AsyncClient(timeout=30) as http:
            nobody = await http.get(f"{base}/request/nobody/home")
        assert nobody.status_code in (503, 504)
        assert nobody.json()["error"] in ("no_responders", "broker_timeout")


async def test_websocket_subscribe_and_json_protocol(nats_server):
    async with gateway(nats_server.url) as base, open_broker(nats_server.url) as broker:
        ws_base = base.replace("http://", "ws://")
        async with connect(f"{ws_base}/ws") as ws:
            await ws.send_json({"op": "subscribe", "subject": "chat.>"})
            assert await ws.receive_json() == {"ok": "subscribe", "subject": "chat.>"}
            await broker.publish("chat.room1", b"hello")
            assert await ws.receive_json() == {"subject": "chat.room1", "data": "hello"}
            async with broker.subscribe("out.x") as out:
                await ws.send_json({"op": "publish", "subject": "out.x", "data": "from ws"})
                assert (await out.receive()).data == b"from ws"
            assert await ws.receive_json() == {"ok": "publish", "subject": "out.x"}
            await ws.send_json({"op": "bogus"})
            assert (await ws.receive_json())["error"] == "bad_message"


@pytest.mark.parametrize(
    ("data", "sent"),
    [
        ({"id": 9, "items": ["a", "é"]}, b'{"id":9,"items":["a","\xc3\xa9"]}'),
        ([1, {"x": None}, True], b'[1,{"x":null},true]'),
        (42, b"42"),
        (2.5, b"2.5"),
        (False, b"false"),
        (None, b"null"),
        ('{"already": "json text"}', b'{"already": "json text"}'),
        ("plain text", b"plain text"),
    ],
)
async def test_websocket_publish_sends_json_values_as_json(nats_server, data, sent):
    async with gateway(nats_server.url) as base, open_broker(nats_server.url) as broker:
        ws_base = base.replace("http://", "ws://")
        async with connect(f"{ws_base}/ws") as publisher, connect(f"{ws_base}/ws") as reader:
            await reader.send_json({"op": "subscribe", "subject": "orders.>"})
            assert await reader.receive_json() == {"ok": "subscribe", "subject": "orders.>"}
            async with broker.subscribe("orders.new") as out:
                await publisher.send_json({"op": "publish", "subject": "orders.new", "data": data})
                assert (await out.receive()).data == sent
            assert await publisher.receive_json() == {"ok": "publish", "subject": "orders.new"}
            got = await reader.receive_json()
    assert got == {"subject": "orders.new", "data": sent.decode()}
    if not isinstance(data, str):
        assert json.loads(got["data"]) == data


async def test_websocket_publish_base64_and_bad_base64(nats_server):
    async with gateway(nats_server.url) as base, open_broker(nats_server.url) as broker:
        ws_base = base.replace("http://", "ws://")
        async with connect(f"{ws_base}/ws") as ws, broker.subscribe("bin.x") as out:
            raw = bytes([0, 255, 1])
            await ws.send_json({"op": "publish", "subject": "bin.x", "base64": True,
                                "data": base64.b64encode(raw).decode()})  # fmt: skip
            assert (await out.receive()).data == raw
            assert await ws.receive_json() == {"ok": "publish", "subject": "bin.x"}
            await ws.send_json({"op": "publish", "subject": "bin.x", "base64": True,
                                "data": "not base64!"})  # fmt: skip
            refused = await ws.receive_json()
            # The session is still usable after a refused message.
            await ws.send_json({"op": "publish", "subject": "bin.x", "data": {"ok": 1}})
            assert (await out.receive()).data == b'{"ok":1}'
    assert refused["error"] == "bad_data"
    assert "base64" in refused["message"]


async def test_gateway_answers_503_while_the_broker_is_down(nats_server):
    async with gateway(nats_server.url) as base, httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(f"{base}/publish/a.b", content=b"1")).status_code == 202
        await nats_server.stop()
        with trio.fail_after(15):
            while True:
                down = await http.post(f"{base}/publish/a.b", content=b"1")
                if down.status_code == 503:
                    break
                await trio.sleep(0.1)
        assert down.json()["error"] == "broker_unavailable"
        assert down.headers["retry-after"] == "2"
        health = await http.get(f"{base}/healthz")
        assert health.status_code == 500
        assert health.json()["checks"]["broker:public"]["ok"] is False
        await nats_server.start()
        with trio.fail_after(20):
            while (await http.post(f"{base}/publish/a.b", content=b"1")).status_code != 202:
                await trio.sleep(0.2)
        assert (await http.get(f"{base}/healthz")).status_code == 200


async def test_websocket_closes_when_the_broker_is_down(nats_server):
    async with gateway(nats_server.url) as base, httpx.AsyncClient(timeout=30) as http:
        await nats_server.stop()
        # Wait for the condition, not for a deadline: how soon the client sees
        # the server gone depends on the machine's load.
        with trio.fail_after(120):
            while (await http.post(f"{base}/publish/a.b", content=b"x")).status_code != 503:
                await trio.sleep(0.1)
        ws_base = base.replace("http://", "ws://")
        with pytest.raises(Closed) as closed, trio.fail_after(60):
            async with connect(f"{ws_base}/subscribe/a.b") as ws:
                await ws.receive_json()
        assert closed.value.args[0] == 1013
