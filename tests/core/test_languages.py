"""The language registry (sandbox/languages.py): YAML files in, languages out.

Loading reads files (the shipped ``languages/`` and folders under ``tmp_path``);
nothing here runs an interpreter except the one probe of a real ``bash``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sandbox.core.languages import Installed, Language, Registry, default_directory, parse_shebang
from sandbox.errors import ConfigError, InterpreterMissing, UnknownLanguage

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = {"bash", "sh", "javascript", "python", "php", "ruby", "lua", "perl", "tcl"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.load()


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


AWK = """\
name: awk
aliases: [gawk]
extensions: [.awk]
shebangs: [awk, gawk]
interpreter: awk
package: gawk
run: ["{interpreter}", "-f", "{script}"]
"""


# -- the shipped registry -----------------------------------------------------


def test_the_shipped_registry_is_the_checkout() -> None:
    assert default_directory() == ROOT / "languages"


def test_the_shipped_registry_has_the_core_languages(registry: Registry) -> None:
    names = {lang.name for lang in registry}
    assert SHIPPED <= names, f"missing from languages/: {sorted(SHIPPED - names)}"
    assert len(registry) == len(names)


def test_shipped_languages_are_iterated_by_name(registry: Registry) -> None:
    names = [lang.name for lang in registry]
    assert names == sorted(names)


COMPILED = {"c", "cpp", "rust", "go", "java"}


def test_shipped_compiled_languages_build_into_build(registry: Registry) -> None:
    for name in COMPILED:
        lang = registry.get(name)
        assert lang.compile, name
        assert any("{build}" in part for part in lang.run), name
        argv = lang.compile_argv("cc", "/w/main.x", "/w/.build", ["/w/main.x", "/w/b.x"])
        assert "/w/.build" in " ".join(argv), name


def test_shipped_languages_have_their_preludes(registry: Registry) -> None:
    for lang in registry:
        assert lang.source == ROOT / "languages" / f"{lang.name}.yaml"
        if lang.name in COMPILED:
            continue
        assert lang.prelude is not None, lang.name
        assert lang.prelude.parent == ROOT / "languages" / "preludes"
        assert lang.prelude.is_file()
        assert "{script}" in lang.run


def test_shipped_python(registry: Registry) -> None:
    python = registry.get("python")
    assert python.interpreter == "python3"
    assert python.package == "python3"
    assert ".py" in python.extensions
    assert python.memory_limit == "as"
    assert python.env["PYTHONDONTWRITEBYTECODE"] == "1"


def test_javascript_caps_data_not_address_space(registry: Registry) -> None:
    assert registry.get("javascript").memory_limit == "data"


# -- get ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("python", "python"),
        ("Python", "python"),
        ("PY", "python"),
        ("python3", "python"),
        ("js", "javascript"),
        ("Node", "javascript"),
        ("nodejs", "javascript"),
        ("BASH", "bash"),
        ("dash", "sh"),
        ("rb", "ruby"),
        ("tclsh", "tcl"),
        ("perl5", "perl"),
    ],
)
def test_get_by_name_or_alias(registry: Registry, name: str, expected: str) -> None:
    assert registry.get(name).name == expected


def test_get_unknown_lists_the_known_languages(registry: Registry) -> None:
    known = sorted(lang.name for lang in registry)
    with pytest.raises(UnknownLanguage) as info:
        registry.get("cobol")
    error = info.value
    assert error.message == f"unknown language 'cobol'; known languages: {', '.join(known)}"
    assert error.details == {"language": "cobol", "known": known}
    assert error.status == 400


# -- detect -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("hello.py", "python"),
        ("HELLO.PY", "python"),
        ("dir/with.dots/run.sh", "bash"),
        ("x.bash", "bash"),
        ("app.js", "javascript"),
        ("app.mjs", "javascript"),
        ("index.php", "php"),
        ("a.rb", "ruby"),
        ("a.lua", "lua"),
        ("a.pl", "perl"),
        ("a.tcl", "tcl"),
    ],
)
def test_detect_by_extension(registry: Registry, filename: str, expected: str) -> None:
    assert registry.detect(filename).name == expected


def test_detect_extension_wins_over_shebang(registry: Registry) -> None:
    assert registry.detect("x.py", b"#!/bin/bash\necho hi\n").name == "python"


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"#!/usr/bin/env python3\nprint(1)\n", "python"),
        (b"#!/usr/bin/python\n", "python"),
        (b"#!/bin/bash\necho hi\n", "bash"),
        (b"#!/bin/sh\n", "sh"),
        (b"#!/usr/bin/env -S node --flag\n", "javascript"),
        (b"#!/usr/bin/env ruby -w\n", "ruby"),
        (b"#!/usr/bin/tclsh\n", "tcl"),
    ],
)
def test_detect_by_shebang(registry: Registry, head: bytes, expected: str) -> None:
    assert registry.detect("script", head).name == expected
    assert registry.detect("script.cgi", head).name == expected


def test_detect_unknown_extension(registry: Registry) -> None:
    with pytest.raises(UnknownLanguage) as info:
        registry.detect("/srv/app/thing.xyz")
    message = info.value.message
    assert message.startswith("cannot tell the language of 'thing.xyz' (extension '.xyz'); ")
    assert message.endswith("; or pass --language")
    listed = message.split("known extensions: ", 1)[1].split("; or pass", 1)[0].split(", ")
    assert {".py", ".sh", ".js", ".php", ".rb", ".lua", ".pl", ".tcl"} <= set(listed)
    assert listed == sorted(listed)
    assert info.value.details == {"known_extensions": listed}


def test_detect_no_extension_and_unknown_shebang(registry: Registry) -> None:
    with pytest.raises(UnknownLanguage) as info:
        registry.detect("Makefile", b"#!/usr/bin/make -f\n")
    assert info.value.message.startswith(
        "cannot tell the language of 'Makefile' (no extension and shebang 'make'); known extensions: "
    )
    assert "--language" in info.value.message


def test_detect_no_extension_no_shebang(registry: Registry) -> None:
    with pytest.raises(UnknownLanguage, match=r"\(no extension\); known extensions: .*--language"):
        registry.detect("script", b"echo hi\n")


# -- parse_shebang ------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "name"),
    [
        (b"#!/bin/bash", "bash"),
        (b"#!/bin/bash\r\necho\r\n", "bash"),
        (b"#! /bin/sh\n", "sh"),
        (b"#!/usr/bin/python3 -u\n", "python3"),
        (b"#!python3\n", "python3"),
        (b"#!/usr/bin/env python3\n", "python3"),
        (b"#!/usr/bin/env  -i  perl -w\n", "perl"),
        (b"#!/usr/bin/env -S node --flag\n", "node"),
        (b"#!/usr/local/bin/php\n<?php\n", "php"),
        (b"#!/usr/bin/env -S LANG=C node\n", "node"),
        (b"#!/usr/bin/env FOO=1 python3\n", "python3"),
    ],
)
def test_parse_shebang(head: bytes, name: str) -> None:
    assert parse_shebang(head) == name


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"print(1)\n",
        b"#",
        b"#!",
        b"#!\n/bin/bash\n",
        b"#!   \n",
        b"#!/usr/bin/env\n",
        b"#!/usr/bin/env -S\n",
        b" #!/bin/bash\n",
        b"\xef\xbb\xbf#!/bin/bash\n",
    ],
)
def test_parse_shebang_none(head: bytes) -> None:
    assert parse_shebang(head) is None


# -- extra registry folders ---------------------------------------------------


def test_an_extra_folder_adds_a_language(tmp_path: Path) -> None:
    source = write(tmp_path, "awk.yaml", AWK)
    registry = Registry.load([tmp_path])
    awk = registry.get("gawk")
    assert awk.name == "awk"
    assert awk.source == source
    assert awk.prelude is None
    assert awk.package == "gawk"
    assert registry.detect("prog.awk").name == "awk"
    assert registry.detect("prog", b"#!/usr/bin/awk -f\n").name == "awk"
    assert SHIPPED <= {lang.name for lang in registry}


def test_an_extra_folder_can_override_a_shipped_language(tmp_path: Path) -> None:
    (tmp_path / "preludes").mkdir()
    write(tmp_path / "preludes", "mine.py", "# my prelude\n")
    write(
        tmp_path,
        "my-python.yaml",
        "name: python\naliases: [py]\nextensions: [.py]\ninterpreter: pypy3\npackage: pypy3\n"
        'run: ["{interpreter}", "{prelude}", "{script}"]\nprelude: mine.py\n',
    )
    registry = Registry.load([tmp_path])
    python = registry.get("python")
    assert python.interpreter == "pypy3"
    assert python.prelude == (tmp_path / "preludes" / "mine.py").resolve()
    assert registry.get("py") is python
    assert registry.detect("x.py") is python
    with pytest.raises(UnknownLanguage):
        registry.get("python3")  # the override dropped that alias
    assert len([lang for lang in registry if lang.name == "python"]) == 1


def test_later_folders_win(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    write(first, "awk.yaml", AWK)
    write(second, "awk.yaml", AWK.replace("package: gawk", "package: mawk"))
    assert Registry.load([first, second]).get("awk").package == "mawk"
    assert Registry.load([second, first]).get("awk").package == "gawk"


def test_two_languages_claiming_one_alias(tmp_path: Path) -> None:
    snake = write(
        tmp_path,
        "snake.yaml",
        'name: snake\naliases: [py]\ninterpreter: snake\nrun: ["{interpreter}", "{script}"]\n',
    )
    with pytest.raises(ConfigError) as info:
        Registry.load([tmp_path])
    assert info.value.message == (
        f"language name 'py' is claimed by both {ROOT / 'languages' / 'python.yaml'} and {snake}"
    )


def test_a_new_name_that_is_a_shipped_alias(tmp_path: Path) -> None:
    write(
        tmp_path, "node.yaml", 'name: node\ninterpreter: node\nrun: ["{interpreter}", "{script}"]\n'
    )
    with pytest.raises(
        ConfigError, match="language name 'node' is claimed by both .*javascript.yaml"
    ):
        Registry.load([tmp_path])


def test_a_missing_extra_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=f"language directory {tmp_path / 'nope'} does not exist"):
        Registry.load([tmp_path / "nope"])


def test_other_files_in_the_folder_are_ignored(tmp_path: Path) -> None:
    write(tmp_path, "README.md", "not a language")
    write(tmp_path, "awk.yml.bak", "::: not yaml")
    assert len(Registry.load([tmp_path])) == len(Registry.load())


# -- broken language files ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("name: [unclosed\n", "not valid YAML: "),
        ("- a\n- b\n", "expected a mapping at the top"),
        ("", "expected a mapping at the top"),
        (AWK + "interpeter: awk\n", "unknown field(s) interpeter"),
        (AWK + "colour: red\nsize: 3\n", "unknown field(s) colour, size"),
        (AWK.replace("interpreter: awk\n", ""), "missing field 'interpreter'"),
        (AWK.replace("name: awk\n", ""), "missing field 'name'"),
        (AWK.replace('run: ["{interpreter}", "-f", "{script}"]\n', ""), "missing field 'run'"),
        (
            AWK.replace('run: ["{interpreter}", "-f", "{script}"]', "run: awk -f {script}"),
            "field 'run' must be a list of strings",
        ),
        (
            AWK.replace("aliases: [gawk]", "aliases: gawk"),
            "field 'aliases' must be a list of strings",
        ),
        (AWK.replace('"{script}"', '"file.awk"'), "'run' must contain {script}"),
        (AWK.replace("name: awk", "name: My Awk"), "bad language name 'My Awk'"),
        (AWK + "memory_limit: rss\n", "memory_limit must be 'as' or 'data', got 'rss'"),
        (AWK + "env: [A, B]\n", "field 'env' must be a mapping"),
        (AWK + "prelude: awk.awk\n", "prelude 'awk.awk' not found at "),
        (AWK + "hook_env: always\n", "hook_env must be true, false, 'fit' or 'whole', not 'always'"),
    ],
)
def test_a_broken_file_is_named(tmp_path: Path, text: str, why: str) -> None:
    path = write(tmp_path, "awk.yaml", text)
    with pytest.raises(ConfigError) as info:
        Registry.load([tmp_path])
    assert info.value.message.startswith(f"{path}: ")
    assert why in info.value.message


def test_missing_prelude_names_where_it_was_looked_for(tmp_path: Path) -> None:
    path = write(tmp_path, "awk.yaml", AWK + "prelude: awk.awk\n")
    with pytest.raises(ConfigError) as info:
        Registry.load([tmp_path])
    assert info.value.message == (
        f"{path}: prelude 'awk.awk' not found at {(tmp_path / 'preludes' / 'awk.awk').resolve()}"
    )


# -- argv -----------------------------------------------------------------------


def test_argv_substitutes_the_placeholders(registry: Registry) -> None:
    python = registry.get("python")
    assert python.prelude is not None
    assert python.argv("/usr/bin/python3", "/work/s.py", ["a b", "{script}"]) == [
        "/usr/bin/python3",
        "-S",
        str(python.prelude),
        "/work/s.py",
        "a b",
        "{script}",
    ]


def test_argv_keeps_fixed_options(registry: Registry) -> None:
    ruby = registry.get("ruby")
    argv = ruby.argv("/usr/bin/ruby", "/w/x.rb")
    assert argv == ["/usr/bin/ruby", "--disable-gems", str(ruby.prelude), "/w/x.rb"]


def test_argv_without_a_prelude() -> None:
    lang = Language(name="awk", interpreter="awk", run=("{interpreter}", "-f", "{script}"))
    assert lang.argv("/usr/bin/awk", "/w/p.awk", ["in.txt"]) == [
        "/usr/bin/awk",
        "-f",
        "/w/p.awk",
        "in.txt",
    ]


def test_argv_leaves_other_braces_alone() -> None:
    """Only the documented placeholders are replaced; shell text such as ``${0}`` stays."""
    lang = Language(
        name="wrapped",
        interpreter="sh",
        run=("{interpreter}", "-c", 'exec awk -f "${0}" "$@"', "{script}"),
    )
    assert lang.argv("/bin/sh", "/w/p.awk") == [
        "/bin/sh",
        "-c",
        'exec awk -f "${0}" "$@"',
        "/w/p.awk",
    ]


def test_language_names_lists_aliases(registry: Registry) -> None:
    assert registry.get("python").names() == ("python", "python3", "py")


# -- installed interpreters -----------------------------------------------------


def test_require_a_missing_interpreter_names_the_package(tmp_path: Path) -> None:
    registry = Registry.load(search_path=str(tmp_path))
    php = registry.get("php")
    installed = registry.installed(php)
    assert installed == Installed(php, None, None)
    assert installed.available is False
    with pytest.raises(InterpreterMissing) as info:
        installed.require()
    error = info.value
    assert error.message == (
        "no interpreter for 'php': 'php' is not on PATH; install the 'php-cli' package "
        "(apt-get install php-cli), or run `stack languages` to see what is available"
    )
    assert error.details == {"language": "php", "interpreter": "php", "package": "php-cli"}
    assert error.status == 503


def test_package_defaults_to_the_interpreter(tmp_path: Path) -> None:
    write(tmp_path, "awk.yaml", AWK.replace("package: gawk\n", ""))
    lang = Registry.load([tmp_path]).get("awk")
    assert lang.package == "awk"
    with pytest.raises(InterpreterMissing, match="install the 'awk' package"):
        Installed(lang, None, None).require()


def test_installed_bash_has_a_path_and_version() -> None:
    registry = Registry.load(search_path="/usr/local/bin:/usr/bin:/bin")
    installed = registry.installed(registry.get("bash"))
    if not installed.available:
        pytest.skip("bash is not installed (apt-get install bash)")
    assert installed.require() == installed.path
    assert installed.path is not None
    assert installed.path.endswith("/bash")
    assert installed.version is not None
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", installed.version)
    assert registry.installed(registry.get("bash")) is installed  # probed once
