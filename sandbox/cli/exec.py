"""``stack exec FILE``: run one file once, as the server would."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import trio

from ..core.builds import Build
from ..core.control import Event, Head
from ..core.engine import open_engine
from ..core.launcher import cache_directory
from ..core.process import CollectIO, Running
from ..features import jobs as ex
from ..features.paths import UserPaths
from .common import TIMEOUT_HELP, HelpFormatter, add_config_flags, exit_code, load_config


def exec_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stack exec",
        formatter_class=HelpFormatter,
        description="Run one file once, with the server's engine, limits and isolation: "
        "stdin to stdin, its stdout and stderr to yours, its exit code as ours.",
    )
    parser.add_argument("file", type=Path, help="the program (compiled first if its language is)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    parser.add_argument("-l", "--language", help="its language, instead of detecting")
    parser.add_argument("--json", action="store_true",
                        help="print the result in Piston's shape instead of streaming")  # fmt: skip
    parser.add_argument("-t", "--timeout", default=None, help=TIMEOUT_HELP)
    add_config_flags(parser, server=False)
    return parser


_MEMORY_SIGNALS = (signal.SIGSEGV, signal.SIGBUS, signal.SIGABRT)


class _StreamIO(CollectIO):
    """``stack exec``: our stdin to the program, its output to ours as it comes."""

    def __init__(self, stdin: trio.abc.ReceiveStream | None, paths: UserPaths) -> None:
        super().__init__()
        self._in = stdin
        self._paths = paths
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
        self._stderr.write(self._paths.feed(data))

    def on_event(self, event: Event) -> None:
        pass

    def on_started(self, running: Running) -> None:
        pass

    def close(self) -> None:
        self._stderr.write(self._paths.flush())
        self._stdout.close()
        self._stderr.close()


def exec_command(args: argparse.Namespace) -> int:
    """``stack exec FILE [ARGS...]``: run one file once; exit with its code."""
    logging.getLogger("stack").addHandler(logging.StreamHandler(sys.stderr))
    logging.getLogger("stack").setLevel(logging.WARNING)
    full = load_config(args)
    path: Path = args.file
    if path.is_dir():
        print(f"stack: {path} is a folder: stack exec runs one file (to serve a folder of "
              f"scripts: stack {path})", file=sys.stderr)  # fmt: skip
        return 2
    if not path.is_file():
        print(f"stack: {path}: no such file", file=sys.stderr)
        return 2
    source = path.read_bytes()
    paths = UserPaths(path.name, str(path))
    # Builds are kept in the user's cache folder: the same file compiles once.
    engine_config = dataclasses.replace(full.engine, build_cache=cache_directory() / "builds")
    terminal = sys.stderr is not None and sys.stderr.isatty()

    async def run() -> int:
        async with open_engine(engine_config) as engine:
            job = ex.file_job(engine, path.name, source, language=args.language, args=args.args)
            if args.json:
                stdin = await trio.to_thread.run_sync(_read_stdin)
                result = await ex.execute(engine, dataclasses.replace(job, stdin=stdin))
                for part in ("compile", "run"):
                    for stream in ("stderr", "output"):
                        if isinstance(result.get(part, {}).get(stream), str):
                            text = result[part][stream].encode()
                            result[part][stream] = paths.rewrite(text).decode()
                print(json.dumps(result, indent=2))
                run = result["run"]
                return exit_code(run.get("code"), run.get("signal"))

            started = [0.0]

            async def stage(name: str) -> None:
                if name == "compile" and terminal:
                    # Shown while it lasts, erased when done (a cached build
                    # takes no time): a long compile is not silence.
                    started[0] = time.monotonic()
                    sys.stderr.write(f"stack: compiling {path} ({job.language.name})...")
                    sys.stderr.flush()

            async def compiled(build: Build) -> None:
                if terminal:
                    sys.stderr.write("\r\033[K")
                    if not build.cached and build.ok:
                        took = time.monotonic() - started[0]
                        sys.stderr.write(f"stack: compiled {path} in {took:.1f} s\n")
                    sys.stderr.flush()
                if not build.ok:
                    sys.stderr.buffer.write(paths.rewrite(build.output))
                    sys.stderr.flush()

            piped = None if sys.stdin is None or sys.stdin.isatty() else _stdin_stream()
            io = _StreamIO(piped, paths)
            try:
                done = await ex.run_job(engine, job, io, on_stage=stage, on_compiled=compiled)
            finally:
                io.close()
            outcome = done.outcome
            if outcome is None:  # the compile failed
                failed = done.build.outcome if done.build is not None else None
                return (failed.exit_code if failed is not None else None) or 1
            if outcome.reason not in ("ok", "exit"):
                message = outcome.message
                memory = full.engine.limits.memory
                if outcome.reason == "signal" and outcome.signal in _MEMORY_SIGNALS and memory:
                    message += (
                        f" (under its memory limit of {memory / 2**20:g} MiB: if that is "
                        "too little for its interpreter to start, raise --memory)"
                    )
                print(f"stack: {message}", file=sys.stderr)
            name = signal.Signals(outcome.signal).name if outcome.signal else None
            return exit_code(outcome.exit_code, name)

    return trio.run(run)


def _read_stdin() -> bytes:
    if sys.stdin is None or sys.stdin.isatty():
        return b""
    return sys.stdin.buffer.read()


def _stdin_stream() -> trio.abc.ReceiveStream:
    return trio.lowlevel.FdStream(os.dup(0))
