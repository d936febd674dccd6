"""Actions: manifests, the Exo pipeline, the CLI (as a subprocess) and HTTP."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trio

from sandbox.app import open_app
from sandbox.core.engine import EngineConfig
from sandbox.core.languages import Registry
from sandbox.errors import ConfigError
from sandbox.features import actions as act
from sandbox.http.server import bind, serve

from ..conftest import ROOT

EXAMPLES = ROOT / "examples" / "actions"
STACK = [sys.executable, "-m", "sandbox"]
HELLOS = ["hello-python", "hello-javascript", "hello-php", "hello-bash", "hello-ruby"]
EXO_HELLOS = ["exo-hello-bash", "exo-hello-node"]  # Exo's format; see test_exo.py


def write_action(folder: Path, name: str, code: str, entry: str = "main.sh", *,
                 output: dict[str, Any] | None = None, extra: str = "") -> Path:  # fmt: skip
    """A test action: bash by default, output {"value": string} unless given."""
    path = folder / name
    path.mkdir(parents=True)
    (path / entry).write_text(code)
    schema = output or {"type": "object", "required": ["value"],
                        "properties": {"value": {"type": "string"}}}  # fmt: skip
    (path / "action.yaml").write_text(
        f"name: {name}\nentry: {entry}\ndescription: test\n"
        "input: {type: object, properties: {text: {type: string}}}\n"
        f"output: {json.dumps(schema)}\n{extra}"
    )
    return path


@pytest.fixture
def failing(tmp_path: Path) -> Path:
    """A folder of actions that fail in every way the pipeline reports."""
    folder = tmp_path / "failing"
    write_action(folder, "echo", "jq -c '{value: .text}'\n")
    write_action(folder, "crash", "echo 'it broke' >&2\nexit 3\n")
    write_action(folder, "slow", "sleep 30\n", extra="limits: {timeout: 500ms}\n")
    write_action(folder, "not-json", "echo 'hello there'\n")
    write_action(folder, "bad-output", "echo '{\"value\": 42}'\n")
    write_action(folder, "secret", 'jq -c \'{value: .text}\'\n',
                 output={"type": "object", "properties": {"value": {"maxLength": 3}}})  # fmt: skip
    write_action(folder, "leak", 'echo "connecting with $(jq -r .text)" >&2\nexit 3\n')
    return folder


# -- sans-IO ----------------------------------------------------------------------


def test_request_validation_names_the_problem():
    with pytest.raises(act.ActionError) as info:
        act.validate_request({"input": {}})
    assert info.value.stage == "request"
    assert "'action' is a required property" in info.value.message
    with pytest.raises(act.ActionError) as info:
        act.validate_request({"action": "x", "input": [1]})
    assert info.value.path == "/input"
    assert info.value.schema_path == "/properties/input/type"
    with pytest.raises(act.ActionError, match="Additional properties"):
        act.validate_request({"action": "x", "extra": 1})


def test_variables_are_substituted_and_never_shown():
    variables = act.variables_from_env(
        {"STACK__VARIABLE__URL": "https://secret.example/hook", "OTHER": "x"}
    )
    assert variables == {"URL": "https://secret.example/hook"}
    value = act.substitute({"a": "{{URL}}/path", "b": ["{{ URL }}"], "c": 3}, variables)
    assert value == {"a": "https://secret.example/hook/path",
                     "b": ["https://secret.example/hook"], "c": 3}  # fmt: skip
    with pytest.raises(act.ActionError) as info:
        act.substitute({"a": "{{NOPE}}"}, variables)
    assert info.value.code == "unknown_variable"
    assert "STACK__VARIABLE__NOPE" in info.value.message
    assert act.redact("got https://secret.example/hook!", variables.values()) == "got ***!"


def test_mapping_renames_output_keys():
    assert act.apply_mapping({"result": 4, "x": 1}, {"result": "surprise"}) == {
        "surprise": 4, "x": 1}  # fmt: skip
    with pytest.raises(act.ActionError) as info:
        act.apply_mapping({"x": 1}, {"result": "surprise"})
    assert info.value.stage == "mapping"


def test_output_must_be_one_json_object():
    assert act.parse_output(b'  {"a": 1}\n') == {"a": 1}
    with pytest.raises(act.ActionError) as info:
        act.parse_output(b"hello")
    assert info.value.code == "output_not_json"
    with pytest.raises(act.ActionError) as info:
        act.parse_output(b"[1, 2]")
    assert info.value.code == "output_not_object"


def test_cli_inputs_are_typed_by_the_schema(tmp_path: Path):
    schema = {"properties": {"n": {"type": "integer"}, "f": {"type": "number"},
                             "b": {"type": "boolean"}, "o": {"type": "object"},
                             "s": {"type": "string"}}}  # fmt: skip
    data = tmp_path / "v.json"
    data.write_text('{"deep": [1, 2]}')
    value = act.coerce_inputs(
        ["n=3", "f=2.5", "b=true", 'o={"k": 1}', "s=007", f"j=@{data}"], schema
    )
    assert value == {"n": 3, "f": 2.5, "b": True, "o": {"k": 1}, "s": "007",
                     "j": {"deep": [1, 2]}}  # fmt: skip
    with pytest.raises(ConfigError, match="is not of type integer"):
        act.coerce_inputs(["n=three"], schema)
    with pytest.raises(ConfigError, match="key=value"):
        act.coerce_inputs(["novalue"], schema)


def test_a_malformed_manifest_is_reported_and_others_still_load(tmp_path: Path):
    folder = tmp_path / "actions"
    write_action(folder, "good", "echo '{}'\n")
    bad = folder / "bad"
    bad.mkdir()
    (bad / "main.sh").write_text("true\n")
    (bad / "action.yaml").write_text("name: bad\nentry: main.sh\ninput: {type: nonsense}\n")
    wrong = folder / "wrong"
    wrong.mkdir()
    (wrong / "action.yaml").write_text("name: wrong\nentry: missing.sh\n")
    actions = act.ActionSet.load([folder], Registry.load())
    assert [a.name for a in actions] == ["good"]
    problems = {p.path.parent.name: p for p in actions.problems}
    assert problems["bad"].field == "input"
    assert "not a valid JSON Schema" in problems["bad"].message
    assert problems["wrong"].field == "entry"
    assert str(problems["wrong"]).startswith(str(wrong / "action.yaml"))


def test_name_clash_names_both_folders(tmp_path: Path):
    write_action(tmp_path / "one", "same", "true\n")
    write_action(tmp_path / "two", "same", "true\n")
    with pytest.raises(ConfigError) as info:
        act.ActionSet.load([tmp_path / "one", tmp_path / "two"], Registry.load())
    assert str(tmp_path / "one" / "same") in info.value.message
    assert str(tmp_path / "two" / "same") in info.value.message


def test_example_actions_have_examples_in_their_docs():
    actions = act.ActionSet.load([EXAMPLES], Registry.load())
    assert {a.name for a in actions} == {*HELLOS, *EXO_HELLOS, "random-number"}
    assert not actions.problems
    hello = actions.get("hello-python")
    assert act.example_request(hello) == {"action": "hello-python", "input": {"name": "Ann"}}
    doc = act.openapi(actions)
    assert doc["openapi"] == "3.1.0"
    post = doc["paths"]["/actions/random-number"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "min",
        "max",
    ]


# -- CLI ----------------------------------------------------------------------------


def stack(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([*STACK, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})  # fmt: skip


def test_cli_lists_and_shows_actions():
    listed = stack("action", "--actions", str(EXAMPLES))
    assert listed.returncode == 0
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["NAME", "LANGUAGE", "TAGS", "DESCRIPTION"]
    lines = {line.split()[0]: line for line in rows}
    assert set(lines) == {*HELLOS, *EXO_HELLOS, "random-number"}
    assert "ruby" in lines["hello-ruby"]
    assert "example, greeting" in lines["hello-php"]
    shown = stack("action", "random-number", "--actions", str(EXAMPLES))
    assert shown.returncode == 0
    assert "input schema:" in shown.stdout
    assert '"required": [\n    "min",\n    "max"\n  ]' in shown.stdout
    assert '"action": "random-number"' in shown.stdout
    missing = stack("action", "nope", "--actions", str(EXAMPLES))
    assert missing.returncode == 1
    assert "no action named 'nope'" in missing.stderr


@pytest.mark.parametrize("name", HELLOS)
def test_cli_runs_every_hello(name: str):
    done = stack("run", name, "--actions", str(EXAMPLES), "-i", "name=Zoë \"Z\"", "-i",
                 "greeting=Hej")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "OK", "output": {"sentence": 'Hej, Zoë "Z"!'}}


def test_cli_request_from_stdin_and_file_with_mapping(tmp_path: Path):
    request = {"action": "random-number", "input": {"min": 3, "max": 3},
               "mapping": {"result": "surprise"}}  # fmt: skip
    piped = stack("request", stdin=json.dumps(request),
                  env={"STACK_ACTIONS": str(EXAMPLES)})  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == {"status": "OK", "output": {"surprise": 3}}
    path = tmp_path / "req.json"
    path.write_text(json.dumps({"action": "random-number", "input": {"min": "x"}}))
    from_file = stack("request", str(path), "--actions", str(EXAMPLES))
    assert from_file.returncode == 1
    error = json.loads(from_file.stdout)["error"]
    assert error["stage"] == "input"
    assert error["code"] == "invalid_input"
    no_actions = stack("request", str(path), env={"STACK_ACTIONS": ""})
    assert no_actions.returncode == 2
    assert "--actions" in no_actions.stderr


def test_cli_variables_reach_the_action_but_never_the_output_of_errors(failing: Path, tmp_path):
    secret = "s3cr3t-token-value"
    log_file = tmp_path / "stack.log"
    env = {"STACK__VARIABLE__TOKEN": secret, "STACK_LOG": str(log_file)}
    echoed = stack("run", "echo", "--actions", str(failing), "-i", "text={{TOKEN}}", env=env)
    assert json.loads(echoed.stdout)["output"] == {"value": secret}
    leaked = stack("run", "secret", "--actions", str(failing), "-i", "text={{TOKEN}}", env=env)
    assert leaked.returncode == 1
    assert secret not in leaked.stdout
    assert json.loads(leaked.stdout)["error"]["stage"] == "output"
    unknown = stack("run", "echo", "--actions", str(failing), "-i", "text={{NOPE}}", env=env)
    assert json.loads(unknown.stdout)["error"]["code"] == "unknown_variable"
    assert secret not in log_file.read_text()


async def test_a_variable_never_reaches_an_error_detail_or_a_log_line(client, failing, caplog):
    """Issue 14: an action's stderr carried a variable's value into error.details.stderr."""
    caplog.set_level(logging.INFO, logger="stack")
    secret = "s3cr3t-token-value"

    def logged() -> str:
        return "\n".join(r.getMessage() for r in caplog.records)

    async with action_server(failing, variables={"TOKEN": secret}) as url:
        response = await client.post(f"{url}/actions/leak", json={"text": "a {{TOKEN}} b"})
        with trio.fail_after(10):  # the server logs the result after it answered
            while "action leak ERROR" not in logged():
                await trio.sleep(0.02)
    assert response.status_code == 502
    assert secret not in response.text
    error = response.json()["error"]
    assert error["details"]["stderr"] == "connecting with a *** b\n"
    assert error["details"]["exit_code"] == 3
    assert "action leak ERROR crashed at run" in logged()
    assert secret not in logged()


# -- HTTP ---------------------------------------------------------------------------


@asynccontextmanager
async def action_server(*folders: Path, variables: dict[str, str] | None = None,
                        reporting_url: str | None = None) -> AsyncIterator[str]:  # fmt: skip
    config = EngineConfig(isolate="auto")
    async with open_app(None, config, actions=list(folders), variables=variables or {},
                        reporting_url=reporting_url) as app:  # fmt: skip
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, app, bind("127.0.0.1", 0))
            try:
                yield url
            finally:
                nursery.cancel_scope.cancel()


async def test_http_runs_every_example_and_describes_them(client):
    async with action_server(EXAMPLES) as url:
        for name in HELLOS:
            response = await client.post(f"{url}/actions/{name}", json={"name": "Ann"})
            assert response.status_code == 200, response.text
            assert response.json() == {"status": "OK", "output": {"sentence": "Hello, Ann!"}}
        dice = await client.post(f"{url}/request", json={
            "action": "random-number", "input": {"min": 1, "max": 6}, "id": "r1"})  # fmt: skip
        listing = await client.get(f"{url}/actions")
        one = await client.get(f"{url}/actions/hello-php")
        doc = await client.get(f"{url}/openapi.json")
    body = dice.json()
    assert body["id"] == "r1"
    assert 1 <= body["output"]["result"] <= 6
    assert {a["name"] for a in listing.json()["actions"]} == {*HELLOS, *EXO_HELLOS,
                                                              "random-number"}  # fmt: skip
    assert one.json()["input"]["required"] == ["name"]
    assert one.json()["example"] == {"action": "hello-php", "input": {"name": "Ann"}}
    assert "/actions/hello-ruby" in doc.json()["paths"]


async def test_http_every_failure_names_its_stage(client, failing):
    async with action_server(failing) as url:
        cases = {
            "not_json_body": await client.post(f"{url}/request", content=b"{oops"),
            "too_deep": await client.post(f"{url}/actions/echo", content=b"[" * 100_000),
            "bad_request": await client.post(f"{url}/request", json={"input": {}}),
            "unknown": await client.post(f"{url}/actions/ghost", json={}),
            "bad_input": await client.post(f"{url}/actions/echo", json={"text": 5}),
            "crash": await client.post(f"{url}/actions/crash", json={}),
            "slow": await client.post(f"{url}/actions/slow", json={}),
            "not_json": await client.post(f"{url}/actions/not-json", json={}),
            "bad_output": await client.post(f"{url}/actions/bad-output", json={}),
            "mapping": await client.post(f"{url}/request", json={
                "action": "echo", "input": {"text": "a"}, "mapping": {"nope": "x"}}),
        }  # fmt: skip
    expected = {
        "not_json_body": (400, "request", "invalid_json"),
        "too_deep": (400, "request", "invalid_json"),
        "bad_request": (400, "request", "invalid_request"),
        "unknown": (404, "action", "unknown_action"),
        "bad_input": (400, "input", "invalid_input"),
        "crash": (502, "run", "crashed"),
        "slow": (504, "run", "timeout"),
        "not_json": (502, "output", "output_not_json"),
        "bad_output": (502, "output", "invalid_output"),
        "mapping": (502, "mapping", "mapping_missing_key"),
    }
    for case, (status, stage, code) in expected.items():
        response = cases[case]
        body = response.json()
        assert response.status_code == status, (case, body)
        assert body["status"] == "ERROR", case
        assert (body["error"]["stage"], body["error"]["code"]) == (stage, code), case
        assert "Traceback" not in response.text
    assert cases["bad_input"].json()["error"]["path"] == "/text"
    assert cases["bad_output"].json()["error"]["schema_path"] == "/properties/value/type"
    assert cases["crash"].json()["error"]["details"]["stderr"] == "it broke\n"
    assert cases["crash"].json()["error"]["details"]["exit_code"] == 3


async def test_schemathesis_finds_no_server_error_and_no_schema_break():
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if st is None:
        pytest.skip("schemathesis is not installed (pip install schemathesis; .ci/run does)")
    async with action_server(EXAMPLES) as url:
        done = await trio.run_process(
            [st, "run", f"{url}/openapi.json", "--checks", "all", "--max-examples", "25",
             "--seed", "1"],
            capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
        )  # fmt: skip
    output = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, output[-4000:]
    assert "passed" in output


# -- reporting webhooks ---------------------------------------------------------------


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[tuple[str, dict[str, list[str]]]]]]:
    """A real local HTTP receiver recording each request's path and query."""
    seen: list[tuple[str, dict[str, list[str]]]] = []

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        async with stream:
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                data += chunk
            target = data.split(b" ", 2)[1].decode()
            parts = urlsplit(target)
            seen.append((parts.path, parse_qs(parts.query)))
            await stream.send_all(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        try:
            yield f"http://127.0.0.1:{port}/report", seen
        finally:
            nursery.cancel_scope.cancel()


async def test_reporting_webhooks_from_http(client, failing):
    async with receiver() as (report_url, seen):
        async with action_server(failing, reporting_url=report_url) as url:
            await client.post(f"{url}/actions/echo", json={"text": "hi"})
            await client.post(f"{url}/actions/crash", json={})
            with trio.fail_after(10):
                while len([p for p, _ in seen if p != "/report/heartbeat"]) < 2:
                    await trio.sleep(0.05)
    paths = [p for p, _ in seen]
    assert "/report/heartbeat" in paths
    success = next(q for p, q in seen if p == "/report/success")
    error = next(q for p, q in seen if p == "/report/error")
    assert success["action"] == ["echo"]
    assert float(success["duration"][0]) >= 0
    assert error["action"] == ["crash"]
    assert error["code"] == ["crashed"]
    assert error["stage"] == ["run"]


async def test_reporting_webhooks_from_the_cli(failing):
    async with receiver() as (report_url, seen):
        done = await trio.run_process(
            [*STACK, "run", "echo", "--actions", str(failing), "-i", "text=x"],
            capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, "STACK_REPORTING_URL": report_url},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert [p for p, _ in seen] == ["/report/success"]
