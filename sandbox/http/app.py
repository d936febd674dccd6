"""The HTTP front door: an ASGI application that serves scripts.

It runs on any ASGI server that runs Trio (``stack`` uses Hypercorn's trio
worker). Made with :func:`create_app`, it opens its own engine in the ASGI
lifespan; :class:`StackApp` takes an engine you already opened.

About 760 lines: :class:`StackApp` and ``_HttpIO`` (the held head, the
streaming body, the outcome as a response) are the services' front door;
the other doors are their own modules (piston, judge0, actions, gateway).
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from ..core.control import Event, Head
from ..core.engine import Call, Engine
from ..core.invocation import Invocation
from ..core.limits import Limits
from ..core.process import Outcome, Running, Usage, signal_name
from ..errors import BodyTooLarge, CompileError, NotFound, RequestError, RequestTimeout, StackError
from ..features import auth
from ..features.auth import Authenticator, Principal
from ..features.health import Health
from ..features.jobs import DEFAULT_OUTPUT
from ..features.metrics import CONTENT_TYPE as METRICS_TYPE
from ..features.metrics import Metrics
from ..features.paths import UserPaths
from ..features.services import Service, Services
from . import piston
from . import request as hooklib
from .actions import ActionRoutes
from .body import Body, timed_receive
from .clients import ClientLimits
from .gateway import Gateway
from .judge0 import Judge0
from .outbox import Outbox
from .routes import route_of
from .types import Message, Receive, Scope, Send

SOFTWARE = "stack/0.1"
HOLD = 0.02
HOLD_BYTES = 64 * 1024
access_log = logging.getLogger("stack.access")
script_log = logging.getLogger("stack.script")
log = logging.getLogger("stack")

_STATUS_OF_REASON = {"timeout": 504}


def new_request_id() -> str:
    """A short random request id."""
    return secrets.token_hex(8)


def usage_header(usage: Usage) -> bytes:
    """The ``X-Stack-Usage`` header value of a call."""
    return (
        f"wall={usage.wall:.6f}; cpu={usage.cpu:.6f}; memory={usage.memory}; "
        f"in={usage.bytes_in}; out={usage.bytes_out}"
    ).encode()


class _HttpIO:
    """The core's CallIO for one HTTP request.

    The head is held until the call ends or for HOLD seconds after its first
    output, whichever comes first: a short call's response then goes out
    whole, with its X-Stack-Usage and a Content-Length. While the call runs,
    what it sends goes through ``outbox``, so that a client that reads slowly
    makes its output wait (a bounded buffer) but never holds the call itself.
    """

    def __init__(self, outbox: Outbox, body: Body, request_id: str, stream: bool,
                 method: str, paths: UserPaths | None = None) -> None:  # fmt: skip
        self._paths = paths
        self._outbox = outbox
        self.running = True
        self._body = body
        self._request_id = request_id
        self._stream = stream
        self._method = method
        self._lock = trio.Lock()
        self._flush_at = math.inf
        self._waiting: trio.CancelScope | None = None
        self._watching = trio.CancelScope()
        self.head: Head | None = None
        self.started = False
        self.ended = False
        self.body_done = False
        self._buffer: list[bytes] = []
        self._buffered = 0
        self.stdin_error: StackError | None = None

    async def receive_stdin(self) -> bytes:
        if not self._stream:
            return b""
        try:
            data = await self._body.chunk()
        except RequestError as exc:
            self.stdin_error = exc
            raise
        if not data:
            self._body.mark_done()
        return data

    async def send_head(self, head: Head) -> None:
        self.head = head
        self._flush_at = trio.current_time() + HOLD
        if self._waiting is not None:
            self._waiting.deadline = self._flush_at

    async def _send(self, message: Message) -> None:
        if self.running:
            await self._outbox.send(message)
        else:
            await self._outbox.send_after(message)

    async def send_body(self, data: bytes) -> None:
        async with self._lock:
            if self.started:
                await self._send({"type": "http.response.body", "body": data, "more_body": True})
                return
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered >= HOLD_BYTES:
                await self._start(None)

    async def end_body(self) -> None:
        # The script sent ``end`` on fd 3: the response is complete now, while
        # its process may still be exiting (so it goes without X-Stack-Usage).
        async with self._lock:
            self.body_done = True
            if not self.started and self.head is not None:
                if self._whole(self.head):
                    await self._send_whole(None)  # one message, with a Content-Length
                    return
                await self._start(None)
            if self.started and not self.ended:
                self.ended = True
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def on_stderr(self, data: bytes) -> None:
        pass  # stderr is the log: its lines arrive as events

    def on_started(self, running: Running) -> None:
        pass

    def on_event(self, event: Event) -> None:
        if event.kind in ("stderr", "log"):
            text = self._paths.text(event.text) if self._paths is not None else event.text
            script_log.info("[%s] %s", self._request_id, text)
        elif event.kind == "invalid":
            script_log.warning("[%s] control: %s", self._request_id, event.text)

    async def watch(self, call: trio.CancelScope) -> None:
        """The request's one helper task, beside its call.

        Sends the held head when the hold is over, and cancels ``call`` when
        the client goes away (known once the body is read). One task for
        both: a task per request less, and no timer when the call ends
        within its hold.
        """
        with self._watching:
            while not self._body.disconnected.is_set():
                with trio.CancelScope(deadline=self._flush_at) as self._waiting:
                    await self._body.wait_disconnect()
                self._waiting = None
                if trio.current_time() >= self._flush_at:
                    self._flush_at = math.inf
                    await self._flush()
            if not self.ended:
                # A client gone after the whole response (the script sent
                # ``end``) is not a client gone: the call exits by itself, under
                # its limits, and its outcome and usage are logged as any other's.
                call.cancel()

    def stop_watching(self) -> None:
        """The response is finished (or given up): end :meth:`watch`."""
        self._watching.cancel()

    async def _flush(self) -> None:
        async with self._lock:
            if not self.started:
                await self._start(None)
                if self.body_done and not self.ended:
                    self.ended = True
                    await self._send(
                        {"type": "http.response.body", "body": b"", "more_body": False}
                    )

    async def _start(self, outcome: Outcome | None) -> None:
        assert self.head is not None
        headers = _head_headers(self.head, self._request_id, outcome)
        self.started = True
        await self._send(
            {"type": "http.response.start", "status": self.head.status, "headers": headers}
        )
        body, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        if body:
            await self._send({"type": "http.response.body", "body": body, "more_body": True})

    async def finish(self, outcome: Outcome) -> None:
        """The call is over: send what is still held, with the usage.

        A body cut by a failure is not completed: returning without the last
        body message makes the server abort the response, so the client sees
        it is incomplete instead of taking a cut body for a whole one.
        """
        async with self._lock:
            if not self.started:
                assert self.head is not None
                if outcome.ok and self._whole(self.head):
                    await self._send_whole(outcome)
                    return
                await self._start(outcome)
            if not self.ended and outcome.ok:
                self.ended = True
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})

    def _whole(self, head: Head) -> bool:
        """Whether the held body can go out as one message with a Content-Length."""
        return self._method != "HEAD" and head.status not in (204, 304)

    async def _send_whole(self, outcome: Outcome | None) -> None:
        # The whole body is here: one body message with a Content-Length
        # instead of chunks and a last empty one (a socket write less).
        assert self.head is not None
        body, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        headers = _head_headers(self.head, self._request_id, outcome)
        headers.append((b"content-length", str(len(body)).encode()))
        self.started = self.ended = True
        await self._send(
            {"type": "http.response.start", "status": self.head.status, "headers": headers}
        )
        await self._send({"type": "http.response.body", "body": body, "more_body": False})


def _head_headers(
    head: Head, request_id: str, outcome: Outcome | None
) -> list[tuple[bytes, bytes]]:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head.headers]
    names = {k.lower() for k, _ in head.headers}
    if "content-type" not in names:
        headers.append((b"content-type", b"text/plain; charset=utf-8"))
    headers.append((b"x-request-id", request_id.encode()))
    if outcome is not None:
        headers.append((b"x-stack-usage", usage_header(outcome.usage)))
    return headers


async def send_json(send: Send, status: int, body: Any, request_id: str,
                    extra: list[tuple[bytes, bytes]] | None = None) -> None:  # fmt: skip
    """Send a complete JSON response."""
    data = json.dumps(body, indent=None).encode() + b"\n"
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"x-request-id", request_id.encode()),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})


async def send_error(send: Send, exc: StackError, request_id: str) -> None:
    """Send a :class:`StackError` as its JSON response."""
    extra = []
    retry = exc.details.get("retry_after")
    if retry is not None:
        extra.append((b"retry-after", str(retry).encode()))
    body = exc.to_json()
    body["request_id"] = request_id
    await send_json(send, exc.status, body, request_id, extra)


def outcome_error(outcome: Outcome, request_id: str, debug: bool,
                  paths: UserPaths | None = None) -> tuple[int, dict[str, Any]]:  # fmt: skip
    """The status and JSON body for a call that failed before its body started."""
    status = _STATUS_OF_REASON.get(outcome.reason, 500)
    body: dict[str, Any] = {
        "error": outcome.reason,
        "message": outcome.message,
        "exit_code": outcome.exit_code,
        "signal": signal_name(outcome.signal) if outcome.signal else None,
        "usage": outcome.usage.to_json(),
        "request_id": request_id,
    }
    if debug:
        stderr = paths.rewrite(outcome.stderr) if paths is not None else outcome.stderr
        body["stderr"] = stderr.decode("utf-8", "replace")
    return status, body


class StackApp:
    """The ASGI application on an open :class:`Engine`: services and the execute API.

    Args:
        engine: an open engine.
        services: the scripts to serve, or None.
        debug: put the script's stderr into error responses.
        execute: serve Piston's v2 API under ``/api/v2`` (submitted code).
        execute_output: bytes kept per stream of a submitted job.
        clients: what a client may hold (body deadline, output buffer).
    """

    def __init__(self, engine: Engine, services: Services | None, *, debug: bool = False,
                 execute: bool = False, execute_output: int = DEFAULT_OUTPUT,
                 actions: ActionRoutes | None = None, gateway: Gateway | None = None,
                 auth: Authenticator | None = None, metrics: Metrics | None = None,
                 health: Health | None = None, judge0: Judge0 | None = None,
                 clients: ClientLimits | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.clients = clients or ClientLimits()
        self._services = services
        self.debug = debug
        self.execute = execute
        self.execute_output = execute_output
        self.actions = actions
        self.gateway = gateway
        self.judge0 = judge0
        self.health = health or Health(engine)
        self.auth = auth or Authenticator()
        # The front doors this app serves (see sandbox.http.routes).
        doors = {"ops", "service"}
        doors |= {"execute"} if execute else set()
        doors |= {"action"} if actions is not None else set()
        doors |= {"gateway"} if gateway is not None else set()
        doors |= {"judge0"} if judge0 is not None else set()
        self.doors = frozenset(doors)
        if metrics is None:
            metrics = Metrics()
            metrics.watch_engine(engine)
        self.metrics = metrics
        self._pools: dict[str, str | None] = {}
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()
        self._limits: dict[str, tuple[Mapping[str, Any], Limits]] = {}

    def warm_pool(self, service: Service) -> str | None:
        """The key of ``service``'s warm pool, starting the pool on first use; None: cold."""
        key = service.pool_key
        if key not in self._pools:
            size = self.engine.config.warm_size(service.language.name, service.warm)
            invocation = Invocation(language=service.language, script=service.staged,
                                    env=service.env, network=service.network,
                                    code_dir=service.code_dir)  # fmt: skip
            limits = self.engine.limits_for(service.limits)
            pool = self.engine.add_pool(key, invocation, size, limits) if size else None
            self._pools[key] = key if pool is not None else None
        return self._pools[key]

    def _service_limits(self, service: Service) -> Limits:
        """The limits of ``service``'s calls, worked out once per sidecar."""
        cached = self._limits.get(service.name)
        if cached is None or cached[0] is not service.limits:
            cached = (service.limits, self.engine.limits_for(service.limits))
            self._limits[service.name] = cached
        return cached[1]

    @property
    def services(self) -> Services:
        """The services served (raises NotFound when there are none)."""
        if self._services is None:
            raise NotFound("this server has no services (start it with a script or --services)")
        return self._services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan_noop(receive, send)
            return
        if scope["type"] in ("http", "websocket"):
            scope["stack.route"] = route_of(_route_path(scope), self.doors)
            if scope["stack.route"].door != "ops":
                if self.health.draining:
                    await self._refuse_draining(scope, send)
                    return
                self._in_flight += 1
                self._idle = trio.Event() if self._in_flight == 1 else self._idle
                try:
                    await self._serve(scope, receive, send)
                finally:
                    self._in_flight -= 1
                    if not self._in_flight:
                        self._idle.set()
                return
        await self._serve(scope, receive, send)

    async def wait_idle(self) -> None:
        """Wait until no request is in flight (health and metrics do not count)."""
        while self._in_flight:
            await self._idle.wait()

    async def _refuse_draining(self, scope: Scope, send: Send) -> None:
        # Draining after SIGTERM: the server still answers (so load balancers
        # see /readyz say 503) but starts nothing new.
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1012, "reason": "draining"})
            return
        body = {"error": "draining", "message": "the server is shutting down: try another "
                "instance, or again shortly"}  # fmt: skip
        await send_json(send, 503, body, new_request_id(), [(b"retry-after", b"5")])

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            admitted = await self._admit(scope, receive, send)
            if admitted is None:
                return
            send = admitted
        if scope["type"] == "websocket":
            path = _route_path(scope)
            door = scope["stack.route"].door
            if door == "gateway" and self.gateway is not None:
                await self.gateway.websocket(path, scope, receive, send)
                return
            if door == "execute" and path == f"{piston.PREFIX}/connect":
                await piston.handle_connect(self.engine, scope, receive, send, self.execute_output)
            else:
                await send({"type": "websocket.close", "code": 4404, "reason": "Not Found"})
            return
        if scope["type"] != "http":
            return
        await self.handle(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive, send: Send) -> Send | None:
        """Authenticate, authorise and rate-limit a request.

        Returns the ``send`` to use (it adds the X-RateLimit headers), or None
        when the request was refused (401, 403 or 429 already sent).
        """
        needed = scope["stack.route"].scope
        if needed is None:
            return send
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1"))
                   for k, v in scope.get("headers", [])]  # fmt: skip
        request_id = _incoming_id(scope) or new_request_id()
        limit_headers: list[tuple[bytes, bytes]] = []
        try:
            principal = self.auth.authenticate(headers)
            if principal is not None:
                principal.require(needed)
                scope["stack.principal"] = principal
            checks = []
            if principal is not None and principal.rate is not None:
                checks.append((f"key {principal.name}:{principal.kind}", principal.rate))
            if self.auth.limiter.address_rate is not None:
                client = (scope.get("client") or ("unknown", 0))[0]
                checks.append((f"address {client}:addr", self.auth.limiter.address_rate))
            for key, rate in checks:
                left, reset = self.auth.limiter.check(key, rate)
                limit_headers = [
                    (b"x-ratelimit-limit", rate.header().encode()),
                    (b"x-ratelimit-remaining", str(left).encode()),
                    (b"x-ratelimit-reset", str(math.ceil(reset)).encode()),
                ]
        except (auth.AuthError, auth.RateLimited) as exc:
            extra = []
            if isinstance(exc, auth.AuthError) and not isinstance(exc, auth.Forbidden):
                extra.append((b"www-authenticate", b'Bearer realm="stack"'))
            if isinstance(exc, auth.RateLimited):
                extra += [(b"retry-after", str(exc.details["retry_after"]).encode()),
                          (b"x-ratelimit-limit", str(exc.details["limit"]).encode()),
                          (b"x-ratelimit-remaining", b"0")]  # fmt: skip
            if scope["type"] == "websocket":
                await receive()
                await send({"type": "websocket.close", "code": 4000 + exc.status,
                            "reason": exc.message[:120]})  # fmt: skip
                return None
            body = exc.to_json()
            body["request_id"] = request_id
            await send_json(send, exc.status, body, request_id, extra)
            return None
        if not limit_headers:
            return send

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *limit_headers])
            await send(message)

        return send_with_limits

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request."""
        request_id = _incoming_id(scope) or new_request_id()
        started = time.monotonic()
        receive = timed_receive(receive, self.clients)
        status_box: list[int] = [0]

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        outcome: Outcome | None = None
        error: StackError | None = None
        try:
            outcome = await self._handle(scope, receive, counting_send, request_id)
        except (StackError, BaseExceptionGroup) as exc:
            error = stack_error(exc)
            if error is None:
                raise
            if status_box[0] == 0:
                await send_error(counting_send, error, request_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                outcome = outcome or scope.get("stack.outcome")
                _log_access(scope, status_box[0], request_id, started, outcome, error)

    async def _handle(self, scope: Scope, receive: Receive, send: Send,
                      request_id: str) -> Outcome | None:  # fmt: skip
        path = _route_path(scope)
        root = scope.get("root_path", "")
        door = scope["stack.route"].door
        if door == "ops":
            await self._operations(path, send, request_id)
            return None
        if door == "execute":
            routed = dict(scope, path=path)
            if await piston.handle_http(self.engine, routed, receive, send, send_json,
                                        request_id, self.execute_output):  # fmt: skip
                return None
        if door == "judge0" and self.judge0 is not None:
            await self.judge0.handle(path, scope, receive, send, send_json, request_id, self.auth)
            return None
        if door == "gateway" and self.gateway is not None:
            await self.gateway.http(path, scope, receive, send, send_json, request_id)
            return None
        if door == "action" and self.actions is not None:
            if await self.actions.handle(path, scope, receive, send, send_json, request_id):
                return None
        if path == "/" and self._services is None:
            names = [a.name for a in self.actions.actions] if self.actions else []
            index = {"services": [], "execute": self.execute, "actions": names}
            await send_json(send, 200, index, request_id)
            return None
        if path == "/" and self.services.single is None:
            await self._index(send, request_id)
            return None
        if self.services.options.watch:
            await trio.to_thread.run_sync(self.services.route, path)
        service, script_name, path_info = self.services.route(path)
        warm = self.warm_pool(service)
        if self.services.options.watch:
            changed = await trio.to_thread.run_sync(service.refresh)
            if changed and warm is not None:
                self.engine.flush_pool(warm)  # waiting ones may have read the old files
        self.engine.interpreter(service.language)  # fail early: InterpreterMissing
        scope["stack.language"] = service.language.name
        info = _request_info(scope, root + script_name, path_info)
        principal: Principal | None = scope.get("stack.principal")
        limits = self._service_limits(service).lowered_to(
            principal.limits if principal is not None else None
        )
        length = info.header("content-length")
        if length is not None and length.isdigit() and limits.body is not None:
            if int(length) > limits.body:
                raise BodyTooLarge(
                    f"the request body ({length} bytes) is over the limit of {limits.body} bytes",
                    limit=limits.body,
                )
        body = Body(receive, limits.body)
        kind = hooklib.body_kind(info.header("content-type"))
        params = hooklib.parse_query(info.query_string)
        stdin = b""
        stream = kind == "raw" and _has_body(info)
        if kind in ("json", "form") or (kind == "raw" and not stream):
            # A request without a body is read now too (its one empty
            # message): the call's stdin then closes at once.
            stdin = await body.read_all()
            body.mark_done()
        if kind in ("json", "form"):
            extra = (
                hooklib.parse_json_params(stdin) if kind == "json" else hooklib.parse_query(stdin)
            )
            params.update(extra)
        # The response outlives the call: a client that reads slowly keeps its
        # connection and what is held for it, not the call's slot.
        async with trio.open_nursery() as nursery:
            outbox = Outbox(nursery, send, self.clients.output_buffer)
            paths = _paths(service)
            io = _HttpIO(outbox, body, request_id, stream, info.method, paths)
            outcome: Outcome | None = None
            try:
                with trio.CancelScope() as call_scope:
                    nursery.start_soon(io.watch, call_scope)
                    async with self.engine.open_call(limits, warm=warm) as call:
                        build = None
                        if service.language.compile:
                            build = await self._build(call, service)
                        if kind == "multipart":
                            # Parsed holding the slot: bounded by the call's own wall
                            # time, or a trickling upload would hold the slot for hours.
                            with trio.move_on_after(limits.timeout or math.inf) as late:
                                stdin = await self._uploads(call, body, info, params)
                            if late.cancelled_caught:
                                raise RequestTimeout(
                                    "the multipart body did not arrive within the call's "
                                    f"wall-clock limit of {limits.timeout:g} s"
                                )
                        hook = hooklib.build_hook(info, params, request_id=request_id,
                                                  env=service.env)  # fmt: skip
                        env = hooklib.cgi_environ(info, request_id=request_id, software=SOFTWARE)
                        env.update(service.env)
                        invocation = Invocation(
                            language=service.language,
                            script=service.staged,
                            hook=hook,
                            env=env,
                            request_id=request_id,
                            cgi=service.cgi,
                            network=service.network,
                            stdin=stdin,
                            build=build,
                            code_dir=service.code_dir,
                        )
                        outcome = await call.run(invocation, io)
                        # Kept on the scope for the access line, written even
                        # when what follows is cancelled (a server stopping).
                        scope["stack.outcome"] = outcome
                # The call is over, its slot free: the rest is the client's.
                return await self._respond(io, outbox, outcome, body, send, request_id, scope,
                                           paths)  # fmt: skip
            finally:
                io.stop_watching()
                outbox.close()

    async def _build(self, call: Call, service: Service) -> Path:
        """Compile a service in a compiled language (cached after the first call).

        Raises:
            CompileError: the compiler failed; its output rides on the error.
        """
        source = await trio.to_thread.run_sync(service.staged.read_bytes)
        call.write_file(service.staged.name, source)
        invocation = Invocation(service.language, call.workdir / service.staged.name)
        built = await call.build(invocation, [service.staged.name], self.engine.compile_limits())
        if built.directory is None:
            outcome = built.outcome
            output = _paths(service).rewrite(built.output)
            raise CompileError(
                f"{service.staged.name} does not compile"
                + (f" ({outcome.message})" if outcome is not None and outcome.message else ""),
                output=output.decode("utf-8", "replace")[-8000:],
            )
        return built.directory

    async def _uploads(self, call: Call, body: Body, info: hooklib.RequestInfo,
                       params: dict[str, Any]) -> bytes:  # fmt: skip
        directory, view = call.upload_dir()
        boundary = hooklib.multipart_boundary(info.header("content-type") or "")
        uploads = hooklib.Uploads(boundary, directory, view)
        raw = []
        try:
            while data := await body.chunk():
                raw.append(data)
                await trio.to_thread.run_sync(uploads.feed, data)
            params.update(await trio.to_thread.run_sync(uploads.finish))
        finally:
            uploads.close()
        body.mark_done()
        return b"".join(raw)

    async def _respond(self, io: _HttpIO, outbox: Outbox, outcome: Outcome | None, body: Body,
                       send: Send, request_id: str, scope: Scope,
                       paths: UserPaths | None = None) -> Outcome | None:  # fmt: skip
        """Finish the response of a call that is over (None: the client went away)."""
        io.running = False
        await _drain(body)
        if outcome is None:
            # The client went away: the call was killed and reaped (the access
            # line says so).
            scope["stack.disconnected"] = True
            outbox.abort()
        elif outcome.head_sent:
            await io.finish(outcome)
            if not outcome.ok:
                outbox.abort()  # the response is cut: what is held is not wanted
                log.warning(
                    "[%s] call failed after its body started (response aborted): %s",
                    request_id,
                    outcome.message,
                )
        elif outcome.ok:
            io.head = outcome.head
            await io.finish(outcome)
        else:
            status, payload = outcome_error(outcome, request_id, self.debug, paths)
            usage = (b"x-stack-usage", usage_header(outcome.usage))
            await send_json(send, status, payload, request_id, [usage])
        return outcome

    async def _operations(self, path: str, send: Send, request_id: str) -> None:
        if path == "/healthz":
            status, body = await trio.to_thread.run_sync(self.health.report)
            await send_json(send, status, body, request_id)
        elif path == "/readyz":
            if self.health.draining:
                body = {"status": "draining", "detail": "shutting down: finishing calls in flight"}
                await send_json(send, 503, body, request_id, [(b"retry-after", b"5")])
            else:
                await send_json(send, 200, {"status": "ready"}, request_id)
        else:
            data = self.metrics.render()
            headers = [(b"content-type", METRICS_TYPE.encode()),
                       (b"content-length", str(len(data)).encode())]  # fmt: skip
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": data})

    async def _index(self, send: Send, request_id: str) -> None:
        listing = [
            {
                "name": s.name,
                "path": self.services.path_of(s),
                "language": s.language.name,
                "file": s.source.name,
            }
            for s in self.services
        ]
        await send_json(send, 200, {"services": listing}, request_id)


def _paths(service: Service) -> UserPaths:
    """The service's sandbox paths, to show as its file."""
    return UserPaths(service.staged.name, str(service.source), [str(service.staged)])


async def _drain(body: Body) -> None:
    """Read and drop the rest of a body the script did not read.

    A client that sends its whole body before reading the answer (most do)
    would otherwise wait forever for the server to take the rest.
    """
    if body.done:
        return
    with trio.move_on_after(30):
        try:
            while not body.done:
                await body.chunk()
        except RequestError:
            pass  # too large or too slow: the connection closes after the response


def _route_path(scope: Scope) -> str:
    """The request path below the app's mount point."""
    path: str = scope.get("path", "/")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


def stack_error(exc: BaseException) -> StackError | None:
    """The StackError behind ``exc``, looking through groups of one (nurseries wrap)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc if isinstance(exc, StackError) else None


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if 0 < len(text) <= 64 and all(c.isalnum() or c in "-_." for c in text):
                return text
    return None


def _has_body(info: hooklib.RequestInfo) -> bool:
    """Whether the request may have a body (HTTP/1 says so in its head)."""
    if info.http_version not in ("1.0", "1.1"):
        return True
    length = info.header("content-length")
    return info.header("transfer-encoding") is not None or (length is not None and length != "0")


def _request_info(scope: Scope, script_name: str, path_info: str) -> hooklib.RequestInfo:
    headers = tuple(
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in scope.get("headers", [])
    )
    server = scope.get("server") or ("localhost", 0)
    client = scope.get("client") or ("", 0)
    host = next((v for k, v in headers if k == "host"), None)
    server_name = host.rsplit(":", 1)[0] if host else str(server[0])
    root, path = scope.get("root_path", ""), scope.get("path", "/")
    return hooklib.RequestInfo(
        method=scope.get("method", "GET"),
        path=path if path.startswith(root) else root + path,
        query_string=scope.get("query_string", b""),
        headers=headers,
        remote_addr=str(client[0]),
        server_name=server_name,
        server_port=int(server[1] or 0),
        http_version=scope.get("http_version", "1.1"),
        script_name=script_name,
        path_info=path_info,
        scheme=scope.get("scheme", "http"),
    )


def _log_access(scope: Scope, status: int, request_id: str, started: float,
                outcome: Outcome | None, error: StackError | None = None) -> None:  # fmt: skip
    """One line per request; with --log-format json, its fields as JSON.

    A failed call (a 5xx, or an outcome that is not ``ok``) is logged at
    WARNING, so it shows without ``-v``; the rest at INFO.
    """
    elapsed = time.monotonic() - started
    path = scope.get("path", "")
    route = scope.get("stack.route")
    door = route.door if route is not None else route_of(_route_path(scope)).door
    principal = scope.get("stack.principal")
    fields: dict[str, Any] = {
        "request_id": request_id,
        "door": door,
        "method": scope.get("method"),
        "path": path,
        "status": status,
        "client": (scope.get("client") or ("", 0))[0],
        "elapsed": round(elapsed, 6),
    }
    if "stack.language" in scope:
        fields["language"] = scope["stack.language"]
    if principal is not None:
        fields["principal"] = principal.name
    failed = status >= 500 or (outcome is not None and not outcome.ok)
    level = logging.WARNING if failed else logging.INFO
    if outcome is None:
        reason = ""
        if error is not None:
            fields["reason"] = error.code
            reason = f" {error.code}: {error.message}"
        elif scope.get("stack.disconnected"):
            fields["reason"] = "disconnected"
            reason = " disconnected (the client left; the call was killed)"
        access_log.log(level, "%s %s %d%s %.1fms [%s]", scope.get("method"), path, status,
                       reason, elapsed * 1000, request_id, extra={"stack": fields})  # fmt: skip
        return
    usage = outcome.usage
    fields["reason"] = outcome.reason
    fields["usage"] = usage.to_json()
    reason = outcome.reason
    if failed and outcome.message:
        reason += f" ({outcome.message})"
    access_log.log(
        level,
        "%s %s %d %s wall=%.1fms cpu=%.1fms mem=%.1fMiB [%s]",
        scope.get("method"),
        path,
        status,
        reason,
        usage.wall * 1000,
        usage.cpu * 1000,
        usage.memory / 1024 / 1024,
        request_id,
        extra={"stack": fields},
    )


async def _lifespan_noop(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


__all__ = ["StackApp", "send_error", "send_json"]
