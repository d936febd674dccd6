"""``stack SCRIPT|DIR`` and ``stack serve``: the HTTP server."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from .common import (
    TIMEOUT_HELP,
    HelpFormatter,
    add_config_flags,
    broker_from,
    configure_logging,
    load_config,
    port_number,
    watch_signals,
)

if TYPE_CHECKING:
    from ..core.engine import Engine

log = logging.getLogger("stack")

DEFAULT_PORT = 3000
STOP_GRACE = 1.0
"""Seconds Hypercorn gives requests once the drain is over (they had the --grace already)."""


def _confinement(engine: Engine) -> str:
    """One line for the start banner: the per-call cgroups, seccomp, the write quota."""
    config = engine.config
    quota = (
        f"a {config.disk >> 20} MiB / {config.disk_files} file tmpfs per call directory"
        if engine.root and config.disk is not None
        else "no write quota (not root, or disk: none)"
    )
    seccomp = "seccomp deny-list on" if engine.seccomp else "no seccomp filter"
    return f"{engine.cgroup_detail}; {seccomp}; {quota}"


def add_server_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument(
        "-p",
        "--port",
        type=port_number,
        default=None,
        help=f"port (default {DEFAULT_PORT}, or the next free one when it is taken; a port "
        "given here is used or the server does not start; 0: any free port)",
    )
    parser.add_argument(
        "-h",
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; a non-loopback one needs auth or "
        "--insecure). -h is the host, as in microcule: help is --help",
    )
    parser.add_argument("-t", "--timeout", default=None, help=TIMEOUT_HELP)
    parser.add_argument("-l", "--language", help="language of the script(s), instead of detecting")
    parser.add_argument(
        "-w", "--watch", action="store_true", help="re-read scripts from disk when they change"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log each call: method, path, status, reason, wall/CPU time, peak memory "
        "(failed calls are logged without it)",
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
    add_config_flags(parser)
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


def script_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack",
        add_help=False,
        formatter_class=HelpFormatter,
        description="Serve a script (or a folder of scripts) over HTTP; every request runs "
        "in a freshly spawned interpreter.",
        epilog="Other commands: serve, exec, languages, action, run, request, worker, key "
        "(`stack --help` lists them, `stack COMMAND --help` shows theirs).",
    )
    parser.add_argument("path", type=Path, help="a script, or a folder of scripts")
    add_server_flags(parser)
    return parser


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack serve",
        add_help=False,
        formatter_class=HelpFormatter,
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
    add_server_flags(parser)
    return parser


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
    execute = not args.no_execute
    if not execute and path is None and not args.actions and not args.gateway:
        from ..features.actions import action_directories

        if not action_directories([], os.environ) and not _has_triggers(args):
            print(
                "stack: --no-execute leaves nothing to serve: add --services DIR, "
                "--actions DIR, --gateway BROKER or triggers in --config",
                file=sys.stderr,
            )
            return 2
    return _run_server(args, path, execute=execute)


def _has_triggers(args: argparse.Namespace) -> bool:
    if args.config is None:
        return False
    return bool(load_config(args).triggers)


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _run_server(args: argparse.Namespace, path: Path | None, *, execute: bool) -> int:
    # Imported here, not at the top: `stack --help` need not load the server.
    import trio

    from ..app import open_app
    from ..core.limits import Limits, parse_duration
    from ..features import jobs as ex
    from ..features.actions import action_directories, variables_from_env
    from ..features.auth import Authenticator
    from ..features.judge0 import Settings as Judge0Settings
    from ..features.services import ServiceOptions
    from ..http.server import bind, serve

    configure_logging(args.verbose, log_format=args.log_format)
    full = load_config(args)
    options = ServiceOptions(language=args.language, cgi=args.cgi, watch=args.watch, env=full.env)
    output = ex.DEFAULT_OUTPUT
    if getattr(args, "execute_output", None):
        output = Limits.from_mapping({"output": args.execute_output}).output or output
    authenticator = Authenticator.from_mapping(full.auth, full.rate_limit, base=full.base)
    if not authenticator.enabled and not loopback(args.host):
        if not args.insecure:
            print(
                f"stack: refusing to listen on {args.host} with no authentication: anyone who "
                "can reach it could run code here. Configure auth (API keys or JWT, see "
                "README: Authentication) or pass --insecure if that is what you want.",
                file=sys.stderr,
            )
            return 2
        log.warning("--insecure: listening on %s with NO authentication", args.host)
    if os.geteuid() != 0 and full.engine.isolate == "none" and not loopback(args.host):
        if not args.insecure:
            print(
                f"stack: refusing to serve {args.host} with --isolate none as a non-root user: "
                "every call would run as this server's own user, able to read its config and "
                "state. Run stack as root (each call then gets a uid of its own), use "
                "--isolate bwrap, or pass --insecure if every script is trusted.",
                file=sys.stderr,
            )
            return 2
        log.warning("--insecure: calls run as this server's user, without a sandbox")
    explicit = args.port is not None
    port = args.port if explicit else DEFAULT_PORT
    sock = bind(args.host, port, tries=1 if explicit else 100)
    bound = sock.getsockname()[1]
    if not explicit and bound != port:
        print(f"stack: port {port} is taken: using {bound} instead (-p PORT to choose one)",
              file=sys.stderr, flush=True)  # fmt: skip
    grace = parse_duration(args.grace, default_unit="s")

    action_dirs = action_directories(args.actions, os.environ)
    variables = variables_from_env(os.environ)
    from ..brokers import brokers_from_mapping
    from ..features.triggers import describe, triggers_from

    broker_configs = brokers_from_mapping(full.brokers, base=full.base)
    triggers = triggers_from(list(full.triggers) or None, broker_configs)
    gateway = None
    if getattr(args, "gateway", None):
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
                            brokers=broker_configs, triggers=triggers, auth=authenticator,
                            execute_output=output, judge0=judge0,
                            clients=full.http) as app:  # fmt: skip
            for line in describe(triggers):
                log.warning("trigger: %s", line)
            if app.engine.isolation == "none":
                log.warning(
                    "isolation: none - scripts run without a sandbox (trusted code only; "
                    "use --isolate bwrap for untrusted code)"
                )
            if not app.engine.root:
                log.warning(
                    "calls run as this server's own user (uid %d): they share its files, "
                    "processes and process limit. For untrusted code run stack as root (in "
                    "a container: the container's root); each call then gets a uid of its own",
                    os.geteuid(),
                )
            draining = trio.Event()

            async def drain() -> None:
                # SIGTERM: keep answering (/readyz says 503, new calls get 503)
                # while the calls in flight finish, for at most the grace; then
                # stop the server, which cancels what is left.
                await draining.wait()
                app.health.draining = True
                with trio.move_on_after(grace):
                    await app.wait_idle()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_signals, draining, nursery.cancel_scope)

                async def serving(task_status: trio.TaskStatus[str]) -> None:
                    # The grace is spent in drain(), while still answering.
                    await serve(app, sock, shutdown_trigger=drain, grace=STOP_GRACE,
                                clients=full.http, task_status=task_status)  # fmt: skip
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
                print(f"stack: {_confinement(app.engine)}", file=sys.stderr, flush=True)
                pools = app.engine.pool_stats()
                if pools:
                    warm = ", ".join(f"{p.key.removeprefix('service:')} {p.size} {p.language}"
                                     for p in pools)  # fmt: skip
                    print(f"stack: warm pools: {warm}", file=sys.stderr, flush=True)

    trio.run(run)
    return 0
