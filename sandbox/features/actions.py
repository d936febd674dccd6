"""Actions: typed functions in any language, a YAML manifest with JSON Schemas each.

    examples/actions/hello-python/
        action.yaml        name, description, tags, entry, input/output schemas, limits
        main.py            reads its input (a JSON object) on stdin, writes its output on stdout

    examples/actions/exo-hello-bash/
        exo.action.yaml    Exo's manifest: name, description, handler, interpreter?, schemas
        hello.sh           reads the whole request on stdin, prints the whole response

The two formats share everything (schemas, variables, mapping, redaction); they
differ in what the code reads and writes (:attr:`Action.protocol`). The
request and response are Exo's:

    {"action": "hello", "input": {"name": "Ann"}, "mapping": {"sentence": "text"}}
    {"status": "OK", "output": {...}}
    {"status": "ERROR", "error": {"code": ..., "stage": ..., "message": ...}}

Loading, validation, variable substitution, mapping and the OpenAPI document
are sans-IO; :func:`run_request` runs the pipeline through the engine.

One module (about 950 lines) because the two manifest formats and the
pipeline steps are one contract: a field a manifest declares is validated,
substituted, mapped and redacted here, and the OpenAPI document is drawn
from the same definitions.
"""

from __future__ import annotations

import copy
import glob
import json
import os
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from ..core.engine import Engine
from ..core.invocation import Invocation
from ..core.languages import Language, Registry
from ..core.limits import Limits
from ..core.process import CollectIO
from ..errors import ConfigError, LanguageError, StackError

MANIFESTS = ("action.yaml", "action.yml")
EXO_MANIFESTS = ("exo.action.yaml", "exo.action.yml")
VARIABLE_PREFIX = "STACK__VARIABLE__"
EXO_VARIABLE_PREFIX = "EXO__VARIABLE__"
DEFAULT_DIRECTORY = Path("actions")
_VARIABLE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FIELDS = {
    "name", "description", "tags", "language", "entry", "input", "output", "limits", "help",
    "events", "env",
}  # fmt: skip
# Exo's manifest names the entry file `handler` and the language `interpreter`.
_EXO_FIELDS = (_FIELDS - {"entry", "language"}) | {"handler", "interpreter"}
MAX_OUTPUT = 16 * 1024 * 1024


def _schema(name: str) -> dict[str, Any]:
    text = resources.files("sandbox.features.schemas").joinpath(name).read_text(encoding="utf-8")
    value: dict[str, Any] = json.loads(text)
    return value


REQUEST_SCHEMA = _schema("request.schema.json")
RESPONSE_SCHEMA = _schema("response.schema.json")
_REQUEST = Draft202012Validator(REQUEST_SCHEMA)
_RESPONSE = Draft202012Validator(RESPONSE_SCHEMA)
# HTTP status of an ERROR response, by the stage that failed.
STATUS_OF_STAGE = {
    "request": 400, "action": 404, "input": 400, "variables": 400, "run": 502,
    "output": 502, "mapping": 502, "response": 500,
}  # fmt: skip


class ActionError(StackError):
    """A failed stage of the action pipeline; becomes an ERROR response.

    Attributes:
        stage: ``request``, ``action``, ``input``, ``variables``, ``run``,
            ``output``, ``mapping`` or ``response``.
        path: where in the instance (JSON pointer), for schema errors.
        schema_path: where in the schema, for schema errors.
    """

    def __init__(self, code: str, stage: str, message: str, *, path: str | None = None,
                 schema_path: str | None = None, details: Mapping[str, Any] | None = None,
                 ) -> None:  # fmt: skip
        super().__init__(message)
        self.code = code
        self.stage = stage
        self.status = 504 if code == "timeout" else STATUS_OF_STAGE.get(stage, 500)
        self.path = path
        self.schema_path = schema_path
        self.extra = dict(details or {})

    def error(self) -> dict[str, Any]:
        """The ``error`` object of the response."""
        body: dict[str, Any] = {"code": self.code, "stage": self.stage, "message": self.message}
        if self.path is not None:
            body["path"] = self.path
        if self.schema_path is not None:
            body["schema_path"] = self.schema_path
        if self.extra:
            body["details"] = self.extra
        return body


@dataclass(frozen=True)
class Action:
    """One action, loaded from its manifest.

    Attributes:
        name: unique name (the URL is /actions/NAME).
        folder: the folder holding the manifest and the code.
        entry: the entry file, inside ``folder``.
        language: its language.
        input_schema, output_schema: JSON Schemas (2020-12).
        limits: overrides of the server's limits.
        events: flyte-style event names: ``success``, ``failure``, ``fatal``.
        protocol: ``stack`` (stdin: the input; stdout: the output) or ``exo``
            (stdin: the whole request; stdout: the whole response), from the
            manifest's file name.
    """

    name: str
    folder: Path
    entry: Path
    language: Language
    description: str = ""
    tags: tuple[str, ...] = ()
    input_schema: Mapping[str, Any] = field(default_factory=dict)
    output_schema: Mapping[str, Any] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)
    help: str | None = None
    events: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    manifest: Path | None = None
    protocol: str = "stack"

    def summary(self) -> dict[str, Any]:
        """Name, language, description and tags (``GET /actions``)."""
        return {
            "name": self.name,
            "language": self.language.name,
            "description": self.description,
            "tags": list(self.tags),
        }

    def details(self) -> dict[str, Any]:
        """Everything a caller needs (``GET /actions/NAME``)."""
        return {
            **self.summary(),
            "input": self.input_schema,
            "output": self.output_schema,
            "help": self.help,
            "limits": dict(self.limits),
            "events": dict(self.events),
            "protocol": self.protocol,
            "example": example_request(self),
        }


@dataclass(frozen=True)
class Problem:
    """A manifest that could not be loaded: which file, which field, what is wrong."""

    path: Path
    field: str
    message: str

    def __str__(self) -> str:
        where = f" (field {self.field!r})" if self.field else ""
        return f"{self.path}{where}: {self.message}"


class ActionSet:
    """The actions of a server, by name, plus the manifests that failed to load."""

    def __init__(self, actions: Iterable[Action], problems: Iterable[Problem] = ()) -> None:
        self._actions = {a.name: a for a in actions}
        self.problems = list(problems)

    @classmethod
    def load(cls, directories: Sequence[Path], registry: Registry) -> ActionSet:
        """Load every action under ``directories`` (each folder with an action.yaml).

        A malformed manifest is reported in :attr:`problems` and skipped; it
        does not stop the others.

        Raises:
            ConfigError: two actions with the same name (naming both folders),
                or a directory that does not exist.
        """
        actions: dict[str, Action] = {}
        problems: list[Problem] = []
        seen: set[Path] = set()
        for directory in directories:
            if not directory.is_dir():
                raise ConfigError(f"actions directory {directory} does not exist")
            for manifest in _manifests(directory):
                # A folder named twice (a glob and its parent, two variables) loads once.
                if manifest.resolve() in seen:
                    continue
                seen.add(manifest.resolve())
                try:
                    action = load_manifest(manifest, registry)
                except _ManifestError as exc:
                    problems.append(exc.problem)
                    continue
                other = actions.get(action.name)
                if other is not None:
                    raise ConfigError(
                        f"two actions are named {action.name!r}: {other.folder} and {action.folder}"
                    )
                actions[action.name] = action
        return cls(actions.values(), problems)

    def __iter__(self) -> Iterator[Action]:
        return iter(sorted(self._actions.values(), key=lambda a: a.name))

    def __len__(self) -> int:
        return len(self._actions)

    def get(self, name: str) -> Action:
        """The action called ``name``.

        Raises:
            ActionError: stage ``action``, listing the known names.
        """
        action = self._actions.get(name)
        if action is None:
            known = ", ".join(sorted(self._actions)) or "none"
            raise ActionError("unknown_action", "action",
                              f"no action named {name!r}; actions: {known}")  # fmt: skip
        return action


def directories_from_env(environ: Mapping[str, str]) -> list[Path]:
    """``STACK_ACTIONS`` (a path list like PATH: ``dir1:dir2``) and ``EXO_ACTIONS``.

    ``EXO_ACTIONS`` is Exo's: comma separated (``:`` works too), each part a folder
    or a glob of folders (``/srv/core-exo-actions/actions/*``). Globs work in
    ``STACK_ACTIONS`` too; files a glob matches are skipped.

    Raises:
        ConfigError: a glob that matches no folder, naming the variable.
    """
    found: list[Path] = []
    for variable, separators in (("STACK_ACTIONS", os.pathsep), ("EXO_ACTIONS", ",:")):
        raw = environ.get(variable, "")
        for part in re.split(f"[{re.escape(separators)}]", raw):
            part = part.strip()
            if not part:
                continue
            if not glob.has_magic(part):
                found.append(Path(part))
                continue
            matches = [Path(m) for m in sorted(glob.glob(part)) if Path(m).is_dir()]
            if not matches:
                raise ConfigError(f"{variable}: {part!r} matches no folder; "
                                  "point it at a folder of actions")  # fmt: skip
            found.extend(matches)
    return found


def action_directories(flags: Sequence[Path], environ: Mapping[str, str],
                       default: Path = DEFAULT_DIRECTORY) -> list[Path]:  # fmt: skip
    """The action folders of a command: ``--actions``, then the variables; else ``./actions``.

    ``default`` is used only when nothing else names a folder and it exists.
    """
    directories = [*flags, *directories_from_env(environ)]
    if not directories and default.is_dir():
        directories.append(default)
    return directories


def _manifest_in(folder: Path) -> Path | None:
    for name in (*MANIFESTS, *EXO_MANIFESTS):
        if (folder / name).is_file():
            return folder / name
    return None


def _manifests(directory: Path) -> list[Path]:
    found = []
    here = _manifest_in(directory)
    if here is not None:
        found.append(here)
    for sub in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
        manifest = _manifest_in(sub)
        if manifest is not None:
            found.append(manifest)
    return found


class _ManifestError(Exception):
    def __init__(self, path: Path, field_name: str, message: str) -> None:
        super().__init__(message)
        self.problem = Problem(path, field_name, message)


def load_manifest(path: Path, registry: Registry) -> Action:
    """Load one manifest (raises _ManifestError naming the field)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise _ManifestError(path, "", f"cannot read the manifest: {exc}") from exc
    if not isinstance(data, dict):
        raise _ManifestError(path, "", "expected a mapping at the top")
    exo = path.name in EXO_MANIFESTS
    entry_field, language_field = ("handler", "interpreter") if exo else ("entry", "language")
    unknown = set(data) - (_EXO_FIELDS if exo else _FIELDS)
    if unknown:
        hint = (f"; an {path.name} names its code with handler (and interpreter)"
                if exo and unknown & {"entry", "language"} else "")  # fmt: skip
        raise _ManifestError(path, sorted(unknown)[0],
                             f"unknown field(s) {', '.join(sorted(unknown))}{hint}")  # fmt: skip
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _ManifestError(path, "name", "must be a name of letters, digits, '.', '_', '-'")
    folder = path.parent
    entry_name = data.get(entry_field)
    if not isinstance(entry_name, str) or not entry_name:
        raise _ManifestError(path, entry_field, "must name the entry file")
    entry = (folder / entry_name).resolve()
    if not entry.is_relative_to(folder.resolve()) or not entry.is_file():
        raise _ManifestError(path, entry_field, f"{entry_name!r} is not a file in {folder}")
    try:
        if data.get(language_field):
            language = _language(registry, str(data[language_field]))
        else:
            language = registry.detect(entry.name, entry.read_bytes()[:256])
    except LanguageError as exc:
        raise _ManifestError(path, language_field, exc.message) from exc
    schemas = {}
    for key in ("input", "output"):
        # Exo writes `output: ~` for an action without output: any object.
        schemas[key] = _load_schema(path, key, data.get(key) or {"type": "object"})
    tags = data.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _ManifestError(path, "tags", "must be a list of strings")
    limits = data.get("limits") or {}
    if not isinstance(limits, dict):
        raise _ManifestError(path, "limits", "must be a mapping")
    try:
        Limits.from_mapping(limits)
    except ConfigError as exc:
        raise _ManifestError(path, "limits", exc.message) from exc
    events = data.get("events") or {}
    if not isinstance(events, dict) or not set(events) <= {"success", "failure", "fatal"}:
        raise _ManifestError(path, "events", "a mapping of success, failure, fatal to names")
    env = data.get("env") or {}
    if not isinstance(env, dict):
        raise _ManifestError(path, "env", "must be a mapping")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _ManifestError(path, "description", "must be a string")
    help_url = data.get("help")
    if help_url is not None and not isinstance(help_url, str):
        raise _ManifestError(path, "help", "must be a URL string")
    return Action(
        name=name,
        folder=folder,
        entry=entry,
        language=language,
        description=description.strip(),
        tags=tuple(tags),
        input_schema=schemas["input"],
        output_schema=schemas["output"],
        limits=limits,
        help=help_url,
        events={str(k): str(v) for k, v in events.items()},
        env={str(k): str(v) for k, v in env.items()},
        manifest=path,
        protocol="exo" if exo else "stack",
    )


def _language(registry: Registry, name: str) -> Language:
    """A language by name or alias, or by its interpreter (Exo's ``interpreter: node``,
    ``python3``, ``/usr/bin/php``)."""
    try:
        return registry.get(name)
    except LanguageError:
        program = name.rsplit("/", 1)[-1]
        try:
            return registry.detect("", f"#!/usr/bin/env {program}\n".encode())
        except LanguageError:
            pass
        raise


def _load_schema(path: Path, key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        schema_file = (path.parent / value).resolve()
        try:
            value = json.loads(schema_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise _ManifestError(path, key, f"cannot read schema file {value!r}: {exc}") from exc
    if not isinstance(value, dict):
        raise _ManifestError(path, key, "must be a JSON Schema object (or a .json file name)")
    try:
        Draft202012Validator.check_schema(value)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise _ManifestError(
            path, key, f"not a valid JSON Schema at /{where}: {exc.message}"
        ) from exc
    return value


# -- the pipeline, sans-IO ------------------------------------------------------


def validate_request(data: Any) -> dict[str, Any]:
    """Check a request against request.schema.json.

    Raises:
        ActionError: stage ``request``, naming the first problem and its path.
    """
    if isinstance(data, dict):
        # PHP clients of Exo encode an empty input or mapping as [].
        data = {k: {} if k in ("input", "mapping") and v == [] else v for k, v in data.items()}
    _check(_REQUEST, data, "invalid_request", "request")
    assert isinstance(data, dict)
    return data


def validate(schema: Mapping[str, Any], instance: Any, stage: str) -> None:
    """Check ``instance`` against an action's schema.

    Raises:
        ActionError: ``invalid_input`` or ``invalid_output``, with the paths.
    """
    _check(Draft202012Validator(schema), instance, f"invalid_{stage}", stage)


def _check(validator: Draft202012Validator, instance: Any, code: str, stage: str) -> None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return
    path = "/" + "/".join(str(p) for p in error.absolute_path)
    schema_path = "/" + "/".join(str(p) for p in error.absolute_schema_path)
    where = f" at {path}" if path != "/" else ""
    raise ActionError(code, stage, f"{stage} does not match its schema{where}: {error.message}",
                      path=path, schema_path=schema_path)  # fmt: skip


def variables_from_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``STACK__VARIABLE__NAME=value`` (or Exo's ``EXO__VARIABLE__NAME``) -> ``{"NAME": "value"}``.

    When both name one variable, ``STACK__VARIABLE__`` wins.
    """
    found: dict[str, str] = {}
    for prefix in (EXO_VARIABLE_PREFIX, VARIABLE_PREFIX):
        found.update({k[len(prefix) :]: v for k, v in environ.items()
                      if k.startswith(prefix) and len(k) > len(prefix)})  # fmt: skip
    return found


def substitute(value: Any, variables: Mapping[str, str], used: set[str] | None = None) -> Any:
    """Replace ``{{NAME}}`` in every string of ``value`` by the variable's value.

    Raises:
        ActionError: stage ``variables``, naming the unknown variable (never a value).
    """
    used = used if used is not None else set()
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                message = (
                    f"unknown variable {{{{{name}}}}}: set {VARIABLE_PREFIX}{name} "
                    f"(or {EXO_VARIABLE_PREFIX}{name}) in the server's environment"
                )
                raise ActionError("unknown_variable", "variables", message)
            used.add(name)
            return variables[name]

        return _VARIABLE.sub(replace, value)
    if isinstance(value, list):
        return [substitute(v, variables, used) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables, used) for k, v in value.items()}
    return value


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact_value(value: Any, secrets: Sequence[str]) -> Any:
    """``value`` with :func:`redact` applied to every string in it, keys included."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, list | tuple):
        return [redact_value(v, secrets) for v in value]
    if isinstance(value, Mapping):
        return {redact(str(k), secrets): redact_value(v, secrets) for k, v in value.items()}
    return value


def apply_mapping(output: Mapping[str, Any], mapping: Mapping[str, str]) -> dict[str, Any]:
    """Rename output keys: ``{"result": "surprise"}`` moves ``result`` to ``surprise``.

    Raises:
        ActionError: stage ``mapping``, when a mapped key is not in the output.
    """
    result = dict(output)
    for source, target in mapping.items():
        if source not in output:
            raise ActionError("mapping_missing_key", "mapping",
                              f"mapping names {source!r}, which the output does not have",
                              path="/" + source)  # fmt: skip
        value = output[source]
        result.pop(source, None)
        result[target] = value
    return result


def parse_output(stdout: bytes) -> dict[str, Any]:
    """The action's output: one JSON object on stdout.

    Raises:
        ActionError: ``output_not_json``.
    """
    text = stdout.decode("utf-8", "replace").strip()
    try:
        value = json.loads(text)
    except ValueError as exc:
        shown = text[:200] + ("..." if len(text) > 200 else "")
        message = f"the action's output is not JSON ({exc}): {shown!r}"
        raise ActionError("output_not_json", "output", message) from exc
    if not isinstance(value, dict):
        kind = type(value).__name__
        message = f"the action's output must be a JSON object, got {kind}"
        raise ActionError("output_not_object", "output", message)
    return value


# -- Exo's protocol, sans-IO ------------------------------------------------------

_INTEGER = re.compile(r"^-?[0-9]+$")
_NUMBER = re.compile(r"^-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$")


def exo_input(schema: Mapping[str, Any], value: Any) -> Any:
    """An Exo action's input as Exo's validator sees it: defaults filled in, strings
    coerced to the schema's type.

    Exo validates with defaults applied and types coerced, so its manifests mark
    a property ``required`` that has a ``default``, and its clients send
    ``{"min": "100"}`` for an integer. The result is what the handler gets.
    """
    if not isinstance(schema, Mapping):
        return value
    if isinstance(value, dict):
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return value
        result = dict(value)
        for key, sub in properties.items():
            if not isinstance(sub, Mapping):
                continue
            if key not in result and "default" in sub:
                result[key] = copy.deepcopy(sub["default"])
            if key in result:
                result[key] = exo_input(sub, result[key])
        return result
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [exo_input(schema["items"], v) for v in value]
    if isinstance(value, str):
        kind = schema.get("type")
        kinds = kind if isinstance(kind, list) else [kind]
        if "string" in kinds or kind is None:
            return value
        if "integer" in kinds and _INTEGER.match(value):
            return int(value)
        if "number" in kinds and _NUMBER.match(value):
            number = float(value)
            return int(number) if number.is_integer() and _INTEGER.match(value) else number
        if "boolean" in kinds and value in ("true", "false"):
            return value == "true"
    return value


def accepted_input(action: Action) -> Mapping[str, Any]:
    """The input schema a client must meet (OpenAPI): an Exo action's properties
    with a ``default`` may be left out, though its manifest lists them as required."""
    if action.protocol != "exo":
        return action.input_schema
    schema: Mapping[str, Any] = _defaults_optional(action.input_schema)
    return schema


def _defaults_optional(schema: Any) -> Any:
    if not isinstance(schema, Mapping):
        return schema
    result = dict(schema)
    properties = schema.get("properties")
    if isinstance(properties, Mapping):
        result["properties"] = {k: _defaults_optional(v) for k, v in properties.items()}
        required = schema.get("required")
        if isinstance(required, list):
            result["required"] = [
                name for name in required
                if not (isinstance(properties.get(name), Mapping) and "default" in properties[name])
            ]  # fmt: skip
    if isinstance(schema.get("items"), Mapping):
        result["items"] = _defaults_optional(schema["items"])
    return result


def exo_stdin(request: Mapping[str, Any], value: Any) -> bytes:
    """What an Exo handler reads on stdin: the whole request, its input prepared."""
    whole = {k: v for k, v in request.items() if k in ("id", "action", "mapping", "reply-to")}
    whole["input"] = value
    return json.dumps(whole, ensure_ascii=False).encode()


def parse_exo_response(stdout: bytes) -> dict[str, Any]:
    """The output of an Exo handler's response, ``{"status": "OK", "output": {...}}``.

    A response without ``output`` has an empty one (Exo's own actions do that).

    Raises:
        ActionError: not a response (stage ``output``), or the handler's own
            ``{"status": "ERROR", "error": ...}`` (``action_error``, stage ``run``,
            the handler's error in ``details.error``).
    """
    response = parse_output(stdout)
    status = response.get("status")
    if status == "OK":
        output = response.get("output", {})
        if output == []:
            output = {}  # PHP's empty array
        if not isinstance(output, dict):
            kind = type(output).__name__
            raise ActionError("invalid_response", "output",
                              f"the action's response has an output that is {kind}, "
                              "not an object")  # fmt: skip
        return output
    if status == "ERROR":
        error = response.get("error")
        details = {"error": error} if error is not None else {}
        raise ActionError("action_error", "run", f"the action answered ERROR: {_text(error)}",
                          details=details)  # fmt: skip
    shown = json.dumps(response)[:200]
    raise ActionError("invalid_response", "output",
                      'an Exo action (exo.action.yaml) prints its whole response, '
                      '{"status": "OK", "output": {...}} or {"status": "ERROR", "error": ...}; '
                      f"got {shown}")  # fmt: skip


def _text(error: Any) -> str:
    if error is None:
        return "(no error given)"
    if isinstance(error, str):
        return error
    if isinstance(error, list) and all(isinstance(e, str) for e in error):
        return "; ".join(error)
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return json.dumps(error)[:500]


def ok(output: Mapping[str, Any], request_id: str | None = None) -> dict[str, Any]:
    """An OK response."""
    body: dict[str, Any] = {"status": "OK", "output": dict(output)}
    if request_id is not None:
        body["id"] = request_id
    return body


def failed(error: ActionError, request_id: str | None = None) -> dict[str, Any]:
    """An ERROR response."""
    body: dict[str, Any] = {"status": "ERROR", "error": error.error()}
    if request_id is not None:
        body["id"] = request_id
    return body


def example_request(action: Action) -> dict[str, Any]:
    """A request for ``action`` built from its input schema (examples, defaults, types)."""
    return {"action": action.name, "input": _example(action.input_schema)}


def _example(schema: Mapping[str, Any]) -> Any:
    if "examples" in schema and schema["examples"]:
        return schema["examples"][0]
    if "default" in schema:
        return schema["default"]
    if "const" in schema:
        return schema["const"]
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = schema.get("required", list(props))
        return {k: _example(props[k]) for k in required if k in props}
    return {"string": "text", "integer": schema.get("minimum", 1), "number": 1.5,
            "boolean": True, "array": [], "null": None}.get(str(kind), None)  # fmt: skip


def coerce_inputs(pairs: Sequence[str], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``-i key=value`` pairs into an input object, typed by the input schema.

    ``key=@file.json`` reads a JSON value from a file.

    Raises:
        ConfigError: a pair without ``=``, or a value that is not of its type.
    """
    props = schema.get("properties", {})
    result: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"-i takes key=value, got {pair!r}")
        if raw.startswith("@"):
            try:
                result[key] = json.loads(Path(raw[1:]).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"-i {key}: cannot read JSON from {raw[1:]!r}: {exc}") from exc
            continue
        kind = props.get(key, {}).get("type", "string")
        kinds = kind if isinstance(kind, list) else [kind]
        result[key] = _coerce(key, raw, kinds)
    return result


def _coerce(key: str, raw: str, kinds: Sequence[str]) -> Any:
    for kind in kinds:
        try:
            if kind == "integer":
                return int(raw)
            if kind == "number":
                return float(raw) if not raw.lstrip("-").isdigit() else int(raw)
            if kind == "boolean" and raw.lower() in ("true", "false", "1", "0", "yes", "no"):
                return raw.lower() in ("true", "1", "yes")
            if kind in ("object", "array"):
                return json.loads(raw)
            if kind == "null" and raw in ("", "null"):
                return None
            if kind == "string":
                return raw
        except ValueError:
            continue
    raise ConfigError(f"-i {key}={raw!r} is not of type {' or '.join(kinds)}")


# -- running ----------------------------------------------------------------------


@dataclass
class Result:
    """A finished request: the response, its HTTP status, and what to report."""

    response: dict[str, Any]
    status: int
    action: str | None
    duration: float
    error: ActionError | None = None
    fatal: bool = False


async def run_request(engine: Engine, actions: ActionSet, request: Any,
                      variables: Mapping[str, str], *, request_id: str | None = None,
                      ) -> Result:  # fmt: skip
    """The whole pipeline: validate, find, check input, substitute, run, check output, map.

    Never raises for a bad request or a failing action: every failure is an
    ERROR response naming its stage (and never showing a variable's value).
    """
    started = time.monotonic()
    used: set[str] = set()
    name: str | None = None
    try:
        data = validate_request(request)
        name = data["action"]
        if request_id is None and "id" in data:
            request_id = data["id"]
        action = actions.get(data["action"])
        value = data.get("input", {})
        if action.protocol == "exo":
            value = exo_input(action.input_schema, value)
        validate(action.input_schema, value, "input")
        value = substitute(value, variables, used)
        stdin = exo_stdin(data, value) if action.protocol == "exo" else json.dumps(value).encode()
        output = await _run(engine, action, value, stdin)
        validate(action.output_schema, output, "output")
        output = apply_mapping(output, data.get("mapping", {}))
        response = ok(output, request_id)
        _check(_RESPONSE, response, "invalid_response", "response")
        return Result(response, 200, name, time.monotonic() - started)
    except ActionError as exc:
        # Every string of an error, details included (an action's stderr, its own
        # ERROR response), so a variable's value never reaches a response or a log.
        secrets = list(variables.values())
        exc.message = redact(exc.message, secrets)
        exc.extra = redact_value(exc.extra, secrets)
        exc.path = None if exc.path is None else redact(exc.path, secrets)
        response = failed(exc, request_id)
        fatal = exc.code in ("crashed", "signal")
        return Result(response, exc.status, name, time.monotonic() - started, exc, fatal)


async def _run(engine: Engine, action: Action, value: Any, stdin: bytes) -> dict[str, Any]:
    try:
        limits = engine.limits_for(action.limits)
    except StackError as exc:
        raise ActionError("bad_limits", "run", exc.message) from exc
    limits = Limits(**{**limits.to_json(), "output": min(limits.output or MAX_OUTPUT, MAX_OUTPUT)})
    async with engine.open_call(limits) as call:
        hook = {"params": value, "req": {}, "env": dict(action.env)}
        invocation = Invocation(action.language, action.entry, hook=hook, env=action.env,
                                stdin=stdin, code_dir=action.folder, door="action")  # fmt: skip
        collect = CollectIO()
        try:
            if action.language.compile:
                call.write_file(action.entry.name, action.entry.read_bytes())
                built = await call.build(
                    Invocation(action.language, call.workdir / action.entry.name),
                    [action.entry.name],
                    engine.compile_limits(),
                )
                if built.directory is None:
                    output = built.output.decode(errors="replace")[-4000:]
                    raise ActionError("compile_failed", "run", "the action does not compile",
                                      details={"output": output})  # fmt: skip
                invocation = Invocation(action.language, action.entry, hook=hook, env=action.env,
                                        stdin=stdin, code_dir=action.folder,
                                        build=built.directory, door="action")  # fmt: skip
            outcome = await call.run(invocation, collect)
        except LanguageError as exc:
            raise ActionError("interpreter_missing", "run", exc.message) from exc
    if not outcome.ok:
        stderr = collect.stderr.decode("utf-8", "replace")[-2000:]
        if action.protocol == "exo" and outcome.reason == "exit":
            # A handler that printed its own ERROR response, then exited non-zero.
            try:
                parse_exo_response(collect.stdout)
            except ActionError as exc:
                if exc.code == "action_error":
                    exc.extra.update(exit_code=outcome.exit_code, stderr=stderr)
                    raise
        code = {"timeout": "timeout", "signal": "signal", "exit": "crashed"}.get(
            outcome.reason, outcome.reason
        )
        raise ActionError(code, "run", f"the action failed: {outcome.message}",
                          details={"exit_code": outcome.exit_code, "stderr": stderr})  # fmt: skip
    if action.protocol == "exo":
        return parse_exo_response(collect.stdout)
    return parse_output(collect.stdout)


# -- OpenAPI ----------------------------------------------------------------------


def openapi(actions: ActionSet, *, title: str = "stack actions") -> dict[str, Any]:
    """An OpenAPI 3.1 document of the action routes, from the manifests' schemas."""
    from .. import __version__

    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    paths: dict[str, Any] = {
        "/actions": {"get": {
            "operationId": "listActions", "summary": "List the actions",
            "responses": {"200": {"description": "The actions", "content": {"application/json": {
                "schema": {"type": "object", "required": ["actions"], "properties": {
                    "actions": {"type": "array", "items": {"type": "object"}}}}}}}},
        }},
        "/request": {"post": {
            "operationId": "request", "summary": "Run an action from a full request",
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Request"}}}},
            "responses": _responses({"$ref": "#/components/schemas/Response"}, error_ref),
        }},
    }  # fmt: skip
    for action in actions:
        ok_schema = {"type": "object", "required": ["status", "output"],
                     "properties": {"status": {"const": "OK"}, "output": action.output_schema,
                                    "id": {"type": "string"}}}  # fmt: skip
        paths[f"/actions/{action.name}"] = {
            "get": {
                "operationId": f"describe_{_op(action.name)}",
                "summary": f"Describe {action.name}",
                "responses": {"200": {"description": "The action's manifest and schemas",
                                      "content": {"application/json": {
                                          "schema": {"type": "object"}}}}},
            },
            "post": {
                "operationId": f"run_{_op(action.name)}",
                "summary": (action.description.splitlines() or [action.name])[0],
                "description": action.description,
                "tags": list(action.tags),
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": accepted_input(action)}}},
                "responses": _responses(ok_schema, error_ref),
            },
        }  # fmt: skip
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": __version__},
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": {
            "Request": _strip_ids(REQUEST_SCHEMA),
            "Response": _strip_ids(RESPONSE_SCHEMA),
            "ErrorResponse": _strip_ids(RESPONSE_SCHEMA["oneOf"][1]),
        }},
    }  # fmt: skip


def _responses(ok_schema: Any, error_schema: Any) -> dict[str, Any]:
    def content(schema: Any) -> dict[str, Any]:
        return {"application/json": {"schema": schema}}

    return {
        "200": {"description": "OK", "content": content(ok_schema)},
        "400": {"description": "The request or the input is invalid",
                "content": content(error_schema)},
        "404": {"description": "No such action", "content": content(error_schema)},
        "413": {"description": "The body is too large", "content": content({"type": "object"})},
        "502": {"description": "The action failed or its output is invalid",
                "content": content(error_schema)},
        "503": {"description": "Overloaded", "content": content({"type": "object"})},
        "504": {"description": "The action timed out", "content": content(error_schema)},
    }  # fmt: skip


def _op(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _strip_ids(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("$id", "$schema")}
