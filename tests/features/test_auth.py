"""Authentication, scopes, per-key limits and rate limits over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sandbox.app import open_app
from sandbox.core.engine import EngineConfig
from sandbox.features.auth import Authenticator, hash_key
from sandbox.http.server import bind, serve

SECRET = "a-shared-secret-of-at-least-32-bytes!"
KEYS = {
    "exec": "sk_exec_key",
    "svc": "sk_services_key",
    "slow": "sk_rate_limited_key",
    "small": "sk_small_limits_key",
    "admin": "sk_admin_key",
}


def auth_config(jwt_section: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "keys": [
            {"name": "exec", "sha256": hash_key(KEYS["exec"]), "scopes": ["execute"]},
            {"name": "svc", "sha256": hash_key(KEYS["svc"]), "scopes": ["services"]},
            {
                "name": "slow",
                "sha256": hash_key(KEYS["slow"]),
                "scopes": ["services"],
                "rate": "2/s",
            },
            {
                "name": "small",
                "sha256": hash_key(KEYS["small"]),
                "scopes": ["services", "execute"],
                "limits": {"timeout": "500ms", "memory": "256MiB"},
            },
            {"name": "admin", "sha256": hash_key(KEYS["admin"]), "scopes": ["admin"]},
        ],  # fmt: skip
        "jwt": jwt_section
        or {
            "algorithms": ["HS256"],
            "secret": SECRET,
            "audience": "stack",
            "issuer": "https://auth.test",
        },  # fmt: skip
    }


@asynccontextmanager
async def secured(script: Path, auth: dict[str, Any],
                  rate_limit: dict[str, Any] | None = None) -> AsyncIterator[str]:  # fmt: skip
    config = EngineConfig(isolate="none")
    authenticator = Authenticator.from_mapping(auth, rate_limit)
    async with (
        open_app(script, config, execute=True, auth=authenticator) as app,
        trio.open_nursery() as nursery,
    ):
        url = await nursery.start(serve, app, bind("127.0.0.1", 0))
        try:
            yield url
        finally:
            nursery.cancel_scope.cancel()


def token(**claims: Any) -> str:
    now = int(time.time())
    body = {"sub": "alice", "aud": "stack", "iss": "https://auth.test", "exp": now + 60,
            "scope": "services execute", **claims}  # fmt: skip
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET, algorithm="HS256")


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


RUN = {"language": "bash", "files": [{"content": "echo ran"}]}


async def test_keys_scopes_401_and_403(client, script):
    path = script("hi.sh", "echo hi\n")
    async with secured(path, auth_config()) as url:
        missing = await client.get(url)
        wrong = await client.get(url, headers=bearer("sk_not_a_key"))
        malformed = await client.get(url, headers={"Authorization": "Basic abc"})
        svc = await client.get(url, headers=bearer(KEYS["svc"]))
        by_header = await client.get(url, headers={"X-API-Key": KEYS["svc"]})
        exec_on_service = await client.get(url, headers=bearer(KEYS["exec"]))
        exec_on_api = await client.post(f"{url}/api/v2/execute", json=RUN,
                                        headers=bearer(KEYS["exec"]))  # fmt: skip
        health = await client.get(f"{url}/healthz")
        metrics_svc = await client.get(f"{url}/metrics", headers=bearer(KEYS["svc"]))
        metrics_admin = await client.get(f"{url}/metrics", headers=bearer(KEYS["admin"]))
        admin_api = await client.post(f"{url}/api/v2/execute", json=RUN,
                                      headers=bearer(KEYS["admin"]))  # fmt: skip
    assert missing.status_code == 401
    assert missing.json()["error"] == "unauthorized"
    assert "Authorization: Bearer" in missing.json()["message"]
    assert missing.headers["www-authenticate"] == 'Bearer realm="stack"'
    assert wrong.status_code == 401
    assert "unknown API key" in wrong.json()["message"]
    assert malformed.status_code == 401
    assert (svc.status_code, svc.text) == (200, "hi\n")
    assert by_header.status_code == 200
    assert exec_on_service.status_code == 403
    assert exec_on_service.json()["error"] == "forbidden"
    assert "needs the scope 'services'" in exec_on_service.json()["message"]
    assert exec_on_api.json()["run"]["stdout"] == "ran\n"
    assert health.status_code == 200
    assert metrics_svc.status_code == 403
    assert metrics_admin.status_code == 200
    assert admin_api.status_code == 200


async def test_jwt_hs256_with_exp_nbf_aud_iss(client, script):
    path = script("hi.sh", "echo hi\n")
    now = int(time.time())
    async with secured(path, auth_config()) as url:
        good = await client.get(url, headers=bearer(token()))
        expired = await client.get(url, headers=bearer(token(exp=now - 10)))
        early = await client.get(url, headers=bearer(token(nbf=now + 600)))
        audience = await client.get(url, headers=bearer(token(aud="other")))
        issuer = await client.get(url, headers=bearer(token(iss="https://evil.test")))
        no_exp = await client.get(url, headers=bearer(token(exp=None)))
        scope = await client.get(url, headers=bearer(token(scope="execute")))
        forged = jwt.encode({"sub": "x", "aud": "stack", "iss": "https://auth.test",
                             "exp": now + 60, "scope": "services"}, "wrong-secret-but-long-enough-for-hs256!!",
                            algorithm="HS256")  # fmt: skip
        bad_sig = await client.get(url, headers=bearer(forged))
    assert (good.status_code, good.text) == (200, "hi\n")
    assert expired.status_code == 401
    assert expired.json()["message"] == "the token has expired"
    assert early.json()["message"] == "the token is not valid yet (nbf)"
    assert audience.json()["message"] == "the token's audience is not 'stack'"
    assert issuer.json()["message"] == "the token's issuer is not 'https://auth.test'"
    assert no_exp.status_code == 401
    assert scope.status_code == 403
    assert bad_sig.status_code == 401
    assert "Signature verification failed" in bad_sig.json()["message"]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_jwt_public_keys_and_jwks(client, script, tmp_path: Path, algorithm: str):
    private = (rsa.generate_private_key(65537, 2048) if algorithm == "RS256"
               else ec.generate_private_key(ec.SECP256R1()))  # fmt: skip
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "public.pem").write_bytes(public_pem)
    jwk = json.loads(
        jwt.algorithms.get_default_algorithms()[algorithm].to_jwk(private.public_key())
    )
    jwk["kid"] = "k1"
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    claims = {"sub": "bob", "exp": int(time.time()) + 60, "scope": "services"}
    signed = jwt.encode(claims, private, algorithm=algorithm, headers={"kid": "k1"})
    path = script("hi.sh", "echo hi\n")
    for section in ({"algorithms": [algorithm], "public_key_file": str(tmp_path / "public.pem")},
                    {"algorithms": [algorithm], "jwks_file": str(tmp_path / "jwks.json")}):  # fmt: skip
        async with secured(path, {"jwt": section}) as url:
            ok = await client.get(url, headers=bearer(signed))
            hs = await client.get(url, headers=bearer(token()))
        assert (ok.status_code, ok.text) == (200, "hi\n"), section
        assert hs.status_code == 401, section


async def test_rate_limit_per_key_and_per_address(client, script):
    path = script("hi.sh", "echo hi\n")
    async with secured(path, auth_config()) as url:
        statuses = [(await client.get(url, headers=bearer(KEYS["slow"]))) for _ in range(6)]
    codes = [r.status_code for r in statuses]
    assert codes[:4] == [200, 200, 200, 200]  # a burst of twice the rate
    limited = statuses[codes.index(429)]
    assert limited.json()["error"] == "rate_limited"
    assert int(limited.headers["retry-after"]) >= 1
    assert limited.headers["x-ratelimit-limit"] == "2"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    assert statuses[0].headers["x-ratelimit-limit"] == "2"
    assert int(statuses[0].headers["x-ratelimit-remaining"]) == 3
    async with secured(path, {}, {"per_address": "1/s"}) as url:
        codes = [(await client.get(url)).status_code for _ in range(4)]
    assert codes[:2] == [200, 200]
    assert 429 in codes


async def test_per_key_limits(client, script):
    path = script("slow.sh", "sleep 5\necho late\n")
    async with secured(path, auth_config()) as url:
        capped = await client.get(url, headers=bearer(KEYS["small"]))
        too_high = await client.post(
            f"{url}/api/v2/execute", json={**RUN, "run_timeout": 3000},
            headers=bearer(KEYS["small"]),
        )  # fmt: skip
        default = await client.post(
            f"{url}/api/v2/execute",
            json={"language": "bash", "files": [{"content": "sleep 3"}]},
            headers=bearer(KEYS["small"]),
        )  # fmt: skip
    assert capped.status_code == 504
    assert "0.5 s" in capped.json()["message"]
    assert too_high.status_code == 400
    assert too_high.json()["message"] == "run_timeout cannot exceed the configured limit of 500"
    assert default.json()["run"]["status"] == "TO"


def test_refuses_a_public_address_without_auth(tmp_path: Path):
    script = tmp_path / "hi.sh"
    script.write_text("echo hi\n")
    done = subprocess.run([sys.executable, "-m", "sandbox", str(script), "-h", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0 with no authentication" in done.stderr
    assert "--insecure" in done.stderr


def test_key_create_prints_the_key_once_and_its_hash():
    done = subprocess.run([sys.executable, "-m", "sandbox", "key", "create", "ci", "--scopes",
                           "execute,actions", "--rate", "5/s"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    lines = done.stdout.splitlines()
    key = lines[0].removeprefix("key: ")
    entry = json.loads(lines[-1])
    assert entry == {"name": "ci", "sha256": hash_key(key), "scopes": ["execute", "actions"],
                     "rate": "5/s"}  # fmt: skip
