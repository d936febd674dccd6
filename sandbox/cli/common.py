"""What the commands share: the limit and configuration flags, the config they make, logging."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.limits import parse_duration, parse_size
from ..errors import ConfigError
from ..logs import formatter

if TYPE_CHECKING:
    import trio

    from ..config import Config

log = logging.getLogger("stack")

LIMIT_FLAGS = {
    "cpu": "CPU time per call (RLIMIT_CPU), with a unit: 10s (default 10s)",
    "memory": "memory per call, with a unit: 512MiB (RLIMIT_AS, or RLIMIT_DATA for JIT "
    "runtimes; default 512MiB)",
    "processes": "processes and threads per call (RLIMIT_NPROC; when running as root; default 64)",
    "file-size": "largest file a call may write, e.g. 64MiB (default 64MiB)",
    "open-files": "open file descriptors per call (default 256)",
    "output": "stdout bytes per call; past it the stream is cut (default 64MiB)",
    "body": "request body bytes; past it 413 (default 16MiB)",
}
SERVER_ONLY = ("body",)
"""Limits that only mean something to a server (``stack exec`` has no request body)."""

TIMEOUT_HELP = "wall-clock limit per call: 5s, 2m, 500ms, or a bare number of ms as in " \
    "microcule (-t 5000); default 10s"  # fmt: skip
BARE_MS_FLOOR = 100
"""A bare time below this many milliseconds is refused: ``-t 5`` is surely not 5 ms."""
MEMORY_FLOOR = 1024 * 1024
"""Below 1 MiB no interpreter starts: such a --memory is a missing unit."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help with each flag's default shown (when it has one and its text does not say it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return f"{text} (default %(default)s)"


def port_number(text: str) -> int:
    """``-p``: a TCP port, 0 to 65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: ports go from 1 to 65535")
    return port


def cli_duration(flag: str, value: str) -> float:
    """A time limit as written on the command line, in seconds.

    With a unit (``5s``, ``250ms``, ``2m``) it means what it says. A bare
    number is milliseconds, as microcule's ``-t 5000``; below 100 it is
    refused, since ``-t 5`` meaning 5 ms (killed at once) is never what was
    meant.

    Raises:
        ConfigError: not a duration, or a bare number below 100.
    """
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        try:
            return parse_duration(text)
        except ConfigError as exc:
            raise ConfigError(f"{flag} {value}: {exc.message}") from exc
    if number < BARE_MS_FLOOR:
        raise ConfigError(
            f"{flag} {value}: a bare number is milliseconds (as microcule's -t 5000), and "
            f"{value} ms is too short for any program; did you mean {value}s? Write the unit: "
            f"{value}s or {value}ms"
        )
    return parse_duration(text)


def cli_size(flag: str, value: str, *, memory: bool = False) -> int:
    """A size as written on the command line, in bytes.

    A bare number is bytes, but one below 1024 is refused as a forgotten unit;
    a memory limit below 1 MiB is refused whatever its unit (no interpreter
    starts in it: it would die of SIGSEGV without a word).

    Raises:
        ConfigError: not a size, or too small to be meant.
    """
    text = value.strip()
    try:
        size = parse_size(text)
    except ConfigError as exc:
        raise ConfigError(f"{flag} {value}: {exc.message}") from exc
    if text.isdigit() and size < 1024:
        raise ConfigError(
            f"{flag} {value}: a bare number is bytes; did you mean {value}MiB? "
            f"Write the unit: {value}MiB, {value}KiB or {value}B"
        )
    if memory and size < MEMORY_FLOOR:
        raise ConfigError(
            f"{flag} {value}: {size} bytes is too little memory for any program to start "
            "(at least 1MiB; e.g. 64MiB)"
        )
    return size


def add_config_flags(parser: argparse.ArgumentParser, *, server: bool = True) -> None:
    """Flags shared by every command that runs calls; they override --config.

    Args:
        parser: the command's parser.
        server: add the flags that only a server uses (request body, queue,
            warm pools); ``stack exec``, ``action`` and ``run`` leave them out.
    """
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
    for name, text in LIMIT_FLAGS.items():
        if server or name not in SERVER_ONLY:
            group.add_argument(f"--{name}", metavar="N", help=text)
    group.add_argument(
        "--network", action="store_true", default=None, help="let calls use the network under bwrap"
    )
    if server:
        group.add_argument("--max-running", type=int, metavar="N",
                           help="calls running at once (default 16)")  # fmt: skip
        group.add_argument(
            "--max-queue",
            type=int,
            metavar="N",
            help="calls waiting for a slot; past it 503 with Retry-After (default 64)",
        )
        group.add_argument(
            "--warm",
            action="append",
            default=[],
            metavar="N|LANG=N",
            help="keep N interpreters (or sandboxes) of each service started ahead of their "
            "calls, or N for services in LANG (repeatable); each serves one call; every "
            "interpreted language pools (default 0)",
        )
        group.add_argument("--warm-idle", metavar="DURATION",
                           help="a warm pool unused this long shrinks to one (default 60s)",
                           )  # fmt: skip
    group.add_argument(
        "-e",
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE|KEY|PREFIX*",
        help="an environment variable for every call (repeatable); KEY alone passes the "
        "server's KEY, PREFIX* every server variable starting with PREFIX (EXO__*: Exo's "
        "settings); nothing else of the server's environment reaches a call",
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
                       help="a folder of actions (repeatable; or STACK_ACTIONS, EXO_ACTIONS; "
                       "default: ./actions if it exists)")  # fmt: skip


def load_config(args: argparse.Namespace) -> Config:
    """The config file (if any) with the command-line flags on top.

    Raises:
        ConfigError: a bad file, flag or value.
    """
    from ..config import Config, env_from_flags

    config = Config.from_file(args.config) if args.config else Config()
    data: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    timeout = getattr(args, "timeout", None)
    if timeout is not None:
        limits["timeout"] = cli_duration("-t", timeout)
    for name in LIMIT_FLAGS:
        value = getattr(args, name.replace("-", "_"), None)
        if value is None:
            continue
        if name == "cpu":
            value = cli_duration("--cpu", value)
        elif name in ("memory", "file-size", "output", "body"):
            value = cli_size(f"--{name}", value, memory=name == "memory")
        limits[name.replace("-", "_")] = value
    if limits:
        data["limits"] = limits
    if args.isolate is not None:
        data["isolate"] = args.isolate
    if getattr(args, "max_running", None) is not None:
        data["max_running"] = args.max_running
    if getattr(args, "max_queue", None) is not None:
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
    env = env_from_flags(args.env, os.environ)
    if env:
        data["env"] = env
    return Config.from_mapping(data, source="command line", base=config)


def configure_logging(verbose: bool, *, terminal_level: int = logging.INFO,
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
        # Without -v, a call's line shows only when it failed (logged at WARNING).
        handler.addFilter(
            lambda record: record.name != "stack.access" or record.levelno >= logging.WARNING
        )
    to_file = None
    log_file = os.environ.get("STACK_LOG")
    if log_file:
        to_file = logging.FileHandler(log_file, encoding="utf-8")
        to_file.setFormatter(formatter(log_format))
    # "sandbox" holds the brokers' loggers (connection lost, reconnected...):
    # the same handlers, so they follow --log-format and STACK_LOG too.
    for name in ("stack", "sandbox"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        if to_file is not None:
            logger.addHandler(to_file)
    logging.getLogger("hypercorn.error").addHandler(handler)


def exit_code(code: int | None, signal_name: str | None) -> int:
    if code is not None:
        return code
    if signal_name:
        try:
            return 128 + int(signal.Signals[signal_name])
        except KeyError:
            return 1
    return 1


def broker_from(value: str, config: Config) -> Any:
    """A broker given as a URL, or as a name from the config's ``brokers``.

    Raises:
        ConfigError: neither.
    """
    from ..brokers import BrokerConfig, brokers_from_mapping
    from ..errors import ConfigError

    named = brokers_from_mapping(config.brokers, base=config.base)
    if value in named:
        return named[value]
    if "://" not in value:
        known = ", ".join(sorted(named)) or "none configured"
        raise ConfigError(f"no broker named {value!r} (brokers: {known}); or give a URL")
    return BrokerConfig(url=value, name="cli")


async def watch_signals(first: trio.Event, stop_now: trio.CancelScope) -> None:
    """The first SIGTERM/SIGINT sets ``first`` (drain); a second cancels ``stop_now``."""
    import trio

    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for number in signals:
            if not first.is_set():
                log.warning(
                    "%s: finishing calls in flight (send it again to stop at once)",
                    signal.Signals(number).name,
                )
                first.set()
            else:
                log.warning("second signal: stopping now, killing calls in flight")
                stop_now.cancel()
                return
