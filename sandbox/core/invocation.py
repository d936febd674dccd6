"""What a front door asks the core to run: an :class:`Invocation` (frozen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .languages import Language


@dataclass(frozen=True)
class Invocation:
    """One call to run.

    Attributes:
        language: the language to run it with.
        script: the script on the host (readable by the call's uid).
        args: arguments after the script.
        hook: the Hook JSON (params, req, env), or None for none.
        env: more environment (CGI variables, the service's env).
        request_id: the id logs and responses carry.
        cgi: read status and headers from the top of stdout.
        network: allow network access under bwrap.
        stdin: bytes written to stdin before the front door's stream.
        door: the front door, for metrics: ``service``, ``execute``, ``action``...
        build: a compiled build to run (``{build}`` in the run line).
        stderr_limit: stderr bytes allowed; past it the call is killed.
        code_dir: the folder the script belongs to (an action's folder, a
            service's): made readable by the call and, under bwrap, bound
            whole and read-only at /stack/code, so the script can use the
            files beside it. A folder inside the engine's own (a service's
            copy, staged by the services) is used as it is; any other is
            copied there first (:meth:`Engine.staged_folder`).
    """

    language: Language
    script: Path
    args: Sequence[str] = ()
    hook: Mapping[str, Any] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    request_id: str = ""
    cgi: bool = False
    network: bool | None = None
    stdin: bytes = b""
    build: Path | None = None
    stderr_limit: int | None = None
    code_dir: Path | None = None
    door: str = "service"
