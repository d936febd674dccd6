"""The ASGI side of Judge0's API: routes, the queue's dispatcher, callbacks.

    POST   /submissions[?base64_encoded=&wait=&fields=]     GET /submissions/{token}
    POST   /submissions/batch                               GET /submissions/batch?tokens=
    DELETE /submissions/{token}
    GET    /languages, /languages/{id}, /statuses, /about, /version, /config_info,
           /system_info, /workers

:func:`serve_judge0` opens the store and runs, in its own nursery, one
dispatcher that takes queued submissions while this node has a free worker,
a task per submission running, callbacks, and the pruning of old
submissions. Cancelling it (the server stopping) kills the runs in flight
and puts their submissions back at the head of the queue.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import platform
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import trio

from ..brokers import Broker, BrokerUnavailable
from ..core.engine import Engine
from ..errors import (
    AuthError,
    InvalidSubmission,
    NoResponders,
    NotUtf8,
    Overloaded,
    RequestError,
    StackError,
)
from ..features import jobs as ex
from ..features import judge0 as j0
from ..features.auth import Authenticator
from ..features.judge0_store import NODE, Record, Store, open_store
from ..features.judge0_worker import execute_record, execute_remote, reply_timeout
from .body import read_json

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
SendJson = Callable[..., Awaitable[None]]

log = logging.getLogger("stack")
_COUNT = re.compile(r"[0-9]{1,9}")  # ASCII digits only, and no OFFSET overflow
ROUTES = ("/submissions", "/languages", "/statuses", "/about", "/version", "/config_info",
          "/system_info", "/workers")  # fmt: skip
MAX_REQUEST = 64 * 1024 * 1024
PRUNE_EVERY = 600.0


class Judge0:
    """Judge0's routes over an engine and a store; made by :func:`serve_judge0`."""

    def __init__(self, engine: Engine, settings: j0.Settings, store: Store,
                 nursery: trio.Nursery, *, output: int = ex.DEFAULT_OUTPUT,
                 broker: Broker | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.broker = broker
        self.settings = settings
        self.store = store
        self.output = output
        self.workers = (engine.config.max_running if settings.workers is None
                        else settings.workers)  # fmt: skip
        self.working = 0
        self._nursery = nursery
        self._wake = trio.Event()
        self.bounds = j0.Bounds.from_limits(engine.config.limits, engine.config.maxima)

    def health(self) -> tuple[bool, str]:
        """The /healthz check: the store answers (blocking; from a worker thread)."""
        ok, detail = self.store.check()
        return ok, f"{detail}; {self.working}/{self.workers} running here"

    # Background work ----------------------------------------------------------------------

    async def dispatch(self) -> None:
        """Take queued submissions while a worker is free, until cancelled."""
        if self.workers == 0:
            return
        free = trio.Semaphore(self.workers)
        while True:
            await free.acquire()
            record = None
            while record is None:
                try:
                    record = await self.store.claim()
                except StackError as exc:
                    log.warning("judge0: cannot take from the queue: %s", exc.message)
                    await trio.sleep(1.0)  # the store is down: do not spin on it
                if record is None:
                    with trio.move_on_after(self.store.poll):
                        await self._wake.wait()
                    self._wake = trio.Event()
            self._nursery.start_soon(self._work, record, free)

    async def _work(self, record: Record, free: trio.Semaphore) -> None:
        self.working += 1
        done = False
        try:
            await self.run(record)
            done = True
        except StackError as exc:  # the store is unreachable: try to queue it again
            log.warning("judge0: cannot save submission %s: %s", record["token"], exc.message)
        finally:
            self.working -= 1
            free.release()
            if not done:  # cancelled (the server is stopping) or not saved: it runs again
                await self._requeue(record)

    async def _requeue(self, record: Record) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            record["status_id"] = j0.IN_QUEUE
            try:
                await self.store.requeue(record)
            except StackError as exc:
                log.warning("judge0: cannot queue submission %s again: %s", record["token"],
                            exc.message)  # fmt: skip

    async def run(self, record: Record) -> None:
        """Run a submission to its verdict, save it, and call its callback back."""
        record["status_id"] = j0.PROCESSING
        waited = False
        while True:
            try:
                if self.broker is None:
                    await execute_record(self.engine, record, output=self.output,
                                         max_extract=self.settings.max_extract_size)  # fmt: skip
                else:
                    timeout = reply_timeout(record, self.engine)
                    await execute_remote(self.broker, record, timeout)
                break
            except (Overloaded, NoResponders, BrokerUnavailable) as exc:
                if not waited:  # the engine is full, or no worker listens: wait
                    log.warning("judge0: submission %s waits: %s", record["token"], exc.message)
                    waited = True
                await trio.sleep(0.5)
            except StackError as exc:
                j0.failed(record, j0.INTERNAL_ERROR, exc.message)
                break
            except Exception as exc:  # a bug must fail the submission, never the server
                log.exception("judge0: submission %s failed", record["token"])
                j0.failed(record, j0.INTERNAL_ERROR, f"internal error: {exc}")
                break
        await self.store.save(record)
        if record.get("callback_url"):
            self._nursery.start_soon(self._callback, dict(record))

    async def _callback(self, record: Record) -> None:
        """PUT the submission to its ``callback_url``, with retries (Judge0's fields, base64)."""
        url = record["callback_url"]
        if not self.settings.callbacks_to_private and not await _public(url):
            log.warning("judge0: callback for %s to %s refused: not a public address "
                        "(judge0.callbacks_to_private allows it)",
                        record["token"], url)  # fmt: skip
            return
        body = j0.serialize(record, j0.CALLBACK_FIELDS, base64_encoded=True)
        tries = max(1, self.settings.callbacks_max_tries)
        for attempt in range(1, tries + 1):
            # A connection per attempt: a kept-alive one may be closed under the retry.
            async with httpx.AsyncClient(timeout=self.settings.callbacks_timeout) as client:
                try:
                    response = await client.put(url, json=body)
                    if response.status_code < 500:
                        return
                    problem = f"answered {response.status_code}"
                except httpx.HTTPError as exc:
                    problem = str(exc) or type(exc).__name__
            log.warning("judge0: callback %d/%d for %s to %s failed: %s", attempt, tries,
                        record["token"], url, problem)  # fmt: skip
            if attempt < tries:
                await trio.sleep(min(2.0 ** (attempt - 1), 10.0))

    async def prune(self) -> None:
        """Forget finished submissions older than ``keep``, now and then."""
        while True:
            try:
                removed = await self.store.prune(time.time() - self.settings.keep)
                if removed:
                    log.info("judge0: pruned %d old submissions", removed)
            except StackError as exc:
                log.warning("judge0: pruning failed: %s", exc.message)
            await trio.sleep(min(PRUNE_EVERY, self.settings.keep / 10))

    # HTTP ----------------------------------------------------------------------------------

    async def handle(self, path: str, scope: Scope, receive: Receive, send: Send,
                     send_json: SendJson, request_id: str,
                     auth: Authenticator) -> None:  # fmt: skip
        """Serve one Judge0 request."""
        method = scope.get("method", "GET")
        raw = scope.get("query_string", b"").decode("latin-1")
        query = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}

        async def reply(status: int, body: Any) -> None:
            await send_json(send, status, body, request_id)

        try:
            await self._route(path, method, query, scope, receive, reply, auth)
        except InvalidSubmission as exc:
            await reply(422, exc.errors)
        except Overloaded as exc:
            await send_json(send, 503, {"error": exc.message}, request_id,
                            [(b"retry-after", str(exc.retry_after).encode())])  # fmt: skip
        except AuthError as exc:
            await reply(exc.status, {"error": exc.message})
        except StackError as exc:
            await reply(exc.status, {"error": exc.message})

    async def _route(self, path: str, method: str, query: Mapping[str, str], scope: Scope,
                     receive: Receive, reply: Callable[[int, Any], Awaitable[None]],
                     auth: Authenticator) -> None:  # fmt: skip
        registry = self.engine.registry
        allowed = {"/submissions": "GET, POST", "/submissions/batch": "GET, POST"}.get(path, "GET")
        if path.startswith("/submissions/") and path != "/submissions/batch":
            allowed = "GET, DELETE"
        if method not in allowed.split(", ") and not (method == "HEAD" and "GET" in allowed):
            await reply(405, {"error": f"use {allowed}"})
            return
        if path == "/submissions" and method == "POST":
            await self._create(query, scope, receive, reply)
        elif path == "/submissions":
            await self._list(query, scope, reply, auth)
        elif path == "/submissions/batch":
            if method == "POST":
                await self._create_batch(query, scope, receive, reply)
            else:
                await self._show_batch(query, reply)
        elif path.startswith("/submissions/"):
            token = path.removeprefix("/submissions/")
            if method == "DELETE":
                await self._delete(token, query, scope, reply, auth)
            else:
                await self._show(token, query, reply)
        elif path == "/languages":
            await reply(200, j0.languages(registry))
        elif path.startswith("/languages/"):
            key = path.removeprefix("/languages/")
            if key == "all":
                await reply(200, j0.languages(registry))
                return
            detail = j0.language_detail(registry, int(key)) if _COUNT.fullmatch(key) else None
            if detail is None:
                await reply(404, {"error": f"language with id {key} doesn't exist"})
            else:
                await reply(200, detail)
        elif path == "/statuses":
            await reply(200, j0.statuses())
        elif path in ("/about", "/version"):
            await reply(200, _about() if path == "/about" else j0.VERSION)
        elif path == "/config_info":
            bounds = self._bounds(scope)
            await reply(200, j0.config_info(bounds, self.settings, self.engine.config.network))
        elif path == "/system_info":
            _authorize(scope, auth)
            await reply(200, _system_info())
        elif path == "/workers":
            await reply(200, [{
                "queue": j0.VERSION, "size": await self.store.queue_size(),
                "available": self.workers, "idle": max(0, self.workers - self.working),
                "working": self.working, "paused": 0, "failed": 0,
            }])  # fmt: skip
        else:
            await reply(404, {"error": "Not Found"})

    def _bounds(self, scope: Scope) -> j0.Bounds:
        principal = scope.get("stack.principal")
        if principal is None or principal.limits is None:
            return self.bounds
        config = self.engine.config
        return j0.Bounds.from_limits(config.limits.lowered_to(principal.limits),
                                     config.maxima.lowered_to(principal.limits))  # fmt: skip

    async def _room(self, count: int) -> None:
        if await self.store.queue_size() + count > self.settings.max_queue_size:
            raise Overloaded("queue is full", retry_after=1)

    async def _create(self, query: Mapping[str, str], scope: Scope, receive: Receive,
                      reply: Callable[[int, Any], Awaitable[None]]) -> None:  # fmt: skip
        wait = j0.flag(query, "wait")
        if wait and not self.settings.enable_wait_result:
            await reply(400, {"error": "wait not allowed"})
            return
        fields = j0.requested_fields(query.get("fields"))
        encoded = j0.flag(query, "base64_encoded")
        body = await _body(receive)
        await self._room(1)
        record = j0.parse_submission(body, base64_encoded=encoded,
                                     registry=self.engine.registry, bounds=self._bounds(scope),
                                     settings=self.settings)  # fmt: skip
        if not wait:
            await self.store.add([record])
            self._wake.set()
            await reply(201, {"token": record["token"]})
            return
        record.update(status_id=j0.PROCESSING, node=NODE)
        await self.store.add([record], queue=False)
        try:
            await self.run(record)
        finally:
            if record["status_id"] in (j0.IN_QUEUE, j0.PROCESSING):  # the client went away
                await self._requeue(record)
        try:
            shaped = j0.serialize(record, fields, base64_encoded=encoded,
                                  registry=self.engine.registry)  # fmt: skip
        except NotUtf8 as exc:
            await reply(201, {"error": exc.message, "token": record["token"]})
            return
        await reply(201, shaped)

    async def _create_batch(self, query: Mapping[str, str], scope: Scope, receive: Receive,
                            reply: Callable[[int, Any], Awaitable[None]]) -> None:  # fmt: skip
        body = await _body(receive)
        items = body.get("submissions") if isinstance(body, dict) else None
        if not isinstance(items, list):
            items = []
        if not self._batch_size_ok(len(items)) or not items:
            await reply(400, {"error": self._batch_error(len(items))})
            return
        await self._room(len(items))
        encoded = j0.flag(query, "base64_encoded")
        bounds = self._bounds(scope)
        answers: list[Any] = []
        valid: list[Record] = []
        for item in items:
            try:
                record = j0.parse_submission(item, base64_encoded=encoded,
                                             registry=self.engine.registry, bounds=bounds,
                                             settings=self.settings)  # fmt: skip
            except InvalidSubmission as exc:
                answers.append(exc.errors)
                continue
            valid.append(record)
            answers.append({"token": record["token"]})
        if valid:
            await self.store.add(valid)
            self._wake.set()
        await reply(201 if valid else 422, answers)

    def _batch_size_ok(self, count: int) -> bool:
        return 0 < count <= self.settings.max_submission_batch_size

    def _batch_error(self, count: int) -> str:
        if count == 0:
            return "there should be at least one submission in a batch"
        return ("number of submissions in a batch should be less than or equal to "
                f"{self.settings.max_submission_batch_size}")  # fmt: skip

    async def _show(self, token: str, query: Mapping[str, str],
                    reply: Callable[[int, Any], Awaitable[None]]) -> None:  # fmt: skip
        fields = j0.requested_fields(query.get("fields"))
        (record,) = await self.store.get([token])
        if record is None:
            await reply(404, {"error": f"submission with token {token} not found"})
            return
        try:
            await reply(200, j0.serialize(record, fields, base64_encoded=j0.flag(
                query, "base64_encoded"), registry=self.engine.registry))  # fmt: skip
        except NotUtf8 as exc:
            await reply(400, {"error": exc.message})

    async def _show_batch(self, query: Mapping[str, str],
                          reply: Callable[[int, Any], Awaitable[None]]) -> None:  # fmt: skip
        tokens = [t.strip() for t in query.get("tokens", "").split(",") if t.strip()]
        if not self._batch_size_ok(len(tokens)):
            await reply(400, {"error": self._batch_error(len(tokens))})
            return
        fields = j0.requested_fields(query.get("fields"))
        encoded = j0.flag(query, "base64_encoded")
        records = await self.store.get(tokens)
        try:
            shaped = [None if r is None else j0.serialize(r, fields, base64_encoded=encoded,
                                                          registry=self.engine.registry)
                      for r in records]  # fmt: skip
        except NotUtf8:
            await reply(400, {"error": "some attributes for one or more submissions cannot be "
                                       "converted to UTF-8, use base64_encoded=true query "
                                       "parameter"})  # fmt: skip
            return
        await reply(200, {"submissions": shaped})

    async def _list(self, query: Mapping[str, str], scope: Scope,
                    reply: Callable[[int, Any], Awaitable[None]],
                    auth: Authenticator) -> None:  # fmt: skip
        """``GET /submissions?page=&per_page=``: newest first, as Judge0 pages them."""
        _authorize(scope, auth)
        fields = j0.requested_fields(query.get("fields"))
        number, size = query.get("page", "1"), query.get("per_page", "20")
        if not _COUNT.fullmatch(number) or int(number) <= 0:
            await reply(400, {"error": f"invalid page: {number}"})
            return
        if not _COUNT.fullmatch(size) or int(size) < 0:
            await reply(400, {"error": f"invalid per_page: {size}"})
            return
        page, per_page = int(number), min(int(size), 1000)
        records, total = await self.store.page(page, per_page) if per_page else ([], 0)
        pages = -(-total // per_page) if per_page else 0
        try:
            shaped = [j0.serialize(r, fields, base64_encoded=j0.flag(query, "base64_encoded"),
                                   registry=self.engine.registry) for r in records]  # fmt: skip
        except NotUtf8:
            await reply(400, {"error": "some attributes for one or more submissions cannot be "
                                       "converted to UTF-8, use base64_encoded=true query "
                                       "parameter"})  # fmt: skip
            return
        await reply(200, {"submissions": shaped, "meta": {
            "current_page": page,
            "next_page": page + 1 if page < pages else None,
            "prev_page": page - 1 if page > 1 else None,
            "total_pages": pages,
            "total_count": total,
        }})  # fmt: skip

    async def _delete(self, token: str, query: Mapping[str, str], scope: Scope,
                      reply: Callable[[int, Any], Awaitable[None]],
                      auth: Authenticator) -> None:  # fmt: skip
        if not self.settings.enable_submission_delete:
            await reply(400, {"error": "delete not allowed"})
            return
        _authorize(scope, auth)
        fields = j0.requested_fields(query.get("fields"))
        (record,) = await self.store.get([token])
        if record is None:
            await reply(404, {"error": f"submission with token {token} not found"})
            return
        if record["status_id"] in (j0.IN_QUEUE, j0.PROCESSING):
            status = record["status_id"]
            await reply(400, {"error": f"submission cannot be deleted because its status is "
                                       f"{status} ({j0.STATUSES[status]})"})  # fmt: skip
            return
        await self.store.delete(token)
        # Judge0 answers a delete in base64, so that any output can be given back.
        await reply(200, j0.serialize(record, fields, base64_encoded=True,
                                      registry=self.engine.registry))  # fmt: skip


async def _body(receive: Receive) -> Any:
    """The request's JSON body; an empty body is ``{}``."""
    try:
        return await read_json(receive, MAX_REQUEST)
    except RequestError as exc:
        if "Expecting value: line 1 column 1 (char 0)" in exc.message:
            return {}
        raise


def _authorize(scope: Scope, auth: Authenticator) -> None:
    """Judge0's authorization (``X-Auth-User``): a key with the ``admin`` scope.

    Raises:
        AuthError, Forbidden: when auth is on and the request has no such key.
    """
    if not auth.enabled:
        return
    principal = scope.get("stack.principal")
    if principal is not None and "admin" in principal.scopes:
        return
    user = next((v.decode("latin-1") for k, v in scope.get("headers", [])
                 if k.lower() == b"x-auth-user"), None)  # fmt: skip
    if not user:
        raise AuthError("this route needs authorization: send X-Auth-User with an admin key")
    admin = auth.authenticate([("x-api-key", user)])
    if admin is not None:
        admin.require("admin")


def _about() -> dict[str, Any]:
    from .. import __version__

    return {
        "version": j0.VERSION,
        "homepage": "",
        "source_code": "",
        "maintainer": f"stack {__version__} (a Judge0 CE {j0.VERSION} compatible API)",
    }


def _system_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "Architecture": platform.machine(),
        "CPU(s)": os.cpu_count(),
        "Kernel": platform.release(),
    }
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                name, _, value = line.partition(":")
                if name in ("MemTotal", "SwapTotal"):
                    info["Mem" if name == "MemTotal" else "Swap"] = value.strip()
    except OSError:
        pass
    return info


async def serve_judge0(engine: Engine, settings: j0.Settings, *, output: int = ex.DEFAULT_OUTPUT,
                       broker: Broker | None = None,
                       task_status: trio.TaskStatus[Judge0] = trio.TASK_STATUS_IGNORED,
                       ) -> None:  # fmt: skip
    """Open the store, start the dispatcher and the pruner; ``started(Judge0)``.

    With ``broker``, submissions run on ``stack worker --judge0`` over it
    instead of ``engine`` (see :mod:`sandbox.features.judge0_worker`). Runs until
    cancelled; runs in flight are then killed and queued again.
    """
    async with open_store(settings) as store, trio.open_nursery() as nursery:
        judge = Judge0(engine, settings, store, nursery, output=output, broker=broker)
        nursery.start_soon(judge.dispatch)
        nursery.start_soon(judge.prune)
        task_status.started(judge)
        await trio.sleep_forever()


async def _public(url: str) -> bool:
    """Whether every address ``url``'s host resolves to is a public one.

    Checked when the callback is sent (a name could be pointed elsewhere
    later: this keeps submissions from reaching the server's own network, it
    does not pin the address).
    """
    host = urlsplit(url).hostname or ""
    try:
        found = await trio.socket.getaddrinfo(host, None, type=trio.socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found}
    return bool(addresses) and all(a.is_global and not a.is_multicast for a in addresses)


__all__ = ["Judge0", "serve_judge0"]
