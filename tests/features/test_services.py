"""Services (sandbox/features/services.py): a script or a folder of scripts, by URL.

Only files are read and copied here: which names a folder serves, where a
URL path lands (the service, SCRIPT_NAME, PATH_INFO), what is skipped and
why, and a script's sidecar settings. Limits over the server's maxima are
checked by a real engine's ``limits_for``, as ``open_app`` wires it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from sandbox.core.engine import EngineConfig, open_engine
from sandbox.core.languages import Registry
from sandbox.core.limits import Limits
from sandbox.errors import ConfigError, LimitTooHigh, NotFound, UnknownLanguage
from sandbox.features.services import ServiceOptions, Services, load_sidecar, sidecar_path


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def serve(path: Path, registry: Registry, tmp_path: Path, **options: Any) -> Services:
    return Services.from_path(path, registry, tmp_path / "stage", ServiceOptions(**options))


# -- one script ------------------------------------------------------------------


def test_a_single_script_is_served_at_every_path(registry: Registry, tmp_path: Path) -> None:
    script = write(tmp_path / "code", "hello.py", "print('hi')\n")
    services = serve(script, registry, tmp_path)
    assert services.single is not None
    assert services.single.name == "hello"
    assert services.single.language.name == "python"
    assert list(services) == [services.single]
    for path in ("/", "/hello", "/any/thing/else"):
        service, script_name, path_info = services.route(path)
        assert service is services.single
        assert (script_name, path_info) == ("", path)


def test_the_staged_copy_is_readable_by_everyone(registry: Registry, tmp_path: Path) -> None:
    script = write(tmp_path / "code", "hello.py", "print('hi')\n")
    script.chmod(0o600)
    services = serve(script, registry, tmp_path)
    assert services.single is not None
    staged = services.single.staged
    assert staged != script
    assert staged.read_text() == "print('hi')\n"
    assert stat.S_IMODE(staged.stat().st_mode) == 0o644


def test_a_changed_script_is_staged_again(registry: Registry, tmp_path: Path) -> None:
    script = write(tmp_path / "code", "hello.sh", "echo one\n")
    service = serve(script, registry, tmp_path).single
    assert service is not None
    assert service.refresh() is False
    script.write_text("echo two\n")
    stamp = script.stat().st_mtime + 5
    os.utime(script, (stamp, stamp))
    assert service.refresh() is True
    assert service.staged.read_text() == "echo two\n"
    script.unlink()
    with pytest.raises(NotFound, match="the script of service 'hello' was removed"):
        service.refresh()


def test_a_single_script_of_no_known_language_is_refused(registry: Registry,
                                                         tmp_path: Path) -> None:  # fmt: skip
    script = write(tmp_path, "notes.xyz", "hello\n")
    with pytest.raises(UnknownLanguage, match=r"cannot tell the language of 'notes.xyz'"):
        serve(script, registry, tmp_path)


def test_a_forced_language_wins_over_detection(registry: Registry, tmp_path: Path) -> None:
    script = write(tmp_path, "tool.xyz", "echo hi\n")
    service = serve(script, registry, tmp_path, language="bash").single
    assert service is not None
    assert service.language.name == "bash"


def test_a_path_that_is_not_there(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is neither a script nor a folder"):
        serve(tmp_path / "missing", registry, tmp_path)


# -- a folder ----------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    code = tmp_path / "code"
    write(code, "hello.py", "print('hi')\n")
    write(code, "greet.sh", "echo hi\n")
    write(code, "tool", "#!/usr/bin/env bash\necho tool\n")
    write(code, "twin.py", "print(1)\n")
    write(code, "twin.sh", "echo 1\n")
    write(code, "README.md", "# docs\n")
    write(code, "data.xyz", "not a script\n")
    write(code, "my script.sh", "echo space\n")
    write(code, ".secret.py", "print('hidden')\n")
    write(code, "sub/inner.py", "print('nested')\n")
    return code


def test_a_folder_serves_each_script_by_file_name_and_stem(registry: Registry, folder: Path,
                                                           tmp_path: Path) -> None:  # fmt: skip
    services = serve(folder, registry, tmp_path)
    assert services.single is None
    assert services.names() == [
        "greet", "greet.sh", "hello", "hello.py", "tool", "twin.py", "twin.sh",
    ]  # fmt: skip
    languages = {s.name: s.language.name for s in services}
    assert languages == {
        "greet.sh": "bash", "hello.py": "python", "tool": "bash", "twin.py": "python",
        "twin.sh": "bash",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "name", "script_name", "path_info"),
    [
        ("/hello.py", "hello.py", "/hello.py", ""),
        ("/hello", "hello.py", "/hello", ""),
        ("/hello/", "hello.py", "/hello", "/"),
        ("/hello/users/7", "hello.py", "/hello", "/users/7"),
        ("/hello.py/users/7", "hello.py", "/hello.py", "/users/7"),
        ("/tool/x", "tool", "/tool", "/x"),
        ("/twin.sh", "twin.sh", "/twin.sh", ""),
    ],
)
def test_routing(registry: Registry, folder: Path, tmp_path: Path, path: str, name: str,
                 script_name: str, path_info: str) -> None:  # fmt: skip
    service, got_script_name, got_path_info = serve(folder, registry, tmp_path).route(path)
    assert service.name == name
    assert (got_script_name, got_path_info) == (script_name, path_info)


def test_a_stem_two_scripts_share_is_ambiguous(registry: Registry, folder: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    services = serve(folder, registry, tmp_path)
    with pytest.raises(NotFound, match=r"/twin is ambiguous; use one of /twin.py, /twin.sh"):
        services.route("/twin")


def test_an_unknown_name_lists_the_services(registry: Registry, folder: Path,
                                            tmp_path: Path) -> None:  # fmt: skip
    services = serve(folder, registry, tmp_path)
    with pytest.raises(NotFound) as caught:
        services.route("/nope")
    assert caught.value.message.startswith("no service at /nope; services: /greet, /greet.sh")


@pytest.mark.parametrize("path", ["/.secret.py", "/.secret", "/sub", "/sub/inner.py",
                                  "/README.md", "/README", "/data.xyz"])  # fmt: skip
def test_what_is_not_served(registry: Registry, folder: Path, tmp_path: Path, path: str) -> None:
    services = serve(folder, registry, tmp_path)
    with pytest.raises(NotFound):
        services.route(path)


def test_skipped_files_say_why(registry: Registry, folder: Path, tmp_path: Path) -> None:
    services = serve(folder, registry, tmp_path)
    assert len(services.skipped) == 2, services.skipped
    unknown, bad_name = services.skipped  # in file-name order
    assert bad_name == "my script.sh: not a usable URL name"
    assert unknown.startswith("data.xyz: cannot tell the language of 'data.xyz'")
    # Hidden files, documents and folders are left out without a word.
    assert not any(".secret" in line or "README" in line for line in services.skipped)


def test_the_path_of_a_service_is_its_shortest_url(registry: Registry, folder: Path,
                                                   tmp_path: Path) -> None:  # fmt: skip
    services = serve(folder, registry, tmp_path)
    paths = {s.name: services.path_of(s) for s in services}
    assert paths["hello.py"] == "/hello"
    assert paths["twin.py"] == "/twin.py"


def test_with_watch_a_new_script_is_found_on_its_first_request(registry: Registry,
                                                               tmp_path: Path) -> None:  # fmt: skip
    code = tmp_path / "code"
    write(code, "one.sh", "echo 1\n")
    services = serve(code, registry, tmp_path, watch=True)
    with pytest.raises(NotFound):
        services.route("/two")
    write(code, "two.sh", "echo 2\n")
    service, script_name, _ = services.route("/two")
    assert (service.name, script_name) == ("two.sh", "/two")


def test_without_watch_a_new_script_waits_for_a_scan(registry: Registry, tmp_path: Path) -> None:
    code = tmp_path / "code"
    write(code, "one.sh", "echo 1\n")
    services = serve(code, registry, tmp_path)
    write(code, "two.sh", "echo 2\n")
    with pytest.raises(NotFound):
        services.route("/two")
    assert services.scan() == []
    assert services.route("/two")[0].name == "two.sh"


# -- sidecar settings ----------------------------------------------------------------


def test_sidecar_settings_are_applied(registry: Registry, tmp_path: Path) -> None:
    code = tmp_path / "code"
    write(code, "report.py", "print('report')\n")
    write(code, "report.py.stack.yaml", (
        "limits: {timeout: 30s, memory: 1GiB}\n"
        "env: {BUCKET: reports, RETRIES: 3}\n"
        "cgi: true\nnetwork: true\nwarm: 2\n"
    ))  # fmt: skip
    services = serve(code, registry, tmp_path, env={"BUCKET": "default", "REGION": "eu"})
    assert services.names() == ["report", "report.py"]  # the sidecar is not a service
    service = services.route("/report")[0]
    # The sidecar's env over the server's; every value a string.
    assert service.env == {"BUCKET": "reports", "REGION": "eu", "RETRIES": "3"}
    assert service.limits == {"timeout": "30s", "memory": "1GiB"}
    assert Limits.from_mapping(service.limits).timeout == 30.0
    assert (service.cgi, service.network, service.warm) == (True, True, 2)


def test_without_a_sidecar_the_servers_options_hold(registry: Registry, tmp_path: Path) -> None:
    script = write(tmp_path, "plain.sh", "echo\n")
    service = serve(script, registry, tmp_path, cgi=True, env={"A": "1"}).single
    assert service is not None
    assert (service.cgi, dict(service.env), dict(service.limits)) == (True, {"A": "1"}, {})
    assert (service.network, service.warm) == (None, None)


def test_a_sidecar_language_serves_a_file_without_extension(registry: Registry,
                                                            tmp_path: Path) -> None:  # fmt: skip
    code = tmp_path / "code"
    write(code, "job", "echo job\n")
    write(code, "job.stack.yaml", "language: bash\n")
    services = serve(code, registry, tmp_path)
    assert services.skipped == []
    assert services.route("/job")[0].language.name == "bash"


def test_sidecar_path(tmp_path: Path) -> None:
    assert sidecar_path(tmp_path / "hello.py") == tmp_path / "hello.py.stack.yaml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("colour: blue\n", "unknown key(s) colour; known keys: cgi, env, language, limits"),
        ("limits: [1, 2]\n", "'limits' must be a mapping"),
        ("env: FOO\n", "'env' must be a mapping"),
        ("warm: lots\n", "'warm' must be a whole number of interpreters, got 'lots'"),
        ("warm: -1\n", "'warm' must be a whole number of interpreters, got -1"),
        ("warm: true\n", "'warm' must be a whole number of interpreters, got True"),
        ("limits: {timeout: soon}\n", "limit timeout: not a duration: 'soon'"),
        ("limits: {speed: 3}\n", "unknown limit 'speed'"),
        ("network: 'false'\n", "'network' must be true or false, got 'false'"),
        ("network: 0\n", "'network' must be true or false, got 0"),
        ("cgi: 'no'\n", "'cgi' must be true or false, got 'no'"),
        ("- a list\n", "expected a mapping at the top"),
        ("limits: {timeout: [\n", "not valid YAML"),
    ],
)
def test_a_bad_sidecar_names_the_file_and_the_problem(tmp_path: Path, text: str,
                                                      message: str) -> None:  # fmt: skip
    script = write(tmp_path, "hello.py", "print(1)\n")
    write(tmp_path, "hello.py.stack.yaml", text)
    with pytest.raises(ConfigError) as caught:
        load_sidecar(script)
    assert caught.value.message.startswith(f"{tmp_path / 'hello.py.stack.yaml'}: ")
    assert message in caught.value.message


def test_a_bad_sidecar_skips_its_script_in_a_folder(registry: Registry, tmp_path: Path) -> None:
    code = tmp_path / "code"
    write(code, "good.sh", "echo\n")
    write(code, "bad.sh", "echo\n")
    write(code, "bad.sh.stack.yaml", "colour: blue\n")
    services = serve(code, registry, tmp_path)
    assert services.names() == ["good", "good.sh"]
    assert len(services.skipped) == 1
    assert services.skipped[0].startswith("bad.sh: ")
    assert "unknown key(s) colour" in services.skipped[0]


def test_a_bad_sidecar_of_a_single_script_is_an_error(registry: Registry,
                                                      tmp_path: Path) -> None:  # fmt: skip
    script = write(tmp_path, "bad.sh", "echo\n")
    write(tmp_path, "bad.sh.stack.yaml", "colour: blue\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) colour"):
        serve(script, registry, tmp_path)


# -- limits against the server's maxima -----------------------------------------------


async def test_a_sidecar_limit_above_the_maxima(registry: Registry, tmp_path: Path) -> None:
    code = tmp_path / "code"
    write(code, "slow.sh", "sleep 1\n")
    write(code, "slow.sh.stack.yaml", "limits: {timeout: 10m}\n")
    write(code, "fine.sh", "echo\n")
    write(code, "fine.sh.stack.yaml", "limits: {timeout: 60s}\n")
    maxima = Limits(timeout=120.0)
    async with open_engine(EngineConfig(isolate="none", maxima=maxima)) as engine:
        options = ServiceOptions()
        stage = tmp_path / "stage"
        # A folder: the script is skipped, saying which limit and the maximum.
        services = Services.from_path(code, registry, stage, options,
                                      check_limits=engine.limits_for)  # fmt: skip
        assert services.names() == ["fine", "fine.sh"]
        assert services.skipped == [
            "slow.sh: limit timeout=600.0 is above the server's maximum 120.0"
        ]
        assert engine.limits_for(services.route("/fine")[0].limits).timeout == 60.0
        # A single script: refused.
        with pytest.raises(LimitTooHigh, match="limit timeout=600.0 is above") as caught:
            Services.from_path(code / "slow.sh", registry, stage, options,
                               check_limits=engine.limits_for)  # fmt: skip
        assert caught.value.details == {"limit": "timeout", "maximum": 120.0}
