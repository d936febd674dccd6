"""The call contract over real HTTP against real interpreters."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import httpx
import psutil
import pytest
import trio

from sandbox.core.limits import Limits

from ..conftest import need


async def test_hello_and_request_id(server, client, script):
    path = script("hi.sh", 'echo "Hello, ${Hook_params_name:-world}!"\n')
    async with server(path) as url:
        response = await client.get(f"{url}/?name=Bob")
    assert response.status_code == 200
    assert response.text == "Hello, Bob!\n"
    assert len(response.headers["x-request-id"]) >= 8
    usage = response.headers["x-stack-usage"]
    for key in ("wall=", "cpu=", "memory="):
        assert key in usage


async def test_incoming_request_id_is_kept(server, client, script):
    path = script("hi.sh", "echo hi\n")
    async with server(path) as url:
        response = await client.get(url, headers={"X-Request-Id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"


async def test_stdout_streams_before_exit(server, script):
    path = script("slow.sh", "echo first\nsleep 2\necho second\n")
    async with server(path) as url, httpx.AsyncClient(timeout=30) as http:
        started = time.monotonic()
        async with http.stream("GET", url) as response:
            chunks = response.aiter_raw()
            first = await chunks.__anext__()
            first_at = time.monotonic() - started
            rest = b"".join([c async for c in chunks])
        total = time.monotonic() - started
    assert first == b"first\n"
    assert rest == b"second\n"
    assert first_at < 1.5 < total


async def test_body_streams_into_stdin_as_it_arrives(server, script):
    # The script answers each line as it reads it; the client sends the
    # second line only after it has read the answer to the first.
    path = script("echo.sh", 'while IFS= read -r line; do echo "got $line"; done\n')
    async with server(path) as url:
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n4\r\none\n\r\n"
            )
            received = b""
            with trio.fail_after(10):
                while b"got one" not in received:
                    received += await stream.receive_some(4096)
            assert b"got two" not in received
            await stream.send_all(b"4\r\ntwo\n\r\n0\r\n\r\n")
            with trio.fail_after(10):
                while b"got two" not in received:
                    received += await stream.receive_some(4096)
    assert received.startswith(b"HTTP/1.1 200")


async def test_stderr_stays_out_of_the_body(server, client, script, caplog):
    caplog.set_level(logging.INFO, logger="stack")
    path = script("err.sh", "echo secret-log >&2\necho body\n")
    async with server(path) as url:
        response = await client.get(url)
    assert response.text == "body\n"
    rid = response.headers["x-request-id"]
    assert any("secret-log" in r.getMessage() and rid in r.getMessage() for r in caplog.records)


async def test_environment_is_clean_plus_cgi(server, client, script, monkeypatch):
    monkeypatch.setenv("STACK_TEST_SECRET", "hunter2")
    path = script("env.sh", "env\n")
    async with server(path) as url:
        response = await client.post(
            f"{url}/a/b?x=1&y=2",
            content=b"raw",
            headers={"content-type": "application/octet-stream", "X-Custom": "v"},
        )
    env = dict(line.split("=", 1) for line in response.text.splitlines() if "=" in line)
    assert "hunter2" not in response.text
    assert "STACK_TEST_SECRET" not in env
    assert env["REQUEST_METHOD"] == "POST"
    assert env["QUERY_STRING"] == "x=1&y=2"
    assert env["PATH_INFO"] == "/a/b"
    assert env["CONTENT_TYPE"] == "application/octet-stream"
    assert env["CONTENT_LENGTH"] == "3"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["HOME"] == env["TMPDIR"]
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"


async def test_params_from_every_source(server, client, script):
    need("python3")
    path = script(
        "params.py",
        "import json\nprint(json.dumps(Hook['params'], sort_keys=True))\n",
    )
    async with server(path) as url:
        q = await client.get(f"{url}/?a=1&a=2&b=x")
        j = await client.post(f"{url}/?q=1", json={"name": "Bob", "n": 3})
        f = await client.post(url, data={"name": "Ann", "x": "y"})
        m = await client.post(
            url, data={"field": "v"}, files={"up": ("note.txt", b"hello", "text/plain")}
        )
    assert q.json() == {"a": ["1", "2"], "b": "x"}
    assert j.json() == {"name": "Bob", "n": 3, "q": "1"}
    assert f.json() == {"name": "Ann", "x": "y"}
    body = m.json()
    assert body["field"] == "v"
    assert body["up"]["filename"] == "note.txt"
    assert body["up"]["size"] == 5
    assert body["up"]["contentType"] == "text/plain"


async def test_uploaded_file_is_readable_and_traversal_is_contained(server, client, script, tmp_path):
    need("python3")
    path = script(
        "up.py",
        "import json, os\n"
        "up = Hook['params']['up']\n"
        "data = open(up['path'], 'rb').read().decode()\n"
        "inside = os.path.realpath(up['path']).startswith(os.path.realpath(os.getcwd()))\n"
        "print(json.dumps({'data': data, 'inside': inside, 'name': os.path.basename(up['path'])}))\n",
    )
    victim = tmp_path / "x"
    async with server(path) as url:
        response = await client.post(
            url, files={"up": ("../../../../../../" + str(victim), b"evil", "text/plain")}
        )
    body = response.json()
    assert body == {"data": "evil", "inside": True, "name": "x"}
    assert not victim.exists()


async def test_json_body_still_reaches_stdin(server, client, script):
    path = script("cat.sh", "cat\n")
    async with server(path) as url:
        response = await client.post(url, json={"a": 1})
    assert json.loads(response.text) == {"a": 1}


async def test_param_is_never_evaluated(server, client, script, tmp_path):
    pwned = tmp_path / "pwned"
    path = script("hi.sh", 'echo "Hello, $Hook_params_name"\n')
    async with server(path) as url:
        response = await client.get(url, params={"name": f"$(touch {pwned})`touch {pwned}`"})
        # Through bash's environment too: a function-looking value stays a string.
        shellshock = await client.get(url, params={"name": f"() {{ :; }}; touch {pwned}"})
    assert response.text == f"Hello, $(touch {pwned})`touch {pwned}`\n"
    assert shellshock.text == f"Hello, () {{ :; }}; touch {pwned}\n"
    assert not pwned.exists()


async def test_bash_gets_every_param_small_or_too_large_for_the_environment(
    server, client, script
):
    # Small requests reach bash through its environment, large ones (over
    # what an environment holds) through the flat file: the script sees the
    # same, and its children inherit neither.
    path = script(
        "sizes.sh",
        'echo "${#Hook_params_big} $Hook_params_name ${STACK_HOOK_ENV-unset}"\n'
        "bash -c 'echo \"${Hook_params_name-unset}\"'\n"
        # bash's own starting environment (awk's parent, by its pid in /proc).
        "pid=$(awk '{print $4}' /proc/self/stat)\n"
        "tr '\\0' '\\n' < /proc/$pid/environ | grep -c '^Hook_params_name=Ann$' || true\n",
    )
    async with server(path) as url:
        small = await client.post(url, json={"big": "x" * 100, "name": "Ann"})
        large = await client.post(url, json={"big": "y" * 200_000, "name": "Ann"})
    assert small.text == "100 Ann unset\nunset\n1\n"  # imported from the environment
    assert large.text == "200000 Ann unset\nunset\n0\n"  # read from the flat file


async def test_fd3_shapes_the_response(server, client, script):
    path = script(
        "ctl.sh",
        "echo '{\"type\":\"writeHead\",\"payload\":{\"code\":201,\"headers\":{\"X-A\":\"1\"}}}' >&3\n"
        "echo '{\"type\":\"setHeader\",\"payload\":{\"name\":\"Content-Type\",\"value\":\"application/json\"}}' >&3\n"
        "echo '{\"type\":\"setHeader\",\"payload\":{\"name\":\"X-Gone\",\"value\":\"1\"}}' >&3\n"
        "echo '{\"type\":\"removeHeader\",\"payload\":{\"name\":\"X-Gone\"}}' >&3\n"
        "echo '{\"ok\":true}'\n",
    )
    async with server(path) as url:
        for _ in range(5):  # deterministic: the same every time
            response = await client.get(url)
            assert response.status_code == 201
            assert response.headers["x-a"] == "1"
            assert response.headers["content-type"] == "application/json"
            assert "x-gone" not in response.headers
            assert response.json() == {"ok": True}


async def test_fd3_error_before_body_is_500(server, client, script):
    path = script("e.sh", "echo '{\"type\":\"error\",\"payload\":{\"error\":\"no can do\"}}' >&3\n")
    async with server(path) as url:
        response = await client.get(url)
    assert response.status_code == 500
    assert response.json()["error"] == "error"
    assert response.json()["message"] == "no can do"


async def test_cgi_mode(server, client, script):
    path = script(
        "c.sh", 'printf "Status: 201 Created\\r\\nContent-Type: text/csv\\r\\nX-B: 2\\r\\n\\r\\na,b\\n"\n'
    )
    async with server(path, cgi=True) as url:
        response = await client.get(url)
    assert response.status_code == 201
    assert response.headers["content-type"] == "text/csv"
    assert response.headers["x-b"] == "2"
    assert response.text == "a,b\n"


async def test_nonzero_exit_before_body_is_json_500(server, client, script):
    path = script("fail.sh", "echo oops >&2\nexit 3\n")
    async with server(path) as url:
        response = await client.get(url)
    assert response.status_code == 500
    body = response.json()
    assert body["error"] == "exit"
    assert body["exit_code"] == 3
    assert "status 3" in body["message"]
    assert body["stderr"] == "oops\n"  # debug mode
    assert body["request_id"] == response.headers["x-request-id"]


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_signal_before_body_names_the_signal(server, client, script, isolate):
    path = script("sig.sh", "kill -SEGV $$\n")
    async with server(path, isolate=isolate) as url:
        response = await client.get(url)
    assert response.status_code == 500
    assert response.json()["signal"] == "SIGSEGV"


async def test_timeout_is_504(server, client, script):
    path = script("hang.sh", "sleep 30\n")
    async with server(path, limits=Limits(timeout=0.5)) as url:
        started = time.monotonic()
        response = await client.get(url)
    assert time.monotonic() - started < 10
    assert response.status_code == 504
    assert response.json()["error"] == "timeout"


async def test_failure_after_body_started_aborts_the_stream(server, client, script, caplog):
    path = script("half.sh", "echo partial\nexit 4\n")
    async with server(path) as url:
        async with client.stream("GET", url) as response:
            assert response.status_code == 200
            with pytest.raises(httpx.RemoteProtocolError):
                await response.aread()
    assert any("status 4" in r.getMessage() for r in caplog.records)


async def test_end_message_completes_the_response_before_exit(server, client, script):
    path = script(
        "end.sh",
        "echo done\necho '{\"type\":\"end\"}' >&3\nexec >&- 2>&- 3>&-\nsleep 3\n",
    )
    async with server(path) as url:
        started = time.monotonic()
        response = await client.get(url)
        assert time.monotonic() - started < 2.5
    assert response.status_code == 200
    assert response.text == "done\n"


async def test_end_without_body_sends_the_head(server, client, script):
    path = script(
        "end.sh",
        "echo '{\"type\":\"statusCode\",\"payload\":{\"value\":204}}' >&3\n"
        "echo '{\"type\":\"end\"}' >&3\nsleep 3\n",
    )
    async with server(path) as url:
        started = time.monotonic()
        response = await client.get(url)
        assert time.monotonic() - started < 2.5
    assert response.status_code == 204


async def test_stderr_flood_is_not_logged_whole(server, client, script, caplog):
    caplog.set_level(logging.INFO, logger="stack")
    path = script("flood.sh", "head -c 3000000 /dev/zero | tr '\\0' 'x' | fold -w 100 >&2\necho ok\n")
    async with server(path) as url:
        response = await client.get(url)
    assert response.text == "ok\n"
    logged = [r.getMessage() for r in caplog.records if r.name == "stack.script"]
    assert sum(len(m) for m in logged) < 200_000
    assert any("more bytes not logged" in m for m in logged)


async def test_missing_interpreter_says_which_and_how(server, client, script, tmp_path):
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "nope.yaml").write_text(
        "name: nope\ninterpreter: nope-interpreter-xyz\npackage: nope-pkg\n"
        "extensions: [.nope]\nrun: ['{interpreter}', '{script}']\n"
    )
    from sandbox.app import open_app
    from sandbox.core.engine import EngineConfig
    from sandbox.features.services import ServiceOptions
    from sandbox.http.server import bind, serve

    path = script("x.nope", "whatever\n")
    config = EngineConfig(isolate="none", language_dirs=(registry,))
    async with open_app(path, config, ServiceOptions()) as app, trio.open_nursery() as nursery:
        url = await nursery.start(serve, app, bind("127.0.0.1", 0))
        response = await client.get(url)
        nursery.cancel_scope.cancel()
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "interpreter_missing"
    assert "nope-pkg" in body["message"]


def _sleepers(tag: str) -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "sleep" and p.info["cmdline"] == ["sleep", tag]
    ]  # fmt: skip


async def test_client_disconnect_kills_the_process(server, script):
    path = script("long.sh", "echo started\nsleep 61.5\n")
    async with server(path) as url:
        port = int(url.rsplit(":", 1)[1])
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            received = b""
            with trio.fail_after(10):
                while b"started" not in received:
                    received += await stream.receive_some(4096)
            assert len(_sleepers("61.5")) == 1
        # The client is gone: the process must be gone soon after.
        with trio.fail_after(5):
            while _sleepers("61.5"):
                await trio.sleep(0.05)


async def test_folder_serves_each_script_and_lists_them(server, client, tmp_path):
    folder = tmp_path / "svc"
    folder.mkdir()
    (folder / "a.sh").write_text("echo A $PATH_INFO\n")
    (folder / "b.sh").write_text("echo B $SCRIPT_NAME\n")
    async with server(folder) as url:
        index = await client.get(url + "/")
        a = await client.get(url + "/a/x/y")
        b = await client.get(url + "/b")
        missing = await client.get(url + "/zzz")
        by_file = await client.get(url + "/a.sh")
    assert {s["path"] for s in index.json()["services"]} == {"/a", "/b"}
    assert a.text == "A /x/y\n"
    assert b.text == "B /b\n"
    assert missing.status_code == 404
    assert "/a" in missing.json()["message"]
    assert by_file.text == "A\n"


async def test_watch_rereads_the_script(server, client, script):
    path = script("w.sh", "echo one\n")
    async with server(path, watch=True) as url:
        first = await client.get(url)
        await trio.sleep(0.05)
        path.write_text("echo two\n")
        os.utime(path, (time.time() + 5, time.time() + 5))
        second = await client.get(url)
    assert first.text == "one\n"
    assert second.text == "two\n"


async def test_body_over_the_limit_is_413(server, client, script):
    path = script("cat.sh", "cat\n")
    async with server(path, limits=Limits(body=1000)) as url:
        response = await client.post(url, content=b"x" * 5000)
        ok = await client.post(url, content=b"x" * 1000)
    assert response.status_code == 413
    assert response.json()["error"] == "body_too_large"
    assert ok.status_code == 200
    assert len(ok.content) == 1000


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_runs_as_unprivileged_user(server, client, script, isolate):
    path = script("id.sh", "id -u\n")
    async with server(path, isolate=isolate) as url:
        response = await client.get(url)
    if os.geteuid() == 0:
        assert int(response.text) >= 1000
    else:
        assert int(response.text) == os.geteuid()


def test_path_is_a_folder_or_script(tmp_path: Path):
    from sandbox.core.languages import Registry
    from sandbox.errors import ConfigError
    from sandbox.features.services import ServiceOptions, Services

    with pytest.raises(ConfigError, match="neither a script nor a folder"):
        Services.from_path(tmp_path / "nope", Registry.load(), tmp_path, ServiceOptions())


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_a_script_can_open_dev_stdin_stdout_and_stderr(server, client, script, isolate):
    """Scripts that re-open their stdio by name (Exo's handlers: `cat /dev/stdin`) work,
    though the call runs as another uid than the server that made the pipes."""
    path = script("io.sh", 'read -r line < /dev/stdin\necho "got $line" > /dev/stdout\n'
                           "echo logged > /dev/stderr\n")  # fmt: skip
    async with server(path, isolate=isolate) as url:
        response = await client.post(url, content=b"hello\n")
    assert response.status_code == 200, response.text
    assert response.text == "got hello\n"
