"""Confidentiality: what one call may not see of the server or of other calls."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from sandbox.core.isolation import prepare_etc


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
