"""Where the server's time goes: py-spy on the stack process while it is under load.

py-spy is optional (``pip install py-spy``; it is not a dependency of stack).
``record`` samples the server into py-spy's raw (collapsed stack) format and
``summarize`` turns that into the functions that hold the most samples.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Innermost functions where a thread waits rather than works. py-spy's own
# idle detection misses a worker of Trio's thread cache blocked on its lock.
_IDLE_LEAVES = ("WorkerThread._work", "EpollIOManager.get_events", "Condition.wait")


def find_py_spy() -> str | None:
    """py-spy next to this Python, on PATH, or None."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def record(py_spy: str, pid: int, seconds: int, output: Path) -> subprocess.Popen[bytes]:
    """Start sampling ``pid`` for ``seconds`` at 250 Hz (all threads, no idle samples)."""
    return subprocess.Popen(
        [py_spy, "record", "-p", str(pid), "-d", str(seconds), "-r", "250"]
        + ["-f", "raw", "-o", str(output), "--nonblocking"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@dataclass(frozen=True)
class Profile:
    """Samples by function.

    Attributes:
        samples: samples where a thread was working (idle waits left out).
        in_threads: how many of them were in worker threads (``trio.to_thread``),
            not in the event loop.
        self_time: (frame, samples) where it was the innermost frame, most first.
        by_package: the same summed by the innermost frame's package or
            standard-library module (``trio``, ``hypercorn``, ``pathlib``...).
        inclusive: (function, samples) where it was anywhere on the stack, for
            stack's own code below the command line (``sandbox/``), most first.
    """

    samples: int
    in_threads: int
    self_time: list[tuple[str, int]]
    inclusive: list[tuple[str, int]]
    by_package: list[tuple[str, int]]

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "in_threads": self.in_threads,
            "by_package": [[p, n] for p, n in self.by_package],
            "self": [[f, n] for f, n in self.self_time],
            "inclusive": [[f, n] for f, n in self.inclusive],
        }


def _function(frame: str) -> str:
    """``f (sandbox/engine.py:12)`` -> ``f (sandbox/engine.py)``: a function's lines together."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit(':', 1)[0]})" if where else name


def _package(frame: str) -> str:
    """``f (trio/_core/_run.py:12)`` -> ``trio``; ``f (pathlib.py:3)`` -> ``pathlib``."""
    where = frame.partition(" (")[2].rsplit(":", 1)[0]
    for generated in ("<attrs generated methods ", "<frozen "):
        if where.startswith(generated):  # code made at run time: name its module
            return where.removeprefix(generated).rstrip(">").split(".", 1)[0]
    head = where.split("/", 1)[0]
    return head.removesuffix(".py") or "?"


def summarize(raw: str, top: int = 15) -> Profile:
    """Aggregate py-spy's raw output (``frame;frame;... COUNT`` per line)."""
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = threads = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        if not frames or frames[-1].startswith(_IDLE_LEAVES):
            continue
        count = int(count_text)
        total += count
        if frames[0].startswith("Thread._bootstrap"):
            threads += count
        self_time[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for function in {_function(f) for f in frames}:
            if "(sandbox/" in function and "(sandbox/cli/" not in function:
                inclusive[function] += count
    return Profile(
        total,
        threads,
        self_time.most_common(top),
        inclusive.most_common(top),
        packages.most_common(top),
    )
