"""Hostile scripts over real HTTP: what the client gets, and that nobody else notices.

Each test runs the hostile call with a healthy call beside it and a normal
call after it (``Stack.beside``); leaving ``open_stack`` checks that no call
directory, slot or file descriptor is left, and the autouse fixtures (here
and in ``tests/conftest.py``) that no process is.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import h11
import psutil
import pytest
import trio

from sandbox.core.limits import Limits

from ..conftest import need
from .conftest import isolations

MiB = 1024 * 1024
ROOT = os.geteuid() == 0


def _existing(*paths: str | Path) -> list[str]:
    """Which of ``paths`` exist (a few stat calls: no need for a thread)."""
    return [str(path) for path in paths if os.path.lexists(path)]


def _processes_with(marker: str) -> list[str]:
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(marker in part for part in cmdline):
            found.append(f"{proc.info['pid']} {cmdline}")
    return found


# -- resource exhaustion ----------------------------------------------------------


@isolations
async def test_fork_bomb(stack, services, isolate):
    folder = services({"bomb.sh": ":(){ :|:& };:\nsleep 10\n"})
    async with stack(folder, isolate=isolate, limits=Limits(timeout=1, processes=32)) as s:
        response = await s.beside(lambda: s.get("bomb.sh"))
    assert response.status_code == 504
    body = response.json()
    assert body["error"] == "timeout"
    if ROOT:  # RLIMIT_NPROC held the bomb (it is only applied when the server is root)
        assert "fork: retry: Resource temporarily unavailable" in body["stderr"]


@isolations
@pytest.mark.parametrize(
    "code",
    ["x = []\nwhile True:\n    x.append(b'x' * 10**6)\n", "block = bytearray(4 * 1024**3)\n"],
    ids=["grow", "one-block"],
)
async def test_memory_bomb(stack, services, isolate, code):
    need("python3")
    folder = services({"mem.py": code})
    async with stack(folder, isolate=isolate, limits=Limits(memory=128 * MiB)) as s:
        response = await s.beside(lambda: s.get("mem.py"))
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "memory", body
    assert "MemoryError" in body["stderr"]


@isolations
async def test_cpu_spin(stack, services, isolate):
    need("python3")
    folder = services({"spin.py": "while True:\n    pass\n"})
    async with stack(folder, isolate=isolate, limits=Limits(cpu=1, timeout=10)) as s:
        response = await s.beside(lambda: s.get("spin.py"))
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "cpu", body
    assert body["signal"] == "SIGXCPU", body


@isolations
async def test_sleep_forever(stack, services, isolate):
    folder = services({"forever.sh": "sleep infinity\n"})
    async with stack(folder, isolate=isolate, limits=Limits(timeout=1)) as s:
        response = await s.beside(lambda: s.get("forever.sh"))
    assert response.status_code == 504
    body = response.json()
    assert body["error"] == "timeout"
    assert body["signal"] == "SIGKILL"


@isolations
async def test_sigterm_ignored_then_timeout(stack, services, isolate):
    folder = services({"stubborn.sh": "trap '' TERM\n(trap '' TERM; sleep 30) &\nsleep 30\nwait\n"})
    async with stack(folder, isolate=isolate, limits=Limits(timeout=1)) as s:
        response = await s.beside(lambda: s.get("stubborn.sh"))
    assert response.status_code == 504
    body = response.json()
    assert body["error"] == "timeout"
    assert body["signal"] == "SIGKILL"  # TERM was ignored; the launcher used KILL


@isolations
async def test_gigabyte_of_output_is_cut_at_the_limit(stack, services, isolate):
    need("python3")
    folder = services(
        {
            "flood.py": "import sys\nchunk = b'x' * (1 << 20)\n"
            "for _ in range(1024):\n    sys.stdout.buffer.write(chunk)\n"
        }
    )
    async with stack(folder, isolate=isolate, limits=Limits(output=100_000)) as s:
        cut = await s.beside(lambda: s.stream("flood.py"))
    assert cut.status == 200  # the body had started: the only way to fail is to abort it
    assert cut.aborted
    assert cut.body == b"x" * 100_000


@isolations
async def test_huge_file_in_the_call_directory(stack, services, isolate):
    # bash's builtin printf writes the file itself, so bash gets the SIGXFSZ.
    folder = services(
        {"big.sh": "s=$(printf '%*s' 65536 '')\nwhile :; do printf '%s' \"$s\"; done > big\n"}
    )
    async with stack(folder, isolate=isolate, limits=Limits(file_size=MiB)) as s:
        response = await s.beside(lambda: s.get("big.sh"))
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "file_size", body
    assert body["signal"] == "SIGXFSZ", body


@isolations
async def test_huge_file_from_python(stack, services, isolate):
    # CPython ignores SIGXFSZ: the write fails with EFBIG ("File too large")
    # and the script exits 1. The client should still be told "file_size".
    need("python3")
    folder = services(
        {"big.py": "with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * 65536)\n"}
    )
    async with stack(folder, isolate=isolate, limits=Limits(file_size=MiB)) as s:
        response = await s.beside(lambda: s.get("big.py"))
    assert response.status_code == 500
    body = response.json()
    assert "File too large" in body["stderr"]
    assert body["error"] == "file_size", body


# -- pipes -----------------------------------------------------------------------------


async def _post_then_read(url: str, path: str, body: bytes) -> tuple[int, bytes]:
    """POST ``body`` the way most clients do (httpx, requests, urllib): send all
    of it, then read the answer. Returns the status and the body.

    Raises:
        AssertionError: the server stopped reading the body for 2 s.
    """
    client = h11.Connection(h11.CLIENT)
    host, port = url.rsplit("/", 1)[1].split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        request = h11.Request(
            method="POST",
            target=path,
            headers=[("host", host), ("content-length", str(len(body)))],
        )
        data = client.send(request) + client.send(h11.Data(data=body))
        data += client.send(h11.EndOfMessage())
        with trio.move_on_after(2) as sending:  # 8 MiB over loopback take milliseconds
            await stream.send_all(data)
        assert not sending.cancelled_caught, (
            "the server stopped reading the request body: the answer never arrives"
        )
        status, answer = 0, b""
        with trio.fail_after(10):
            while True:
                event = client.next_event()
                if event is h11.NEED_DATA:
                    client.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    answer += event.data
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    return status, answer


async def test_stdin_never_read_with_a_big_body(stack, services):
    # The body is the script's stdin; a script that never reads it must still
    # be answered, even when the body is far larger than the pipe and socket
    # buffers. (Not isolation-specific: run without bwrap only.)
    folder = services({"deaf.sh": "sleep 0.3\necho answer\n"})
    async with stack(folder) as s:
        status, answer = await s.beside(
            lambda: _post_then_read(s.url, "/deaf.sh", b"x" * (8 * MiB))
        )
    assert (status, answer) == (200, b"answer\n")


@isolations
async def test_stdout_closed_early(stack, services, isolate):
    folder = services(
        {"early.sh": "echo early\nexec 1>&-\nsleep 0.3\necho 'still running' >&2\nexit 0\n"}
    )
    async with stack(folder, isolate=isolate) as s:
        response = await s.beside(lambda: s.get("early.sh"))
    assert response.status_code == 200
    assert response.text == "early\n"


@isolations
async def test_setsid_double_forked_daemons_die_with_the_call(stack, services, isolate):
    need("setsid")
    marker = f"117.{secrets.randbelow(10**6)}"
    folder = services(
        {
            "daemon.sh": (
                # detached from every pipe of the call
                f"( setsid sh -c 'sleep {marker}1 </dev/null >/dev/null 2>&1 &' & )\n"
                # still holding stdout, stderr and fd 3
                f"( setsid sh -c 'sleep {marker}2 &' & )\n"
                f"setsid sleep {marker}3 &\n"
                "disown -a\n"
                "echo started\n"
            )
        }
    )
    async with stack(folder, isolate=isolate) as s:
        response = await s.beside(lambda: s.get("daemon.sh"))
        # A complete answer means the whole tree has been reaped already.
        assert _processes_with(marker) == []
    assert response.status_code == 200
    assert response.text == "started\n"


@isolations
async def test_only_fds_0_to_3_are_inherited(stack, services, isolate):
    need("python3")
    folder = services(
        {
            "fds.py": (
                "import os\n"
                "names = sorted(os.listdir('/proc/self/fd'), key=int)\n"
                "for fd in names:\n"
                "    try:\n"
                "        print(fd, os.readlink(f'/proc/self/fd/{fd}'))\n"
                "    except OSError:\n"
                "        print(fd, 'closed')  # the directory fd listdir used\n"
            ),
            "fds.sh": "exec ls /proc/self/fd\n",
        }
    )
    async with stack(folder, isolate=isolate) as s:
        # Other calls run beside it, so the server holds their pipes and sockets meanwhile.
        response = await s.beside(lambda: s.get("fds.py"))
        listing = await s.get("fds.sh")
    assert response.status_code == 200
    lines = [line.split(" ", 1) for line in response.text.splitlines()]
    assert [fd for fd, _ in lines] == ["0", "1", "2", "3", "4"], response.text
    assert all(target.startswith("pipe:") for _, target in lines[:4]), response.text
    assert lines[4][1] == "closed", response.text
    # ls: 0-3 and the directory it reads.
    assert listing.text.split() == ["0", "1", "2", "3", "4"], listing.text


# -- the server and its host -------------------------------------------------------------


@isolations
async def test_killing_the_parent_and_the_server(stack, services, isolate):
    folder = services(
        {
            "killer.sh": (
                'kill -9 "$PPID"; echo "ppid rc=$?"\n'
                'kill -9 "$Hook_params_pid"; echo "server rc=$?"\n'
                'kill -9 -- "-$Hook_params_pid"; echo "server group rc=$?"\n'
                'pkill -9 -f pytest; echo "pkill rc=$?"\n'
                'kill -9 -1; echo "everything rc=$?"\n'
                "echo alive\n"
            )
        }
    )
    async with stack(folder, isolate=isolate) as s:
        response = await s.beside(lambda: s.get("killer.sh", params={"pid": os.getpid()}))
    assert response.status_code == 200
    # $PPID is pid 1 of the call's pid namespace: the launcher's reaper (root,
    # so EPERM) without bwrap; bwrap's own init with it, which the kernel
    # shields from signals sent from inside its namespace (so "succeeds").
    ppid_rc = 0 if isolate == "bwrap" else 1
    # The server's pid does not exist inside the call's pid namespace.
    assert response.text == (
        f"ppid rc={ppid_rc}\nserver rc=1\nserver group rc=1\npkill rc=1\neverything rc=1\nalive\n"
    )
    assert psutil.pid_exists(os.getpid())


@isolations
async def test_server_environment_is_out_of_reach(stack, services, isolate, monkeypatch):
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    monkeypatch.setenv("STACK_SECURITY_SECRET", secret)
    folder = services(
        {
            "snoop.sh": (
                "env\n"
                'cat "/proc/$Hook_params_pid/environ"; echo "environ rc=$?"\n'
                'for pid in /proc/[0-9]*; do cat "$pid/environ" 2>/dev/null; done\n'
                'if [ -d "/proc/$Hook_params_pid" ]; then echo "server pid visible"; '
                'else echo "server pid hidden"; fi\n'
            )
        }
    )
    async with stack(folder, isolate=isolate) as s:
        response = await s.beside(lambda: s.get("snoop.sh", params={"pid": os.getpid()}))
    assert response.status_code == 200
    assert secret not in response.text
    assert "STACK_SECURITY_SECRET" not in response.text
    assert "environ rc=1\n" in response.text
    # Without bwrap the call shares the host's /proc: it can see that the
    # server exists (and read its cmdline), not its environment.
    visible = "server pid hidden" if isolate == "bwrap" else "server pid visible"
    assert response.text.endswith(f"{visible}\n")


@isolations
async def test_etc_shadow(stack, services, isolate):
    folder = services({"shadow.sh": 'cat /etc/shadow; echo "rc=$?"\n'})
    async with stack(folder, isolate=isolate) as s:
        response = await s.beside(lambda: s.get("shadow.sh"))
    assert response.status_code == 200
    assert "root:" not in response.text
    # The call's uid may not read it: its mode keeps it out, with bwrap or
    # without (bwrap covers it with /dev/null only where the call could read it).
    assert response.text == "rc=1\n"


@isolations
async def test_reading_another_calls_files(stack, services, isolate):
    if isolate == "none" and not ROOT:
        pytest.skip("without root and bwrap every call runs as the server's own uid")
    folder = services(
        {
            "victim.sh": (
                'echo "$Hook_params_secret" > secret.txt\n'
                "chmod 644 secret.txt\n"
                'echo "$PWD/secret.txt"\n'
                "sleep 1\n"
                "cat secret.txt\n"
            ),
            "thief.sh": (
                'for f in "$Hook_params_view" "$Hook_params_host"; do\n'
                '  if cat "$f" 2>/dev/null; then echo "read $f"; else echo "failed $f"; fi\n'
                "done\n"
            ),
        }
    )
    secret = secrets.token_hex(8)
    async with stack(folder, isolate=isolate) as s:
        async with s.http.stream("GET", f"{s.url}/victim.sh", params={"secret": secret}) as victim:
            lines = victim.aiter_lines()
            view = await lines.__anext__()
            (host,) = list(s.calls.glob("*/secret.txt"))
            params = {"view": view, "host": str(host)}
            thief = await s.beside(lambda: s.get("thief.sh", params=params))
            rest = [line async for line in lines]
    assert thief.status_code == 200
    assert secret not in thief.text
    assert thief.text == f"failed {view}\nfailed {host}\n"
    assert victim.status_code == 200
    assert rest == [secret]


@isolations
async def test_writing_outside_the_call_directory(stack, services, isolate):
    tag = secrets.token_hex(6)
    folder = services(
        {
            "scribble.sh": (
                'for target in "/usr/pwned-$Hook_params_tag" "/etc/pwned-$Hook_params_tag" \\\n'
                '    "$SCRIPT_FILENAME" "$0" "$Hook_params_source" "$HOME/../pwned-$Hook_params_tag" \\\n'
                '    "/tmp/pwned-$Hook_params_tag" "/dev/shm/pwned-$Hook_params_tag"; do\n'
                '  if echo pwned 2>/dev/null >>"$target"; then echo "wrote $target"; '
                'else echo "denied $target"; fi\n'
                "done\n"
            )
        }
    )
    source = folder / "scribble.sh"
    original = source.read_bytes()
    leaks = [Path(f"/tmp/pwned-{tag}"), Path(f"/dev/shm/pwned-{tag}")]
    try:
        async with stack(folder, isolate=isolate) as s:
            staged = next((s.engine.base / "scripts").glob("code/scribble.sh"))
            response = await s.beside(
                lambda: s.get("scribble.sh", params={"tag": tag, "source": str(source)})
            )
            engine_dirs = (s.calls, s.engine.base)  # $HOME/.. is the first
            assert staged.read_bytes() == original
        assert response.status_code == 200
        results = dict(reversed(line.split(" ", 1)) for line in response.text.splitlines())
        assert results[f"/usr/pwned-{tag}"] == "denied"
        assert results[f"/etc/pwned-{tag}"] == "denied"
        assert set(results.values()) - {"denied", "wrote"} == set()
        assert source.read_bytes() == original
        outside = [os.path.join(d, f"pwned-{tag}") for d in ("/usr", "/etc", *engine_dirs)]
        assert _existing(*outside) == []
        wrote = sorted(path for path, result in results.items() if result == "wrote")
        if isolate == "bwrap":
            # /tmp (the call's own directory) and /dev/shm are the sandbox's
            # private scratch space; / (bwrap's tmpfs root, which $HOME/.. is)
            # is read-only, so every writable place has a size cap.
            private = [f"/dev/shm/pwned-{tag}", f"/tmp/pwned-{tag}"]
            assert wrote == private, response.text
        elif ROOT:
            # Only the host's /tmp and /dev/shm are writable to the call's uid.
            assert wrote == [f"/dev/shm/pwned-{tag}", f"/tmp/pwned-{tag}"], response.text
        if isolate == "bwrap" or ROOT:
            # bwrap: private (/tmp is the call's own directory, /dev/shm a fresh
            # tmpfs). none on a root server: the host's /tmp and /dev/shm are
            # shared while the call runs, and what its uid left there is
            # removed when it ends (see sandbox/core/leftovers.py).
            assert [p for p in leaks if p.exists()] == []
    finally:
        for path in leaks:
            path.unlink(missing_ok=True)


async def test_dev_holds_only_the_basic_devices(stack, services):
    folder = services(
        {
            "dev.sh": (
                "ls -A /dev | tr '\\n' ' '; echo\n"
                "echo x >/dev/null && echo null-writable\n"
                "test $(head -c 16 /dev/urandom | wc -c) = 16 && echo urandom-readable\n"
                "touch /dev/pwned 2>/dev/null && echo dev-writable || echo dev-read-only\n"
                "mknod /tmp/mem c 1 1 2>/dev/null && echo mknod-allowed || echo mknod-denied\n"
                "echo s >/dev/shm/f && echo shm-writable\n"
            )
        }
    )
    async with stack(folder, isolate="bwrap") as s:
        response = await s.get("dev.sh")
        prepared = s.engine.dev is not None
    assert response.status_code == 200, response.text
    listed, *rest = response.text.splitlines()
    basic = {"null", "zero", "full", "random", "urandom", "tty", "shm", "fd", "stdin", "stdout",
             "stderr", "core"}  # fmt: skip
    if prepared:  # the server's prepared folder: exactly these, no pseudo-terminals
        assert set(listed.split()) == basic
    else:  # bubblewrap's --dev: these and its devpts
        assert basic - {"core"} <= set(listed.split()) <= basic | {"pts", "ptmx"}
    assert rest == [
        "null-writable", "urandom-readable", "dev-read-only", "mknod-denied", "shm-writable"
    ]  # fmt: skip


@isolations
async def test_connecting_to_a_host_port(stack, services, isolate):
    folder = services(
        {
            "dial.sh": (
                'if exec 5<>"/dev/tcp/127.0.0.1/$Hook_params_port"; then\n'
                "  echo hello-from-the-sandbox >&5\n"
                "  echo connected\n"
                "else\n"
                "  echo refused\n"
                "fi\n"
            )
        }
    )
    received = bytearray()
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]

    async def accept() -> None:
        conn = await listener.accept()
        async with conn:
            while data := await conn.receive_some(4096):
                received.extend(data)

    async with listener, trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        async with stack(folder, isolate=isolate) as s:
            response = await s.beside(lambda: s.get("dial.sh", params={"port": port}))
        if isolate == "none":
            with trio.move_on_after(5):  # the line is sent before the script answers
                while b"\n" not in received:
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert response.status_code == 200
    if isolate == "bwrap":
        # A private network namespace: its 127.0.0.1 is not the host's.
        assert response.text == "refused\n"
        assert received == b""
    else:
        # Without bwrap there is no network isolation at all: the call
        # reaches every port of the host, loopback included.
        assert response.text == "connected\n"
        assert received == b"hello-from-the-sandbox\n"


@isolations
async def test_multipart_path_traversal(stack, services, isolate, tmp_path):
    need("python3")
    folder = services(
        {
            "up.py": (
                "import json, os\n"
                "out = {}\n"
                "for name, value in Hook['params'].items():\n"
                "    if isinstance(value, dict):\n"
                "        with open(value['path'], 'rb') as f:\n"
                "            data = f.read().decode()\n"
                "        out[name] = {'path': value['path'], 'real': os.path.realpath(value['path']),\n"
                "                     'data': data}\n"
                "print(json.dumps({'cwd': os.getcwd(), 'files': out}))\n"
            )
        }
    )
    tag = secrets.token_hex(6)
    victim = tmp_path / f"victim-{tag}"
    names = {
        "a": "../../../../../../tmp/evil-" + tag,
        "b": f"/etc/evil-{tag}",
        "c": "..",
        "d": ".",
        "e": "a/../../evil-e",
        "f": "..\\..\\evil-f",
        "g": ".stack",
        "h": "../" * 40 + str(victim).lstrip("/"),
        "i": "x" * 300,
        "j": "./../.././",
        "../k": f"../evil-k-{tag}",  # the field name does not place the file either
    }
    files = [
        (key, (filename, key.upper().encode(), "text/plain")) for key, filename in names.items()
    ]
    async with stack(folder, isolate=isolate) as s:
        response = await s.beside(lambda: s.post("up.py", files=files, data={"../field": "v"}))
    assert response.status_code == 200, response.text
    result = response.json()
    uploads = os.path.join(result["cwd"], "uploads")
    assert set(result["files"]) == set(names)
    for key, upload in result["files"].items():
        assert os.path.dirname(upload["real"]) == uploads, (names[key], upload)
        assert upload["data"] == key.upper()
        assert not upload["real"].endswith(("/.", "/..", "/.stack"))
    assert not victim.exists()
    assert _existing(f"/tmp/evil-{tag}", f"/etc/evil-{tag}") == []
