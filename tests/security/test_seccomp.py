"""The seccomp filter: system calls untrusted code never needs fail with EPERM.

The filter is the launcher's (``sandbox/core/_launcher.c``, listed in
docs/SECURITY.md): installed by the launcher just before exec without
bubblewrap, and by bubblewrap (``--seccomp``) in the program it runs with
it. What an interpreter needs (fork, threads, clone without namespace
flags) still works.
"""

from __future__ import annotations

import pytest

from ..conftest import need
from .conftest import isolations

# x86_64 numbers; each call made with arguments that would otherwise succeed
# or fail with another error than EPERM (EINVAL, EFAULT...).
PROBE = """
import ctypes, errno, os, platform, threading
if platform.machine() != "x86_64":
    print("arch", platform.machine())
    raise SystemExit(0)
libc = ctypes.CDLL(None, use_errno=True)
def call(name, nr, *args):
    result = libc.syscall(nr, *[ctypes.c_long(a) for a in args])
    err = ctypes.get_errno() if result == -1 else 0
    print(name, "ok" if result != -1 else errno.errorcode.get(err, err))
call("process_vm_readv", 310, os.getpid(), 0, 0, 0, 0, 0)
call("unshare-user", 272, 0x10000000)                 # CLONE_NEWUSER
call("unshare-net", 272, 0x40000000)                  # CLONE_NEWNET
call("clone-user", 56, 0x10000000 | 0x200 | 17, 0, 0, 0, 0)  # NEWUSER|FS: EINVAL unfiltered
call("clone3", 435, 0, 0)
call("setns", 308, 0, 0)
call("keyctl", 250, 0, 0, 0, 0)
call("add_key", 248, 0, 0, 0, 0, 0)
call("bpf", 321, 0, 0, 0)
call("perf_event_open", 298, 0, 0, -1, -1, 0)
call("userfaultfd", 323, 0)
call("mount", 165, 0, 0, 0, 0, 0)
call("umount2", 166, 0, 0)
call("pivot_root", 155, 0, 0)
call("fsopen", 430, 0, 0)
call("open_by_handle_at", 304, 0, 0, 0)
call("init_module", 175, 0, 0, 0)
call("kexec_load", 246, 0, 0, 0, 0)
call("io_uring_setup", 425, 0, 0)
call("personality-no-aslr", 135, 0x0040000)           # ADDR_NO_RANDOMIZE
call("personality-query", 135, 0xFFFFFFFF)
pid = os.fork()
if pid == 0:
    os._exit(7)
print("fork", os.waitpid(pid, 0)[1] >> 8)
thread = threading.Thread(target=lambda: None)
thread.start()
thread.join()
print("thread ok")
# Last: unfiltered, it makes the launcher this process's tracer.
call("ptrace", 101, 0, 0, 0, 0)                       # PTRACE_TRACEME
"""

DENIED = [
    "ptrace", "process_vm_readv", "unshare-user", "unshare-net", "clone-user", "setns",
    "keyctl", "add_key", "bpf", "perf_event_open", "userfaultfd", "mount", "umount2",
    "pivot_root", "fsopen", "open_by_handle_at", "init_module", "kexec_load",
    "io_uring_setup", "personality-no-aslr",
]  # fmt: skip


@isolations
async def test_denied_system_calls_fail_with_eperm(stack, services, isolate):
    need("python3")
    folder = services({"probe.py": PROBE})
    async with stack(folder, isolate=isolate) as s:
        response = await s.beside(lambda: s.get("probe.py"))
    assert response.status_code == 200, response.text
    if response.text.startswith("arch "):
        pytest.skip(f"the probe knows x86_64 numbers only, not {response.text.split()[1]}")
    results = dict(line.split(" ", 1) for line in response.text.splitlines())
    assert {name: results[name] for name in DENIED} == dict.fromkeys(DENIED, "EPERM")
    # clone3 says "not implemented", so that libc falls back to clone (whose flags it sees).
    assert results["clone3"] == "ENOSYS"
    assert results["personality-query"] == "ok"
    assert (results["fork"], results["thread"]) == ("7", "ok")


@isolations
async def test_a_namespace_cannot_be_made_from_inside(stack, services, isolate):
    # The tool users would reach for: unshare(1) (a new user namespace, then a
    # mount namespace where the call would be root).
    need("unshare")
    folder = services({"ns.sh": 'unshare -Ur id -u; echo "rc=$?"\n'})
    async with stack(folder, isolate=isolate) as s:
        response = await s.beside(lambda: s.get("ns.sh"))
    assert response.status_code == 200, response.text
    assert response.text == "rc=1\n", response.text


async def test_healthz_says_calls_have_the_filter(stack, services):
    folder = services({})
    async with stack(folder) as s:
        health = (await s.get("healthz")).json()["checks"]
    assert health["seccomp"]["ok"] is True, health
    assert "deny" in health["seccomp"]["detail"], health["seccomp"]
    assert "degraded" not in health["seccomp"], health["seccomp"]
