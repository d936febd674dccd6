"""Finds, or builds once, the small C launcher every call is started through.

The launcher (``_launcher.c``) sets the call's rlimits, drops to its uid,
starts it in a fresh pid namespace and kills whatever is left when it ends.
It is compiled with the system C compiler on first use and cached by the
hash of its source.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .errors import SpawnError

SOURCE = Path(__file__).with_name("_launcher.c")


def cache_directory() -> Path:
    """Where built helpers are kept: ``$STACK_CACHE_DIR`` or ``~/.cache/stack``."""
    explicit = os.environ.get("STACK_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "stack"


def launcher_path() -> Path:
    """The launcher executable, built now if it is not in the cache (blocking).

    Raises:
        SpawnError: no C compiler, or the build failed.
    """
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:16]
    directory = cache_directory()
    target = directory / f"stack-launch-{digest}"
    if os.access(target, os.X_OK):
        return target
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        raise SpawnError(
            "stack needs a C compiler once, to build its process launcher: "
            "install gcc (apt-get install gcc), then start stack again"
        )
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory) as work:
        out = Path(work) / "stack-launch"
        done = subprocess.run(
            [compiler, "-O2", "-std=gnu11", "-o", str(out), str(SOURCE)],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0:
            raise SpawnError(
                f"building the launcher failed: {done.stderr.decode(errors='replace')[:2000]}"
            )
        out.chmod(0o755)
        os.replace(out, target)
    return target
