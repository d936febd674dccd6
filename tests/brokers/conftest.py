"""Real broker servers on free loopback ports: nats-server, redis-server, mosquitto.

Each fixture skips the test, saying which package to install, when its
server is missing. A ``Server`` can be stopped and started again on the same
port, for the reconnection tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import trio

from sandbox.brokers import Message, Subscription

SBIN = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PACKAGES = {"nats-server": "nats-server", "redis-server": "redis-server", "mosquitto": "mosquitto"}


def find_server(program: str) -> str:
    """The server's path, or skip the test saying how to install it."""
    path = shutil.which(program, path=os.environ.get("PATH", "") + ":" + SBIN)
    if path is None:
        pytest.skip(f"{program} is not installed: apt-get install {PACKAGES[program]}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """A broker server process on 127.0.0.1:``port`` that can be stopped and restarted."""

    def __init__(self, argv: Sequence[str], port: int, scheme: str, log: Path) -> None:
        self.argv = list(argv)
        self.port = port
        self.scheme = scheme
        self.log = log
        self.process: trio.Process | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = await trio.lowlevel.open_process(self.argv, stdout=log, stderr=log)
        with trio.fail_after(10):
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"{self.argv[0]} exited with {self.process.returncode}:\n"
                        + self.log.read_text(errors="replace")[-2000:]
                    )
                try:
                    stream = await trio.open_tcp_stream("127.0.0.1", self.port)
                except OSError:
                    await trio.sleep(0.02)
                    continue
                await stream.aclose()
                return

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        with trio.move_on_after(5):
            await process.wait()
            return
        process.kill()
        await process.wait()


@asynccontextmanager
async def running(argv: Sequence[str], port: int, scheme: str, log: Path) -> AsyncIterator[Server]:
    server = Server(argv, port, scheme, log)
    await server.start()
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()


def start_nats(tmp_path: Path, *extra: str, monitor: int | None = None) -> Any:
    """``async with start_nats(tmp_path, *args) as server``: nats-server with extra arguments."""
    program = find_server("nats-server")
    port = free_port()
    argv = [program, "-a", "127.0.0.1", "-p", str(port), *extra]
    if monitor is not None:
        argv += ["-m", str(monitor)]
    return running(argv, port, "nats", tmp_path / f"nats-{port}.log")


def start_redis(tmp_path: Path, *extra: str, tls: Certificates | None = None) -> Any:
    program = find_server("redis-server")
    port = free_port()
    argv = [
        program, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", str(tmp_path), "--daemonize", "no", *extra,
    ]  # fmt: skip
    if tls is not None:
        argv += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.server_cert),
                 "--tls-key-file", str(tls.server_key), "--tls-ca-cert-file", str(tls.ca)]  # fmt: skip
    scheme = "redis" if tls is None else "rediss"
    return running(argv, port, scheme, tmp_path / f"redis-{port}.log")


def start_mosquitto(
    tmp_path: Path, *lines: str, anonymous: bool = True, tls: Certificates | None = None
) -> Any:
    program = find_server("mosquitto")
    port = free_port()
    config = tmp_path / f"mosquitto-{port}.conf"
    setup = [
        f"listener {port} 127.0.0.1",
        f"allow_anonymous {'true' if anonymous else 'false'}",
        "persistence false",
        *lines,
    ]
    if tls is not None:
        setup += [f"cafile {tls.ca}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}",
                  "require_certificate true"]  # fmt: skip
    if os.geteuid() == 0:
        setup.append("user root")  # else it switches to the 'mosquitto' user and cannot read tmp
    config.write_text("\n".join(setup) + "\n")
    scheme = "mqtt" if tls is None else "mqtts"
    return running([program, "-c", str(config)], port, scheme, tmp_path / f"mqtt-{port}.log")


STARTERS: dict[str, Callable[[Path], Any]] = {
    "nats": start_nats,
    "redis": start_redis,
    "mqtt": start_mosquitto,
}


@pytest.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with start_nats(tmp_path) as server:
        yield server


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with start_redis(tmp_path) as server:
        yield server


@pytest.fixture
async def mosquitto_server(tmp_path: Path) -> AsyncIterator[Server]:
    async with start_mosquitto(tmp_path) as server:
        yield server


# What a test checks after closing a broker --------------------------------------------


def broker_threads() -> set[threading.Thread]:
    """Threads a broker may start: its asyncio loop and that loop's executor."""
    return {
        thread
        for thread in threading.enumerate()
        if thread.name.startswith(("stack-broker", "asyncio_", "paho"))
    }


def connections_to(port: int) -> int:
    """Established TCP connections from this process to 127.0.0.1:``port``."""
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED
    )


# TLS material ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all PEM."""
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        pytest.skip("the cryptography package is not installed (pip install cryptography)")

    now = datetime.datetime.now(datetime.UTC)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return path

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("stack test CA"))
        .issuer_name(name("stack test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    def leaf(common: str, usage: x509.ObjectIdentifier, stem: str) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if usage == ExtendedKeyUsageOID.SERVER_AUTH:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        cert = builder.sign(ca_key, hashes.SHA256())
        cert_path = tmp_path / f"{stem}.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cert_path, write_key(key, tmp_path / f"{stem}.key")

    server_cert, server_key = leaf("127.0.0.1", ExtendedKeyUsageOID.SERVER_AUTH, "server")
    client_cert, client_key = leaf("stack client", ExtendedKeyUsageOID.CLIENT_AUTH, "client")
    return Certificates(tmp_path / "ca.pem", server_cert, server_key, client_cert, client_key)


QUIET = 0.15
"""How long a subscription must stay silent for "no other message" to hold."""

async def take(subscription: Subscription, count: int, *, within: float = 5) -> list[Message]:
    """``count`` messages, then make sure no other one follows."""
    messages: list[Message] = []
    with trio.fail_after(within):
        while len(messages) < count:
            messages.append(await subscription.receive())
    with trio.move_on_after(QUIET):
        extra = await subscription.receive()
        pytest.fail(f"{subscription!r} got an unexpected message {extra!r}")
    return messages
