"""Judge0's API, sans-IO: validation, verdicts, result shapes, against Judge0 CE 1.13.1."""

from __future__ import annotations

import base64
import io
import zipfile
from typing import Any

import judge0 as sdk
import pytest
from judge0.base_types import Config as SdkConfig
from judge0.submission import SKIP_FIELDS

from sandbox.config import Config
from sandbox.core.languages import Registry
from sandbox.core.limits import Limits
from sandbox.errors import ConfigError, InvalidSubmission, NotUtf8, RequestError
from sandbox.features import judge0 as j0

from ..conftest import need

REGISTRY = Registry.load()
BOUNDS = j0.Bounds.from_limits(Limits(), Limits(timeout=20.0, cpu=15.0, memory=512 * 1024**2))
SETTINGS = j0.Settings()


def b64(text: str | bytes) -> str:
    return base64.b64encode(text.encode() if isinstance(text, str) else text).decode()


def parse(body: dict[str, Any], *, encoded: bool = False, **settings: Any) -> dict[str, Any]:
    return j0.parse_submission(body, base64_encoded=encoded, registry=REGISTRY, bounds=BOUNDS,
                               settings=j0.Settings(**settings))  # fmt: skip


def errors(body: dict[str, Any], **settings: Any) -> dict[str, list[str]]:
    with pytest.raises(InvalidSubmission) as caught:
        parse(body, **settings)
    return caught.value.errors


def zipped(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return b64(buffer.getvalue())


def test_statuses_are_judge0s():
    assert j0.statuses()[:6] == [
        {"id": 1, "description": "In Queue"},
        {"id": 2, "description": "Processing"},
        {"id": 3, "description": "Accepted"},
        {"id": 4, "description": "Wrong Answer"},
        {"id": 5, "description": "Time Limit Exceeded"},
        {"id": 6, "description": "Compilation Error"},
    ]
    assert [s["description"] for s in j0.statuses()[6:]] == [
        "Runtime Error (SIGSEGV)", "Runtime Error (SIGXFSZ)", "Runtime Error (SIGFPE)",
        "Runtime Error (SIGABRT)", "Runtime Error (NZEC)", "Runtime Error (Other)",
        "Internal Error", "Exec Format Error",
    ]  # fmt: skip
    assert [int(s) for s in sdk.Status] == [s["id"] for s in j0.statuses()]


def test_language_ids_are_judge0_ce_1_13_1s():
    need("python3", "bash", "gcc", "g++")
    listed = {entry["id"]: entry["name"] for entry in j0.languages(REGISTRY)}
    assert listed[71].startswith("Python (3.")
    assert listed[46].startswith("Bash (")
    assert listed[50].startswith("C (GCC ")
    assert listed[54].startswith("C++ (GCC ")
    # The SDK's own ids for these languages under 1.13.1 are all served.
    ids = sdk.data.LANGUAGE_TO_LANGUAGE_ID["1.13.1"]
    for alias in (sdk.PYTHON, sdk.BASH, sdk.C, sdk.CPP):
        assert ids[alias] in listed
    assert {46: "bash", 50: "c", 54: "cpp", 60: "go", 62: "java", 63: "javascript", 64: "lua",
            68: "php", 71: "python", 72: "ruby", 73: "rust", 85: "perl"} == {
        i: j0.LANGUAGES[i][0] for i in (46, 50, 54, 60, 62, 63, 64, 68, 71, 72, 73, 85)
    }  # fmt: skip
    detail = j0.language_detail(REGISTRY, 50)
    assert detail is not None
    assert detail["source_file"] == "main.c"
    assert detail["compile_cmd"].startswith("gcc ")
    assert "main.c" in detail["compile_cmd"]
    assert detail["is_archived"] is False
    assert j0.language_detail(REGISTRY, 999) is None


def test_config_info_has_every_key_the_sdk_reads_from_stacks_limits():
    info = j0.config_info(BOUNDS, SETTINGS, network=False)
    assert set(info) == set(SdkConfig.model_fields)
    SdkConfig(**info)
    assert info["cpu_time_limit"] == 10.0
    assert info["max_cpu_time_limit"] == 15.0
    assert info["wall_time_limit"] == 10.0
    assert info["max_wall_time_limit"] == 20.0
    assert info["memory_limit"] == 512 * 1024
    assert info["max_memory_limit"] == 512 * 1024
    assert info["max_queue_size"] == 100
    assert info["max_submission_batch_size"] == 20


def test_a_valid_submission_becomes_a_queued_record():
    need("python3")
    record = parse({"source_code": b64("print(1)"), "language_id": 71, "stdin": b64("x"),
                    "expected_output": b64("1"), "cpu_time_limit": 2, "memory_limit": "64000",
                    "command_line_arguments": "a 'b c'"}, encoded=True)  # fmt: skip
    assert record["status_id"] == 1
    assert j0.unb64(record["source_code"]) == b"print(1)"
    assert j0.unb64(record["stdin"]) == b"x"
    assert record["cpu_time_limit"] == 2.0
    assert record["memory_limit"] == 64000
    assert record["wall_time_limit"] == 10.0  # the server's default
    assert j0.arguments(record) == ("a", "b c")
    assert len(record["token"]) == 36


def test_bad_fields_get_judge0s_422_shape():
    need("python3")
    assert errors({}) == {"source_code": ["can't be blank"], "language_id": ["can't be blank"]}
    assert errors({"source_code": "x", "language_id": 9999}) == {
        "language_id": ["language with id 9999 doesn't exist"]
    }
    found = errors({"source_code": "x", "language_id": 71, "cpu_time_limit": 16,
                    "wall_time_limit": 0, "memory_limit": "lots", "number_of_runs": 21})  # fmt: skip
    assert found == {
        "cpu_time_limit": ["must be less than or equal to 15"],
        "wall_time_limit": ["must be greater than 0"],
        "memory_limit": ["is not a number"],
        "number_of_runs": ["must be less than or equal to 20"],
    }
    assert errors({"source_code": "x", "language_id": 71, "enable_network": True}) == {
        "enable_network": ["enabling network is not allowed"]
    }
    parse({"source_code": "x", "language_id": 71, "enable_network": True},
          allow_enable_network=True)  # fmt: skip
    assert errors({"source_code": "x", "language_id": 71,
                   "enable_per_process_and_thread_time_limit": True}) == {
        "enable_per_process_and_thread_time_limit": ["this option cannot be enabled"]
    }  # fmt: skip
    assert errors({"source_code": "x", "language_id": 71, "callback_url": "file:///etc"}) == {
        "callback_url": ["must be an http or https URL"]
    }
    assert errors({"source_code": "x", "language_id": 71, "command_line_arguments": "'open"})[
        "command_line_arguments"
    ][0].startswith("cannot be split into words")
    assert errors({"source_code": "x", "language_id": 71, "additional_files": "bm90IGEgemlw"}) \
        == {"additional_files": ["is not a valid zip archive: File is not a zip file"]}  # fmt: skip
    slip = zipped({"../escape.py": "x"})
    assert errors({"source_code": "x", "language_id": 71, "additional_files": slip}) == {
        "additional_files": ["has a file '../escape.py' outside the submission folder"]
    }


def test_additional_files_unzip_within_limits():
    files = j0.unzip(base64.b64decode(zipped({"lib/helper.py": "X = 1", "data.txt": "d"})), 1024)
    assert files == [("lib/helper.py", b"X = 1"), ("data.txt", b"d")]
    with pytest.raises(ValueError, match="unpacks to more than 0 KB"):
        j0.unzip(base64.b64decode(zipped({"big": "x" * 2000})), 1000)


def test_requested_fields():
    assert j0.requested_fields(None) == j0.DEFAULT_FIELDS
    assert j0.requested_fields("*") == j0.FIELDS
    assert j0.requested_fields("stdout,status") == ("stdout", "status")
    with pytest.raises(RequestError, match=r"^invalid fields: \[nope, started_at\]$"):
        j0.requested_fields("stdout,nope,started_at")


def test_every_field_is_one_the_sdk_accepts():
    # The SDK sets every attribute of a fields=* answer on its model; an unknown one fails.
    known = set(sdk.Submission.model_fields) | SKIP_FIELDS
    assert set(j0.FIELDS) <= known
    for absent in ("started_at", "queued_at", "updated_at", "queue_host", "execution_host"):
        assert absent not in j0.FIELDS


def run(reason: str = "ok", *, code: int | None = 0, signal: int | None = None,
        cpu: float = 0.01, stdout: bytes = b"", message: str = "") -> j0.Run:  # fmt: skip
    return j0.Run(reason, code, signal, cpu, cpu * 2, 4 << 20, stdout, b"", stdout, message)


RECORD = {"cpu_time_limit": 1.0, "expected_output": None}


@pytest.mark.parametrize(
    ("result", "status"),
    [
        (run(), 3),
        (run("timeout", code=None, signal=9), 5),
        (run("cpu", code=None, signal=24), 5),
        (run(cpu=1.5), 5),  # over cpu_time_limit inside cpu_extra_time: still a TLE
        (run("signal", code=None, signal=11), 7),
        (run("file_size", code=None, signal=25), 8),
        (run("output", code=None, signal=9), 8),
        (run("signal", code=None, signal=8), 9),
        (run("signal", code=None, signal=6), 10),
        (run("memory", code=None, signal=6), 10),
        (run("exit", code=3), 11),
        (run("memory", code=1), 11),
        (run("signal", code=None, signal=15), 12),
        (run("spawn", code=None, message="could not run the interpreter: No such file"), 13),
        (run("spawn", code=None, message="could not run the interpreter: Exec format error"), 14),
    ],
)
def test_verdicts_from_outcomes(result: j0.Run, status: int):
    assert j0.verdict(result, RECORD)[0] == status


@pytest.mark.parametrize(
    ("expected", "stdout", "status"),
    [
        ("1\n2", "1\n2\n", 3),
        ("1\n2\n", "1   \n2\t\n\n\n", 3),  # trailing blanks of lines and of the whole
        ("1\r\n2", "1\n2", 3),
        ("  1\n2", "1\n2", 3),  # the whole text is stripped at both ends
        ("1\n2", "1\n\n2", 4),  # a blank line inside counts
        ("1 2", "1  2", 4),  # inner spaces count
        ("", "", 3),
        ("x", "", 4),
    ],
)
def test_wrong_answer_compares_as_judge0(expected: str, stdout: str, status: int):
    record = {**RECORD, "expected_output": b64(expected)}
    assert j0.verdict(run(stdout=stdout.encode()), record)[0] == status


def test_messages_and_signals_as_isolate_gives_them():
    assert j0.verdict(run("exit", code=3), RECORD) == (11, "Exited with error status 3", None)
    assert j0.verdict(run("signal", code=None, signal=11), RECORD) == (
        7, "Caught fatal signal 11", 11)  # fmt: skip
    assert j0.verdict(run("timeout", code=None, signal=9), RECORD)[1] == (
        "Time limit exceeded (wall clock)"
    )


def test_finish_averages_runs_and_redirects_stderr():
    record: dict[str, Any] = {**RECORD, "redirect_stderr_to_stdout": True}
    runs = [j0.Run("ok", 0, None, 0.1, 0.2, 2048 * 1024, b"o", b"e", b"oe"),
            j0.Run("ok", 0, None, 0.3, 0.4, 4096 * 1024, b"o", b"e", b"eo")]  # fmt: skip
    j0.finish(record, runs, b"warning: x")
    fields = ("stdout", "stderr", "time", "wall_time", "memory", "compile_output", "status",
              "finished_at")  # fmt: skip
    shaped = j0.serialize(record, fields, base64_encoded=False)
    assert shaped["stdout"] == "eo"
    assert shaped["stderr"] is None
    assert shaped["time"] == "0.2"
    assert shaped["wall_time"] == "0.3"
    assert shaped["memory"] == 3072
    assert shaped["compile_output"] == "warning: x"
    assert shaped["status"] == {"id": 3, "description": "Accepted"}
    assert shaped["finished_at"].endswith("Z")


def test_serialize_base64_and_utf8():
    need("python3")
    record = parse({"source_code": "print(1)", "language_id": 71})
    record["stdout"] = b64(b"\xff\xfe")
    assert j0.serialize(record, ("stdout",), base64_encoded=True) == {"stdout": "//4="}
    with pytest.raises(NotUtf8, match="use base64_encoded=true"):
        j0.serialize(record, ("stdout",), base64_encoded=False)
    record["stdout"] = None
    shaped = j0.serialize(record, j0.FIELDS, base64_encoded=False, registry=REGISTRY)
    assert shaped["source_code"] == "print(1)"
    assert shaped["cpu_time_limit"] == "10.0"  # a decimal column: a string, as Judge0's
    assert shaped["language"]["id"] == 71
    assert shaped["language"]["name"].startswith("Python")
    assert list(shaped) == list(j0.FIELDS)


def test_compiler_options_go_right_after_the_compiler():
    need("gcc")
    c = REGISTRY.get("c")
    changed = j0.with_compiler_options(c, "-DX=1 -Wall")
    assert changed.compile[:3] == (c.compile[0], "-DX=1", "-Wall")
    assert changed.compile[3:] == c.compile[1:]
    assert j0.with_compiler_options(REGISTRY.get("python"), "-O") == REGISTRY.get("python")


def test_run_limits_from_a_record():
    need("python3")
    record = parse({"source_code": "x", "language_id": 71, "cpu_time_limit": 2,
                    "cpu_extra_time": 0.5, "wall_time_limit": 5, "memory_limit": 65536,
                    "max_file_size": 100, "max_processes_and_or_threads": 8})  # fmt: skip
    limits = j0.run_limits(record, Limits(), 1 << 20)
    assert (limits.cpu, limits.timeout, limits.memory) == (2.5, 5.0, 64 << 20)
    assert (limits.file_size, limits.processes, limits.output) == (102400, 8, 1 << 20)


def test_settings_from_the_config_file():
    settings = j0.Settings.from_mapping({"store": "redis://127.0.0.1:6379/0", "keep": "2d",
                                         "workers": 0, "enable_submission_delete": True})  # fmt: skip
    assert settings.keep == 2 * 86400
    assert settings.workers == 0
    with pytest.raises(ConfigError, match="judge0: unknown key"):
        j0.Settings.from_mapping({"stroe": "x"})
    with pytest.raises(ConfigError, match="use sqlite:///PATH, redis://"):
        j0.Settings.from_mapping({"store": "mysql://x"})
    with pytest.raises(ConfigError, match="judge0: unknown key"):
        Config.from_mapping({"judge0": {"max_queue": 3}})
    assert Config.from_mapping({"judge0": {"max_queue_size": 3}}).judge0 == {"max_queue_size": 3}


def test_state_dir():
    assert j0.state_dir({"STACK_STATE_DIR": "/srv/stack"}).as_posix() == "/srv/stack"
    assert j0.state_dir({"XDG_STATE_HOME": "/x"}).as_posix() == "/x/stack"


def test_a_multi_file_program_needs_its_files_not_a_source():
    need("bash")
    assert errors({"language_id": 89}) == {
        "additional_files": ["can't be blank for a multi-file program"]
    }
    record = parse({"language_id": 89, "additional_files": zipped({"run": "echo hi"})})
    assert record["source_code"] == ""
    detail = j0.language_detail(REGISTRY, 89)
    assert detail is not None
    assert (detail["compile_cmd"], detail["run_cmd"]) == ("/bin/bash compile", "/bin/bash run")
