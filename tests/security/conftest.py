"""Fixtures of the hostile-script suite.

Every test here serves a folder holding the hostile script(s), ``ok.sh``
(sleeps 0.3 s, prints ``ok``: the healthy call run beside the hostile one)
and ``ping.sh`` (the normal call made right after), on a real server whose
engine the test can see, and checks on the way out that the call left
nothing behind: no call directory under ``engine.calls``, no slot
held, no new file descriptor in the server (this) process. Autouse
fixtures (here, for this suite's call uids, and in ``tests/conftest.py``)
check that no process is left.

The servers here hand their calls a uid range of their own (``UID_BASE``),
not the default 61000+, and share one bubblewrap probe per session (see
``bwrap_problem``).

A session fixture puts the whole run into a cgroup of its own (pids and
memory capped) when it can, so that a limit the engine fails to apply
cannot take the machine down with it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import trio

from sandbox.app import open_app
from sandbox.core.engine import Engine, EngineConfig
from sandbox.core.isolation import check_bwrap, find_bwrap
from sandbox.core.limits import Limits
from sandbox.features.services import ServiceOptions
from sandbox.http.app import StackApp
from sandbox.http.clients import ClientLimits
from sandbox.http.server import bind, serve

T = TypeVar("T")

ISOLATIONS = ("none", "bwrap")
HEALTHY = "sleep 0.3\necho ok\n"
PING = "echo pong\n"
SETTLE = 5.0  # seconds allowed for a finished call's cleanup to land
FD_TOLERANCE = 0  # the test's client is closed before fds are counted (see Stack.new_fds)

isolations = pytest.mark.parametrize("isolate", ISOLATIONS)


# -- the machine guard (cgroup) --------------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")
PIDS_MAX = 4000
MEMORY_MAX = 8 * 1024**3


@dataclass
class _Cgroup:
    """A cgroup made for this session: ``(controller dir, parent dir)`` pairs to undo."""

    moved: list[tuple[Path, Path]] = field(default_factory=list)
    made: list[Path] = field(default_factory=list)

    def leave(self) -> list[str]:
        """Move this process back where it was and remove what was made."""
        problems = []
        pid = str(os.getpid())
        for _, parent in reversed(self.moved):
            try:
                (parent / "cgroup.procs").write_text(pid)
            except OSError as exc:
                problems.append(f"moving back to {parent}: {exc}")
        for made in reversed(self.made):
            for _ in range(50):  # processes of the last test may still be exiting
                try:
                    made.rmdir()
                    break
                except OSError as exc:
                    last = exc
                    time.sleep(0.1)
            else:
                problems.append(f"removing {made}: {last}")
        return problems


def _own_cgroup(controller: str | None) -> str | None:
    """This process's cgroup path for a v1 ``controller``, or the v2 path for None."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if controller is None and number == "0" and controllers == "":
            return path
        if controller is not None and controller in controllers.split(","):
            return path
    return None


def _enter_cgroup_v1(name: str) -> _Cgroup:
    group = _Cgroup()
    limits = {"pids": ("pids.max", PIDS_MAX), "memory": ("memory.limit_in_bytes", MEMORY_MAX)}
    try:
        for controller, (knob, value) in limits.items():
            own = _own_cgroup(controller)
            if own is None:
                raise OSError(f"this process has no {controller} cgroup")
            parent = CGROUP_ROOT / controller / own.lstrip("/")
            child = parent / name
            child.mkdir()
            group.made.append(child)
            (child / knob).write_text(str(value))
            (child / "cgroup.procs").write_text(str(os.getpid()))
            group.moved.append((child, parent))
    except OSError:
        group.leave()
        raise
    return group


def _enter_cgroup_v2(name: str) -> _Cgroup:
    own = _own_cgroup(None)
    if own is None:
        raise OSError("this process has no cgroup v2 path")
    parent = CGROUP_ROOT / own.lstrip("/")
    available = (parent / "cgroup.controllers").read_text().split()
    missing = {"pids", "memory"} - set(available)
    if missing:
        raise OSError(f"controllers {sorted(missing)} are not available in {parent}")
    enabled = (parent / "cgroup.subtree_control").read_text().split()
    wanted = [f"+{c}" for c in ("pids", "memory") if c not in enabled]
    if wanted:
        # Fails (EBUSY) when the parent holds processes itself: v2's no-internal-process rule.
        (parent / "cgroup.subtree_control").write_text(" ".join(wanted))
    group = _Cgroup()
    try:
        child = parent / name
        child.mkdir()
        group.made.append(child)
        (child / "pids.max").write_text(str(PIDS_MAX))
        (child / "memory.max").write_text(str(MEMORY_MAX))
        (child / "cgroup.procs").write_text(str(os.getpid()))
        group.moved.append((child, parent))
    except OSError:
        group.leave()
        raise
    return group


def enter_cgroup() -> tuple[_Cgroup | None, str]:
    """Put this process in a capped cgroup of its own; returns it and what was done."""
    if os.geteuid() != 0:
        return None, "not running as root"
    name = f"stack-security-{os.getpid()}"
    try:
        if (CGROUP_ROOT / "pids").is_dir() and (CGROUP_ROOT / "memory").is_dir():
            group = _enter_cgroup_v1(name)
            version = "v1"
        elif (CGROUP_ROOT / "cgroup.procs").is_file():
            group = _enter_cgroup_v2(name)
            version = "v2"
        else:
            return None, f"no cgroup hierarchy with pids and memory under {CGROUP_ROOT}"
    except OSError as exc:
        return None, f"the cgroup hierarchy is not writable here: {exc}"
    where = ", ".join(str(child) for child, _ in group.moved)
    return group, f"cgroup {version} {where}: pids.max={PIDS_MAX}, memory={MEMORY_MAX >> 30} GiB"


def _say(config: pytest.Config, text: str) -> None:
    """Tell the person running the tests, past pytest's output capture."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        print(f"security suite: {text}", file=sys.stderr)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(f"security suite: {text}")


@pytest.fixture(scope="session", autouse=True)
def machine_guard(pytestconfig: pytest.Config) -> Iterator[None]:
    """Run the hostile scripts inside a cgroup capping pids and memory, when possible."""
    group, what = enter_cgroup()
    _say(pytestconfig, what if group else f"no cgroup guard ({what}); continuing without")
    try:
        yield
    finally:
        if group is not None:
            for problem in group.leave():
                _say(pytestconfig, f"cgroup teardown: {problem}")


# -- the uids of this suite's calls ------------------------------------------------

# The machine may run other stack servers (other test sessions) at the same
# time, with the default uids 61000+. RLIMIT_NPROC counts every process of a
# uid, so this suite gives its servers a uid range of their own: their
# calls' process counts are exact, and what is left over is surely ours.
UID_BASE = 62100 + (os.getpid() % 40) * 64
UID_COUNT = 64


def sandbox_processes() -> list[str]:
    """Processes (zombies included) of the uids this suite's servers hand to calls."""
    found = []
    for proc in psutil.process_iter(["pid", "uids", "name", "status"]):
        uids = proc.info["uids"]
        if uids and UID_BASE <= uids.real < UID_BASE + UID_COUNT:
            found.append(f"{proc.info['pid']} {proc.info['name']} ({proc.info['status']})")
    return found


def wait_sandbox_processes_gone(timeout: float = 10.0) -> list[str]:
    """Wait (blocking) until no process of this suite's uids is left; returns what is left."""
    deadline = time.monotonic() + timeout
    left = sandbox_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = sandbox_processes()
    return left


@pytest.fixture(autouse=True)
def no_leftover_sandbox_processes() -> Iterator[None]:
    """After every test, no process of this suite's uids is alive (tests/conftest.py
    checks the default range and the children of this process)."""
    yield
    left = wait_sandbox_processes_gone(2.0)
    assert not left, f"processes of the call uids left after the test: {left}"


_BWRAP_PROBLEM: list[str | None] = []


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot be used here, or None; probed once, as this suite's uid.

    This probe runs bwrap directly (not through the launcher), so it waits
    for bwrap's inner process to be reaped by init before going on.
    """
    if not _BWRAP_PROBLEM:
        bwrap = find_bwrap()
        uid = UID_BASE if os.geteuid() == 0 else None
        problem = "bwrap is not installed" if bwrap is None else check_bwrap(bwrap, uid)
        _BWRAP_PROBLEM.append(problem)
        wait_sandbox_processes_gone()
    return _BWRAP_PROBLEM[0]


def need_bwrap() -> None:
    """Skip the test, saying why, when bubblewrap cannot be used here."""
    problem = bwrap_problem()
    if problem:
        pytest.skip(f"bubblewrap is not usable here: {problem}")


# -- a served folder ---------------------------------------------------------------


@pytest.fixture
def services(tmp_path: Path) -> Callable[..., Path]:
    """``services({"name.sh": text, ...})``: a folder with those scripts, ok.sh and ping.sh."""

    def write(scripts: Mapping[str, str]) -> Path:
        folder = tmp_path / "services"
        folder.mkdir(exist_ok=True)
        for name, text in {"ok.sh": HEALTHY, "ping.sh": PING, **scripts}.items():
            (folder / name).write_text(text)
        return folder

    return write


# -- a server the test can look inside -----------------------------------------------


def _fds() -> dict[str, str]:
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the directory fd listdir used, closed by now
    return found


@dataclass
class Cut:
    """A streamed response: its status, the body bytes received, and whether it was aborted."""

    status: int
    headers: httpx.Headers
    body: bytes
    aborted: bool


@dataclass
class Stack:
    """A running server: its URL, its app (and so its engine), and an HTTP client."""

    url: str
    app: StackApp
    http: httpx.AsyncClient = field(init=False)
    fds: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> Engine:
        return self.app.engine

    @property
    def calls(self) -> Path:
        """Where the engine makes each call's private directory."""
        return self.engine.calls

    async def get(self, name: str, **kwargs: Any) -> httpx.Response:
        return await self.http.get(f"{self.url}/{name}", **kwargs)

    async def post(self, name: str, **kwargs: Any) -> httpx.Response:
        return await self.http.post(f"{self.url}/{name}", **kwargs)

    async def stream(self, name: str, method: str = "GET", **kwargs: Any) -> Cut:
        """Read a response as it streams, keeping what arrived if it is aborted."""
        body = bytearray()
        aborted = False
        async with self.http.stream(method, f"{self.url}/{name}", **kwargs) as response:
            try:
                async for chunk in response.aiter_raw():
                    body += chunk
            except httpx.RemoteProtocolError:
                aborted = True
        return Cut(response.status_code, response.headers, bytes(body), aborted)

    async def beside(self, hostile: Callable[[], Awaitable[T]]) -> T:
        """Run ``hostile()``, a healthy call beside it, and a normal call after.

        The healthy call starts once the hostile call holds its slot (or has
        already been answered), so the two really run side by side.
        """
        box: list[T] = []
        done = trio.Event()
        before = self.engine.statistics().calls

        async def run_hostile() -> None:
            try:
                box.append(await hostile())
            finally:
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_hostile)
            with trio.move_on_after(SETTLE):
                while self.engine.statistics().calls == before and not done.is_set():
                    await trio.sleep(0.005)
            healthy = await self.get("ok.sh")
        assert (healthy.status_code, healthy.text) == (200, "ok\n"), healthy.text
        after = await self.get("ping.sh")
        assert (after.status_code, after.text) == (200, "pong\n"), after.text
        return box[0]

    def new_fds(self) -> dict[str, str]:
        """Fds of the server (this) process that were not open before the test's calls.

        Sockets of connections the test's client has closed are left out:
        Hypercorn keeps those (CLOSE_WAIT) until its keep-alive timeout, see
        ``test_server.py::test_a_closed_connection_releases_its_server_socket``.
        """
        port = int(self.url.rsplit(":", 1)[1])
        lingering = {
            str(c.fd)
            for c in psutil.Process().net_connections("tcp")
            if c.laddr and c.laddr.port == port and c.status == psutil.CONN_CLOSE_WAIT
        }
        return {
            fd: target
            for fd, target in _fds().items()
            if self.fds.get(fd) != target and fd not in lingering
        }

    def _idle(self) -> bool:
        stats = self.engine.statistics()
        return (
            stats.running == 0
            and stats.queued == 0
            and not any(self.calls.iterdir())
            and not self.new_fds()
        )

    async def settle(self) -> None:
        """Wait (a bounded time) for the server to be idle: no call, no call directory, no new fd."""
        with trio.move_on_after(SETTLE):
            while not self._idle():
                await trio.sleep(0.02)

    async def assert_clean(self) -> None:
        """Nothing of any call is left: no slot, no call directory, no new fd."""
        await self.settle()
        stats = self.engine.statistics()
        assert (stats.running, stats.queued) == (0, 0), stats
        left = sorted(p.name for p in self.calls.iterdir())
        assert not left, f"call directories left in {self.calls}: {left}"
        new = self.new_fds()
        assert len(new) <= FD_TOLERANCE, f"new fds in the server process: {new}"


@asynccontextmanager
async def open_stack(
    folder: Path,
    *,
    isolate: str = "none",
    limits: Limits | None = None,
    config: EngineConfig | None = None,
    client_timeout: float = 20.0,
    clients: ClientLimits | None = None,
    execute: bool = False,
) -> AsyncIterator[Stack]:
    """A real server for ``folder``; on a clean exit, asserts that nothing is left."""
    config = config or EngineConfig(isolate=isolate, limits=limits or Limits())
    if config.isolate == "bwrap":
        need_bwrap()
    config = dataclasses.replace(config, uid_base=UID_BASE)
    async with open_app(
        folder, config, ServiceOptions(), debug=True, clients=clients, execute=execute
    ) as app:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(partial(serve, clients=clients), app, bind("127.0.0.1", 0))
            try:
                stack = Stack(url, app, fds=_fds())
                # A first call, so that whatever the server opens once is in the baseline.
                async with httpx.AsyncClient(timeout=client_timeout) as warmup:
                    response = await warmup.get(f"{url}/ping.sh")
                    assert response.text == "pong\n", response.text
                await stack.settle()
                stack.fds = _fds()
                async with httpx.AsyncClient(timeout=client_timeout) as http:
                    stack.http = http
                    yield stack
                await stack.assert_clean()
            finally:
                nursery.cancel_scope.cancel()


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    """``async with stack(folder, isolate=..., limits=...) as s:`` starts a real server."""
    return open_stack
