"""Starting and stopping the servers under test: stack and lighttpd with mod_cgi.

Both bind 127.0.0.1 only, on a free port, and are stopped (SIGTERM, then
SIGKILL) when their ``with`` block ends, whatever happened in it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

HOST = "127.0.0.1"
SANDBOX_UIDS = range(61000, 62001)  # stack's call uids (uid_base 61000 + slot)
_URL = re.compile(r" at (http://[^/\s]+)")


class ServerError(Exception):
    """A server did not start; the message carries the end of its log."""


@dataclass(frozen=True)
class PoolFigures:
    """A warm pool as stack's /metrics shows it, for one language.

    Attributes:
        size: interpreters waiting (``stack_warm_pool_size``).
        hits: calls handed a loaded interpreter (``stack_warm_pool_hits_total``).
        misses: calls of a warm service that started cold (``stack_warm_pool_misses_total``).
        early: calls handed one still loading (``stack_warm_pool_early_total``).
    """

    size: int
    hits: int
    misses: int
    early: int = 0


def pool_figures(metrics: str, language: str) -> PoolFigures:
    """The warm pool figures of ``language`` in a Prometheus text page (0 when absent).

    A counter appears only once it counted something, a gauge once it moved.
    """

    def value(name: str) -> int:
        pattern = rf'^{name}{{language="{re.escape(language)}"}} ([0-9.e+-]+)$'
        found = re.search(pattern, metrics, re.M)
        return int(float(found.group(1))) if found else 0

    return PoolFigures(
        value("stack_warm_pool_size"),
        value("stack_warm_pool_hits_total"),
        value("stack_warm_pool_misses_total"),
        value("stack_warm_pool_early_total"),
    )


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def stack_command() -> list[str]:
    """The ``stack`` console script of this Python, or ``python -m sandbox``."""
    script = Path(sys.executable).with_name("stack")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sandbox"]


def _tail(path: Path, size: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def _stop(process: subprocess.Popen[bytes], grace: float = 15.0) -> str:
    """SIGTERM, then (stack's "stop at once") a second SIGTERM, then SIGKILL.

    Returns:
        How it ended: ``exited`` (on the first SIGTERM, within ``grace``),
        ``second signal`` or ``killed``.
    """
    if process.poll() is not None:
        return "exited"
    for how, wait in (("exited", grace), ("second signal", 5.0)):
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(wait)
            return how
        except subprocess.TimeoutExpired:
            continue
    process.kill()
    process.wait(5)
    return "killed"


@dataclass
class StackServer:
    """A running ``stack DIR`` process.

    Attributes:
        process: the stack process itself (the console script execs Python).
        url: its base URL, as it printed it.
        started: wall-clock time just before it started, to tell the processes
            it made from older ones.
        log: its stderr.
        shutdown: once stopped, how it ended (see ``_stop``).
    """

    process: subprocess.Popen[bytes]
    url: str
    started: float
    log: Path
    shutdown: str = ""

    def rss(self) -> int:
        """The server's resident memory, bytes."""
        return int(psutil.Process(self.process.pid).memory_info().rss)

    def children(self) -> list[str]:
        """Its living descendants, as ``pid name`` strings."""
        try:
            found = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        return [f"{p.pid} {_name(p)}" for p in found if _alive(p)]

    def wait_idle(self, timeout: float = 10.0) -> list[str]:
        """Wait until it has no child process; the ones still there after ``timeout``."""
        deadline = time.monotonic() + timeout
        while (left := self.children()) and time.monotonic() < deadline:
            time.sleep(0.05)
        return left

    def pool(self, language: str, timeout: float = 10.0) -> PoolFigures:
        """Its warm pool of ``language``, from /metrics.

        Raises:
            OSError: /metrics did not answer 200 within ``timeout``.
        """
        status, _, body = fetch(f"{self.url}/metrics", timeout)
        if status != 200:
            raise OSError(f"GET /metrics gave {status} {body[:80]!r}")
        return pool_figures(body.decode(errors="replace"), language)

    def wait_pool(self, language: str, size: int, timeout: float = 60.0) -> PoolFigures:
        """Wait until ``size`` interpreters of ``language`` wait in its pool, or ``timeout``.

        Returns:
            The pool as it was last seen (``size`` below the one asked for on a timeout).

        Raises:
            OSError: /metrics did not answer.
        """
        deadline = time.monotonic() + timeout
        while (found := self.pool(language)).size < size and time.monotonic() < deadline:
            time.sleep(0.05)
        return found


def _name(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        return "?"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _orphaned(process: psutil.Process) -> bool:
    """Whether only init and sandbox-uid processes are above it (its call's launcher is gone)."""
    try:
        for parent in process.parents():
            if parent.pid != 1 and parent.uids().real not in SANDBOX_UIDS:
                return False
    except psutil.Error:
        return False
    return True


def sandbox_processes(since: float) -> list[str]:
    """Orphaned processes of a sandbox uid (61000-62000) that started after ``since``.

    Such a process outliving its call is what stack promises never happens.
    Calls of other stack servers on the machine are left out: they started
    before ``since``, or their launcher is still above them.
    """
    found: list[str] = []
    for process in psutil.process_iter(["uids", "create_time"]):
        uids, created = process.info["uids"], process.info["create_time"]
        if uids is None or created is None or created < since - 1:
            continue
        if uids.real not in SANDBOX_UIDS and uids.effective not in SANDBOX_UIDS:
            continue
        if _alive(process) and _orphaned(process):
            found.append(f"{process.pid} uid={uids.effective} {_name(process)}")
    return found


@contextmanager
def running_stack(
    services: Path,
    *,
    isolate: str,
    max_running: int,
    max_queue: int | None = None,
    extra: Sequence[str] = (),
    log: Path,
    start_timeout: float = 60.0,
) -> Iterator[StackServer]:
    """Run ``stack SERVICES -p PORT --isolate MODE --max-running N [EXTRA...]`` for the block.

    Args:
        extra: more options for stack's command line (``--warm python=4``).

    Raises:
        ServerError: it exited or printed no URL within ``start_timeout``.
    """
    command = [
        *stack_command(),
        str(services),
        "-p",
        str(free_port()),
        "--isolate",
        isolate,
        "--max-running",
        str(max_running),
    ]
    if max_queue is not None:
        command += ["--max-queue", str(max_queue)]
    command += extra
    started = time.time()
    with log.open("wb") as out:
        # stderr goes to a file, not a pipe: a pipe nobody reads would block its logging.
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    server = None
    try:
        url = _wait_for_url(process, log, start_timeout)
        server = StackServer(process, url, started, log)
        yield server
    finally:
        how = _stop(process)
        if server is not None:
            server.shutdown = how


def _wait_for_url(process: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = _URL.search(_tail(log, 100_000))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise ServerError(f"stack exited with status {process.returncode}:\n{_tail(log)}")
        time.sleep(0.05)
    raise ServerError(f"stack printed no URL in {timeout:.0f} s:\n{_tail(log)}")


def find_lighttpd() -> str | None:
    """lighttpd's path (Debian puts it in /usr/sbin), or None when it is not installed."""
    found = shutil.which("lighttpd")
    if found:
        return found
    for candidate in ("/usr/sbin/lighttpd", "/usr/local/sbin/lighttpd"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pairs(mapping: Mapping[str, str]) -> str:
    return "(\n" + ",\n".join(f"  {_quote(k)} => {_quote(v)}" for k, v in mapping.items()) + "\n)"


def lighttpd_config(
    docroot: Path, port: int, assign: Mapping[str, str], env: Mapping[str, str], errorlog: Path
) -> str:
    """A minimal lighttpd.conf: mod_cgi, 127.0.0.1:PORT, one interpreter per extension.

    ``env`` is added to every CGI call's environment (mod_setenv).
    """
    text = (
        f"server.document-root = {_quote(str(docroot))}\n"
        f"server.bind = {_quote(HOST)}\n"
        f"server.port = {port}\n"
        f"server.errorlog = {_quote(str(errorlog))}\n"
        'server.modules = ("mod_setenv", "mod_cgi")\n'
        "server.max-connections = 1024\n"
        "server.max-fds = 4096\n"
        f"cgi.assign = {_pairs(assign)}\n"
    )
    if env:
        text += f"setenv.add-environment = {_pairs(env)}\n"
    return text


@contextmanager
def running_lighttpd(
    binary: str,
    docroot: Path,
    assign: Mapping[str, str],
    env: Mapping[str, str],
    workdir: Path,
    start_timeout: float = 15,
) -> Iterator[tuple[str, int]]:
    """Run lighttpd in the foreground for the block; gives its base URL and pid.

    Raises:
        ServerError: it exited or did not accept connections within ``start_timeout``.
    """
    port = free_port()
    config = workdir / "lighttpd.conf"
    log = workdir / "lighttpd.log"
    config.write_text(lighttpd_config(docroot, port, assign, env, workdir / "lighttpd-error.log"))
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "-D", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise ServerError(
                    f"lighttpd exited with status {process.returncode}:\n{_tail(log)}"
                )
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise ServerError(f"lighttpd did not listen in {start_timeout} s") from None
                time.sleep(0.05)
        yield f"http://{HOST}:{port}", process.pid
    finally:
        _stop(process)


def fetch(url: str, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
    """GET ``url`` once: status, headers (lower-case names) and body, also for error statuses."""
    # No proxy from the environment: every server here is on the loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            headers = {k.lower(): v for k, v in response.headers.items()}
            return int(response.status), headers, bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
