"""The ASGI side of actions.

GET  /actions            the actions (name, language, description, tags)
GET  /actions/NAME       one action: manifest, schemas, help, an example request
POST /actions/NAME       body: the input; answers Exo's response
POST /request            body: a full request {"action", "input", "mapping"}
GET  /openapi.json       OpenAPI 3.1 of these routes, from the manifests' schemas
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from ..core.engine import Engine
from ..errors import BodyTooLarge, RequestError
from ..features import actions as act
from ..features.reporting import Reporter
from .body import read_body
from .types import Receive, Scope, Send, SendJson

MAX_REQUEST = 16 * 1024 * 1024
log = logging.getLogger("stack")


class ActionRoutes:
    """Serves the action routes of one server."""

    def __init__(self, engine: Engine, actions: act.ActionSet, variables: Mapping[str, str],
                 reporter: Reporter) -> None:  # fmt: skip
        self.engine = engine
        self.actions = actions
        self.variables = variables
        self.reporter = reporter

    async def handle(self, path: str, scope: Scope, receive: Receive, send: Send,
                     send_json: SendJson, request_id: str) -> bool:  # fmt: skip
        """Serve ``path`` if it is an action route; False otherwise."""
        method = scope.get("method", "GET")

        async def not_allowed(*allowed: str) -> bool:
            body = {"error": "method_not_allowed", "message": f"use {' or '.join(allowed)}"}
            allow = (b"allow", ", ".join(allowed).encode())
            await send_json(send, 405, body, request_id, [allow])
            return True

        if path == "/openapi.json":
            if method not in ("GET", "HEAD"):
                return await not_allowed("GET", "HEAD")
            await send_json(send, 200, act.openapi(self.actions), request_id)
            return True
        if path in ("/actions", "/actions/"):
            if method not in ("GET", "HEAD"):
                return await not_allowed("GET", "HEAD")
            listing = {"actions": [a.summary() for a in self.actions],
                       "problems": [str(p) for p in self.actions.problems]}  # fmt: skip
            await send_json(send, 200, listing, request_id)
            return True
        if path == "/request":
            if method != "POST":
                return await not_allowed("POST")
            body = await _read(receive)
            await self._run(_decode(body), send, send_json, request_id)
            return True
        if path.startswith("/actions/"):
            name = path[len("/actions/") :]
            if method in ("GET", "HEAD"):
                try:
                    action = self.actions.get(name)
                except act.ActionError as exc:
                    await send_json(send, exc.status, act.failed(exc), request_id)
                    return True
                await send_json(send, 200, action.details(), request_id)
                return True
            if method != "POST":
                return await not_allowed("GET", "HEAD", "POST")
            body = await _read(receive)
            value = _decode(body)
            if not isinstance(value, act.ActionError):
                value = {"action": name, "input": {} if value is None else value}
            await self._run(value, send, send_json, request_id)
            return True
        return False

    async def _run(self, request: Any, send: Send, send_json: SendJson, request_id: str) -> None:
        if isinstance(request, act.ActionError):
            await send_json(send, request.status, act.failed(request), request_id)
            return
        result = await act.run_request(self.engine, self.actions, request, self.variables)
        await send_json(send, result.status, result.response, request_id)
        self.report(result, request_id)

    def report(self, result: act.Result, request_id: str) -> None:
        """Log the result and send the reporting webhook."""
        if result.error is None:
            log.info("[%s] action %s OK in %.3fs", request_id, result.action, result.duration)
            self.reporter.report("success", action=result.action, id=request_id,
                                 duration=f"{result.duration:.3f}")  # fmt: skip
        else:
            error = result.error
            log.warning("[%s] action %s ERROR %s at %s: %s", request_id, result.action,
                        error.code, error.stage, error.message)  # fmt: skip
            self.reporter.report("error", action=result.action, id=request_id, code=error.code,
                                 stage=error.stage, message=error.message[:500],
                                 duration=f"{result.duration:.3f}")  # fmt: skip


async def _read(receive: Receive) -> bytes | act.ActionError:
    try:
        return await read_body(receive, MAX_REQUEST)
    except BodyTooLarge:
        return act.ActionError("body_too_large", "request",
                               f"the request body is over {MAX_REQUEST} bytes")  # fmt: skip
    except RequestError as exc:
        return act.ActionError("invalid_request", "request", exc.message)


def _decode(body: bytes | act.ActionError) -> Any:
    if isinstance(body, act.ActionError):
        return body
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        return act.ActionError("invalid_json", "request", f"the body is not valid JSON: {exc}")
    except RecursionError:
        return act.ActionError("invalid_json", "request", "the body's JSON is nested too deeply")
