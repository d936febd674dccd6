"""NATS workers: action requests over a broker, in a queue group, Exo style.

    stack worker --broker nats://10.0.0.5:4222 --actions ./actions
    stack request --via nats://10.0.0.5:4222 < request.json

A worker subscribes to ``stack.requests`` in the queue group ``stack-workers``
(so each request reaches exactly one worker), runs each request through the
action pipeline, and replies. Requests and responses are gzipped JSON, as
Exo's NATS worker sends them (plain JSON is accepted too). On SIGTERM a
worker leaves the group first (``Subscription.drain``: no request is lost),
finishes the requests it holds, then exits.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from ..brokers import Broker, Message
from ..core.engine import Engine
from . import actions as act

SUBJECT = "stack.requests"
QUEUE = "stack-workers"
log = logging.getLogger("stack")


def encode(value: Any) -> bytes:
    """Gzipped JSON."""
    return gzip.compress(json.dumps(value).encode(), compresslevel=5)


def decode(data: bytes) -> Any:
    """Gzipped or plain JSON.

    Raises:
        ValueError: neither.
    """
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return json.loads(data)


async def serve_worker(engine: Engine, actions: act.ActionSet, broker: Broker, *,
                       variables: Mapping[str, str], stop: trio.Event,
                       subject: str = SUBJECT, queue: str = QUEUE,
                       task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                       ) -> int:  # fmt: skip
    """Answer requests until ``stop`` is set; returns how many were handled.

    Cancellation kills the calls in flight; ``stop`` lets them finish.
    """
    handled = 0

    async def answer(message: Message) -> None:
        nonlocal handled
        try:
            request = decode(message.data)
        except (ValueError, OSError) as exc:
            error = act.ActionError("invalid_json", "request", f"not gzipped JSON: {exc}")
            response: dict[str, Any] = act.failed(error)
        else:
            result = await act.run_request(engine, actions, request, variables)
            response = result.response
            if result.error is not None:
                log.warning("worker: %s ERROR %s: %s", result.action, result.error.code,
                            result.error.message)  # fmt: skip
        handled += 1
        if message.reply:
            await broker.publish(message.reply, encode(response))

    await serve_queue(broker, subject, queue, answer, stop=stop, what="requests",
                      task_status=task_status)  # fmt: skip
    return handled


async def serve_queue(broker: Broker, subject: str, queue: str,
                      answer: Callable[[Message], Awaitable[None]], *, stop: trio.Event,
                      what: str = "requests",
                      task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                      ) -> None:  # fmt: skip
    """Join ``queue`` on ``subject`` and ``answer`` each message in a task, until ``stop``.

    On ``stop`` the worker leaves the queue group first (a drain: nothing sent
    to it is lost), then waits for the messages in hand. Cancellation kills
    them.
    """
    async with trio.open_nursery() as calls:
        async with broker.subscribe(subject, queue=queue) as subscription:
            task_status.started()
            waiting = trio.CancelScope()

            async def leave_on_stop() -> None:
                with waiting:
                    await stop.wait()
                    log.warning("worker: leaving queue group %r, finishing the %s in hand",
                                queue, what)  # fmt: skip
                    await subscription.drain()

            calls.start_soon(leave_on_stop)
            async for message in subscription:
                calls.start_soon(answer, message)
            waiting.cancel()
        # Left the group; the nursery now waits for the messages in hand.


async def request_via(broker: Broker, request: Any, *, subject: str = SUBJECT,
                      timeout: float = 60.0) -> Any:  # fmt: skip  # noqa: ASYNC109
    """Send one request to the workers and return their response."""
    reply = await broker.request(subject, encode(request), timeout=timeout)
    return decode(reply.data)
