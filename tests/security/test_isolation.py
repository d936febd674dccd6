"""bubblewrap's command line: which host files a call may never read, and pid namespaces."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sandbox.core import isolation

CALL_UID = 61000


@pytest.fixture
def hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Stand-ins for /etc/shadow and friends, with the modes a test gives them."""
    files = {name: tmp_path / name for name in ("private", "world", "mine", "group", "gone")}
    for name, path in files.items():
        if name != "gone":
            path.write_text("secret\n")
    files["private"].chmod(0o640)  # /etc/shadow: root:shadow 0640
    files["world"].chmod(0o644)  # a careless chmod
    files["mine"].chmod(0o600)
    files["group"].chmod(0o640)
    if os.geteuid() == 0:
        os.chown(files["mine"], CALL_UID, 0)
        os.chown(files["group"], 0, CALL_UID)
    monkeypatch.setattr(isolation, "_HIDDEN", tuple(str(path) for path in files.values()))
    return files


def covered(argv: list[str]) -> set[str]:
    """The paths bound over with /dev/null."""
    return {
        argv[i + 2]
        for i, arg in enumerate(argv)
        if arg == "--ro-bind" and argv[i + 1] == "/dev/null"
    }


def test_files_the_call_uid_could_read_are_covered(hidden):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the files to the call's uid")
    argv = isolation.bwrap_argv("bwrap", workdir=Path("/tmp"), binds=[], uid=CALL_UID)
    assert covered(argv) == {str(hidden[name]) for name in ("world", "mine", "group")}


def test_files_the_server_user_could_read_are_covered(hidden):
    # Without a uid of its own the call has the server's uid and groups.
    argv = isolation.bwrap_argv("bwrap", workdir=Path("/tmp"), binds=[], uid=None)
    readable = {str(path) for path in hidden.values() if os.access(path, os.R_OK)}
    assert covered(argv) == readable
    assert str(hidden["world"]) in readable


def test_the_pid_namespace_is_bwraps():
    # The launcher makes none under bwrap (engine: no -p), so bwrap must.
    argv = isolation.bwrap_argv("bwrap", workdir=Path("/tmp"), binds=[])
    assert "--unshare-all" in argv or "--unshare-pid" in argv
    assert "--die-with-parent" in argv  # killing bwrap ends its namespace
