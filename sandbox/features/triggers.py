"""Message triggers: run an action or a service for each message on a broker subject.

    triggers:
      - broker: internal            # a name from brokers:
        subject: orders.*           # a pattern
        queue: order-workers        # optional: a queue group (one member gets each message)
        action: process-order       # or  service: resize  (a script of --services)
        result: {broker: public, subject: orders.done}   # optional: where results go
                                                         # when the message has no reply subject

The message body is the action's input (JSON) or the service's stdin. The
result (Exo's response JSON, or the service's stdout) is published to the
message's reply subject (request/reply), else to ``result``. A failed call
publishes an error event: the action's own event names when it declares them
(``events: {success, failure, fatal}``; ``fatal`` when the process crashed),
else ``stack.errors``; a declared ``success`` event gets the response too.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from ..brokers import Broker, BrokerError, Message
from ..core.engine import Engine
from ..core.invocation import Invocation
from ..core.process import CollectIO
from ..errors import ConfigError
from . import actions as act
from .services import Services

ERRORS = "stack.errors"
log = logging.getLogger("stack")


@dataclass(frozen=True)
class Trigger:
    """One binding of a subject to an action or a service."""

    broker: str
    subject: str
    queue: str | None = None
    action: str | None = None
    service: str | None = None
    result_broker: str | None = None
    result_subject: str | None = None


def triggers_from(data: Any, brokers: Mapping[str, Any]) -> list[Trigger]:
    """Parse the ``triggers`` section.

    Raises:
        ConfigError: naming the trigger and the bad key.
    """
    if data is None:
        return []
    if not isinstance(data, list):
        raise ConfigError("triggers: expected a list")
    found = []
    for index, entry in enumerate(data):
        where = f"triggers[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - {"broker", "subject", "queue", "action", "service", "result"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        if entry.get("broker") not in brokers:
            known = ", ".join(sorted(brokers)) or "none"
            raise ConfigError(f"{where}: broker {entry.get('broker')!r} is not one of: {known}")
        if not isinstance(entry.get("subject"), str):
            raise ConfigError(f"{where}: subject is required")
        if bool(entry.get("action")) == bool(entry.get("service")):
            raise ConfigError(f"{where}: give exactly one of action or service")
        result = entry.get("result") or {}
        if result and (not isinstance(result, dict) or "subject" not in result):
            raise ConfigError(f"{where}: result needs a subject (and optionally a broker)")
        if result.get("broker", entry["broker"]) not in brokers:
            raise ConfigError(f"{where}: result broker {result.get('broker')!r} is unknown")
        found.append(Trigger(
            broker=entry["broker"], subject=entry["subject"], queue=entry.get("queue"),
            action=entry.get("action"), service=entry.get("service"),
            result_broker=result.get("broker", entry["broker"]) if result else None,
            result_subject=result.get("subject"),
        ))  # fmt: skip
    return found


async def serve_trigger(trigger: Trigger, brokers: Mapping[str, Broker], engine: Engine,
                        actions: act.ActionSet | None, services: Services | None,
                        variables: Mapping[str, str], *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                        ) -> None:  # fmt: skip
    """Run ``trigger`` until cancelled: one call per message, concurrently."""
    broker = brokers[trigger.broker]
    if trigger.action is not None and (actions is None or not _has(actions, trigger.action)):
        raise ConfigError(f"trigger on {trigger.subject!r}: no action {trigger.action!r}")
    if trigger.service is not None:
        if services is None:
            raise ConfigError(f"trigger on {trigger.subject!r}: no services are served")
        services.route("/" + trigger.service)  # raises NotFound naming the services
    async with trio.open_nursery() as calls:
        async with broker.subscribe(trigger.subject, queue=trigger.queue) as messages:
            task_status.started()
            async for message in messages:
                calls.start_soon(_handle, trigger, message, brokers, engine, actions, services,
                                 variables)  # fmt: skip


def _has(actions: act.ActionSet, name: str) -> bool:
    try:
        actions.get(name)
    except act.ActionError:
        return False
    return True


async def _handle(trigger: Trigger, message: Message, brokers: Mapping[str, Broker],
                  engine: Engine, actions: act.ActionSet | None, services: Services | None,
                  variables: Mapping[str, str]) -> None:  # fmt: skip
    broker = brokers[trigger.broker]
    out = brokers[trigger.result_broker] if trigger.result_broker else broker
    events: Mapping[str, str] = {}
    ok = True
    fatal = False
    if trigger.action is not None:
        assert actions is not None
        try:
            value = json.loads(message.data) if message.data.strip() else {}
        except ValueError:
            value = {"data": message.data.decode("utf-8", "replace")}
        result = await act.run_request(engine, actions, {"action": trigger.action, "input": value},
                                       variables)  # fmt: skip
        body = json.dumps(result.response).encode()
        ok, fatal = result.error is None, result.fatal
        events = actions.get(trigger.action).events
        summary = result.response
    else:
        assert services is not None
        assert trigger.service is not None
        service = services.route("/" + trigger.service)[0]
        collect = CollectIO(message.data)
        hook = {"params": {}, "req": {"subject": message.subject}, "env": dict(service.env)}
        async with engine.open_call(engine.limits_for(service.limits)) as call:
            outcome = await call.run(
                Invocation(service.language, service.staged, hook=hook, env=service.env,
                           code_dir=service.code_dir, door="trigger"), collect)  # fmt: skip
        ok, fatal = outcome.ok, outcome.reason in ("signal", "spawn")
        body = collect.stdout
        summary = {"status": "OK" if ok else "ERROR", "reason": outcome.reason,
                   "message": outcome.message}  # fmt: skip
    try:
        if message.reply:
            await broker.publish(message.reply, body)
        elif trigger.result_subject and ok:
            await out.publish(trigger.result_subject, body)
        if ok and events.get("success"):
            await out.publish(events["success"], body)
        if not ok:
            subject = events.get("fatal" if fatal else "failure") or ERRORS
            event = {"trigger": trigger.subject, "subject": message.subject,
                     "fatal": fatal, "result": summary}  # fmt: skip
            await out.publish(subject, json.dumps(event).encode())
    except BrokerError as exc:
        log.warning("trigger %s: could not publish the result: %s", trigger.subject, exc.message)


__all__ = ["ERRORS", "Trigger", "serve_trigger", "triggers_from"]


def describe(triggers: Sequence[Trigger]) -> list[str]:
    """One line per trigger, for the start-up message."""
    return [f"{t.broker}:{t.subject}{' (' + t.queue + ')' if t.queue else ''} -> "
            f"{'action ' + t.action if t.action else 'service ' + str(t.service)}"
            for t in triggers]  # fmt: skip
