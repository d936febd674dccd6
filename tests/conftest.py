"""Shared fixtures: a real stack server on a free loopback port, real interpreters."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trio

from sandbox.app import open_app
from sandbox.core.engine import EngineConfig
from sandbox.core.isolation import check_bwrap, find_bwrap
from sandbox.core.limits import Limits
from sandbox.features.services import ServiceOptions
from sandbox.http.server import bind, serve

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "services"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def have(tool: str) -> bool:
    """Whether ``tool`` is on the PATH scripts get."""
    return shutil.which(tool, path=SYSTEM_PATH) is not None


def need(*tools: str) -> None:
    """Skip the test, saying why, when a tool is missing."""
    for tool in tools:
        if not have(tool):
            pytest.skip(f"{tool} is not installed (apt-get install it; .ci/run does)")


_BWRAP_PROBLEM: list[str | None] = []


def bwrap_problem() -> str | None:
    """Why bubblewrap cannot be used here, or None."""
    if not _BWRAP_PROBLEM:
        bwrap = find_bwrap()
        uid = 61000 if os.geteuid() == 0 else None
        _BWRAP_PROBLEM.append("bwrap is not installed" if bwrap is None else check_bwrap(bwrap, uid))
    return _BWRAP_PROBLEM[0]


def need_bwrap() -> None:
    problem = bwrap_problem()
    if problem:
        pytest.skip(f"bubblewrap is not usable here: {problem}")


@asynccontextmanager
async def running_server(
    path: Path,
    *,
    isolate: str = "none",
    limits: Limits | None = None,
    debug: bool = True,
    warm: Mapping[str, int] | None = None,
    warm_idle: float = 60.0,
    **options: Any,
) -> AsyncIterator[str]:
    """A real stack server for ``path`` on 127.0.0.1:<free port>; yields its URL."""
    if isolate == "bwrap":
        need_bwrap()
    config = EngineConfig(isolate=isolate, limits=limits or Limits(), warm=warm or {},
                          warm_idle=warm_idle)  # fmt: skip
    async with open_app(path, config, ServiceOptions(**options), debug=debug) as app:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, app, bind("127.0.0.1", 0))
            try:
                yield url
            finally:
                nursery.cancel_scope.cancel()


@pytest.fixture
def server() -> Callable[..., Any]:
    """``async with server(path, isolate=...) as url:`` starts a real server."""
    return running_server


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str, str], Path]:
    """``script("name.sh", text)`` writes a script into a fresh folder."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


def _leftovers() -> list[str]:
    me = psutil.Process()
    found = []
    for child in me.children(recursive=True):
        try:
            found.append(f"{child.pid} {child.name()} {child.cmdline()[:4]}")
        except psutil.Error:
            continue
    if os.geteuid() == 0:
        # Sandbox-uid processes that escaped to init (another test run on the
        # same machine may own the ones still under its own server).
        for proc in psutil.process_iter(["pid", "uids", "name", "ppid"]):
            uids = proc.info["uids"]
            if uids and 61000 <= uids.real < 61000 + 1024 and proc.info["ppid"] == 1:
                found.append(f"{proc.info['pid']} {proc.info['name']} uid={uids.real}")
    return found


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Any:
    """After every test, no process started by it is alive."""
    yield
    left = _leftovers()
    for _ in range(20):
        if not left:
            break
        import time

        time.sleep(0.1)
        left = _leftovers()
    assert not left, f"processes left running after the test: {left}"


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _SKIPPED.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """In CI every tool is installed, so a skipped test is a failure."""
    if os.environ.get("CI") and _SKIPPED and exitstatus == 0:
        print(f"\nCI: {len(_SKIPPED)} test(s) skipped; .ci/run installs every tool, so this "
              f"is a failure: {_SKIPPED[:10]}")  # fmt: skip
        session.exitstatus = 1
