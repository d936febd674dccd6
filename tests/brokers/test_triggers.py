"""Message triggers on real brokers: topic, queue group, request/reply, error events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from sandbox.app import open_app
from sandbox.brokers import BrokerConfig, BrokerError, open_broker
from sandbox.core.engine import EngineConfig
from sandbox.errors import ConfigError
from sandbox.features.triggers import triggers_from

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "actions"


@asynccontextmanager
async def triggered(url: str, triggers: list[dict[str, object]],
                    services: Path | None = None) -> AsyncIterator[None]:  # fmt: skip
    brokers = {"bus": BrokerConfig(url=url, name="bus")}
    parsed = triggers_from(triggers, brokers)
    async with open_app(services, EngineConfig(isolate="none"), actions=[EXAMPLES],
                        brokers=brokers, triggers=parsed):  # fmt: skip
        yield


async def test_action_trigger_on_the_memory_broker():
    await action_trigger("memory://triggers")


async def test_action_trigger_on_nats(nats_server):
    await action_trigger(nats_server.url)


async def action_trigger(url: str) -> None:
    """Reply to a request, the result subject, and the declared success event."""
    triggers = [
        {"broker": "bus", "subject": "greet.*", "action": "hello-python",
         "result": {"subject": "greet.done"}},
    ]  # fmt: skip
    async with triggered(url, triggers), open_broker(BrokerConfig(url=url, name="c")) as client:
        async with client.subscribe("greet.done") as done, client.subscribe("greeted") as event:
            await trio.sleep(0.2)
            reply = await client.request("greet.ann", b'{"name": "Ann"}', timeout=30)
            assert json.loads(reply.data) == {"status": "OK", "output": {"sentence": "Hello, Ann!"}}
            await client.publish("greet.bo", b'{"name": "Bo"}')
            with trio.fail_after(30):
                result = await done.receive()
                success = await event.receive()  # the action declares events.success: greeted
            assert json.loads(result.data)["output"] == {"sentence": "Hello, Bo!"}
            assert json.loads(success.data)["status"] == "OK"


async def test_failures_publish_the_declared_error_event(nats_server):
    triggers = [{"broker": "bus", "subject": "greet.*", "action": "hello-python"}]
    async with triggered(nats_server.url, triggers), open_broker(nats_server.url) as client:
        async with client.subscribe("greeting-failed") as failed:
            await trio.sleep(0.2)
            await client.publish("greet.x", b'{"nome": "typo"}')
            with trio.fail_after(30):
                event = json.loads((await failed.receive()).data)
    assert event["subject"] == "greet.x"
    assert event["fatal"] is False
    assert event["result"]["error"]["stage"] == "input"


async def test_queue_group_trigger_and_service_trigger(nats_server, tmp_path):
    services = tmp_path / "svc"
    services.mkdir()
    (services / "upper.sh").write_text("tr a-z A-Z\n")
    triggers = [
        {"broker": "bus", "subject": "jobs", "queue": "g", "service": "upper"},
        {"broker": "bus", "subject": "jobs", "queue": "g", "service": "upper"},
    ]
    async with triggered(nats_server.url, triggers, services), open_broker(nats_server.url) as c:
        await trio.sleep(0.2)
        replies = [await c.request("jobs", f"job {n}".encode(), timeout=30) for n in range(6)]
    assert [r.data for r in replies] == [f"JOB {n}".encode() for n in range(6)]


def test_bad_trigger_config_is_named():
    brokers = {"bus": BrokerConfig(url="memory://", name="bus")}
    with pytest.raises(ConfigError, match=r"triggers\[0\]: broker 'nope'"):
        triggers_from([{"broker": "nope", "subject": "a", "action": "x"}], brokers)
    with pytest.raises(ConfigError, match="exactly one of action or service"):
        triggers_from([{"broker": "bus", "subject": "a"}], brokers)


async def test_trigger_keeps_working_after_a_broker_restart(nats_server):
    triggers = [{"broker": "bus", "subject": "greet.*", "action": "hello-python"}]
    async with triggered(nats_server.url, triggers):
        async with open_broker(nats_server.url) as client:
            await trio.sleep(0.2)
            before = await client.request("greet.a", b'{"name": "A"}', timeout=30)
        await nats_server.stop()
        await trio.sleep(0.5)
        await nats_server.start()
        async with open_broker(nats_server.url) as client:
            with trio.fail_after(30):
                while True:
                    try:
                        after = await client.request("greet.b", b'{"name": "B"}', timeout=2)
                        break
                    except BrokerError:
                        await trio.sleep(0.2)
    assert json.loads(before.data)["output"] == {"sentence": "Hello, A!"}
    assert json.loads(after.data)["output"] == {"sentence": "Hello, B!"}
