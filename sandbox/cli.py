"""The ``stack`` command line.

stack SCRIPT|DIR [options]     serve a script, or every script of a folder
stack languages                list languages and what is installed
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from . import __version__
from .asgi import open_app
from .config import Config
from .errors import ConfigError, StackError
from .languages import Registry
from .limits import parse_duration
from .server import bind, serve, wait_for_signal
from .services import ServiceOptions

COMMANDS = ("languages",)
log = logging.getLogger("stack")


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack",
        add_help=False,
        description="Serve a script (or a folder of scripts) over HTTP; every request runs "
        "in a freshly spawned interpreter.",
        epilog="Other commands: `stack languages`. Run `stack COMMAND --help` for theirs.",
    )
    parser.add_argument("path", type=Path, help="a script, or a folder of scripts")
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
    _add_config_flags(parser)
    parser.add_argument("--version", action="version", version=f"stack {__version__}")
    return parser  # fmt: skip


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
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an environment variable for every call (repeatable)",
    )
    group.add_argument("--registry", type=Path, action="append", default=[], metavar="DIR",
                       help="an extra folder of language YAML files (repeatable)")  # fmt: skip


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
        if not args:
            _serve_parser().print_help()
            return 2
        return serve_path(_serve_parser().parse_args(args))
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


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s", "%H:%M:%S"))
    root = logging.getLogger("stack")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    logging.getLogger("stack.access").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("hypercorn.error").addHandler(handler)


def serve_path(args: argparse.Namespace) -> int:
    """``stack SCRIPT|DIR``: serve it until SIGINT/SIGTERM."""
    _configure_logging(args.verbose)
    full = load_config(args)
    config = full.engine
    options = ServiceOptions(language=args.language, cgi=args.cgi, watch=args.watch, env=full.env)
    path: Path = args.path
    if not path.exists():
        print(f"stack: {path}: no such file or folder", file=sys.stderr)
        return 2
    sock = bind(args.host, args.port)

    async def run() -> None:
        async with open_app(path, config, options, debug=args.debug) as app:
            if app.engine.isolation == "none":
                log.warning(
                    "isolation: none - scripts run without a sandbox (trusted code only; "
                    "use --isolate bwrap for untrusted code)"
                )
            async with trio.open_nursery() as nursery:
                url = await nursery.start(
                    lambda task_status: serve(
                        app, sock, shutdown_trigger=wait_for_signal, task_status=task_status
                    )
                )
                names = [s.name for s in app.services]
                where = url + "/" if app.services.single else f"{url}/ ({', '.join(names)})"
                print(f"stack: serving {path} at {where} [isolate={app.engine.isolation}]",
                      file=sys.stderr, flush=True)  # fmt: skip

    trio.run(run)
    return 0
