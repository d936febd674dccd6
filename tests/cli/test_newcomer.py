"""What a new user meets: help, messages instead of tracebacks, units, paths.

Each test runs the real `stack` command as a subprocess, as a user types it.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import EXAMPLES, bwrap_problem
from ..helpers import STACK, free_port, stack_server

ACTIONS = EXAMPLES.parent / "actions"
COMMANDS = ("serve", "exec", "languages", "action", "run", "request", "worker", "key")


def stack(*args: str, input: str | None = None, timeout: float = 60,
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([*STACK, *args], capture_output=True, text=True, input=input,
                          timeout=timeout, cwd=cwd)  # fmt: skip


def test_help_lists_every_command_with_its_purpose():
    done = stack("--help")
    assert done.returncode == 0
    listed = {}
    for line in done.stdout.split("commands:\n", 1)[1].split("\n\n", 1)[0].splitlines():
        name, _, purpose = line.strip().partition(" ")
        listed[name] = purpose.strip()
    assert set(listed) == set(COMMANDS)
    assert all(len(purpose) > 20 for purpose in listed.values()), listed
    assert "--port" in done.stdout  # the options of `stack SCRIPT` follow
    for command in COMMANDS:
        sub = stack(command, "--help")
        assert sub.returncode == 0, (command, sub.stderr)
        assert f"usage: stack {command}" in sub.stdout


def test_help_shows_the_defaults():
    text = stack("--help").stdout
    for default in ("default 3000", "default 127.0.0.1", "default 10s", "default 512MiB",
                    "default 64)", "default 16)", "default text"):  # fmt: skip
        assert default in " ".join(text.split()), default


@pytest.mark.parametrize("args", [["-h"], ["hello.py", "-h"], ["serve", "-h"]])
def test_dash_h_is_the_host_and_points_to_help(args: list[str]):
    done = stack(*args)
    assert done.returncode == 2
    assert "-h is the address to listen on" in done.stderr
    assert "--help" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_out_of_range_is_a_message(tmp_path: Path, port: str):
    script = tmp_path / "hello.py"
    script.write_text("print('hi')\n")
    done = stack(str(script), "-p", port)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "-p/--port" in done.stderr


def test_a_closed_pipe_is_not_a_traceback():
    # `stack run ... | head -1`: the reader leaves after one line.
    command = " ".join([*STACK, "run", "hello-python", "--actions", str(ACTIONS),
                        "-i", "name=A", "--isolate", "none", "|", "head", "-1"])  # fmt: skip
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.stdout == "{\n"
    assert "Traceback" not in done.stderr
    assert "BrokenPipe" not in done.stderr
    assert done.stderr == ""


def test_server_only_flags_are_not_offered_where_they_mean_nothing(tmp_path: Path):
    script = tmp_path / "hello.py"
    script.write_text("print('hi')\n")
    for command in (["exec"], ["action", "--actions", str(ACTIONS)],
                    ["run", "hello-python", "--actions", str(ACTIONS)]):  # fmt: skip
        for flag in ("--body", "--warm", "--max-queue"):
            # (before the file: what follows `stack exec FILE` is the program's)
            done = stack(*command, flag, "5", *(["--", str(script)] if command == ["exec"] else []))
            assert done.returncode == 2
            assert f"unrecognized arguments: {flag}" in done.stderr
        assert "--body" not in stack(command[0], "--help").stdout


def test_warm_help_says_every_interpreted_language_pools():
    text = " ".join(stack("serve", "--help").stdout.split())
    assert "every interpreted language pools" in text


# Units --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["-t", "5"], "-t 5: a bare number is milliseconds"),
        (["--cpu", "5"], "--cpu 5: a bare number is milliseconds"),
        (["--memory", "5"], "--memory 5: a bare number is bytes; did you mean 5MiB?"),
        (["--memory", "500KiB"], "too little memory for any program to start"),
        (["--output", "5"], "--output 5: a bare number is bytes"),
    ],
)
def test_a_limit_without_its_unit_is_refused_with_a_suggestion(tmp_path: Path, flags, said):
    script = tmp_path / "hello.py"
    script.write_text("print('hi')\n")
    done = stack("exec", *flags, str(script))
    assert done.returncode == 2
    assert said in done.stderr
    assert done.stdout == ""


def test_time_flags_take_units_and_microcule_milliseconds(tmp_path: Path):
    script = tmp_path / "spin.py"
    script.write_text("import time\nprint('started', flush=True)\ntime.sleep(30)\n")
    for flags in (["-t", "1500"], ["-t", "1.5s"]):
        done = stack("exec", *flags, "--isolate", "none", str(script))
        assert done.stdout == "started\n"
        assert "wall-clock limit of 1.5 s" in done.stderr
    busy = tmp_path / "busy.py"
    busy.write_text("while True: pass\n")
    for flags in (["--cpu", "1000"], ["--cpu", "1s"]):
        done = stack("exec", *flags, "--isolate", "none", str(busy))
        assert "CPU time limit of 1 s" in done.stderr, done.stderr


def test_a_memory_limit_too_low_for_the_interpreter_says_so(tmp_path: Path):
    script = tmp_path / "hello.py"
    script.write_text("print('hi')\n")
    done = stack("exec", "--memory", "2MiB", "--isolate", "none", str(script))
    assert done.returncode != 0
    assert "memory limit of 2 MiB" in done.stderr, done.stderr
    assert "raise --memory" in done.stderr


# Paths --------------------------------------------------------------------


def test_exec_of_a_folder_says_it_is_a_folder(tmp_path: Path):
    done = stack("exec", str(tmp_path))
    assert done.returncode == 2
    assert f"{tmp_path} is a folder: stack exec runs one file" in done.stderr


# Logs ---------------------------------------------------------------------


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 30) -> list[str]:
    """Lines of ``proc``'s stderr up to the first holding ``needle``."""
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        assert line, f"stack ended before {needle!r}: {''.join(lines)}"
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"no {needle!r} in {timeout} s: {''.join(lines)}")


def test_failed_calls_are_logged_without_v_and_successes_are_not(tmp_path: Path):
    (tmp_path / "ok.py").write_text("print('fine')\n")
    (tmp_path / "fail.py").write_text("import sys\nsys.exit(3)\n")
    (tmp_path / "slow.sh").write_text("sleep 30\n")
    with stack_server(str(tmp_path), "-p", "0", "-t", "1s", "--isolate", "none") as (url, proc):
        assert httpx.get(url + "/ok.py", timeout=30).text == "fine\n"
        assert httpx.get(url + "/fail.py", timeout=30).status_code == 500
        assert httpx.get(url + "/slow.sh", timeout=30).status_code == 504
        lines = _read_until(proc, "GET /slow.sh 504")
    said = "".join(lines)
    assert "GET /fail.py 500 exit (the script exited with status 3) wall=" in said
    assert "GET /slow.sh 504 timeout (" in said
    assert "/ok.py" not in said
    assert "disconnected" not in said


def test_verbose_lines_carry_reason_cpu_and_memory(tmp_path: Path):
    (tmp_path / "hello.py").write_text("print('hi')\n")
    with stack_server(str(tmp_path / "hello.py"), "-p", "0", "-v", "--isolate", "none") as (
        url,
        proc,
    ):
        for _ in range(3):
            assert httpx.get(url, timeout=30).text == "hi\n"
        lines = [line for line in _read_until(proc, "GET / 200") if "GET /" in line]
        lines += [line for line in _read_until(proc, "GET / 200") if "GET /" in line]
    for line in lines:
        assert re.search(r"GET / 200 ok wall=[\d.]+ms cpu=[\d.]+ms mem=[\d.]+MiB", line), line
    assert "the client disconnected" not in "".join(lines)


def test_broker_warnings_follow_log_format_json_and_stack_log(tmp_path: Path):
    log_file = tmp_path / "stack.log"
    env = {**os.environ, "STACK_LOG": str(log_file)}
    broker = f"nats://127.0.0.1:{free_port()}"  # nothing listens there
    proc = subprocess.Popen([*STACK, "serve", "--gateway", broker, "-p", "0", "--log-format",
                             "json", "--isolate", "none"], stderr=subprocess.PIPE, text=True,
                            env=env)  # fmt: skip
    try:
        lines = _read_until(proc, "sandbox.brokers")
        for _ in range(100):  # the file's handler writes the same record just after
            if "sandbox.brokers" in log_file.read_text():
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.stderr is not None
        proc.stderr.close()
    warning = json.loads(lines[-1])
    assert warning["logger"] == "sandbox.brokers"
    assert warning["level"] == "warning"
    assert "NATS" in warning["message"]
    logged = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert any(entry["logger"] == "sandbox.brokers" for entry in logged)


@pytest.mark.skipif(shutil.which("nats-server") is None, reason="nats-server is not installed")
def test_a_broker_that_comes_back_is_logged_as_reconnected(tmp_path: Path):
    port = free_port()

    def nats() -> subprocess.Popen[bytes]:
        server = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        for _ in range(100):
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return server
            time.sleep(0.05)
        server.kill()
        raise AssertionError("nats-server did not start")

    first = nats()
    proc = subprocess.Popen([*STACK, "serve", "--gateway", f"nats://127.0.0.1:{port}", "-p",
                             "0", "--isolate", "none"], stderr=subprocess.PIPE, text=True)  # fmt: skip
    second = None
    try:
        _read_until(proc, " at http://")
        first.terminate()
        first.wait(timeout=10)
        _read_until(proc, "broker")
        second = nats()
        _read_until(proc, "reconnected", timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.stderr is not None
        proc.stderr.close()
        for server in (first, second):
            if server is not None and server.poll() is None:
                server.terminate()
                server.wait(timeout=10)


# Actions and tables -------------------------------------------------------


@pytest.fixture
def broken_actions(tmp_path: Path) -> Path:
    folder = tmp_path / "actions" / "a3"
    folder.mkdir(parents=True)
    (folder / "action.yaml").write_text("name: a3\nentry: main.py\ninput: {type: nonsense}\n")
    (folder / "main.py").write_text("print('{}')\n")
    return tmp_path / "actions"


def test_running_a_broken_action_says_why_it_did_not_load(broken_actions: Path):
    done = stack("run", "a3", "--actions", str(broken_actions))
    assert done.returncode == 1
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "action_not_loaded"
    assert "action 'a3' did not load:" in error["message"]
    assert "action.yaml (field 'input')" in error["message"]
    shown = stack("action", "a3", "--actions", str(broken_actions))
    assert shown.returncode == 1
    assert "action 'a3' did not load" in shown.stderr


def test_listing_only_broken_actions_fails(broken_actions: Path):
    done = stack("action", "--actions", str(broken_actions))
    assert done.returncode == 1
    assert "action not loaded" in done.stderr
    assert "1 action(s) did not load" in done.stderr


def test_action_list_is_a_table_with_a_header():
    done = stack("action", "--actions", str(ACTIONS))
    assert done.returncode == 0
    header, *rows = done.stdout.splitlines()
    assert header.split() == ["NAME", "LANGUAGE", "TAGS", "DESCRIPTION"]
    column = header.index("LANGUAGE")
    for row in rows:
        assert row[column - 2 : column] == "  "  # aligned under the header
        assert row[column] != " "
    assert any(row.startswith("hello-python ") for row in rows)


def test_languages_is_a_table_with_a_header():
    header, *rows = stack("languages").stdout.splitlines()
    assert header.split() == ["LANGUAGE", "EXTENSIONS", "VERSION", "INTERPRETER"]
    column = header.index("VERSION")
    python = next(row for row in rows if row.startswith("python "))
    assert python[column].isdigit()


# Keys and the rate limit --------------------------------------------------


def test_keys_are_created_listed_and_revoked(tmp_path: Path):
    keys = tmp_path / "keys.yaml"
    created = stack("key", "create", "ci", "--scopes", "execute,actions", "--keys", str(keys))
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith("key: sk_")
    assert stack("key", "create", "ops", "--scopes", "admin", "--keys", str(keys)).returncode == 0
    again = stack("key", "create", "ci", "--keys", str(keys))
    assert again.returncode == 2
    assert "already has a key named 'ci'" in again.stderr
    config = tmp_path / "stack.yaml"
    config.write_text(f"auth:\n  keys_file: {keys.name}\n")
    listed = stack("key", "list", "--config", str(config))
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "SCOPES", "RATE", "SHA256", "FILE"]
    assert [row.split()[:2] for row in rows] == [["ci", "execute,actions"], ["ops", "admin"]]
    revoked = stack("key", "revoke", "ci", "--keys", str(keys))
    assert revoked.returncode == 0
    assert "revoked 'ci'" in revoked.stdout
    after = json.loads(stack("key", "list", "--keys", str(keys), "--json").stdout)
    assert [entry["name"] for entry in after] == ["ops"]
    assert stack("key", "revoke", "ci", "--keys", str(keys)).returncode == 1


def test_the_rate_limit_body_and_header_agree(tmp_path: Path):
    (tmp_path / "hi.sh").write_text("echo hi\n")
    config = tmp_path / "stack.yaml"
    config.write_text("rate_limit: {per_address: 1/s}\n")
    with stack_server(str(tmp_path / "hi.sh"), "-p", "0", "--config", str(config),
                      "--isolate", "none") as (url, _):  # fmt: skip
        responses = [httpx.get(url, timeout=30) for _ in range(4)]
    limited = [r for r in responses if r.status_code == 429]
    assert limited
    for response in limited:
        retry = response.headers["retry-after"]
        assert f"retry in {retry} s" in response.json()["message"]


# Shutdown, workers, brokers -----------------------------------------------


def test_readyz_answers_503_while_draining_then_the_server_stops(tmp_path: Path):
    (tmp_path / "slow.sh").write_text("sleep 2\necho finished\n")
    with stack_server(str(tmp_path / "slow.sh"), "-p", "0", "--isolate", "none") as (url, proc):
        assert httpx.get(url + "/readyz", timeout=10).status_code == 200
        result: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda: result.update(r=httpx.get(url, timeout=30)))
        thread.start()
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = httpx.get(url + "/readyz", timeout=10)
        new = httpx.get(url, timeout=10)
        thread.join(30)
        proc.wait(timeout=30)
    assert ready.status_code == 503
    assert ready.headers["retry-after"] == "5"
    assert ready.json()["status"] == "draining"
    assert new.status_code == 503
    assert new.json()["error"] == "draining"
    assert result["r"].text == "finished\n"
    assert proc.returncode == 0


def test_serve_no_execute_with_nothing_to_serve_does_not_start():
    done = stack("serve", "--no-execute", "-p", "0")
    assert done.returncode == 2
    assert "--no-execute leaves nothing to serve" in done.stderr


def test_request_via_a_refusing_broker_fails_fast_and_says_it_once():
    started = time.monotonic()
    done = stack("request", "--via", f"nats://127.0.0.1:{free_port()}",
                 input='{"action": "hello-python", "input": {"name": "A"}}')  # fmt: skip
    assert time.monotonic() - started < 8
    assert done.returncode == 2
    assert done.stderr.count("Connect call failed") == 1, done.stderr
    assert "cannot connect to the NATS broker" in done.stderr


@pytest.mark.skipif(shutil.which("nats-server") is None, reason="nats-server is not installed")
def test_worker_grace_bounds_the_drain(tmp_path: Path):
    action = tmp_path / "actions" / "slow"
    action.mkdir(parents=True)
    (action / "action.yaml").write_text(
        "name: slow\nentry: main.py\ninput: {type: object}\noutput: {type: object}\n"
        "limits: {timeout: 60s}\n"
    )
    (action / "main.py").write_text("import time\ntime.sleep(50)\nprint('{}')\n")
    port = free_port()
    nats = subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    broker = f"nats://127.0.0.1:{port}"
    worker = subprocess.Popen([*STACK, "worker", "--broker", broker, "--actions",
                               str(tmp_path / "actions"), "--grace", "1s", "--isolate", "none"],
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        _read_until(worker, "stack: worker on")
        request = subprocess.Popen([*STACK, "request", "--via", broker, "--wait", "30s"],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)  # fmt: skip
        assert request.stdin is not None
        request.stdin.write('{"action": "slow", "input": {}}')
        request.stdin.close()
        time.sleep(2)  # the request is running in the worker
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        lines = _read_until(worker, "grace of 1 s is over")
        worker.wait(timeout=20)
        assert time.monotonic() - started < 10
        assert "SIGTERM" in "".join(lines)
        request.kill()
        request.wait()
        for stream in (request.stdout, request.stderr):
            assert stream is not None
            stream.close()
    finally:
        if worker.poll() is None:
            worker.kill()
        worker.wait()
        assert worker.stderr is not None
        worker.stderr.close()
        nats.terminate()
        nats.wait(timeout=10)


# Paths and builds ---------------------------------------------------------


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
def test_errors_name_the_users_file_not_its_sandbox_copy(tmp_path: Path, isolate: str):
    if isolate == "bwrap" and (problem := bwrap_problem()):
        pytest.skip(problem)
    (tmp_path / "syn.py").write_text("x = (\n")
    (tmp_path / "bad.c").write_text("int main( {\n")
    syntax = stack("exec", "--isolate", isolate, "syn.py", cwd=tmp_path)
    assert 'File "syn.py", line 1' in syntax.stderr
    compiled = stack("exec", "--isolate", isolate, "bad.c", cwd=tmp_path)
    assert compiled.returncode == 1
    assert "bad.c:1:" in compiled.stderr
    for text in (syntax.stderr, compiled.stderr):
        assert "/tmp/" not in text
        assert "stack-calls" not in text
        assert "/stack/script" not in text
    with stack_server(str(tmp_path), "-p", "0", "--isolate", isolate, "--debug") as (url, _):
        service = httpx.get(url + "/syn.py", timeout=30).json()
        build = httpx.get(url + "/bad.c", timeout=60).json()
    assert f'File "{tmp_path / "syn.py"}", line 1' in service["stderr"]
    assert f"{tmp_path / 'bad.c'}:1:" in build["output"]


def test_exec_keeps_builds_across_runs(tmp_path: Path, request: pytest.FixtureRequest):
    # A "compiler" that counts its runs: the second exec of the same file
    # must not compile again.
    registry = tmp_path / "registry"
    registry.mkdir()
    # A file the compile (as a sandbox uid when the tests run as root) may
    # append to; ours, so the call's clean-up of its uid's files leaves it.
    shared = Path(tempfile.mkdtemp(prefix="stack-test-counter-"))
    shared.chmod(0o755)
    counter = shared / "compiles"
    counter.touch(mode=0o666)
    counter.chmod(0o666)
    request.addfinalizer(lambda: shutil.rmtree(shared, ignore_errors=True))
    (registry / "counted.yaml").write_text(
        "name: counted\ninterpreter: sh\nextensions: [.counted]\n"
        f"compile: ['{{interpreter}}', '-c', 'echo x >> {counter}; "
        "cp \"$1\" \"$2/prog\"', 'sh', '{files}', '{build}']\n"
        "run: ['{interpreter}', '{build}/prog']\n"
    )
    (tmp_path / "hello.counted").write_text("echo counted hello\n")
    env = {**os.environ, "STACK_CACHE_DIR": str(tmp_path / "cache")}
    for _ in range(3):
        done = subprocess.run([*STACK, "exec", "--isolate", "none", "--registry", str(registry),
                               "hello.counted"], capture_output=True, text=True, cwd=tmp_path,
                              env=env, timeout=60)  # fmt: skip
        assert done.stdout == "counted hello\n", done.stderr
    assert counter.read_text() == "x\n"
    kept = tmp_path / "cache" / "builds"
    assert oct(kept.stat().st_mode & 0o777) == "0o700"
    assert len([p for p in kept.iterdir() if not p.name.startswith(".")]) == 1
    (tmp_path / "hello.counted").write_text("echo changed\n")
    done = subprocess.run([*STACK, "exec", "--isolate", "none", "--registry", str(registry),
                           "hello.counted"], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=60)  # fmt: skip
    assert done.stdout == "changed\n"
    assert counter.read_text() == "x\nx\n"


def test_a_long_compile_shows_progress_on_a_terminal(tmp_path: Path):
    source = tmp_path / "main.c"
    source.write_text('#include <stdio.h>\nint main(void){ puts("built"); }\n')
    env = {**os.environ, "STACK_CACHE_DIR": str(tmp_path / "cache")}
    parent, child = pty.openpty()
    try:
        done = subprocess.run([*STACK, "exec", "--isolate", "none", str(source)],
                              stdout=subprocess.PIPE, stderr=child, env=env, timeout=120)  # fmt: skip
        os.close(child)
        said = b""
        while True:
            try:
                chunk = os.read(parent, 4096)
            except OSError:
                break
            if not chunk:
                break
            said += chunk
    finally:
        os.close(parent)
    assert done.stdout == b"built\n"
    assert f"stack: compiling {source} (c)...".encode() in said
    assert f"stack: compiled {source} in ".encode() in said


# Node over its memory limit -----------------------------------------------


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_node_heap_follows_the_memory_limit_and_fails_fast(tmp_path: Path):
    heap = tmp_path / "heap.js"
    heap.write_text(
        'console.log(Math.round(require("v8").getHeapStatistics().heap_size_limit / 2 ** 20))\n'
    )
    done = stack("exec", "--isolate", "none", "--memory", "256MiB", str(heap))
    assert 256 <= int(done.stdout) < 400, done.stdout  # old space = the limit, + new space
    mine = stack("exec", "--isolate", "none", "--memory", "256MiB", "-e",
                 "NODE_OPTIONS=--max-old-space-size=100", str(heap))  # fmt: skip
    assert int(mine.stdout) < 200  # an operator's own setting stays
    hog = tmp_path / "hog.js"
    hog.write_text("const m = new Map(); let i = 0; for (;;) { m.set(i, {a: i, b: [i, i]}); i++; }\n")
    started = time.monotonic()
    done = stack("exec", "--isolate", "none", "--memory", "128MiB", "-t", "30s", str(hog))
    assert time.monotonic() - started < 20
    assert "ran out of its memory limit" in done.stderr.splitlines()[-1]


# Start-up -----------------------------------------------------------------


def test_help_loads_neither_the_engine_nor_the_server():
    code = (
        "import sys, contextlib, io\n"
        "from sandbox.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['--help']) == 0\n"
        "heavy = [m for m in ('trio', 'sandbox.core.engine', 'sandbox.app', 'hypercorn', 'httpx')\n"
        "         if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([STACK[0], "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout == "[]\n", done.stderr


def test_languages_asks_each_interpreter_its_version_once(tmp_path: Path):
    shared = Path(tempfile.mkdtemp(prefix="stack-test-probe-"))
    try:
        counter = shared / "asked"
        interpreter = shared / "fakelang"
        interpreter.write_text(f"#!/bin/sh\necho asked >> {counter}\necho 'fakelang 1.2.3'\n")
        interpreter.chmod(0o755)
        registry = tmp_path / "registry"
        registry.mkdir()
        (registry / "fakelang.yaml").write_text(
            f"name: fakelang\ninterpreter: {interpreter}\nextensions: [.fake]\n"
            "version: ['{interpreter}', '--version']\nrun: ['{interpreter}', '{script}']\n"
        )
        env = {**os.environ, "STACK_CACHE_DIR": str(tmp_path / "cache")}
        for _ in range(3):
            done = subprocess.run([*STACK, "languages", "--registry", str(registry)],
                                  capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
            line = next(row for row in done.stdout.splitlines() if row.startswith("fakelang"))
            assert "1.2.3" in line
        assert counter.read_text() == "asked\n"
        # A changed interpreter (an upgrade) is asked again.
        interpreter.write_text(f"#!/bin/sh\necho asked >> {counter}\necho 'fakelang 2.0.0'\n")
        done = subprocess.run([*STACK, "languages", "--registry", str(registry)],
                              capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
        assert "2.0.0" in done.stdout
        assert counter.read_text() == "asked\nasked\n"
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_deeply_nested_execute_request_is_a_400():
    deep = '{"language": "python", "files": ' + "[" * 100_000 + "]" * 100_000 + "}"
    with stack_server("serve", "-p", "0", "--isolate", "none") as (url, proc):
        response = httpx.post(url + "/api/v2/execute", content=deep, timeout=30)
        after = httpx.get(url + "/api/v2/runtimes", timeout=30)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["message"]
    assert after.status_code == 200
