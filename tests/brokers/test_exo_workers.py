"""Exo-format actions behind `stack worker` on a real nats-server, asked as Exo's clients ask:
gzipped JSON requests on Exo's subject `exo:request`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from sandbox.brokers import open_broker
from sandbox.features.worker import request_via

from ..features.test_exo import SECRET, write_exo_actions

ROOT = Path(__file__).resolve().parents[2]
STACK = [sys.executable, "-m", "sandbox"]


async def start_exo_worker(url: str, env: dict[str, str]) -> trio.Process:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "EXO"))}
    proc = await trio.lowlevel.open_process(
        [*STACK, "worker", "--broker", url, "--subject", "exo:request", "-e", "EXO__*"],
        stderr=subprocess.PIPE, env={**clean, "PYTHONPATH": str(ROOT), **env},
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    with trio.fail_after(30):
        while b"stack: worker on" not in seen:
            chunk = await proc.stderr.receive_some(4096)
            assert chunk, f"worker exited: {seen.decode(errors='replace')}"
            seen += chunk
    assert b"9 actions" in seen, seen
    return proc


async def test_exo_actions_answer_over_nats(nats_server, tmp_path):
    library = write_exo_actions(tmp_path / "library" / "actions")
    env = {"EXO_ACTIONS": f"{library}/*", "EXO__EXAMPLE__COLOR": "blue",
           "EXO__VARIABLE__TOKEN": SECRET}  # fmt: skip
    proc = await start_exo_worker(nats_server.url, env)
    try:
        async with open_broker(nats_server.url) as broker:
            await trio.sleep(0.3)  # the worker's subscription reaches the server

            async def ask(request: dict[str, object]) -> dict[str, object]:
                answer = await request_via(broker, request, subject="exo:request", timeout=30)
                assert isinstance(answer, dict)
                return answer

            bash = await ask({"action": "hello-bash", "input": {"name": "Ann"}})
            php = await ask({"action": "hello-php", "input": {"name": "Pia"}})
            node = await ask({"action": "hello-node", "input": {"name": "Bo", "greeting": "Yo"},
                              "id": "n-1", "reply-to": "exo:response"})  # fmt: skip
            dice = await ask({"action": "random-number", "input": {"min": "4", "max": "4"},
                              "mapping": {"result": "surprise"}})  # fmt: skip
            invalid = await ask({"action": "hello-node", "input": {"name": "Ann",
                                                                  "greeting": "Howdy"}})  # fmt: skip
            refused = await ask({"action": "refuses", "input": {"token": "{{TOKEN}}"}})
        done = await trio.run_process(
            [*STACK, "request", "--via", nats_server.url, "--subject", "exo:request"],
            stdin=json.dumps({"action": "hello-bash", "input": {"name": "Cli"}}).encode(),
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await proc.wait()
    assert bash == {"status": "OK", "output": {"text": "Hello, Ann (blue)"}}
    assert php == {"status": "OK", "output": {"text": "Hello, Pia (blue)"}}
    assert node == {"status": "OK", "output": {"text": "Yo, Bo (blue)"}, "id": "n-1"}
    assert dice == {"status": "OK", "output": {"surprise": 4}}
    assert invalid["status"] == "ERROR"
    assert invalid["error"]["stage"] == "input"  # type: ignore[index]
    assert invalid["error"]["path"] == "/greeting"  # type: ignore[index]
    assert refused["status"] == "ERROR"
    assert refused["error"]["code"] == "action_error"  # type: ignore[index]
    assert SECRET not in json.dumps(refused)
    assert refused["error"]["details"]["stderr"] == "login failed for ***\n"  # type: ignore[index]
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "OK", "output": {"text": "Hello, Cli (blue)"}}
    assert proc.returncode == 0
