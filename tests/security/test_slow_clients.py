"""Slow clients: they may cost their own connection, never the server's memory, fds or slots.

Three classes of hostile client, each beside normal calls:

- clients that ask for a big response and never read it: the call's output
  waits for its client in a bounded buffer, the call still ends at its wall
  timeout (its slot free again), and a client that takes no bytes for the
  send timeout loses its connection;
- clients that send their request head or body a byte at a time, past the
  per-client connection cap: the excess connections are refused at once
  (503, Retry-After), the trickling ones answered 408 or closed at their
  deadline, and another client's calls go through meanwhile;
- the open-file limit is raised to the hard limit at start.
"""

from __future__ import annotations

import json
import logging
import os
import re
import resource
import socket
import time

import httpx
import psutil
import pytest
import trio

from sandbox.core.engine import EngineConfig
from sandbox.core.limits import Limits
from sandbox.http.clients import ClientLimits

MIB = 1024 * 1024
# 1 MiB of bytes that are not UTF-8, then it waits for its pipe to drain.
BIG = "head -c 1048576 /dev/urandom\n"
# The same, while flooding stderr: blocked on stdout, it must still end at its timeout.
NOISY = "yes noise >&2 &\nhead -c 1048576 /dev/urandom\nwait\n"
OTHER_CLIENT = "127.0.0.2"  # another client address on loopback
BODIES = [
    ("/count.sh", "application/json"),
    ("/count.sh", "application/octet-stream"),
    ("/api/v2/execute", "application/json"),
]


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


async def _connect(url: str, *, receive_buffer: int | None = None) -> trio.socket.SocketType:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        # Small, so that the kernel takes little of a response nobody reads.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(_address(url))
    return sock


async def _response_of(sock: trio.socket.SocketType, within: float) -> bytes:
    """What the server sends until it closes the connection (or ``within`` seconds pass)."""
    data = b""
    with trio.move_on_after(within):
        while chunk := await sock.recv(65536):
            data += chunk
    return data


def _server_connections(url: str, *, departed: bool = False) -> int:
    """Connections the server (this process) holds from clients.

    Those the client closed already (CLOSE_WAIT) count only with ``departed``.
    """
    port = _address(url)[1]
    return sum(
        1
        for c in psutil.Process().net_connections("tcp")
        if c.laddr
        and c.laddr.port == port
        and c.raddr
        and (departed or c.status != psutil.CONN_CLOSE_WAIT)
    )


async def test_clients_that_never_read_cost_neither_memory_nor_slots(stack, services):
    folder = services({"big.sh": BIG, "noisy.sh": NOISY})
    readers = 12
    config = EngineConfig(limits=Limits(timeout=2), max_running=readers + 2, max_queue=4,
                          isolate="none")  # fmt: skip
    clients = ClientLimits(send_timeout=3, output_buffer=64 * 1024)
    async with stack(folder, config=config, clients=clients) as s:
        me = psutil.Process()
        before = me.memory_info().rss
        calls = s.engine.statistics().calls
        socks = []
        try:
            for i in range(readers):
                sock = await _connect(s.url, receive_buffer=4096)
                name = "noisy.sh" if i % 6 == 0 else "big.sh"
                await sock.send(f"GET /{name} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
                socks.append(sock)
            peak = before
            started = trio.current_time()
            with trio.move_on_after(10):
                while s.engine.statistics().calls < calls + readers:
                    await trio.sleep(0.02)
                # Every call blocks on its output, then ends at its 2 s wall timeout.
                while s.engine.statistics().running:
                    peak = max(peak, me.memory_info().rss)
                    await trio.sleep(0.05)
            ended = trio.current_time() - started
            stats = s.engine.statistics()
            assert stats.calls >= calls + readers, stats
            assert stats.running == 0, f"calls still running after {ended:.1f} s: {stats}"
            # Ended by their limits: a condition, not a clock (a loaded machine
            # may take longer than the send timeout to get here).
            hits = (await s.get("metrics")).text
            # By their own limits (or their end, when the kernel's buffers took a
            # whole response), never killed because the server gave up on a client.
            killed = re.findall(r'^stack_calls_total\{[^}]*outcome="killed"[^}]*\} (\S+)$',
                                hits, re.M)  # fmt: skip
            assert sum(float(n) for n in killed) == 0, (ended, hits)
            # Per call at most the hold, the outbox and a chunk in flight: far from 1 MiB,
            # let alone the 6 bytes per byte of an escaped copy.
            assert peak - before < 24 * MIB, f"the server grew by {(peak - before) / MIB:.0f} MiB"
            pong = await s.get("ping.sh")
            assert (pong.status_code, pong.text) == (200, "pong\n")
            # The clients took nothing for the send timeout: their connections are closed.
            with trio.move_on_after(clients.send_timeout + 5):
                while _server_connections(s.url) > 0:
                    await trio.sleep(0.1)
            assert _server_connections(s.url) == 0
            # (How many were closed for stalling, rather than after their aborted
            # response, depends on how much the kernel's buffers took: not asserted.)
        finally:
            for sock in socks:
                sock.close()


async def test_trickling_heads_and_bodies_past_the_per_client_cap(stack, services):
    folder = services({"count.sh": "wc -c\n"})
    cap = 6
    config = EngineConfig(limits=Limits(timeout=20), max_running=4, max_queue=4,
                          isolate="none")  # fmt: skip
    clients = ClientLimits(max_connections_per_client=cap, head_timeout=1.0, body_timeout=1.5,
                           body_min_rate=1024)  # fmt: skip
    async with stack(folder, config=config, clients=clients, execute=True) as s:
        # The fixture's first call's connection counts until the server closes it.
        with trio.move_on_after(3):
            while _server_connections(s.url, departed=True):
                await trio.sleep(0.05)
        heads, bodies = [], []
        async with trio.open_nursery() as nursery:

            async def trickle(sock: trio.socket.SocketType, data: bytes) -> None:
                try:
                    for byte in data:
                        await sock.send(bytes([byte]))
                        await trio.sleep(0.2)
                except OSError:
                    pass  # closed by the server, as it should be

            for i in range(cap):
                sock = await _connect(s.url)
                if i % 2:
                    heads.append(sock)
                    nursery.start_soon(trickle, sock, b"GET /ping.sh HTTP/1.1\r\nhost: x\r\n\r\n")
                else:
                    # A JSON body (read before the call), one streamed into a call's
                    # stdin, one for the execute API.
                    path, kind = BODIES[i // 2]
                    head = (f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {kind}\r\n"
                            "content-length: 1000\r\n\r\n")  # fmt: skip
                    await sock.send(head.encode())
                    bodies.append(sock)
                    nursery.start_soon(trickle, sock, b"x" * 1000)
            await trio.sleep(0.1)  # the server has accepted them

            # Past the cap, the same address is turned away at once.
            t0 = time.monotonic()
            extra = await _connect(s.url)
            await extra.send(b"GET /ping.sh HTTP/1.1\r\nhost: x\r\n\r\n")
            refused = await _response_of(extra, 2.0)
            extra.close()
            assert time.monotonic() - t0 < 1.0
            assert refused.startswith(b"HTTP/1.1 503 "), refused
            assert b"retry-after: 1" in refused.lower()
            assert b"too_many_connections" in refused

            # Another client's calls go through meanwhile.
            transport = httpx.AsyncHTTPTransport(local_address=OTHER_CLIENT)
            async with httpx.AsyncClient(transport=transport, timeout=5) as other:
                for _ in range(3):
                    pong = await other.get(f"{s.url}/ping.sh")
                    assert (pong.status_code, pong.text) == (200, "pong\n")
                metrics = (await other.get(f"{s.url}/metrics")).text
                assert "stack_connections_refused_total 1.0" in metrics

            # The trickling heads are closed at their deadline, the bodies answered 408.
            t0 = time.monotonic()
            answers = [await _response_of(sock, 5.0) for sock in heads + bodies]
            waited = time.monotonic() - t0
            for sock in heads + bodies:
                sock.close()
            nursery.cancel_scope.cancel()
        assert waited < 4.0, f"the slow clients were still connected after {waited:.1f} s"
        for answer in answers[: len(heads)]:
            assert answer == b"", answer
        for answer in answers[len(heads) :]:
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"request_timeout" in answer
        # And the address that trickled may connect again.
        pong = await s.get("ping.sh")
        assert (pong.status_code, pong.text) == (200, "pong\n")


async def test_the_open_file_limit_is_raised_at_start(stack, services, caplog):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Low, yet with room for what this process has open and a server's start.
    lowered = max(512, len(os.listdir("/proc/self/fd")) + 256)
    if hard == resource.RLIM_INFINITY or hard <= lowered:
        pytest.skip(f"the hard open-file limit ({hard}) leaves nothing to raise")
    caplog.set_level(logging.INFO, logger="stack")
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        async with stack(services({})) as s:
            pong = await s.get("ping.sh")
            now = resource.getrlimit(resource.RLIMIT_NOFILE)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert pong.text == "pong\n"
    assert now == (hard, hard)
    expected = min(ClientLimits().max_connections, hard // 2)
    assert f"open-file limit {hard}: at most {expected} connections" in caplog.text


async def test_submitted_jobs_whose_clients_never_read_keep_their_output_once(stack, services):
    # The execute API answers with the whole output as JSON (stdout, and again
    # in "output"): bytes that are not UTF-8 must not grow into 6-byte escapes,
    # nor be kept more than once per field while the client does not read.
    readers = 8
    config = EngineConfig(limits=Limits(timeout=5), max_running=readers + 2, max_queue=4,
                          isolate="none")  # fmt: skip
    clients = ClientLimits(send_timeout=2)
    job = json.dumps({"language": "bash", "version": "*",
                      "files": [{"content": BIG}]}).encode()  # fmt: skip
    request = (b"POST /api/v2/execute HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
               b"content-length: %d\r\n\r\n%s" % (len(job), job))  # fmt: skip
    async with stack(services({}), config=config, clients=clients, execute=True) as s:
        me = psutil.Process()
        before = me.memory_info().rss
        calls = s.engine.statistics().calls
        socks = []
        try:
            for _ in range(readers):
                sock = await _connect(s.url, receive_buffer=4096)
                await sock.send(request)
                socks.append(sock)
            peak = before
            with trio.move_on_after(15):
                while s.engine.statistics().calls < calls + readers:
                    await trio.sleep(0.02)
                while s.engine.statistics().running or _server_connections(s.url):
                    peak = max(peak, me.memory_info().rss)
                    await trio.sleep(0.05)
            grown = (peak - before) / MIB
            assert s.engine.statistics().running == 0
            assert _server_connections(s.url) == 0, "the server kept connections nobody reads"
            pong = await s.get("ping.sh")
            assert (pong.status_code, pong.text) == (200, "pong\n")
        finally:
            for sock in socks:
                sock.close()
        # About 3 MiB a client (the output as written, stdout and "output"); it was 18.
        assert grown < 6 * readers, f"the server grew by {grown:.0f} MiB for {readers} clients"


async def test_short_responses_nobody_reads_do_not_hold_the_slots(stack, services):
    # A response short enough to go out whole (the 20 ms hold) is sent once the
    # call is over: to a client with a full receive window that send waits,
    # and it must wait without the call's slot.
    folder = services({"short.sh": "head -c 61440 /dev/urandom\n"})
    readers = 6
    config = EngineConfig(limits=Limits(timeout=5), max_running=2, max_queue=readers,
                          isolate="none")  # fmt: skip
    async with stack(folder, config=config, clients=ClientLimits(send_timeout=3)) as s:
        calls = s.engine.statistics().calls
        socks = []
        try:
            for _ in range(readers):
                sock = await _connect(s.url, receive_buffer=4096)
                await sock.send(b"GET /short.sh HTTP/1.1\r\nhost: x\r\n\r\n")
                socks.append(sock)
            started = trio.current_time()
            with trio.move_on_after(10):
                while s.engine.statistics().calls < calls + readers:
                    await trio.sleep(0.02)
                while s.engine.statistics().running or s.engine.statistics().queued:
                    await trio.sleep(0.02)
            took = trio.current_time() - started
            stats = s.engine.statistics()
            assert (stats.calls - calls, stats.running, stats.queued) == (readers, 0, 0), stats
            # Three rounds of two calls, none waiting for a client that does not read.
            assert took < 3, f"{readers} short calls on 2 slots took {took:.1f} s"
        finally:
            for sock in socks:
                sock.close()


async def test_a_body_that_waited_for_a_slot_is_not_late(stack, services):
    # The body deadline counts the time the server waits for the client, not
    # the time the request waited in the queue with its body already sent.
    folder = services({"nap.sh": "sleep 1.5\n", "count.sh": "wc -c\n"})
    config = EngineConfig(limits=Limits(timeout=10), max_running=1, max_queue=2,
                          isolate="none")  # fmt: skip
    clients = ClientLimits(body_timeout=0.5, body_min_rate=0)
    async with stack(folder, config=config, clients=clients) as s:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(s.get, "nap.sh")
            while s.engine.statistics().running == 0:
                await trio.sleep(0.01)
            counted = await s.post("count.sh", content=b"12345",
                                   headers={"content-type": "application/octet-stream"})  # fmt: skip
        assert (counted.status_code, counted.text.strip()) == (200, "5"), counted.text


async def test_a_trickling_upload_cannot_hold_a_slot_past_the_calls_wall_time(stack, services):
    # A multipart body is parsed holding the call's slot: at the body rate
    # allowed (4 KiB/s here) a 16 MiB upload would keep it for an hour.
    folder = services({"upload.sh": "echo got\n"})
    config = EngineConfig(limits=Limits(timeout=2), max_running=1, isolate="none")
    clients = ClientLimits(body_timeout=60, body_min_rate=1)
    async with stack(folder, config=config, clients=clients) as s:
        sock = await _connect(s.url)
        boundary = "b0undary"
        head = (f"POST /upload.sh HTTP/1.1\r\nhost: x\r\n"
                f"content-type: multipart/form-data; boundary={boundary}\r\n"
                "content-length: 100000\r\n\r\n"
                f"--{boundary}\r\ncontent-disposition: form-data; name=\"f\"; "
                "filename=\"a.bin\"\r\n\r\n")  # fmt: skip
        await sock.send(head.encode())
        answer = b""
        with trio.fail_after(20):
            while b"\r\n\r\n" not in answer:
                with trio.move_on_after(0.2):
                    chunk = await sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                    continue
                await sock.send(b"x" * 10)  # still sending, slowly
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        after = await s.get("ping.sh")  # the slot is free again
        assert after.text == "pong\n"
