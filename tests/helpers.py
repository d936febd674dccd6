"""Helpers shared by the test modules (test modules never import each other)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

STACK = [sys.executable, "-m", "sandbox"]
"""The `stack` command of the checkout under test."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def stack_server(
    *args: str,
    command: Sequence[str] = STACK,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    start_timeout: float = 30,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Run `stack ARGS`; yield the URL it prints and the process; SIGTERM it on exit."""
    proc = subprocess.Popen(
        [*command, *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    assert proc.stderr is not None
    try:
        deadline = time.monotonic() + start_timeout
        url = None
        seen = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            if " at http://" in line:
                url = line.split(" at ", 1)[1].split()[0].rstrip("/")
                break
        assert url, f"stack did not print its URL (exit {proc.poll()}): {''.join(seen)}"
        yield url, proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()
