"""Runs an ASGI app on Hypercorn's Trio worker, on a port we bind ourselves."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import wrap_app

from ..errors import ConfigError
from ..features.metrics import Metrics
from .clients import CONNECTION_SHARE, ClientLimits, GuardedListener, raise_fd_limit

log = logging.getLogger("stack")


def bind(host: str, port: int, *, tries: int = 100) -> socket.socket:
    """A listening socket on ``host:port``, or the next free port after it.

    Port 0 picks any free port.

    Raises:
        ConfigError: no free port in ``tries`` attempts, or the host is not local.
    """
    last: OSError | None = None
    for candidate in range(port, port + tries) if port else [0]:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                raise ConfigError(f"cannot listen on {host}:{candidate}: {exc.strerror}") from exc
            last = exc
            continue
        sock.listen(1024)
        return sock
    if tries == 1:
        raise ConfigError(
            f"port {port} on {host} is taken (another server is listening there): stop it, "
            "or pick another port with -p"
        )
    raise ConfigError(f"no free port from {port} to {port + tries - 1} on {host}: {last}")


async def serve(
    app: Any,
    sock: socket.socket,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    grace: float = 10.0,
    clients: ClientLimits | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``sock`` until ``shutdown_trigger`` returns (or cancelled).

    Calls ``task_status.started(url)`` once it accepts connections. When
    ``shutdown_trigger`` returns, it stops accepting and gives requests in
    flight ``grace`` seconds to finish; then they are cancelled (their calls
    killed and reaped).

    It runs Hypercorn's trio worker loop (:func:`hypercorn.trio.run.worker_serve`)
    with one change: connections come through a :class:`GuardedListener`,
    which caps them in all and per client and gives up on clients that do
    not read (see :mod:`sandbox.http.clients`). It raises the process's
    open-file limit to its hard limit first, and sizes the caps below it.
    """
    clients = clients or ClientLimits()
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    fds = raise_fd_limit()
    total = min(clients.max_connections, max(1, int(fds * CONNECTION_SHARE)))
    log.info("open-file limit %d: at most %d connections, %d per client", fds, total,
             min(total, clients.max_connections_per_client))  # fmt: skip
    config = HypercornConfig()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Hypercorn's keep-alive timer runs from a connection's start (or its
    # previous response) until a whole request head is parsed: it is the
    # head's deadline too. Short also because Hypercorn's trio worker holds a
    # departed client's socket until this timer ends (it does not close on
    # EOF), so a long one lets departed clients pile up CLOSE_WAIT sockets.
    # Busy keep-alive connections are not affected.
    config.keep_alive_timeout = clients.head_timeout
    config.graceful_timeout = grace
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, state)
    context = WorkerContext(None)
    listener = GuardedListener(
        trio.SocketListener(trio.socket.from_stdlib_socket(sock)), clients, total
    )
    metrics = getattr(app, "metrics", None)
    if isinstance(metrics, Metrics):
        metrics.watch_connections(lambda: (listener.open, listener.refused, listener.stalled))
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            handler = partial(TCPServer, wrapped, config, context, ConnectionState(state.copy()))
            try:
                async with trio.open_nursery() as accepting:
                    serving = partial(trio.serve_listeners, handler_nursery=server_nursery)
                    accepting.start_soon(serving, handler, [listener])
                    task_status.started(url)
                    if shutdown_trigger is None:
                        await trio.sleep_forever()
                    await shutdown_trigger()
                    accepting.cancel_scope.cancel()
            finally:
                # The listener owns the socket: closing it ends new connections.
                with trio.CancelScope(shield=True):
                    await listener.aclose()
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + grace
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
