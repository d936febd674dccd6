"""Runs an ASGI app on Hypercorn's Trio worker, on a port we bind ourselves."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..errors import ConfigError

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
        sock.set_inheritable(True)
        return sock
    raise ConfigError(f"no free port from {port} to {port + tries - 1} on {host}: {last}")


async def serve(
    app: Any,
    sock: socket.socket,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    grace: float = 10.0,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on ``sock`` until ``shutdown_trigger`` returns (or cancelled).

    Calls ``task_status.started(url)`` once it accepts connections. When
    ``shutdown_trigger`` returns, it stops accepting and gives requests in
    flight ``grace`` seconds to finish; then they are cancelled (their calls
    killed and reaped).
    """
    host, port = sock.getsockname()[:2]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    config = HypercornConfig()
    # Hypercorn owns the socket from here on and closes it when it stops.
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    # Short: Hypercorn's trio worker holds a departed client's socket until
    # this timer ends (it does not close on EOF), so a long one lets departed
    # clients pile up CLOSE_WAIT sockets. Busy keep-alive connections are not
    # affected; idle ones close after a second.
    config.keep_alive_timeout = 1
    config.graceful_timeout = grace

    class _Started:
        def started(self, value: Any = None) -> None:
            task_status.started(url)

    await hypercorn_serve(
        app,
        config,
        shutdown_trigger=shutdown_trigger,
        task_status=_Started(),
    )
