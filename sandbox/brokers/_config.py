"""``BrokerConfig``: where a broker is and how to log in, from a URL or a config mapping.

A config file names its brokers; each entry is a URL or a mapping:

    brokers:
      internal: memory://
      public:
        url: nats://10.0.0.5:4222,nats://10.0.0.6:4222   # or a list; NATS only
        token: s3cret                  # NATS; or user + password (any broker)
        tls: {ca: ca.pem, cert: client.pem, key: client.key}   # relative to the file
        credentials: worker.creds      # NATS .creds file (JWT + nkey seed)
        client_id: stack-1             # MQTT
        keepalive: 30                  # MQTT keep-alive, seconds
        reconnect_wait: 2              # longest pause between reconnection attempts
        connect_timeout: 10            # how long open_broker tries before giving up

Unknown keys are rejected loudly, naming the broker and the key.
"""

from __future__ import annotations

import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError

#: URL scheme -> broker kind.
SCHEMES = {
    "memory": "memory",
    "nats": "nats",
    "tls": "nats",
    "redis": "redis",
    "rediss": "redis",
    "mqtt": "mqtt",
    "mqtts": "mqtt",
}

_KEYS = {
    "url", "token", "user", "password", "tls", "credentials", "client_id", "keepalive",
    "reconnect_wait", "connect_timeout",
}  # fmt: skip
_TLS_KEYS = {"ca", "cert", "key"}


@dataclass(frozen=True)
class BrokerConfig:
    """How to reach one broker.

    Attributes:
        url: ``memory://[bus]``, ``nats://`` or ``tls://host:port`` (several,
            comma-separated, for a NATS cluster), ``redis://`` or
            ``rediss://host:port[/db]``, ``mqtt://`` or ``mqtts://host:port``.
            Credentials may ride in the URL (``nats://token@host``,
            ``redis://user:password@host``).
        name: what logs and errors call it (the key in the config file).
        token: NATS token.
        user: user name (NATS, Redis ACL, MQTT).
        password: password (NATS, Redis, MQTT).
        tls_ca: CA bundle to verify the server with (turns TLS on).
        tls_cert: client certificate (PEM), for servers that verify clients.
        tls_key: the client certificate's key, when not inside ``tls_cert``.
        credentials: NATS credentials file (user JWT and nkey seed).
        client_id: MQTT client identifier (default: the server assigns one). Two
            connections with one id push each other off: give each process its own.
        keepalive: MQTT keep-alive interval, seconds.
        reconnect_wait: the longest pause between reconnection attempts, seconds.
        connect_timeout: how long ``open_broker`` keeps trying to connect, seconds.
    """

    url: str
    name: str = "default"
    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    credentials: Path | None = None
    client_id: str | None = None
    keepalive: float = 60.0
    reconnect_wait: float = 2.0
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        where = f"broker {self.name!r}"
        if not isinstance(self.url, str) or not self.url.strip():
            raise ConfigError(f"{where}: 'url' must be a URL such as nats://127.0.0.1:4222")
        urls = self.urls
        kinds = set()
        for url in urls:
            scheme = urlsplit(url).scheme.lower()
            if scheme not in SCHEMES:
                raise ConfigError(
                    f"{where}: unknown URL scheme in {_redact(url)!r}; "
                    f"use one of {', '.join(s + '://' for s in SCHEMES)}"
                )
            kinds.add(SCHEMES[scheme])
        if len(kinds) > 1:
            raise ConfigError(f"{where}: all URLs must be of one kind, got {sorted(kinds)}")
        kind = self.kind
        if len(urls) > 1 and kind != "nats":
            raise ConfigError(f"{where}: only NATS takes several server URLs; {kind} takes one")
        for key in ("keepalive", "reconnect_wait", "connect_timeout"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"{where}: {key!r} must be a number of seconds, got {value!r}")
            if not value > 0 or math.isinf(value):
                raise ConfigError(f"{where}: {key!r} must be positive, got {value!r}")
        if self.token is not None and kind != "nats":
            raise ConfigError(
                f"{where}: 'token' is for NATS; {kind} logs in with 'user' and 'password'"
            )
        if self.token is not None and (self.user is not None or self.password is not None):
            raise ConfigError(f"{where}: give either 'token' or 'user' and 'password', not both")
        if self.credentials is not None and kind != "nats":
            raise ConfigError(f"{where}: 'credentials' (a .creds file) is for NATS only")
        if self.credentials is not None and self.token is not None:
            raise ConfigError(f"{where}: give either 'credentials' or 'token', not both")
        if self.client_id is not None and kind != "mqtt":
            raise ConfigError(f"{where}: 'client_id' is for MQTT only")
        if self.tls_key is not None and self.tls_cert is None:
            raise ConfigError(f"{where}: 'tls.key' needs 'tls.cert', the certificate it belongs to")
        if kind == "memory" and (self.tls_ca or self.tls_cert or self.user or self.password):
            raise ConfigError(f"{where}: a memory:// broker takes no TLS or credentials")

    @property
    def urls(self) -> tuple[str, ...]:
        """The server URLs (NATS may list several, comma-separated)."""
        return tuple(part.strip() for part in self.url.split(",") if part.strip())

    @property
    def kind(self) -> str:
        """``memory``, ``nats``, ``redis`` or ``mqtt``, from the URL scheme."""
        return SCHEMES[urlsplit(self.urls[0]).scheme.lower()]

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS (by scheme or because a CA or cert is set)."""
        scheme = urlsplit(self.urls[0]).scheme.lower()
        return scheme in ("tls", "rediss", "mqtts") or bool(self.tls_ca or self.tls_cert)

    @property
    def safe_url(self) -> str:
        """The URL(s) with any password or token replaced by ``***``, for logs and errors."""
        return ",".join(_redact(url) for url in self.urls)

    @classmethod
    def from_mapping(
        cls,
        data: Mapping[str, Any] | str,
        *,
        name: str = "default",
        source: str = "config",
        base: Path | None = None,
    ) -> BrokerConfig:
        """Build a config from a mapping (one entry of ``brokers:``) or a bare URL.

        Args:
            data: the mapping, or a URL string.
            name: the broker's name (its key under ``brokers:``).
            source: where the mapping came from, for error messages.
            base: folder that relative file paths (TLS files, credentials) are
                relative to, usually the config file's folder.

        Raises:
            ConfigError: an unknown key or a bad value, naming ``source`` and the broker.
        """
        where = f"{source}: broker {name!r}"
        if isinstance(data, str):
            data = {"url": data}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a URL or a mapping, got {type(data).__name__}")
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; "
                f"known keys: {', '.join(sorted(_KEYS))}"
            )
        if "url" not in data:
            raise ConfigError(f"{where}: 'url' is missing (e.g. url: nats://127.0.0.1:4222)")
        url = data["url"]
        if isinstance(url, list | tuple):
            url = ",".join(str(u) for u in url)
        if not isinstance(url, str):
            raise ConfigError(f"{where}: 'url' must be a string or a list of strings")
        values: dict[str, Any] = {"url": url, "name": name}
        for key in ("token", "user", "password", "client_id"):
            if data.get(key) is not None:
                values[key] = _string(data[key], key, where)
        for key in ("keepalive", "reconnect_wait", "connect_timeout"):
            if data.get(key) is not None:
                values[key] = data[key]
        if data.get("credentials") is not None:
            values["credentials"] = _path(data["credentials"], "credentials", where, base)
        tls = data.get("tls")
        if tls is not None:
            if not isinstance(tls, Mapping):
                raise ConfigError(f"{where}: 'tls' must be a mapping with ca, cert and key")
            unknown = set(tls) - _TLS_KEYS
            if unknown:
                raise ConfigError(
                    f"{where}: unknown tls key(s) {', '.join(sorted(map(str, unknown)))}; "
                    f"known: {', '.join(sorted(_TLS_KEYS))}"
                )
            for key in _TLS_KEYS:
                if tls.get(key) is not None:
                    values[f"tls_{key}"] = _path(tls[key], f"tls.{key}", where, base)
        try:
            return cls(**values)
        except ConfigError as exc:
            if exc.message.startswith(source):
                raise
            raise ConfigError(f"{source}: {exc.message}") from exc


def brokers_from_mapping(
    data: Mapping[str, Any] | None, *, source: str = "config", base: Path | None = None
) -> dict[str, BrokerConfig]:
    """Read the ``brokers:`` section of a config file: name -> ``BrokerConfig``.

    Raises:
        ConfigError: the section is not a mapping, or an entry is bad.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: 'brokers' must map names to URLs or mappings")
    return {
        str(name): BrokerConfig.from_mapping(entry, name=str(name), source=source, base=base)
        for name, entry in data.items()
    }


def _string(value: Any, key: str, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ConfigError(f"{where}: {key!r} must be a string, got {value!r}")
    return str(value)


def _path(value: Any, key: str, where: str, base: Path | None) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise ConfigError(f"{where}: {key!r} must be a file path, got {value!r}")
    path = Path(value).expanduser()
    if base is not None and not path.is_absolute():
        path = base / path
    return path


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"***@{host}").geturl()


def ssl_context(config: BrokerConfig) -> ssl.SSLContext | None:
    """The TLS context for ``config``, or None when it does not use TLS.

    The server is verified against ``tls_ca`` (or the system's CAs); a client
    certificate is presented when ``tls_cert`` is set.

    Raises:
        ConfigError: a TLS file cannot be read or is not valid PEM.
    """
    if not config.tls:
        return None
    where = f"broker {config.name!r}"
    try:
        context = ssl.create_default_context(
            cafile=str(config.tls_ca) if config.tls_ca is not None else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{where}: cannot load the CA file {config.tls_ca}: {exc}") from exc
    if config.tls_cert is not None:
        try:
            context.load_cert_chain(
                str(config.tls_cert), str(config.tls_key) if config.tls_key else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"{where}: cannot load the client certificate {config.tls_cert}"
                f"{f' with key {config.tls_key}' if config.tls_key else ''}: {exc}"
            ) from exc
    return context
