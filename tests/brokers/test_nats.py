"""NATS logins and transport: token, user and password, TLS with a client certificate,
a credentials file (operator mode), a list of servers; the server's own connection count."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import trio

from sandbox.brokers import BrokerConfig, BrokerUnavailable, open_broker

from .conftest import Certificates, broker_threads, free_port, start_nats


async def roundtrip(config: BrokerConfig) -> None:
    async with open_broker(config) as broker, broker.subscribe("login.*") as sub:
        await broker.publish("login.ok", b"yes")
        with trio.fail_after(5):
            assert (await sub.receive()).data == b"yes"


def quick(url: str, **options: object) -> BrokerConfig:
    settings: dict[str, object] = {"connect_timeout": 0.5, "reconnect_wait": 0.1, **options}
    return BrokerConfig(url=url, **settings)  # type: ignore[arg-type]


async def test_token(tmp_path: Path) -> None:
    async with start_nats(tmp_path, "--auth", "s3cret") as server:
        await roundtrip(quick(server.url, token="s3cret"))
        await roundtrip(quick(f"nats://s3cret@127.0.0.1:{server.port}"))
        with pytest.raises(BrokerUnavailable, match="Authorization Violation"):
            await roundtrip(quick(server.url, token="wrong"))
        with pytest.raises(BrokerUnavailable, match="Authorization Violation"):
            await roundtrip(quick(server.url))


async def test_user_and_password(tmp_path: Path) -> None:
    async with start_nats(tmp_path, "--user", "stack", "--pass", "pa55") as server:
        await roundtrip(quick(server.url, user="stack", password="pa55"))
        await roundtrip(quick(f"nats://stack:pa55@127.0.0.1:{server.port}"))
        with pytest.raises(BrokerUnavailable, match="Authorization Violation"):
            await roundtrip(quick(server.url, user="stack", password="nope"))


async def test_tls_with_a_client_certificate(tmp_path: Path, certificates: Certificates) -> None:
    c = certificates
    args = ["--tls", "--tlscert", str(c.server_cert), "--tlskey", str(c.server_key),
            "--tlsverify", "--tlscacert", str(c.ca)]  # fmt: skip
    async with start_nats(tmp_path, *args) as server:
        good = quick(server.url, tls_ca=c.ca, tls_cert=c.client_cert, tls_key=c.client_key)
        assert good.tls
        await roundtrip(good)
        await roundtrip(quick(f"tls://127.0.0.1:{server.port}", tls_ca=c.ca, tls_cert=c.client_cert,
                              tls_key=c.client_key))  # fmt: skip
        # Without a client certificate the server hangs up.
        with pytest.raises(BrokerUnavailable, match="within 0.5 s"):
            await roundtrip(quick(server.url, tls_ca=c.ca))
        # Without our CA the server is not trusted.
        with pytest.raises(BrokerUnavailable, match="CERTIFICATE_VERIFY_FAILED|certificate verify"):
            await roundtrip(quick(server.url, tls_cert=c.client_cert, tls_key=c.client_key))


async def test_a_missing_tls_file_is_a_config_error(tmp_path: Path) -> None:
    from sandbox.errors import ConfigError

    before = broker_threads()
    with pytest.raises(ConfigError, match="cannot load the CA file"):
        await roundtrip(quick("nats://127.0.0.1:1", tls_ca=tmp_path / "missing.pem"))
    assert broker_threads() == before


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _operator_setup(tmp_path: Path, port: int) -> tuple[Path, Path]:
    """A server config in operator mode (JWTs, memory resolver) and a user's .creds file."""
    nkeys = pytest.importorskip(
        "nkeys", reason="nkeys is not installed (pip install nats-py[nkeys])"
    )

    def keypair(prefix: int) -> object:
        return nkeys.from_seed(nkeys.encode_seed(os.urandom(32), prefix))

    def jwt(issuer: object, subject: object, name: str, nats: dict[str, object]) -> str:
        claims: dict[str, object] = {
            "iat": int(time.time()),
            "iss": issuer.public_key.decode(),  # type: ignore[attr-defined]
            "name": name,
            "sub": subject.public_key.decode(),  # type: ignore[attr-defined]
            "nats": {**nats, "version": 2},
        }
        digest = hashlib.sha256(json.dumps(claims, sort_keys=True).encode()).digest()
        claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
        head = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
        body = _b64(json.dumps(claims).encode())
        signature = issuer.sign(f"{head}.{body}".encode())  # type: ignore[attr-defined]
        return f"{head}.{body}.{_b64(signature)}"

    operator = keypair(nkeys.PREFIX_BYTE_OPERATOR)
    account = keypair(nkeys.PREFIX_BYTE_ACCOUNT)
    user = keypair(nkeys.PREFIX_BYTE_USER)
    unlimited = {"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                 "wildcards": True, "conn": -1, "leaf": -1}  # fmt: skip
    account_jwt = jwt(operator, account, "stack", {"type": "account", "limits": unlimited,
                      "default_permissions": {"pub": {}, "sub": {}}})  # fmt: skip
    user_jwt = jwt(account, user, "worker", {"type": "user", "pub": {}, "sub": {}, "subs": -1,
                   "data": -1, "payload": -1})  # fmt: skip
    config = tmp_path / "operator.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\n"
        f"operator: {jwt(operator, operator, 'stack-op', {'type': 'operator'})}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{\n  {account.public_key.decode()}: {account_jwt}\n}}\n"  # type: ignore[attr-defined]
    )
    creds = tmp_path / "worker.creds"
    creds.write_text(
        f"-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n"
        f"-----BEGIN USER NKEY SEED-----\n{user.seed.decode()}\n"  # type: ignore[attr-defined]
        "------END USER NKEY SEED------\n"
    )
    return config, creds


async def test_credentials_file(tmp_path: Path) -> None:
    port = free_port()
    server_config, creds = _operator_setup(tmp_path, port)
    from .conftest import find_server, running

    argv = [find_server("nats-server"), "-c", str(server_config)]
    async with running(argv, port, "nats", tmp_path / "operator.log") as server:
        config = BrokerConfig.from_mapping(
            {"url": server.url, "credentials": "worker.creds", "connect_timeout": 2},
            name="jwt",
            base=tmp_path,
        )
        assert config.credentials == creds
        await roundtrip(config)
        with pytest.raises(BrokerUnavailable, match="Authorization Violation"):
            await roundtrip(quick(server.url))


async def test_the_first_reachable_server_of_a_list_is_used(tmp_path: Path) -> None:
    async with start_nats(tmp_path) as server:
        dead = f"nats://127.0.0.1:{free_port()}"
        await roundtrip(quick(f"{dead},{server.url}", connect_timeout=5))
        await roundtrip(
            BrokerConfig.from_mapping(
                {"url": [server.url, dead], "reconnect_wait": 0.1, "connect_timeout": 5}
            )
        )


async def test_the_server_counts_our_connection_and_sees_it_go(tmp_path: Path) -> None:
    monitor = free_port()

    async def connections() -> int:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{monitor}/connz")
            count: int = response.json()["num_connections"]
            return count

    async with start_nats(tmp_path, monitor=monitor) as server:
        async with open_broker(quick(server.url, name="counted")) as broker:
            async with broker.subscribe("a.>"):
                assert await connections() == 1
        with trio.fail_after(5):
            while await connections():
                await trio.sleep(0.02)
