"""Judge0 CE 1.13.1's API, sans-IO: requests, language ids, statuses, verdicts, result shapes.

Plain functions over dicts and bytes; :mod:`sandbox.http.judge0` serves them
and :mod:`sandbox.features.judge0_store` keeps the submissions.

    POST /submissions?base64_encoded=true&wait=false  {"source_code": ..., "language_id": 71}
    GET  /submissions/{token}?fields=*                  -> stdout, status {id, description}...

A submission is kept as a *record*: a JSON-able dict whose byte fields
(source, stdin, outputs) are base64 text, as Judge0 keeps them, and whose
times are floats; :func:`serialize` shapes it for a response.

One module (about 850 lines): Judge0's contract is tables (language ids,
statuses, the 40 ``config_info`` keys, field limits and their 422 messages)
and the functions that read them; split, each table would sit apart from
the only code that uses it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import os
import re
import resource
import shlex
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from ..core.languages import Language, Registry
from ..core.limits import Limits, parse_duration
from ..errors import ConfigError, InvalidSubmission, NotUtf8, RequestError, UnknownLanguage

VERSION = "1.13.1"

STATUSES: dict[int, str] = {
    1: "In Queue",
    2: "Processing",
    3: "Accepted",
    4: "Wrong Answer",
    5: "Time Limit Exceeded",
    6: "Compilation Error",
    7: "Runtime Error (SIGSEGV)",
    8: "Runtime Error (SIGXFSZ)",
    9: "Runtime Error (SIGFPE)",
    10: "Runtime Error (SIGABRT)",
    11: "Runtime Error (NZEC)",
    12: "Runtime Error (Other)",
    13: "Internal Error",
    14: "Exec Format Error",
}
IN_QUEUE, PROCESSING, ACCEPTED, WRONG_ANSWER, TIME_LIMIT = 1, 2, 3, 4, 5
COMPILATION_ERROR, SIGSEGV, SIGXFSZ, SIGFPE, SIGABRT, NZEC, OTHER = 6, 7, 8, 9, 10, 11, 12
INTERNAL_ERROR, EXEC_FORMAT_ERROR = 13, 14
_BY_SIGNAL = {11: SIGSEGV, 25: SIGXFSZ, 8: SIGFPE, 6: SIGABRT}

# Judge0 CE 1.13.1's ids of the languages stack has: (stack language, display name).
# Older ids of the same language (C and C++ by GCC 7 and 8) run on today's
# compiler: the official SDK asks for C++ by id 52.
LANGUAGES: dict[int, tuple[str, str]] = {
    46: ("bash", "Bash ({v})"),
    48: ("c", "C (GCC {v})"),
    49: ("c", "C (GCC {v})"),
    50: ("c", "C (GCC {v})"),
    52: ("cpp", "C++ (GCC {v})"),
    53: ("cpp", "C++ (GCC {v})"),
    54: ("cpp", "C++ (GCC {v})"),
    60: ("go", "Go ({v})"),
    62: ("java", "Java (OpenJDK {v})"),
    63: ("javascript", "JavaScript (Node.js {v})"),
    64: ("lua", "Lua ({v})"),
    68: ("php", "PHP ({v})"),
    71: ("python", "Python ({v})"),
    72: ("ruby", "Ruby ({v})"),
    73: ("rust", "Rust ({v})"),
    85: ("perl", "Perl ({v})"),
    89: ("bash", "Multi-file program"),
}
#: Judge0's multi-file program: ``additional_files`` holds a ``run`` script (and
#: maybe a ``compile`` one), both run by bash.
MULTI_FILE = 89

#: Every field a response may carry (``fields=*``), in Judge0's order. Judge0
#: 1.13.1's serializer has no started_at/queued_at/updated_at/queue_host/
#: execution_host (the official SDK rejects unknown attributes).
FIELDS = (
    "source_code", "language_id", "stdin", "expected_output", "stdout", "status_id",
    "created_at", "finished_at", "time", "memory", "stderr", "token", "number_of_runs",
    "cpu_time_limit", "cpu_extra_time", "wall_time_limit", "memory_limit", "stack_limit",
    "max_processes_and_or_threads", "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit", "max_file_size", "compile_output",
    "exit_code", "exit_signal", "message", "wall_time", "compiler_options",
    "command_line_arguments", "redirect_stderr_to_stdout", "callback_url", "additional_files",
    "enable_network", "status", "language",
)  # fmt: skip
DEFAULT_FIELDS = ("token", "time", "memory", "stdout", "stderr", "compile_output", "message",
                  "status")  # fmt: skip
#: Fields held as base64 text in a record; decoded for ``base64_encoded=false``.
ENCODED = ("source_code", "stdin", "expected_output", "stdout", "stderr", "compile_output",
           "message")  # fmt: skip
_DECIMALS = ("time", "wall_time", "cpu_time_limit", "cpu_extra_time", "wall_time_limit")
#: What a callback carries (always base64), as Judge0 sends it.
CALLBACK_FIELDS = ("stdout", "time", "memory", "stderr", "token", "compile_output", "message",
                   "status", "exit_code", "exit_signal", "wall_time", "created_at",
                   "finished_at")  # fmt: skip
MAX_TEXT_OPTION = 512
MAX_ADDITIONAL_FILES = 64


@dataclass(frozen=True)
class Settings:
    """The ``judge0`` section of the config: Judge0's own switches and the store.

    Attributes:
        store: where submissions live: ``sqlite:///PATH`` (default: ``judge0.sqlite3``
            in the state folder), ``redis://HOST:PORT/DB`` or
            ``postgresql://USER@HOST/DB`` (nodes sharing a queue).
        keep: seconds a finished submission is kept before it is pruned.
        workers: submissions this node runs at once (0: it only takes them in;
            default: the engine's ``max_running``).
        max_queue_size: submissions waiting; past it 503 ``queue is full``.
        max_submission_batch_size: submissions per batch request.
        enable_wait_result: whether ``wait=true`` is allowed.
        enable_submission_delete: whether ``DELETE /submissions/{token}`` is allowed.
        enable_callbacks: whether ``callback_url`` is allowed.
        callbacks_max_tries, callbacks_timeout: a callback's attempts and the
            seconds each may take.
        callbacks_to_private: allow callbacks to loopback, private, link-local
            and other non-public addresses (off: a submission cannot make the
            server call its own network or a cloud metadata service).
        allow_enable_network: whether a submission may ask for the network
            (under bwrap; off by default, unlike Judge0).
        cpu_extra_time, max_cpu_extra_time: seconds past ``cpu_time_limit``
            before the program is killed (it is a TLE either way).
        number_of_runs, max_number_of_runs: runs per submission.
        max_extract_size: KB an ``additional_files`` zip may unpack to.
        prefix: the Redis key prefix.
        broker: run submissions on ``stack worker --judge0`` over this broker
            (a NATS URL, or a broker's name from the config) instead of here.
    """

    store: str = ""
    keep: float = 7 * 86400.0
    workers: int | None = None
    max_queue_size: int = 100
    max_submission_batch_size: int = 20
    enable_wait_result: bool = True
    enable_submission_delete: bool = False
    enable_callbacks: bool = True
    callbacks_max_tries: int = 3
    callbacks_timeout: float = 5.0
    callbacks_to_private: bool = False
    allow_enable_network: bool = False
    cpu_extra_time: float = 1.0
    max_cpu_extra_time: float = 5.0
    number_of_runs: int = 1
    max_number_of_runs: int = 20
    max_extract_size: int = 10240
    prefix: str = "stack:judge0:"
    broker: str = ""

    def __post_init__(self) -> None:
        schemes = ("sqlite://", "redis://", "rediss://", "postgresql://", "postgres://")
        if self.store and not self.store.startswith(schemes):
            raise ConfigError(f"judge0.store {self.store!r}: use sqlite:///PATH, "
                              "redis://HOST:PORT/DB or postgresql://USER@HOST/DB")  # fmt: skip
        if self.keep <= 0 or self.max_queue_size < 1 or self.max_submission_batch_size < 1:
            raise ConfigError("judge0: keep, max_queue_size and max_submission_batch_size "
                              "must be positive")  # fmt: skip
        if self.workers is not None and self.workers < 0:
            raise ConfigError("judge0.workers must be at least 0")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, source: str = "config") -> Settings:
        """The ``judge0`` section (``keep`` takes a duration such as ``7d`` or ``12h``).

        Raises:
            ConfigError: an unknown key or a bad value, naming it.
        """
        data = dict(data or {})
        names = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(names)
        if unknown:
            raise ConfigError(f"{source}: judge0: unknown key(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(sorted(names))}")  # fmt: skip
        changes: dict[str, Any] = {}
        for key, value in data.items():
            default = getattr(cls(), key)
            if key == "keep":
                changes[key] = _days(value)
            elif key == "workers":
                changes[key] = None if value is None else _whole(value, key)
            elif isinstance(default, bool):
                if not isinstance(value, bool):
                    raise ConfigError(f"{source}: judge0.{key} must be true or false")
                changes[key] = value
            elif isinstance(default, int):
                changes[key] = _whole(value, key)
            elif isinstance(default, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ConfigError(f"{source}: judge0.{key} must be a number")
                changes[key] = float(value)
            else:
                changes[key] = str(value)
        return cls(**changes)


def _days(value: Any) -> float:
    text = str(value).strip()
    if text.endswith("d") and text[:-1].replace(".", "", 1).isdigit():
        return float(text[:-1]) * 86400
    return parse_duration(value, default_unit="s")


def _whole(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"judge0.{key} must be a whole number, got {value!r}")
    return value


def state_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """The server's state folder: ``$STACK_STATE_DIR``, else ``$XDG_STATE_HOME/stack``,
    else ``~/.local/state/stack``."""
    if environ.get("STACK_STATE_DIR"):
        return Path(environ["STACK_STATE_DIR"])
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "stack"


# Languages --------------------------------------------------------------------------------


def language_of(registry: Registry, language_id: int) -> Language | None:
    """The installed stack language behind a Judge0 id, or None."""
    entry = LANGUAGES.get(language_id)
    if entry is None:
        return None
    try:
        lang = registry.get(entry[0])
    except UnknownLanguage:  # a registry without it
        return None
    return lang if registry.installed(lang).available else None


def languages(registry: Registry) -> list[dict[str, Any]]:
    """``GET /languages``: ``[{id, name}]`` of the installed languages."""
    listed = []
    for language_id, (_, name) in LANGUAGES.items():
        lang = language_of(registry, language_id)
        if lang is not None:
            version = registry.installed(lang).version or "?"
            listed.append({"id": language_id, "name": name.format(v=version)})
    return listed


def language_detail(registry: Registry, language_id: int) -> dict[str, Any] | None:
    """``GET /languages/{id}``: with its source file and command lines, or None."""
    lang = language_of(registry, language_id)
    if lang is None:
        return None
    if language_id == MULTI_FILE:
        return {"id": language_id, "name": LANGUAGES[language_id][1], "is_archived": False,
                "source_file": None, "compile_cmd": "/bin/bash compile",
                "run_cmd": "/bin/bash run"}  # fmt: skip
    version = registry.installed(lang).version or "?"
    entry = lang.entry_name()

    def line(template: Sequence[str]) -> str | None:
        if not template:
            return None
        words = [w.replace("{interpreter}", lang.interpreter).replace("{build}", ".")
                 for w in template if w != "{prelude}"]  # fmt: skip
        words = [entry if w in ("{files}", "{script}") else w for w in words]
        return " ".join(w.replace("{stem}", PurePosixPath(entry).stem) for w in words)

    return {
        "id": language_id,
        "name": LANGUAGES[language_id][1].format(v=version),
        "is_archived": False,
        "source_file": entry,
        "compile_cmd": line(lang.compile),
        "run_cmd": line(lang.run),
    }


def statuses() -> list[dict[str, Any]]:
    """``GET /statuses``."""
    return [{"id": i, "description": d} for i, d in STATUSES.items()]


# Limits -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """Defaults and maxima of a submission's limits, in Judge0's units, from stack's limits.

    Times in seconds, memory, stack and file sizes in KB.
    """

    cpu_time_limit: float
    max_cpu_time_limit: float
    wall_time_limit: float
    max_wall_time_limit: float
    memory_limit: int
    max_memory_limit: int
    stack_limit: int
    max_stack_limit: int
    max_processes_and_or_threads: int
    max_max_processes_and_or_threads: int
    max_file_size: int
    max_max_file_size: int

    @classmethod
    def from_limits(cls, limits: Limits, maxima: Limits) -> Bounds:
        """The bounds of a server (or of a key: its limits lowered)."""
        limits = limits.lowered_to(maxima)

        def pick(value: float | None, fallback: float) -> float:
            return fallback if value is None else value

        soft, _ = resource.getrlimit(resource.RLIMIT_STACK)
        stack = soft if soft != resource.RLIM_INFINITY else 8 * 1024 * 1024
        big = 1 << 40
        max_cpu = pick(maxima.cpu, 3600.0)
        max_wall = pick(maxima.timeout, 3600.0)
        max_memory = int(pick(maxima.memory, big)) // 1024
        max_procs = int(pick(maxima.processes, 4096))
        max_file = int(pick(maxima.file_size, big)) // 1024
        return cls(
            cpu_time_limit=float(pick(limits.cpu, max_cpu)),
            max_cpu_time_limit=float(max_cpu),
            wall_time_limit=float(pick(limits.timeout, max_wall)),
            max_wall_time_limit=float(max_wall),
            memory_limit=(int(limits.memory) // 1024 if limits.memory else max_memory),
            max_memory_limit=max_memory,
            stack_limit=stack // 1024,
            max_stack_limit=stack // 1024,
            max_processes_and_or_threads=int(pick(limits.processes, max_procs)),
            max_max_processes_and_or_threads=max_procs,
            max_file_size=(int(limits.file_size) // 1024 if limits.file_size else max_file),
            max_max_file_size=max_file,
        )


def config_info(bounds: Bounds, settings: Settings, network: bool) -> dict[str, Any]:
    """``GET /config_info``: every key of Judge0 CE 1.13.1, from stack's real limits."""
    return {
        "maintenance_mode": False,
        "enable_wait_result": settings.enable_wait_result,
        "enable_compiler_options": True,
        "allowed_languages_for_compile_options": [],
        "enable_command_line_arguments": True,
        "enable_submission_delete": settings.enable_submission_delete,
        "enable_callbacks": settings.enable_callbacks,
        "callbacks_max_tries": settings.callbacks_max_tries,
        "callbacks_timeout": settings.callbacks_timeout,
        "enable_additional_files": True,
        "max_queue_size": settings.max_queue_size,
        "cpu_time_limit": bounds.cpu_time_limit,
        "max_cpu_time_limit": bounds.max_cpu_time_limit,
        "cpu_extra_time": settings.cpu_extra_time,
        "max_cpu_extra_time": settings.max_cpu_extra_time,
        "wall_time_limit": bounds.wall_time_limit,
        "max_wall_time_limit": bounds.max_wall_time_limit,
        "memory_limit": bounds.memory_limit,
        "max_memory_limit": bounds.max_memory_limit,
        "stack_limit": bounds.stack_limit,
        "max_stack_limit": bounds.max_stack_limit,
        "max_processes_and_or_threads": bounds.max_processes_and_or_threads,
        "max_max_processes_and_or_threads": bounds.max_max_processes_and_or_threads,
        "enable_per_process_and_thread_time_limit": False,
        "allow_enable_per_process_and_thread_time_limit": False,
        "enable_per_process_and_thread_memory_limit": False,
        "allow_enable_per_process_and_thread_memory_limit": False,
        "max_file_size": bounds.max_file_size,
        "max_max_file_size": bounds.max_max_file_size,
        "number_of_runs": settings.number_of_runs,
        "max_number_of_runs": settings.max_number_of_runs,
        "redirect_stderr_to_stdout": False,
        "max_extract_size": settings.max_extract_size,
        "enable_batched_submissions": True,
        "max_submission_batch_size": settings.max_submission_batch_size,
        "submission_cache_duration": 0.0,
        "use_docs_as_homepage": False,
        "allow_enable_network": settings.allow_enable_network,
        "enable_network": network,
    }


# Requests ---------------------------------------------------------------------------------


def flag(query: Mapping[str, str], name: str) -> bool:
    """A ``true``/``false`` query parameter (anything but ``true`` is false, as Judge0)."""
    return query.get(name) == "true"


def requested_fields(raw: str | None) -> tuple[str, ...]:
    """The ``fields=`` parameter: ``*`` for all, a comma list, or the defaults.

    Raises:
        RequestError: unknown fields, named as Judge0 names them.
    """
    if raw is None or not raw.strip():
        return DEFAULT_FIELDS
    names = [n.strip() for n in raw.split(",") if n.strip()]
    if "*" in names:
        return FIELDS
    invalid = [n for n in names if n not in FIELDS]
    if invalid:
        raise RequestError(f"invalid fields: [{', '.join(invalid)}]")
    return tuple(names)


def new_token() -> str:
    """A fresh submission token (a UUID, as Judge0's)."""
    return str(uuid.uuid4())


def now() -> str:
    """The current time as Judge0 writes it: ``2024-05-01T12:00:00.123Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def unb64(text: str | None) -> bytes | None:
    """A record's base64 field back to bytes."""
    return None if text is None else base64.b64decode(text)


def parse_submission(body: Any, *, base64_encoded: bool, registry: Registry, bounds: Bounds,
                     settings: Settings) -> dict[str, Any]:  # fmt: skip
    """Validate one submission (a decoded JSON object) into a new record (status In Queue).

    Raises:
        InvalidSubmission: Judge0's 422, ``{field: [messages]}`` for every bad field.
    """
    if not isinstance(body, dict):
        raise InvalidSubmission("a submission must be a JSON object",
                                errors={"submission": ["must be a JSON object"]})  # fmt: skip
    errors: dict[str, list[str]] = {}

    def fail(field: str, message: str) -> None:
        errors.setdefault(field, []).append(message)

    def text(field: str, encoded: bool) -> bytes | None:
        value = body.get(field)
        if value is None:
            return None
        if not isinstance(value, str):
            fail(field, "must be a string")
            return None
        if not encoded:
            return value.encode("utf-8")
        try:
            return base64.b64decode(value.encode("ascii"), validate=False)
        except (binascii.Error, UnicodeEncodeError):
            fail(field, "is not valid base64")
            return None

    source = text("source_code", base64_encoded)
    stdin = text("stdin", base64_encoded)
    expected = text("expected_output", base64_encoded)
    additional = text("additional_files", True)
    project = body.get("language_id") in (MULTI_FILE, str(MULTI_FILE))
    if not source and not project:
        fail("source_code", "can't be blank")
    if project and not additional and "additional_files" not in errors:
        fail("additional_files", "can't be blank for a multi-file program")

    language_id = body.get("language_id")
    if language_id is None or language_id == "":
        fail("language_id", "can't be blank")
    else:
        wanted = _integer(language_id)
        if wanted is None:
            fail("language_id", "is not a number")
        elif language_of(registry, wanted) is None:
            fail("language_id", f"language with id {language_id} doesn't exist")
        else:
            language_id = wanted

    def number(field: str, default: float, most: float, *, integer: bool = False) -> float:
        value = body.get(field)
        if value is None or value == "":
            return default
        parsed = _integer(value) if integer else _float(value)
        if parsed is None:
            fail(field, "is not a number" if not integer or _float(value) is None
                 else "must be an integer")  # fmt: skip
            return default
        if parsed <= 0:
            fail(field, "must be greater than 0")
        elif parsed > most:
            fail(field, f"must be less than or equal to {_shown(most)}")
        return parsed

    record: dict[str, Any] = {
        "cpu_time_limit": number("cpu_time_limit", bounds.cpu_time_limit,
                                 bounds.max_cpu_time_limit),
        "cpu_extra_time": number("cpu_extra_time", settings.cpu_extra_time,
                                 settings.max_cpu_extra_time),
        "wall_time_limit": number("wall_time_limit", bounds.wall_time_limit,
                                  bounds.max_wall_time_limit),
        "memory_limit": number("memory_limit", bounds.memory_limit, bounds.max_memory_limit,
                               integer=True),
        "stack_limit": number("stack_limit", bounds.stack_limit, bounds.max_stack_limit,
                              integer=True),
        "max_processes_and_or_threads": number(
            "max_processes_and_or_threads", bounds.max_processes_and_or_threads,
            bounds.max_max_processes_and_or_threads, integer=True),
        "max_file_size": number("max_file_size", bounds.max_file_size, bounds.max_max_file_size,
                                integer=True),
        "number_of_runs": number("number_of_runs", settings.number_of_runs,
                                 settings.max_number_of_runs, integer=True),
    }  # fmt: skip
    for field in ("cpu_time_limit", "cpu_extra_time", "wall_time_limit"):
        record[field] = float(record[field])
    for field in ("memory_limit", "stack_limit", "max_processes_and_or_threads", "max_file_size",
                  "number_of_runs"):  # fmt: skip
        record[field] = int(record[field])

    booleans = {}
    for field in ("redirect_stderr_to_stdout", "enable_network",
                  "enable_per_process_and_thread_time_limit",
                  "enable_per_process_and_thread_memory_limit"):  # fmt: skip
        value = body.get(field)
        if value is None:
            value = False
        if not isinstance(value, bool):
            fail(field, "must be true or false")
            value = False
        booleans[field] = value
    for field in ("enable_per_process_and_thread_time_limit",
                  "enable_per_process_and_thread_memory_limit"):  # fmt: skip
        if booleans[field]:
            fail(field, "this option cannot be enabled")
    if booleans["enable_network"] and not settings.allow_enable_network:
        fail("enable_network", "enabling network is not allowed")

    options: dict[str, str | None] = {}
    for field in ("compiler_options", "command_line_arguments"):
        value = body.get(field)
        if value is None or value == "":
            options[field] = None
            continue
        if not isinstance(value, str):
            fail(field, "must be a string")
            options[field] = None
            continue
        if len(value) > MAX_TEXT_OPTION:
            fail(field, f"is too long (maximum is {MAX_TEXT_OPTION} characters)")
        try:
            shlex.split(value)
        except ValueError as exc:
            fail(field, f"cannot be split into words: {exc}")
        options[field] = value

    callback = body.get("callback_url")
    if callback is not None and callback != "":
        if not isinstance(callback, str) or urlsplit(callback).scheme not in ("http", "https") \
                or not urlsplit(callback).netloc:  # fmt: skip
            fail("callback_url", "must be an http or https URL")
        elif not settings.enable_callbacks:
            fail("callback_url", "callbacks are not allowed")
    else:
        callback = None

    if additional is not None and "additional_files" not in errors:
        try:
            unzip(additional, settings.max_extract_size * 1024)
        except ValueError as exc:
            fail("additional_files", str(exc))

    if errors:
        raise InvalidSubmission(
            "; ".join(f"{k} {', '.join(v)}" for k, v in errors.items()), errors=errors
        )
    record.update(booleans)
    record.update(options)
    record.update(
        token=new_token(),
        status_id=IN_QUEUE,
        language_id=language_id,
        source_code=_b64(source or b""),
        stdin=_b64(stdin),
        expected_output=_b64(expected),
        additional_files=_b64(additional),
        callback_url=callback,
        stdout=None, stderr=None, compile_output=None, message=None,
        exit_code=None, exit_signal=None, time=None, wall_time=None, memory=None,
        created_at=now(), finished_at=None,
    )  # fmt: skip
    return record


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _shown(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def unzip(data: bytes, limit: int) -> list[tuple[str, bytes]]:
    """The files of an ``additional_files`` zip, their names kept inside the job folder.

    Raises:
        ValueError: not a zip, a name leading outside, too many files or too large.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ValueError(f"is not a valid zip archive: {exc}") from exc
    files: list[tuple[str, bytes]] = []
    total = 0
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            path = PurePosixPath(info.filename)
            if path.is_absolute() or ".." in path.parts or "\0" in info.filename \
                    or str(path).startswith((".stack", ".build")):  # fmt: skip
                raise ValueError(f"has a file {info.filename!r} outside the submission folder")
            total += info.file_size
            if total > limit or len(files) >= MAX_ADDITIONAL_FILES:
                raise ValueError(f"unpacks to more than {limit // 1024} KB or "
                                 f"{MAX_ADDITIONAL_FILES} files")  # fmt: skip
            try:
                files.append((str(path), archive.read(info)))
            except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
                raise ValueError(f"cannot be unpacked: {exc}") from exc
    return files


def with_compiler_options(lang: Language, options: str | None) -> Language:
    """``lang`` with the submission's compiler flags right after the compiler, as Judge0."""
    if not options or not lang.compile:
        return lang
    words = shlex.split(options)
    return dataclasses.replace(lang, compile=(lang.compile[0], *words, *lang.compile[1:]))


def arguments(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The program's arguments (``command_line_arguments`` split as a shell would, never run)."""
    raw = record.get("command_line_arguments")
    return tuple(shlex.split(raw)) if raw else ()


def run_limits(record: Mapping[str, Any], base: Limits, output: int | None) -> Limits:
    """A submission's run limits: stack's ``base`` with Judge0's fields applied.

    The CPU limit is ``cpu_time_limit + cpu_extra_time`` (the program is killed
    then; over ``cpu_time_limit`` is a TLE either way).
    """
    return dataclasses.replace(
        base,
        timeout=float(record["wall_time_limit"]),
        cpu=float(record["cpu_time_limit"]) + float(record["cpu_extra_time"]),
        memory=int(record["memory_limit"]) * 1024,
        processes=int(record["max_processes_and_or_threads"]),
        file_size=int(record["max_file_size"]) * 1024,
        output=output,
    )


# Verdicts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """What one run of a submission gave, from stack's Outcome.

    Attributes:
        reason: the Outcome's reason (``ok``, ``exit``, ``signal``, ``timeout``, ``cpu``...).
        exit_code, signal: as the Outcome's.
        cpu, wall: seconds; memory: peak bytes.
        stdout, stderr, output: what it wrote (output: both interleaved).
        message: stack's sentence about the end.
    """

    reason: str
    exit_code: int | None
    signal: int | None
    cpu: float
    wall: float
    memory: int
    stdout: bytes
    stderr: bytes
    output: bytes = b""
    message: str = ""


def strip(text: bytes) -> bytes:
    """Judge0's comparison form: trailing blanks of each line and blank ends dropped."""
    return b"\n".join(line.rstrip() for line in text.split(b"\n")).strip()


def verdict(run: Run, record: Mapping[str, Any]) -> tuple[int, str | None, int | None]:
    """Judge0's status of a finished run: (status id, message, exit signal)."""
    cpu_limit = float(record["cpu_time_limit"])
    if run.reason == "timeout":
        return TIME_LIMIT, "Time limit exceeded (wall clock)", run.signal or 9
    if run.reason == "cpu" or (run.reason in ("ok", "exit", "signal") and run.cpu > cpu_limit):
        return TIME_LIMIT, "Time limit exceeded", run.signal
    if run.reason in ("output", "file_size"):
        return SIGXFSZ, "File size limit exceeded", run.signal or 25
    if run.reason == "spawn":
        if "Exec format error" in run.message:
            return EXEC_FORMAT_ERROR, run.message, None
        return INTERNAL_ERROR, run.message or "the program could not be started", None
    if run.signal:
        return _BY_SIGNAL.get(run.signal, OTHER), f"Caught fatal signal {run.signal}", run.signal
    if run.exit_code:
        return NZEC, f"Exited with error status {run.exit_code}", None
    if run.reason not in ("ok", "exit"):  # an error reported on fd 3, a kill
        return OTHER, run.message or None, None
    expected = unb64(record.get("expected_output"))
    if expected is None or strip(expected) == strip(run.stdout):
        return ACCEPTED, None, None
    return WRONG_ANSWER, None, None


def finish(record: dict[str, Any], runs: Sequence[Run], compile_output: bytes | None) -> None:
    """Write the result of the runs (the last one's output, averaged usage) into ``record``."""
    last = runs[-1]
    status, message, exit_signal = verdict(last, record)
    stdout, stderr = last.stdout, last.stderr
    if record.get("redirect_stderr_to_stdout"):
        stdout, stderr = last.output, b""
    count = len(runs)
    record.update(
        status_id=status,
        stdout=_b64(stdout) if stdout else None,
        stderr=_b64(stderr) if stderr else None,
        compile_output=_b64(compile_output) if compile_output else None,
        message=_b64(message.encode()) if message else None,
        exit_code=last.exit_code if last.signal is None else None,
        exit_signal=exit_signal,
        time=round(sum(r.cpu for r in runs) / count, 3),
        wall_time=round(sum(r.wall for r in runs) / count, 3),
        memory=round(sum(r.memory for r in runs) / count / 1024),
        finished_at=now(),
    )


def failed(record: dict[str, Any], status: int, message: str,
           compile_output: bytes | None = None) -> None:  # fmt: skip
    """End ``record`` without a run: a compilation error or an internal error."""
    record.update(
        status_id=status,
        compile_output=_b64(compile_output) if compile_output else None,
        message=_b64(message.encode()) if message else None,
        finished_at=now(),
    )


# Responses --------------------------------------------------------------------------------


def serialize(record: Mapping[str, Any], fields: Sequence[str], *, base64_encoded: bool,
              registry: Registry | None = None) -> dict[str, Any]:  # fmt: skip
    """A record in Judge0's response shape, with only ``fields``.

    Raises:
        NotUtf8: a field is not UTF-8 and ``base64_encoded`` is false (Judge0's 400).
    """
    shaped: dict[str, Any] = {}
    for field in fields:
        if field == "status":
            status = int(record["status_id"])
            shaped[field] = {"id": status, "description": STATUSES[status]}
        elif field == "language":
            language_id = int(record["language_id"])
            name = LANGUAGES.get(language_id, ("", str(language_id)))[1]
            if registry is not None:
                lang = language_of(registry, language_id)
                version = registry.installed(lang).version if lang is not None else None
                name = name.format(v=version or "?")
            shaped[field] = {"id": language_id, "name": name}
        elif field in ENCODED:
            value = record.get(field)
            if value is None or base64_encoded:
                shaped[field] = value
            else:
                try:
                    shaped[field] = base64.b64decode(value).decode("utf-8")
                except UnicodeDecodeError:
                    raise NotUtf8(
                        "some attributes for this submission cannot be converted to UTF-8, "
                        "use base64_encoded=true query parameter"
                    ) from None
        elif field in _DECIMALS:
            value = record.get(field)
            shaped[field] = None if value is None else _decimal(float(value))
        else:
            shaped[field] = record.get(field)
    return shaped


def _decimal(value: float) -> str:
    # Judge0's decimal columns are JSON strings: "0.012", "5.0".
    text = f"{value:.3f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


__all__ = [
    "FIELDS",
    "LANGUAGES",
    "STATUSES",
    "VERSION",
    "Bounds",
    "Run",
    "Settings",
    "config_info",
    "languages",
    "parse_submission",
    "serialize",
    "verdict",
]
