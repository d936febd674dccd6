"""Operations: health, readiness, Prometheus metrics, graceful shutdown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from sandbox.app import open_app
from sandbox.core.engine import DEFAULT_PATH, EngineConfig
from sandbox.http.server import bind, serve

from ..helpers import stack_server


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def test_healthz_goes_500_when_an_interpreter_disappears(tmp_path: Path, client):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy("/usr/bin/bash", bin_dir / "mybash")
    registry = tmp_path / "registry"
    registry.mkdir()
    (registry / "mybash.yaml").write_text(
        "name: mybash\ninterpreter: mybash\nextensions: [.mysh]\nrun: ['{interpreter}', '{script}']\n"
    )
    script = tmp_path / "hi.mysh"
    script.write_text("echo hi\n")
    config = EngineConfig(isolate="none", language_dirs=(registry,),
                          path=f"{bin_dir}:{DEFAULT_PATH}")  # fmt: skip
    # The sandbox uid must reach the interpreter: a world-readable folder.
    for folder in (tmp_path, *tmp_path.parents):
        if folder == Path("/tmp"):
            break
        folder.chmod(0o755)
    async with open_app(script, config) as app, trio.open_nursery() as nursery:
        url = await nursery.start(serve, app, bind("127.0.0.1", 0))
        healthy = await client.get(f"{url}/healthz")
        assert (await client.get(url)).text == "hi\n"
        (bin_dir / "mybash").unlink()
        sick = await client.get(f"{url}/healthz")
        ready = await client.get(f"{url}/readyz")
        app.health.draining = True
        draining = await client.get(f"{url}/readyz")
        nursery.cancel_scope.cancel()
    assert healthy.status_code == 200
    checks = healthy.json()["checks"]
    assert healthy.json()["status"] == "ok"
    assert checks["interpreter:mybash"]["ok"] is True
    assert checks["interpreter:python"]["ok"] is True
    assert checks["queue"]["ok"] is True
    assert "isolation" in checks
    assert sick.status_code == 500
    assert sick.json()["status"] == "fail"
    assert sick.json()["checks"]["interpreter:mybash"] == {
        "ok": False, "detail": f"{bin_dir / 'mybash'} is gone (was {checks['interpreter:mybash']['detail'].split()[0]} at start)",
    }  # fmt: skip
    assert ready.status_code == 200
    assert draining.status_code == 503
    assert draining.headers["retry-after"] == "5"


async def test_metrics_count_calls_by_door_language_and_outcome(server, client, script):
    path = script("m.sh", 'test "$Hook_params_fail" = 1 && exit 3\necho ok\n')
    async with server(path) as url:
        for _ in range(3):
            await client.get(url)
        await client.get(url, params={"fail": "1"})
        with trio.fail_after(5):  # the last call's slot is freed just after its response
            while True:
                found = samples((await client.get(f"{url}/metrics")).text)
                if found[("stack_running_calls", ())] == 0:
                    break
                await trio.sleep(0.05)
    ok = ("stack_calls_total", (("door", "service"), ("language", "bash"), ("outcome", "ok")))
    failed = ("stack_calls_total", (("door", "service"), ("language", "bash"), ("outcome", "exit")))
    assert found[ok] == 3
    assert found[failed] == 1
    count = ("stack_call_duration_seconds_count", (("door", "service"), ("language", "bash")))
    assert found[count] == 4
    assert found[("stack_spawn_latency_seconds_count", ())] == 4
    assert found[("stack_running_calls", ())] == 0
    assert found[("stack_bytes_out_total", ())] >= 9


def test_sigterm_lets_calls_in_flight_finish(tmp_path: Path):
    script = tmp_path / "slow.sh"
    script.write_text("sleep 1\necho finished\n")
    with stack_server(str(script), "-p", "0", "--isolate", "none") as (url, proc):
        result: dict[str, httpx.Response] = {}
        thread = threading.Thread(target=lambda: result.update(r=httpx.get(url, timeout=30)))
        thread.start()
        time.sleep(0.4)
        proc.send_signal(signal.SIGTERM)
        thread.join(30)
        proc.wait(timeout=30)
    assert result["r"].status_code == 200
    assert result["r"].text == "finished\n"
    assert proc.returncode == 0


def test_second_sigterm_stops_at_once(tmp_path: Path):
    script = tmp_path / "slow.sh"
    script.write_text("echo started\nsleep 60\n")
    with stack_server(str(script), "-p", "0", "--isolate", "none", "--grace", "60s") as (url, proc):
        with httpx.stream("GET", url, timeout=30) as response:
            chunks = response.iter_raw()  # kept: a dropped iterator closes the connection
            assert next(chunks) == b"started\n"
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None  # still draining
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
    assert time.monotonic() - started < 15
    leftover = subprocess.run(["pgrep", "-f", "sleep 60"], capture_output=True, text=True)
    assert leftover.stdout == ""


def test_json_logs_carry_the_call_fields(tmp_path: Path):
    script = tmp_path / "hi.sh"
    script.write_text('echo "hi $Hook_params_name"\necho to-the-log >&2\n')
    log_file = tmp_path / "stack.log"
    env_before = dict(os.environ)
    os.environ["STACK_LOG"] = str(log_file)
    try:
        with stack_server(str(script), "-p", "0", "--isolate", "none", "--log-format", "json",
                          "-v") as (url, _):  # fmt: skip
            assert (
                httpx.get(url, params={"name": "x"}, headers={"X-Request-Id": "req-1"}).text
                == "hi x\n"
            )
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    access = next(line for line in lines if line["logger"] == "stack.access")
    assert access["request_id"] == "req-1"
    assert access["door"] == "service"
    assert access["language"] == "bash"
    assert access["status"] == 200
    assert access["reason"] == "ok"
    assert access["client"] == "127.0.0.1"
    assert set(access["usage"]) == {"wall", "cpu", "memory", "bytes_in", "bytes_out"}
    stderr_line = next(line for line in lines if line["logger"] == "stack.script")
    assert stderr_line["message"] == "[req-1] to-the-log"
