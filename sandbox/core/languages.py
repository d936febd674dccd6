"""The language registry: one YAML file per language.

Loading and detection are sans-IO apart from reading the YAML files and
probing versions; see docs/ARCHITECTURE.md for the file format.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, InterpreterMissing, UnknownLanguage

_VERSION = re.compile(r"(\d+\.\d+(?:\.\d+)?)")

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
"""Where interpreters are looked up, and the PATH of every call (unless configured)."""
_FIELDS = {
    "name", "aliases", "extensions", "shebangs", "interpreter", "package", "version",
    "run", "prelude", "memory_limit", "env", "hook_env", "description", "compile",
    "entry", "warm",
}  # fmt: skip


@dataclass(frozen=True)
class Language:
    """One registered language.

    Attributes:
        name: the canonical name (``python``).
        aliases: other accepted names (``python3``, ``py``).
        extensions: file extensions with the dot (``.py``).
        shebangs: interpreter names recognised in ``#!`` lines.
        interpreter: the executable looked up on PATH.
        package: the Debian package that provides the interpreter.
        version_cmd: argv printing the version.
        run: argv template running a file (``{interpreter}``, ``{prelude}``, ``{script}``).
        prelude: absolute path of the prelude file, if any.
        memory_limit: ``"as"`` or ``"data"``: which rlimit caps memory.
        env: extra environment for every call.
        hook_env: also export the flattened ``Hook_*`` variables in the
            environment: ``"fit"`` as many as fit (a shell that cannot read
            the flat file), ``"whole"`` all of them when they fit, and then
            ``STACK_HOOK_ENV=1`` (the prelude can skip reading the file),
            ``""`` never. YAML ``true`` means ``"fit"``.
        compile: argv template of the compile step (``{files}``, ``{build}``...),
            empty for interpreted languages.
        entry: the entry file's name when a request does not give one
            (``Main.java``); default ``main`` + the first extension.
        warm: the prelude can start ahead of its call and wait for it (a
            warm pool); the run line must end with ``{script}``.
        source: the YAML file it came from.
    """

    name: str
    interpreter: str
    run: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    extensions: tuple[str, ...] = ()
    shebangs: tuple[str, ...] = ()
    package: str = ""
    version_cmd: tuple[str, ...] = ()
    prelude: Path | None = None
    memory_limit: str = "as"
    env: Mapping[str, str] = field(default_factory=dict)
    hook_env: str = ""
    description: str = ""
    compile: tuple[str, ...] = ()
    entry: str = ""
    warm: bool = False
    source: Path | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+#._-]*", self.name):
            raise ConfigError(f"{self.source}: bad language name {self.name!r}")
        if self.memory_limit not in ("as", "data"):
            raise ConfigError(
                f"{self.source}: memory_limit must be 'as' or 'data', got {self.memory_limit!r}"
            )
        if self.compile:
            if not any("{build}" in part for part in self.run):
                raise ConfigError(f"{self.source}: a compiled language's 'run' must use {{build}}")
        elif "{script}" not in self.run:
            raise ConfigError(f"{self.source}: 'run' must contain {{script}}")
        if self.warm and (self.run[-1] != "{script}" or self.prelude is None):
            raise ConfigError(
                f"{self.source}: 'warm' needs a prelude and a 'run' ending with {{script}}"
            )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: Path) -> Language:
        """Build a language from a parsed YAML file.

        Raises:
            ConfigError: naming the file and the field that is wrong.
        """
        unknown = set(data) - _FIELDS
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(sorted(unknown))}")
        for required in ("name", "interpreter", "run"):
            if required not in data:
                raise ConfigError(f"{source}: missing field {required!r}")

        def strings(key: str) -> tuple[str, ...]:
            value = data.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{source}: field {key!r} must be a list of strings")
            return tuple(value)

        prelude = data.get("prelude")
        prelude_path = None
        if prelude:
            prelude_path = (source.parent / "preludes" / str(prelude)).resolve()
            if not prelude_path.is_file():
                raise ConfigError(f"{source}: prelude {prelude!r} not found at {prelude_path}")
        env = data.get("env") or {}
        if not isinstance(env, dict):
            raise ConfigError(f"{source}: field 'env' must be a mapping")
        return cls(
            name=str(data["name"]),
            interpreter=str(data["interpreter"]),
            run=strings("run"),
            aliases=strings("aliases"),
            extensions=tuple(e if e.startswith(".") else "." + e for e in strings("extensions")),
            shebangs=strings("shebangs"),
            package=str(data.get("package") or data["interpreter"]),
            version_cmd=strings("version"),
            prelude=prelude_path,
            memory_limit=str(data.get("memory_limit", "as")),
            env={str(k): str(v) for k, v in env.items()},
            hook_env=_hook_env(data.get("hook_env", False), source),
            description=str(data.get("description", "")),
            compile=strings("compile"),
            entry=str(data.get("entry", "")),
            warm=bool(data.get("warm", False)),
            source=source,
        )

    def names(self) -> tuple[str, ...]:
        """The name and every alias."""
        return (self.name, *self.aliases)

    def which(self, path: str | None = None) -> str | None:
        """The interpreter's absolute path on ``path`` (default: $PATH), or None."""
        return shutil.which(self.interpreter, path=path)

    def argv(self, interpreter: str, script: str, args: Iterable[str] = (), *,
             build: str = "", files: Sequence[str] = ()) -> list[str]:  # fmt: skip
        """The command line that runs ``script`` with this language."""
        return self._expand(self.run, interpreter, script, build, files) + list(args)

    def compile_argv(self, interpreter: str, script: str, build: str,
                     files: Sequence[str]) -> list[str]:  # fmt: skip
        """The command line that compiles ``files`` (entry ``script``) into ``build``."""
        return self._expand(self.compile, interpreter, script, build, files)

    def entry_name(self) -> str:
        """The entry file's default name (``main.c``, ``Main.java``)."""
        return self.entry or "main" + (self.extensions[0] if self.extensions else "")

    def _expand(self, template: Sequence[str], interpreter: str, script: str, build: str,
                files: Sequence[str]) -> list[str]:  # fmt: skip
        values = {
            "{interpreter}": interpreter,
            "{script}": script,
            "{prelude}": str(self.prelude) if self.prelude else "",
            "{build}": build,
            "{stem}": os.path.splitext(os.path.basename(script))[0],
        }
        argv: list[str] = []
        for part in template:
            if part == "{prelude}" and not self.prelude:
                continue  # no prelude: no empty argument either
            if part == "{files}":
                argv.extend(files or [script])
                continue
            for placeholder, value in values.items():
                part = part.replace(placeholder, value)
            argv.append(part)
        return argv


@dataclass(frozen=True)
class Installed:
    """What the machine has of a language: its interpreter path and version."""

    language: Language
    path: str | None
    version: str | None

    @property
    def available(self) -> bool:
        """True when the interpreter was found."""
        return self.path is not None

    def require(self) -> str:
        """The interpreter path.

        Raises:
            InterpreterMissing: saying which package to install.
        """
        if self.path is None:
            lang = self.language
            raise InterpreterMissing(
                f"no interpreter for {lang.name!r}: {lang.interpreter!r} is not on PATH; "
                f"install the {lang.package!r} package (apt-get install {lang.package}), "
                "or run `stack languages` to see what is available",
                language=lang.name,
                interpreter=lang.interpreter,
                package=lang.package,
            )
        return self.path


def default_directory() -> Path:
    """The registry shipped with stack (``languages/`` in a checkout).

    Installed, it is the data package ``sandbox._languages``: a regular
    package, so :mod:`importlib.resources` gives its real directory (the
    interpreters read the preludes from disk, so a zipped install cannot work).

    Raises:
        ConfigError: the installed registry is missing or not a directory.
    """
    checkout = Path(__file__).resolve().parent.parent / "languages"
    if (checkout / "preludes").is_dir():
        return checkout
    found = resources.files("sandbox._languages")
    if not isinstance(found, Path) or not found.is_dir():
        raise ConfigError(
            f"stack's language registry is not a directory on disk ({found}): "
            "reinstall stack from a wheel or a checkout (pip install stack-sandbox)"
        )
    return found


class Registry:
    """The languages known to this server, by name, alias and extension."""

    def __init__(self, languages: Iterable[Language], path: str | None = None) -> None:
        languages = list(languages)
        self.path = path
        self._by_name: dict[str, Language] = {}
        self._by_ext: dict[str, Language] = {}
        self._by_shebang: dict[str, Language] = {}
        for lang in languages:
            for name in lang.names():
                other = self._by_name.get(name.lower())
                if other is not None and other.name != lang.name:
                    raise ConfigError(
                        f"language name {name!r} is claimed by both "
                        f"{other.source} and {lang.source}"
                    )
                self._by_name[name.lower()] = lang
            # A later registry folder wins an extension or shebang name, so an
            # operator's folder can take over ".sh" from the shipped bash.
            for ext in lang.extensions:
                self._by_ext[ext.lower()] = lang
            for shebang in lang.shebangs:
                self._by_shebang[shebang] = lang
        self._languages = {lang.name: lang for lang in languages}
        self._installed: dict[str, Installed] = {}

    @classmethod
    def load(cls, directories: Iterable[Path] = (), search_path: str | None = None) -> Registry:
        """Load the shipped registry, then each extra directory in order.

        A later file with the same ``name`` replaces an earlier one, so an
        operator can override a shipped language.

        Raises:
            ConfigError: a malformed YAML file, naming it.
        """
        found: dict[str, Language] = {}
        for directory in (default_directory(), *directories):
            if not directory.is_dir():
                raise ConfigError(f"language directory {directory} does not exist")
            for path in sorted(directory.glob("*.yaml")):
                try:
                    data = yaml.safe_load(path.read_text(encoding="utf-8"))
                except yaml.YAMLError as exc:
                    raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
                if not isinstance(data, dict):
                    raise ConfigError(f"{path}: expected a mapping at the top")
                lang = Language.from_mapping(data, source=path)
                found[lang.name] = lang
        return cls(found.values(), search_path)

    def __iter__(self) -> Iterator[Language]:
        return iter(sorted(self._languages.values(), key=lambda lang: lang.name))

    def __len__(self) -> int:
        return len(self._languages)

    def get(self, name: str) -> Language:
        """The language with this name or alias.

        Raises:
            UnknownLanguage: listing the known names.
        """
        lang = self._by_name.get(name.lower())
        if lang is None:
            raise UnknownLanguage(
                f"unknown language {name!r}; known languages: {', '.join(sorted(self._languages))}",
                language=name,
                known=sorted(self._languages),
            )
        return lang

    def detect(self, filename: str, head: bytes = b"") -> Language:
        """Pick the language of a script from its extension, then its shebang line.

        Args:
            filename: the script's name (only the extension is looked at).
            head: the first bytes of the script, for a ``#!`` line.

        Raises:
            UnknownLanguage: listing the known extensions.
        """
        ext = os.path.splitext(filename)[1].lower()
        if ext and ext in self._by_ext:
            return self._by_ext[ext]
        shebang = parse_shebang(head)
        if shebang and shebang in self._by_shebang:
            return self._by_shebang[shebang]
        known = ", ".join(sorted(self._by_ext))
        what = f"extension {ext!r}" if ext else "no extension"
        if shebang:
            what += f" and shebang {shebang!r}"
        raise UnknownLanguage(
            f"cannot tell the language of {os.path.basename(filename)!r} ({what}); "
            f"known extensions: {known}; or pass --language",
            known_extensions=sorted(self._by_ext),
        )

    def installed(self, lang: Language) -> Installed:
        """The interpreter of ``lang`` on this machine, probed once and cached."""
        cached = self._installed.get(lang.name)
        if cached is None:
            cached = probe(lang, self.path)
            self._installed[lang.name] = cached
        return cached

    def refresh(self) -> None:
        """Forget probed interpreters (after installing one)."""
        self._installed.clear()


def parse_shebang(head: bytes) -> str | None:
    """The interpreter name of a ``#!`` line: ``#!/usr/bin/env python3`` -> ``python3``."""
    if not head.startswith(b"#!"):
        return None
    line = head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    parts = line.split()
    if not parts:
        return None
    name = os.path.basename(parts[0])
    if name == "env":
        # env's options and NAME=VALUE settings come before the command.
        rest = [p for p in parts[1:] if not p.startswith("-") and "=" not in p]
        if not rest:
            return None
        name = os.path.basename(rest[0])
    return name


def probe(lang: Language, search_path: str | None = None) -> Installed:
    """Find the interpreter of ``lang`` on ``search_path`` and ask its version (blocking).

    Versions are remembered on disk (``probes.json`` in the cache folder) by
    the interpreter's real path, size and modification time: an interpreter
    is asked again only when it changed (``stack languages`` need not start
    fourteen of them).
    """
    path = lang.which(search_path)
    if path is None:
        return Installed(lang, None, None)
    version = None
    if lang.version_cmd:
        argv = [part.replace("{interpreter}", path) for part in lang.version_cmd]
        key = _probe_key(path, argv)
        version = _probes().get(key) if key is not None else None
        if version is None:
            try:
                done = subprocess.run(
                    argv, capture_output=True, timeout=10, stdin=subprocess.DEVNULL, check=False
                )
                match = _VERSION.search((done.stdout + done.stderr).decode("utf-8", "replace"))
                version = match.group(1) if match else None
            except (OSError, subprocess.TimeoutExpired):
                version = None
            if key is not None and version is not None:
                _remember_probe(key, version)
    return Installed(lang, path, version)


_PROBES: dict[str, str] | None = None


def _probe_file() -> Path:
    from .launcher import cache_directory

    return cache_directory() / "probes.json"


def _probe_key(path: str, argv: Sequence[str]) -> str | None:
    try:
        real = os.path.realpath(path)
        info = os.stat(real)
    except OSError:
        return None
    return json.dumps([real, info.st_size, info.st_mtime_ns, list(argv)])


def _probes() -> dict[str, str]:
    """The remembered versions (read once per process; a file others may write is ignored)."""
    global _PROBES
    if _PROBES is None:
        _PROBES = {}
        try:
            with open(_probe_file(), encoding="utf-8") as file:
                info = os.fstat(file.fileno())
                if info.st_uid == os.geteuid() and not info.st_mode & 0o022:
                    loaded = json.load(file)
                    if isinstance(loaded, dict):
                        _PROBES = {str(k): str(v) for k, v in loaded.items()}
        except (OSError, ValueError):
            pass
    return _PROBES


def _remember_probe(key: str, version: str) -> None:
    probes = _probes()
    probes[key] = version
    target = _probe_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".probes.{os.getpid()}.tmp")
        with open(partial, "w", encoding="utf-8") as file:
            os.fchmod(file.fileno(), 0o644)
            json.dump(probes, file)
        os.replace(partial, target)  # whole, even with other stack processes writing
    except OSError:
        pass  # only a cache


def _hook_env(value: object, source: Path | None) -> str:
    if value is True:
        return "fit"
    if value is False or value is None:
        return ""
    if value in ("fit", "whole"):
        return str(value)
    raise ConfigError(f"{source}: hook_env must be true, false, 'fit' or 'whole', not {value!r}")
