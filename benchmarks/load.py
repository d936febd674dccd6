"""Load generators: wrk when installed, else a Trio/httpx client of our own.

Both keep ``concurrency`` keep-alive connections busy with GET requests and
stop by themselves after ``requests`` responses or ``duration`` seconds,
whichever comes first. Latency is per request, from sending it to the end of
its response. ``paced_load`` sends one request at a time instead, with a
pause between them (the warm pool phase).
"""

from __future__ import annotations

import http.client
import math
import os
import re
import select
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio


@dataclass(frozen=True)
class LoadResult:
    """What one load run saw.

    Attributes:
        requests: responses received (or, for the spawn floor, runs completed).
        errors: socket errors and timeouts, or runs with a wrong output or exit code.
        statuses: responses by HTTP status (empty for the spawn floor).
        duration: seconds from the first request to the last response.
        p50: median latency, seconds.
        p99: 99th percentile latency, seconds.
    """

    requests: int
    errors: int
    statuses: dict[int, int] = field(default_factory=dict)
    duration: float = 0.0
    p50: float = math.nan
    p99: float = math.nan

    @property
    def rate(self) -> float:
        """Requests (or runs) per second."""
        return self.requests / self.duration if self.duration > 0 else math.nan

    @property
    def failures(self) -> int:
        """Socket errors plus responses other than 200."""
        if not self.statuses:
            return self.errors
        return self.errors + sum(n for status, n in self.statuses.items() if status != 200)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "duration": self.duration,
            "rate": self.rate,
            "p50": self.p50,
            "p99": self.p99,
        }


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (nan when empty)."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(pct / 100 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def summarize(
    latencies: list[float], statuses: dict[int, int], errors: int, duration: float
) -> LoadResult:
    """A :class:`LoadResult` from raw samples."""
    latencies.sort()
    return LoadResult(
        requests=len(latencies),
        errors=errors,
        statuses=dict(statuses),
        duration=duration,
        p50=percentile(latencies, 50),
        p99=percentile(latencies, 99),
    )


# A Load runs (url, concurrency, requests, duration, timeout) to a result.
Load = Callable[[str, int, int, float, float], LoadResult]


# wrk runs this in each of its threads: count responses by status, stop the
# thread after its share of requests, and print what we parse in done().
WRK_SCRIPT = """\
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  limit = tonumber(args[1])
  count = 0
  statuses = {}
end

function response(status, headers, body)
  count = count + 1
  statuses[status] = (statuses[status] or 0) + 1
  if count == limit then
    -- wrk's main thread sleeps for -d whatever its threads do; the suite
    -- sends it SIGINT on this line, so the run (and its duration) ends here.
    io.write("BENCH reached\\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout))
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      io.write(string.format("BENCH status=%d count=%d\\n", status, n))
    end
  end
end
"""

_WRK_SUMMARY = re.compile(
    r"BENCH requests=(\d+) duration_us=(\d+) p50_us=(\d+) p99_us=(\d+) errors=(\d+)"
)
_WRK_STATUS = re.compile(r"BENCH status=(\d+) count=(\d+)")


def find_wrk() -> str | None:
    """wrk's path, or None when it is not installed."""
    return shutil.which("wrk")


def parse_wrk(output: str) -> LoadResult:
    """The figures our wrk script printed.

    Raises:
        RuntimeError: the summary line is missing (wrk failed).
    """
    match = _WRK_SUMMARY.search(output)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    requests, duration_us, p50_us, p99_us, errors = (int(g) for g in match.groups())
    statuses: Counter[int] = Counter()
    for status, count in _WRK_STATUS.findall(output):
        statuses[int(status)] += int(count)
    return LoadResult(
        requests=requests,
        errors=errors,
        statuses=dict(statuses),
        duration=duration_us / 1e6,
        p50=p50_us / 1e6 if requests else math.nan,
        p99=p99_us / 1e6 if requests else math.nan,
    )


def _run_wrk(command: list[str], limit: float) -> str:
    """Run wrk; SIGINT it when its thread reached the count (it then prints its summary)."""
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    output = bytearray()
    poller = select.poll()
    poller.register(process.stdout, select.POLLIN)
    deadline = time.monotonic() + limit
    interrupted = False
    try:
        while (left := deadline - time.monotonic()) > 0:
            if not poller.poll(left * 1000):
                break
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:
                break
            output += chunk
            if not interrupted and b"BENCH reached" in output:
                process.send_signal(signal.SIGINT)
                interrupted = True
    finally:
        process.stdout.close()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return output.decode(errors="replace")


def wrk_load(
    url: str, concurrency: int, requests: int, duration: float, timeout: float
) -> LoadResult:
    """Run wrk (one thread: the cores are for the server) against ``url``."""
    wrk = find_wrk()
    if wrk is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk); use --client builtin")
    with tempfile.TemporaryDirectory(prefix="stack-bench-wrk-") as tmp:
        script = Path(tmp) / "count.lua"
        script.write_text(WRK_SCRIPT)
        command = [
            wrk,
            "-t1",
            f"-c{concurrency}",
            f"-d{max(1, math.ceil(duration))}s",
            f"--timeout={max(1, math.ceil(timeout))}s",
            "-s",
            str(script),
            url,
            "--",
            str(requests),
        ]
        output = _run_wrk(command, duration + timeout + 30)
    return parse_wrk(output)


async def _builtin(
    url: str, concurrency: int, requests: int, duration: float, request_timeout: float
) -> LoadResult:
    import httpx

    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    remaining = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=request_timeout, trust_env=False) as client:
        start = time.perf_counter()
        deadline = start + duration

        async def worker() -> None:
            nonlocal remaining, errors
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                sent = time.perf_counter()
                try:
                    response = await client.get(url)
                except httpx.HTTPError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - sent)
                statuses[response.status_code] += 1

        # The deadline stops new requests; this bounds the ones in flight.
        with trio.move_on_after(duration + request_timeout):
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker)
        elapsed = time.perf_counter() - start
    return summarize(latencies, statuses, errors, elapsed)


def builtin_load(
    url: str, concurrency: int, requests: int, duration: float, timeout: float
) -> LoadResult:
    """The suite's own client: ``concurrency`` Trio tasks sharing one httpx pool."""
    return trio.run(_builtin, url, concurrency, requests, duration, timeout)


def paced_load(url: str, requests: int, gap: float, duration: float, timeout: float) -> LoadResult:
    """GET ``url`` ``requests`` times, one at a time on one keep-alive connection.

    Each request is sent ``gap`` seconds after the previous response (0: back
    to back). Latency leaves the gaps out; ``duration`` (first request to last
    response) has them. A request that fails on a reused connection (the
    server closed it while it was idle) is sent once more on a new one.

    Args:
        duration: the most seconds it runs; no request is sent after that.
        timeout: the most seconds a connection waits for one response.
    """
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path += f"?{parts.query}"
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    connection: http.client.HTTPConnection | None = None
    start = time.perf_counter()
    deadline = start + duration
    try:
        for i in range(requests):
            if i and gap > 0:
                time.sleep(gap)
            if time.perf_counter() >= deadline:
                break
            for _ in range(2):
                reused = connection is not None
                if connection is None:
                    connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
                sent = time.perf_counter()
                try:
                    connection.request("GET", path)
                    response = connection.getresponse()
                    response.read()
                except (OSError, http.client.HTTPException) as exc:
                    connection.close()
                    connection = None
                    if reused and isinstance(exc, ConnectionError | http.client.BadStatusLine):
                        continue
                    errors += 1
                    break
                latencies.append(time.perf_counter() - sent)
                statuses[response.status] += 1
                if response.will_close:
                    connection.close()
                    connection = None
                break
    finally:
        if connection is not None:
            connection.close()
    return summarize(latencies, statuses, errors, time.perf_counter() - start)


def pick_load(client: str) -> tuple[str, Load]:
    """The load generator for ``--client auto|wrk|builtin``, with its name.

    Raises:
        RuntimeError: ``wrk`` was asked for and is not installed.
    """
    if client == "builtin" or (client == "auto" and find_wrk() is None):
        return "builtin (trio + httpx)", builtin_load
    if find_wrk() is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk); use --client builtin")
    return "wrk (1 thread)", wrk_load
