"""Every limit hit exactly: just under it the call succeeds, just over it fails with its reason.

Sizes are exact to the byte; times and memory have margins (an interpreter
needs some of each before the script runs). The over-the-limit call runs
with a healthy call beside it and a normal call after it, and leaving the
server checks that nothing is left.
"""

from __future__ import annotations

import os

import pytest

from sandbox.core.limits import Limits

from ..conftest import need
from .conftest import isolations

MiB = 1024 * 1024

PYTHON_FORK = """\
import os
n = int(Hook['params']['n'])
read, write = os.pipe()
children = []
for _ in range(n):
    pid = os.fork()
    if pid == 0:
        os.close(write)
        os.read(read, 1)  # wait for the parent to close its end
        os._exit(0)
    children.append(pid)
os.close(write)
for pid in children:
    os.waitpid(pid, 0)
print("forked", n)
"""

PYTHON_OPEN = """\
import os
n = int(Hook['params']['n'])
fds = [os.open('/dev/null', os.O_RDONLY) for _ in range(n)]
print("opened", len(fds), "highest", max(fds))
"""

PYTHON_BURN = """\
import time
seconds = float(Hook['params']['seconds'])
while time.process_time() < seconds:
    pass
print("burnt", seconds)
"""

PYTHON_ALLOCATE = """\
n = int(Hook['params']['n'])
block = bytearray(n)
print("allocated", len(block))
"""

PYTHON_WRITE = """\
import sys
n = int(Hook['params']['n'])
sys.stdout.buffer.write(b'x' * n)
"""

BASH_FILE = """\
printf '%*s' "$Hook_params_n" '' > big
stat -c %s big
"""


@isolations
async def test_timeout(stack, services, isolate):
    folder = services({"under.sh": "sleep 0.3\necho done\n", "over.sh": "sleep 2\necho done\n"})
    async with stack(folder, isolate=isolate, limits=Limits(timeout=1)) as s:
        under = await s.get("under.sh")
        over = await s.beside(lambda: s.get("over.sh"))
    assert (under.status_code, under.text) == (200, "done\n")
    assert over.status_code == 504
    assert over.json()["error"] == "timeout"


@isolations
async def test_cpu(stack, services, isolate):
    need("python3")
    folder = services({"burn.py": PYTHON_BURN})
    async with stack(folder, isolate=isolate, limits=Limits(cpu=1, timeout=10)) as s:
        under = await s.get("burn.py", params={"seconds": 0.3})
        over = await s.beside(lambda: s.get("burn.py", params={"seconds": 1.5}))
    assert (under.status_code, under.text) == (200, "burnt 0.3\n")
    assert over.status_code == 500
    body = over.json()
    assert body["error"] == "cpu", body
    assert body["signal"] == "SIGXCPU", body


@isolations
async def test_memory(stack, services, isolate):
    # RLIMIT_AS counts the interpreter too: python3 starts at 15-60 MiB of it,
    # so half the limit fits and a block as large as the limit cannot.
    need("python3")
    limit = 128 * MiB
    folder = services({"alloc.py": PYTHON_ALLOCATE})
    async with stack(folder, isolate=isolate, limits=Limits(memory=limit)) as s:
        under = await s.get("alloc.py", params={"n": limit // 2})
        over = await s.beside(lambda: s.get("alloc.py", params={"n": limit}))
    assert (under.status_code, under.text) == (200, f"allocated {limit // 2}\n")
    assert over.status_code == 500
    body = over.json()
    assert body["error"] == "memory", body
    assert "MemoryError" in body["stderr"]


@isolations
async def test_processes(stack, services, isolate):
    # RLIMIT_NPROC counts every process of the call's uid: the script itself,
    # and under bwrap also bwrap and its init (pid 1 of the sandbox).
    need("python3")
    if os.geteuid() != 0:
        pytest.skip("the process limit needs a uid per call, so the server must be root")
    limit = 8
    room = limit - (3 if isolate == "bwrap" else 1)
    folder = services({"fork.py": PYTHON_FORK})
    async with stack(folder, isolate=isolate, limits=Limits(processes=limit)) as s:
        under = await s.get("fork.py", params={"n": room})
        over = await s.beside(lambda: s.get("fork.py", params={"n": room + 1}))
    assert (under.status_code, under.text) == (200, f"forked {room}\n")
    # No reason of its own: the script sees fork() fail with EAGAIN and exits.
    assert over.status_code == 500
    body = over.json()
    assert body["error"] == "exit", body
    assert "BlockingIOError: [Errno 11] Resource temporarily unavailable" in body["stderr"]


@isolations
async def test_file_size(stack, services, isolate):
    # bash's builtin printf writes the file itself, so bash gets the SIGXFSZ.
    limit = 100_000
    folder = services({"file.sh": BASH_FILE})
    async with stack(folder, isolate=isolate, limits=Limits(file_size=limit)) as s:
        under = await s.get("file.sh", params={"n": limit})
        over = await s.beside(lambda: s.get("file.sh", params={"n": limit + 1}))
    assert (under.status_code, under.text) == (200, f"{limit}\n")
    assert over.status_code == 500
    body = over.json()
    assert body["error"] == "file_size", body
    assert body["signal"] == "SIGXFSZ", body


@isolations
async def test_open_files(stack, services, isolate):
    # RLIMIT_NOFILE is one more than the highest fd: 0-3 are taken, so a
    # limit of 32 leaves fds 4-31 to the script.
    need("python3")
    limit = 32
    room = limit - 4
    folder = services({"open.py": PYTHON_OPEN})
    async with stack(folder, isolate=isolate, limits=Limits(open_files=limit)) as s:
        under = await s.get("open.py", params={"n": room})
        over = await s.beside(lambda: s.get("open.py", params={"n": room + 1}))
    assert (under.status_code, under.text) == (200, f"opened {room} highest {limit - 1}\n")
    # No reason of its own: the script sees open() fail with EMFILE and exits.
    assert over.status_code == 500
    body = over.json()
    assert body["error"] == "exit", body
    assert "OSError: [Errno 24] Too many open files" in body["stderr"]


@isolations
async def test_output(stack, services, isolate):
    need("python3")
    limit = 100_000
    folder = services({"write.py": PYTHON_WRITE})
    async with stack(folder, isolate=isolate, limits=Limits(output=limit)) as s:
        under = await s.stream("write.py", params={"n": limit})
        over = await s.beside(lambda: s.stream("write.py", params={"n": limit + 1}))
    assert (under.status, under.aborted, under.body) == (200, False, b"x" * limit)
    # Over it the body has started, so the response is cut at the limit and aborted.
    assert (over.status, over.aborted, over.body) == (200, True, b"x" * limit)


async def _chunks(data: bytes, size: int = 30_000):
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body(stack, services, framing):
    # The body is read by the front door, before and around the call:
    # isolation plays no part, so this runs without bwrap only.
    limit = 100_000
    folder = services({"count.sh": "wc -c\n"})

    def body(n: int):
        data = b"x" * n
        return data if framing == "content-length" else _chunks(data)

    async with stack(folder, limits=Limits(body=limit)) as s:
        under = await s.post("count.sh", content=body(limit))
        over = await s.beside(lambda: s.post("count.sh", content=body(limit + 1)))
    assert (under.status_code, under.text) == (200, f"{limit}\n")
    assert over.status_code == 413
    assert over.json()["error"] == "body_too_large"
