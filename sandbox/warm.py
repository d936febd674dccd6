"""Warm pools: interpreters started ahead of their call, each serving exactly one.

A pool belongs to one service (or any caller-chosen key) and keeps up to
``size`` processes waiting. Each went through the whole spawn path (its own
call directory and uid, the launcher's rlimits and pid namespace, bubblewrap,
the interpreter and its prelude) and blocks on stdin for its call. A call
that takes one sends it a message (the script, its arguments and the call's
environment) and drives it like any other process; the pool starts a
replacement in the background. A process never serves a second call, so
nothing a call does is seen by the next.

When a call's command line differs from the pool's (other limits, another
script), the waiting process is discarded and the call starts cold. After
``idle`` seconds without a call the pool shrinks to one process.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from . import process

if TYPE_CHECKING:
    from .engine import Engine, Invocation
    from .limits import Limits

log = logging.getLogger("stack")

IDLE = 60.0
CHECK_EVERY = 1.0


@dataclass
class Waiting:
    """One warm process and what it holds until a call takes it.

    Attributes:
        started: the launched process (blocked in its prelude).
        workdir: its call directory, adopted by the call that takes it.
        uid: its sandbox uid, also adopted.
        prefix: its command line, which a call's must start with.
        pool: the pool it came from.
    """

    started: process.Started
    workdir: Path
    uid: int | None
    prefix: tuple[str, ...]
    pool: Pool

    def message(self, argv: Sequence[str], env: Mapping[str, str]) -> bytes:
        """The call message the prelude waits for: 8 hex digits of length, then JSON."""
        body = json.dumps({"argv": list(argv), "env": dict(env)}).encode()
        return b"%08x" % len(body) + body


@dataclass
class PoolStats:
    """What a pool did, for logs, health and the CLI."""

    key: str
    language: str
    size: int
    ready: int
    hits: int
    misses: int

    @property
    def hit_rate(self) -> float:
        """Hits over calls, 0 before the first call."""
        calls = self.hits + self.misses
        return self.hits / calls if calls else 0.0

    def line(self) -> str:
        """One line for the log."""
        return (
            f"warm pool {self.key}: {self.ready}/{self.size} {self.language} waiting, "
            f"{self.hits} hits, {self.misses} misses ({self.hit_rate:.0%})"
        )


@dataclass
class Pool:
    """Keeps up to ``size`` processes of one invocation waiting.

    Attributes:
        key: what calls name to take from it (a service's name).
        invocation: the template: language, script, service env, network.
        limits: the limits its processes are started under.
        size: processes kept waiting while calls come.
        idle: seconds without a call before it shrinks to one.
    """

    engine: Engine
    key: str
    invocation: Invocation
    limits: Limits
    size: int
    idle: float = IDLE
    ready: collections.deque[Waiting] = field(default_factory=collections.deque)
    hits: int = 0
    misses: int = 0
    starting: int = 0
    last_call: float = field(default_factory=time.monotonic)
    failures: int = 0
    _wake: trio.Event = field(default_factory=trio.Event)

    @property
    def language(self) -> str:
        """The pool's language name."""
        return self.invocation.language.name

    def target(self) -> int:
        """How many processes it should hold now."""
        if time.monotonic() - self.last_call > self.idle:
            return min(self.size, 1)
        return self.size

    def take(self) -> Waiting | None:
        """A waiting process for a call, or None (a miss: the call starts cold)."""
        self.last_call = time.monotonic()
        found = None
        while self.ready:
            waiting = self.ready.popleft()
            self.engine.metrics.pool_size.labels(self.language).dec()
            if waiting.started.alive():
                found = waiting
                break
            self.engine.dispose_soon(waiting)  # died while waiting (killed from outside)
        self._wake.set()
        return found

    def count(self, hit: bool) -> None:
        """Record whether a taken process served its call."""
        if hit:
            self.hits += 1
            self.engine.metrics.pool_hits.labels(self.language).inc()
        else:
            self.misses += 1
            self.engine.metrics.pool_misses.labels(self.language).inc()

    def stats(self) -> PoolStats:
        """A snapshot."""
        return PoolStats(self.key, self.language, self.size, len(self.ready), self.hits,
                         self.misses)  # fmt: skip

    async def maintain(self) -> None:
        """Top the pool up, retire what idleness no longer needs, drop dead processes."""
        shrunk = False
        while True:
            target = self.target()
            if target < self.size and not shrunk and len(self.ready) > target:
                log.info("warm pool %s: idle for %g s, shrinking to %d", self.key, self.idle,
                         target)  # fmt: skip
            shrunk = target < self.size
            while len(self.ready) > target:
                waiting = self.ready.pop()
                self.engine.metrics.pool_size.labels(self.language).dec()
                await self.engine.dispose(waiting)
            for waiting in [w for w in self.ready if not w.started.alive()]:
                self.ready.remove(waiting)
                self.engine.metrics.pool_size.labels(self.language).dec()
                await self.engine.dispose(waiting)
            while len(self.ready) + self.starting < target:
                fresh = await self._start()
                if fresh is None:
                    break
                self.ready.append(fresh)
                self.engine.metrics.pool_size.labels(self.language).inc()
            self._wake = trio.Event()
            # After failures, back off so a broken interpreter does not spin.
            with trio.move_on_after(CHECK_EVERY * min(2**self.failures, 30)):
                await self._wake.wait()

    async def _start(self) -> Waiting | None:
        self.starting += 1
        try:
            waiting = await self.engine.start_warm(self)
        except Exception as exc:  # noqa: BLE001 - a pool must outlive a failed start
            self.failures += 1
            log.warning("warm pool %s: could not start an interpreter: %s", self.key, exc)
            return None
        finally:
            self.starting -= 1
        self.failures = 0
        return waiting
