"""The routes table: one answer for routing, the scope a key needs, and the log's door."""

from __future__ import annotations

import pytest

from sandbox.http.routes import DOORS, SERVICE, route_of


@pytest.mark.parametrize(
    ("path", "door", "scope"),
    [
        ("/healthz", "ops", None),
        ("/readyz", "ops", None),
        ("/metrics", "ops", "admin"),
        ("/api/v2/execute", "execute", "execute"),
        ("/api/v2/connect", "execute", "execute"),
        ("/actions", "action", "actions"),
        ("/actions/hello", "action", "actions"),
        ("/request", "action", "actions"),
        ("/openapi.json", "action", "actions"),
        ("/request/orders/new", "gateway", "publish"),
        ("/publish/orders.new", "gateway", "publish"),
        ("/subscribe/orders.*", "gateway", "publish"),
        ("/ws", "gateway", "publish"),
        ("/hello.py", "service", "services"),
        ("/", "service", "services"),
    ],
)
def test_every_door_and_its_scope(path: str, door: str, scope: str | None) -> None:
    route = route_of(path, DOORS)
    assert (route.door, route.scope) == (door, scope)


@pytest.mark.parametrize("path", ["/wsx", "/actionsfoo", "/requests", "/api/v2x", "/metrics/x"])
def test_a_look_alike_path_is_a_service(path: str) -> None:
    assert route_of(path, DOORS) is SERVICE


def test_a_door_not_served_leaves_its_paths_to_the_services() -> None:
    assert route_of("/ws", {"ops", "service"}) is SERVICE
    assert route_of("/api/v2/execute", {"ops", "service", "action"}) is SERVICE
    assert route_of("/healthz", {"ops", "service"}).door == "ops"
