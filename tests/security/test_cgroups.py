"""Memory and disk outside the rlimits: tmpfs files, many processes, the host's disk.

Rlimits are per process and count no file: these calls stay under every
rlimit and still try to hold far more than their memory limit, or fill the
disk. A root server puts each call in a cgroup of its own (memory, pids,
CPU share), caps every tmpfs the sandbox mounts and gives the call's
directory a tmpfs of its own with a size and file quota (see
``sandbox/cgroups.py`` and ``sandbox/quota.py``).
"""

from __future__ import annotations

import contextlib
import os
import re

import pytest

from sandbox.core.engine import EngineConfig
from sandbox.core.limits import Limits
from sandbox.core.process import Outcome, Usage

from ..conftest import need
from .conftest import isolations

MiB = 1024 * 1024
GiB = 1024 * MiB

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="per-call cgroups and write quotas need a root server"
)

# Five processes, each well under the 512 MiB rlimit, together four times over it.
FIVE_PROCESSES = (
    "for i in 1 2 3 4 5; do\n"
    "  python3 -c 'import time; block = b\"x\" * (400 << 20); time.sleep(3)' &\n"
    '  pids="$pids $!"\n'
    "done\n"
    'for pid in $pids; do wait "$pid" || exit 1; done\n'
    "echo all-five-held-400MiB\n"
)


def _usage_memory(header: str) -> int:
    match = re.search(r"memory=(\d+)", header)
    assert match, header
    return int(match.group(1))


@pytest.mark.parametrize("place", ["/dev/shm", "/run", "/var", "/tmp"])
async def test_filling_a_tmpfs_past_the_memory_limit(stack, services, place):
    # Under bubblewrap these are tmpfs mounts of the call's own: files held
    # there belong to no process, so no rlimit sees them (without a cgroup a
    # call held 1.5 GiB under a 512 MiB limit this way, reporting 11 MiB).
    folder = services({"fill.sh": f'head -c 1000M /dev/zero >"{place}/fill"\necho "rc=$?"\n'})
    limits = Limits(memory=256 * MiB, file_size=1 * GiB, timeout=20)
    async with stack(folder, isolate="bwrap", limits=limits) as s:
        response = await s.beside(lambda: s.get("fill.sh"))
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error"] == "memory", body
    assert body["usage"]["memory"] <= 256 * MiB, body


@isolations
async def test_five_processes_under_the_rlimit_over_the_call_limit(stack, services, isolate):
    need("python3")
    folder = services({"five.sh": FIVE_PROCESSES})
    limits = Limits(memory=512 * MiB, timeout=20)
    async with stack(folder, isolate=isolate, limits=limits) as s:
        response = await s.beside(lambda: s.get("five.sh"))
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error"] == "memory", body
    assert "all-five-held-400MiB" not in response.text


@isolations
async def test_peak_memory_is_the_whole_calls(stack, services, isolate):
    # Three processes of 100 MiB and a 100 MiB file in the call's directory:
    # the largest process alone peaks at about 110 MiB.
    need("python3")
    folder = services(
        {
            "three.sh": (
                "head -c 100M /dev/zero > held\n"
                "for i in 1 2 3; do\n"
                "  python3 -c 'import time; block = b\"x\" * (100 << 20); time.sleep(1)' &\n"
                "done\n"
                "wait\n"
                "echo done\n"
            )
        }
    )
    limits = Limits(memory=1 * GiB, timeout=20)
    async with stack(folder, isolate=isolate, limits=limits) as s:
        response = await s.beside(lambda: s.get("three.sh"))
    assert (response.status_code, response.text) == (200, "done\n")
    memory = _usage_memory(response.headers["x-stack-usage"])
    assert 350 * MiB <= memory < 1 * GiB, memory


@isolations
async def test_a_call_cannot_fill_the_disk(stack, services, isolate):
    # Under every other limit (memory 2 GiB, files up to 1 GiB): the write
    # quota of the call's directory (512 MiB, 32768 files by default) stops it.
    need("python3")
    folder = services(
        {
            "disk.sh": (
                "head -c 960M /dev/zero > big\n"
                'echo "big rc=$?"\n'
                "rm -f big\n"
                "python3 - <<'EOF'\n"
                "import os\n"
                "try:\n"
                "    for n in range(100_000):\n"
                "        os.close(os.open(f'f{n}', os.O_CREAT | os.O_WRONLY, 0o600))\n"
                "    print('files: all 100000')\n"
                "except OSError as exc:\n"
                "    print('files:', exc.strerror)\n"
                "EOF\n"
            )
        }
    )
    limits = Limits(memory=2 * GiB, file_size=1 * GiB, timeout=30)
    async with stack(folder, isolate=isolate, limits=limits) as s:
        response = await s.beside(lambda: s.get("disk.sh"))
    assert response.status_code == 200, response.text
    assert response.text == "big rc=1\nfiles: No space left on device\n", response.text
    assert "No space left on device" in response.text


async def test_healthz_says_which_cgroups_and_a_pid_namespace_fallback(stack, services):
    folder = services({})
    async with stack(folder) as s:
        health = (await s.get("healthz")).json()["checks"]
        assert health["cgroups"]["ok"], health
        assert re.match(r"cgroup v[12]", health["cgroups"]["detail"]), health["cgroups"]
        assert health["pidns"] == {"ok": True, "detail": "every call in a pid namespace of its own"}
        # The launcher reported a fallback (no CLONE_NEWPID on some machine).
        s.engine.note_pidns(Outcome("ok", 0, None, Usage(), pidns=False))
        health = (await s.get("healthz")).json()["checks"]
    # Informational (a machine without pid namespaces stays serviceable), but marked.
    assert health["pidns"]["ok"] is True, health["pidns"]
    assert health["pidns"]["degraded"] is True, health["pidns"]
    assert "could not make a pid namespace" in health["pidns"]["detail"]


async def test_memory_a_call_leaves_behind_is_not_the_next_calls(stack, services):
    # Without bubblewrap /dev/shm is the host's: a file left there stays
    # charged to the cgroup of the call that wrote it. The next call of that
    # slot must not start with it counted against its own limit (a guard on
    # the cgroups' reuse; without cgroups there is nothing to poison).
    need("python3")
    name = f"/dev/shm/stack-security-left-{os.getpid()}"
    folder = services(
        {
            "leave.sh": f"head -c 300M /dev/zero > {name}\necho left\n",
            "alloc.py": "block = b'x' * (300 << 20)\nprint('allocated')\n",
        }
    )
    config = EngineConfig(isolate="none", max_running=1,
                          limits=Limits(memory=512 * MiB, file_size=GiB))  # fmt: skip
    try:
        async with stack(folder, config=config) as s:
            left = await s.get("leave.sh")
            after = await s.get("alloc.py")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)  # one system call on a tmpfs: no thread needed
    assert (left.status_code, left.text) == (200, "left\n")
    assert (after.status_code, after.text) == (200, "allocated\n"), after.text
