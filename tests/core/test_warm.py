"""Warm pools: interpreters started ahead of their call, one call each, real processes."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import httpx
import psutil
import pytest
import trio

from sandbox.config import Config
from sandbox.core.engine import EngineConfig, open_engine
from sandbox.core.invocation import Invocation
from sandbox.core.limits import Limits
from sandbox.core.process import CollectIO
from sandbox.errors import ConfigError
from sandbox.features.services import load_sidecar

from ..conftest import need


async def _metric(client: httpx.AsyncClient, url: str, name: str,
                  language: str = "python") -> float:  # fmt: skip
    text = (await client.get(f"{url}/metrics")).text
    found = re.search(rf'^{name}{{language="{language}"}} ([0-9.]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def _until_ready(client: httpx.AsyncClient, url: str, size: int,
                       language: str = "python") -> None:  # fmt: skip
    with trio.fail_after(20):
        while await _metric(client, url, "stack_warm_pool_size", language) < size:
            await trio.sleep(0.05)


async def _post_three(client: httpx.AsyncClient, url: str) -> list[str]:
    """Three POSTs with a 70,000-byte body, 0.3 s apart (the pool refills)."""
    texts = []
    for _ in range(3):
        response = await client.post(
            f"{url}/?name=Ann", content=b"y" * 70_000, headers={"content-type": "text/plain"}
        )
        texts.append(response.text)
        await trio.sleep(0.3)
    return texts


LEAK = """\
import builtins, os, sys
print("before:", getattr(builtins, "leaked", None))
builtins.leaked = os.getpid()
sys.modules.setdefault("leak_marker", type(sys)("leak_marker"))
"""


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_a_warm_interpreter_serves_one_call_and_nothing_leaks(
    server, client, script, isolate
):
    path = script("leak.py", LEAK)
    async with server(path, isolate=isolate, warm={"*": 2}) as url:
        await _until_ready(client, url, 2)
        bodies = []
        for _ in range(4):
            response = await client.get(url)
            assert response.status_code == 200, response.text
            bodies.append(response.text)
            await trio.sleep(0.3)  # let the pool start the replacement
        hits = await _metric(client, url, "stack_warm_pool_hits_total")
    # Each call ran in a process of its own: the global the previous call set
    # is not there.
    assert bodies == ["before: None\n"] * 4
    assert hits == 4


async def test_the_call_gets_its_own_request_env_args_and_body(server, client, script):
    path = script(
        "echo.py",
        "import os, sys\n"
        "print(os.environ['REQUEST_METHOD'], os.environ['QUERY_STRING'], "
        "os.environ.get('STACK_WARM'), os.environ['GREETING'])\n"
        "print(Hook['params'])\n"
        "print(sys.argv[0].endswith('echo.py'), len(sys.argv))\n"
        "print(sys.stdin.read())\n",
    )
    async with server(path, warm={"python": 1}, env={"GREETING": "hi"}) as url:
        await _until_ready(client, url, 1)
        response = await client.post(
            f"{url}/?name=Bob", content=b"x" * 100_000, headers={"content-type": "text/plain"}
        )
        assert (await _metric(client, url, "stack_warm_pool_hits_total")) == 1
    lines = response.text.split("\n")
    assert lines[0] == "POST name=Bob None hi"
    assert lines[1] == "{'name': 'Bob'}"
    assert lines[2] == "True 1"
    assert lines[3] == "x" * 100_000


async def test_a_call_over_its_timeout_is_killed_from_the_hand_off(server, client, script):
    # The timeout counts from the call, not from when the interpreter started.
    path = script("slow.py", "import time\ntime.sleep(30)\n")
    async with server(path, warm={"*": 1}, limits=Limits(timeout=1.0)) as url:
        await _until_ready(client, url, 1)
        await trio.sleep(1.5)  # the waiting process is older than the timeout
        with trio.fail_after(15):
            response = await client.get(url)
    assert response.status_code == 504, response.text
    assert response.json()["error"] == "timeout"
    assert response.json()["usage"]["wall"] < 5


async def test_a_waiting_interpreter_killed_from_outside_is_replaced(server, client, script):
    path = script("hi.py", "print('hi')\n")
    async with server(path, warm={"*": 1}) as url:
        await _until_ready(client, url, 1)
        killed = [
            proc
            for proc in psutil.Process().children(recursive=True)
            if "python.py" in " ".join(proc.cmdline())
        ]
        for proc in killed:
            with contextlib.suppress(psutil.NoSuchProcess):  # gone with the one before it
                proc.kill()

        def alive(proc: psutil.Process) -> bool:
            try:
                return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False

        with trio.fail_after(10):  # dead (a zombie until the server reaps it)
            while any(alive(p) for p in killed):
                await trio.sleep(0.01)
        response = await client.get(url)
        assert response.text == "hi\n", response.text


async def test_watch_serves_the_new_script_after_a_change(server, client, script, tmp_path):
    path = script("v.py", "print('one')\n")
    async with server(path, warm={"*": 1}, watch=True, isolate="bwrap") as url:
        await _until_ready(client, url, 1)
        assert (await client.get(url)).text == "one\n"
        path.write_text("print('two')\n")
        import os

        os.utime(path, (1, 1))  # a new mtime even within the same clock tick
        assert (await client.get(url)).text == "two\n"


async def test_the_pool_shrinks_when_idle_and_logs_its_hit_rate(server, client, script, caplog):
    caplog.set_level(logging.INFO, logger="stack")
    path = script("hi.py", "print('hi')\n")
    async with server(path, warm={"*": 3}, warm_idle=0.5) as url:
        await _until_ready(client, url, 3)
        assert (await client.get(url)).text == "hi\n"
        with trio.fail_after(10):
            while await _metric(client, url, "stack_warm_pool_size") > 1:
                await trio.sleep(0.1)
        assert (await _metric(client, url, "stack_warm_pool_size")) == 1
    text = caplog.text
    assert "warm pool service:hi: keeping 3 python interpreter(s) ready" in text
    assert "idle for 0.5 s, shrinking to 1" in text
    assert re.search(r"warm pool service:hi: 1/3 python ready, 1 hits, 0 early, 0 misses", text)


async def test_a_call_with_other_limits_starts_cold_and_is_counted_a_miss(tmp_path: Path):
    async with open_engine(EngineConfig(isolate="none")) as engine:
        lang = engine.registry.get("python")
        script = engine.base / "scripts" / "hi.py"
        script.write_text("import sys\nprint('hi', sys.argv[1:])\n")
        script.chmod(0o644)
        pool = engine.add_pool("hi", Invocation(lang, script), 1, Limits(memory=256 * 1024**2))
        assert pool is not None
        with trio.fail_after(10):
            while pool.stats().ready < 1:
                await trio.sleep(0.02)
        async with engine.open_call(Limits(memory=128 * 1024**2), warm="hi") as call:
            io = CollectIO()
            outcome = await call.run(Invocation(lang, script), io)
        assert outcome.ok
        assert io.stdout == b"hi []\n"
        assert (pool.hits, pool.misses) == (0, 1)
        with trio.fail_after(10):
            while pool.stats().ready < 1:
                await trio.sleep(0.02)
        async with engine.open_call(Limits(memory=256 * 1024**2), warm="hi") as call:
            io = CollectIO()
            outcome = await call.run(Invocation(lang, script, args=["a", "b"]), io)
        assert outcome.ok
        assert io.stdout == b"hi ['a', 'b']\n"
        assert (pool.hits, pool.misses) == (1, 1)


STUB_ECHO = """\
echo "${0##*/} $# $REQUEST_METHOD $QUERY_STRING ${STACK_WARM-unset} $GREETING $Hook_params_name"
ls -A "$TMPDIR" | grep -v '^[.]stack$' | tr '\\n' ' '
touch "$TMPDIR/left-by-$$"
wc -c
"""


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_languages_without_a_warm_prelude_get_a_warm_sandbox(
    server, client, script, isolate
):
    # bash has no warm prelude: the launcher's stub waits in the sandbox, and
    # the call message names the whole program, which starts at the call.
    path = script("echo.sh", STUB_ECHO)
    async with server(path, isolate=isolate, warm={"*": 2}, env={"GREETING": "hi"}) as url:
        await _until_ready(client, url, 2, "bash")
        texts = await _post_three(client, url)
        hits = await _metric(client, url, "stack_warm_pool_hits_total", "bash")
    # The call's own environment only (no STACK_WARM), a fresh directory each
    # time (the previous call's file is not there), the whole body on stdin.
    assert texts == ["echo.sh 0 POST name=Ann unset hi Ann\n70000\n"] * 3
    assert hits == 3


async def test_compiled_languages_start_cold(server, client, script):
    need("cc")
    path = script("hi.c", '#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    async with server(path, warm={"*": 2}) as url:
        assert (await client.get(url)).text == "hi\n"
        assert "stack_warm_pool_size{" not in (await client.get(f"{url}/metrics")).text


def _stub(message: bytes) -> tuple[int, bytes, bytes, bytes]:
    """Run the launcher's exec stub with ``message`` on stdin: status, stdout, stderr, fd 3."""
    import os
    import subprocess

    from sandbox.core.launcher import launcher_path

    read3, write3 = os.pipe()
    try:
        proc = subprocess.run(
            [str(launcher_path()), "-X"],
            input=message,
            capture_output=True,
            env={"LEFT": "over"},
            pass_fds=(3,),  # the control channel, as the launcher leaves it
            preexec_fn=(lambda: os.dup2(write3, 3)) if write3 != 3 else None,
            timeout=10,
            check=False,
        )
    finally:
        os.close(write3)
        said = os.read(read3, 4096)
        os.close(read3)
    return proc.returncode, proc.stdout, proc.stderr, said


def _frame(fields: list[str]) -> bytes:
    body = b"".join(f.encode() + b"\0" for f in fields)
    return b"%08x" % len(body) + body


def test_the_exec_stub_runs_exactly_its_message_and_leaves_stdin_to_the_call():
    code = 'printf "[%s]" "$@"; echo " $A|${LEFT-none}|$(cat)"'
    message = _frame(["6", "/bin/sh", "-c", code, "sh", "two words", "", "A=b=c"])
    status, out, err, said = _stub(message + b"the body")
    assert (status, err) == (0, b""), err
    assert said == b'{"type":"ready"}\n'
    # Arguments as given (spaces, an empty one), only the message's
    # environment, and the bytes after the message on stdin.
    assert out == b"[two words][] b=c|none|the body\n"


@pytest.mark.parametrize(
    ("message", "status", "error"),
    [
        (b"", 0, b""),  # retired before any call: a quiet exit
        (b"0000", 0, b""),
        (b"zzzzzzzz", 125, b"bad call message"),
        (b"00000004abc\0", 125, b"bad call message"),  # not a count
        (_frame(["3", "/bin/true"]), 125, b"bad call message"),  # fewer arguments than counted
        (b"00000008" + b"1\0/bin/tr", 125, b"bad call message"),  # not NUL-terminated
        (_frame(["1", "/no/such/program"]), 127, b"cannot run /no/such/program"),
    ],
)
def test_the_exec_stub_rejects_a_bad_message(message, status, error):
    got, _, err, _ = _stub(message)
    assert got == status, err
    assert error in err


async def test_warm_languages_are_known_names_or_aliases():
    async with open_engine(EngineConfig(isolate="none", warm={"py": 2, "*": 1})) as engine:
        assert engine.config.warm == {"python": 2, "*": 1}
    with pytest.raises(ConfigError, match="warm: unknown language 'pyhton'"):
        async with open_engine(EngineConfig(isolate="none", warm={"pyhton": 2})):
            pass


def test_warm_settings_are_checked(tmp_path: Path):
    config = Config.from_mapping({"warm": {"python": 4}, "warm_idle": "2m"})
    assert config.engine.warm == {"python": 4}
    assert config.engine.warm_idle == 120.0
    assert config.engine.warm_size("python") == 4
    assert config.engine.warm_size("ruby") == 0
    assert Config.from_mapping({"warm": 2}).engine.warm_size("ruby") == 2
    with pytest.raises(ConfigError, match="warm"):
        Config.from_mapping({"warm": "lots"})
    with pytest.raises(ConfigError, match="warm"):
        Config.from_mapping({"warm": -1})
    script = tmp_path / "a.py"
    script.write_text("print(1)\n")
    (tmp_path / "a.py.stack.yaml").write_text("warm: many\n")
    with pytest.raises(ConfigError, match="'warm' must be a whole number"):
        load_sidecar(script)
    (tmp_path / "a.py.stack.yaml").write_text("warm: 3\n")
    assert load_sidecar(script)["warm"] == 3


async def test_node_warm_interpreters_get_their_call(server, client, script):
    need("node")
    path = script(
        "echo.js",
        "console.log(globalThis.leaked === undefined, process.env.REQUEST_METHOD, "
        "process.env.STACK_WARM, Hook.params.name, process.argv.length);\n"
        "globalThis.leaked = 1;\n"
        "let body = ''; process.stdin.on('data', (d) => { body += d; });\n"
        "process.stdin.on('end', () => console.log(body.length));\n",
    )
    async with server(path, warm={"javascript": 2}) as url:
        await _until_ready(client, url, 2, "javascript")
        texts = await _post_three(client, url)
        metrics = (await client.get(f"{url}/metrics")).text
    assert texts == ["true POST undefined Ann 2\n70000\n"] * 3
    assert 'stack_warm_pool_hits_total{language="javascript"} 3.0' in metrics


# A global whose finalizer takes 2 s: the interpreter's shutdown is slow.
SLOW_EXIT = (
    "import time\nclass Slow:\n    def __del__(self):\n        time.sleep(2)\n"
    "keep = Slow()\nprint('done')\n"
)


async def test_python_responds_before_its_interpreter_shuts_down(server, client, script):
    # The response does not wait for the slow shutdown.
    path = script("slowexit.py", SLOW_EXIT)
    async with server(path) as url:
        started = trio.current_time()
        response = await client.get(url)
        elapsed = trio.current_time() - started
    assert response.text == "done\n"
    assert elapsed < 1.5


@pytest.mark.parametrize(
    "code",
    [
        "import atexit\natexit.register(lambda: print('bye'))\nprint('hi')\n",
        "import threading, time\n"
        "threading.Thread(target=lambda: (time.sleep(0.3), print('bye'))).start()\n"
        "print('hi')\n",
    ],
    ids=["atexit", "thread"],
)
async def test_python_output_after_the_script_returns_is_kept(server, client, script, code):
    path = script("later.py", code)
    async with server(path) as url:
        response = await client.get(url)
    assert response.text == "hi\nbye\n"


async def test_an_early_end_sends_the_whole_response_with_its_length(server, client, script):
    # Ended by the prelude before the slow shutdown, the response goes out
    # in one piece with a Content-Length, not chunked.
    path = script("early.py", SLOW_EXIT)
    async with server(path) as url:
        response = await client.get(url)
    assert response.text == "done\n"
    assert "x-stack-usage" not in response.headers
    assert response.headers.get("content-length") == "5"
    assert "transfer-encoding" not in response.headers


async def test_node_responds_when_its_event_loop_is_empty(server, client, script):
    need("node")
    path = script("done.js", "console.log('done')\n")
    async with server(path) as url:
        responses = [await client.get(url) for _ in range(5)]
    assert [r.text for r in responses] == ["done\n"] * 5
    # Ended by the prelude before node's teardown (about 5 ms) was over: no
    # usage header then, as it is known only when the process has exited.
    assert any("x-stack-usage" not in r.headers for r in responses)


@pytest.mark.parametrize(
    "code",
    [
        "process.on('exit', () => { require('fs').writeSync(1, 'bye\\n') })\nconsole.log('hi')\n",
        "process.on('beforeExit', () => { if (!globalThis.once) { globalThis.once = 1; "
        "setTimeout(() => console.log('bye'), 200) } })\nconsole.log('hi')\n",
    ],
    ids=["exit-listener", "beforeExit-listener"],
)
async def test_node_output_after_its_event_loop_empties_is_kept(server, client, script, code):
    need("node")
    path = script("later.js", code)
    async with server(path) as url:
        response = await client.get(url)
    assert response.text == "hi\nbye\n"


async def test_node_exit_code_set_by_the_script_still_fails_the_call(server, client, script):
    need("node")
    path = script("code.js", "console.log('hi')\nprocess.exitCode = 3\n")
    async with server(path) as url:
        try:
            response: httpx.Response | None = await client.get(url)
        except httpx.RemoteProtocolError:
            response = None  # the body had started: the response is aborted
    # Not a complete 200: the prelude did not end the response early.
    assert response is None or response.status_code == 500, response.text


async def test_php_warm_interpreters_get_their_call(server, client, script):
    need("php")
    path = script(
        "echo.php",
        "<?php\n"
        "echo isset($GLOBALS['leak']) ? 'leak' : 'clean', ' ', getenv('REQUEST_METHOD'), ' ',\n"
        "  $_SERVER['REQUEST_METHOD'], ' ', var_export(getenv('STACK_WARM'), true), ' ',\n"
        "  $Hook['params']['name'], ' ', $argc, ' ', strlen(file_get_contents('php://stdin')), \"\\n\";\n"
        "$GLOBALS['leak'] = 1;\n",
    )
    async with server(path, warm={"php": 2}) as url:
        await _until_ready(client, url, 2, "php")
        texts = await _post_three(client, url)
        metrics = (await client.get(f"{url}/metrics")).text
    assert texts == ["clean POST POST false Ann 1 70000\n"] * 3
    assert 'stack_warm_pool_hits_total{language="php"} 3.0' in metrics


async def test_submitted_code_takes_a_warm_interpreter_of_its_language(client):
    from sandbox.app import open_app
    from sandbox.http.server import bind, serve

    config = EngineConfig(isolate="none", warm={"python": 1})
    async with open_app(None, config, execute=True) as app, trio.open_nursery() as nursery:
        url = await nursery.start(serve, app, bind("127.0.0.1", 0))
        with trio.fail_after(20):
            while not any(p.ready for p in app.engine.pool_stats()):
                await trio.sleep(0.05)
        job = {
            "language": "python",
            "version": "*",
            "files": [{"name": "solution.py", "content": "import sys\nprint(sys.argv[1:], input())"}],
            "args": ["a"],
            "stdin": "typed\n",
        }
        first = (await client.post(f"{url}/api/v2/execute", json=job)).json()
        with trio.fail_after(20):  # the replacement is waiting
            while not any(p.ready for p in app.engine.pool_stats()):
                await trio.sleep(0.05)
        custom = (await client.post(f"{url}/api/v2/execute", json={**job, "run_cpu_time": 2000})).json()
        stats = {p.key: p for p in app.engine.pool_stats()}["execute:python"]
        nursery.cancel_scope.cancel()
    assert first["run"]["stdout"] == "['a'] typed\n"
    assert custom["run"]["stdout"] == "['a'] typed\n"
    # The job with its own CPU limit could not use an interpreter started
    # under the default one: it started cold.
    assert (stats.hits, stats.misses) == (1, 1)
