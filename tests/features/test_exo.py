"""Exo's action format run unchanged: exo.action.yaml, handler/interpreter, the whole
request on stdin and the whole response on stdout, EXO_ACTIONS, EXO__* variables.

The actions here are written exactly as Exo's own are: a bash handler using jq on
the request, a node handler reading /dev/stdin, configuration from EXO__*.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from sandbox.app import open_app
from sandbox.config import env_from_flags
from sandbox.core.engine import EngineConfig
from sandbox.core.languages import Registry
from sandbox.errors import ConfigError
from sandbox.features import actions as act
from sandbox.http.server import bind, serve

from ..conftest import ROOT

STACK = [sys.executable, "-m", "sandbox"]
EXAMPLES = ROOT / "examples" / "actions"
SECRET = "tok-4f9a-very-secret"

GREETING_SCHEMAS = """\
input:
  type: object
  required: [ greeting, name ]
  additionalProperties: false
  properties:
    greeting:
      type: string
      description: Type of greeting
      default: Hello
      enum:
      - Hello
      - Yo
    name:
      type: string
      description: Name to greet

output:
  type: object
  required: [ text ]
  additionalProperties: false
  properties:
    text:
      type: string
"""

# name -> (exo.action.yaml, handler file name, handler code)
EXO_ACTIONS: dict[str, tuple[str, str, str]] = {
    "hello-bash": (
        "name: hello-bash\ndescription: Hello world in Bash\nhandler: hello.sh\n"
        "interpreter: bash\n" + GREETING_SCHEMAS,
        "hello.sh",
        "#!/bin/bash\n\nINPUT=`cat /dev/stdin`\n\n"
        'GREETING=`echo $INPUT | jq -r ".input.greeting"`\n'
        'NAME=`echo $INPUT | jq -r ".input.name"`\n'
        "COLOR=$EXO__EXAMPLE__COLOR\n"
        'printf \'{"status": "OK", "output": {"text": "%s, %s (%s)"}}\' '
        '"$GREETING" "$NAME" "$COLOR"\n',
    ),
    "hello-node": (
        "name: hello-node\ndescription: Hello world in Node JS\nhandler: hello.js\n"
        + GREETING_SCHEMAS,
        "hello.js",
        "let fs = require('fs');\n\n"
        "let request = JSON.parse(fs.readFileSync('/dev/stdin'));\n\n"
        "let color = process.env.EXO__EXAMPLE__COLOR;\n"
        "let text = request.input.greeting + ', ' + request.input.name + ' (' + color + ')';\n\n"
        'let response = {\n  "status": "OK",\n  "output": {\n    "text": text\n  }\n}\n\n'
        "console.log(JSON.stringify(response));\n",
    ),
    "hello-php": (
        "name: hello-php\ndescription: Hello world in PHP\nhandler: hello.php\n"
        + GREETING_SCHEMAS,
        "hello.php",
        "<?php\n\n$request = json_decode(file_get_contents('php://stdin'), true);\n"
        "$input = $request['input'];\n$color = getenv('EXO__EXAMPLE__COLOR');\n"
        "$text = $input['greeting'] . ', ' . $input['name'] . ' (' . $color . ')';\n"
        "echo json_encode(['status' => 'OK', 'output' => ['text' => $text]]) . PHP_EOL;\n",
    ),
    "random-number": (
        "name: random-number\ndescription: Random number generator\nhandler: rand.sh\n"
        "interpreter: bash\n\ninput:\n  type: object\n  required:\n  - min\n  - max\n"
        "  additionalProperties: false\n  properties:\n    min:\n      type: integer\n"
        "    max:\n      type: integer\n\noutput:\n  type: object\n  required:\n  - result\n"
        "  additionalProperties: false\n  properties:\n    result:\n      type: integer\n",
        "rand.sh",
        "#!/bin/bash\nREQUEST=$(cat)\n"
        "MIN=$(echo \"$REQUEST\" | jq '.input.min')\nMAX=$(echo \"$REQUEST\" | jq '.input.max')\n"
        'echo "{\\"status\\": \\"OK\\", \\"output\\": {\\"result\\": $(( MIN + RANDOM % '
        '(MAX - MIN + 1) ))}}"\n',
    ),
    "refuses": (
        "name: refuses\ndescription: Answers ERROR itself\nhandler: refuse.sh\n"
        "interpreter: bash\ninput:\n  type: object\n  properties:\n    token: {type: string}\n"
        "output: ~\n",
        "refuse.sh",
        "#!/bin/bash\nTOKEN=$(jq -r .input.token < /dev/stdin)\n"
        'echo "login failed for $TOKEN" >&2\n'
        'echo "{\\"status\\": \\"ERROR\\", \\"error\\": [\\"Denied: bad token $TOKEN\\"]}"\n'
        "exit 1\n",
    ),
    "crashes": (
        "name: crashes\ndescription: Dies with the token in its stderr\nhandler: crash.js\n"
        "input:\n  type: object\n  properties:\n    token: {type: string}\n",
        "crash.js",
        "const request = JSON.parse(require('fs').readFileSync('/dev/stdin', 'utf8'));\n"
        "console.error('cannot connect with ' + request.input.token);\n"
        "process.exit(2);\n",
    ),
    "no-output": (
        "name: no-output\ndescription: OK without output\nhandler: send.sh\n"
        "interpreter: sh\noutput: ~\n",
        "send.sh",
        "cat > /dev/null\necho '{\"status\": \"OK\"}'\n",
    ),
    "wrong-output": (
        "name: wrong-output\ndescription: Breaks its output schema\nhandler: wrong.sh\n"
        "output:\n  type: object\n  properties:\n    text: {type: string}\n",
        "wrong.sh",
        "cat > /dev/null\necho '{\"status\": \"OK\", \"output\": {\"text\": 5}}'\n",
    ),
    "not-a-response": (
        "name: not-a-response\ndescription: Prints its output, not a response\n"
        "handler: bad.sh\n",
        "bad.sh",
        "cat > /dev/null\necho '{\"text\": \"hi\"}'\n",
    ),
}


def write_exo_actions(folder: Path, names: list[str] | None = None) -> Path:
    for name in names or list(EXO_ACTIONS):
        manifest, handler, code = EXO_ACTIONS[name]
        (folder / name).mkdir(parents=True)
        (folder / name / "exo.action.yaml").write_text(manifest)
        (folder / name / handler).write_text(code)
    return folder


@pytest.fixture
def exo(tmp_path: Path) -> Path:
    """A library of Exo actions, laid out as Exo's own: ``actions/NAME/exo.action.yaml``."""
    return write_exo_actions(tmp_path / "library" / "actions")


# -- sans-IO ----------------------------------------------------------------------


def test_exo_manifests_load_with_handler_and_interpreter(exo: Path):
    actions = act.ActionSet.load([exo], Registry.load())
    assert not actions.problems
    by_name = {a.name: a for a in actions}
    assert set(by_name) == set(EXO_ACTIONS)
    assert by_name["hello-bash"].language.name == "bash"
    assert by_name["hello-node"].language.name == "javascript"  # from .js, as Exo does
    assert by_name["hello-php"].language.name == "php"
    assert by_name["no-output"].language.name == "sh"
    assert by_name["hello-bash"].entry == (exo / "hello-bash" / "hello.sh").resolve()
    assert by_name["refuses"].output_schema == {"type": "object"}  # `output: ~`
    details = by_name["hello-bash"].details()
    assert details["protocol"] == "exo"
    assert details["example"] == {"action": "hello-bash", "input": {"greeting": "Hello",
                                                                   "name": "text"}}  # fmt: skip
    # Clients may leave out what has a default (Exo fills it in), so the OpenAPI says so.
    post = act.openapi(actions)["paths"]["/actions/hello-bash"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == ["name"]


def test_exo_manifest_problems_name_exo_fields(tmp_path: Path):
    folder = tmp_path / "actions"
    (folder / "wrong").mkdir(parents=True)
    (folder / "wrong" / "run.sh").write_text("true\n")
    (folder / "wrong" / "exo.action.yaml").write_text("name: wrong\nentry: run.sh\n")
    (folder / "missing").mkdir()
    (folder / "missing" / "exo.action.yaml").write_text("name: missing\nhandler: gone.sh\n")
    (folder / "odd").mkdir()
    (folder / "odd" / "x.sh").write_text("true\n")
    (folder / "odd" / "exo.action.yaml").write_text(
        "name: odd\nhandler: x.sh\ninterpreter: cobol\n"
    )
    actions = act.ActionSet.load([folder], Registry.load())
    problems = {p.path.parent.name: p for p in actions.problems}
    assert len(actions) == 0
    assert "handler" in problems["wrong"].message
    assert problems["missing"].field == "handler"
    assert "'gone.sh' is not a file" in problems["missing"].message
    assert problems["odd"].field == "interpreter"
    assert "cobol" in problems["odd"].message


def test_exo_input_gets_defaults_and_coerced_strings():
    schema = {"type": "object", "properties": {
        "greeting": {"type": "string", "default": "Hello"},
        "min": {"type": "integer"}, "ratio": {"type": "number"}, "on": {"type": "boolean"},
        "id": {"type": "string"}, "tags": {"type": "array", "items": {"type": "integer"}},
        "nested": {"type": "object", "properties": {"n": {"type": "integer", "default": 2}}},
    }}  # fmt: skip
    value = {"min": "100", "ratio": "2.5", "on": "true", "id": "007", "tags": ["1", "x"],
             "nested": {}}  # fmt: skip
    assert act.exo_input(schema, value) == {
        "greeting": "Hello", "min": 100, "ratio": 2.5, "on": True, "id": "007",
        "tags": [1, "x"], "nested": {"n": 2},
    }  # fmt: skip
    assert act.exo_input(schema, {"min": "ten"})["min"] == "ten"  # left for the validator


def test_exo_responses_are_parsed_whole():
    assert act.parse_exo_response(b'{"status": "OK", "output": {"a": 1}}\n') == {"a": 1}
    assert act.parse_exo_response(b'{"status": "OK"}') == {}
    assert act.parse_exo_response(b'{"status": "OK", "output": []}') == {}
    with pytest.raises(act.ActionError) as info:
        act.parse_exo_response(b'{"status": "ERROR", "error": ["Boom: no"]}')
    assert (info.value.code, info.value.stage) == ("action_error", "run")
    assert info.value.message == "the action answered ERROR: Boom: no"
    assert info.value.extra == {"error": ["Boom: no"]}
    with pytest.raises(act.ActionError) as info:
        act.parse_exo_response(b'{"text": "hi"}')
    assert (info.value.code, info.value.stage) == ("invalid_response", "output")
    assert '{"status": "OK", "output": {...}}' in info.value.message


def test_exo_actions_and_variables_from_the_environment(exo: Path, tmp_path: Path):
    other = write_exo_actions(tmp_path / "more", ["hello-bash"])
    environ = {"EXO_ACTIONS": f"{exo}/*,{other}", "STACK_ACTIONS": ""}
    found = act.directories_from_env(environ)
    assert found[-1] == other
    assert sorted(found[:-1]) == sorted(exo / name for name in EXO_ACTIONS)
    with pytest.raises(ConfigError, match=r"EXO_ACTIONS: '.*nothing/\*' matches no folder"):
        act.directories_from_env({"EXO_ACTIONS": f"{tmp_path}/nothing/*"})
    # A folder reached twice (a glob and its parent) loads once.
    both = act.ActionSet.load([*found[:-1], exo], Registry.load())
    assert len(both) == len(EXO_ACTIONS)
    variables = act.variables_from_env({"EXO__VARIABLE__URL": "https://a", "STACK__VARIABLE__URL":
                                        "https://b", "EXO__VARIABLE__KEY": "k"})  # fmt: skip
    assert variables == {"URL": "https://b", "KEY": "k"}


def test_env_flags_pass_exo_settings_but_not_the_server_environment():
    environ = {"EXO__EXAMPLE__COLOR": "blue", "EXO__SMTP__HOST": "mail", "HOME": "/root",
               "EXO__VARIABLE__TOKEN": SECRET, "AWS_SECRET_ACCESS_KEY": "x"}  # fmt: skip
    assert env_from_flags(["EXO__*"], environ) == {"EXO__EXAMPLE__COLOR": "blue",
                                                   "EXO__SMTP__HOST": "mail"}  # fmt: skip
    assert env_from_flags(["EXO__EXAMPLE__COLOR", "UNSET", "A=1"], environ) == {
        "EXO__EXAMPLE__COLOR": "blue", "A": "1"}  # fmt: skip
    with pytest.raises(ConfigError, match="KEY=VALUE, KEY or PREFIX"):
        env_from_flags(["not a name"], environ)


def test_config_env_takes_values_or_the_flag_forms(tmp_path: Path, monkeypatch):
    from sandbox.config import Config

    monkeypatch.setenv("EXO__EXAMPLE__COLOR", "teal")
    monkeypatch.setenv("EXO__VARIABLE__TOKEN", SECRET)
    listed = Config.from_mapping({"env": ["EXO__*", "A=1"]}, source="stack.yaml")
    assert dict(listed.engine.env) == {"EXO__EXAMPLE__COLOR": "teal", "A": "1"}
    mapped = Config.from_mapping({"env": {"EXO__EXAMPLE__COLOR": "red"}})
    assert dict(mapped.engine.env) == {"EXO__EXAMPLE__COLOR": "red"}
    with pytest.raises(ConfigError, match="stack.yaml: env: --env takes"):
        Config.from_mapping({"env": ["no good"]}, source="stack.yaml")


# -- CLI ----------------------------------------------------------------------------


def stack(*args: str, stdin: str | None = None, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STACK_", "EXO"))}
    return subprocess.run([*STACK, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
                          cwd=cwd)  # fmt: skip


def test_cli_lists_shows_and_runs_exo_actions_from_exo_actions(exo: Path):
    env = {"EXO_ACTIONS": f"{exo}/*", "EXO__EXAMPLE__COLOR": "blue"}
    listed = stack("action", env=env)
    assert listed.returncode == 0, listed.stderr
    header, *rows = listed.stdout.splitlines()
    assert header.split()[0] == "NAME"
    names = [line.split()[0] for line in rows]
    assert names == sorted(EXO_ACTIONS)
    assert "Hello world in Bash" in listed.stdout
    shown = stack("action", "hello-node", env=env)
    assert shown.returncode == 0
    assert "hello-node (javascript)" in shown.stdout
    # The server's EXO__EXAMPLE__COLOR stays out of the call unless -e passes it.
    for name in ("hello-bash", "hello-node", "hello-php"):
        closed = stack("run", name, "-i", "name=Alice", env=env)
        assert json.loads(closed.stdout)["output"]["text"] in (
            "Hello, Alice ()", "Hello, Alice (undefined)")  # fmt: skip
        passed = stack("run", name, "-i", "name=Alice", "-i", "greeting=Yo",
                       "-e", "EXO__EXAMPLE__COLOR", env=env)  # fmt: skip
        assert passed.returncode == 0, passed.stderr
        assert json.loads(passed.stdout) == {"status": "OK",
                                             "output": {"text": "Yo, Alice (blue)"}}  # fmt: skip


def test_cli_request_with_mapping_and_exo_style_errors(exo: Path):
    env = {"EXO_ACTIONS": str(exo)}
    # Exo's README request: numbers as strings, an output mapping.
    request = {"action": "random-number", "input": {"min": "100", "max": "100"},
               "mapping": {"result": "surprise"}}  # fmt: skip
    done = stack("request", stdin=json.dumps(request), env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "OK", "output": {"surprise": 100}}
    bad = stack("run", "hello-bash", "-i", "name=Ann", "-i", "greeting=Howdy", env=env)
    assert bad.returncode == 1
    response = json.loads(bad.stdout)
    assert response["status"] == "ERROR"
    assert response["error"]["stage"] == "input"
    assert response["error"]["path"] == "/greeting"
    assert "'Howdy' is not one of ['Hello', 'Yo']" in response["error"]["message"]
    missing = stack("request", stdin=json.dumps({"action": "hello-node", "input": {}}), env=env)
    assert json.loads(missing.stdout)["error"]["message"] == (
        "input does not match its schema: 'name' is a required property")
    broken = json.loads(stack("run", "wrong-output", env=env).stdout)
    assert broken["status"] == "ERROR"
    assert (broken["error"]["stage"], broken["error"]["code"]) == ("output", "invalid_output")
    assert broken["error"]["path"] == "/text"
    wrong = stack("run", "not-a-response", env=env)
    assert json.loads(wrong.stdout)["error"]["code"] == "invalid_response"
    empty = stack("run", "no-output", env=env)
    assert json.loads(empty.stdout) == {"status": "OK", "output": {}}


def test_cli_uses_dot_actions_by_default(exo: Path, tmp_path: Path):
    project = exo.parent  # holds actions/
    done = stack("run", "hello-bash", "-i", "name=Ann", "-e", "EXO__EXAMPLE__COLOR=red",
                 cwd=project)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["output"] == {"text": "Hello, Ann (red)"}
    (project / "stack.yaml").write_text('env: ["EXO__*"]\n')
    configured = stack("run", "hello-node", "-i", "name=Ann", "--config", "stack.yaml",
                       cwd=project, env={"EXO__EXAMPLE__COLOR": "gold"})  # fmt: skip
    assert json.loads(configured.stdout)["output"] == {"text": "Hello, Ann (gold)"}
    nowhere = stack("action", cwd=tmp_path)
    assert nowhere.returncode == 2
    assert "EXO_ACTIONS" in nowhere.stderr
    assert "./actions" in nowhere.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = stack("action", "--actions", str(empty))
    assert none.returncode == 0
    assert "exo.action.yaml" in none.stderr


def test_cli_exo_variables_reach_the_action_and_never_a_response_or_log(exo: Path,
                                                                          tmp_path: Path):  # fmt: skip
    log_file = tmp_path / "stack.log"
    env = {"EXO_ACTIONS": str(exo), "EXO__VARIABLE__TOKEN": SECRET, "STACK_LOG": str(log_file)}
    refused = stack("run", "refuses", "-i", "token={{TOKEN}}", "-v", env=env)
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "action_error"
    assert error["message"] == "the action answered ERROR: Denied: bad token ***"
    assert error["details"]["error"] == ["Denied: bad token ***"]
    assert error["details"]["stderr"] == "login failed for ***\n"
    crashed = stack("run", "crashes", "-i", "token=x-{{TOKEN}}-y", "-v", env=env)
    error = json.loads(crashed.stdout)["error"]
    assert error["code"] == "crashed"
    assert error["details"]["stderr"] == "cannot connect with x-***-y\n"
    for done in (refused, crashed):
        assert SECRET not in done.stdout + done.stderr
    logged = log_file.read_text()
    assert "action refuses ERROR action_error at run: the action answered ERROR: Denied: bad token ***" in logged
    assert "action crashes ERROR crashed" in logged
    assert SECRET not in logged


# -- HTTP ---------------------------------------------------------------------------


@asynccontextmanager
async def exo_server(*folders: Path, variables: dict[str, str] | None = None,
                     ) -> AsyncIterator[str]:  # fmt: skip
    config = EngineConfig(isolate="auto", env={"EXO__EXAMPLE__COLOR": "green"})
    async with open_app(None, config, actions=list(folders), variables=variables or {}) as app:
        async with trio.open_nursery() as nursery:
            url = await nursery.start(serve, app, bind("127.0.0.1", 0))
            try:
                yield url
            finally:
                nursery.cancel_scope.cancel()


async def test_http_runs_exo_actions_and_answers_exo_responses(client, exo: Path):
    async with exo_server(exo, variables={"TOKEN": SECRET}) as url:
        answers: dict[str, Any] = {}
        for name in ("hello-bash", "hello-node", "hello-php"):
            answers[name] = await client.post(f"{url}/actions/{name}", json={"name": "Ann"})
            answers[f"{name} request"] = await client.post(f"{url}/request", json={
                "action": name, "input": {"name": "Bob", "greeting": "Yo"}, "id": "r-7",
                "mapping": {"text": "sentence"}})  # fmt: skip
        bad_input = await client.post(f"{url}/actions/hello-node", json={"name": 5})
        refused = await client.post(f"{url}/request", json={
            "action": "refuses", "input": {"token": "{{TOKEN}}"}})  # fmt: skip
        described = await client.get(f"{url}/actions/hello-bash")
    for name in ("hello-bash", "hello-node", "hello-php"):
        assert answers[name].status_code == 200, answers[name].text
        assert answers[name].json() == {"status": "OK", "output": {"text": "Hello, Ann (green)"}}
        assert answers[f"{name} request"].json() == {
            "status": "OK", "output": {"sentence": "Yo, Bob (green)"}, "id": "r-7"}  # fmt: skip
    assert bad_input.status_code == 400
    assert bad_input.json()["status"] == "ERROR"
    assert bad_input.json()["error"]["path"] == "/name"
    assert refused.status_code == 502
    assert SECRET not in refused.text
    assert refused.json()["error"]["details"]["stderr"] == "login failed for ***\n"
    assert described.json()["protocol"] == "exo"


async def test_example_exo_actions_run_over_http(client):
    async with exo_server(EXAMPLES) as url:
        bash = await client.post(f"{url}/actions/exo-hello-bash", json={"name": "Ann"})
        node = await client.post(f"{url}/request", json={
            "action": "exo-hello-node", "input": {"name": "Ann", "greeting": "Hi"}})  # fmt: skip
    assert bash.json() == {"status": "OK", "output": {"text": "Hello, Ann (calm)"}}
    assert node.json() == {"status": "OK", "output": {"text": "Hi, Ann (calm)"}}
