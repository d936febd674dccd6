"""A script's own folder is its code: the modules beside it load, in every language.

Over real HTTP with the real interpreters: each example of
``examples/services/siblings`` served as a file and in its folder, cold and
warm, with ``--isolate none`` and under bubblewrap; then what is staged (no
secrets, nothing unreadable, nothing writable), and --watch.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import pytest

from ..conftest import EXAMPLES, need

SIBLINGS = EXAMPLES / "siblings"
# The service of each language and the module it loads.
SERVICES = {
    "bash": ("hello.sh", "greeting.sh"),
    "sh": ("hello-posix", "greeting-posix"),
    "javascript": ("hello.js", "greeting.js"),
    "python": ("hello.py", "greeting.py"),
    "php": ("hello.php", "greeting.php"),
    "ruby": ("hello.rb", "greeting.rb"),
    "lua": ("hello.lua", "greeting.lua"),
    "perl": ("hello.pl", "greeting.pl"),
    "tcl": ("hello.tcl", "greeting.tcl"),
}
INTERPRETERS = {"javascript": "node", "python": "python3", "lua": "lua5.4", "tcl": "tclsh"}

isolations = pytest.mark.parametrize("isolate", ["none", "bwrap"])


def _need(language: str) -> None:
    need(INTERPRETERS.get(language, language))


def _copy_examples(tmp_path: Path) -> Path:
    """The examples in a folder of their own (the checkout may be world-writable)."""
    folder = tmp_path / "siblings"
    shutil.copytree(SIBLINGS, folder)
    folder.chmod(0o755)
    return folder


@isolations
@pytest.mark.parametrize("language", sorted(SERVICES))
async def test_a_script_served_alone_loads_the_module_beside_it(
    server, client, tmp_path, isolate, language
):
    _need(language)
    name, module = SERVICES[language]
    folder = _copy_examples(tmp_path)
    async with server(folder / name, isolate=isolate) as url:
        plain = await client.get(f"{url}/")
        named = await client.get(f"{url}/anything", params={"name": "Bob"})
    assert (plain.status_code, plain.text) == (200, f"Hello, world! ({module})\n"), plain.text
    assert (named.status_code, named.text) == (200, f"Hello, Bob! ({module})\n"), named.text


@isolations
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
async def test_every_service_of_a_folder_loads_the_module_beside_it(server, client, isolate, warm):
    async with server(SIBLINGS, isolate=isolate, warm={"*": 1} if warm else None) as url:
        for language, (name, module) in SERVICES.items():
            _need(language)
            # Warm: the first call may find its interpreter still loading; the
            # later ones find one waiting.
            for _ in range(3 if warm else 1):
                response = await client.get(f"{url}/{name}", params={"name": "Ann"})
                assert response.status_code == 200, (name, response.text)
                assert response.text == f"Hello, Ann! ({module})\n", name


@isolations
async def test_the_script_sees_its_real_path_and_folder(server, client, script, isolate):
    """``__file__``, ``__DIR__``, ``__dirname``, ``$0``... name the script in its folder."""
    need("node", "php", "ruby")
    script("data.txt", "beside\n")
    files = {
        "file.py": "import os\nprint(open(os.path.join(os.path.dirname(__file__), 'data.txt')).read(), end='')\n",
        "dir.php": "<?php\necho file_get_contents(__DIR__ . '/data.txt');\n",
        "dirname.js": "process.stdout.write(require('fs').readFileSync(__dirname + '/data.txt'));\n",
        "file.rb": "print File.read(File.join(__dir__, 'data.txt'))\n",
        "zero.sh": 'cat "$(dirname "$0")/data.txt"\n',
    }  # fmt: skip
    for name, text in files.items():
        folder = script(name, text).parent
    async with server(folder, isolate=isolate) as url:
        for name in files:
            response = await client.get(f"{url}/{name}")
            assert (response.status_code, response.text) == (200, "beside\n"), name


@isolations
async def test_a_call_cannot_write_into_its_code(server, client, script, isolate):
    if isolate == "none" and os.geteuid() != 0:
        pytest.skip("under --isolate none only a root server runs calls as other uids")
    script("module.sh", "greeting=original\n")
    folder = script(
        "scribble.sh",
        'here=$(dirname "$0")\n'
        'for target in "$here/module.sh" "$here/new.sh" "$0"; do\n'
        '  if echo pwned 2>/dev/null >>"$target"; then echo "wrote ${target##*/}"; '
        'else echo "denied ${target##*/}"; fi\n'
        "done\n"
        'rm -f "$here/module.sh" 2>/dev/null && echo "removed module.sh"\n'
        '. "$here/module.sh" && echo "$greeting"\n',
    ).parent
    async with server(folder, isolate=isolate) as url:
        response = await client.get(f"{url}/scribble.sh")
    assert response.status_code == 200, response.text
    assert response.text == ("denied module.sh\ndenied new.sh\ndenied scribble.sh\noriginal\n"), (
        response.text
    )
    assert (folder / "module.sh").read_text() == "greeting=original\n"


@isolations
async def test_secrets_and_unreadable_files_are_not_staged(server, client, tmp_path, isolate):
    folder = tmp_path / "app"
    (folder / "lib").mkdir(parents=True)
    (folder / ".git").mkdir()
    folder.chmod(0o755)
    (folder / "lib").chmod(0o755)
    files = {
        "list.sh": 'cd "$(dirname "$0")" && find . -mindepth 1 | sort\n',
        "list.sh.stack.yaml": "env: {TOKEN: secret}\n",
        "lib/util.sh": "true\n",
        ".env": "TOKEN=secret\n",
        ".git/config": "[core]\n",
        "server.key": "secret\n",
        "cert.pem": "secret\n",
        "id_ed25519": "secret\n",
        "private.txt": "secret\n",
    }
    for name, text in files.items():
        (folder / name).write_text(text)
        (folder / name).chmod(0o644)
    (folder / "private.txt").chmod(0o600)
    (folder / "hostname.txt").symlink_to("/etc/hostname")
    expected = ["./lib", "./lib/util.sh", "./list.sh"]
    if os.geteuid() != 0:  # calls run as the server's user: it reads private.txt anyway
        expected.insert(2, "./private.txt")
    async with server(folder, isolate=isolate) as url:
        response = await client.get(f"{url}/list.sh")
    assert response.status_code == 200, response.text
    assert response.text.splitlines() == expected


@isolations
async def test_a_script_in_a_shared_folder_is_served_alone(
    server, client, tmp_path, isolate, caplog
):
    """A folder anyone may write to is not code: only the script is staged, and the log says why."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o1777)
    (folder / "greeting.sh").write_text("greeting() { echo planted; }\n")
    (folder / "hello.sh").write_text(
        'source "$(dirname "$0")/greeting.sh" 2>/dev/null && greeting || echo alone\n'
    )
    caplog.set_level(logging.INFO, logger="stack")
    async with server(folder / "hello.sh", isolate=isolate) as url:
        response = await client.get(f"{url}/")
    assert (response.status_code, response.text) == (200, "alone\n")
    assert any(
        "is not staged (anyone may write to it)" in r.getMessage() for r in caplog.records
    ), [r.getMessage() for r in caplog.records]


@isolations
async def test_watch_sees_a_changed_module(server, client, tmp_path, isolate):
    folder = _copy_examples(tmp_path)
    async with server(folder, isolate=isolate, watch=True) as url:
        before = await client.get(f"{url}/hello.py")
        module = folder / "greeting.py"
        module.write_text(module.read_text().replace("Hello", "Howdy"))
        os.utime(module, ns=(1, 1))  # a new mtime even within the clock's resolution
        after = await client.get(f"{url}/hello.py")
    assert before.text == "Hello, world! (greeting.py)\n"
    assert after.text == "Howdy, world! (greeting.py)\n"
