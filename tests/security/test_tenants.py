"""Confidentiality: what one call may not see of the server or of other calls."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from sandbox.core.engine import EngineConfig
from sandbox.core.isolation import prepare_etc

from ..conftest import need


@pytest.fixture
def etc_secret() -> str:
    """A world-readable file in /etc, as a careless operator's JWT secret may be."""
    if os.geteuid() != 0:
        pytest.skip("writing into /etc needs root")
    path = Path("/etc") / f"stack-test-secret-{uuid.uuid4().hex[:8]}"
    path.write_text("the-signing-key\n")
    path.chmod(0o644)
    yield path.name
    path.unlink()


async def test_a_call_under_bwrap_sees_only_the_etc_interpreters_need(stack, services, etc_secret):
    script = f"""
cat /etc/{etc_secret} 2>/dev/null && echo LEAKED
test -r /etc/passwd && echo passwd-readable
test -e /etc/ssl/certs && echo certs-there
ls /etc | grep -c . >/dev/null && echo listed
"""
    folder = services({"peek.sh": script})
    async with stack(folder, isolate="bwrap") as s:
        response = await s.get("peek.sh")
    assert response.status_code == 200, response.text
    assert "LEAKED" not in response.text
    assert "the-signing-key" not in response.text
    assert "passwd-readable" in response.text
    assert "certs-there" in response.text


def test_prepare_etc_copies_only_what_is_allowed_and_readable(tmp_path: Path) -> None:
    source = tmp_path / "etc"
    (source / "ssl" / "private").mkdir(parents=True)
    (source / "ssl" / "private" / "key.pem").write_text("private")
    (source / "ssl" / "private").chmod(0o700)
    (source / "ssl" / "openssl.cnf").write_text("cnf")
    (source / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (source / "shadow").write_text("root:hash")
    (source / "stack").mkdir()
    (source / "stack" / "stack.yaml").write_text("auth: {jwt: {secret: s}}")
    (source / "php").mkdir()
    (source / "php" / "secret.ini").write_text("x")
    (source / "php" / "secret.ini").chmod(0o600)
    (source / "localtime").symlink_to("/usr/share/zoneinfo/UTC")
    base = tmp_path / "base"
    base.mkdir()
    etc = prepare_etc(base, source)
    assert (etc / "passwd").read_text().startswith("root:")
    assert (etc / "ssl" / "openssl.cnf").read_text() == "cnf"
    assert os.readlink(etc / "localtime") == "/usr/share/zoneinfo/UTC"
    for hidden in ("shadow", "stack", "ssl/private", "php/secret.ini"):
        assert not (etc / hidden).exists(), hidden


@pytest.mark.skipif(os.geteuid() != 0, reason="tenants get uids of their own only on a root server")
async def test_no_call_directory_sits_below_a_folder_anyone_may_write(stack, services):
    # A job once planted /dev/shm/node_modules/lodash and another tenant's
    # require('lodash') ran it: the engine's folders now sit below root's only.
    need("node")
    folder = services({})
    async with stack(folder, isolate="none") as s:
        for path in (s.engine.base, s.calls):
            for parent in (path, *path.parents):
                assert not parent.stat().st_mode & 0o002, f"{parent} is world-writable"
        builds = s.engine.base / "builds"
        assert builds.stat().st_mode & 0o777 == 0o711


@pytest.mark.skipif(os.geteuid() != 0, reason="tenants get uids of their own only on a root server")
async def test_a_planted_node_module_is_not_loaded_by_another_tenant(stack, services, tmp_path):
    need("node")
    plant = """
for d in /dev/shm /tmp /var/tmp; do
  mkdir -p "$d/node_modules/lodash" 2>/dev/null &&
  echo 'module.exports = "PLANTED"' > "$d/node_modules/lodash/index.js" 2>/dev/null
done
echo planted
"""
    victim = """
let found = "not found";
try { found = require("lodash"); } catch (e) { found = "not found"; }
console.log(found);
"""
    folder = services({"plant.sh": plant, "victim.js": victim})
    try:
        async with stack(folder, isolate="none") as s:
            assert (await s.get("plant.sh")).text == "planted\n"
            response = await s.get("victim.js")
        assert response.text == "not found\n"
    finally:
        for d in ("/dev/shm", "/tmp", "/var/tmp"):
            shutil.rmtree(f"{d}/node_modules", ignore_errors=True)


LEAVE = """python3 - <<'EOF'
import ctypes, os
for d in ("/tmp", "/dev/shm", "/var/tmp"):
    with open(f"{d}/left-{os.getuid()}", "w") as f:
        f.write("secret of the previous call")
    os.chmod(f"{d}/left-{os.getuid()}", 0o600)
libc = ctypes.CDLL(None, use_errno=True)
key = 0x57AC0000 + os.getuid() % 0xFFFF
shm = libc.shmget(key, 1 << 20, 0o1600)  # IPC_CREAT | 0600
print("left", shm >= 0)
EOF
"""
PEEK = """python3 - <<'EOF'
import ctypes, os
seen = [d for d in ("/tmp", "/dev/shm", "/var/tmp") if os.path.exists(f"{d}/left-{os.getuid()}")]
libc = ctypes.CDLL(None, use_errno=True)
key = 0x57AC0000 + os.getuid() % 0xFFFF
print("files", seen, "shm", libc.shmget(key, 0, 0) >= 0)
EOF
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="tenants get uids of their own only on a root server")
async def test_nothing_a_call_leaves_outside_its_directory_reaches_the_next_one(stack, services):
    # One slot: the next call gets the same uid (uids were reused LIFO).
    need("python3")
    folder = services({"leave.sh": LEAVE, "peek.sh": PEEK})
    config = EngineConfig(isolate="none", max_running=1)
    async with stack(folder, config=config) as s:
        assert (await s.get("leave.sh")).text == "left True\n"
        peek = await s.get("peek.sh")
    assert peek.text == "files [] shm False\n"


def test_an_actions_secrets_are_not_staged_where_calls_can_read_them(tmp_path: Path) -> None:
    from sandbox.core.files import copy_regular_files

    action = tmp_path / "action"
    action.mkdir()
    (action / "main.py").write_text("print(1)\n")
    (action / "main.py").chmod(0o600)  # the action's own code: copied, readable
    (action / ".env").write_text("TOKEN=s3cret\n")
    (action / "deploy.key").write_text("-----BEGIN-----\n")
    (action / ".git").mkdir()
    (action / ".git" / "config").write_text("[remote]\n")
    staged = tmp_path / "staged"
    copy_regular_files(action, staged, code=True)
    assert sorted(p.name for p in staged.iterdir()) == ["main.py"]
    assert (staged / "main.py").stat().st_mode & 0o777 == 0o644
