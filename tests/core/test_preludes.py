"""The language registry and preludes, run with the real interpreters.

Each call runs a language's ``run`` line from ``languages/<name>.yaml`` the way
the engine does, without the engine: placeholders substituted here, a
hand-written Hook (the ``STACK_HOOK`` JSON and the ``STACK_HOOK_FLAT`` file),
fd 3 on a pipe, and a small environment. A language whose interpreter is not
installed is skipped with the package to install.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ROOT / "languages"
PRELUDES = LANGUAGES / "preludes"
EXAMPLES = ROOT / "examples" / "services"

# The interpreted languages (those with a prelude); compiled ones are tested
# through the execute API in test_execute.py.
REGISTRY = {
    path.stem: spec
    for path in LANGUAGES.glob("*.yaml")
    if "prelude" in (spec := yaml.safe_load(path.read_text()))
}
FIELDS = {
    "name",
    "aliases",
    "extensions",
    "shebangs",
    "interpreter",
    "package",
    "version",
    "run",
    "prelude",
    "memory_limit",
    "env",
}
OPTIONAL_FIELDS = {"hook_env", "description", "warm"}
PLACEHOLDERS = {"{interpreter}", "{prelude}", "{script}"}


# -- running a script ---------------------------------------------------------


def flatten(value: Any, prefix: str = "Hook") -> Iterator[tuple[str, str]]:
    """The STACK_HOOK_FLAT pairs for a Hook, as the contract describes them."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from flatten(item, f"{prefix}_{re.sub(r'[^A-Za-z0-9_]', '_', key)}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from flatten(item, f"{prefix}_{index}")
    elif isinstance(value, str):
        if "\0" not in value:
            yield prefix, value
    else:
        yield prefix, json.dumps(value)


def make_hook(params: Mapping[str, Any] | None = None, **req: Any) -> dict[str, Any]:
    return {
        "params": dict(params or {}),
        "req": {"method": "GET", "url": "/", "path": "/", "query": {}, "headers": {}, **req},
        "env": {},
    }


def status(code: int) -> dict[str, Any]:
    return {"type": "statusCode", "payload": {"value": code}}


def header(name: str, value: str | list[str]) -> dict[str, Any]:
    return {"type": "setHeader", "payload": {"name": name, "value": value}}


END = {"type": "end"}


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str
    control: list[dict[str, Any]]


@dataclass(frozen=True)
class Language:
    name: str
    spec: dict[str, Any]
    interpreter: str

    @property
    def env(self) -> dict[str, str]:
        """The language's env as the engine gives it to a call with no memory limit
        (a value sized from the limit, ``{memory_mib}``, is left out)."""
        return {k: v for k, v in self.spec["env"].items() if "{memory_mib}" not in v}

    def command(self, script: Path, *args: str) -> list[str]:
        prelude = str(PRELUDES / self.spec["prelude"])
        substitutions = {
            "{interpreter}": self.interpreter,
            "{prelude}": prelude,
            "{script}": str(script),
        }
        command = []
        for item in self.spec["run"]:
            for placeholder, value in substitutions.items():
                item = item.replace(placeholder, value)
            command.append(item)
        return [*command, *args]

    def run(
        self,
        script: Path,
        *args: str,
        hook: dict[str, Any] | None = None,
        flat_extra: Sequence[tuple[str, str]] = (),
        control: str | None = "pipe",
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Result:
        """Run script as a call would.

        Args:
            script: the user's script.
            args: the script's arguments.
            hook: the Hook; None runs without STACK_HOOK and STACK_HOOK_FLAT.
            flat_extra: pairs appended to the flat file (crafted names).
            control: "pipe" (fd 3 on its own pipe), "stdout" (fd 3 shares
                stdout's pipe, so the order of the writes shows) or None (no
                fd 3, as when run by hand).
            env: extra environment.
            cwd: the working directory (and where the Hook files go);
                default: the script's folder.
        """
        tmp = cwd or script.parent
        environ = {
            "PATH": os.environ["PATH"],
            "LANG": "C.UTF-8",
            "HOME": str(tmp),
            "TMPDIR": str(tmp),
            # As the engine does for a call without a memory limit: a value
            # sized from the limit ({memory_mib}) is left out.
            **self.env,
            **(env or {}),
        }
        if hook is not None:
            pairs = [*flatten(hook), *flat_extra]
            (tmp / "hook.json").write_text(json.dumps(hook))
            (tmp / "hook.flat").write_bytes(
                b"".join(name.encode() + b"\0" + value.encode() + b"\0" for name, value in pairs)
            )
            environ["STACK_HOOK"] = str(tmp / "hook.json")
            environ["STACK_HOOK_FLAT"] = str(tmp / "hook.flat")
            # As the engine does: "fit" (or true) exports what fits; "whole"
            # exports all and says so, unless crafted names must go through
            # the file (the path of requests too large for the environment).
            hook_env = self.spec.get("hook_env")
            if hook_env is True or hook_env == "fit":
                environ.update(flatten(hook))
            elif hook_env == "whole" and not flat_extra:
                environ.update(flatten(hook))
                environ["STACK_HOOK_ENV"] = "1"
        command = self.command(script, *args)
        if control is None:
            # close_fds (the default) leaves fd 3 unopened in the child.
            return self._communicate(command, environ, tmp, pass_fds=())
        bash = shutil.which("bash")
        if bash is None:
            pytest.skip("bash is needed to map fd 3")
        if control == "stdout":
            wrapped = [bash, "-c", 'exec "$@" 3>&1', "fd3", *command]
            return self._communicate(wrapped, environ, tmp, pass_fds=())
        reader, writer = os.pipe()
        try:
            wrapped = [bash, "-c", f'exec "$@" 3>&{writer} {writer}>&-', "fd3", *command]
            result = self._communicate(wrapped, environ, tmp, pass_fds=(writer,))
            # The child has exited; the pipe holds its few control lines.
            os.close(writer)
            writer = -1
            with os.fdopen(reader, "rb") as pipe:
                reader = -1
                lines = pipe.read().decode().splitlines()
        finally:
            for fd in (reader, writer):
                if fd >= 0:
                    os.close(fd)
        return Result(
            result.returncode, result.stdout, result.stderr, [json.loads(x) for x in lines]
        )

    @staticmethod
    def _communicate(
        command: list[str],
        environ: dict[str, str],
        cwd: Path,
        pass_fds: tuple[int, ...],
    ) -> Result:
        with subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environ,
            cwd=cwd,
            pass_fds=pass_fds,
        ) as proc:
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
        return Result(proc.returncode, out.decode(), err.decode(), [])


def language(name: str) -> Language:
    spec = REGISTRY[name]
    interpreter = shutil.which(spec["interpreter"])
    if interpreter is None:
        pytest.skip(
            f"{name}: interpreter {spec['interpreter']!r} is not installed "
            f"(Debian package {spec['package']!r})"
        )
    return Language(name, spec, interpreter)


def language_for(path: Path) -> Language:
    """The language of an example: by extension, else by its #! line."""
    for name, spec in REGISTRY.items():
        if path.suffix and path.suffix in spec["extensions"]:
            return language(name)
    first = path.read_text().partition("\n")[0]
    assert first.startswith("#!"), f"{path.name}: no extension and no #! line"
    words = first[2:].split()
    program = Path(words[0]).name
    if program == "env":
        program = words[1]
    for name, spec in REGISTRY.items():
        if program in spec["shebangs"]:
            return language(name)
    raise AssertionError(f"{path.name}: no language for {first!r}")


# -- per-language snippets ----------------------------------------------------


@dataclass(frozen=True)
class Snippets:
    ext: str
    control: str  # prints before, status 201, header X-Test from params.value, prints after
    args: str  # prints its arguments, one a line
    self_name: str | None  # prints the base name of the script as the language sees it
    exit: str  # prints bye, exits 3
    fail: str  # fails with the message boom
    stream: str  # prints first, sleeps 1 s, prints second


SHELL = {
    "control": (
        'echo before\nstack_status 201\nstack_header X-Test "$Hook_params_value"\necho after\n'
    ),
    "args": "printf '%s\\n' \"$@\"\n",
    "exit": "echo bye\nexit 3\n",
    "fail": "boom_no_such_command\n",
    "stream": "echo first\nsleep 1\necho second\n",
}

SNIPPETS = {
    "bash": Snippets(ext=".sh", self_name='echo "${0##*/}"\n', **SHELL),
    "sh": Snippets(ext="", self_name=None, **SHELL),
    "javascript": Snippets(
        ext=".js",
        control=(
            "console.log('before');\n"
            "Hook.res.status(201);\n"
            "Hook.res.setHeader('X-Test', Hook.params.value);\n"
            "console.log('after');\n"
        ),
        args="for (const a of process.argv.slice(2)) console.log(a);\n",
        self_name="console.log(require('path').basename(process.argv[1]));\n",
        exit="console.log('bye');\nprocess.exit(3);\n",
        fail="function f() { throw new Error('boom'); }\nf();\n",
        stream="console.log('first');\nsetTimeout(() => console.log('second'), 1000);\n",
    ),
    "python": Snippets(
        ext=".py",
        control=(
            'print("before")\n'
            'Hook["res"].status(201)\n'
            'Hook["res"].setHeader("X-Test", Hook["params"]["value"])\n'
            'print("after")\n'
        ),
        args="import sys\nfor a in sys.argv[1:]:\n    print(a)\n",
        self_name="import os, sys\nprint(os.path.basename(sys.argv[0]))\n",
        exit='import sys\nprint("bye")\nsys.exit(3)\n',
        fail='raise RuntimeError("boom")\n',
        stream='import time\nprint("first")\ntime.sleep(1)\nprint("second")\n',
    ),
    "php": Snippets(
        ext=".php",
        control=(
            '<?php\necho "before\\n";\nstack_status(201);\n'
            "stack_header('X-Test', $Hook['params']['value']);\necho \"after\\n\";\n"
        ),
        args='<?php\nforeach (array_slice($argv, 1) as $a) echo $a, "\\n";\n',
        self_name='<?php\necho basename($argv[0]), "\\n";\n',
        exit='<?php\necho "bye\\n";\nexit(3);\n',
        fail="<?php\nthrow new RuntimeException('boom');\n",
        stream='<?php\necho "first\\n";\nsleep(1);\necho "second\\n";\n',
    ),
    "ruby": Snippets(
        ext=".rb",
        control=(
            "puts 'before'\nHook['res'].status(201)\n"
            "Hook['res'].setHeader('X-Test', Hook['params']['value'])\nputs 'after'\n"
        ),
        args="ARGV.each { |a| puts a }\n",
        self_name="puts File.basename($0)\n",
        exit="puts 'bye'\nexit 3\n",
        fail="raise 'boom'\n",
        stream="puts 'first'\nsleep 1\nputs 'second'\n",
    ),
    "lua": Snippets(
        ext=".lua",
        control=(
            'print("before")\nstack_status(201)\n'
            'stack_header("X-Test", Hook.params.value)\nprint("after")\n'
        ),
        args="for i = 1, #arg do print(arg[i]) end\n",
        self_name='print((arg[0]:gsub(".*/", "")))\n',
        exit='print("bye")\nos.exit(3)\n',
        fail='error("boom")\n',
        stream='print("first")\nos.execute("sleep 1")\nprint("second")\n',
    ),
    "perl": Snippets(
        ext=".pl",
        control=(
            'use strict;\nprint "before\\n";\nstack_status(201);\n'
            "stack_header('X-Test', $Hook_params{value});\nprint \"after\\n\";\n"
        ),
        args='print "$_\\n" for @ARGV;\n',
        self_name='print +($0 =~ s{.*/}{}r), "\\n";\n',
        exit='print "bye\\n";\nexit 3;\n',
        fail='die "boom\\n";\n',
        stream='print "first\\n";\nsleep 1;\nprint "second\\n";\n',
    ),
    "tcl": Snippets(
        ext=".tcl",
        control=(
            "puts before\nstack_status 201\nstack_header X-Test $Hook_params(value)\nputs after\n"
        ),
        args="foreach a $argv { puts $a }\n",
        self_name="puts [file tail $argv0]\n",
        exit="puts bye\nexit 3\n",
        fail="error boom\n",
        stream="puts first\nafter 1000\nputs second\n",
    ),
}

LANGUAGE_NAMES = sorted(SNIPPETS)

# A header value that needs JSON escaping and looks like code in every language.
TRICKY = 'say "hi" \\ $(touch pwned) `touch pwned` [exec touch pwned] é\ttab'

EXPECTED_CONTROL = [
    status(201),
    header("X-Test", TRICKY),
]


def write_script(tmp_path: Path, lang: str, kind: str, stem: str = "script") -> Path:
    snippets = SNIPPETS[lang]
    code = getattr(snippets, kind)
    if code is None:
        pytest.skip(f"{lang}: no {kind} snippet")
    script = tmp_path / f"{stem}{snippets.ext}"
    script.write_text(code)
    return script


# -- the registry -------------------------------------------------------------


def test_every_language_has_snippets() -> None:
    assert sorted(REGISTRY) == LANGUAGE_NAMES


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_registry_entry_is_complete(name: str) -> None:
    spec = REGISTRY[name]
    assert FIELDS <= set(spec) <= FIELDS | OPTIONAL_FIELDS
    assert spec["name"] == name
    for key in ("aliases", "extensions", "shebangs"):
        assert isinstance(spec[key], list)
        assert all(isinstance(item, str) and item for item in spec[key])
    assert all(ext.startswith(".") for ext in spec["extensions"])
    assert spec["memory_limit"] in ("as", "data")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in spec["env"].items())
    assert spec.get("hook_env", False) in (True, False, "fit", "whole")
    assert (PRELUDES / spec["prelude"]).is_file()
    for key in ("version", "run"):
        assert all(isinstance(item, str) for item in spec[key])
        for item in spec[key]:
            assert set(re.findall(r"\{[^}]*\}", item)) <= PLACEHOLDERS
    assert spec["run"][0] == "{interpreter}"
    assert "{prelude}" in spec["run"]
    assert spec["run"][-1] == "{script}"


def test_registry_names_and_extensions_are_unique() -> None:
    names = [n for spec in REGISTRY.values() for n in [spec["name"], *spec["aliases"]]]
    extensions = [ext for spec in REGISTRY.values() for ext in spec["extensions"]]
    assert len(names) == len(set(names))
    assert len(extensions) == len(set(extensions))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_version_command_prints_a_version(name: str) -> None:
    lang = language(name)
    command = [item.replace("{interpreter}", lang.interpreter) for item in lang.spec["version"]]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{name}: {command[0]} is not installed")
    done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, timeout=30)
    output = (done.stdout + done.stderr).decode()
    assert done.returncode == 0, output
    assert re.search(r"\d+\.\d+(\.\d+)?", output), output


# -- every language -----------------------------------------------------------


def hello_example(lang: str) -> Path:
    return EXAMPLES / ("hello-posix" if lang == "sh" else f"hello{SNIPPETS[lang].ext}")


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_hello_greets_the_name_param(lang: str, tmp_path: Path) -> None:
    example = hello_example(lang)
    assert language_for(example).name == lang
    script = tmp_path / example.name
    shutil.copy(example, script)
    result = language(lang).run(script, hook=make_hook({"name": "Bob"}))
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hello, Bob!\n", "")
    assert result.control in ([], [END])  # hello.js ends with res.end()


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_runs_without_hook_or_fd3(lang: str, tmp_path: Path) -> None:
    script = tmp_path / hello_example(lang).name
    shutil.copy(hello_example(lang), script)
    result = language(lang).run(script, hook=None, control=None)
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hello, world!\n", "")


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_request_data_is_never_evaluated(lang: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    name = (
        f"$(touch {marker}) `touch {marker}` [exec touch {marker}] "
        f"#{{`touch {marker}`}} '; touch {marker}; ' \"; touch {marker}; \""
    )
    script = tmp_path / hello_example(lang).name
    shutil.copy(hello_example(lang), script)
    result = language(lang).run(script, hook=make_hook({"name": name}))
    assert result.stdout == f"Hello, {name}!\n"
    assert result.returncode == 0
    assert not marker.exists()


CRAFTED_NAMES = {
    # What each flat-file reader prints for a crafted PATH entry: untouched.
    "bash": ('echo "${PATH:-unset}"\n', None),
    "lua": ("print(tostring(PATH))\n", "nil\n"),
    "perl": ('print defined $main::PATH ? "set\\n" : "nil\\n";\n', "nil\n"),
    "tcl": ("puts [info exists ::PATH]\n", "0\n"),
}


@pytest.mark.parametrize("lang", sorted(CRAFTED_NAMES))
def test_flat_names_other_than_hook_are_ignored(lang: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    code, expected = CRAFTED_NAMES[lang]
    script = tmp_path / f"crafted{SNIPPETS[lang].ext}"
    script.write_text(code)
    crafted = [
        ("PATH", "/nonexistent"),
        ("env(PATH)", "/nonexistent"),
        (f"Hook_x$(touch {marker})", "v"),
        (f"Hook_y[exec touch {marker}]", "v"),
        ("Hook_z; touch pwned", "v"),
    ]
    result = language(lang).run(script, hook=make_hook(), flat_extra=crafted)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (expected or f"{os.environ['PATH']}\n")
    assert not marker.exists()


def expected_control(lang: str) -> list[dict[str, Any]]:
    """What the control script sends; Python's and Node's preludes end the response when
    the script is done (returned; an empty event loop)."""
    return EXPECTED_CONTROL + ([END] if lang in ("python", "javascript") else [])


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_control_messages_on_fd3(lang: str, tmp_path: Path) -> None:
    script = write_script(tmp_path, lang, "control")
    result = language(lang).run(script, hook=make_hook({"value": TRICKY}))
    assert (result.returncode, result.stdout, result.stderr) == (0, "before\nafter\n", "")
    assert result.control == expected_control(lang)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_control_and_body_keep_program_order(lang: str, tmp_path: Path) -> None:
    script = write_script(tmp_path, lang, "control")
    result = language(lang).run(script, hook=make_hook({"value": TRICKY}), control="stdout")
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert lines[0] == "before"
    after = lines.index("after")
    assert [json.loads(line) for line in lines[1:after]] == EXPECTED_CONTROL
    assert [json.loads(line) for line in lines[after + 1 :]] == expected_control(lang)[
        len(EXPECTED_CONTROL) :
    ]


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_control_without_fd3_is_dropped(lang: str, tmp_path: Path) -> None:
    script = write_script(tmp_path, lang, "control")
    result = language(lang).run(script, hook=make_hook({"value": TRICKY}), control=None)
    assert (result.returncode, result.stdout, result.stderr) == (0, "before\nafter\n", "")


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_script_arguments(lang: str, tmp_path: Path) -> None:
    script = write_script(tmp_path, lang, "args")
    args = ["one", "two words", "$(touch pwned)", "*", ""]
    result = language(lang).run(script, *args, hook=make_hook())
    assert (result.returncode, result.stdout, result.stderr) == (0, "\n".join(args) + "\n", "")


# dash cannot set $0 for a sourced script, so sh is left out here.
@pytest.mark.parametrize(
    "lang", [name for name in LANGUAGE_NAMES if SNIPPETS[name].self_name is not None]
)
def test_script_sees_its_own_name(lang: str, tmp_path: Path) -> None:
    script = write_script(tmp_path, lang, "self_name", stem="myself")
    result = language(lang).run(script, hook=make_hook())
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{script.name}\n", "")


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_exit_status_is_the_scripts(lang: str, tmp_path: Path) -> None:
    script = write_script(tmp_path, lang, "exit")
    result = language(lang).run(script, hook=make_hook())
    assert (result.returncode, result.stdout) == (3, "bye\n")


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_errors_go_to_stderr_and_exit_nonzero(lang: str, tmp_path: Path) -> None:
    script = write_script(tmp_path, lang, "fail")
    result = language(lang).run(script, hook=make_hook())
    assert result.returncode != 0
    assert result.stdout == ""
    assert "boom" in result.stderr


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_output_is_streamed(lang: str, tmp_path: Path) -> None:
    """The first line arrives while the script still sleeps."""
    lang_ = language(lang)
    script = write_script(tmp_path, lang, "stream")
    assert_streams(lang_, script)


def assert_streams(lang: Language, script: Path) -> None:
    environ = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", **lang.env}
    with subprocess.Popen(
        lang.command(script),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
        cwd=script.parent,
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        still_running = proc.poll() is None
        rest, err = proc.communicate(timeout=60)
    assert first.strip() in (b"first", b"first line")
    assert still_running, "the first line only arrived when the script exited"
    assert proc.returncode == 0, err


# -- JavaScript ---------------------------------------------------------------


def test_javascript_status_and_headers_example(tmp_path: Path) -> None:
    script = tmp_path / "status-and-headers.js"
    shutil.copy(EXAMPLES / script.name, script)
    result = language("javascript").run(script, hook=make_hook({"name": "Bob"}))
    assert (result.returncode, result.stdout, result.stderr) == (0, "created Bob\n", "")
    assert result.control == [
        status(201),
        header("Content-Type", "text/plain; charset=utf-8"),
        header("X-Created-By", "stack"),
        END,
    ]


def test_javascript_response_api(tmp_path: Path) -> None:
    script = tmp_path / "api.js"
    script.write_text(
        """
module.exports = function (hook) {
  const res = hook.res;
  console.log(Hook === hook, require.main === module, res.statusCode, res.headersSent);
  res.statusCode = 404;
  res.setHeader('X-Many', ['a', 1]);
  res.setHeader('X-Gone', 'x');
  res.removeHeader('x-gone');
  console.log(res.statusCode, res.getHeader('x-many'), res.hasHeader('X-Gone'));
  res.writeHead(418, 'Teapot', { 'X-Tea': 'earl grey' });
  hook.debug('debug %s', 'line', { n: 1 });
  res.write('body ');
  console.log(res.headersSent);
  res.status(200).json({ name: hook.params.name });
};
"""
    )
    result = language("javascript").run(script, hook=make_hook({"name": "Bob"}))
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout
        == "true true 200 false\n404 [ 'a', '1' ] false\nbody true\n{\"name\":\"Bob\"}"
    )
    assert result.control == [
        status(404),
        header("X-Many", ["a", "1"]),
        header("X-Gone", "x"),
        {"type": "removeHeader", "payload": {"name": "x-gone"}},
        {"type": "writeHead", "payload": {"code": 418, "headers": {"X-Tea": "earl grey"}}},
        {"type": "statusMessage", "payload": {"value": "Teapot"}},
        {"type": "log", "payload": {"entry": "debug line { n: 1 }"}},
        status(200),
        header("Content-Type", "application/json"),
        END,
    ]


def test_javascript_async_rejection_fails_the_call(tmp_path: Path) -> None:
    script = tmp_path / "reject.js"
    script.write_text(
        "module.exports = async function (hook) {\n"
        "  await null;\n"
        "  throw new Error('async boom');\n"
        "};\n"
    )
    result = language("javascript").run(script, hook=make_hook())
    assert result.returncode != 0
    assert "Error: async boom" in result.stderr
    assert f"at module.exports ({script}" in result.stderr


def test_javascript_es_module_default_export(tmp_path: Path) -> None:
    script = tmp_path / "hello.mjs"
    script.write_text("export default (hook) => hook.res.end(`Hello, ${hook.params.name}!\\n`);\n")
    result = language("javascript").run(script, hook=make_hook({"name": "Bob"}))
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hello, Bob!\n", "")
    assert result.control == [END]


# -- Python -------------------------------------------------------------------


def test_python_headers_example(tmp_path: Path) -> None:
    script = tmp_path / "headers.py"
    shutil.copy(EXAMPLES / script.name, script)
    result = language("python").run(script, hook=make_hook(method="POST"))
    assert (result.returncode, result.stdout, result.stderr) == (0, "accepted\n", "")
    assert result.control == [
        status(202),
        header("Content-Type", "text/plain; charset=utf-8"),
        header("X-Request-Method", "POST"),
        END,
    ]


def test_python_response_api(tmp_path: Path) -> None:
    script = tmp_path / "api.py"
    (tmp_path / "helper_module.py").write_text("VALUE = 'imported'\n")
    script.write_text(
        """
import sys
import helper_module

res = Hook["res"]
print(__name__, __file__ == sys.argv[0], helper_module.VALUE)
res.writeHead(203, "Odd", {"X-A": 1})
res.setHeader("X-B", ["1", "2"])
res.removeHeader("X-B")
print(res.getHeader("x-a"), res.getHeader("x-b"), res.headers_sent)
res.write(b"bytes ")
res.json({"ok": True})
"""
    )
    result = language("python").run(script, hook=make_hook())
    assert result.returncode == 0, result.stderr
    assert result.stdout == '__main__ True imported\n1 None False\nbytes {"ok": true}'
    assert result.control == [
        {"type": "writeHead", "payload": {"code": 203, "headers": {"X-A": "1"}}},
        {"type": "statusMessage", "payload": {"value": "Odd"}},
        header("X-B", ["1", "2"]),
        {"type": "removeHeader", "payload": {"name": "X-B"}},
        header("Content-Type", "application/json"),
        END,
    ]


def test_python_traceback_starts_in_the_script(tmp_path: Path) -> None:
    script = write_script(tmp_path, "python", "fail")
    result = language("python").run(script, hook=make_hook())
    assert result.returncode == 1
    frames = re.findall(r'File "([^"]+)"', result.stderr)
    assert frames == [str(script)]


def test_python_runs_without_site_yet_finds_what_site_adds(tmp_path: Path) -> None:
    # The run line has -S; the prelude adds dist-packages, exit() and help at
    # once and runs the rest of site (.pth files, user site) on the first
    # import nothing finds.
    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "pth_added.py").write_text("WHERE = 'pth'\n")
    version = subprocess.run(
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    user_site = tmp_path / f".local/lib/python{version}/site-packages"
    user_site.mkdir(parents=True)
    (user_site / "extra.pth").write_text(f"{extra}\n")
    script = tmp_path / "site_check.py"
    script.write_text(
        "import sys\n"
        "import builtins\n"
        "print(sys.flags.no_site, callable(exit), hasattr(builtins, 'help'))\n"
        "import yaml\n"
        "print(yaml.safe_load('a: 1'))\n"
        "import pth_added\n"
        "print(pth_added.WHERE)\n"
        "exit(3)\n"
    )
    result = language("python").run(script, hook=make_hook())
    assert result.stderr == ""
    assert result.stdout == "1 True True\n{'a': 1}\npth\n"
    assert result.returncode == 3


# -- Ruby, PHP, Perl ----------------------------------------------------------


def test_ruby_loads_rubygems_only_when_needed(tmp_path: Path) -> None:
    script = tmp_path / "gems.rb"
    script.write_text(
        "require 'set'\n"
        "puts defined?(Gem) ? 'gems' : 'no gems'\n"
        "begin\n"
        "  require 'stack_no_such_library'\n"
        "rescue LoadError\n"
        "  puts defined?(Gem) ? 'gems' : 'no gems'\n"
        "end\n"
    )
    result = language("ruby").run(script, hook=make_hook())
    assert (result.returncode, result.stdout, result.stderr) == (0, "no gems\ngems\n", "")


def test_ruby_response_json(tmp_path: Path) -> None:
    script = tmp_path / "echo.rb"
    shutil.copy(EXAMPLES / script.name, script)
    result = language("ruby").run(script, hook=make_hook({"name": "Bob"}))
    assert json.loads(result.stdout) == {"name": "Bob"}
    assert result.control == [
        header("Content-Type", "application/json"),
        END,
    ]


def test_php_superglobals_and_warnings(tmp_path: Path) -> None:
    script = tmp_path / "globals.php"
    script.write_text(
        "<?php\n"
        "echo $undefined_variable;\n"
        "echo $_GET['q'], ' ', $_REQUEST['name'], ' ',\n"
        "    $_SERVER['SCRIPT_NAME'], ' ', $argc, \"\\n\";\n"
    )
    hook = make_hook({"q": "1", "name": "Bob"}, query={"q": "1"})
    result = language("php").run(script, "x", hook=hook, env={"SCRIPT_NAME": "/globals"})
    assert (result.returncode, result.stdout) == (0, "1 Bob /globals 2\n")
    assert "Undefined variable $undefined_variable" in result.stderr


def test_perl_reports_a_missing_script(tmp_path: Path) -> None:
    result = language("perl").run(tmp_path / "missing.pl", hook=make_hook())
    assert result.returncode != 0
    assert "cannot run" in result.stderr
    assert "No such file or directory" in result.stderr


# -- the other examples -------------------------------------------------------

JSON_ECHO = {"javascript", "python", "php", "ruby"}


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_echo_example(lang: str, tmp_path: Path) -> None:
    example = EXAMPLES / ("echo-posix" if lang == "sh" else f"echo{SNIPPETS[lang].ext}")
    assert language_for(example).name == lang
    script = tmp_path / example.name
    shutil.copy(example, script)
    params = {"name": "Bob", "city": "Paris", "tags": ["a", "b"]}
    result = language(lang).run(script, hook=make_hook(params))
    assert result.returncode == 0, result.stderr
    if lang in JSON_ECHO:
        assert json.loads(result.stdout) == params
        assert header("Content-Type", "application/json") in result.control
    else:
        lines = sorted(
            f"{name[len('Hook_params_') :]}={value}"
            for name, value in flatten(params, "Hook_params")
        )
        assert result.stdout.splitlines() == lines


def test_upload_example(tmp_path: Path) -> None:
    script = tmp_path / "upload.py"
    shutil.copy(EXAMPLES / script.name, script)
    upload = tmp_path / "uploads" / "a.txt"
    upload.parent.mkdir()
    upload.write_text("hello upload")
    params = {
        "note": "not a file",
        "file": {"filename": "a.txt", "path": str(upload), "size": 12, "contentType": "text/plain"},
    }
    result = language_for(script).run(script, hook=make_hook(params))
    assert (result.returncode, result.stdout) == (0, "file: a.txt (12 bytes, text/plain)\n")


def test_form_example(tmp_path: Path) -> None:
    script = tmp_path / "form.php"
    shutil.copy(EXAMPLES / script.name, script)
    result = language_for(script).run(script, hook=make_hook({"name": "Bob", "color": "blue"}))
    assert (result.returncode, result.stdout, result.stderr) == (0, "name: Bob\ncolor: blue\n", "")
    assert result.control == [header("Content-Type", "text/plain; charset=utf-8")]


def test_cgi_example(tmp_path: Path) -> None:
    script = tmp_path / "cgi.sh"
    shutil.copy(EXAMPLES / script.name, script)
    env = {"REQUEST_METHOD": "POST", "PATH_INFO": "/x"}
    result = language_for(script).run(script, hook=make_hook(), env=env)
    assert result.returncode == 0
    assert result.stdout == (
        "Status: 201 Created\r\nContent-Type: text/plain\r\n\r\n"
        "Hello from CGI, POST request for /x\n"
    )


def test_env_example(tmp_path: Path) -> None:
    script = tmp_path / "env.sh"
    shutil.copy(EXAMPLES / script.name, script)
    env = {"REQUEST_METHOD": "GET", "QUERY_STRING": "a=1", "HTTP_USER_AGENT": "test"}
    result = language_for(script).run(script, hook=make_hook(), env=env)
    lines = result.stdout.splitlines()
    assert result.returncode == 0
    assert {
        "REQUEST_METHOD=GET",
        "QUERY_STRING=a=1",
        "CONTENT_TYPE=",
        "HTTP_USER_AGENT=test",
    } <= set(lines)


def test_stream_example(tmp_path: Path) -> None:
    script = tmp_path / "stream.py"
    shutil.copy(EXAMPLES / script.name, script)
    assert_streams(language_for(script), script)


@pytest.mark.parametrize("path", ["environment", "flat file"])
def test_bash_hook_variables_are_not_exported_to_child_processes(path: str, tmp_path: Path) -> None:
    # Either way the Hook arrives (bash imports the environment when it all
    # fits; the flat file otherwise), the script's children do not inherit it.
    script = tmp_path / "kids.sh"
    script.write_text(
        'echo "$Hook_params_name ${STACK_HOOK_ENV-unset}"\n'
        "bash -c 'echo \"${Hook_params_name-unset}\"'\n"
        "tr '\\0' '\\n' < /proc/$$/environ | grep -c '^Hook_' || true\n"
    )
    extra = [("Hook_extra", "x")] if path == "flat file" else []
    result = language("bash").run(script, hook=make_hook({"name": "Bob"}), flat_extra=extra)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["Bob unset", "unset"]
    # Imported from the environment (faster than reading the file) or not.
    assert (int(lines[2]) > 0) == (path == "environment")


# The script's folder is its code: each language finds a module beside the
# script though the working directory is another (the call's own), by the
# language's usual way for a script's own files and, where the language has
# a search path, through that path.
SIBLING_MODULES: dict[str, tuple[str, dict[str, str]]] = {
    "bash": ('source "$(dirname "$0")/helper.sh"\necho "$text"\n',
             {"helper.sh": "text='from helper'\n"}),
    "sh": ('. "${SCRIPT_FILENAME%/*}/helper.sh"\necho "$text"\n',
           {"helper.sh": "text='from helper'\n"}),
    "javascript": ("console.log(require('./helper').text);\n",
                   {"helper.js": "exports.text = 'from helper';\n"}),
    "python": ("import helper\nprint(helper.TEXT)\n", {"helper.py": "TEXT = 'from helper'\n"}),
    # lib/nested.php includes helper.php: found through the include_path
    # (PHP's own fallback looks beside lib/nested.php only).
    "php": ("<?php\nrequire __DIR__ . '/lib/nested.php';\necho HELPER, \"\\n\";\n",
            {"lib/nested.php": "<?php\ninclude 'helper.php';\n",
             "helper.php": "<?php\nconst HELPER = 'from helper';\n"}),
    "ruby": ("require 'helper'\nrequire_relative 'other'\nputs HELPER, OTHER\n",
             {"helper.rb": "HELPER = 'from helper'\n", "other.rb": "OTHER = 'and other'\n"}),
    "lua": ('print((require("helper")))\n', {"helper.lua": 'return "from helper"\n'}),
    "perl": ('use strict;\nuse Helper;\nrequire "other.pl";\nprint Helper::text(), "\\n";\n',
             {"Helper.pm": "package Helper;\nsub text { 'from helper' }\n1;\n",
              "other.pl": "1;\n"}),
    "tcl": ("package require helper\nputs [helper]\n",
            {"pkgIndex.tcl": "package ifneeded helper 1.0 [list source [file join $dir helper.tcl]]\n",
             "helper.tcl": "package provide helper 1.0\nproc helper {} { return {from helper} }\n"}),
}  # fmt: skip


def test_every_language_has_a_sibling_module_case() -> None:
    assert set(SIBLING_MODULES) == set(LANGUAGE_NAMES)


@pytest.mark.parametrize("lang", LANGUAGE_NAMES)
def test_a_module_beside_the_script_loads(lang: str, tmp_path: Path) -> None:
    main, modules = SIBLING_MODULES[lang]
    code = tmp_path / "code"
    work = tmp_path / "work"
    work.mkdir()
    for name, text in modules.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(text)
    script = code / f"main{SNIPPETS[lang].ext}"
    script.write_text(main)
    result = language(lang).run(
        script, hook=make_hook(), cwd=work, env={"SCRIPT_FILENAME": str(script)}
    )
    expected = "from helper\nand other\n" if lang == "ruby" else "from helper\n"
    assert (result.returncode, result.stdout, result.stderr) == (0, expected, "")
