"""Submitted code: Piston's v2 execute API, runtimes, and interactive sessions.

Request parsing and result shaping are sans-IO; :func:`execute` runs a job
through the engine (compile stage when the language has one, then the run).

    POST /api/v2/execute   {"language": "python", "files": [{"content": "print(1)"}]}
    GET  /api/v2/runtimes
    WS   /api/v2/connect   init / data / signal  ->  runtime / stage / data / exit / error
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import math
import signal
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import semantic_version

from ..core.builds import Build
from ..core.engine import Engine
from ..core.invocation import Invocation
from ..core.languages import Language, Registry
from ..core.limits import Limits
from ..core.process import CallIO, CollectIO, Outcome, signal_name
from ..errors import LimitTooHigh, RequestError, UnknownLanguage

DEFAULT_OUTPUT = 1024 * 1024
PIECE = 64 * 1024  # bytes of a JSON result made at a time (json_pieces)
"""Bytes kept per stream and stage (Piston's 1024 is too small to be useful)."""

MAX_FILES = 64
_PISTON_STATUS = {
    "timeout": "TO",
    "cpu": "TO",
    "signal": "SG",
    "file_size": "SG",
    "exit": "RE",
    "error": "RE",
    "spawn": "XX",
    "killed": "SG",
}


@dataclass(frozen=True)
class Job:
    """A validated execute request.

    Attributes:
        language: the language to run.
        version: the installed version that matched the request's selector.
        files: (relative name, content), the entry point first.
        stdin: bytes given to stdin.
        args: arguments after the entry file.
        run: limits of the run stage.
        compile: limits of the compile stage.
        output: bytes kept per stream; past it OL (stdout) or EL (stderr).
        network: whether the run may use the network (None: the server's setting).
    """

    language: Language
    version: str
    files: tuple[tuple[str, bytes], ...]
    stdin: bytes
    args: tuple[str, ...]
    run: Limits
    compile: Limits
    output: int
    network: bool | None = None


def runtimes(registry: Registry) -> list[dict[str, Any]]:
    """``GET /api/v2/runtimes``: every installed language, with its probed version."""
    listed = []
    for lang in registry:
        found = registry.installed(lang)
        if not found.available:
            continue
        entry: dict[str, Any] = {
            "language": lang.name,
            "version": _semver(found.version),
            "aliases": list(lang.aliases),
        }
        if lang.interpreter != lang.name:
            entry["runtime"] = lang.interpreter
        listed.append(entry)
    return listed


def _semver(version: str | None) -> str:
    try:
        return str(semantic_version.Version.coerce(version or "0"))
    except ValueError:
        return version or "0.0.0"


def parse_job(body: Any, engine: Engine, *, output: int = DEFAULT_OUTPUT,
              ceiling: Limits | None = None) -> Job:  # fmt: skip
    """Validate an execute request (a decoded JSON value).

    ``ceiling``: lower maxima for this caller (its API key's limits).

    Raises:
        RequestError: a missing or malformed field, naming it.
        UnknownLanguage: no such language or version installed, naming what is.
        LimitTooHigh: a limit above the server's maximum, naming it.
    """
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    language = body.get("language")
    if not isinstance(language, str) or not language:
        raise RequestError("language is required as a string")
    registry = engine.registry
    try:
        lang = registry.get(language)
    except UnknownLanguage:
        raise UnknownLanguage(
            f"{language}-{body.get('version', '*')} runtime is unknown; available: "
            + ", ".join(f"{r['language']}-{r['version']}" for r in runtimes(registry)),
            language=language,
        ) from None
    installed = registry.installed(lang)
    version = _semver(installed.version)
    selector = body.get("version")
    if selector is not None and not isinstance(selector, str):
        raise RequestError('version must be a string (a semver selector such as "*" or "3.x")')
    if not installed.available or not _matches(selector or "*", version):
        available = ", ".join(f"{r['language']}-{r['version']}" for r in runtimes(registry))
        raise UnknownLanguage(
            f"{language}-{selector or '*'} runtime is unknown; available: {available}",
            language=language,
        )
    files = _files(body.get("files"), lang)
    stdin = body.get("stdin", "")
    if not isinstance(stdin, str):
        raise RequestError("stdin must be a string")
    args = body.get("args", [])
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise RequestError("args must be an array of strings")
    run = _stage_limits(body, "run", engine, ceiling=ceiling)
    compile_limits = _stage_limits(body, "compile", engine, compile_stage=True, ceiling=ceiling)
    compile_limits = Limits(**{**compile_limits.to_json(), "output": output})
    return Job(lang, version, files, stdin.encode(), tuple(args), run, compile_limits, output)


def _matches(selector: str, version: str) -> bool:
    selector = selector.strip()
    if selector in ("*", "", "latest", "x"):
        return True
    try:
        return bool(semantic_version.NpmSpec(selector).match(semantic_version.Version(version)))
    except ValueError:
        return False


def _files(raw: Any, lang: Language) -> tuple[tuple[str, bytes], ...]:
    if not isinstance(raw, list) or not raw:
        raise RequestError("files is required as a non-empty array")
    if len(raw) > MAX_FILES:
        raise RequestError(f"at most {MAX_FILES} files")
    files: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            raise RequestError(f"files[{index}].content is required as a string")
        name = item.get("name")
        if name is None or name == "":
            name = lang.entry_name() if index == 0 else f"file{index}.code"
        if not isinstance(name, str):
            raise RequestError(f"files[{index}].name must be a string")
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not path.parts or "\0" in name:
            raise RequestError(
                f"files[{index}].name {name!r} points outside the job directory", file=name
            )
        name = str(path)
        if name.startswith(".stack") or name.startswith(".build") or name in seen:
            raise RequestError(f"files[{index}].name {name!r} is reserved or repeated")
        seen.add(name)
        files.append((name, _decode(item["content"], item.get("encoding", "utf8"), index)))
    return tuple(files)


def _decode(content: str, encoding: Any, index: int) -> bytes:
    try:
        if encoding in (None, "utf8", "utf-8"):
            return content.encode("utf-8")
        if encoding == "base64":
            return base64.b64decode(content, validate=True)
        if encoding == "hex":
            return bytes.fromhex(content)
    except (ValueError, binascii.Error) as exc:
        raise RequestError(f"files[{index}].content is not valid {encoding}: {exc}") from exc
    raise RequestError(f"files[{index}].encoding must be utf8, base64 or hex, not {encoding!r}")


def _stage_limits(
    body: Mapping[str, Any],
    stage: str,
    engine: Engine,
    *,
    compile_stage: bool = False,
    ceiling: Limits | None = None,
) -> Limits:
    base = engine.compile_limits() if compile_stage else engine.config.limits
    maxima = engine.config.maxima
    if ceiling is not None:  # the caller's key or token has lower maxima
        base, maxima = base.lowered_to(ceiling), maxima.lowered_to(ceiling)
    changes: dict[str, Any] = {}
    for field, unit, key in (("timeout", 0.001, "timeout"), ("cpu_time", 0.001, "cpu"),
                             ("memory_limit", 1, "memory")):  # fmt: skip
        name = f"{stage}_{field}"
        value = body.get(name)
        if value is None:
            continue
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise RequestError(f"If specified, {name} must be a number")
        if value == -1 and key == "memory":
            changes[key] = maxima.memory
            continue
        if value <= 0:
            raise RequestError(f"{name} must be positive (or -1 for the server maximum)")
        scaled = value * unit if key != "memory" else int(value)
        most = getattr(maxima, key)
        if most is not None and scaled > most:
            shown = most / unit if key != "memory" else most
            raise LimitTooHigh(
                f"{name} cannot exceed the configured limit of {shown:g}",
                limit=name,
                maximum=shown,
            )
        changes[key] = scaled
    limits = Limits(**{**base.to_json(), **changes})
    return limits


def stage_result(outcome: Outcome | None, collect: CollectIO | Build | None, *,
                 raw: bool = False) -> dict[str, Any]:  # fmt: skip
    """One stage (``run`` or ``compile``) in Piston's shape.

    With ``raw``, ``stdout``, ``stderr`` and ``output`` are left as the bytes
    the script wrote, for :func:`json_pieces` to decode as it writes them.
    """
    if outcome is None:  # a build reused from the cache
        return {"stdout": "", "stderr": "", "output": "", "code": 0, "signal": None,
                "message": "cached", "status": None, "cpu_time": 0, "wall_time": 0,
                "memory": 0}  # fmt: skip
    assert collect is not None
    status: str | None = None
    if outcome.reason == "output":
        status = "EL" if outcome.stream == "stderr" else "OL"
    elif outcome.reason == "memory":
        status = "SG" if outcome.signal else "RE"
    elif outcome.reason != "ok":
        status = _PISTON_STATUS.get(outcome.reason, "XX")
    sig = signal_name(outcome.signal) if outcome.signal else None
    if status in ("TO", "OL", "EL"):
        sig = "SIGKILL"
    raws = {"stdout": collect.stdout, "stderr": collect.stderr, "output": collect.output}
    streams: dict[str, str | bytes] = dict(raws)
    if not raw:
        streams = {name: data.decode("utf-8", "replace") for name, data in raws.items()}
    return {
        **streams,
        "code": outcome.exit_code,
        "signal": sig,
        "message": outcome.message or None,
        "status": status,
        "cpu_time": round(outcome.usage.cpu * 1000),
        "wall_time": round(outcome.usage.wall * 1000),
        "memory": outcome.usage.memory,
    }


def file_job(engine: Engine, name: str, source: bytes, *, language: str | None = None,
             args: Sequence[str] = (), stdin: bytes = b"") -> Job:  # fmt: skip
    """A job running one file with the engine's default limits (``stack exec``).

    Raises:
        UnknownLanguage: ``language`` is unknown, or none is detected from the file.
        InterpreterMissing: the language is not installed.
    """
    registry = engine.registry
    lang = registry.get(language) if language else registry.detect(name, source[:256])
    engine.interpreter(lang)
    output = engine.config.limits.output or DEFAULT_OUTPUT
    compile_limits = _stage_limits({}, "compile", engine, compile_stage=True)
    return Job(lang, _semver(registry.installed(lang).version), ((name, source),), stdin,
               tuple(args), engine.config.limits, compile_limits, output)  # fmt: skip


@dataclass(frozen=True)
class JobResult:
    """What running a job gave.

    Attributes:
        build: the compile stage (None: the language has none).
        outcomes: each run's outcome (none when the compile failed).
    """

    build: Build | None
    outcomes: tuple[Outcome, ...]

    @property
    def outcome(self) -> Outcome | None:
        """The (first) run's outcome; None when the compile failed and nothing ran."""
        return self.outcomes[0] if self.outcomes else None


async def run_job(engine: Engine, job: Job, io: CallIO | Callable[[], CallIO], *,
                  runs: int = 1, feed_stdin: bool = True,
                  on_stage: Callable[[str], Awaitable[None]] | None = None,
                  on_compiled: Callable[[Build], Awaitable[None]] | None = None,
                  ) -> JobResult:  # fmt: skip
    """Run a job to its end: its files written, compiled when its language is, then run.

    The one runner of ``/api/v2/execute``, the ``/api/v2/connect`` WebSocket and
    ``stack exec``. A job with the default run limits takes a warm process
    when the language has a pool (see :func:`add_pools`).

    Args:
        io: the run stage's streams (a :class:`CollectIO`, or a front door's),
            or a function making one for each run.
        runs: how many times to run the program (Judge0's ``number_of_runs``),
            in the same call, after one compile.
        feed_stdin: write ``job.stdin`` before what ``io`` gives (False when
            ``io`` already holds it, as a :class:`CollectIO` made with it).
        on_stage: awaited with ``"compile"`` and ``"run"`` as each starts.
        on_compiled: awaited with the finished build, before the run.

    Raises:
        Overloaded: every slot busy and the queue full.
    """
    run_limits = Limits(**{**job.run.to_json(), "output": job.output})
    async with engine.open_call(run_limits, warm=pool_key(job.language)) as call:
        names = []
        for name, content in job.files:
            call.write_file(name, content)
            names.append(name)
        entry = call.workdir / names[0]
        build = None
        if job.language.compile:
            if on_stage is not None:
                await on_stage("compile")
            invocation = Invocation(job.language, entry, stderr_limit=job.output)
            build = await call.build(invocation, names, limits=job.compile)
            if on_compiled is not None:
                await on_compiled(build)
            if not build.ok:
                return JobResult(build, ())
        if on_stage is not None:
            await on_stage("run")
        run = Invocation(job.language, entry, door="execute", args=job.args,
                         stdin=job.stdin if feed_stdin else b"",
                         build=build.directory if build is not None else None,
                         stderr_limit=job.output, network=job.network)  # fmt: skip
        outcomes = []
        for _ in range(runs):
            streams = io() if callable(io) else io
            outcomes.append(await call.run(run, streams))
        return JobResult(build, tuple(outcomes))


def pool_key(language: Language) -> str:
    """The warm pool of submitted code in ``language`` (see :func:`add_pools`)."""
    return f"execute:{language.name}"


def add_pools(engine: Engine, output: int = DEFAULT_OUTPUT) -> None:
    """Start a warm pool per language for jobs, sized by the engine's ``warm`` setting.

    A job takes a waiting interpreter when it runs with the default run
    limits (its entry file is named in the call message); jobs that set
    their own limits start cold.
    """
    limits = Limits(**{**engine.config.limits.to_json(), "output": output})
    for lang in engine.registry:
        size = engine.config.warm_size(lang.name)
        if size and not lang.compile and engine.registry.installed(lang).available:
            template = Invocation(lang, Path(lang.entry_name()), door="execute")
            engine.add_pool(pool_key(lang), template, size, limits)


async def execute(engine: Engine, job: Job, *, raw: bool = False) -> dict[str, Any]:
    """Run a job to the end; the Piston-shaped result (``raw``: see :func:`stage_result`)."""
    collect = CollectIO(job.stdin)
    done = await run_job(engine, job, collect, feed_stdin=False)
    result: dict[str, Any] = {"language": job.language.name, "version": job.version}
    if done.build is not None:
        result["compile"] = stage_result(done.build.outcome, done.build, raw=raw)
    if done.outcome is None:
        result["run"] = result["compile"]  # as Piston does when the run never started
    else:
        result["run"] = stage_result(done.outcome, collect, raw=raw)
    return result


SIGNALS = {name: int(sig) for name, sig in signal.Signals.__members__.items()}


def parse_signal(value: Any) -> int:
    """A signal from a WebSocket ``signal`` message: ``"SIGINT"`` or a number.

    Raises:
        ValueError: not a signal.
    """
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65:
        return value
    if isinstance(value, str) and value in SIGNALS:
        return SIGNALS[value]
    raise ValueError(f"invalid signal {value!r}")


def dumps(value: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(value, separators=(",", ":")).encode()


def json_pieces(value: Any, size: int = PIECE) -> Iterator[bytes]:
    """``value`` as UTF-8 JSON, in pieces of about ``size`` bytes, made as they are taken.

    ``bytes`` in it are written as strings, decoded as UTF-8 with U+FFFD for
    what is not (as ``stage_result`` does), the character itself rather than
    a 6-byte ``\\ufffd`` escape. A result read slowly then holds the output
    once, as the script wrote it, not a copy several times its size.
    """
    pending: list[bytes] = []
    held = 0
    for part in _json_parts(value, size):
        pending.append(part)
        held += len(part)
        if held >= size:
            yield b"".join(pending)
            pending, held = [], 0
    if pending:
        yield b"".join(pending)


def _json_parts(value: Any, size: int) -> Iterator[bytes]:
    if isinstance(value, bytes):
        yield b'"'
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        step = max(1, size // 6)  # one escape is at most six bytes
        for start in range(0, len(value), step):
            text = decoder.decode(value[start : start + step])
            yield json.dumps(text, ensure_ascii=False)[1:-1].encode()
        yield json.dumps(decoder.decode(b"", final=True), ensure_ascii=False)[1:-1].encode()
        yield b'"'
    elif isinstance(value, Mapping):
        yield b"{"
        for index, (key, item) in enumerate(value.items()):
            yield (b"," if index else b"") + json.dumps(str(key)).encode() + b":"
            yield from _json_parts(item, size)
        yield b"}"
    elif isinstance(value, list | tuple):
        yield b"["
        for index, item in enumerate(value):
            if index:
                yield b","
            yield from _json_parts(item, size)
        yield b"]"
    else:
        yield json.dumps(value, ensure_ascii=False).encode()


__all__ = [
    "Job",
    "JobResult",
    "execute",
    "file_job",
    "json_pieces",
    "parse_job",
    "parse_signal",
    "run_job",
    "runtimes",
    "stage_result",
]
