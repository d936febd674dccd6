"""The composition: an engine, the features and the HTTP app, opened together.

    async with open_app(Path("services/"), EngineConfig()) as app:
        ...app is an ASGI app (sandbox.http.app.StackApp) with its engine running...

:func:`create_app` does the same inside an ASGI server's lifespan.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import trio

from .brokers import Broker, BrokerConfig, open_broker
from .core.engine import EngineConfig, open_engine
from .errors import NotFound, StackError
from .features.actions import ActionSet
from .features.auth import Authenticator
from .features.health import Health
from .features.jobs import DEFAULT_OUTPUT
from .features.jobs import add_pools as add_execute_pools
from .features.judge0 import Settings as Judge0Settings
from .features.judge0_worker import broker_config
from .features.metrics import Metrics
from .features.reporting import Reporter
from .features.services import ServiceOptions, Services
from .features.triggers import Trigger, serve_trigger
from .http.actions import ActionRoutes
from .http.app import StackApp, send_error
from .http.clients import ClientLimits
from .http.gateway import Gateway
from .http.judge0 import serve_judge0
from .http.types import Receive, Scope, Send

log = logging.getLogger("stack")


@asynccontextmanager
async def open_app(path: Path | None, config: EngineConfig | None = None,
                   options: ServiceOptions | None = None, *, debug: bool = False,
                   execute: bool = False, actions: Sequence[Path] = (),
                   variables: Mapping[str, str] | None = None,
                   reporting_url: str | None = None,
                   gateway: BrokerConfig | None = None,
                   brokers: Mapping[str, BrokerConfig] | None = None,
                   triggers: Sequence[Trigger] = (),
                   auth: Authenticator | None = None,
                   execute_output: int = DEFAULT_OUTPUT,
                   judge0: Judge0Settings | None = None,
                   clients: ClientLimits | None = None) -> AsyncIterator[StackApp]:  # fmt: skip
    """Open an engine and a :class:`StackApp` serving the script or folder at ``path``.

    Args:
        path: a script or a folder of scripts, or None for no services.
        config: the engine's settings.
        options: how the services run.
        debug: put stderr into error responses.
        execute: also serve the execute API (``/api/v2``).
        actions: folders of actions to serve under ``/actions`` (none: no action routes).
        variables: the ``{{NAME}}`` variables of action inputs.
        reporting_url: where to send Exo-style reporting webhooks.
        gateway: a broker to serve the gateway routes for (/publish, /request, /subscribe, /ws).
        brokers: the configured brokers, by name (those the triggers use are connected).
        triggers: message triggers to run (see :mod:`sandbox.features.triggers`).
        auth: who may call what (default: no authentication).
        execute_output: bytes kept per stream of a submitted job.
        judge0: serve Judge0's API (with ``execute``) with these settings.
        clients: what an HTTP client may hold (see :class:`ClientLimits`).
    """
    async with open_engine(config) as engine:
        services = None
        if path is not None:
            services = Services.from_path(
                path,
                engine.registry,
                engine.base / "scripts",
                options or ServiceOptions(),
                check_limits=engine.limits_for,
            )
            for line in services.skipped:
                log.warning("skipped %s", line)
        action_set = None
        if actions:
            action_set = await trio.to_thread.run_sync(ActionSet.load, list(actions),
                                                       engine.registry)  # fmt: skip
            for problem in action_set.problems:
                log.warning("action not loaded: %s", problem)
        async with trio.open_nursery() as nursery:
            routes = None
            if action_set is not None:
                reporter = Reporter(reporting_url)
                await nursery.start(reporter.serve)
                routes = ActionRoutes(engine, action_set, variables or {}, reporter)
            opened: dict[str, Broker] = {}
            wanted = dict(brokers or {})
            names = {t.broker for t in triggers} | {
                t.result_broker for t in triggers if t.result_broker
            }
            for name in sorted(names):
                opened[name] = await nursery.start(_hold_broker, wanted[name])
            doors = None
            if gateway is not None:
                broker = opened.get(gateway.name) or await nursery.start(_hold_broker, gateway)
                opened[broker.name] = broker
                doors = Gateway(broker)
            health = Health(engine)
            for name, held in opened.items():
                health.add(f"broker:{name}", _connected_check(held))
            judge0_api = None
            if execute and judge0 is not None:
                remote = None
                if judge0.broker:
                    wanted_broker = broker_config(judge0.broker, brokers or {})
                    remote = await nursery.start(_hold_broker, wanted_broker)
                judge0_api = await nursery.start(
                    partial(serve_judge0, engine, judge0, broker=remote, output=execute_output)
                )
                health.add("judge0", judge0_api.health)
            metrics = Metrics()
            metrics.watch_engine(engine)
            app = StackApp(engine, services, debug=debug, execute=execute,
                           execute_output=execute_output, actions=routes, gateway=doors,
                           auth=auth, metrics=metrics, health=health,
                           judge0=judge0_api, clients=clients)  # fmt: skip
            for service in services or ():
                app.warm_pool(service)
            if execute:
                add_execute_pools(engine, execute_output)
            variables_map = variables or {}
            for trigger in triggers:
                await nursery.start(serve_trigger, trigger, opened, engine,
                                    routes.actions if routes else None, services,
                                    variables_map)  # fmt: skip
            yield app
            nursery.cancel_scope.cancel()


def _connected_check(broker: Broker) -> Callable[[], tuple[bool, str]]:
    return lambda: (broker.connected(), "connected" if broker.connected() else "down")


async def _hold_broker(
    config: BrokerConfig, task_status: trio.TaskStatus[Broker] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_broker(config) as broker:
        task_status.started(broker)
        await trio.sleep_forever()


def create_app(path: str | Path, config: EngineConfig | None = None,
               options: ServiceOptions | None = None, *, debug: bool = False) -> Any:  # fmt: skip
    """An ASGI app serving ``path`` that opens its engine in the ASGI lifespan.

    Host it under any ASGI server running Trio, for example
    ``hypercorn --worker-class trio 'myapp:app'`` with
    ``app = create_app("services/")``.
    """
    state: dict[str, StackApp] = {}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        inner = state.get("app")
        if inner is None:
            await send_error(send, NotFound("stack is not started (no ASGI lifespan?)"), "-")
            return
        await inner(scope, receive, send)

    async def _lifespan(receive: Receive, send: Send) -> None:
        message = await receive()
        assert message["type"] == "lifespan.startup"
        try:
            async with open_app(Path(path), config, options, debug=debug) as inner:
                state["app"] = inner
                await send({"type": "lifespan.startup.complete"})
                message = await receive()
                state.pop("app", None)
        except StackError as exc:
            await send({"type": "lifespan.startup.failed", "message": exc.message})
            return
        await send({"type": "lifespan.shutdown.complete"})

    return app


__all__ = ["create_app", "open_app"]
