"""The one routes table: which front door serves a path, and the scope it needs.

Routing (:class:`~sandbox.http.app.StackApp`), authorisation (the scope a
key must hold) and the access log's ``door`` field all read it, so the three
cannot disagree. Sans-IO.

    door      paths                                            scope
    ops       /healthz /readyz                                 (none)
    ops       /metrics                                         admin
    execute   /api/v2/...                                      execute
    action    /actions[/...] /request /openapi.json            actions
    gateway   /publish/... /request/... /subscribe/... /ws     publish
    judge0    /submissions /languages /statuses /about ...     execute
    service   everything else                                  services

A door that is not served (no ``--gateway``, no actions...) routes nothing:
its paths fall to the services.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass

JUDGE0_ROUTES = ("submissions", "languages", "statuses", "about", "version", "config_info",
                 "system_info", "workers")  # fmt: skip
"""Judge0's routes, at the server's root as Judge0 serves them."""


@dataclass(frozen=True)
class Route:
    """A group of paths served by one front door.

    Attributes:
        door: the front door's name (logs, metrics).
        scope: the scope an API key needs (None: open to all).
        exact: paths matched whole.
        prefixes: path prefixes, each ending with ``/``.
    """

    door: str
    scope: str | None
    exact: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()

    def matches(self, path: str) -> bool:
        """Whether ``path`` is one of this route's."""
        return path in self.exact or path.startswith(self.prefixes)


ROUTES: tuple[Route, ...] = (
    Route("ops", None, exact=("/healthz", "/readyz")),
    Route("ops", "admin", exact=("/metrics",)),
    Route("execute", "execute", exact=("/api/v2",), prefixes=("/api/v2/",)),
    Route(
        "action",
        "actions",
        exact=("/actions", "/request", "/openapi.json"),
        prefixes=("/actions/",),
    ),
    Route("gateway", "publish", exact=("/ws",), prefixes=("/publish/", "/request/", "/subscribe/")),
    Route(
        "judge0",
        "execute",
        exact=tuple(f"/{name}" for name in JUDGE0_ROUTES),
        prefixes=tuple(f"/{name}/" for name in JUDGE0_ROUTES),
    ),
)
SERVICE = Route("service", "services")
"""Every other path: a script of the services."""

DOORS = frozenset(route.door for route in (*ROUTES, SERVICE))


def route_of(path: str, doors: Container[str] = DOORS) -> Route:
    """The route serving ``path``, among the ``doors`` this server serves."""
    for route in ROUTES:
        if route.door in doors and route.matches(path):
            return route
    return SERVICE
