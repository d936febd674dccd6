"""Submitted code: Piston's v2 API over real HTTP and WebSocket, real compilers."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sandbox.app import open_app
from sandbox.core.engine import EngineConfig
from sandbox.core.limits import Limits
from sandbox.http.server import bind, serve

from ..conftest import need, need_bwrap
from ..wsclient import Closed, connect


@asynccontextmanager
async def api(isolate: str = "none", limits: Limits | None = None,
              output: int | None = None) -> AsyncIterator[str]:  # fmt: skip
    """A real `stack serve` (execute API only) on a free port; yields its URL."""
    if isolate == "bwrap":
        need_bwrap()
    config = EngineConfig(isolate=isolate, limits=limits or Limits())
    kept = {} if output is None else {"execute_output": output}
    async with open_app(None, config, execute=True, **kept) as app:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, app, bind("127.0.0.1", 0))
            try:
                yield url
            finally:
                nursery.cancel_scope.cancel()


async def run(http: httpx.AsyncClient, url: str, **body: Any) -> httpx.Response:
    return await http.post(f"{url}/api/v2/execute", json=body, timeout=120)


def src(code: str, name: str | None = None, encoding: str | None = None) -> list[dict[str, str]]:
    file = {"content": code}
    if name:
        file["name"] = name
    if encoding:
        file["encoding"] = encoding
    return [file]


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_python_runs_with_stdin_args_and_interleaved_output(client, isolate):
    # Two pipes: order across them is seen at the granularity of reads, so
    # the writes are a little apart.
    code = (
        "import sys, time\n"
        "print('out1', flush=True)\n"
        "time.sleep(0.1)\n"
        "print('err1', file=sys.stderr, flush=True)\n"
        "time.sleep(0.1)\n"
        "print('in=' + sys.stdin.read().strip(), 'args=' + ','.join(sys.argv[1:]), flush=True)\n"
    )
    async with api(isolate) as url:
        response = await run(client, url, language="python", version="*", files=src(code),
                             stdin="hello", args=["a", "b c"])  # fmt: skip
    assert response.status_code == 200
    body = response.json()
    assert body["language"] == "python"
    assert body["version"].count(".") == 2
    result = body["run"]
    assert result["stdout"] == "out1\nin=hello args=a,b c\n"
    assert result["stderr"] == "err1\n"
    assert result["output"] == "out1\nerr1\nin=hello args=a,b c\n"
    assert (result["code"], result["signal"], result["status"]) == (0, None, None)
    assert result["wall_time"] >= result["cpu_time"] >= 0
    assert result["memory"] > 1024 * 1024
    assert "compile" not in body


async def test_runtimes_lists_installed_languages_with_versions(client):
    async with api() as url:
        runtimes = (await client.get(f"{url}/api/v2/runtimes")).json()
    by_name = {r["language"]: r for r in runtimes}
    for name in ("python", "javascript", "bash", "c", "rust"):
        assert name in by_name
        assert by_name[name]["version"].count(".") == 2
        assert isinstance(by_name[name]["aliases"], list)
    assert by_name["javascript"]["runtime"] == "node"
    assert "py" in by_name["python"]["aliases"]


async def test_language_alias_and_version_selectors(client):
    async with api() as url:
        runtimes = (await client.get(f"{url}/api/v2/runtimes")).json()
        version = next(r["version"] for r in runtimes if r["language"] == "python")
        major = version.split(".")[0]
        for selector in ("*", version, f"{major}.x", f">={major}", major):
            response = await run(client, url, language="py", version=selector,
                                 files=src("print(2)"))  # fmt: skip
            assert response.json()["run"]["stdout"] == "2\n", selector
        missing = await run(client, url, language="python", version="1.0.0", files=src("1"))
    assert missing.status_code == 400
    message = missing.json()["message"]
    assert "python-1.0.0 runtime is unknown" in message
    assert f"python-{version}" in message


async def test_bad_requests_are_400_naming_the_problem(client):
    async with api() as url:
        not_json = await client.post(f"{url}/api/v2/execute", content=b"{nope")
        unknown = await run(client, url, language="cobol", files=src("x"))
        no_files = await run(client, url, language="python", files=[])
        bad_content = await run(client, url, language="python", files=[{"content": 3}])
        escape = await run(client, url, language="python",
                           files=src("print(1)", name="../../etc/x.py"))  # fmt: skip
        absolute = await run(client, url, language="python", files=src("1", name="/tmp/x.py"))
        bad_b64 = await run(client, url, language="python", files=src("@@@", encoding="base64"))
        bad_args = await run(client, url, language="python", files=src("1"), args="x")
        wrong_route = await client.get(f"{url}/api/v2/nothing")
    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.json()["message"]
    assert unknown.status_code == 400
    assert "cobol-* runtime is unknown" in unknown.json()["message"]
    assert "python-" in unknown.json()["message"]
    assert no_files.status_code == 400
    assert "files" in no_files.json()["message"]
    assert bad_content.json()["message"] == "files[0].content is required as a string"
    assert escape.status_code == 400
    assert "outside the job directory" in escape.json()["message"]
    assert absolute.status_code == 400
    assert "base64" in bad_b64.json()["message"]
    assert bad_args.json()["message"] == "args must be an array of strings"
    assert wrong_route.status_code == 404
    assert wrong_route.json()["message"] == "Not Found"


async def test_json_body_accepted_whatever_the_content_type(client):
    body = json.dumps({"language": "bash", "files": src("echo plain")})
    async with api() as url:
        response = await client.post(f"{url}/api/v2/execute", content=body,
                                     headers={"content-type": "text/plain"})  # fmt: skip
    assert response.status_code == 200
    assert response.json()["run"]["stdout"] == "plain\n"


async def test_encodings_and_several_files(client):
    helper = "def shout(s):\n    return s.upper()\n"
    main = "from helper import shout\nprint(shout(open('data.bin','rb').read().hex()))\n"
    files = [
        {"name": "main.py", "content": base64.b64encode(main.encode()).decode(),
         "encoding": "base64"},
        {"name": "helper.py", "content": helper},
        {"name": "data.bin", "content": "00ff10", "encoding": "hex"},
    ]  # fmt: skip
    async with api() as url:
        response = await run(client, url, language="python", files=files)
    assert response.json()["run"]["stdout"] == "00FF10\n"


async def test_limits_above_the_maximum_are_400_naming_the_limit(client):
    async with api() as url:
        too_long = await run(client, url, language="bash", files=src("true"),
                             run_timeout=10_000_000)  # fmt: skip
        too_big = await run(client, url, language="bash", files=src("true"),
                            run_memory_limit=10**15)  # fmt: skip
        negative = await run(client, url, language="bash", files=src("true"), run_timeout=-5)
        not_number = await run(client, url, language="bash", files=src("true"),
                               run_cpu_time="fast")  # fmt: skip
        server_max = await run(client, url, language="bash", files=src("echo ok"),
                               run_memory_limit=-1)  # fmt: skip
    assert too_long.status_code == 400
    assert too_long.json()["message"] == "run_timeout cannot exceed the configured limit of 300000"
    assert too_big.status_code == 400
    assert "run_memory_limit cannot exceed" in too_big.json()["message"]
    assert negative.status_code == 400
    assert not_number.json()["message"] == "If specified, run_cpu_time must be a number"
    assert server_max.json()["run"]["stdout"] == "ok\n"


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_a_timed_out_job_reports_the_cpu_it_spun(client, isolate):
    # It once answered "cpu_time": 3 for two seconds of spinning.
    async with api(isolate) as url:
        spun = await run(client, url, language="python", files=src("while True: pass"),
                         run_timeout=2000)  # fmt: skip
    result = spun.json()["run"]
    assert result["status"] == "TO"
    assert result["cpu_time"] >= 0.25 * result["wall_time"], result


async def test_statuses_TO_SG_RE_OL_EL(client):  # noqa: N802 (Piston's names)
    async with api(output=1000) as url:
        timeout = await run(client, url, language="bash", files=src("sleep 30"),
                            run_timeout=300)  # fmt: skip
        cpu = await run(client, url, language="bash", files=src("while :; do :; done"),
                        run_cpu_time=1000, run_timeout=20_000)  # fmt: skip
        signal = await run(client, url, language="bash", files=src("kill -SEGV $$"))
        runtime = await run(client, url, language="python", files=src("raise SystemExit(7)"))
        out = await run(client, url, language="bash", files=src("head -c 5000 /dev/zero"))
        err = await run(client, url, language="bash", files=src("head -c 5000 /dev/zero >&2"))
        under = await run(client, url, language="bash", files=src("head -c 1000 /dev/zero"))
    assert timeout.json()["run"]["status"] == "TO"
    assert timeout.json()["run"]["signal"] == "SIGKILL"
    assert timeout.json()["run"]["wall_time"] < 5000
    assert cpu.json()["run"]["status"] == "TO"
    assert signal.json()["run"]["status"] == "SG"
    assert signal.json()["run"]["signal"] == "SIGSEGV"
    assert runtime.json()["run"]["status"] == "RE"
    assert runtime.json()["run"]["code"] == 7
    assert out.json()["run"]["status"] == "OL"
    assert len(out.json()["run"]["stdout"]) == 1000
    assert err.json()["run"]["status"] == "EL"
    assert len(err.json()["run"]["stderr"]) == 1000
    assert under.json()["run"]["status"] is None


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_compiled_languages_and_the_compile_stage(client, isolate):
    programs = {
        "c": '#include <stdio.h>\nint main(int c, char **v){printf("c %s\\n", v[1]); return 0;}\n',
        "cpp": '#include <iostream>\nint main(int c, char **v){std::cout << "cpp " << v[1] << "\\n";}\n',
        "rust": 'fn main(){ let a: Vec<String> = std::env::args().collect(); println!("rust {}", a[1]); }\n',
        "go": 'package main\nimport ("fmt"; "os")\nfunc main(){ fmt.Println("go", os.Args[1]) }\n',
        "java": 'public class Main { public static void main(String[] a){ System.out.println("java " + a[0]); } }\n',
    }  # fmt: skip
    async with api(isolate) as url:
        for lang, code in programs.items():
            response = await run(client, url, language=lang, files=src(code), args=["x"])
            body = response.json()
            assert response.status_code == 200, (lang, body)
            assert body["compile"]["code"] == 0, (lang, body["compile"])
            assert body["run"]["stdout"] == f"{lang} x\n", (lang, body)


async def test_compile_error_is_the_compile_stage(client):
    async with api() as url:
        response = await run(client, url, language="c", files=src("int main( {"))
    body = response.json()
    assert body["compile"]["code"] == 1
    assert body["compile"]["status"] == "RE"
    assert "error" in body["compile"]["stderr"]
    assert body["run"] == body["compile"]  # as Piston: the run stage never started


async def test_identical_requests_reuse_the_build(client):
    code = '#include <stdio.h>\nint main(){puts("cached?");}\n'
    async with api() as url:
        first = (await run(client, url, language="c", files=src(code))).json()
        second = (await run(client, url, language="c", files=src(code))).json()
        results: list[Any] = []

        async def one() -> None:
            results.append((await run(client, url, language="c", files=src(code + " "))).json())

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
    assert first["compile"]["message"] is None
    assert first["compile"]["wall_time"] > 0
    assert second["compile"]["message"] == "cached"
    assert second["run"]["stdout"] == "cached?\n"
    compiled = [r for r in results if r["compile"]["message"] != "cached"]
    assert len(compiled) == 1
    assert all(r["run"]["stdout"] == "cached?\n" for r in results)


# -- WebSocket sessions --------------------------------------------------------


async def ws_messages(ws: Any, until: str = "") -> list[dict[str, Any]]:
    """Messages until the socket closes (or one of type ``until``)."""
    received = []
    with trio.fail_after(30):
        while True:
            try:
                message = await ws.receive_json()
            except Closed:
                return received
            received.append(message)
            if until and message["type"] == until:
                return received


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_ws_session_stdin_stages_and_exit(isolate):
    code = "import sys\nfor line in sys.stdin:\n    print('got', line.strip(), flush=True)\n"
    async with api(isolate) as url:
        ws_url = url.replace("http://", "ws://") + "/api/v2/connect"
        async with connect(ws_url) as ws:
            await ws.send_json(
                {"type": "init", "language": "python", "version": "*", "files": src(code)}
            )
            first = await ws_messages(ws, until="stage")
            assert first[0]["type"] == "runtime"
            assert first[0]["language"] == "python"
            assert first[1] == {"type": "stage", "stage": "run"}
            await ws.send_json({"type": "data", "stream": "stdin", "data": "a\n"})
            text = ""
            while "\n" not in text:  # print() may write its pieces separately
                message = (await ws_messages(ws, until="data"))[-1]
                assert message["stream"] == "stdout"
                text += message["data"]
            assert text == "got a\n"
            await ws.send_json({"type": "data", "stream": "stdin", "data": "b\n"})
            await ws.send_json({"type": "signal", "signal": "SIGTERM"})
            rest = await ws_messages(ws)
            assert ws.close_code == 4999
    exits = [m for m in rest if m["type"] == "exit"]
    assert exits[0]["stage"] == "run"
    assert exits[0]["signal"] == "SIGTERM"


async def test_ws_signal_is_delivered_to_the_program():
    code = "trap 'echo caught INT; exit 3' INT\necho ready\nwhile :; do sleep 0.05; done\n"
    async with api() as url:
        ws_url = url.replace("http://", "ws://") + "/api/v2/connect"
        async with connect(ws_url) as ws:
            await ws.send_json({"type": "init", "language": "bash", "files": src(code)})
            await ws_messages(ws, until="data")
            await ws.send_json({"type": "signal", "signal": "SIGINT"})
            rest = await ws_messages(ws)
    text = "".join(m["data"] for m in rest if m["type"] == "data")
    assert "caught INT" in text
    exit_message = next(m for m in rest if m["type"] == "exit")
    assert exit_message["code"] == 3


async def test_ws_compile_stage_and_output_limit():
    code = '#include <stdio.h>\nint main(){for(;;) fputs("xxxxxxxxxx", stdout);}\n'
    async with api(output=5000) as url:
        ws_url = url.replace("http://", "ws://") + "/api/v2/connect"
        async with connect(ws_url) as ws:
            await ws.send_json({"type": "init", "language": "c", "files": src(code)})
            messages = await ws_messages(ws)
    stages = [m["stage"] for m in messages if m["type"] == "stage"]
    assert stages == ["compile", "run"]
    exits = {m["stage"]: m for m in messages if m["type"] == "exit"}
    assert exits["compile"]["code"] == 0
    assert exits["run"]["status"] == "OL"
    out = "".join(m["data"] for m in messages if m["type"] == "data" and m["stream"] == "stdout")
    assert len(out) == 5000


@pytest.mark.parametrize(
    ("first", "second", "code"),
    [
        (None, None, 4001),
        ({"type": "data", "stream": "stdin", "data": "x"}, None, 4003),
        ("init-sleep", {"type": "data", "stream": "stdout", "data": "x"}, 4004),
        ("init-sleep", {"type": "signal", "signal": "SIGNOPE"}, 4005),
        ("init-sleep", {"type": "init", "language": "bash", "files": []}, 4000),
        ({"type": "init", "language": "cobol", "files": [{"content": "x"}]}, None, 4002),
    ],
)
async def test_ws_close_codes(first, second, code):
    init = {"type": "init", "language": "bash", "files": src("sleep 20")}
    async with api() as url:
        ws_url = url.replace("http://", "ws://") + "/api/v2/connect"
        async with connect(ws_url) as ws:
            if first is not None:
                await ws.send_json(init if first == "init-sleep" else first)
            if second is not None:
                await ws_messages(ws, until="stage")
                await ws.send_json(second)
            await ws_messages(ws)
            assert ws.close_code == code


# -- the real piston-client npm package ----------------------------------------

CLIENT_SCRIPT = """
import piston from 'piston-client';
const client = piston({ server: process.argv[2] });
const runtimes = await client.runtimes();
const results = { runtimes: runtimes.map(r => r.language) };
const programs = {
  python: 'import sys; print("py", sys.argv[1:])',
  javascript: 'console.log("js", process.argv.slice(2).join(","))',
  bash: 'echo bash "$@"',
  c: '#include <stdio.h>\\nint main(int c, char **v){ printf("c %d\\\\n", c - 1); }',
  rust: 'fn main(){ println!("rust {}", std::env::args().count() - 1); }',
};
for (const [language, code] of Object.entries(programs)) {
  results[language] = await client.execute(language, code);
}
console.log(JSON.stringify(results));
"""


@pytest.fixture(scope="session")
def piston_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real piston-client package from npm, installed once per session."""
    need("node")
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed (apt-get install npm; .ci/run does)")
    folder = tmp_path_factory.mktemp("piston-client")
    done = subprocess.run(
        [npm, "install", "--silent", "--no-audit", "--no-fund", "piston-client@1.0.2"],
        cwd=folder, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (folder / "client.mjs").write_text(CLIENT_SCRIPT)
    return folder


async def test_real_piston_client(piston_client: Path):
    async with api("auto") as url:
        done = await trio.run_process(
            ["node", str(piston_client / "client.mjs"), url], capture_stdout=True,
            capture_stderr=True, check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    results = json.loads(done.stdout)
    assert {"python", "javascript", "bash", "c", "rust"} <= set(results["runtimes"])
    # piston-client sends args ["1", "2", "3"] by default.
    assert results["python"]["run"]["stdout"] == "py ['1', '2', '3']\n"
    assert results["javascript"]["run"]["stdout"] == "js 1,2,3\n"
    assert results["bash"]["run"]["stdout"] == "bash 1 2 3\n"
    assert results["c"]["run"]["stdout"] == "c 3\n"
    assert results["c"]["compile"]["code"] == 0
    assert results["rust"]["run"]["stdout"] == "rust 3\n"


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_compiled_service_over_http(server, client, script, isolate):
    path = script(
        "hello.c",
        '#include <stdio.h>\n#include <stdlib.h>\n'
        'int main(void){ printf("C says %s\\n", getenv("QUERY_STRING")); return 0; }\n',
    )
    bad = script("bad.c", "int main( {\n")
    async with server(path, isolate=isolate) as url:
        first = await client.get(f"{url}/?a=1")
        second = await client.get(f"{url}/?b=2")
    async with server(bad, isolate=isolate) as url:
        broken = await client.get(url)
    assert first.text == "C says a=1\n"
    assert second.text == "C says b=2\n"
    assert broken.status_code == 500
    assert broken.json()["error"] == "compile"
    assert "error" in broken.json()["output"]


async def test_a_limit_that_is_not_a_finite_number_is_a_400(client):
    async with api() as url:
        for literal in (b"NaN", b"Infinity", b"1e999"):
            body = (b'{"language": "bash", "version": "*", "files": [{"content": "true"}], '
                    b'"run_memory_limit": ' + literal + b"}")  # fmt: skip
            answer = await client.post(f"{url}/api/v2/execute", content=body,
                                       headers={"content-type": "application/json"})  # fmt: skip
            assert answer.status_code == 400, (literal, answer.text)
            assert "run_memory_limit must be a number" in answer.json()["message"]
