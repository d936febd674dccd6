"""Compiled programs: a build's result and the cache that keeps builds between calls."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from .files import copy_regular_files
from .languages import Language
from .process import Outcome

log = logging.getLogger("stack")


@dataclass(frozen=True)
class Build:
    """The result of a compile step.

    Attributes:
        outcome: how the compiler ended (None when the build came from the cache).
        stdout, stderr, output: what the compiler wrote (output interleaves both).
        directory: the build, read-only, or None when compilation failed.
        cached: the build was reused.
    """

    outcome: Outcome | None
    stdout: bytes
    stderr: bytes
    output: bytes
    directory: Path | None
    cached: bool = False

    @property
    def ok(self) -> bool:
        """True when there is a build to run."""
        return self.directory is not None


class BuildCache:
    """Compiled programs by the hash of their sources, compile line and compiler.

    Bounded to ``max_entries`` builds (least recently used go first); safe
    under concurrent identical requests (one compiles, the others wait).
    """

    def __init__(self, root: Path, max_entries: int = 128, *,
                 persistent: Path | None = None) -> None:  # fmt: skip
        self.root = root
        self.max_entries = max_entries
        self._locks: dict[str, trio.Lock] = {}
        self._used: dict[str, float] = {}
        self.hits = 0
        self.misses = 0
        # A second level kept across processes (``stack exec``): builds are
        # copied in and out of it, never run from it, so calls never see it.
        self.persistent = _private_folder(persistent) if persistent is not None else None

    def key(self, lang: Language, version: str, sources: Sequence[tuple[str, bytes]]) -> str:
        """The cache key of a build."""
        digest = hashlib.sha256()
        for part in (
            lang.name,
            version,
            json.dumps(list(lang.compile)),
            json.dumps(dict(lang.env)),
        ):
            digest.update(part.encode() + b"\0")
        for name, data in sources:
            digest.update(name.encode() + b"\0" + str(len(data)).encode() + b"\0" + data)
        return digest.hexdigest()[:32]

    @asynccontextmanager
    async def lock(self, key: str) -> AsyncIterator[None]:
        """Hold the build of ``key``: concurrent identical builds wait here."""
        lock = self._locks.setdefault(key, trio.Lock())
        try:
            async with lock:
                yield
        finally:
            if not lock.locked() and lock.statistics().tasks_waiting == 0:
                self._locks.pop(key, None)

    def get(self, key: str) -> Path | None:
        """The build of ``key``, or None."""
        path = self.root / key
        if key in self._used and path.is_dir():
            self._used[key] = time.monotonic()
            self.hits += 1
            return path
        self.misses += 1
        return None

    def put(self, key: str, built: Path) -> Path:
        """Keep a finished build (blocking: copies files); returns its place."""
        target = self.root / key
        temporary = self.root / f".{key}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        copy_regular_files(built, temporary)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
        self._used[key] = time.monotonic()
        while len(self._used) > self.max_entries:
            oldest = min(self._used, key=self._used.__getitem__)
            del self._used[oldest]
            shutil.rmtree(self.root / oldest, ignore_errors=True)
        if self.persistent is not None:
            self._keep(key, target)
        return target

    def restore(self, key: str) -> Path | None:
        """The build of ``key`` from the persistent folder, copied in; or None (blocking)."""
        assert self.persistent is not None
        kept = self.persistent / key
        if not kept.is_dir():
            return None
        temporary = self.root / f".{key}.{os.getpid()}.restore"
        try:
            shutil.rmtree(temporary, ignore_errors=True)
            copy_regular_files(kept, temporary)
            os.utime(kept)  # recently used: evicted last
        except OSError:  # evicted meanwhile by another process: a miss
            shutil.rmtree(temporary, ignore_errors=True)
            return None
        target = self.root / key
        shutil.rmtree(target, ignore_errors=True)
        os.replace(temporary, target)
        self._used[key] = time.monotonic()
        self.hits += 1
        self.misses -= 1
        return target

    def _keep(self, key: str, built: Path) -> None:
        """Copy a build into the persistent folder (best effort; other processes share it)."""
        assert self.persistent is not None
        target = self.persistent / key
        if target.is_dir():
            return
        temporary = self.persistent / f".{key}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        try:
            copy_regular_files(built, temporary)
            os.rename(temporary, target)  # atomic; fails if another process got there first
        except OSError:
            shutil.rmtree(temporary, ignore_errors=True)
            return
        try:
            entries = [e for e in os.scandir(self.persistent) if not e.name.startswith(".")]
            entries.sort(key=lambda e: e.stat(follow_symlinks=False).st_mtime)
            for entry in entries[: max(0, len(entries) - self.max_entries)]:
                shutil.rmtree(entry.path, ignore_errors=True)
        except OSError:
            pass


def _private_folder(path: Path) -> Path | None:
    """``path`` made if needed, when it is ours and writable by nobody else; else None.

    Builds from it are run: a folder others may write into could hand us
    their programs.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = path.stat()
    except OSError as exc:
        log.warning("build cache %s: %s; builds are not kept across runs", path, exc.strerror)
        return None
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        log.warning("build cache %s: not private to this user (owner %d, mode %o); builds are "
                    "not kept across runs", path, info.st_uid, info.st_mode & 0o777)  # fmt: skip
        return None
    return path
