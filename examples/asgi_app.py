"""Hosting stack's ASGI app under another ASGI server, mounted in a bigger app.

Run it with Hypercorn's Trio worker (stack's core is Trio):

    hypercorn --worker-class trio --bind 127.0.0.1:8000 examples.asgi_app:app

Then ``/`` is answered by the parent app and ``/scripts/<name>`` runs
``examples/services/<name>.*`` in a fresh interpreter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox import EngineConfig, create_app

# The stack app opens its engine in the ASGI lifespan.
scripts = create_app(
    Path(__file__).parent / "services",
    EngineConfig(isolate="auto"),
)
PREFIX = "/scripts"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A tiny parent app that mounts stack at /scripts."""
    if scope["type"] == "lifespan":
        await scripts(scope, receive, send)
        return
    path = scope.get("path", "")
    if scope["type"] == "http" and (path == PREFIX or path.startswith(PREFIX + "/")):
        mounted = dict(scope, root_path=scope.get("root_path", "") + PREFIX)
        await scripts(mounted, receive, send)
        return
    body = b"parent app: try /scripts/hello.py?name=you\n"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
