"""Judge0's API end to end: a real `stack serve`, real interpreters, the official SDK, real stores."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import judge0
import pytest
import trio

from sandbox.app import open_app
from sandbox.brokers import BrokerConfig, open_broker
from sandbox.core.engine import EngineConfig, open_engine
from sandbox.core.limits import Limits
from sandbox.features.auth import Authenticator, hash_key
from sandbox.features.judge0 import DEFAULT_FIELDS, Settings
from sandbox.features.judge0_store import SqliteStore
from sandbox.features.judge0_worker import serve_judge0_worker
from sandbox.http.server import bind, serve

from ..brokers.conftest import free_port, start_nats, start_redis
from ..conftest import have, need, need_bwrap
from ..helpers import STACK, stack_server


@asynccontextmanager
async def judge0_server(store: str, *, isolate: str = "none", limits: Limits | None = None,
                        auth: dict[str, Any] | None = None,
                        **settings: Any) -> AsyncIterator[str]:  # fmt: skip
    """A real `stack serve` with Judge0's API on a free port; yields its URL."""
    if isolate == "bwrap":
        need_bwrap()
    config = EngineConfig(isolate=isolate, limits=limits or Limits())
    authenticator = Authenticator.from_mapping(auth, None) if auth is not None else None
    async with open_app(None, config, execute=True, auth=authenticator,
                        judge0=Settings(store=store, **settings)) as app:  # fmt: skip
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, app, bind("127.0.0.1", 0))
            try:
                yield url
            finally:
                nursery.cancel_scope.cancel()


@pytest.fixture
def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'judge0.sqlite3'}"


@pytest.fixture
def use_sdk(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point the official SDK at a server, as a user does: JUDGE0_CE_ENDPOINT."""

    def point(url: str, headers: dict[str, str] | None = None) -> None:
        monkeypatch.setenv("JUDGE0_CE_ENDPOINT", url)
        monkeypatch.setenv("JUDGE0_CE_AUTH_HEADERS", json.dumps(headers or {}))
        monkeypatch.setattr(judge0, "JUDGE0_IMPLICIT_CE_CLIENT", None)
        monkeypatch.setattr(judge0, "JUDGE0_IMPLICIT_EXTRA_CE_CLIENT", None)

    return point


async def in_thread(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The SDK is synchronous: call it from a worker thread."""
    return await trio.to_thread.run_sync(lambda: fn(*args, **kwargs))


async def finished(http: httpx.AsyncClient, url: str, token: str,
                   **params: str) -> dict[str, Any]:  # fmt: skip
    """Poll a submission until it has a verdict."""
    query = {"base64_encoded": "false", "fields": "*", **params}
    with trio.fail_after(60):
        while True:
            response = await http.get(f"{url}/submissions/{token}", params=query)
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"]["id"] > 2:
                return body
            await trio.sleep(0.05)


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


C_PROGRAMS = {
    "segv": "int main(void){volatile int *p = 0; *p = 1; return 0;}",
    "fpe": "int main(void){volatile int a = 7, z = 0; return a / z;}",
    "abrt": "#include <stdlib.h>\nint main(void){abort();}",
    "xfsz": '#include <stdio.h>\nint main(void){FILE *f = fopen("big", "w");'
    " for (int i = 0; i < 100000; i++) fputc('x', f); fclose(f); return 0;}",
}


# The official SDK ------------------------------------------------------------------------------


async def test_the_official_sdk_runs_several_languages(sqlite, use_sdk):
    programs = [
        (judge0.PYTHON, "python3", "import sys\nprint('py', sys.stdin.read().strip())"),
        (judge0.JAVASCRIPT, "node", "console.log('js', require('fs').readFileSync(0, 'utf8').trim())"),
        (judge0.BASH, "bash", "read x; echo bash $x"),
        (judge0.RUBY, "ruby", "puts \"rb #{STDIN.read.strip}\""),
        (judge0.PHP, "php", "<?php echo 'php ', trim(file_get_contents('php://stdin')), \"\\n\";"),
        (judge0.C, "gcc", '#include <stdio.h>\nint main(void){char s[8]; scanf("%7s", s); printf("c %s\\n", s);}'),
        (judge0.CPP, "g++", "#include <iostream>\nint main(){std::string s; std::cin >> s; std::cout << \"cpp \" << s << std::endl;}"),
        (judge0.JAVA, "javac", 'public class Main { public static void main(String[] a) { System.out.println("java " + new java.util.Scanner(System.in).next()); } }'),
    ]  # fmt: skip
    programs = [p for p in programs if have(p[1])]
    if not programs:
        pytest.skip("no interpreter installed")
    async with judge0_server(sqlite) as url:
        use_sdk(url)
        client = await in_thread(judge0.get_client)
        assert await in_thread(lambda: client.version) == "1.13.1"
        assert client.config.max_submission_batch_size == 20
        for language, _, source in programs:
            result = await in_thread(judge0.run, source_code=source, language=language,
                                     stdin="hi")  # fmt: skip
            assert result.status == judge0.Status.ACCEPTED, (language, result)
            assert result.stdout.split() == [result.stdout.split()[0], "hi"], result
            assert result.time is not None
            assert result.memory > 0
            assert result.token is not None
            assert result.created_at is not None
            assert result.finished_at is not None


async def test_the_official_sdk_with_test_cases_and_batches(sqlite, use_sdk):
    need("python3")
    async with judge0_server(sqlite) as url:
        use_sdk(url)
        results = await in_thread(
            judge0.run, source_code="print(int(input()) * 2)", language=judge0.PYTHON,
            test_cases=[("1", "2"), ("2", "5"), judge0.TestCase("10", "20 \n\n")],
        )  # fmt: skip
        assert [r.status for r in results] == [judge0.Status.ACCEPTED,
                                               judge0.Status.WRONG_ANSWER,
                                               judge0.Status.ACCEPTED]  # fmt: skip
        assert [r.stdout for r in results] == ["2\n", "4\n", "20\n"]
        # More submissions than a batch holds: the SDK splits them over several batches.
        many = [judge0.Submission(source_code=f"print({i})", language=judge0.PYTHON)
                for i in range(25)]  # fmt: skip
        results = await in_thread(judge0.run, submissions=many)
        assert [r.stdout for r in results] == [f"{i}\n" for i in range(25)]


@pytest.mark.parametrize("isolate", ["none", "bwrap"])
async def test_every_verdict_through_the_sdk(sqlite, use_sdk, isolate):
    need("python3", "gcc")
    py = judge0.PYTHON
    cases = [
        (judge0.Submission(source_code="print(1)", language=py, expected_output="1"), 3),
        (judge0.Submission(source_code="print(2)", language=py, expected_output="1"), 4),
        (judge0.Submission(source_code="while True: pass", language=py, cpu_time_limit=0.5,
                           cpu_extra_time=0.5), 5),
        (judge0.Submission(source_code="int main(void){", language=judge0.C), 6),
        (judge0.Submission(source_code=C_PROGRAMS["segv"], language=judge0.C), 7),
        (judge0.Submission(source_code=C_PROGRAMS["xfsz"], language=judge0.C,
                           max_file_size=16), 8),
        (judge0.Submission(source_code=C_PROGRAMS["fpe"], language=judge0.C), 9),
        (judge0.Submission(source_code=C_PROGRAMS["abrt"], language=judge0.C), 10),
        (judge0.Submission(source_code="raise SystemExit(3)", language=py), 11),
        (judge0.Submission(source_code="import os, signal\nos.kill(os.getpid(), signal.SIGTERM)",
                           language=py), 12),
    ]  # fmt: skip
    async with judge0_server(sqlite, isolate=isolate) as url:
        use_sdk(url)
        results = await in_thread(judge0.run, submissions=[s for s, _ in cases])
        assert [int(r.status) for r in results] == [status for _, status in cases], results
        by_status = {int(r.status): r for r in results}
        assert by_status[6].compile_output
        assert "error" in by_status[6].compile_output
        assert by_status[11].exit_code == 3
        assert by_status[7].exit_signal == 11
        assert by_status[5].time >= 0.5


# The API as JSON --------------------------------------------------------------------------


async def test_submit_poll_fields_and_encodings(client, sqlite):
    need("python3")
    async with judge0_server(sqlite) as url:
        created = await client.post(f"{url}/submissions", json={
            "source_code": b64("import sys\nprint(sys.stdin.read()[::-1]); print('e', file=sys.stderr)"),
            "language_id": 71, "stdin": b64("abc")}, params={"base64_encoded": "true"})  # fmt: skip
        assert created.status_code == 201
        assert list(created.json()) == ["token"]
        token = created.json()["token"]
        body = await finished(client, url, token)
        assert body["stdout"] == "cba\n"
        assert body["stderr"] == "e\n"
        assert body["stdin"] == "abc"
        assert body["status"] == {"id": 3, "description": "Accepted"}
        default = (await client.get(f"{url}/submissions/{token}")).json()
        assert list(default) == list(DEFAULT_FIELDS)
        encoded = await client.get(f"{url}/submissions/{token}",
                                   params={"base64_encoded": "true", "fields": "stdout,status_id"})
        assert encoded.json() == {"stdout": b64("cba\n"), "status_id": 3}
        invalid = await client.get(f"{url}/submissions/{token}", params={"fields": "stdout,x"})
        assert (invalid.status_code, invalid.json()) == (400, {"error": "invalid fields: [x]"})
        unknown = await client.get(f"{url}/submissions/0000")
        assert unknown.status_code == 404
        statuses = (await client.get(f"{url}/statuses")).json()
        assert statuses[3] == {"id": 4, "description": "Wrong Answer"}
        language = (await client.get(f"{url}/languages/71")).json()
        assert language["id"] == 71
        assert language["source_file"] == "main.py"
        assert (await client.get(f"{url}/languages/7")).status_code == 404
        assert (await client.get(f"{url}/about")).json()["version"] == "1.13.1"
        workers = (await client.get(f"{url}/workers")).json()
        assert workers[0]["available"] == 16
        assert workers[0]["size"] == 0
        assert "Architecture" in (await client.get(f"{url}/system_info")).json()
        health = (await client.get(f"{url}/healthz")).json()["checks"]["judge0"]
        assert health["ok"] is True
        assert health["detail"].startswith("sqlite ")
        assert (await client.put(f"{url}/submissions")).status_code == 405


async def test_wait_compiler_options_arguments_runs_redirect_and_files(client, sqlite):
    need("python3", "gcc")
    files = io.BytesIO()
    with zipfile.ZipFile(files, "w") as archive:
        archive.writestr("helper.py", "GREETING = 'from the zip'\n")
    async with judge0_server(sqlite) as url:
        answer = await client.post(f"{url}/submissions", params={"wait": "true"}, json={
            "source_code": '#include <stdio.h>\nint main(void){printf("%d\\n", ANSWER); return 0;}',
            "language_id": 50, "compiler_options": "-DANSWER=42"}, timeout=60)  # fmt: skip
        assert answer.status_code == 201
        assert answer.json()["stdout"] == "42\n"
        assert answer.json()["status"]["id"] == 3
        answer = await client.post(f"{url}/submissions", params={"wait": "true", "fields": "*"},
                                   json={
            # Two pipes, read as they come: the pause orders them (one fd would not need it).
            "source_code": "import sys, time, helper\n"
                           "print(sys.argv[1:], helper.GREETING, flush=True)\n"
                           "time.sleep(0.2)\nprint('to stderr', file=sys.stderr)",
            "language_id": 71, "command_line_arguments": "one 'two words'",
            "redirect_stderr_to_stdout": True, "additional_files": b64(files.getvalue()),
            "number_of_runs": 2}, timeout=60)  # fmt: skip
        body = answer.json()
        assert body["stdout"] == "['one', 'two words'] from the zip\nto stderr\n"
        assert body["stderr"] is None
        assert body["number_of_runs"] == 2
        assert body["additional_files"] == b64(files.getvalue())


async def test_bad_requests_get_judge0s_answers(client, sqlite):
    need("python3")
    limits = Limits(timeout=3.0, cpu=2.0, memory=64 * 1024**2)
    async with judge0_server(sqlite, limits=limits) as url:
        info = (await client.get(f"{url}/config_info")).json()
        assert (info["cpu_time_limit"], info["wall_time_limit"]) == (2.0, 3.0)
        assert info["memory_limit"] == 65536
        too_much = await client.post(f"{url}/submissions", json={
            "source_code": "print(1)", "language_id": 71, "cpu_time_limit": 301,
            "memory_limit": 8 * 1024**2})  # fmt: skip
        assert too_much.status_code == 422
        assert too_much.json() == {
            "cpu_time_limit": ["must be less than or equal to 300"],
            "memory_limit": ["must be less than or equal to 4194304"],
        }
        blank = await client.post(f"{url}/submissions", content=b"")
        assert blank.status_code == 422
        assert blank.json() == {"source_code": ["can't be blank"],
                                "language_id": ["can't be blank"]}  # fmt: skip
        garbage = await client.post(f"{url}/submissions", content=b"{nope")
        assert garbage.status_code == 400
        assert garbage.json()["error"].startswith("the body is not valid JSON")
        binary = await client.post(f"{url}/submissions", params={"wait": "true"}, json={
            "source_code": "import sys\nsys.stdout.buffer.write(bytes([255, 254]))",
            "language_id": 71})  # fmt: skip
        assert binary.status_code == 201
        token = binary.json()["token"]
        assert binary.json()["error"].startswith("some attributes for this submission cannot")
        shown = await client.get(f"{url}/submissions/{token}")
        assert shown.status_code == 400
        raw = await client.get(f"{url}/submissions/{token}", params={"base64_encoded": "true"})
        assert raw.json()["stdout"] == "//4="
        disabled = await client.delete(f"{url}/submissions/{token}")
        assert (disabled.status_code, disabled.json()) == (400, {"error": "delete not allowed"})


async def test_batches(client, sqlite):
    need("python3")
    async with judge0_server(sqlite) as url:
        created = await client.post(f"{url}/submissions/batch", json={"submissions": [
            {"source_code": "print('a')", "language_id": 71},
            {"source_code": "print('b')", "language_id": 9999},
            {"source_code": "print('c')", "language_id": 71},
        ]})  # fmt: skip
        assert created.status_code == 201
        first, bad, last = created.json()
        assert bad == {"language_id": ["language with id 9999 doesn't exist"]}
        tokens = [first["token"], last["token"]]
        for token in tokens:
            await finished(client, url, token)
        shown = await client.get(f"{url}/submissions/batch", params={
            "tokens": ",".join([*tokens, "unknown"]), "fields": "stdout,status_id"})  # fmt: skip
        assert shown.json() == {"submissions": [{"stdout": "a\n", "status_id": 3},
                                                {"stdout": "c\n", "status_id": 3}, None]}  # fmt: skip
        listed = (await client.get(f"{url}/submissions", params={
            "per_page": "1", "page": "2", "fields": "token,stdout"})).json()  # fmt: skip
        assert listed == {"submissions": [{"token": tokens[0], "stdout": "a\n"}], "meta": {
            "current_page": 2, "next_page": None, "prev_page": 1, "total_pages": 2,
            "total_count": 2}}  # fmt: skip
        bad_page = await client.get(f"{url}/submissions", params={"page": "0"})
        assert bad_page.json() == {"error": "invalid page: 0"}
        none_valid = await client.post(f"{url}/submissions/batch", json={"submissions": [{}]})
        assert none_valid.status_code == 422
        too_many = await client.post(f"{url}/submissions/batch", json={
            "submissions": [{"source_code": "1", "language_id": 71}] * 21})  # fmt: skip
        assert too_many.status_code == 400
        assert too_many.json()["error"] == (
            "number of submissions in a batch should be less than or equal to 20"
        )
        empty = await client.get(f"{url}/submissions/batch", params={"tokens": ""})
        assert empty.json() == {"error": "there should be at least one submission in a batch"}


async def test_a_full_queue_answers_503_and_delete(client, sqlite):
    need("python3")
    async with judge0_server(sqlite, workers=0, max_queue_size=2,
                             enable_submission_delete=True) as url:  # fmt: skip
        job = {"source_code": "print(1)", "language_id": 71}
        tokens = []
        for _ in range(2):
            created = await client.post(f"{url}/submissions", json=job)
            assert created.status_code == 201
            tokens.append(created.json()["token"])
        full = await client.post(f"{url}/submissions", json=job)
        assert (full.status_code, full.json()) == (503, {"error": "queue is full"})
        assert full.headers["retry-after"] == "1"
        batch = await client.post(f"{url}/submissions/batch", json={"submissions": [job]})
        assert batch.status_code == 503
        queued = await client.delete(f"{url}/submissions/{tokens[0]}")
        assert queued.status_code == 400
        assert queued.json() == {
            "error": "submission cannot be deleted because its status is 1 (In Queue)"
        }
        # A node that runs submissions works through the shared file's queue.
        async with judge0_server(sqlite, enable_submission_delete=True) as runner:
            done = await finished(client, runner, tokens[0])
            assert done["stdout"] == "1\n"
            deleted = await client.delete(f"{runner}/submissions/{tokens[0]}")
            assert deleted.status_code == 200
            assert deleted.json()["stdout"] == b64("1\n")  # base64, as Judge0 answers deletes
            assert (await client.get(f"{url}/submissions/{tokens[0]}")).status_code == 404


async def test_callbacks_are_retried(client, sqlite):
    need("python3")
    received: list[dict[str, Any]] = []

    async def receiver(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        received.append({"method": scope["method"], "body": json.loads(body)})
        status = 500 if len(received) == 1 else 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async with trio.open_nursery() as nursery:
        hook = await nursery.start(serve, receiver, bind("127.0.0.1", 0))
        async with judge0_server(sqlite, callbacks_to_private=True) as url:
            created = await client.post(f"{url}/submissions", json={
                "source_code": "print('called back')", "language_id": 71,
                "callback_url": f"{hook}/done"})  # fmt: skip
            token = created.json()["token"]
            with trio.fail_after(30):
                while len(received) < 2:
                    await trio.sleep(0.05)
            await trio.sleep(0.2)  # the callback reads its answer before the server stops
        nursery.cancel_scope.cancel()
    assert [r["method"] for r in received] == ["PUT", "PUT"]
    body = received[1]["body"]
    assert body["token"] == token
    assert body["stdout"] == b64("called back\n")
    assert body["status"] == {"id": 3, "description": "Accepted"}


async def test_old_submissions_are_pruned(client, sqlite):
    need("python3")
    async with judge0_server(sqlite, keep=0.5) as url:
        created = await client.post(f"{url}/submissions", params={"wait": "true"},
                                    json={"source_code": "print(1)", "language_id": 71})
        token = created.json()["token"]
        with trio.fail_after(10):
            while (await client.get(f"{url}/submissions/{token}")).status_code == 200:
                await trio.sleep(0.1)


# Stores -----------------------------------------------------------------------------------


async def test_submissions_survive_a_restart(client, sqlite):
    need("python3")
    async with judge0_server(sqlite) as url:
        done = await client.post(f"{url}/submissions", params={"wait": "true"},
                                 json={"source_code": "print('before')", "language_id": 71})
        first = done.json()["token"]
    async with judge0_server(sqlite, workers=0) as url:  # takes submissions, runs none
        created = await client.post(f"{url}/submissions",
                                    json={"source_code": "print('after')", "language_id": 71})
        second = created.json()["token"]
        waiting = await client.get(f"{url}/submissions/{second}")
        assert waiting.json()["status"] == {"id": 1, "description": "In Queue"}
    async with judge0_server(sqlite) as url:
        assert (await finished(client, url, first))["stdout"] == "before\n"
        assert (await finished(client, url, second))["stdout"] == "after\n"


async def test_a_run_cut_short_by_a_stop_runs_again(client, sqlite):
    need("python3")
    async with judge0_server(sqlite) as url:
        created = await client.post(f"{url}/submissions", json={
            "source_code": "import time\ntime.sleep(1.5)\nprint('slept')", "language_id": 71})
        token = created.json()["token"]
        with trio.fail_after(10):
            while (await client.get(f"{url}/submissions/{token}")).json()["status"]["id"] == 1:
                await trio.sleep(0.02)
    async with judge0_server(sqlite) as url:
        assert (await finished(client, url, token))["stdout"] == "slept\n"


def _postgres_programs() -> tuple[str | None, str | None]:
    search = os.environ.get("PATH", "") + ":" + ":".join(
        sorted(str(p) for p in Path("/usr/lib/postgresql").glob("*/bin"))
    )
    return shutil.which("initdb", path=search), shutil.which("postgres", path=search)


@asynccontextmanager
async def start_postgres() -> AsyncIterator[str]:
    """A real PostgreSQL server on a free loopback port (as the postgres user under root)."""
    pytest.importorskip("psycopg", reason="pip install 'psycopg[binary]'")
    initdb, postgres = _postgres_programs()
    if initdb is None or postgres is None:
        pytest.skip("PostgreSQL is not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="stack-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("no 'postgres' user to run PostgreSQL as")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    try:
        await trio.run_process([*prefix, initdb, "-D", str(data), "-U", "stack", "--auth=trust",
                                "-E", "UTF8"], capture_stdout=True, capture_stderr=True)  # fmt: skip
        with (root / "log").open("wb") as log:
            process = await trio.lowlevel.open_process(
                [*prefix, postgres, "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
                 "-k", str(root)], stdout=log, stderr=log)  # fmt: skip
        try:
            with trio.fail_after(20):
                while True:
                    try:
                        stream = await trio.open_tcp_stream("127.0.0.1", port)
                        await stream.aclose()
                        break
                    except OSError:
                        await trio.sleep(0.05)
            await trio.sleep(0.3)  # it listens a moment before it accepts logins
            yield f"postgresql://stack@127.0.0.1:{port}/postgres"
        finally:
            with trio.CancelScope(shield=True):
                process.terminate()
                await process.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@asynccontextmanager
async def shared_store(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "redis":
        async with start_redis(tmp_path) as redis_server:
            yield f"{redis_server.url}/0"
    else:
        async with start_postgres() as url:
            yield url


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
async def test_two_servers_share_a_store(client, tmp_path, kind):
    need("python3")
    async with shared_store(kind, tmp_path) as store:
        async with judge0_server(store, workers=0) as front, judge0_server(store) as back:
            created = await client.post(f"{front}/submissions/batch", json={"submissions": [
                {"source_code": f"print({i} * 7)", "language_id": 71} for i in range(6)]})
            tokens = [t["token"] for t in created.json()]
            for i, token in enumerate(tokens):
                assert (await finished(client, front, token))["stdout"] == f"{i * 7}\n"
            shown = await client.get(f"{back}/submissions/batch",
                                     params={"tokens": ",".join(tokens), "fields": "status_id"})
            assert shown.json()["submissions"] == [{"status_id": 3}] * 6
            workers = (await client.get(f"{front}/workers")).json()[0]
            assert (workers["available"], workers["size"]) == (0, 0)
            listed = (await client.get(f"{back}/submissions", params={"per_page": "4"})).json()
            assert [r["token"] for r in listed["submissions"]] == tokens[::-1][:4]
            assert listed["meta"]["total_count"] == 6
            assert listed["meta"]["next_page"] == 2
        # Records outlive the servers: a new node reads them.
        async with judge0_server(store, workers=0) as later:
            assert (await finished(client, later, tokens[2]))["stdout"] == "14\n"


# Auth ---------------------------------------------------------------------------------------


async def test_x_auth_token_and_x_auth_user(client, sqlite, use_sdk):
    need("python3")
    keys = {"keys": [
        {"name": "platform", "sha256": hash_key("sk_token"), "scopes": ["execute"]},
        {"name": "ops", "sha256": hash_key("sk_admin"), "scopes": ["admin"]},
    ]}  # fmt: skip
    async with judge0_server(sqlite, auth=keys, enable_submission_delete=True) as url:
        assert (await client.get(f"{url}/languages")).status_code == 401
        token = {"X-Auth-Token": "sk_token"}
        assert (await client.get(f"{url}/languages", headers=token)).status_code == 200
        created = await client.post(f"{url}/submissions", headers=token, params={"wait": "true"},
                                    json={"source_code": "print(1)", "language_id": 71})
        submission = created.json()["token"]
        assert (await client.get(f"{url}/submissions", headers=token)).status_code == 401
        admin = {**token, "X-Auth-User": "sk_admin"}
        listed = await client.get(f"{url}/submissions", headers=admin)
        assert listed.json()["meta"]["total_count"] == 1
        refused = await client.delete(f"{url}/submissions/{submission}", headers=token)
        assert refused.status_code == 401
        assert "X-Auth-User" in refused.json()["error"]
        wrong = await client.delete(f"{url}/submissions/{submission}",
                                    headers={**token, "X-Auth-User": "sk_token"})
        assert wrong.status_code == 403
        deleted = await client.delete(f"{url}/submissions/{submission}",
                                      headers={**token, "X-Auth-User": "sk_admin"})
        assert deleted.status_code == 200
        use_sdk(url, {"X-Auth-Token": "sk_token"})
        result = await in_thread(judge0.run, source_code="print(6 * 7)", language=judge0.PYTHON)
        assert result.stdout == "42\n"


async def test_recovery_leaves_what_a_live_server_runs(tmp_path):
    store = SqliteStore(tmp_path / "judge0.sqlite3")
    try:
        host = socket.gethostname()
        live = {"token": "a", "status_id": 2, "node": f"{host}:1"}  # pid 1 is alive
        dead = {"token": "b", "status_id": 2, "node": f"{host}:999999999"}  # past pid_max
        await store.add([live, dead], queue=False)
        assert await trio.to_thread.run_sync(store.recover) == 1
        claimed = await store.claim()
        assert claimed is not None
        assert claimed["token"] == "b"
        assert await store.claim() is None
    finally:
        store.close()


async def test_submissions_run_on_stack_workers_over_nats(client, sqlite, tmp_path):
    need("python3", "gcc")
    async with start_nats(tmp_path) as nats_server, judge0_server(sqlite,
                                                                  broker=nats_server.url) as url:
        job = {"source_code": "import os\nprint(os.environ.get('WHERE', 'the node'))",
               "language_id": 71}  # fmt: skip
        # No worker yet: the submission waits for one, it does not fail.
        waiting = (await client.post(f"{url}/submissions", json=job)).json()["token"]
        await trio.sleep(0.5)
        shown = await client.get(f"{url}/submissions/{waiting}", params={"fields": "status_id"})
        assert shown.json()["status_id"] in (1, 2)
        stop = trio.Event()
        config = EngineConfig(isolate="none", env={"WHERE": "a worker"})
        async with open_engine(config) as engine, open_broker(
            BrokerConfig(url=nats_server.url, name="workers")
        ) as broker, trio.open_nursery() as nursery:
            done: list[int] = []

            async def work(task_status: trio.TaskStatus[None]) -> None:
                done.append(await serve_judge0_worker(engine, broker, stop=stop,
                                                      task_status=task_status))  # fmt: skip

            await nursery.start(work)
            assert (await finished(client, url, waiting))["stdout"] == "a worker\n"
            compiled = await client.post(f"{url}/submissions", params={"wait": "true"}, json={
                "source_code": "int main(void){return 4;}", "language_id": 50})  # fmt: skip
            assert compiled.json()["status"] == {"id": 11, "description": "Runtime Error (NZEC)"}
            stop.set()
        assert done == [2]


def test_stack_serve_flags_and_config(tmp_path):
    # The command line as a user types it: the judge0 section of the config, --judge0-store.
    need("python3")
    config = tmp_path / "stack.yaml"
    config.write_text("judge0:\n  max_queue_size: 7\n  keep: 1d\n")
    store = tmp_path / "flagged.sqlite3"
    with stack_server("serve", "-p", "0", "--isolate", "none", "--config", str(config),
                      "--judge0-store", f"sqlite:///{store}") as (url, _):  # fmt: skip
        info = httpx.get(f"{url}/config_info").json()
        assert info["max_queue_size"] == 7
        answer = httpx.post(f"{url}/submissions", params={"wait": "true"}, timeout=60,
                            json={"source_code": "print(5)", "language_id": 71})  # fmt: skip
        assert answer.json()["stdout"] == "5\n"
    assert store.exists()
    with stack_server("serve", "-p", "0", "--isolate", "none", "--no-judge0") as (url, _):
        assert httpx.get(f"{url}/languages").status_code == 404
    config.write_text("judge0:\n  max_queue: 7\n")
    done = subprocess.run([*STACK, "serve", "-p", "0", "--config", str(config)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "judge0: unknown key(s) max_queue" in done.stderr


async def test_enable_network_under_bwrap(client, sqlite):
    need("python3")
    async with judge0_server(sqlite, isolate="bwrap", allow_enable_network=True) as url:
        port = int(url.rsplit(":", 1)[1])
        probe = (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), 2).close()\n"
                 "print('reached')")  # fmt: skip
        job = {"source_code": probe, "language_id": 71}
        walled = await client.post(f"{url}/submissions", params={"wait": "true"}, json=job)
        assert walled.json()["status"]["id"] == 11  # no network: the connection fails
        opened = await client.post(f"{url}/submissions", params={"wait": "true"},
                                   json={**job, "enable_network": True})  # fmt: skip
        assert opened.json()["stdout"] == "reached\n"


async def test_a_keys_limits_lower_judge0s_maxima(client, sqlite):
    need("python3")
    keys = {"keys": [{"name": "small", "sha256": hash_key("sk_small"), "scopes": ["execute"],
                      "limits": {"cpu": "1s", "memory": "64MiB"}}]}  # fmt: skip
    async with judge0_server(sqlite, auth=keys) as url:
        headers = {"X-Auth-Token": "sk_small"}
        info = (await client.get(f"{url}/config_info", headers=headers)).json()
        assert (info["max_cpu_time_limit"], info["cpu_time_limit"]) == (1.0, 1.0)
        assert info["max_memory_limit"] == 65536
        refused = await client.post(f"{url}/submissions", headers=headers, json={
            "source_code": "print(1)", "language_id": 71, "cpu_time_limit": 2})  # fmt: skip
        assert refused.status_code == 422
        assert refused.json() == {"cpu_time_limit": ["must be less than or equal to 1"]}


async def test_a_multi_file_program(sqlite, use_sdk):
    need("bash", "gcc")
    files = judge0.Filesystem(content=[
        judge0.File(name="compile", content="gcc -o greet src/greet.c\n"),
        judge0.File(name="run", content='./greet "$@"\n'),
        judge0.File(name="src/greet.c", content='#include <stdio.h>\nint main(int c, char **v)'
                    '{char s[16]; scanf("%15s", s); printf("%s %s\\n", v[1], s); return 0;}'),
    ])  # fmt: skip
    broken = judge0.Filesystem(content=[judge0.File(name="compile", content="exit 3\n"),
                                        judge0.File(name="run", content="echo never\n")])  # fmt: skip
    async with judge0_server(sqlite) as url:
        use_sdk(url)
        good, bad = await in_thread(judge0.run, submissions=[
            judge0.Submission(source_code="", language=judge0.MULTI_FILE, additional_files=files,
                              stdin="world", command_line_arguments="hello"),
            judge0.Submission(source_code="", language=judge0.MULTI_FILE, additional_files=broken),
        ])  # fmt: skip
        assert good.status == judge0.Status.ACCEPTED, good
        assert good.stdout == "hello world\n"
        assert bad.status == judge0.Status.COMPILATION_ERROR


async def test_callbacks_to_the_servers_own_network_are_refused(client, sqlite, caplog):
    # A submission must not make the server call its loopback, its private
    # network or a cloud metadata address.
    need("python3")
    caplog.set_level(logging.WARNING, logger="stack")
    async with judge0_server(sqlite) as url:
        # Loopback only: no test sends traffic anywhere else (the other ranges
        # are checked without a request below).
        for target in ("http://127.0.0.1:9/x", "http://localhost:9/x", "http://[::1]:9/x"):
            created = await client.post(f"{url}/submissions?wait=true", json={
                "source_code": "print(1)", "language_id": 71, "callback_url": target})  # fmt: skip
            assert created.status_code == 201, created.text
        with trio.fail_after(10):
            while caplog.text.count("not a public address") < 3:
                await trio.sleep(0.05)


@pytest.mark.parametrize(
    ("url", "public"),
    [
        ("http://127.0.0.1/x", False),
        ("http://10.1.2.3/x", False),
        ("http://192.168.1.1/x", False),
        ("http://169.254.169.254/latest", False),
        ("http://[fd00::1]/x", False),
        ("http://8.8.8.8/x", True),
    ],
)
async def test_which_callback_addresses_are_public(url: str, public: bool) -> None:
    # Numeric hosts: resolved without a lookup, and nothing is sent.
    from sandbox.http.judge0 import _public

    assert await _public(url) is public
