"""Services: scripts served over HTTP, one script or a folder of them.

A service is a script file plus its language. Its folder (a single
script's own, or the folder served) is its code: the engine runs a staged
copy of it (see :mod:`sandbox.features.staging`), so the script can load the
modules beside it; with ``watch`` the copy is refreshed when the files change
on disk.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.languages import Language, Registry
from ..core.limits import Limits
from ..errors import ConfigError, NotFound, StackError
from . import staging

log = logging.getLogger("stack")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_NOT_SCRIPTS = {".md", ".txt", ".yaml", ".yml", ".json", ".html"}


@dataclass(frozen=True)
class ServiceOptions:
    """How services are run.

    Attributes:
        language: force this language instead of detecting it.
        cgi: read ``Status:`` and headers from the top of stdout.
        watch: re-read a script from disk when it changes.
        env: environment given to every call of these services.
    """

    language: str | None = None
    cgi: bool = False
    watch: bool = False
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Service:
    """One script served over HTTP.

    Attributes:
        name: its name (the file name in a folder, the stem of a single script).
        source: the script on disk.
        language: its language.
        code: the staged copy of its folder, shared by the services of one folder.
        script: the script's path inside that folder.
        limits: overrides of the server's default limits (from the sidecar).
        network: network access under bwrap (None: the server's default).
        warm: its own warm pool size (None: the server's ``--warm``).
    """

    name: str
    source: Path
    language: Language
    code: staging.StagedCode
    script: str
    cgi: bool
    env: Mapping[str, str]
    limits: Mapping[str, Any] = field(default_factory=dict)
    network: bool | None = None
    warm: int | None = None

    @property
    def staged(self) -> Path:
        """The script the engine runs: in the staged copy of its folder."""
        return self.code.target / self.script

    @property
    def code_dir(self) -> Path:
        """The staged copy of its folder (``Invocation.code_dir``)."""
        return self.code.target

    @property
    def pool_key(self) -> str:
        """The name of its warm pool."""
        return f"service:{self.name}"

    def refresh(self) -> bool:
        """Sync the staged copy of its folder with the disk (blocking; a walk of the folder).

        Returns:
            whether anything changed.

        Raises:
            NotFound: the script was removed.
        """
        if not self.source.is_file():
            raise NotFound(f"the script of service {self.name!r} was removed")
        try:
            return self.code.sync()
        except FileNotFoundError as exc:
            raise NotFound(f"the script of service {self.name!r} was removed") from exc


_SIDECAR_KEYS = {"limits", "env", "network", "cgi", "language", "warm"}


def sidecar_path(script: Path) -> Path:
    """Where a script's settings live: ``hello.py`` -> ``hello.py.stack.yaml``."""
    return script.with_name(script.name + ".stack.yaml")


def load_sidecar(script: Path) -> dict[str, Any]:
    """A script's own settings, or {} when it has none.

        # hello.py.stack.yaml
        limits: {timeout: 30s, memory: 1GiB}
        env: {GREETING: hi}
        network: true      # under bwrap
        cgi: false
        language: python
        warm: 4            # interpreters started ahead of their calls

    Raises:
        ConfigError: a bad file, naming it and the key.
    """
    path = sidecar_path(script)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top")
    unknown = set(data) - _SIDECAR_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known keys: {', '.join(sorted(_SIDECAR_KEYS))}"
        )
    for key in ("limits", "env"):
        if not isinstance(data.get(key, {}), dict):
            raise ConfigError(f"{path}: '{key}' must be a mapping")
    data["env"] = {str(k): str(v) for k, v in data.get("env", {}).items()}
    for key in ("network", "cgi"):
        # Strictly booleans: a quoted "false" must not turn the network on.
        if key in data and not isinstance(data[key], bool):
            raise ConfigError(f"{path}: '{key}' must be true or false, got {data[key]!r}")
    warm = data.get("warm")
    if warm is not None and (isinstance(warm, bool) or not isinstance(warm, int) or warm < 0):
        raise ConfigError(f"{path}: 'warm' must be a whole number of interpreters, got {warm!r}")
    try:
        Limits.from_mapping(data.get("limits", {}))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc.message}") from exc
    return data


class Services:
    """The services of one server: a single script, or every script of a folder."""

    def __init__(self, registry: Registry, stage_dir: Path, options: ServiceOptions) -> None:
        self.registry = registry
        self.stage_dir = stage_dir
        self.options = options
        self.single: Service | None = None
        self.folder: Path | None = None
        self.check_limits: Callable[[Mapping[str, Any]], object] | None = None
        self._services: dict[str, Service] = {}
        self._aliases: dict[str, str] = {}
        self._ambiguous: dict[str, list[str]] = {}
        self.skipped: list[str] = []
        self._code: staging.StagedCode | None = None

    @classmethod
    def from_path(cls, path: Path, registry: Registry, stage_dir: Path,
                  options: ServiceOptions,
                  check_limits: Callable[[Mapping[str, Any]], object] | None = None,
                  ) -> Services:  # fmt: skip
        """Serve ``path``: a script (at every URL) or a folder (each script at ``/<name>``).

        Raises:
            ConfigError: the path does not exist.
            UnknownLanguage: a single script of an unknown language.
        """
        services = cls(registry, stage_dir, options)
        services.check_limits = check_limits
        if path.is_file():
            folder = path.absolute().parent
            why = staging.not_code(folder)
            code = staging.StagedCode(folder, stage_dir / "code", [path.name], whole=why is None)
            services.single = services._load(path, name=path.stem, code=code)
            services.single.refresh()
            services._log_staged(code, why)
        elif path.is_dir():
            services.folder = path
            services.scan()
        else:
            raise ConfigError(f"{path} is neither a script nor a folder")
        return services

    def scan(self) -> list[str]:
        """(Re)load the folder's scripts; returns a line per file skipped and why.

        Each script is served at ``/<file name>`` (``/hello.py``), and also at
        ``/<stem>`` (``/hello``) when no other script shares that stem.
        """
        assert self.folder is not None
        if self._code is None:
            self._code = staging.StagedCode(self.folder.absolute(), self.stage_dir / "code")
        skipped: list[str] = []
        found: dict[str, Service] = {}
        stems: dict[str, list[str]] = {}
        for path in sorted(self.folder.iterdir()):
            if not path.is_file() or path.name.startswith(".") or path.suffix in _NOT_SCRIPTS:
                continue
            if not _NAME.match(path.name):
                skipped.append(f"{path.name}: not a usable URL name")
                continue
            try:
                found[path.name] = self._load(path, name=path.name, code=self._code)
            except StackError as exc:
                skipped.append(f"{path.name}: {exc.message}")
                continue
            stems.setdefault(path.stem, []).append(path.name)
        self._aliases = {
            stem: names[0] for stem, names in stems.items() if len(names) == 1 and stem not in found
        }
        self._ambiguous = {stem: names for stem, names in stems.items() if len(names) > 1}
        first = self._code.last is None
        self._code.always = set(found)
        self._code.sync()
        if first:
            self._log_staged(self._code, None)
        self._services = found
        self.skipped = skipped
        return skipped

    @staticmethod
    def _log_staged(code: staging.StagedCode, why: str | None) -> None:
        """Say what of a code folder its calls see: the folder, or why only the scripts."""
        surveyed = code.last
        assert surveyed is not None
        why = why or surveyed.too_large
        if why is not None:
            log.warning(
                "services: %s is not staged (%s): calls get the script(s) alone, without "
                "the files beside them; to use modules beside a script, put it in a folder "
                "of its own", code.source, why,
            )  # fmt: skip
        else:
            log.info("services: %s is staged read-only as the code of its calls (%s)",
                     code.source, surveyed.summary())  # fmt: skip

    def _load(self, path: Path, *, name: str, code: staging.StagedCode) -> Service:
        sidecar = load_sidecar(path)
        language_name = sidecar.get("language") or self.options.language
        if language_name:
            language = self.registry.get(str(language_name))
        else:
            with path.open("rb") as handle:
                head = handle.read(256)
            language = self.registry.detect(path.name, head)
        env = {**self.options.env, **sidecar.get("env", {})}
        service = Service(
            name,
            path,
            language,
            code,
            path.name,
            bool(sidecar.get("cgi", self.options.cgi)),
            env,
            limits=sidecar.get("limits", {}),
            network=sidecar.get("network"),
            warm=sidecar.get("warm"),
        )
        if self.check_limits is not None:
            self.check_limits(service.limits)
        return service

    def path_of(self, service: Service) -> str:
        """The shortest URL path a service is served at."""
        for alias, name in self._aliases.items():
            if name == service.name:
                return "/" + alias
        return "/" + service.name

    def names(self) -> list[str]:
        """Every URL name served (file names and unique stems)."""
        return sorted([*self._services, *self._aliases])

    def __iter__(self) -> Iterator[Service]:
        if self.single is not None:
            yield self.single
        else:
            yield from self._services.values()

    def route(self, path: str) -> tuple[Service, str, str]:
        """The service for a URL path, with its SCRIPT_NAME and PATH_INFO.

        Raises:
            NotFound: no service there.
        """
        if self.single is not None:
            return self.single, "", path
        parts = path.lstrip("/").split("/", 1)
        name = parts[0]
        known = name in self._services or name in self._aliases
        if self.options.watch and self.folder is not None and not known:
            if (self.folder / name).is_file() or any(self.folder.glob(f"{name}.*")):
                self.scan()
        service = self._services.get(name) or self._services.get(self._aliases.get(name, ""))
        if service is None:
            if name in self._ambiguous:
                choices = ", ".join("/" + n for n in self._ambiguous[name])
                raise NotFound(f"/{name} is ambiguous; use one of {choices}")
            listing = ", ".join("/" + n for n in self.names()) or "none"
            raise NotFound(f"no service at /{name}; services: {listing}")
        rest = "/" + parts[1] if len(parts) > 1 else ""
        return service, "/" + name, rest
