"""The ``stack`` command line.

stack SCRIPT|DIR [options]            serve a script, or every script of a folder
stack serve [--services DIR] [opts]   the full server: the execute API (+ services)
stack exec FILE [ARGS...] [--json]    run one file once, like the server would
stack languages                       list languages and what is installed
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from . import __version__
from . import execute as ex
from .actions import directories_from_env, variables_from_env
from .asgi import open_app
from .auth import Authenticator
from .config import Config
from .control import Event, Head
from .engine import open_engine
from .errors import ConfigError, StackError
from .judge0 import Settings as Judge0Settings
from .languages import Registry
from .limits import Limits, parse_duration
from .logs import formatter
from .process import CollectIO, Running
from .server import bind, serve, watch_signals
from .services import ServiceOptions

COMMANDS = ("serve", "exec", "languages", "action", "run", "request", "key", "worker")
log = logging.getLogger("stack")


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument(
        "-p",
        "--port",
        type=int,
        default=3000,
        help="port (default 3000; if taken, the next free one)",
    )
    parser.add_argument(
        "-h", "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "-t",
        "--timeout",
        default=None,
        help="wall-clock limit per call: milliseconds, or with a unit (5s)",
    )
    parser.add_argument("-l", "--language", help="language of the script(s), instead of detecting")
    parser.add_argument(
        "-w", "--watch", action="store_true", help="re-read scripts from disk when they change"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log each call: method, path, status, wall/CPU time, peak memory",
    )
    parser.add_argument(
        "--cgi",
        action="store_true",
        help="CGI mode: read Status: and headers from the top of stdout",
    )
    parser.add_argument(
        "--debug", action="store_true", help="put the script's stderr into error responses"
    )
    parser.add_argument(
        "--grace",
        default="10s",
        help="on SIGTERM, how long calls in flight may finish (default 10s; a second "
        "SIGTERM stops at once)",
    )
    _add_config_flags(parser)
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback address with no authentication",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text, or one JSON object per line (also for STACK_LOG)",
    )
    parser.add_argument("--version", action="version", version=f"stack {__version__}")  # fmt: skip


def _script_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack",
        add_help=False,
        description="Serve a script (or a folder of scripts) over HTTP; every request runs "
        "in a freshly spawned interpreter.",
        epilog="Other commands: stack serve, stack exec, stack languages "
        "(`stack COMMAND --help` for theirs).",
    )
    parser.add_argument("path", type=Path, help="a script, or a folder of scripts")
    _add_server_flags(parser)
    return parser


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack serve",
        add_help=False,
        description="The full server for a platform: the execute API (Piston v2: "
        "/api/v2/execute, /api/v2/runtimes, /api/v2/connect), plus the services of --services.",
    )
    parser.add_argument(
        "--services", type=Path, metavar="DIR", help="also serve this script or folder of scripts"
    )
    parser.add_argument(
        "--execute-output",
        metavar="SIZE",
        default=None,
        help="bytes kept per stream of a submitted job (default 1MiB)",
    )
    parser.add_argument(
        "--gateway",
        metavar="BROKER",
        help="serve the broker gateway (/publish, /request, /subscribe, /ws) "
        "for this broker: a URL or a name from the config",
    )
    parser.add_argument("--no-execute", action="store_true",
                        help="do not serve the execute APIs (/api/v2 and Judge0's)")  # fmt: skip
    parser.add_argument("--judge0-store", metavar="URL",
                        help="where Judge0 submissions live: sqlite:///PATH (default: in the "
                        "state folder), redis://HOST:PORT/DB or postgresql://USER@HOST/DB",
                        )  # fmt: skip
    parser.add_argument("--no-judge0", action="store_true",
                        help="do not serve Judge0's API (/submissions, /languages...)")  # fmt: skip
    _add_server_flags(parser)
    return parser


def _exec_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack exec",
        description="Run one file once, with the server's engine, limits and isolation: "
        "stdin to stdin, its stdout and stderr to yours, its exit code as ours.",
    )
    parser.add_argument("file", type=Path, help="the program (compiled first if its language is)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    parser.add_argument("-l", "--language", help="its language, instead of detecting")
    parser.add_argument("--json", action="store_true",
                        help="print the result in Piston's shape instead of streaming")  # fmt: skip
    parser.add_argument("-t", "--timeout", default=None, help="wall-clock limit (ms, or 5s)")
    _add_config_flags(parser)
    return parser


_LIMIT_FLAGS = {
    "cpu": "CPU seconds per call (RLIMIT_CPU), e.g. 10s",
    "memory": "memory per call, e.g. 512MiB (RLIMIT_AS, or RLIMIT_DATA for JIT runtimes)",
    "processes": "processes and threads per call (RLIMIT_NPROC; when running as root)",
    "file-size": "largest file a call may write, e.g. 64MiB",
    "open-files": "open file descriptors per call",
    "output": "stdout bytes per call; past it the stream is cut",
    "body": "request body bytes; past it 413",
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Flags shared by every command that runs calls; they override --config."""
    group = parser.add_argument_group("limits and configuration")
    group.add_argument(
        "--config", type=Path, metavar="FILE", help="a YAML config file (see README: Configuration)"
    )
    group.add_argument(
        "--isolate",
        choices=("auto", "bwrap", "none"),
        default=None,
        help="sandbox each call with bubblewrap (default auto: when it works)",
    )
    for name, text in _LIMIT_FLAGS.items():
        group.add_argument(f"--{name}", metavar="N", help=text)
    group.add_argument("--max-running", type=int, metavar="N", help="calls running at once")
    group.add_argument(
        "--max-queue",
        type=int,
        metavar="N",
        help="calls waiting for a slot; past it 503 with Retry-After",
    )
    group.add_argument(
        "--network", action="store_true", default=None, help="let calls use the network under bwrap"
    )
    group.add_argument(
        "--warm",
        action="append",
        default=[],
        metavar="N|LANG=N",
        help="keep N interpreters of each service started ahead of their calls, or N for "
        "services in LANG (repeatable); each serves one call (python, javascript, php)",
    )
    group.add_argument("--warm-idle", metavar="DURATION",
                       help="a warm pool unused this long shrinks to one (default 60s)",
                       )  # fmt: skip
    group.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for every call (repeatable)",
    )
    group.add_argument(
        "--registry",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="an extra folder of language YAML files (repeatable)",
    )
    group.add_argument("--actions", type=Path, action="append", default=[], metavar="DIR",
                       help="a folder of actions (repeatable; or STACK_ACTIONS)")  # fmt: skip


def load_config(args: argparse.Namespace) -> Config:
    """The config file (if any) with the command-line flags on top.

    Raises:
        ConfigError: a bad file, flag or value.
    """
    config = Config.from_file(args.config) if args.config else Config()
    data: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    timeout = getattr(args, "timeout", None)
    if timeout is not None:
        limits["timeout"] = parse_duration(timeout)
    for name in _LIMIT_FLAGS:
        value = getattr(args, name.replace("-", "_"))
        if value is not None:
            limits[name.replace("-", "_")] = value
    if limits:
        data["limits"] = limits
    if args.isolate is not None:
        data["isolate"] = args.isolate
    if args.max_running is not None:
        data["max_running"] = args.max_running
    if args.max_queue is not None:
        data["max_queue"] = args.max_queue
    if args.network:
        data["network"] = True
    if args.registry:
        data["registry"] = [str(d) for d in args.registry]
    warm: dict[str, int] = {}
    for item in getattr(args, "warm", []):
        language, sep, size = item.rpartition("=")
        if not size.isdigit() or (sep and not language):
            raise ConfigError(f"--warm takes N or LANG=N, got {item!r}")
        warm[language or "*"] = int(size)
    if warm:
        data["warm"] = warm
    if getattr(args, "warm_idle", None):
        data["warm_idle"] = args.warm_idle
    env = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env takes KEY=VALUE, got {item!r}")
        env[key] = value
    if env:
        data["env"] = env
    return Config.from_mapping(data, source="command line", base=config)


def _languages_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack languages", description="List the registered languages and their versions."
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--registry", type=Path, action="append", default=[],
                        help="an extra folder of language YAML files")  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stack`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "languages":
            return languages(_languages_parser().parse_args(args[1:]))
        if args and args[0] == "serve":
            return serve_command(_serve_parser().parse_args(args[1:]))
        if args and args[0] == "exec":
            return exec_command(_exec_parser().parse_args(args[1:]))
        if args and args[0] == "key":
            return key_command(args[1:])
        if args and args[0] == "worker":
            from .worker_cli import main as worker_main

            return worker_main(args[1:])
        if args and args[0] in ("action", "run", "request"):
            from .actions_cli import main as actions_main

            return actions_main(args[0], args[1:])
        if not args:
            _script_parser().print_help()
            return 2
        return serve_path(_script_parser().parse_args(args))
    except StackError as exc:
        print(f"stack: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def languages(args: argparse.Namespace) -> int:
    """``stack languages``: each language, extensions, installed version or what to install."""
    from .engine import DEFAULT_PATH

    registry = Registry.load(args.registry, DEFAULT_PATH)
    rows: list[dict[str, Any]] = []
    for lang in registry:
        found = registry.installed(lang)
        rows.append(
            {
                "name": lang.name,
                "aliases": list(lang.aliases),
                "extensions": list(lang.extensions),
                "interpreter": found.path,
                "version": found.version,
                "installed": found.available,
                "package": lang.package,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(r["name"]) for r in rows) if rows else 8
    for r in rows:
        exts = " ".join(r["extensions"]) or "-"
        if r["installed"]:
            state = f"{r['version'] or '?'}  ({r['interpreter']})"
        else:
            state = f"missing: apt-get install {r['package']}"
        print(f"{r['name']:<{width}}  {exts:<16}  {state}")
    return 0


def _configure_logging(verbose: bool, *, terminal_level: int = logging.INFO,
                       log_format: str = "text") -> None:  # fmt: skip
    """Logs to the terminal (call lines only with -v) and to ``$STACK_LOG`` (everything)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        formatter("json")
        if log_format == "json"
        else logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S")
    )
    handler.setLevel(terminal_level)
    if not verbose:
        handler.addFilter(lambda record: record.name != "stack.access")
    root = logging.getLogger("stack")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("hypercorn.error").addHandler(handler)
    log_file = os.environ.get("STACK_LOG")
    if log_file:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(formatter(log_format))
        root.addHandler(to_file)


def serve_path(args: argparse.Namespace) -> int:
    """``stack SCRIPT|DIR``: serve it until SIGINT/SIGTERM."""
    path: Path = args.path
    if not path.exists():
        print(f"stack: {path}: no such file or folder", file=sys.stderr)
        return 2
    return _run_server(args, path, execute=False)


def serve_command(args: argparse.Namespace) -> int:
    """``stack serve``: the execute API, plus services when given."""
    path: Path | None = args.services
    if path is not None and not path.exists():
        print(f"stack: {path}: no such file or folder", file=sys.stderr)
        return 2
    return _run_server(args, path, execute=not args.no_execute)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _run_server(args: argparse.Namespace, path: Path | None, *, execute: bool) -> int:
    _configure_logging(args.verbose, log_format=args.log_format)
    full = load_config(args)
    options = ServiceOptions(language=args.language, cgi=args.cgi, watch=args.watch, env=full.env)
    output = ex.DEFAULT_OUTPUT
    if getattr(args, "execute_output", None):
        output = Limits.from_mapping({"output": args.execute_output}).output or output
    authenticator = Authenticator.from_mapping(full.auth, full.rate_limit, base=full.base)
    if not authenticator.enabled and not _loopback(args.host):
        if not args.insecure:
            print(
                f"stack: refusing to listen on {args.host} with no authentication: anyone who "
                "can reach it could run code here. Configure auth (API keys or JWT, see "
                "README: Authentication) or pass --insecure if that is what you want.",
                file=sys.stderr,
            )
            return 2
        log.warning("--insecure: listening on %s with NO authentication", args.host)
    sock = bind(args.host, args.port)
    grace = parse_duration(args.grace, default_unit="s")

    action_dirs = [*args.actions, *directories_from_env(os.environ)]
    variables = variables_from_env(os.environ)
    from .brokers import brokers_from_mapping
    from .triggers import describe, triggers_from

    broker_configs = brokers_from_mapping(full.brokers, base=full.base)
    triggers = triggers_from(list(full.triggers) or None, broker_configs)
    gateway = None
    if getattr(args, "gateway", None):
        from .actions_cli import broker_from

        gateway = broker_from(args.gateway, full)
    reporting = os.environ.get("STACK_REPORTING_URL") or None
    judge0 = None
    if execute and not getattr(args, "no_judge0", False):
        store = {"store": args.judge0_store} if getattr(args, "judge0_store", None) else {}
        judge0 = Judge0Settings.from_mapping({**full.judge0, **store}, source="command line")

    async def run() -> None:
        async with open_app(path, full.engine, options, debug=args.debug, execute=execute,
                            actions=action_dirs, variables=variables,
                            reporting_url=reporting, gateway=gateway,
                            brokers=broker_configs, triggers=triggers,
                            judge0=judge0) as app:  # fmt: skip
            for line in describe(triggers):
                log.warning("trigger: %s", line)
            app.execute_output = output
            if app.judge0 is not None:
                app.judge0.output = output
            app.auth = authenticator
            if app.engine.isolation == "none":
                log.warning(
                    "isolation: none - scripts run without a sandbox (trusted code only; "
                    "use --isolate bwrap for untrusted code)"
                )
            draining = trio.Event()

            async def drain() -> None:
                await draining.wait()
                app.health.draining = True

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_signals, draining, nursery.cancel_scope)

                async def serving(task_status: trio.TaskStatus[str]) -> None:
                    await serve(app, sock, shutdown_trigger=drain, grace=grace,
                                task_status=task_status)  # fmt: skip
                    nursery.cancel_scope.cancel()  # served out: stop watching signals

                url = await nursery.start(serving)
                what = str(path) if path is not None else "the execute API"
                if action_dirs and app.actions is not None:
                    what += f" and {len(app.actions.actions)} actions"
                    if path is None and not execute:
                        what = f"{len(app.actions.actions)} actions"
                where = url + "/"
                if path is not None and app.services.single is None:
                    names = app.services.names()
                    where += f" ({', '.join(names[:12])}{' ...' if len(names) > 12 else ''})"
                if execute:
                    where += f" and {url}/api/v2/execute"
                if app.judge0 is not None:
                    where += f" and {url}/submissions (Judge0)"
                print(f"stack: serving {what} at {where} [isolate={app.engine.isolation}]",
                      file=sys.stderr, flush=True)  # fmt: skip
                pools = app.engine.pool_stats()
                if pools:
                    warm = ", ".join(f"{p.key.removeprefix('service:')} {p.size} {p.language}"
                                     for p in pools)  # fmt: skip
                    print(f"stack: warm pools: {warm}", file=sys.stderr, flush=True)

    trio.run(run)
    return 0


class _StreamIO(CollectIO):
    """``stack exec``: our stdin to the program, its output to ours as it comes."""

    def __init__(self, stdin: trio.abc.ReceiveStream | None) -> None:
        super().__init__()
        self._in = stdin
        self._stdout = os.fdopen(os.dup(1), "wb", buffering=0)
        self._stderr = os.fdopen(os.dup(2), "wb", buffering=0)

    async def receive_stdin(self) -> bytes:
        if self._in is None:
            return b""
        return bytes(await self._in.receive_some(65536))

    async def send_head(self, head: Head) -> None:
        pass

    async def send_body(self, data: bytes) -> None:
        await trio.to_thread.run_sync(self._stdout.write, data)

    def on_stderr(self, data: bytes) -> None:
        self._stderr.write(data)

    def on_event(self, event: Event) -> None:
        pass

    def on_started(self, running: Running) -> None:
        pass

    def close(self) -> None:
        self._stdout.close()
        self._stderr.close()


def exec_command(args: argparse.Namespace) -> int:
    """``stack exec FILE [ARGS...]``: run one file once; exit with its code."""
    logging.getLogger("stack").addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("stack").setLevel(logging.WARNING)
    full = load_config(args)
    path: Path = args.file
    if not path.is_file():
        print(f"stack: {path}: no such file", file=sys.stderr)
        return 2
    source = path.read_bytes()
    result: dict[str, Any] = {}

    async def run() -> int:
        async with open_engine(full.engine) as engine:
            registry = engine.registry
            lang = (registry.get(args.language) if args.language
                    else registry.detect(path.name, source[:256]))  # fmt: skip
            engine.interpreter(lang)
            job = ex.Job(lang, ex._semver(registry.installed(lang).version),
                         ((path.name, source),), b"", tuple(args.args), engine.config.limits,
                         ex._stage_limits({}, "compile", engine, compile_stage=True),
                         engine.config.limits.output or ex.DEFAULT_OUTPUT)  # fmt: skip
            if args.json:
                stdin = await trio.to_thread.run_sync(_read_stdin)
                job = ex.Job(job.language, job.version, job.files, stdin, job.args, job.run,
                             job.compile, job.output)  # fmt: skip
                result.update(await ex.execute(engine, job))
                print(json.dumps(result, indent=2))
                run = result["run"]
                return _exit_code(run.get("code"), run.get("signal"))
            async with engine.open_call(job.run) as call:
                names = await ex.prepare(call, job)
                build = None
                if lang.compile:
                    build = await ex.compile_stage(call, job, names)
                    if not build.ok:
                        sys.stderr.buffer.write(build.output)
                        sys.stderr.flush()
                        outcome = build.outcome
                        code = outcome.exit_code if outcome is not None else None
                        return code or 1
                piped = None if sys.stdin is None or sys.stdin.isatty() else _stdin_stream()
                io = _StreamIO(piped)
                try:
                    outcome = await call.run(ex.run_invocation(call, job, names, build), io)
                finally:
                    io.close()
                if outcome.reason not in ("ok", "exit", "signal"):
                    print(f"stack: {outcome.message}", file=sys.stderr)
                name = signal.Signals(outcome.signal).name if outcome.signal else None
                return _exit_code(outcome.exit_code, name)

    return trio.run(run)


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def _stdin_stream() -> trio.abc.ReceiveStream:
    return trio.lowlevel.FdStream(os.dup(0))


def _exit_code(code: int | None, signal_name: str | None) -> int:
    if code is not None:
        return code
    if signal_name:
        try:
            return 128 + int(signal.Signals[signal_name])
        except KeyError:
            return 1
    return 1


def key_command(argv: Sequence[str]) -> int:
    """``stack key create NAME --scopes execute,services``: a new API key.

    The key is printed once; the config entry holds only its SHA-256.
    """
    from .auth import SCOPES, hash_key, new_key

    parser = argparse.ArgumentParser(prog="stack key", description=key_command.__doc__)
    parser.add_argument("action", choices=["create"])
    parser.add_argument("name")
    parser.add_argument(
        "--scopes",
        default="execute",
        help=f"comma-separated: {', '.join(SCOPES)} (default: execute)",
    )
    parser.add_argument("--rate", help="its own rate limit, e.g. 5/s")  # fmt: skip
    args = parser.parse_args(list(argv))
    scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        print(f"stack: unknown scope(s) {bad}; scopes: {', '.join(SCOPES)}", file=sys.stderr)
        return 2
    key = new_key()
    entry: dict[str, Any] = {"name": args.name, "sha256": hash_key(key), "scopes": scopes}
    if args.rate:
        entry["rate"] = args.rate
    print(f"key: {key}")
    print("(shown once: give it to the client; put this entry under auth.keys in the config)")
    print(json.dumps(entry))
    return 0
