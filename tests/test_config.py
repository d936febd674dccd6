"""The server's configuration (sandbox/config.py): YAML files and flags in, a Config out.

Plain values and files under ``tmp_path``; nothing runs. Every key of the
README's "Configuration" table is read; unknown keys and bad values are
refused with a message naming the source and the key.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from sandbox.config import DEFAULT_PATH, Config
from sandbox.core.engine import EngineConfig
from sandbox.core.limits import Limits
from sandbox.errors import ConfigError, LimitTooHigh

MiB = 1024 * 1024
GiB = 1024 * MiB


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- defaults and every key ---------------------------------------------------------


def test_an_empty_config_is_the_defaults() -> None:
    config = Config.from_mapping({})
    assert config == Config()
    assert config.engine == EngineConfig()
    assert config.engine.limits == Limits()
    assert (config.engine.isolate, config.engine.max_running, config.engine.max_queue) == (
        "auto", 16, 64,
    )  # fmt: skip
    assert config.engine.path == DEFAULT_PATH
    assert (dict(config.env), dict(config.auth), config.triggers) == ({}, {}, ())


def test_every_key() -> None:
    config = Config.from_mapping({
        "isolate": "none",
        "max_running": 4,
        "max_queue": 8,
        "network": True,
        "limits": {
            "timeout": "5s", "cpu": "2s", "memory": "256MiB", "processes": 32,
            "file_size": "1MiB", "open_files": 64, "output": "1MiB", "body": "2MiB",
        },
        "maxima": {"timeout": "60s"},
        "env": {"API_BASE": "https://api.example.org", "RETRIES": 3},
        "registry": ["/srv/languages"],
        "uid_base": 62000,
        "path": "/opt/bin:/usr/bin:/bin",
        "lang": "en_US.UTF-8",
        "temp_dir": "/srv/tmp",
        "auth": {"keys": []},
        "rate_limit": {"per_address": "50/s"},
        "brokers": {"main": {"url": "memory://"}},
        "triggers": [{"subject": "jobs.>", "action": "run"}],
        "warm": {"python": 4, "bash": 1},
        "warm_idle": "30s",
        "disk": "1GiB",
        "disk_files": 1000,
    })  # fmt: skip
    engine = config.engine
    assert engine.isolate == "none"
    assert (engine.max_running, engine.max_queue, engine.network) == (4, 8, True)
    assert engine.limits == Limits(
        timeout=5.0, cpu=2.0, memory=256 * MiB, processes=32, file_size=MiB, open_files=64,
        output=MiB, body=2 * MiB,
    )  # fmt: skip
    assert engine.maxima.timeout == 60.0
    assert engine.maxima.memory == EngineConfig().maxima.memory  # the rest as before
    assert config.env == {"API_BASE": "https://api.example.org", "RETRIES": "3"}
    assert engine.env == config.env  # given to every call
    assert engine.language_dirs == (Path("/srv/languages"),)
    assert engine.uid_base == 62000
    assert (engine.path, engine.lang) == ("/opt/bin:/usr/bin:/bin", "en_US.UTF-8")
    assert engine.temp_dir == Path("/srv/tmp")
    assert config.auth == {"keys": []}
    assert config.rate_limit == {"per_address": "50/s"}
    assert config.brokers == {"main": {"url": "memory://"}}
    assert config.triggers == ({"subject": "jobs.>", "action": "run"},)
    assert engine.warm == {"python": 4, "bash": 1}
    assert engine.warm_idle == 30.0
    assert (engine.disk, engine.disk_files) == (GiB, 1000)


def test_unlimited_values() -> None:
    config = Config.from_mapping({"limits": {"output": None, "open_files": "unlimited"},
                                  "maxima": {"output": "none", "open_files": None},
                                  "disk": "none"})  # fmt: skip
    assert (config.engine.limits.output, config.engine.limits.open_files) == (None, None)
    assert config.engine.disk is None


@pytest.mark.parametrize(("value", "sizes"), [(2, {"*": 2}), (0, {"*": 0}),
                                             ({"python": 4}, {"python": 4})])  # fmt: skip
def test_warm_sizes(value: Any, sizes: dict[str, int]) -> None:
    config = Config.from_mapping({"warm": value})
    assert config.engine.warm == sizes
    assert config.engine.warm_size("python") == sizes.get("python", sizes.get("*", 0))


# -- refused ---------------------------------------------------------------------------


def test_an_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping({"isolate": "none", "timeout": "5s", "colour": "blue"},
                            source="stack.yaml")  # fmt: skip
    message = caught.value.message
    assert message.startswith("stack.yaml: unknown key(s) colour, timeout; known keys: ")
    assert "limits" in message.split("known keys: ")[1]


def test_an_unknown_limit_is_refused_by_name() -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping({"limits": {"speed": 3}}, source="stack.yaml")
    assert caught.value.message.startswith("stack.yaml: unknown limit 'speed'; known limits: ")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_running": "many"}, "'max_running' must be a whole number, got 'many'"),
        ({"max_running": True}, "'max_running' must be a whole number, got True"),
        ({"max_running": 0}, "max_running must be at least 1"),
        ({"max_queue": -1}, "max_queue at least 0"),
        ({"uid_base": 6.5}, "'uid_base' must be a whole number, got 6.5"),
        ({"isolate": "chroot"}, "unknown isolation 'chroot'; use one of"),
        ({"limits": {"memory": "lots"}}, "limit memory: not a size: 'lots'"),
        ({"limits": {"timeout": "soon"}}, "limit timeout: not a duration: 'soon'"),
        ({"limits": {"processes": "many"}}, "limit processes must be a whole number"),
        ({"limits": {"cpu": 0}}, "limit cpu must be positive, got 0.0"),
        ({"limits": [1]}, "'limits' must be a mapping"),
        ({"maxima": "5m"}, "'maxima' must be a mapping"),
        ({"env": "A=1"}, "'env' must be a mapping"),
        ({"auth": "on"}, "'auth' must be a mapping"),
        ({"brokers": ["nats://x"]}, "'brokers' must be a mapping"),
        ({"registry": "./languages"}, "'registry' must be a list of folders"),
        ({"triggers": {"subject": "x"}}, "'triggers' must be a list"),
        ({"warm": "two"}, "'warm' must be a whole number, got 'two'"),
        ({"warm": {"python": "x"}}, "'warm.python' must be a whole number, got 'x'"),
        ({"warm": -1}, "warm pool sizes must be at least 0"),
        ({"warm_idle": "0s"}, "warm_idle above 0"),
        ({"warm_idle": "later"}, "not a duration: 'later'"),
        ({"disk": "big"}, "not a size: 'big'"),
        ({"disk_files": "many"}, "'disk_files' must be a whole number, got 'many'"),
    ],
)
def test_a_bad_value_names_the_source_and_the_key(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_mapping(data, source="stack.yaml")
    assert caught.value.message.startswith("stack.yaml: ")
    assert message in caught.value.message


@pytest.mark.parametrize("value", ["false", "no", 0, "off"])
def test_network_must_be_true_or_false(value: Any) -> None:
    # A quoted "false" must not open the network to every call.
    with pytest.raises(ConfigError, match=r"stack.yaml: 'network' must be true or false"):
        Config.from_mapping({"network": value}, source="stack.yaml")


@pytest.mark.parametrize(("key", "value"), [("disk", 0), ("disk", "0MiB"), ("disk_files", 0),
                                            ("disk_files", -5)])  # fmt: skip
def test_a_disk_quota_of_nothing_is_refused(key: str, value: Any) -> None:
    # A tmpfs mounted with size=0 or nr_inodes=0 has no limit at all.
    with pytest.raises(ConfigError, match=rf"stack.yaml: '{key}' must be above 0"):
        Config.from_mapping({key: value}, source="stack.yaml")


# -- limits and maxima -------------------------------------------------------------------


def test_a_limit_above_the_maxima_is_refused() -> None:
    with pytest.raises(LimitTooHigh) as caught:
        Config.from_mapping({"limits": {"timeout": "10m"}}, source="stack.yaml")
    assert caught.value.message == (
        "stack.yaml: limit timeout=600.0 is above the server's maximum 300.0"
    )


def test_raising_the_maxima_allows_higher_limits() -> None:
    config = Config.from_mapping({"limits": {"timeout": "10m"}, "maxima": {"timeout": "1h"}})
    assert (config.engine.limits.timeout, config.engine.maxima.timeout) == (600.0, 3600.0)


def test_an_unlimited_limit_under_a_maximum_is_refused() -> None:
    with pytest.raises(LimitTooHigh, match="limit memory=None is above the server's maximum"):
        Config.from_mapping({"limits": {"memory": None}})


# -- files -------------------------------------------------------------------------------

README_EXAMPLE = """\
# stack.yaml
isolate: bwrap
max_running: 32
limits: {timeout: 5s, cpu: 2s, memory: 256MiB, processes: 32, output: 1MiB}
maxima: {timeout: 60s}
env: {API_BASE: https://api.example.org}
"""


def test_the_readme_example_file(tmp_path: Path) -> None:
    path = write(tmp_path / "etc" / "stack.yaml", README_EXAMPLE)
    config = Config.from_file(path)
    engine = config.engine
    assert (engine.isolate, engine.max_running) == ("bwrap", 32)
    assert engine.limits == dataclasses.replace(
        Limits(), timeout=5.0, cpu=2.0, memory=256 * MiB, processes=32, output=MiB
    )
    assert engine.maxima.timeout == 60.0
    assert config.env == {"API_BASE": "https://api.example.org"}
    assert config.base == tmp_path / "etc"


def test_an_empty_file_is_the_defaults(tmp_path: Path) -> None:
    config = Config.from_file(write(tmp_path / "stack.yaml", "# nothing yet\n"))
    assert config.engine == EngineConfig()
    assert config.base == tmp_path


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError, match=rf"cannot read config file {missing}: "):
        Config.from_file(missing)
    broken = write(tmp_path / "broken.yaml", "limits: {timeout: [\n")
    with pytest.raises(ConfigError, match=rf"^{broken}: not valid YAML"):
        Config.from_file(broken)
    listed = write(tmp_path / "list.yaml", "- isolate: none\n")
    with pytest.raises(ConfigError, match=rf"^{listed}: expected a mapping at the top"):
        Config.from_file(listed)
    unknown = write(tmp_path / "unknown.yaml", "isolate: none\ncolour: blue\n")
    with pytest.raises(ConfigError, match=rf"^{unknown}: unknown key\(s\) colour"):
        Config.from_file(unknown)


def test_relative_folders_in_a_file_are_the_files(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    path = write(tmp_path / "etc" / "stack.yaml",
                 "registry: [./languages, /srv/more]\ntemp_dir: scratch\n")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    config = Config.from_file(path)
    assert config.engine.language_dirs == (tmp_path / "etc" / "languages", Path("/srv/more"))
    assert config.engine.temp_dir == tmp_path / "etc" / "scratch"


# -- flags over the file ---------------------------------------------------------------------


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "stack.yaml", (
        "isolate: bwrap\nmax_running: 32\n"
        "limits: {timeout: 5s, memory: 256MiB}\nmaxima: {timeout: 60s}\n"
        "env: {A: file, B: file}\nwarm: {python: 4}\nregistry: [/srv/languages]\n"
    ))  # fmt: skip
    from_file = Config.from_file(path)
    flags = {"isolate": "none", "limits": {"timeout": 30}, "env": {"B": "flag"},
             "warm": {"bash": 1}, "registry": ["/opt/languages"]}  # fmt: skip
    config = Config.from_mapping(flags, source="command line", base=from_file)
    engine = config.engine
    assert engine.isolate == "none"
    assert engine.max_running == 32  # the file's, no flag for it
    assert engine.limits.timeout == 30.0
    assert engine.limits.memory == 256 * MiB
    assert engine.maxima.timeout == 60.0
    assert config.env == {"A": "file", "B": "flag"}
    assert engine.env == config.env
    assert engine.warm == {"python": 4, "bash": 1}
    assert engine.language_dirs == (Path("/srv/languages"), Path("/opt/languages"))
    assert config.base == tmp_path  # the file's folder still resolves its relative paths


def test_a_flag_above_the_files_maxima_is_refused(tmp_path: Path) -> None:
    from_file = Config.from_file(write(tmp_path / "stack.yaml", "maxima: {timeout: 60s}\n"))
    with pytest.raises(LimitTooHigh) as caught:
        Config.from_mapping({"limits": {"timeout": 120}}, source="command line", base=from_file)
    assert caught.value.message == (
        "command line: limit timeout=120.0 is above the server's maximum 60.0"
    )
