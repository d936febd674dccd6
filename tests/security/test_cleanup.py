"""Availability: whatever a call leaves in its directory, its slot comes back.

A call that left a tree 3,000 levels deep once made the removal raise
(RecursionError in shutil.rmtree), which escaped the cleanup before the slot,
the running count and the uid were released: a few such calls and every later
call queued forever, while /healthz said ok.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
from pathlib import Path

import pytest
import trio

from sandbox.core.engine import EngineConfig
from sandbox.core.files import remove_tree
from sandbox.core.limits import Limits

from .conftest import isolations

DEEP = 3000

# Deep, unreadable, linked to the outside, with a fifo and a socket: what a
# hostile call leaves behind for the server (root) to remove.
LITTER = f"""
python3 - <<'EOF'
import os, socket
top = os.getcwd()
os.symlink("/etc", "etc-link")
os.mkfifo("fifo")
s = socket.socket(socket.AF_UNIX); s.bind("sock")
os.mkdir("locked"); open("locked/f", "w").close(); os.chmod("locked", 0)
for i in range({DEEP}):
    os.mkdir("d")
    os.chdir("d")
open("bottom", "w").close()
os.chdir(top)
for i in range(2000):
    open(f"f{{i}}", "w").close()
EOF
echo littered
"""


def test_remove_tree_takes_any_depth_and_never_follows_links(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    tree = tmp_path / "tree"
    tree.mkdir()
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.symlink(outside, "link", dir_fd=fd)
        os.mkfifo("fifo", dir_fd=fd)
        current = fd
        for _ in range(5000):  # deeper than PATH_MAX allows by name
            os.mkdir("d", dir_fd=current)
            below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=current)
            if current != fd:
                os.close(current)
            current = below
        os.close(current)
    finally:
        os.close(fd)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tree / "sock"))
    locked = tree / "locked"
    locked.mkdir()
    (locked / "inner").mkdir()
    locked.chmod(0)
    remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep").read_text() == "kept"
    assert stat.S_ISDIR(outside.stat().st_mode)


@isolations
@pytest.mark.parametrize("disk", ["quota", "no quota"])
async def test_littered_calls_never_lose_a_slot(stack, services, isolate, disk):
    if disk == "quota" and os.geteuid() != 0:
        pytest.skip("the per-call write quota needs a root server")
    folder = services({"litter.sh": LITTER})
    config = EngineConfig(isolate=isolate, limits=Limits(timeout=60), max_running=2)
    if disk == "no quota":
        config = dataclasses.replace(config, disk=None)
    async with stack(folder, config=config) as s:
        with trio.fail_after(240):  # before: the third call queued for ever
            for _ in range(5):
                response = await s.get("litter.sh")
                assert (response.status_code, response.text) == (200, "littered\n")
            after = await s.get("ping.sh")
        assert after.text == "pong\n"
        health = (await s.http.get(f"{s.url}/healthz")).json()
        assert health["checks"]["slots"]["ok"] is True, health["checks"]["slots"]
