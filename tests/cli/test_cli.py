"""The `stack` command as a user runs it: a real subprocess, real HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import bwrap_problem
from ..helpers import STACK, free_port, stack_server


def test_languages_lists_each_with_version_or_package():
    done = subprocess.run([*STACK, "languages"], capture_output=True, text=True, check=True)
    lines = {line.split()[0]: line for line in done.stdout.splitlines()}
    for name in ("bash", "sh", "javascript", "python", "php", "ruby", "lua", "perl", "tcl"):
        assert name in lines
    assert ".py" in lines["python"]
    assert any(ch.isdigit() for ch in lines["bash"])
    as_json = json.loads(
        subprocess.run([*STACK, "languages", "--json"], capture_output=True, text=True,
                       check=True).stdout  # fmt: skip
    )
    assert {row["name"] for row in as_json} >= {"bash", "python"}


def test_languages_says_what_to_install(tmp_path: Path):
    (tmp_path / "ghost.yaml").write_text(
        "name: ghost\ninterpreter: ghost-interp-xyz\npackage: ghost-pkg\n"
        "extensions: [.ghost]\nrun: ['{interpreter}', '{script}']\n"
    )
    done = subprocess.run(
        [*STACK, "languages", "--registry", str(tmp_path)], capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    line = next(line for line in done.stdout.splitlines() if line.startswith("ghost"))
    assert "missing" in line
    assert "apt-get install ghost-pkg" in line


def test_serves_a_script_with_port_host_and_verbose_log(tmp_path: Path):
    script = tmp_path / "hello.sh"
    script.write_text('echo "Hello, ${Hook_params_name:-world}!"\n')
    port = free_port()
    with stack_server(str(script), "-p", str(port), "-h", "127.0.0.1", "-v",
                      "--isolate", "none") as (url, proc):  # fmt: skip
        assert url == f"http://127.0.0.1:{port}"
        response = httpx.get(url + "/?name=Ann")
        assert response.text == "Hello, Ann!\n"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        assert proc.stderr is not None
        log = proc.stderr.read()
    assert proc.returncode == 0
    assert "GET / 200 ok wall=" in log
    assert "cpu=" in log
    assert "mem=" in log


def test_a_taken_port_given_with_p_is_an_error(tmp_path: Path):
    script = tmp_path / "hello.sh"
    script.write_text("echo hi\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([*STACK, str(script), "-p", str(port), "--isolate", "none"],
                              capture_output=True, text=True, timeout=30)  # fmt: skip
    assert done.returncode == 2
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_default_port_moves_to_the_next_free_one_and_says_so(tmp_path: Path):
    script = tmp_path / "hello.sh"
    script.write_text("echo hi\n")
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("127.0.0.1", 3000))
        except OSError:
            pytest.skip("port 3000 is in use here: cannot take it for the test")
        taken.listen()
        proc = subprocess.Popen([*STACK, str(script), "--isolate", "none"],
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            assert proc.stderr is not None
            lines = []
            while not lines or " at http://" not in lines[-1]:
                line = proc.stderr.readline()
                assert line, "".join(lines)
                lines.append(line)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=15)
            assert proc.stderr is not None
            proc.stderr.close()
    said = "".join(lines)
    assert "port 3000 is taken: using 300" in said
    assert "at http://127.0.0.1:300" in said


def test_timeout_flag_takes_milliseconds_and_units(tmp_path: Path):
    script = tmp_path / "slow.sh"
    script.write_text("sleep 20\n")
    for flag in ("300", "0.3s"):
        with stack_server(str(script), "-p", "0", "-t", flag, "--isolate", "none") as (url, _):
            started = time.monotonic()
            response = httpx.get(url, timeout=30)
            assert response.status_code == 504
            assert time.monotonic() - started < 5
            assert "0.3 s" in response.json()["message"]


def test_language_flag_overrides_detection(tmp_path: Path):
    script = tmp_path / "noext"
    script.write_text("print('from python')\n")
    with stack_server(str(script), "-p", "0", "-l", "python", "--isolate", "none") as (url, _):
        assert httpx.get(url).text == "from python\n"


def test_shebang_detection(tmp_path: Path):
    script = tmp_path / "tool"
    script.write_text("#!/usr/bin/env python3\nprint('shebang')\n")
    with stack_server(str(script), "-p", "0", "--isolate", "none") as (url, _):
        assert httpx.get(url).text == "shebang\n"


def test_unknown_extension_is_a_clear_error(tmp_path: Path):
    script = tmp_path / "thing.xyz"
    script.write_text("hello\n")
    done = subprocess.run([*STACK, str(script)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "cannot tell the language of 'thing.xyz'" in done.stderr
    assert ".py" in done.stderr
    assert "--language" in done.stderr


def test_missing_path_is_a_clear_error(tmp_path: Path):
    done = subprocess.run([*STACK, str(tmp_path / "nope.py")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "no such file or folder" in done.stderr


def test_extra_registry_adds_a_language_without_code(tmp_path: Path):
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "shout.yaml").write_text(
        "name: shout\ninterpreter: bash\nextensions: [.shout]\n"
        "run: ['{interpreter}', '-c', 'tr a-z A-Z < \"$0\"', '{script}']\n"
    )
    script = tmp_path / "msg.shout"
    script.write_text("quiet words\n")
    with stack_server(str(script), "-p", "0", "--registry", str(registry),
                      "--isolate", "none") as (url, _):  # fmt: skip
        assert httpx.get(url).text == "QUIET WORDS\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="calls run as another uid only under root")
@pytest.mark.parametrize("isolate", ["none", "bwrap"])
def test_a_prelude_in_a_private_folder_is_still_read(tmp_path: Path, isolate: str):
    # As when stack is installed in root's home: the call's uid cannot reach
    # the installed prelude, so the server runs a copy of its own.
    if isolate == "bwrap" and (problem := bwrap_problem()):
        pytest.skip(problem)
    private = tmp_path / "private"
    (private / "preludes").mkdir(parents=True)
    private.chmod(0o700)
    (private / "preludes" / "greet.sh").write_text('echo "prelude says hi"; . "$1"\n')
    (private / "greet.yaml").write_text(
        "name: greet\ninterpreter: bash\nextensions: [.greet]\nprelude: greet.sh\n"
        "run: ['{interpreter}', '{prelude}', '{script}']\n"
    )
    script = tmp_path / "msg.greet"
    script.write_text("echo script too\n")
    with stack_server(str(script), "-p", "0", "--registry", str(private),
                      "--isolate", isolate) as (url, _):  # fmt: skip
        assert httpx.get(url).text == "prelude says hi\nscript too\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="checks the uid drop, which needs root")
def test_sigterm_leaves_nothing_running(tmp_path: Path):
    script = tmp_path / "slow.sh"
    script.write_text("echo start\nsleep 30\n")
    with stack_server(str(script), "-p", "0", "--isolate", "none") as (url, proc):
        with httpx.stream("GET", url, timeout=30) as response:
            chunks = response.iter_raw()  # kept: a dropped iterator closes the connection
            assert next(chunks) == b"start\n"
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    assert proc.returncode == 0


def test_exec_runs_a_file_once_with_stdin_args_and_exit_code(tmp_path: Path):
    script = tmp_path / "prog.py"
    script.write_text(
        "import sys\nprint('in:', sys.stdin.read().strip(), 'args:', sys.argv[1:])\n"
        "print('to stderr', file=sys.stderr)\nsys.exit(5)\n"
    )
    done = subprocess.run([*STACK, "exec", str(script), "a", "b"], input="data",
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.stdout == "in: data args: ['a', 'b']\n"
    assert done.stderr == "to stderr\n"
    assert done.returncode == 5


def test_exec_compiles_and_prints_piston_json(tmp_path: Path):
    source = tmp_path / "main.c"
    source.write_text('#include <stdio.h>\nint main(int c, char **v){ printf("%s\\n", v[1]); }\n')
    done = subprocess.run([*STACK, "exec", "--json", str(source), "arg1"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["language"] == "c"
    assert result["compile"]["code"] == 0
    assert result["run"]["stdout"] == "arg1\n"
    assert result["run"]["status"] is None


def test_exec_reports_compile_errors_and_limits(tmp_path: Path):
    bad = tmp_path / "bad.c"
    bad.write_text("int main( {\n")
    done = subprocess.run([*STACK, "exec", str(bad)], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert "error" in done.stderr
    slow = tmp_path / "slow.sh"
    slow.write_text("sleep 30\n")
    done = subprocess.run([*STACK, "exec", "-t", "300", str(slow)], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 128 + 9  # killed (SIGKILL), as a shell reports it
    assert "wall-clock limit of 0.3 s" in done.stderr


def test_serve_runs_the_execute_api_and_services(tmp_path: Path):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "hi.sh").write_text("echo service\n")
    with stack_server("serve", "--services", str(tmp_path / "svc"), "-p", "0",
                      "--isolate", "none") as (url, _):  # fmt: skip
        runtimes = httpx.get(url + "/api/v2/runtimes").json()
        assert "python" in {r["language"] for r in runtimes}
        result = httpx.post(url + "/api/v2/execute", timeout=60, json={
            "language": "python", "files": [{"content": "print(6 * 7)"}]}).json()  # fmt: skip
        assert result["run"]["stdout"] == "42\n"
        assert httpx.get(url + "/hi").text == "service\n"


def test_a_non_root_server_refuses_isolate_none_on_a_public_address(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # As a non-root user every call would run as the server's own user.
    from sandbox.cli.main import main

    config = tmp_path / "stack.yaml"
    config.write_text(
        "auth:\n  keys:\n    - {name: a, sha256: '" + "0" * 64 + "', scopes: [execute]}\n"
    )
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    code = main(["serve", "-h", "0.0.0.0", "-p", "0", "--isolate", "none",
                 "--config", str(config)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to serve 0.0.0.0 with --isolate none as a non-root user" in err
