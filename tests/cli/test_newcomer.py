"""What a new user meets: help, messages instead of tracebacks, units, paths.

Each test runs the real `stack` command as a subprocess, as a user types it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ..conftest import EXAMPLES
from ..helpers import STACK

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


def test_dash_h_is_the_host_and_points_to_help():
    done = stack("-h")
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
