"""The README's shell examples, run as a reader would run them.

Every ``sh`` block of README.md is either run here or listed in SKIPPED with
the reason it cannot run on a test machine (a public network, a container
engine, another machine, minutes of benchmarks). A new block that is in
neither fails the test: decide how it is checked.

A block runs in a scratch folder holding the files its commands name
(``prog.py``, ``main.rs``...) and a link to the repository's ``examples``.
A line starting a server (``stack hello.py``, ``stack serve``) is started
on a free port and stopped at the next server line or at the end of the
block; the lines after it talk to that server (``localhost:3000`` becomes
its port). Every other line runs in bash with ``set -euo pipefail``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from .conftest import ROOT, bwrap_problem, have
from .helpers import stack_server

README = ROOT / "README.md"

SKIPPED = {
    "# hello.sh": "a script's content, not commands (served in the quick-start test)",
    "stack serve --config stack.yaml --gateway public": "needs the NATS servers of its "
    "config and websocat (tests/brokers/test_gateway.py covers the gateway)",
    "# machine A (10.0.0.5): the NATS server and a worker": "spans several machines "
    "(tests/brokers/test_workers.py runs workers against a real NATS server)",
    "sudo .venv/bin/stack untrusted/ --isolate bwrap --config stack.yaml": "a folder of "
    "the reader's own untrusted scripts, served as root",
    "podman build -t stack -f Containerfile .      # or docker build": "needs a container "
    "engine (tests/test_container.py builds the image when one is installed)",
    "hypercorn --worker-class trio --bind 127.0.0.1:8000 myapp:app": "the reader's own "
    "app module (tests/http/test_asgi.py hosts the app)",
    ".venv/bin/python -m benchmarks            # the full suite, about 10 minutes on 2 cores":
    "minutes long (tests/test_benchmarks.py runs a smoke run)",
    "python3 -m venv ~/stack-venv && ~/stack-venv/bin/pip install .   # from a checkout (a "
    "wheel)": "builds and installs a wheel (tests/test_wheel.py does)",
    "scripts/test.sh -k http -x     # a subset": "runs the test suite itself",
    "stack serve --config stack.yaml            # judge0: {broker: nats://10.0.0.5:4222}":
    "spans several machines and a NATS server (tests/http/test_judge0.py covers the workers)",
}

SKIPPED_LINES = {
    "stack worker --broker nats://127.0.0.1:4222": "needs a NATS server on port 4222",
    "stack serve --judge0-store redis://10.0.0.5:6379/0": "needs a Redis server at 10.0.0.5",
    "export EXO_ACTIONS='/srv/core-exo-actions/actions/*,/srv/mine'": "the reader's folders",
    "stack action                                                     # lists them": "the "
    "actions of the reader's EXO_ACTIONS folders",
}

SERVER_FOR = {
    # Blocks that talk to a server they do not start themselves.
    "curl -s localhost:3000/api/v2/runtimes": ["stack", "serve"],
    "curl -s localhost:3000/actions                                    # the list": [
        "stack", "serve", "--actions", "examples/actions"],
    "curl -s localhost:3000/languages": ["stack", "serve"],
}  # fmt: skip

EXPECTED = {
    # What a block's output must hold, as the README says it does.
    "cat > hello.py <<'EOF'": ["Hello, Bob!"],
    "mkdir -p my-actions/greet": ['"sentence": "Hello, Ann!"', "NAME", "greet"],
    "stack key create ci --scopes execute,actions --rate 10/s": [
        "key: sk_", "revoked 'deploy'", "deploy"],
    "$ stack languages": ["LANGUAGE", "python"],
    "stack exec prog.py arg1 arg2 < input.txt   # stdout/stderr as the program writes them; "
    "its exit code": ["in: some input args: ['arg1', 'arg2']", '"stdout": "rust 42\\n"'],
    "curl -s localhost:3000/api/v2/runtimes": ['"stdout": "HELLO\\n"'],
    "curl -s localhost:3000/languages": ['"Python (3.', '"description": "Accepted"'],
    "export EXO_ACTIONS='/srv/core-exo-actions/actions/*,/srv/mine'   # Exo's variable: commas, "
    "globs": ["Hello, Ann (happy)", "Yo, Ann (calm)"],
}  # fmt: skip

ONE_SHOT = {"exec", "languages", "action", "run", "request", "key", "worker"}

FIXTURES = {
    "hello.py": "name = Hook['params'].get('name', 'world')\nprint(f\"Hello, {name}!\")\n",
    "hello.js": "module.exports = function (hook) {\n"
    "  hook.res.end(`Hello, ${hook.params.name || 'world'}!\\n`);\n};\n",
    "hello.sh": 'echo "Hello, ${Hook_params_name:-world}!"\n',
    "hello.c": '#include <stdio.h>\nint main(void) { puts("Hello from C"); return 0; }\n',
    "tool": "print('a tool')\n",
    "legacy.cgi": '#!/usr/bin/perl\nprint "Status: 200 OK\\nContent-Type: text/plain\\n\\nlegacy\\n";\n',
    "prog.py": "import sys\nprint('in:', sys.stdin.read().strip(), 'args:', sys.argv[1:])\n",
    "input.txt": "some input\n",
    "main.c": '#include <stdio.h>\nint main(void) { puts("C main"); return 0; }\n',
    "main.rs": 'fn main() { println!("rust {}", 6 * 7); }\n',
    "prog.js": "console.log('from js');\n",
    "req.json": '{"action": "hello-python", "input": {"name": "Ann"}}\n',
    "name.json": '"Ann"\n',
    "langs/awk.yaml": "name: awk\nextensions: [.awk]\ninterpreter: awk\npackage: gawk\n"
    "version: ['{interpreter}', '--version']\nrun: ['{interpreter}', '-f', '{script}']\n",
    # Auth configured, as the README's "stack serve -h 0.0.0.0 --config stack.yaml" needs.
    "stack.yaml": "auth:\n  keys: [{name: ci, sha256: '" + "0" * 64 + "', scopes: [execute]}]\n",
}


def sh_blocks() -> list[str]:
    """The ``sh`` blocks of the README, in order."""
    return re.findall(r"^```sh\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def _title(block: str) -> str:
    return block.splitlines()[0]


def _commands(block: str) -> Iterator[str]:
    """Whole commands: continued lines joined, comment-only and output lines dropped."""
    pending = ""
    lines = block.splitlines()
    prompted = any(line.startswith("$ ") for line in lines)
    for line in lines:
        if prompted:
            if not line.startswith("$ "):
                continue  # the output the README shows
            line = line[2:]
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line + "\n"
        if pending.rstrip().endswith("\\") or _open_quote(pending) or _open_heredoc(pending):
            continue
        yield pending
        pending = ""
    if pending:
        yield pending


def _open_quote(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def _open_heredoc(text: str) -> bool:
    match = re.search(r"<<'?(\w+)'?", text)
    return bool(match) and not re.search(rf"^{match.group(1)}$", text, re.M)


def _server_args(command: str) -> list[str] | None:
    """The arguments of a command that starts a server, with a free port; else None."""
    if "<<" in command or "|" in command:
        return None
    words = shlex.split(command, comments=True)
    if not words or words[0] not in ("stack", ".venv/bin/stack"):
        return None
    if len(words) > 1 and words[1] in ONE_SHOT:
        return None
    args = words[1:]
    if "-p" in args:
        args[args.index("-p") + 1] = "0"
    else:
        args += ["-p", "0"]
    return args


def _scratch(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    for name, text in FIXTURES.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    wrapper = f'#!/bin/sh\nexec {sys.executable} -m sandbox "$@"\n'
    for folder in (tmp_path / "bin", tmp_path / ".venv" / "bin"):
        folder.mkdir(parents=True)
        (folder / "stack").write_text(wrapper)
        (folder / "stack").chmod(0o755)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path),
           "LANG": "C.UTF-8", "STACK_CACHE_DIR": str(tmp_path / ".cache"),
           "ADMIN_KEY": "sk_the_readers_own"}  # fmt: skip
    return tmp_path, env


def _run(script: str, cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    said = done.stdout + done.stderr
    assert done.returncode == 0, f"exit {done.returncode}:\n{script}\n{said}"
    return said


def test_every_block_is_run_or_left_out_with_a_reason():
    titles = [_title(block) for block in sh_blocks()]
    assert len(titles) > 15
    for title in SKIPPED:
        assert title in titles, f"SKIPPED names a block that is no longer there: {title!r}"
    for title in [*SERVER_FOR, *EXPECTED]:
        assert title in titles, f"a block that is no longer there: {title!r}"
    assert len([t for t in titles if t not in SKIPPED]) >= 14


@pytest.mark.parametrize(
    "block",
    [block for block in sh_blocks() if _title(block) not in SKIPPED],
    ids=lambda block: _title(block)[:40],
)
def test_readme_block(block: str, tmp_path: Path):
    title = _title(block)
    if "--isolate bwrap" in block and (problem := bwrap_problem()):
        pytest.skip(f"bubblewrap: {problem}")
    if "jq" in block and not have("jq"):
        pytest.skip("jq is not installed")
    cwd, env = _scratch(tmp_path)
    said = []
    with ExitStack() as servers:
        url = None
        segment = ""  # the commands since the last server line: one bash, sharing variables

        def flush() -> None:
            nonlocal segment
            if segment:
                if url is not None:
                    port = url.rsplit(":", 1)[1]
                    segment = re.sub(r"(localhost|127\.0\.0\.1):3000", f"127.0.0.1:{port}",
                                     segment)  # fmt: skip
                said.append(_run(segment, cwd, env))
            segment = ""

        if title in SERVER_FOR:
            args = _server_args(shlex.join(SERVER_FOR[title]))
            assert args is not None
            url, _ = servers.enter_context(stack_server(*args, cwd=cwd, env=env))
        for command in _commands(block):
            if any(command.startswith(line) for line in SKIPPED_LINES):
                continue
            args = _server_args(command)
            if args is not None:
                flush()
                servers.close()  # the previous server of the block, if any
                url, _ = servers.enter_context(stack_server(*args, cwd=cwd, env=env))
                continue
            segment += command
        flush()
    output = "".join(said)

    def compact(text: str) -> str:  # JSON with or without blanks after : and ,
        return text.replace(": ", ":").replace(", ", ",")

    for expected in EXPECTED.get(title, []):
        assert compact(expected) in compact(output), (
            f"{expected!r} not in the output of {title!r}:\n{output}"
        )


def test_tools_the_examples_rely_on_say_how_to_get_them():
    text = README.read_text(encoding="utf-8")
    assert "websocat" in text
    assert "cargo install websocat" in text
