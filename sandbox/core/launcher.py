"""Finds, or builds once, the small C launcher every call is started through.

The launcher (``_launcher.c``) sets the call's rlimits, drops to its uid,
starts it in a fresh pid namespace (unless bubblewrap makes one) and kills
whatever is left when it ends. It is compiled with the system C compiler on
first use and cached by the hash of its source and of the compile line.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import SpawnError

SOURCE = Path(__file__).with_name("_launcher.c")
FLAGS = ("-O2", "-std=gnu11")


def cache_directory() -> Path:
    """Where built helpers are kept: ``$STACK_CACHE_DIR`` or ``~/.cache/stack``."""
    explicit = os.environ.get("STACK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stack"


def compile_lines() -> list[list[str]]:
    """The compile commands to try (without flags and files), fastest launcher first.

    The launcher is exec'd once per call, so its start-up is on every call's
    path: a static one skips the dynamic loader (about 0.2 ms here), and a
    static musl one also skips glibc's start-up, which probes the CPU with
    ``cpuid`` (slow in a virtual machine; another 0.2 ms). musl-gcc is used
    when installed (``apt-get install musl-tools``), else the C compiler,
    static if the C library allows it.
    """
    lines: list[list[str]] = []
    musl = shutil.which("musl-gcc")
    if musl is not None:
        lines.append([musl, "-static"])
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is not None:
        lines += [[compiler, "-static"], [compiler]]
    return lines


def launcher_path() -> Path:
    """The launcher executable, built now if it is not in the cache (blocking).

    Raises:
        SpawnError: no C compiler, or the build failed.
    """
    source = SOURCE.read_bytes()
    directory = cache_directory()
    prefix = f"stack-launch-{hashlib.sha256(source).hexdigest()[:16]}"
    lines = compile_lines()
    if not lines:
        # No compiler now: any build of this source made before will do.
        built = sorted(directory.glob(f"{prefix}-*"))
        if built and os.access(built[0], os.X_OK):
            return built[0]
        raise SpawnError(
            "stack needs a C compiler once, to build its process launcher: "
            "install gcc (apt-get install gcc), then start stack again"
        )
    # Named by the best line this machine has: installing musl-tools later
    # gets the faster launcher built on the next start.
    best = hashlib.sha256(" ".join(lines[0]).encode()).hexdigest()[:8]
    target = directory / f"{prefix}-{best}"
    if os.access(target, os.X_OK):
        return target
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as work:
        out = Path(work) / "stack-launch"
        errors = ""
        for line in lines:
            done = subprocess.run(
                [*line, *FLAGS, "-o", str(out), str(SOURCE)], capture_output=True, check=False
            )
            if done.returncode == 0:
                break
            errors = done.stderr.decode(errors="replace")[:2000]
        else:
            raise SpawnError(f"building the launcher failed: {errors}")
        out.chmod(0o755)
        os.replace(out, target)
    return target
