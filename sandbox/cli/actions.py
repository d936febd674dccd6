"""``stack action``, ``stack run`` and ``stack request``: actions from the command line.

Exit codes: 0 the response is OK, 1 it is ERROR, 2 a usage error (bad flags,
unreadable files, no actions).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

from ..config import Config
from ..core.engine import open_engine
from ..errors import StackError
from ..features import actions as act
from ..features.reporting import Reporter
from ._table import table
from .common import (
    TIMEOUT_HELP,
    HelpFormatter,
    add_config_flags,
    broker_from,
    configure_logging,
    load_config,
)

log = logging.getLogger("stack")
NO_ACTIONS = ("no actions: pass --actions DIR, set STACK_ACTIONS (or EXO_ACTIONS), "
              "or run where an ./actions folder is")  # fmt: skip

VIA_CONNECT_TIMEOUT = 2.0
"""Seconds ``stack request --via URL`` tries to reach the broker."""


def _parser(command: str) -> argparse.ArgumentParser:
    descriptions = {
        "action": "List the actions, or show one: description, input and output schemas, "
        "help URL and an example request.",
        "run": "Run an action with inputs given as -i key=value (typed by the input schema; "
        "key=@file.json reads JSON). Prints the response JSON.",
        "request": 'Handle a full request JSON ({"action", "input", "mapping"}) from FILE or '
        "stdin and print the response: stack request < request.json | jq",
    }
    parser = argparse.ArgumentParser(prog=f"stack {command}", description=descriptions[command],
                                     formatter_class=HelpFormatter)  # fmt: skip
    if command == "action":
        parser.add_argument("name", nargs="?", help="the action to show")
        parser.add_argument("--json", action="store_true", help="print JSON")
    elif command == "run":
        parser.add_argument("name", help="the action")
        parser.add_argument("-i", "--input", action="append", default=[], metavar="KEY=VALUE",
                            help="an input value (repeatable); KEY=@file.json: JSON")  # fmt: skip
        parser.add_argument("-m", "--mapping", action="append", default=[], metavar="FROM=TO",
                            help="rename an output key (repeatable)")  # fmt: skip
    else:
        parser.add_argument(
            "file", nargs="?", default="-", help="the request JSON (default: stdin)"
        )
        parser.add_argument(
            "--via",
            metavar="BROKER",
            help="send it to workers over a broker (nats://HOST:4222, or a broker name "
            "from the config) instead of running it here",
        )
        parser.add_argument(
            "--subject",
            default="stack.requests",
            help="the workers' subject (default stack.requests)",
        )
        parser.add_argument("--wait", default="60s", help="how long to wait for the reply")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to the terminal")
    parser.add_argument("-t", "--timeout", default=None, help=TIMEOUT_HELP)
    add_config_flags(parser, server=False)
    return parser


def main(command: str, argv: Sequence[str]) -> int:
    """Run ``stack action|run|request``."""
    args = _parser(command).parse_args(list(argv))
    configure_logging(args.verbose, terminal_level=logging.INFO if args.verbose else logging.ERROR)
    try:
        config = load_config(args)
        if command == "request" and args.via:
            return trio.run(_via, args, config, _read_request(args.file))
        directories = act.action_directories(args.actions, os.environ)
        if not directories:
            print(f"stack: {NO_ACTIONS}", file=sys.stderr)
            return 2
        if command == "request":
            request = _read_request(args.file)
        return trio.run(_main, command, args, config, directories,
                        request if command == "request" else None)  # fmt: skip
    except StackError as exc:
        print(f"stack: {exc.message}", file=sys.stderr)
        return 2


async def _via(args: argparse.Namespace, config: Config, request: Any) -> int:
    from ..brokers import BrokerError, open_broker
    from ..core.limits import parse_duration
    from ..features.worker import request_via

    if isinstance(request, act.ActionError):
        return _print(act.failed(request))
    broker_config = broker_from(args.via, config)
    if broker_config.name == "cli":
        # A URL on the command line: a broker that refuses is an answer, not
        # something to wait 10 s for (a configured broker keeps its own).
        broker_config = dataclasses.replace(broker_config, connect_timeout=VIA_CONNECT_TIMEOUT)
    try:
        async with open_broker(broker_config) as broker:
            wait = parse_duration(args.wait, default_unit="s")
            response = await request_via(broker, request, subject=args.subject, timeout=wait)
    except BrokerError as exc:
        print(f"stack: {exc.message}", file=sys.stderr)
        return 2
    return _print(response)


def _read_request(name: str) -> Any:
    try:
        text = sys.stdin.read() if name == "-" else Path(name).read_text(encoding="utf-8")
    except OSError as exc:
        raise StackError(f"cannot read {name}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except ValueError:
        # Not JSON: the pipeline answers with its own ERROR response.
        return act.ActionError("invalid_json", "request", "the request is not valid JSON")


async def _main(command: str, args: argparse.Namespace, config: Config,
                directories: list[Path], request: Any) -> int:  # fmt: skip
    if command == "action":
        from ..core.languages import Registry

        registry = await trio.to_thread.run_sync(
            Registry.load, config.engine.language_dirs, config.engine.path
        )
        actions = act.ActionSet.load(directories, registry)
        return _show(actions, args)
    async with open_engine(config.engine) as engine:
        actions = act.ActionSet.load(directories, engine.registry)
        for problem in actions.problems:
            log.warning("action not loaded: %s", problem)
        if command == "run":
            try:
                action = _get(actions, args.name)
                value = act.coerce_inputs(args.input, action.input_schema)
            except act.ActionError as exc:
                return _print(act.failed(exc))
            mapping = dict(pair.partition("=")[::2] for pair in args.mapping)
            request = {"action": args.name, "input": value}
            if mapping:
                request["mapping"] = mapping
        if isinstance(request, act.ActionError):
            return _print(act.failed(request))
        result = await act.run_request(engine, actions, request,
                                       act.variables_from_env(os.environ))  # fmt: skip
        reporter = Reporter(os.environ.get("STACK_REPORTING_URL") or None)
        if result.error is None:
            log.info("action %s OK in %.3fs", result.action, result.duration)
            reporter.report("success", action=result.action, duration=f"{result.duration:.3f}")
        else:
            error = result.error
            log.warning("action %s ERROR %s at %s: %s", result.action, error.code, error.stage,
                        error.message)  # fmt: skip
            reporter.report("error", action=result.action, code=error.code,
                            stage=error.stage, message=error.message[:500])  # fmt: skip
        await reporter.flush()
        return _print(result.response)


def _get(actions: act.ActionSet, name: str) -> act.Action:
    """The action ``name``; if its manifest is broken, why it did not load.

    Raises:
        ActionError: unknown, or not loaded (naming the file and the problem).
    """
    try:
        return actions.get(name)
    except act.ActionError:
        for problem in actions.problems:
            if problem.path.parent.name == name or _declares(problem.path, name):
                raise act.ActionError(
                    "action_not_loaded", "action", f"action {name!r} did not load: {problem}"
                ) from None
        raise


def _declares(manifest: Path, name: str) -> bool:
    """Whether a (broken) manifest says ``name: NAME`` at its top level."""
    try:
        text = manifest.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    wanted = {f"name: {name}", f"name: '{name}'", f'name: "{name}"'}
    return any(line.rstrip() in wanted for line in text.splitlines())


def _print(response: dict[str, Any]) -> int:
    print(json.dumps(response, indent=2, ensure_ascii=False))
    return 0 if response.get("status") == "OK" else 1


def _show(actions: act.ActionSet, args: argparse.Namespace) -> int:
    for problem in actions.problems:
        print(f"warning: action not loaded: {problem}", file=sys.stderr)
    if args.name:
        try:
            action = _get(actions, args.name)
        except act.ActionError as exc:
            print(f"stack: {exc.message}", file=sys.stderr)
            return 1
        details = action.details()
        if args.json:
            print(json.dumps(details, indent=2))
            return 0
        print(f"{action.name} ({action.language.name}) - {', '.join(action.tags) or 'no tags'}")
        print()
        print(action.description or "(no description)")
        print()
        print("input schema:")
        print(json.dumps(action.input_schema, indent=2))
        print("output schema:")
        print(json.dumps(action.output_schema, indent=2))
        if action.help:
            print(f"help: {action.help}")
        print("example request:")
        print(json.dumps(details["example"], indent=2))
        return 0
    rows = [a.summary() for a in actions]
    if not rows and not actions.problems:
        print("stack: no action found: an action is a folder with an action.yaml "
              "(or Exo's exo.action.yaml)", file=sys.stderr)  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if rows:
        lines = [
            [r["name"], r["language"], ", ".join(r["tags"]) or "-",
             (r["description"].splitlines() or [""])[0]]
            for r in rows
        ]  # fmt: skip
        print(table(["NAME", "LANGUAGE", "TAGS", "DESCRIPTION"], lines))
    if actions.problems:
        print(f"stack: {len(actions.problems)} action(s) did not load (above)", file=sys.stderr)
        return 1
    return 0
