"""The raw spawn floor: the interpreter run in a loop, no server in between.

Each run is ``os.posix_spawn`` of ``INTERPRETER SCRIPT`` with stdout on a
pipe, read to the end, then reaped: what any server must pay at the least
to answer with a fresh process. ``concurrency`` processes run such loops side
by side, so the floor has a figure at every concurrency the servers have.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import select
import signal
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from .hellos import EXPECTED_BODY
from .load import LoadResult, summarize

RUN_TIMEOUT = 30.0  # a single run that takes longer is killed and counted as an error


def spawn_once(argv: Sequence[str], env: dict[str, str]) -> tuple[bytes, int]:
    """Run ``argv`` once: its stdout and exit code (-1 when killed for taking too long)."""
    read_end, write_end = os.pipe()
    try:
        pid = os.posix_spawn(
            argv[0],
            list(argv),
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, write_end, 1),
            ],
        )
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    chunks: list[bytes] = []
    poller = select.poll()
    poller.register(read_end, select.POLLIN)
    deadline = time.monotonic() + RUN_TIMEOUT
    killed = False
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        _, status = os.waitpid(pid, 0)
    return b"".join(chunks), -1 if killed else os.waitstatus_to_exitcode(status)


def _worker(
    argv: Sequence[str], env: dict[str, str], runs: int, start_at: float, deadline: float
) -> tuple[list[float], int, float, float]:
    """One loop, in its own process: latencies, errors, end time, children's CPU seconds."""
    time.sleep(max(0.0, start_at - time.monotonic()))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    latencies: list[float] = []
    errors = 0
    for _ in range(runs):
        if time.monotonic() >= deadline:
            break
        began = time.monotonic()
        try:
            output, code = spawn_once(argv, env)
        except OSError:
            output, code = b"", -1
        if code == 0 and output == EXPECTED_BODY:
            latencies.append(time.monotonic() - began)
        else:
            errors += 1
    ended = time.monotonic()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return latencies, errors, ended, cpu


def spawn_floor(
    argv: Sequence[str],
    *,
    home: Path,
    concurrency: int,
    requests: int,
    duration: float,
) -> tuple[LoadResult, float]:
    """Run ``argv`` ``requests`` times (or for ``duration`` seconds) from ``concurrency`` loops.

    Each loop is a process of its own (forked before the clock starts), so
    the loops do not share a GIL: the floor is what the machine can spawn.
    A run counts as an error when it exits non-zero or does not print ``hello``.

    Returns:
        The result, and the interpreters' CPU seconds per run.
    """
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(home)}
    shares = [requests // concurrency + (i < requests % concurrency) for i in range(concurrency)]
    start_at = time.monotonic() + 0.3 + 0.01 * concurrency  # every worker forked by then
    deadline = start_at + duration
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=concurrency, mp_context=context) as pool:
        futures = [
            pool.submit(_worker, list(argv), env, share, start_at, deadline)
            for share in shares
            if share
        ]
        outcomes = [f.result(timeout=duration + RUN_TIMEOUT + 30) for f in futures]
    latencies = [x for outcome in outcomes for x in outcome[0]]
    errors = sum(outcome[1] for outcome in outcomes)
    ended = max(outcome[2] for outcome in outcomes)
    runs = len(latencies) + errors
    cpu = sum(outcome[3] for outcome in outcomes) / runs if runs else float("nan")
    return summarize(latencies, {}, errors, ended - start_at), cpu
