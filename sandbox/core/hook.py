"""The Hook's flat form: what shells, Perl, Tcl and Lua read (``Hook_params_name``).

Part of the call contract the engine writes for every call (the flat file,
or the environment when it fits). Sans-IO.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

MAX_FLAT_ENV = 128 * 1024
_FLAT_NAME = re.compile(r"[^A-Za-z0-9_]")


def flatten(value: Any, prefix: str = "Hook") -> list[tuple[str, str]]:
    """Flatten the Hook for shells: ``Hook_params_name`` -> value.

    Every character outside ``[A-Za-z0-9_]`` becomes ``_``; arrays use their
    index; values holding NUL are left out (no shell can hold them).
    """
    out: list[tuple[str, str]] = []
    _flatten_into(out, value, prefix)
    return out


@functools.lru_cache(maxsize=1024)
def _flat_key(key: str) -> str:
    # The Hook's keys repeat from call to call (params, req, method, headers...).
    return _FLAT_NAME.sub("_", key)


def _flatten_into(out: list[tuple[str, str]], value: Any, name: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten_into(out, item, f"{name}_{_flat_key(str(key))}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten_into(out, item, f"{name}_{index}")
    else:
        if value is None:
            text = ""
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = value
        else:
            text = json.dumps(value)
        if "\0" in text:
            return
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # JSON allows lone surrogates; no shell, file or environment does.
            text = text.encode("utf-8", "replace").decode("utf-8")
        out.append((name, text))


def encode_flat(pairs: Iterable[tuple[str, str]]) -> bytes:
    """The ``name\\0value\\0`` file that shell preludes read."""
    return b"".join(
        name.encode() + b"\0" + value.encode("utf-8", "surrogateescape") + b"\0"
        for name, value in pairs
    )


def flat_env(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The flattened variables that fit in an environment (for ``hook_env`` languages)."""
    env: dict[str, str] = {}
    total = 0
    for name, value in pairs:
        total += len(name) + len(value) + 2
        if total > MAX_FLAT_ENV:
            break
        env[name] = value
    return env


def whole_flat_env(pairs: Sequence[tuple[str, str]]) -> dict[str, str] | None:
    """All the flattened variables, or None when they do not all fit in an environment."""
    if sum(len(name) + len(value) + 2 for name, value in pairs) > MAX_FLAT_ENV:
        return None
    return dict(pairs)
