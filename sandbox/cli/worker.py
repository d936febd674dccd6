"""``stack worker``: answer action requests arriving over a broker, in a queue group."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import trio

from ..brokers import BrokerError, open_broker
from ..config import Config
from ..core.engine import open_engine
from ..core.limits import parse_duration
from ..errors import StackError
from ..features import actions as act
from ..features.judge0 import Settings
from ..features.judge0_worker import serve_judge0_worker
from ..features.worker import QUEUE, SUBJECT, serve_worker
from .actions import NO_ACTIONS
from .common import (
    TIMEOUT_HELP,
    HelpFormatter,
    add_config_flags,
    broker_from,
    configure_logging,
    load_config,
    watch_signals,
)

log = logging.getLogger("stack")


def main(argv: Sequence[str]) -> int:
    """Run ``stack worker``; exit 0 after a clean SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="stack worker",
        formatter_class=HelpFormatter,
        description="Answer action requests (gzipped JSON, Exo style) from a broker queue "
        "group: start as many as you like, on as many machines; each request reaches one.",
    )
    parser.add_argument(
        "--broker", required=True, help="nats://HOST:4222 (or a broker name from the config)"
    )
    parser.add_argument("--subject", default=SUBJECT, help=f"default {SUBJECT}")
    parser.add_argument("--queue", default=QUEUE, help=f"the queue group (default {QUEUE})")
    parser.add_argument("--judge0", action="store_true",
                        help="also run the Judge0 submissions that stack serve nodes send "
                        "(judge0.broker) on stack.judge0, queue group stack-judge0",
                        )  # fmt: skip
    parser.add_argument("-v", "--verbose", action="store_true", help="log each call")
    parser.add_argument("-t", "--timeout", default=None, help=TIMEOUT_HELP)
    parser.add_argument(
        "--grace",
        default="10s",
        help="on SIGTERM, how long the requests it holds may finish (default 10s; a second "
        "SIGTERM stops at once)",
    )
    add_config_flags(parser)  # fmt: skip
    args = parser.parse_args(list(argv))
    configure_logging(args.verbose)
    try:
        config = load_config(args)
        args.grace = parse_duration(args.grace, default_unit="s")
        directories = act.action_directories(args.actions, os.environ)
        if not directories and not args.judge0:
            print(f"stack: {NO_ACTIONS} (or pass --judge0)", file=sys.stderr)
            return 2
        return trio.run(_run, args, config, directories)
    except StackError as exc:
        print(f"stack: {exc.message}", file=sys.stderr)
        return 2


async def _run(args: argparse.Namespace, config: Config, directories: list[Path]) -> int:
    stop = trio.Event()
    async with open_engine(config.engine) as engine:
        actions = act.ActionSet.load(directories, engine.registry)
        for problem in actions.problems:
            log.warning("action not loaded: %s", problem)
        judge0 = Settings.from_mapping(config.judge0) if args.judge0 else None
        try:
            async with (
                open_broker(broker_from(args.broker, config)) as broker,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(watch_signals, stop, nursery.cancel_scope)
                nursery.start_soon(_grace, stop, args.grace, nursery.cancel_scope)
                await nursery.start(_announce, broker.name, args, len(actions))
                async with trio.open_nursery() as serving:
                    if judge0 is not None:
                        await serving.start(partial(serve_judge0_worker, engine, broker,
                                                    stop=stop, settings=judge0))  # fmt: skip
                    if directories:
                        handled = await serve_worker(
                            engine, actions, broker, variables=act.variables_from_env(os.environ),
                            stop=stop, subject=args.subject, queue=args.queue,
                        )  # fmt: skip
                        log.warning("worker: stopped after %d requests", handled)
                nursery.cancel_scope.cancel()
        except BrokerError as exc:
            print(f"stack: {exc.message}", file=sys.stderr)
            return 2
    return 0


async def _grace(stop: trio.Event, grace: float, stop_now: trio.CancelScope) -> None:
    """After the first SIGTERM, give the requests held ``grace`` seconds, then stop."""
    await stop.wait()
    await trio.sleep(grace)
    log.warning("worker: the grace of %g s is over: stopping the requests still running", grace)
    stop_now.cancel()


async def _announce(
    name: str,
    args: argparse.Namespace,
    count: int,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    judge0 = ", and Judge0 submissions on stack.judge0" if args.judge0 else ""
    print(f"stack: worker on {name} ({args.broker}), subject {args.subject}, queue group "
          f"{args.queue}, {count} actions{judge0}", file=sys.stderr, flush=True)  # fmt: skip
    task_status.started()
