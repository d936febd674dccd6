"""The hello-world scripts every server runs, and the interpreters that run them.

Each language has two scripts with the same body: the plain one (what stack
serves and what the spawn floor runs) and a CGI one for lighttpd, which only
adds the ``Content-Type`` header and blank line CGI requires.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

EXPECTED_BODY = b"hello\n"


@dataclass(frozen=True)
class Hello:
    """A hello-world script in one language.

    Attributes:
        language: stack's name for the language.
        extension: file extension, with the dot (also lighttpd's ``cgi.assign`` key).
        source: prints ``hello``.
        cgi_source: the same, with a CGI header first.
        flags: interpreter options of stack's run line that change start-up
            time; the spawn floor uses them too.
        cgi_env: the same options as environment, for lighttpd (its
            ``cgi.assign`` takes an interpreter path, no arguments).
    """

    language: str
    extension: str
    source: str
    cgi_source: str
    flags: tuple[str, ...] = ()
    cgi_env: tuple[tuple[str, str], ...] = ()

    @property
    def filename(self) -> str:
        return f"hello{self.extension}"


HELLOS: dict[str, Hello] = {
    hello.language: hello
    for hello in (
        Hello(
            "bash",
            ".sh",
            "echo hello\n",
            'echo "Content-Type: text/plain"\necho\necho hello\n',
        ),
        Hello(
            "python",
            ".py",
            'print("hello")\n',
            'print("Content-Type: text/plain\\n")\nprint("hello")\n',
        ),
        Hello(
            "javascript",
            ".js",
            'console.log("hello");\n',
            'console.log("Content-Type: text/plain\\n");\nconsole.log("hello");\n',
        ),
        Hello(
            "php",
            ".php",
            '<?php echo "hello\\n";\n',
            '<?php echo "Content-Type: text/plain\\n\\nhello\\n";\n',
        ),
        Hello(
            "ruby",
            ".rb",
            'puts "hello"\n',
            'puts "Content-Type: text/plain\\n\\n"\nputs "hello"\n',
            flags=("--disable-gems",),
            cgi_env=(("RUBYOPT", "--disable-gems"),),
        ),
        Hello(
            "lua",
            ".lua",
            'print("hello")\n',
            'print("Content-Type: text/plain\\n")\nprint("hello")\n',
        ),
    )
}

ALIASES = {"node": "javascript", "js": "javascript", "py": "python", "rb": "ruby"}


def parse_languages(text: str) -> list[str]:
    """``bash,node,...`` as stack's language names, in order, without repeats.

    Raises:
        ValueError: a name the suite has no hello script for.
    """
    names: list[str] = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        name = ALIASES.get(item, item)
        if name not in HELLOS:
            known = ", ".join([*HELLOS, *ALIASES])
            raise ValueError(f"no hello script for {item!r}; choose from {known}")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("no language given")
    return names


@dataclass(frozen=True)
class Interpreter:
    """An interpreter as ``stack languages`` found it."""

    language: str
    path: str | None
    version: str | None
    package: str

    @property
    def installed(self) -> bool:
        return self.path is not None


def find_interpreters(stack: Sequence[str], languages: Iterable[str]) -> dict[str, Interpreter]:
    """The interpreter stack uses for each language (so every server runs the same binary).

    Raises:
        RuntimeError: ``stack languages --json`` failed.
    """
    done = subprocess.run(
        [*stack, "languages", "--json"], capture_output=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"stack languages failed: {done.stderr.decode(errors='replace')}")
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    found: dict[str, Interpreter] = {}
    for name in languages:
        row = rows.get(name, {})
        path = row.get("interpreter") if row.get("installed") else None
        found[name] = Interpreter(name, path, row.get("version"), row.get("package", name))
    return found


def write_scripts(root: Path, hellos: Iterable[Hello]) -> tuple[Path, Path]:
    """Write the plain scripts into ``root/services`` and the CGI ones into ``root/cgi``.

    Returns:
        The two folders. Both are world-readable: stack's calls run as other uids.
    """
    services, cgi = root / "services", root / "cgi"
    for folder in (root, services, cgi):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
    for hello in hellos:
        for folder, text in ((services, hello.source), (cgi, hello.cgi_source)):
            path = folder / hello.filename
            path.write_text(text)
            path.chmod(0o644)
    return services, cgi
