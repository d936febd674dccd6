"""Limits of one call, and parsing of the units people write them in.

Sans-IO: plain values and functions, no processes.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, LimitTooHigh

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)


def parse_duration(value: str | float | int, *, default_unit: str = "ms") -> float:
    """Parse a duration such as ``500``, ``"5s"``, ``"250ms"``, ``"2m"`` into seconds.

    Args:
        value: a number (in ``default_unit``) or a string with an optional unit.
        default_unit: the unit of a bare number, ``"ms"`` (as microcule's ``-t``) or ``"s"``.

    Raises:
        ConfigError: the value is not a duration.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        number, unit = float(value), default_unit
    else:
        match = _DURATION.match(value)
        if not match:
            raise ConfigError(f"not a duration: {value!r} (write e.g. 500ms, 5s or 2m)")
        number, unit = float(match.group(1)), match.group(2) or default_unit
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    seconds = number * scale
    if not math.isfinite(seconds):
        raise ConfigError(f"not a duration: {value!r}")
    return seconds


def parse_size(value: str | int) -> int:
    """Parse a size such as ``1048576``, ``"512MiB"``, ``"64k"``, ``"1G"`` into bytes.

    ``k``/``M``/``G`` are powers of 1000, ``KiB``/``MiB``/``GiB`` powers of 1024.

    Raises:
        ConfigError: the value is not a size.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(
            f"not a size: {value!r} (write a whole number of bytes, or e.g. 64KiB or 1.5GiB)"
        )
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"a size cannot be negative: {value}")
        return value
    match = _SIZE.match(value)
    if not match:
        raise ConfigError(f"not a size: {value!r} (write e.g. 65536, 64KiB, 256MiB or 1G)")
    unit = (match.group(2) or "").lower()
    scale = 1
    if unit not in ("", "b"):
        base = 1024 if "i" in unit else 1000
        scale = base ** ("kmgt".index(unit[0]) + 1)
    return int(float(match.group(1)) * scale)


@dataclass(frozen=True)
class Limits:
    """What one call may use. ``None`` means unlimited.

    Attributes:
        timeout: wall-clock seconds before the call is killed.
        cpu: CPU seconds (RLIMIT_CPU, rounded up to whole seconds).
        memory: bytes of memory (RLIMIT_AS or RLIMIT_DATA, per language).
        processes: processes and threads of the call (RLIMIT_NPROC; needs a
            dedicated uid, so only applied when the server runs as root).
        file_size: largest file the call may write, in bytes (RLIMIT_FSIZE).
        open_files: open file descriptors (RLIMIT_NOFILE).
        output: bytes of stdout the call may produce; past it the stream is cut.
        body: bytes of request body accepted; past it the request gets 413.
    """

    timeout: float | None = 10.0
    cpu: float | None = 10.0
    memory: int | None = 512 * 1024 * 1024
    processes: int | None = 64
    file_size: int | None = 64 * 1024 * 1024
    open_files: int | None = 256
    output: int | None = 64 * 1024 * 1024
    body: int | None = 16 * 1024 * 1024

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"limit {field.name} must be positive, got {value!r}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, base: Limits | None = None) -> Limits:
        """Build limits from a mapping of human-written values over ``base``.

        Keys are the attribute names (``timeout``, ``memory``...); durations
        take units (``5s``; a bare number is seconds here), sizes take units
        (``256MiB``); ``null``/``"none"`` means unlimited.

        Raises:
            ConfigError: an unknown key or a bad value.
        """
        base = base or cls()
        names = {f.name for f in dataclasses.fields(cls)}
        changes: dict[str, Any] = {}
        for key, raw in data.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ConfigError(
                    f"unknown limit {key!r}; known limits: {', '.join(sorted(names))}"
                )
            try:
                changes[name] = _parse_limit(name, raw)
            except ConfigError as exc:
                if exc.message.startswith(f"limit {name}"):
                    raise
                raise ConfigError(f"limit {name}: {exc.message}") from exc
        return dataclasses.replace(base, **changes)

    def within(self, maxima: Limits) -> Limits:
        """Check that every limit is at most the maximum.

        Raises:
            LimitTooHigh: naming the first limit over its maximum.
        """
        for field in dataclasses.fields(self):
            value, ceiling = getattr(self, field.name), getattr(maxima, field.name)
            if ceiling is None:
                continue
            if value is None or value > ceiling:
                raise LimitTooHigh(
                    f"limit {field.name}={value} is above the server's maximum {ceiling}",
                    limit=field.name,
                    maximum=ceiling,
                )
        return self

    def lowered_to(self, ceiling: Limits | None) -> Limits:
        """Each limit at most ``ceiling``'s (a caller's own maxima); None lowers nothing."""
        if ceiling is None:
            return self
        changes = {}
        for field in dataclasses.fields(self):
            cap, current = getattr(ceiling, field.name), getattr(self, field.name)
            if cap is not None and (current is None or current > cap):
                changes[field.name] = cap
        return dataclasses.replace(self, **changes) if changes else self

    def to_json(self) -> dict[str, Any]:
        """The limits as a JSON-able mapping."""
        return dataclasses.asdict(self)


def _parse_limit(name: str, raw: Any) -> Any:
    if raw is None or (isinstance(raw, str) and raw.lower() in ("none", "unlimited")):
        return None
    if name in ("timeout", "cpu"):
        return parse_duration(raw, default_unit="s")
    if name in ("memory", "file_size", "output", "body"):
        return parse_size(raw)
    if isinstance(raw, int) and not isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().isdigit():
        return int(raw)
    raise ConfigError(f"limit {name} must be a whole number, got {raw!r}")
