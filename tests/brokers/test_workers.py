"""NATS workers as a user runs them: `stack worker` processes, `stack request --via`, a real nats-server."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import trio

from sandbox.brokers import open_broker
from sandbox.features.worker import decode, encode, request_via

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "actions"
STACK = [sys.executable, "-m", "sandbox"]


def write_counter_action(folder: Path) -> Path:
    """An action that answers with its input and the worker's pid, after a short pause."""
    action = folder / "whoami"
    action.mkdir(parents=True)
    (action / "main.py").write_text(
        "import json, os, sys, time\n"
        "data = json.load(sys.stdin)\n"
        "time.sleep(0.01)\n"
        "json.dump({'n': data['n'], 'worker': os.environ['WORKER']}, sys.stdout)\n"
    )
    (action / "action.yaml").write_text(
        "name: whoami\nentry: main.py\n"
        "input: {type: object, required: [n], properties: {n: {type: integer}}}\n"
        "output: {type: object, required: [n, worker]}\n"
    )
    return folder


async def start_worker(url: str, folder: Path, name: str) -> trio.Process:
    proc = await trio.lowlevel.open_process(
        [*STACK, "worker", "--broker", url, "--actions", str(folder), "--isolate", "none",
         "-e", f"WORKER={name}", "--max-running", "8"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    seen = b""
    with trio.fail_after(30):
        while b"stack: worker on" not in seen:
            chunk = await proc.stderr.receive_some(4096)
            assert chunk, f"worker {name} exited: {seen.decode(errors='replace')}"
            seen += chunk
    return proc


async def test_three_workers_share_500_requests_and_one_leaves_midway(nats_server, tmp_path):
    folder = write_counter_action(tmp_path / "actions")
    workers = {name: await start_worker(nats_server.url, folder, name)
               for name in ("w1", "w2", "w3")}  # fmt: skip
    answers: list[dict[str, object]] = []
    try:
        async with open_broker(nats_server.url) as broker:
            # Let every worker's queue subscription reach the server.
            await trio.sleep(0.5)
            sent = trio.Semaphore(16)

            async def one(n: int) -> None:
                async with sent:
                    response = await request_via(
                        broker, {"action": "whoami", "input": {"n": n}}, timeout=30
                    )
                answers.append(response)

            async with trio.open_nursery() as nursery:
                for n in range(500):
                    if n == 250:
                        workers["w2"].send_signal(signal.SIGTERM)
                    nursery.start_soon(one, n)
                    await trio.sleep(0.002)
        with trio.fail_after(30):
            await workers["w2"].wait()
        assert workers["w2"].returncode == 0
    finally:
        for proc in workers.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        with trio.move_on_after(30):
            for proc in workers.values():
                await proc.wait()
    assert all(a["status"] == "OK" for a in answers), [a for a in answers if a["status"] != "OK"][
        :3
    ]
    numbers = Counter(a["output"]["n"] for a in answers)  # type: ignore[index]
    assert sorted(numbers) == list(range(500))
    assert set(numbers.values()) == {1}  # each answered exactly once
    shares = Counter(a["output"]["worker"] for a in answers)  # type: ignore[index]
    assert set(shares) == {"w1", "w2", "w3"}  # each worker handled a share
    assert shares["w1"] + shares["w3"] > shares["w2"], shares  # w2 left midway


async def test_request_via_cli_and_gzip_json(nats_server, tmp_path):
    proc = await start_worker(nats_server.url, EXAMPLES, "solo")
    try:
        request = json.dumps({"action": "hello-bash", "input": {"name": "Wire"}})
        done = await trio.run_process(
            [*STACK, "request", "--via", nats_server.url], stdin=request.encode(),
            capture_stdout=True, capture_stderr=True, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"status": "OK", "output": {"sentence": "Hello, Wire!"}}
        async with open_broker(nats_server.url) as broker:
            raw = await broker.request("stack.requests", b"not json at all", timeout=10)
            plain = await broker.request(
                "stack.requests", json.dumps({"action": "nope"}).encode(), timeout=10
            )
        assert decode(raw.data)["error"]["code"] == "invalid_json"
        assert decode(plain.data)["error"]["code"] == "unknown_action"
        assert encode({"a": 1})[:2] == b"\x1f\x8b"
    finally:
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(20):
            await proc.wait()
    assert proc.returncode == 0
