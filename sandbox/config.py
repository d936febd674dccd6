"""One configuration object for a server, from a YAML file and command-line flags.

Unknown keys are rejected loudly, naming the key and the file.

    isolate: bwrap            # none | bwrap | auto
    max_running: 16           # calls running at once
    max_queue: 64             # calls waiting; past it 503 + Retry-After
    network: false            # may calls use the network (under bwrap)
    limits:                   # defaults of every call
      timeout: 10s
      cpu: 10s
      memory: 512MiB
      processes: 64
      file_size: 64MiB
      open_files: 256
      output: 64MiB
      body: 16MiB
    maxima:                   # what a service or request may raise them to
      timeout: 5m
    env: {API_URL: https://example.org}   # given to every call; or a list of
                                          # -e forms: [API_URL=https://..., EXO__*, HOME]
    registry: [./my-languages]            # extra language folders (relative: to this file)
    uid_base: 61000           # first sandbox uid when running as root
    warm: 2                   # warm pool per service (or {python: 4, javascript: 2})
    warm_idle: 60s            # a pool unused this long shrinks to one interpreter
    disk: 512MiB              # what a call may write (a tmpfs on its directory; root only)
    disk_files: 32768         # files a call may make there
    http:                     # what one HTTP client may hold
      max_connections: 1024   # in all (at most half the open-file limit)
      max_connections_per_client: 64    # from one address; past either 503 + Retry-After
      head_timeout: 1s        # to send a request head (also the keep-alive timeout)
      body_timeout: 10s       # waiting for a request body, plus a second per body_min_rate bytes
      body_min_rate: 4KiB     # past the deadline: 408
      send_timeout: 30s       # a client taking under 64 KiB of its response in this is closed
      output_buffer: 256KiB   # a call's output held for a slow reader; then it waits
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .core.engine import EngineConfig
from .core.languages import DEFAULT_PATH
from .core.limits import Limits, parse_duration, parse_size
from .errors import ConfigError
from .features.judge0 import Settings
from .http.clients import ClientLimits

_KEYS = {
    "isolate", "max_running", "max_queue", "network", "limits", "maxima", "env", "registry",
    "uid_base", "path", "lang", "temp_dir", "auth", "rate_limit", "brokers", "triggers",
    "warm", "warm_idle", "disk", "disk_files", "judge0", "http",
}  # fmt: skip


@dataclass(frozen=True)
class Config:
    """Everything a server needs to know, with typed defaults.

    Attributes:
        engine: the core's settings (isolation, limits, concurrency).
        env: environment variables given to every call.
        auth: the ``auth`` section (API keys, JWT), see :mod:`sandbox.features.auth`.
        rate_limit: the ``rate_limit`` section.
        brokers: the ``brokers`` section: names to broker settings (``url``...).
        triggers: the ``triggers`` section (see :mod:`sandbox.features.triggers`).
        judge0: the ``judge0`` section (see :class:`sandbox.features.judge0.Settings`).
        http: what an HTTP client may hold: connections, time for its request,
            patience for its response (see :class:`~sandbox.http.clients.ClientLimits`).
        base: the folder relative paths in the file are resolved from.
    """

    engine: EngineConfig = field(default_factory=EngineConfig)
    env: Mapping[str, str] = field(default_factory=dict)
    auth: Mapping[str, Any] = field(default_factory=dict)
    rate_limit: Mapping[str, Any] = field(default_factory=dict)
    brokers: Mapping[str, Any] = field(default_factory=dict)
    triggers: Sequence[Any] = ()
    judge0: Mapping[str, Any] = field(default_factory=dict)
    http: ClientLimits = field(default_factory=ClientLimits)
    base: Path = Path(".")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "config",
                     base: Config | None = None) -> Config:  # fmt: skip
        """Build a config from a mapping (a parsed YAML file) over ``base``.

        Raises:
            ConfigError: naming the unknown key or bad value, and ``source``.
        """
        base = base or cls()
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(
                f"{source}: unknown key(s) {', '.join(sorted(unknown))}; "
                f"known keys: {', '.join(sorted(_KEYS))}"
            )
        engine = base.engine
        changes: dict[str, Any] = {}
        try:
            maxima = engine.maxima
            if "maxima" in data:
                maxima = Limits.from_mapping(_mapping(data, "maxima", source), base=maxima)
                changes["maxima"] = maxima
            if "limits" in data:
                changes["limits"] = Limits.from_mapping(
                    _mapping(data, "limits", source), base=engine.limits
                )
            for key in ("isolate", "path", "lang"):
                if key in data:
                    changes[key] = str(data[key])
            for key in ("max_running", "max_queue", "uid_base"):
                if key in data:
                    changes[key] = _int(data[key], key, source)
            if "network" in data:
                # Strictly a boolean: a quoted "false" must not turn the network on.
                if not isinstance(data["network"], bool):
                    raise ConfigError(
                        f"{source}: 'network' must be true or false, got {data['network']!r}"
                    )
                changes["network"] = data["network"]
            if "warm" in data:
                changes["warm"] = {**engine.warm, **warm_sizes(data["warm"], source)}
            if "warm_idle" in data:
                changes["warm_idle"] = parse_duration(str(data["warm_idle"]), default_unit="s")
            if "temp_dir" in data:
                changes["temp_dir"] = Path(str(data["temp_dir"]))
            if "disk" in data:
                raw = data["disk"]
                none = raw is None or str(raw).lower() in ("none", "unlimited")
                changes["disk"] = None if none else _above_zero(parse_size(raw), "disk", source)
            if "disk_files" in data:
                files = _int(data["disk_files"], "disk_files", source)
                changes["disk_files"] = _above_zero(files, "disk_files", source)
            if "registry" in data:
                dirs = data["registry"]
                if not isinstance(dirs, list):
                    raise ConfigError(f"{source}: 'registry' must be a list of folders")
                changes["language_dirs"] = (*engine.language_dirs, *(Path(str(d)) for d in dirs))
            engine = dataclasses.replace(engine, **changes)
        except ConfigError as exc:
            if exc.message.startswith(source):
                raise
            # The same class (LimitTooHigh stays one) and details, with the source.
            raise type(exc)(f"{source}: {exc.message}", **exc.details) from exc
        env = dict(base.env)
        if "env" in data:
            if isinstance(data["env"], list):
                try:
                    env.update(env_from_flags([str(x) for x in data["env"]], os.environ))
                except ConfigError as exc:
                    raise ConfigError(f"{source}: env: {exc.message}") from exc
            else:
                env.update({str(k): str(v) for k, v in _mapping(data, "env", source).items()})
            engine = dataclasses.replace(engine, env=env)
        auth = dict(_mapping(data, "auth", source)) if "auth" in data else dict(base.auth)
        rate_limit = (
            dict(_mapping(data, "rate_limit", source)) if "rate_limit" in data else base.rate_limit
        )
        brokers = dict(_mapping(data, "brokers", source)) if "brokers" in data else base.brokers
        http = base.http
        if "http" in data:
            http = ClientLimits.from_mapping(
                _mapping(data, "http", source), base=http, source=f"{source}: http"
            )
        triggers = data.get("triggers", base.triggers) or ()
        if not isinstance(triggers, list | tuple):
            raise ConfigError(f"{source}: 'triggers' must be a list")
        judge0 = dict(_mapping(data, "judge0", source)) if "judge0" in data else base.judge0
        Settings.from_mapping(judge0, source=source)  # unknown keys fail at load
        return cls(engine=engine, env=env, auth=auth, rate_limit=rate_limit, brokers=brokers,
                   triggers=tuple(triggers), judge0=judge0, http=http,
                   base=base.base)  # fmt: skip

    @classmethod
    def from_file(cls, path: Path, *, base: Config | None = None) -> Config:
        """Read a YAML config file.

        Raises:
            ConfigError: the file is missing, not YAML, or has a bad key or value.
        """
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top")
        config = cls.from_mapping(_from_folder(data, path.parent), source=str(path), base=base)
        return dataclasses.replace(config, base=path.parent)


def env_from_flags(items: Sequence[str], environ: Mapping[str, str]) -> dict[str, str]:
    """``-e`` flags as variables for every call.

    ``KEY=VALUE`` sets KEY; ``KEY`` passes the server's own KEY (skipped when it
    is unset); ``PREFIX*`` passes every server variable starting with PREFIX
    (``EXO__*`` for Exo's settings), except the ``{{NAME}}`` variables of
    actions (``STACK__VARIABLE__*``, ``EXO__VARIABLE__*``): those reach an
    action only through its input.

    Raises:
        ConfigError: an empty name, or a name that is not a variable name.
    """
    from .features.actions import EXO_VARIABLE_PREFIX, VARIABLE_PREFIX

    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if sep:
            if not key:
                raise ConfigError(f"--env takes KEY=VALUE, KEY or PREFIX*, got {item!r}")
            env[key] = value
        elif key.endswith("*") and _ENV_NAME.match(key[:-1] or "_"):
            secret = (VARIABLE_PREFIX, EXO_VARIABLE_PREFIX)
            env.update({k: v for k, v in environ.items()
                        if k.startswith(key[:-1]) and not k.startswith(secret)})  # fmt: skip
        elif _ENV_NAME.match(key):
            if key in environ:
                env[key] = environ[key]
        else:
            raise ConfigError(f"--env takes KEY=VALUE, KEY or PREFIX*, got {item!r}")
    return env


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _from_folder(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with its relative ``registry`` folders and ``temp_dir`` made ``folder``'s."""
    data = dict(data)
    if isinstance(data.get("registry"), list):
        data["registry"] = [str(folder / str(entry)) for entry in data["registry"]]
    if data.get("temp_dir") is not None:
        data["temp_dir"] = str(folder / str(data["temp_dir"]))
    return data


def _above_zero(value: int, key: str, source: str) -> int:
    # A tmpfs mounted with size=0 or nr_inodes=0 has no limit at all.
    if value <= 0:
        raise ConfigError(f"{source}: '{key}' must be above 0 (or disk: none for no quota), "
                          f"got {value!r}")  # fmt: skip
    return value


def _mapping(data: Mapping[str, Any], key: str, source: str) -> Mapping[str, Any]:
    value = data[key]
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: '{key}' must be a mapping")
    return value


def warm_sizes(value: Any, source: str) -> dict[str, int]:
    """``warm: 2`` or ``warm: {python: 4}`` as sizes by language (``*``: every language).

    Raises:
        ConfigError: not a whole number or a mapping of them.
    """
    if isinstance(value, dict):
        return {str(k): _int(v, f"warm.{k}", source) for k, v in value.items()}
    return {"*": _int(value, "warm", source)}


def _int(value: Any, key: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{source}: '{key}' must be a whole number, got {value!r}")
    return value


__all__ = ["DEFAULT_PATH", "Config"]
