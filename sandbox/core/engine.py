"""The core: runs one call in a fresh interpreter, under limits, and returns its Outcome.

Front doors build an :class:`Invocation` and a :class:`~sandbox.core.process.CallIO`;
the engine knows nothing of HTTP, brokers or schemas.

    async with open_engine(EngineConfig()) as engine:
        async with engine.open_call(language, limits) as call:
            ...write uploads into call.workdir...
            outcome = await call.run(invocation, io)

``Engine`` and ``Call`` share one module (about 1,000 lines): slots, uids,
call directories, cgroups and warm processes are taken by one and given back
by the other, and the spawn line (``Call._spawn``) reads the engine's whole
setup. Builds (:mod:`~sandbox.core.builds`), file handling
(:mod:`~sandbox.core.files`) and the launcher's interface
(:mod:`~sandbox.core.launcher`) are apart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import trio

from ..errors import ConfigError, Overloaded, SpawnError, UnknownLanguage
from . import cgroups as cgrouplib
from . import hook as hooklib
from . import isolation, process, quota
from .builds import Build, BuildCache
from .files import (
    META,
    SHM,
    copy_regular_files,
    remove_call_dir,
    remove_tree,
    roomy_tmpfs,
    write_meta,
)
from .invocation import Invocation
from .languages import DEFAULT_PATH, Language, Registry
from .launcher import SECCOMP_FD, Launch, launcher_path, seccomp_filter
from .leftovers import remove_leftovers
from .limits import Limits
from .observer import Observer
from .process import CallIO, Outcome
from .warm import Pool, PoolStats, Waiting

log = logging.getLogger("stack")


@dataclass(frozen=True)
class EngineConfig:
    """Server-wide settings of the core.

    Attributes:
        isolate: ``none``, ``bwrap`` or ``auto`` (bwrap when it works, else none).
        limits: the default limits of a call.
        maxima: the highest limits a service or request may ask for.
        max_running: calls running at once.
        max_queue: calls waiting for a slot; past it, :class:`Overloaded`.
        uid_base: first uid handed to calls when the server runs as root.
        path: PATH of every call, also where interpreters are looked up.
        lang: LANG of every call.
        temp_dir: where call directories are made (default: the system's).
        language_dirs: extra language registry folders.
        network: whether calls may use the network under bwrap by default.
        env: environment variables given to every call (``-e``, ``env:``).
        warm: warm pool sizes of services: ``{"*": N}`` for every service,
            ``{"python": N}`` for a language's (see :mod:`sandbox.core.warm`).
        warm_idle: seconds without a call before a pool shrinks to one.
        disk: bytes a call may write into its directory (a root server
            mounts a tmpfs of this size on each call's directory, see
            ``quota.py``); None for no quota (a plain directory).
        disk_files: files (inodes) a call may make there.
        seccomp: install the launcher's seccomp filter in every call (see
            ``_launcher.c`` and docs/SECURITY.md for the list).
        build_cache: a folder keeping builds across runs (``stack exec``: the
            user's cache folder), or None: builds last as long as the engine.
    """

    isolate: str = "auto"
    limits: Limits = field(default_factory=Limits)
    maxima: Limits = field(
        default_factory=lambda: Limits(
            timeout=300.0,
            cpu=300.0,
            memory=4 * 1024**3,
            processes=1024,
            file_size=1024**3,
            open_files=4096,
            output=1024**3,
            body=1024**3,
        )
    )
    max_running: int = 16
    max_queue: int = 64
    uid_base: int = 61000
    path: str = DEFAULT_PATH
    lang: str = "C.UTF-8"
    temp_dir: Path | None = None
    language_dirs: tuple[Path, ...] = ()
    network: bool = False
    env: Mapping[str, str] = field(default_factory=dict)
    warm: Mapping[str, int] = field(default_factory=dict)
    warm_idle: float = 60.0
    disk: int | None = 512 * 1024 * 1024
    disk_files: int = 32768
    seccomp: bool = True
    build_cache: Path | None = None

    def __post_init__(self) -> None:
        if self.isolate not in isolation.MODES:
            raise ConfigError(
                f"unknown isolation {self.isolate!r}; use one of {', '.join(isolation.MODES)}"
            )
        if self.max_running < 1 or self.max_queue < 0:
            raise ConfigError("max_running must be at least 1 and max_queue at least 0")
        self.limits.within(self.maxima)
        if any(size < 0 for size in self.warm.values()) or self.warm_idle <= 0:
            raise ConfigError("warm pool sizes must be at least 0 and warm_idle above 0")

    def warm_size(self, language: str, override: int | None = None) -> int:
        """The warm pool size of a service in ``language`` (``override``: its own setting)."""
        if override is not None:
            return override
        return self.warm.get(language, self.warm.get("*", 0))


@dataclass(frozen=True)
class Statistics:
    """A snapshot of the engine's load."""

    running: int
    queued: int
    max_running: int
    max_queue: int
    calls: int
    isolation: str


class Engine:
    """Runs calls. Make one with :func:`open_engine`."""

    def __init__(self, config: EngineConfig, registry: Registry, *, launcher: Path,
                 isolation_mode: str, bwrap: str | None, base: Path, nursery: trio.Nursery,
                 calls: Path | None = None, dev: Path | None = None, etc: Path | None = None,
                 cgroups: cgrouplib.Cgroups | None = None,
                 cgroup_detail: str = "no per-call cgroups",
                 seccomp: bool = False) -> None:  # fmt: skip
        self.config = config
        self.registry = registry
        self.launcher = launcher
        self.isolation = isolation_mode
        self.bwrap = bwrap
        self.base = base
        self.calls = calls or base / "calls"
        self.root = os.geteuid() == 0
        self.dev = dev  # under bwrap, a prepared /dev (isolation.prepare_dev)
        self.etc = etc  # under bwrap, the /etc calls see (isolation.prepare_etc)
        # A cgroup per sandbox uid (see cgroups.py), or None and why not.
        self.cgroups = cgroups
        self.cgroup_detail = cgroup_detail
        # Set when the launcher could not make a pid namespace (see note_pidns).
        self.pidns_fallback: str | None = None
        self._mounted: set[Path] = set()  # call directories on a tmpfs of their own (quota.py)
        # The launcher's seccomp filter applies to calls (see seccomp_filter).
        self.seccomp = seccomp
        self._slots = trio.Semaphore(config.max_running)
        self._queued = 0
        self._running = 0
        self._calls = 0
        self._uids = isolation.UidPool(config.uid_base, config.max_running) if self.root else None
        self.builds = BuildCache(base / "builds", persistent=config.build_cache)
        self.observers: list[Observer] = []
        self._staged: set[str] = set()
        self._counter = 0
        self._pools: dict[str, Pool] = {}
        self._nursery = nursery  # the warm pools' tasks and cleanup retries
        self.stuck: list[Path] = []  # call directories whose removal failed

    def observe(self, observer: Observer) -> None:
        """Tell ``observer`` of every call from now on (see :mod:`sandbox.core.observer`)."""
        self.observers.append(observer)

    def note_pidns(self, outcome: Outcome) -> None:
        """Log, once, that a call ran without the launcher's pid namespace.

        The launcher then falls back to a process group and killing its
        children round after round, which a double-forking script can slip
        past; ``/healthz`` shows it too.
        """
        if outcome.pidns is False and self.pidns_fallback is None:
            self.pidns_fallback = (
                "the launcher could not make a pid namespace (no CLONE_NEWPID here): calls "
                "are ended by process group and child-subreaper kills, which is weaker"
            )
            log.warning("isolation: %s", self.pidns_fallback)

    def statistics(self) -> Statistics:
        """The engine's load right now."""
        return Statistics(
            running=self._running,
            queued=self._queued,
            max_running=self.config.max_running,
            max_queue=self.config.max_queue,
            calls=self._calls,
            isolation=self.isolation,
        )

    def interpreter(self, language: Language) -> str:
        """The interpreter path of ``language``.

        Raises:
            InterpreterMissing: it is not installed.
        """
        return self.registry.installed(language).require()

    def limits_for(self, *overrides: Mapping[str, Any] | None) -> Limits:
        """The default limits with each mapping of overrides applied in turn.

        Raises:
            ConfigError: a bad value; LimitTooHigh: above the maxima.
        """
        limits = self.config.limits
        for override in overrides:
            if override:
                limits = Limits.from_mapping(override, base=limits)
        return limits.within(self.config.maxima)

    def staged_folder(self, folder: Path) -> Path:
        """A copy of ``folder`` the sandbox uid can read, made once per server (blocking).

        Regular files and folders only, root's and read-only for others, so
        an action's own files are readable whatever their modes on disk;
        dotfiles (``.env``), keys and credentials are left out.
        """
        key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:16]
        target = self.base / "code" / key
        if key not in self._staged:
            temporary = self.base / "code" / f".{key}.tmp"
            shutil.rmtree(temporary, ignore_errors=True)
            copy_regular_files(folder, temporary, code=True)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(temporary, target)
            self._staged.add(key)
        return target

    def compile_limits(self) -> Limits:
        """Limits for a compile step: compilers need more room than the programs they build.

        The defaults, raised to 30 s of time and CPU and 2 GiB of memory
        (capped by the maxima).
        """
        maxima, limits = self.config.maxima, self.config.limits

        def raised(current: Any, wanted: float, ceiling: Any) -> Any:
            value = wanted if current is None else max(current, wanted)
            return value if ceiling is None else min(ceiling, value)

        return dataclasses.replace(
            limits,
            timeout=raised(limits.timeout, 30.0, maxima.timeout),
            cpu=raised(limits.cpu, 30.0, maxima.cpu),
            memory=raised(limits.memory, 2 * 1024**3, maxima.memory),
        )

    @asynccontextmanager
    async def open_call(self, limits: Limits | None = None, *,
                        warm: str | None = None) -> AsyncIterator[Call]:  # fmt: skip
        """Wait for a slot and prepare a call's private directory and uid.

        Args:
            limits: the call's limits (default: the server's).
            warm: the key of a warm pool (see :meth:`add_pool`) to take a
                waiting interpreter from; its directory and uid become the
                call's, and :meth:`Call.run` hands it the call.

        Raises:
            Overloaded: every slot is busy and the queue is full.
        """
        limits = limits or self.config.limits
        if self._slots.value == 0 and self._queued >= self.config.max_queue:
            for observer in self.observers:
                observer.call_refused()
            raise Overloaded(
                f"all {self.config.max_running} slots are busy and "
                f"{self._queued} calls are queued; retry shortly",
                retry_after=1,
            )
        self._queued += 1
        try:
            await self._slots.acquire()
        finally:
            self._queued -= 1
        uid: int | None = None
        workdir: Path | None = None
        call: Call | None = None
        pool: Pool | None = None
        waiting: Waiting | None = None
        try:
            self._running += 1
            self._calls += 1
            pool = self._pools.get(warm) if warm is not None else None
            # A waiting process was started under its pool's limits: a call with
            # others (a job's own run_timeout, a key's lower limits) starts cold
            # and leaves it for the next call that can use it.
            fits = pool is not None and pool.limits == limits
            waiting = pool.take() if pool is not None and fits else None
            if waiting is not None:
                uid, workdir = waiting.uid, waiting.workdir
            else:
                if self._uids is not None:
                    uid = self._uids.acquire()
                workdir = self._make_workdir(uid)
            call = Call(self, limits, workdir, self._view(workdir), uid, waiting, pool)
            yield call
        finally:
            # Whatever the cleanup meets, the slot, the running count and the
            # uid go back: a slot lost here is lost for good.
            clean = True
            try:
                # Most calls leave nothing to wait for: no shielded scope then.
                if call is not None and call.warm is not None:
                    with trio.CancelScope(shield=True):
                        await call.warm.started.discard()  # never handed its call
                    call.count_warm(None)
                if waiting is not None and pool is not None:
                    pool.release()
            finally:
                if workdir is not None:
                    clean = await self._release_workdir(workdir)
                if uid is not None:
                    await self._remove_leftovers(uid)
                if uid is not None and self._uids is not None:
                    if clean:
                        self._uids.release(uid)
                    else:
                        self._uids.retire(uid)
                self._running -= 1
                self._slots.release()

    async def run(
        self, invocation: Invocation, io: CallIO, limits: Limits | None = None
    ) -> Outcome:
        """Run one call that needs nothing written into its directory first."""
        async with self.open_call(limits) as call:
            return await call.run(invocation, io)

    def _make_workdir(self, uid: int | None) -> Path:
        self._counter += 1
        workdir = self.calls / f"c{self._counter}"
        path = str(workdir)
        os.mkdir(path, 0o700)
        if uid is not None and self.config.disk is not None:
            try:
                quota.mount(workdir, self.config.disk, self.config.disk_files, uid)
            except OSError:
                os.rmdir(path)
                raise
            self._mounted.add(workdir)
        os.mkdir(path + "/" + META, 0o755)
        if uid is not None:
            os.chown(workdir, uid, uid)
        return workdir

    async def _remove_leftovers(self, uid: int) -> None:
        """Without bubblewrap, remove what ``uid`` left in /tmp, /dev/shm and System V IPC."""
        if self.isolation != "none" or self._uids is None:
            return  # bubblewrap's /tmp, /dev/shm and IPC namespace died with the call
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(remove_leftovers, uid)
            except Exception:
                log.exception("leftovers of uid %d: removal failed", uid)

    async def _release_workdir(self, workdir: Path) -> bool:
        """Remove a call's directory, or set it aside; never raises.

        Returns False only when it could be neither removed nor set aside:
        its uid must then not serve another call (see :meth:`UidPool.retire`).
        """
        try:
            if self._drop_workdir_now(workdir):
                return True
        except Exception:  # whatever a hostile tree makes the removal raise
            log.exception("call directory %s: removing it failed", workdir)
        with trio.CancelScope(shield=True):
            try:
                await trio.to_thread.run_sync(self._drop_workdir, workdir)
                return True
            except Exception as exc:
                log.error("call directory %s could not be removed (%s); setting it aside",
                          workdir, exc)  # fmt: skip
            return await trio.to_thread.run_sync(self._set_aside, workdir)
        return False  # not reached: the shielded scope is never cancelled

    def _set_aside(self, workdir: Path) -> bool:
        """Move what a failed removal left where no call can reach it; retried later."""
        stuck = self.calls / ".stuck"
        try:
            stuck.mkdir(mode=0o700, exist_ok=True)
            target = stuck / workdir.name
            os.rename(workdir, target)
        except OSError as exc:
            log.critical("call directory %s cannot be set aside (%s): its uid is retired",
                         workdir, exc)  # fmt: skip
            self.stuck.append(workdir)
            return False
        self.stuck.append(target)
        return True

    async def serve_cleanup(self, *, every: float = 30.0,
                            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                            ) -> None:  # fmt: skip
        """Retry removing the directories set aside, every ``every`` seconds, until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(every)
            await self.retry_cleanup()

    async def retry_cleanup(self) -> None:
        """Try once more to remove each directory set aside."""
        for path in list(self.stuck):
            try:
                await trio.to_thread.run_sync(remove_tree, path)
            except Exception as exc:
                log.warning("call directory %s: still not removed (%s)", path, exc)
            else:
                self.stuck.remove(path)
                log.info("call directory %s: removed at last", path)

    def slots_check(self) -> tuple[bool, str]:
        """Whether every slot is either free or held by a running call (for /healthz)."""
        held = self.config.max_running - self._slots.value
        detail = f"{self._running} running, {held} of {self.config.max_running} slots held"
        if self.stuck:
            detail += f"; {len(self.stuck)} call directories set aside, removal retried"
        return held == self._running, detail

    def _drop_workdir_now(self, workdir: Path) -> bool:
        """Remove a call's directory at once when that is cheap; False leaves it to
        :meth:`_drop_workdir` in a worker thread."""
        if workdir not in self._mounted:
            return remove_call_dir(workdir)
        try:
            if quota.written(workdir) > quota.SMALL:
                return False  # freeing many pages: not in the event loop
            quota.unmount(workdir)
        except OSError:
            return False
        self._mounted.discard(workdir)
        return True

    def _drop_workdir(self, workdir: Path) -> None:
        """Remove a call's directory, whatever it holds (blocking)."""
        if workdir in self._mounted:
            quota.unmount(workdir)  # raises when it cannot: the caller sets it aside
            self._mounted.discard(workdir)
            return
        remove_tree(workdir)

    def _view(self, workdir: Path) -> PurePosixPath:
        return isolation.SANDBOX_HOME if self.isolation == "bwrap" else PurePosixPath(workdir)

    # -- warm pools ----------------------------------------------------------

    def add_pool(self, key: str, invocation: Invocation, size: int, limits: Limits | None = None,
                 idle: float | None = None) -> Pool | None:  # fmt: skip
        """Keep ``size`` interpreters of ``invocation`` started ahead of their calls.

        A relative ``invocation.script`` names a file each call writes into
        its own directory (submitted code).

        Calls opened with ``open_call(warm=key)`` take them. Returns None (and
        logs why) when the language's prelude cannot wait for a call.

        Raises:
            ConfigError: a pool of that key exists, or the engine is not open.
        """
        lang = invocation.language
        if size < 1:
            return None
        if lang.compile:
            log.info("warm pool %s: %s is compiled; its calls start cold", key, lang.name)
            return None
        if key in self._pools:
            raise ConfigError(f"a warm pool named {key!r} exists already")
        what = "interpreter(s)" if lang.warm else "sandbox(es) (the interpreter starts at the call)"
        log.info("warm pool %s: keeping %d %s %s ready", key, size, lang.name, what)
        pool = Pool(self, key, invocation, limits or self.config.limits, size,
                    self.config.warm_idle if idle is None else idle)  # fmt: skip
        if self._uids is not None:
            self._uids.grow(size)
        self._pools[key] = pool
        self._nursery.start_soon(pool.maintain)
        return pool

    def pool_stats(self, poll: bool = True) -> list[PoolStats]:
        """Every warm pool's size and hit rate (``poll=False`` from another thread)."""
        return [pool.stats(poll) for pool in list(self._pools.values())]

    def flush_pool(self, key: str) -> None:
        """Retire a pool's waiting processes (its script changed); it refills at once."""
        pool = self._pools.get(key)
        if pool is not None:
            while pool.held:
                self.dispose_soon(pool.held.popleft())
            pool.wake()

    async def start_warm(self, pool: Pool) -> Waiting:
        """Start one process for ``pool``, waiting for its call.

        Raises:
            OSError: the launcher could not start; StackError: the interpreter is missing.
        """
        uid = self._uids.acquire() if self._uids is not None else None
        workdir: Path | None = None
        try:
            workdir = self._make_workdir(uid)
            call = Call(self, pool.limits, workdir, self._view(workdir), uid)
            invocation = pool.invocation
            if not invocation.script.is_absolute():  # a file the call will write here
                invocation = dataclasses.replace(invocation, script=workdir / invocation.script)
            spawn = call._spawn(invocation, pool.limits)
            if invocation.language.warm:  # the prelude waits: up to the script
                prefix = tuple(spawn.argv[:-1])
                argv = list(prefix)
            else:  # the launcher's stub waits, in the sandbox: up to the program
                prefix = tuple(spawn.argv[: spawn.program_at])
                argv = self._exec_stub(list(prefix))
            env = {**spawn.env, "STACK_WARM": "1"}
            started = process.start(dataclasses.replace(spawn, argv=argv, env=env))
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._release(workdir, uid)
            raise
        return Waiting(started, workdir, uid, prefix, pool)

    def _exec_stub(self, launch: list[str]) -> list[str]:
        """``launch`` (the launcher and bubblewrap options) running the launcher's exec stub.

        The stub is a copy of the launcher in the engine's folder, where a
        call's uid can run it (the launcher's cache may be private).
        """
        stub = self.base / "exec"
        if not stub.exists():
            shutil.copyfile(self.launcher, self.base / ".exec")
            os.chmod(self.base / ".exec", 0o755)
            os.replace(self.base / ".exec", stub)
        if self.isolation != "bwrap":
            return [*launch, str(stub), "-X"]
        inside = str(isolation.SANDBOX_CODE / "exec")
        assert launch[-1] == "--"  # bubblewrap's options end there
        # Bound before bubblewrap makes its root read-only (the mount point is made in it).
        at = launch.index("--remount-ro") if "--remount-ro" in launch else len(launch) - 1
        return [*launch[:at], "--ro-bind", str(stub), inside, *launch[at:], inside, "-X"]

    async def dispose(self, waiting: Waiting) -> None:
        """End an unused warm process and free its directory and uid."""
        with trio.CancelScope(shield=True):
            await waiting.started.discard()
            await self._release(waiting.workdir, waiting.uid)

    def dispose_soon(self, waiting: Waiting) -> None:
        """:meth:`dispose` in the background."""
        self._nursery.start_soon(self.dispose, waiting)

    async def _release(self, workdir: Path | None, uid: int | None) -> None:
        """Free an unused warm process's directory and uid (as a call's, never raising)."""
        clean = await self._release_workdir(workdir) if workdir is not None else True
        if uid is not None:
            await self._remove_leftovers(uid)
            if self._uids is not None:
                if clean:
                    self._uids.release(uid)
                else:
                    self._uids.retire(uid)

    async def close_pools(self) -> None:
        """Stop every pool and end its waiting processes (at shutdown)."""
        pools, self._pools = self._pools, {}
        with trio.CancelScope(shield=True):
            for pool in pools.values():
                log.info("%s", pool.stats().line())
                while pool.held:
                    await self.dispose(pool.held.popleft())


class Call:
    """A call holding a slot: its directory, uid and limits."""

    def __init__(self, engine: Engine, limits: Limits, workdir: Path, view: PurePosixPath,
                 uid: int | None, warm: Waiting | None = None,
                 pool: Pool | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.limits = limits
        self.workdir = workdir
        self.view = view
        self.uid = uid
        self.warm = warm
        self.pool = pool

    def count_warm(self, served: Waiting | None) -> None:
        """Count the call in its pool's hit rate (once): served by ``served``, or cold."""
        if self.pool is not None:
            self.pool.count(served)
            self.pool = None

    def upload_dir(self) -> tuple[Path, PurePosixPath]:
        """A directory for uploaded files, on the host and as the script sees it."""
        path = self.workdir / "uploads"
        path.mkdir(mode=0o755, exist_ok=True)
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)
        return path, self.view / "uploads"

    def write_file(self, relative: str, data: bytes, mode: int = 0o644) -> Path:
        """Write a file into the call's directory (for submitted code).

        Raises:
            ConfigError: the name would land outside the directory.
        """
        target = (self.workdir / relative).resolve()
        if not target.is_relative_to(self.workdir.resolve()) or target == self.workdir.resolve():
            raise ConfigError(f"file name {relative!r} points outside the job directory")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        if self.uid is not None:
            os.chown(target, self.uid, self.uid)
        return target

    async def run(
        self, invocation: Invocation, io: CallIO, limits: Limits | None = None
    ) -> Outcome:
        """Spawn the call's process and run it to the end.

        Args:
            invocation: what to run.
            io: the front door's side of the call.
            limits: limits for this step instead of the call's (a compile step).

        Raises:
            InterpreterMissing: the language is not installed.
        """
        spawn = self._spawn(invocation, limits or self.limits)
        warm, self.warm = self.warm, None
        if warm is not None:
            # The prelude takes the script and its arguments, the stub the whole program.
            at = spawn.program_at if warm.stub else len(spawn.argv) - len(invocation.args) - 1
            if tuple(spawn.argv[:at]) == warm.prefix:
                warm.poll_ready()
                self.count_warm(warm)
                message = warm.message(spawn.argv[at:], spawn.env)
                outcome = await process.drive(warm.started, io, spawn, preamble=message)
            else:  # other limits or another script than the pool's
                await warm.started.discard()
                warm = None
        if warm is None:
            self.count_warm(None)
            outcome = await process.run(spawn, io)
        self.engine.note_pidns(outcome)
        for observer in self.engine.observers:
            observer.call_ended(invocation.door, invocation.language.name, outcome)
        return outcome

    async def build(self, invocation: Invocation, files: Sequence[str],
                    limits: Limits | None = None) -> Build:  # fmt: skip
        """Compile ``files`` (names in the call's directory, the entry first).

        The result is cached by the hash of the sources, the compile line and
        the compiler's version: a second identical build waits for the first
        and reuses it.

        Raises:
            InterpreterMissing: the compiler is not installed.
        """
        engine, lang = self.engine, invocation.language
        installed = engine.registry.installed(lang)
        installed.require()
        sources = [(name, (self.workdir / name).read_bytes()) for name in files]
        key = engine.builds.key(lang, installed.version or "", sources)
        async with engine.builds.lock(key):
            cached = engine.builds.get(key)
            if cached is None and engine.builds.persistent is not None:
                cached = await trio.to_thread.run_sync(engine.builds.restore, key)
            if cached is not None:
                return Build(None, b"", b"", b"", cached, cached=True)
            out = self.workdir / ".build"
            out.mkdir(mode=0o755, exist_ok=True)
            if self.uid is not None:
                os.chown(out, self.uid, self.uid)
            collect = process.CollectIO()
            spawn = self._spawn(invocation, limits or self.limits, compile_files=files)
            outcome = await process.run(spawn, collect)
            directory = None
            if outcome.ok:
                directory = await trio.to_thread.run_sync(engine.builds.put, key, out)
            return Build(outcome, collect.stdout, collect.stderr, collect.output, directory)

    def _spawn(self, inv: Invocation, limits: Limits, *,
               compile_files: Sequence[str] | None = None) -> process.Spawn:  # fmt: skip
        engine, lang = self.engine, inv.language
        interpreter = engine.interpreter(lang)
        bwrap = engine.isolation == "bwrap"
        meta = self.workdir / ".stack"
        view_meta = self.view / ".stack"
        env: dict[str, str] = {
            "PATH": engine.config.path,
            "LANG": engine.config.lang,
            "HOME": str(self.view),
            "TMPDIR": str(self.view),
            # Set, so that bash does not look the sandbox uid up in the user
            # database at start (a miss that loads NSS modules: ~0.8 ms a call).
            "SHELL": "/bin/sh",
        }
        env.update(lang.env)
        env.update(engine.config.env)
        env.update(inv.env)
        _size_from_limit(env, lang, limits)
        if inv.request_id:
            env["STACK_REQUEST_ID"] = inv.request_id
        if inv.hook is not None and compile_files is None:
            write_meta(meta, "hook.json", json.dumps(inv.hook).encode())
            flat = hooklib.flatten(inv.hook)
            write_meta(meta, "hook.flat", hooklib.encode_flat(flat))
            env["STACK_HOOK"] = str(view_meta / "hook.json")
            env["STACK_HOOK_FLAT"] = str(view_meta / "hook.flat")
            if lang.hook_env == "fit":
                env.update(hooklib.flat_env(flat))
            elif lang.hook_env == "whole" and (whole := hooklib.whole_flat_env(flat)) is not None:
                env.update(whole)
                env["STACK_HOOK_ENV"] = "1"  # all of them: the prelude need not read the file

        binds: list[tuple[Path, PurePosixPath]] = []
        if inv.code_dir is not None and not inv.code_dir.is_relative_to(engine.base):
            staged = engine.staged_folder(inv.code_dir)
            inv = dataclasses.replace(
                inv,
                script=staged / inv.script.resolve().relative_to(inv.code_dir.resolve()),
                code_dir=staged,
            )
        script = str(inv.script)
        prelude_dir: Path | None = lang.prelude.parent if lang.prelude else None
        run_lang = lang
        build = str(inv.build) if inv.build is not None else ""
        if bwrap:
            inside = isolation.SANDBOX_CODE
            if inv.script.resolve().is_relative_to(self.workdir.resolve()):
                script = str(self.view / inv.script.resolve().relative_to(self.workdir.resolve()))
            elif inv.code_dir is not None:
                script = str(inside / "code" / inv.script.relative_to(inv.code_dir))
                binds.append((inv.code_dir, inside / "code"))
            else:
                script = str(inside / "script" / inv.script.name)
                binds.append((inv.script, PurePosixPath(script)))
            if prelude_dir is not None and lang.prelude is not None:
                binds.append((prelude_dir, inside / "preludes"))
                run_lang = _with_prelude(lang, inside / "preludes" / lang.prelude.name)
            if inv.build is not None:
                build = str(inside / "build")
                binds.append((inv.build, PurePosixPath(build)))
        if compile_files is not None:
            view_files = [str(self.view / name) for name in compile_files]
            argv = run_lang.compile_argv(interpreter, view_files[0], str(self.view / ".build"),
                                         view_files)  # fmt: skip
        else:
            argv = run_lang.argv(interpreter, script, inv.args, build=build)
            if inv.hook is not None:
                env["SCRIPT_FILENAME"] = script  # as the script sees it (bwrap: /stack/...)

        rlimits: list[tuple[str, int]] = [("core", 0)]
        if limits.cpu is not None:
            rlimits.append(("cpu", math.ceil(limits.cpu)))
        if limits.memory is not None:
            rlimits.append((lang.memory_limit, limits.memory))
        if limits.processes is not None and self.uid is not None:
            rlimits.append(("nproc", limits.processes))
        if limits.open_files is not None:
            rlimits.append(("nofile", limits.open_files))
        if limits.file_size is not None:
            rlimits.append(("fsize", limits.file_size))
        group = None
        if engine.cgroups is not None and self.uid is not None:
            group = engine.cgroups.group(self.uid)
        launch = Launch(
            engine.launcher,
            uid=self.uid,
            rlimits=tuple(rlimits),
            cgroup_procs=tuple(group.procs) if group is not None else (),
            # One pid namespace per call: the launcher's, or under bwrap bwrap's own.
            pidns=not bwrap,
            cwd=None if bwrap else self.workdir,
            # Under bwrap, bwrap installs the filter (--seccomp) in what it runs.
            seccomp=engine.seccomp and not bwrap,
            seccomp_fd=SECCOMP_FD if engine.seccomp and bwrap else None,
        ).argv()
        if bwrap:
            if engine.bwrap is None:
                raise SpawnError("bubblewrap is not installed: apt-get install bubblewrap")
            network = engine.config.network if inv.network is None else inv.network
            launch += isolation.bwrap_argv(
                engine.bwrap, workdir=self.workdir, binds=binds, network=network, uid=self.uid,
                dev=engine.dev, tmpfs_size=limits.memory or engine.config.disk, etc=engine.etc,
                seccomp_fd=SECCOMP_FD if engine.seccomp else None,
            )  # fmt: skip
        return process.Spawn(
            argv=launch + argv,
            env=env,
            timeout=limits.timeout,
            output=limits.output,
            stderr_limit=inv.stderr_limit,
            memory=limits.memory,
            cpu=math.ceil(limits.cpu) if limits.cpu is not None else None,
            cgi=inv.cgi,
            stdin_data=inv.stdin,
            exit_is_signal=bwrap,
            program_at=len(launch),
            processes=limits.processes,
            cgroup=group,
            pidns=not bwrap,
        )


def _size_from_limit(env: dict[str, str], lang: Language, limits: Limits) -> None:
    """Fill ``{memory_mib}`` in a language's env values with the call's memory limit.

    Node sizes its heap from the machine's memory, not from an rlimit: below
    the rlimit but near its own ceiling, V8 collects garbage over and over
    (the call looks hung until its timeout). Told the limit
    (``NODE_OPTIONS=--max-old-space-size={memory_mib}``), it fails at once
    with "heap out of memory". A value the operator or the call set stays.
    """
    for key, template in lang.env.items():
        if "{memory_mib}" not in template or env.get(key) != template:
            continue
        if limits.memory is None:
            del env[key]
        else:
            env[key] = template.replace("{memory_mib}", str(max(1, limits.memory // 2**20)))


def _warm_by_name(warm: Mapping[str, int], registry: Registry) -> dict[str, int]:
    """Warm pool sizes keyed by canonical language names (``py`` -> ``python``).

    Raises:
        ConfigError: a language that is not registered (a typo would
            otherwise leave its services cold without a word).
    """
    sizes: dict[str, int] = {}
    for key, size in warm.items():
        try:
            sizes[key if key == "*" else registry.get(key).name] = size
        except UnknownLanguage as exc:
            raise ConfigError(f"warm: {exc.message}") from None
    return sizes


def _with_prelude(lang: Language, prelude: PurePosixPath) -> Language:
    return dataclasses.replace(lang, prelude=Path(prelude))


def _prepared_dev(bwrap: str, base: Path, config: EngineConfig, launcher: Path) -> Path | None:
    """A /dev bound in one mount (see isolation.prepare_dev), if it works here (blocking)."""
    dev = isolation.prepare_dev(base)
    if dev is None:
        return None
    uid = config.uid_base if os.geteuid() == 0 else None
    why = isolation.check_bwrap(bwrap, uid, launcher, dev)
    if why is not None:
        log.info("isolation: a prepared /dev does not work here (%s); using bwrap's --dev", why)
        shutil.rmtree(dev, ignore_errors=True)
        return None
    return dev


ROOT_PARENT = Path("/var/lib/stack")
"""Where a root server makes its folder (calls, builds, staged code) when ``temp_dir`` is unset."""


def private_parent(wanted: Path) -> Path | None:
    """``wanted``, made root-owned and 0755 if need be, when no folder on its way is
    writable by others; else None (the system's temp folder, with a warning).

    Call directories must not sit below a world-writable folder (``/tmp``,
    ``/dev/shm``): a call could plant files there that module loaders walking
    up from another tenant's directory pick up (``node_modules``,
    ``package.json``).
    """
    try:
        wanted.mkdir(mode=0o755, parents=True, exist_ok=True)
        for folder in (wanted, *wanted.parents):
            info = folder.stat()
            if info.st_uid != 0 or info.st_mode & 0o022:
                raise OSError(f"{folder} is writable by others than root")
    except OSError as exc:
        log.warning("engine folder: %s cannot hold it (%s); using the system's temp folder",
                    wanted, exc)  # fmt: skip
        return None
    return wanted


@asynccontextmanager
async def open_engine(config: EngineConfig | None = None) -> AsyncIterator[Engine]:
    """Start the core: build the launcher, probe interpreters, check isolation.

    Raises:
        ConfigError: ``isolate="bwrap"`` but bubblewrap does not work here.
        SpawnError: the launcher cannot be built.
    """
    config = config or EngineConfig()
    registry = await trio.to_thread.run_sync(Registry.load, config.language_dirs, config.path)
    parent = config.temp_dir
    if parent is None and os.geteuid() == 0:
        parent = await trio.to_thread.run_sync(private_parent, ROOT_PARENT)
    base = Path(tempfile.mkdtemp(prefix="stack-", dir=parent))
    try:
        os.chmod(base, 0o711)
        registry = await trio.to_thread.run_sync(_stage_preludes, registry, base / "preludes")
        async with _open_engine(config, registry, base) as engine:
            yield engine
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(remove_tree, base)


def _stage_preludes(registry: Registry, target: Path) -> Registry:
    """The registry with each prelude copied to ``target/LANGUAGE/`` (blocking).

    A call's uid must read its prelude, but stack may be installed where
    only its owner can look (root's home, a 0700 folder): the copies are the
    server's and readable by all, whatever the modes on the way to the
    installed ones.
    """
    target.mkdir(mode=0o755)
    staged = []
    for lang in registry:
        if lang.prelude is not None:
            folder = target / lang.name
            folder.mkdir(mode=0o755)
            copy = folder / lang.prelude.name
            shutil.copyfile(lang.prelude, copy)
            copy.chmod(0o644)
            lang = dataclasses.replace(lang, prelude=copy)
        staged.append(lang)
    return Registry(staged, registry.path)


@asynccontextmanager
async def _open_engine(config: EngineConfig, registry: Registry,
                       base: Path) -> AsyncIterator[Engine]:  # fmt: skip
    config = dataclasses.replace(config, warm=_warm_by_name(config.warm, registry))
    launcher = await trio.to_thread.run_sync(launcher_path)

    async def probe(lang: Language) -> None:
        await trio.to_thread.run_sync(registry.installed, lang)

    async with trio.open_nursery() as nursery:
        for lang in registry:
            nursery.start_soon(probe, lang)

    mode = config.isolate
    bwrap = isolation.find_bwrap()
    if mode in ("bwrap", "auto"):
        uid = config.uid_base if os.geteuid() == 0 else None
        why = "bwrap is not installed" if bwrap is None else None
        if bwrap is not None:
            why = await trio.to_thread.run_sync(isolation.check_bwrap, bwrap, uid, launcher)
        if why is not None:
            if mode == "bwrap":
                raise ConfigError(
                    f"--isolate bwrap: bubblewrap does not work here ({why}); "
                    "install it (apt-get install bubblewrap) or use --isolate none"
                )
            log.warning(
                "isolation: bubblewrap is not usable (%s); running scripts WITHOUT a sandbox",
                why,
            )
            mode = "none"
        else:
            mode = "bwrap"
    # Reached by path, never listed: a call cannot enumerate other tenants'
    # builds or staged code.
    (base / "scripts").mkdir(mode=0o711)
    (base / "builds").mkdir(mode=0o711)
    (base / "code").mkdir(mode=0o711)
    calls = base / "calls"
    # Only for trusted code (no sandbox, and no uid of its own: a non-root
    # server) are call directories put on /dev/shm, a world-writable parent: a
    # hostile script writing files into its directory would fill RAM there,
    # and could plant files (node_modules...) above other tenants' calls.
    on_tmpfs = (mode == "none" and os.geteuid() != 0 and config.temp_dir is None
                and not os.environ.get("TMPDIR"))  # fmt: skip
    if on_tmpfs and roomy_tmpfs(SHM):
        calls = Path(tempfile.mkdtemp(prefix="stack-calls-", dir=SHM))
        os.chmod(calls, 0o711)
    else:
        calls.mkdir(mode=0o711)
    engine: Engine | None = None
    cgroups: cgrouplib.Cgroups | None = None
    try:
        dev = etc = None
        if mode == "bwrap" and bwrap is not None:
            dev = await trio.to_thread.run_sync(_prepared_dev, bwrap, base, config, launcher)
            etc = await trio.to_thread.run_sync(isolation.prepare_etc, base)
        cgroups, cgroup_detail = await trio.to_thread.run_sync(cgrouplib.detect, os.geteuid() == 0)
        log.info("limits: %s", cgroup_detail)
        seccomp = False
        if config.seccomp:
            program = await trio.to_thread.run_sync(seccomp_filter, launcher)
            seccomp = bool(program)
            if not program:
                log.warning("seccomp: no filter for this architecture; calls run without one")
        try:
            async with trio.open_nursery() as nursery:  # warm pools, cleanup retries
                engine = Engine(config, registry, launcher=launcher, isolation_mode=mode,
                                bwrap=bwrap, base=base, nursery=nursery, calls=calls, dev=dev,
                                etc=etc, cgroups=cgroups, cgroup_detail=cgroup_detail,
                                seccomp=seccomp)  # fmt: skip
                await nursery.start(engine.serve_cleanup)
                try:
                    yield engine
                finally:
                    await engine.close_pools()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery wraps what the caller's block raised: give it back as raised.
            inner: BaseException = group
            while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
                inner = inner.exceptions[0]
            if inner is group:
                raise
            raise inner from None
    finally:
        with trio.CancelScope(shield=True):
            if engine is not None:
                for workdir in list(engine._mounted):
                    await trio.to_thread.run_sync(engine._drop_workdir, workdir)
            if cgroups is not None:
                await trio.to_thread.run_sync(cgroups.close)
            if not calls.is_relative_to(base):
                await trio.to_thread.run_sync(remove_tree, calls)
