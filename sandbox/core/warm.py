"""Warm pools: interpreters started ahead of their call, each serving exactly one.

A pool belongs to one service (or any caller-chosen key) and keeps up to
``size`` processes waiting. Each went through the whole spawn path (its own
call directory and uid, the launcher's rlimits and pid namespace, bubblewrap,
the interpreter and its prelude), says ``{"type": "ready"}`` on fd 3 once
loaded, and blocks on stdin for its call. A call that takes one sends it a
message (the script, its arguments and the call's environment) and drives
it like any other process; the pool starts a replacement in the background.
A process never serves a second call, so nothing a call does is seen by the
next.

A call takes a ready process when there is one (a hit); else the one that
started first, still loading but ahead of a cold start (early); else it
starts cold (a miss).

When a call's command line differs from the pool's (other limits, another
script), the waiting process is discarded and the call starts cold. After
``idle`` seconds without a call the pool shrinks to one process.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import trio

from . import process
from .invocation import Invocation
from .limits import Limits
from .observer import Observer, WarmUse

log = logging.getLogger("stack")

IDLE = 60.0
CHECK_EVERY = 1.0
LOADING_POLL = 0.05


class PoolOwner(Protocol):
    """What a pool needs of the engine that owns it (the engine is one)."""

    observers: list[Observer]

    async def start_warm(self, pool: Pool) -> Waiting:
        """A process of ``pool``'s invocation, started through the whole sandbox."""
        ...

    async def dispose(self, waiting: Waiting) -> None:
        """End an unused process and free its directory and uid."""
        ...

    def dispose_soon(self, waiting: Waiting) -> None:
        """:meth:`dispose` in a task of the engine's (from synchronous code)."""
        ...


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
    ready: bool = False

    @property
    def stub(self) -> bool:
        """It is the launcher's exec stub (``stack-launch -X``) in the call's
        sandbox, for a language without a warm prelude: the call message
        names the whole program, which starts at the call."""
        return not self.pool.invocation.language.warm

    def poll_ready(self) -> bool:
        """Whether its prelude said it is loaded (reads fd 3 without blocking)."""
        if not self.ready:
            try:
                said = os.read(self.started.control, 256)
            except BlockingIOError:
                return False
            # The prelude writes nothing else to fd 3 before its call.
            self.ready = b'"ready"' in said
        return self.ready

    def message(self, argv: Sequence[str], env: Mapping[str, str]) -> bytes:
        """The call message: 8 hex digits of length, then the body.

        For a prelude, JSON ``{"argv": [SCRIPT, ARGS...], "env": {...}}``;
        for the stub, NUL-terminated fields: the argument count, the program's
        arguments, then ``NAME=VALUE`` entries.
        """
        if self.stub:
            fields = [str(len(argv)), *argv, *(f"{name}={value}" for name, value in env.items())]
            body = b"".join(os.fsencode(f) + b"\0" for f in fields)
        else:
            body = json.dumps({"argv": list(argv), "env": dict(env)}).encode()
        return b"%08x" % len(body) + body


@dataclass
class PoolStats:
    """What a pool did, for logs, health and the CLI."""

    key: str
    language: str
    size: int
    ready: int
    starting: int
    hits: int
    early: int
    misses: int

    @property
    def hit_rate(self) -> float:
        """Calls served by a ready interpreter over calls, 0 before the first call."""
        calls = self.hits + self.early + self.misses
        return self.hits / calls if calls else 0.0

    def line(self) -> str:
        """One line for the log."""
        return (
            f"warm pool {self.key}: {self.ready}/{self.size} {self.language} ready, "
            f"{self.hits} hits, {self.early} early, {self.misses} misses ({self.hit_rate:.0%})"
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

    engine: PoolOwner
    key: str
    invocation: Invocation
    limits: Limits
    size: int
    idle: float = IDLE
    held: collections.deque[Waiting] = field(default_factory=collections.deque)
    hits: int = 0
    early: int = 0
    misses: int = 0
    starting: int = 0
    serving: int = 0
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
        """A process for a call: a ready one, else the oldest still loading, else None."""
        self.last_call = time.monotonic()
        for waiting in [w for w in self.held if not w.started.alive()]:
            self.held.remove(waiting)  # died while waiting (killed from outside)
            self.engine.dispose_soon(waiting)
        found = next((w for w in self.held if w.poll_ready()), None)
        if found is None and self.held:
            found = self.held[0]
        if found is not None:
            self.held.remove(found)
            self.serving += 1
        if not self.held or found is None:
            self._wake.set()  # else the replacement starts when the call ends
        return found

    def wake(self) -> None:
        """Look at the pool now (it was emptied, or a call ended)."""
        self._wake.set()

    def release(self) -> None:
        """A call that took a process has ended: start its replacement now.

        Started while the call runs, a replacement's start-up would compete
        with the call for the CPU; after it, it overlaps the next call's
        arrival instead (unless the pool ran dry: then at once).
        """
        self.serving -= 1
        self.wake()

    def count(self, waiting: Waiting | None) -> None:
        """Record how a call was served: by ``waiting`` (ready or not), or cold (None)."""
        use: WarmUse
        if waiting is None:
            self.misses += 1
            use = "miss"
        elif waiting.ready:
            self.hits += 1
            use = "hit"
        else:
            self.early += 1
            use = "early"
        for observer in self.engine.observers:
            observer.warm_served(self.language, use)

    def stats(self, poll: bool = True) -> PoolStats:
        """A snapshot; ``poll``: read whether processes are loaded now (the event loop only).

        Without ``poll`` (from a thread) it uses what the pool last read,
        at most 50 ms old while processes are loading.
        """
        waiting = list(self.held)
        ready = sum(1 for w in waiting if (w.poll_ready() if poll else w.ready))
        return PoolStats(self.key, self.language, self.size, ready, len(waiting) - ready,
                         self.hits, self.early, self.misses)  # fmt: skip

    async def maintain(self) -> None:
        """Top the pool up, retire what idleness no longer needs, drop dead processes."""
        shrunk = False
        while True:
            self._wake = trio.Event()  # before the work: a wake-up during it counts
            target = self.target()
            if target < self.size and not shrunk and len(self.held) > target:
                log.info("warm pool %s: idle for %g s, shrinking to %d", self.key, self.idle,
                         target)  # fmt: skip
            shrunk = target < self.size
            while len(self.held) > target:
                await self.engine.dispose(self.held.pop())
            for waiting in [w for w in self.held if not w.started.alive()]:
                self.held.remove(waiting)
                await self.engine.dispose(waiting)
            while len(self.held) + self.starting < target and (not self.serving or not self.held):
                fresh = await self._start()
                if fresh is None:
                    break
                self.held.append(fresh)
            # Look again soon while processes load (their readiness is
            # polled), else every CHECK_EVERY; after failures, back off so a
            # broken interpreter does not spin.
            loading = not all([w.poll_ready() for w in self.held])
            pause = LOADING_POLL if loading else CHECK_EVERY * min(2**self.failures, 30)
            with trio.move_on_after(pause):
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
