"""Who is calling: API keys and JWT bearer tokens, scopes, per-key limits, rate limits.

Sans-IO: credentials in, a :class:`Principal` or an :class:`AuthError` out.

    auth:
      keys_file: /etc/stack/keys.yaml        # entries as below; keys stored as SHA-256 hashes
      keys:
        - name: ci
          sha256: 9f86d0...                  # sha256 of the key: `stack key create` prints both
          scopes: [execute, services]
          limits: {timeout: 5s, memory: 256MiB}   # lowers the maxima for this key
          rate: 5/s                          # token bucket for this key (burst = 2x)
      jwt:
        algorithms: [HS256]                  # or RS256 / ES256 ...
        secret: ${file or env}               # HS*: the shared secret (secret_file: a path)
        public_key_file: /etc/stack/jwt.pem  # RS*/ES*: a PEM public key
        jwks_file: /etc/stack/jwks.json      # or a JWKS document (picked by the token's kid)
        audience: stack
        issuer: https://auth.example.org
    rate_limit: {per_address: 20/s}          # for every client address

Judge0's ``X-Auth-Token`` is taken as a key too. Scopes: ``execute`` (/api/v2 and
Judge0's routes), ``services`` (scripts), ``actions`` (/actions,
/request, /openapi.json), ``publish`` (the broker gateway), ``admin``
(/metrics; implies every other scope).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import yaml

from ..errors import AuthError, ConfigError, Forbidden, RateLimited

__all__ = ["AuthError", "Authenticator", "Forbidden", "Principal", "RateLimited", "Rate"]
from ..core.limits import Limits

SCOPES = ("execute", "services", "actions", "publish", "admin")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")


@dataclass(frozen=True)
class Rate:
    """A token bucket's refill rate (tokens per second) and burst size."""

    per_second: float
    burst: float

    @classmethod
    def parse(cls, text: str) -> Rate:
        """``"5/s"``, ``"100/min"``, ``"1000/h"`` (burst: twice a second's worth, at least 1).

        Raises:
            ConfigError: not a rate.
        """
        match = _RATE.match(str(text))
        if not match:
            raise ConfigError(f"not a rate: {text!r} (write e.g. 5/s, 100/min or 1000/h)")
        number = float(match.group(1))
        unit = match.group(2)[0]
        per_second = number / {"s": 1, "m": 60, "h": 3600}[unit]
        if per_second <= 0:
            raise ConfigError(f"a rate must be positive: {text!r}")
        return cls(per_second, max(1.0, 2 * per_second))

    def header(self) -> str:
        """The rate for X-RateLimit-Limit (requests per second, rounded up)."""
        return str(math.ceil(self.per_second))


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        name: the key's name, or the token's ``sub``.
        scopes: what it may do.
        limits: a lower set of maxima for its calls, or None.
        rate: its own rate limit, or None.
    """

    name: str
    scopes: frozenset[str]
    limits: Limits | None = None
    rate: Rate | None = None
    kind: str = "key"

    def require(self, scope: str) -> None:
        """Raises Forbidden unless the principal has ``scope`` (or ``admin``)."""
        if scope not in self.scopes and "admin" not in self.scopes:
            have = ", ".join(sorted(self.scopes)) or "none"
            raise Forbidden(
                f"this route needs the scope {scope!r}; {self.name!r} has: {have}",
                needed=scope,
            )


@dataclass(frozen=True)
class ApiKey:
    """One API key, stored as the SHA-256 of the key."""

    name: str
    sha256: str
    scopes: frozenset[str]
    limits: Limits | None = None
    rate: Rate | None = None


def hash_key(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    """A fresh random API key."""
    return "sk_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class JwtConfig:
    """How bearer tokens are checked (PyJWT)."""

    algorithms: tuple[str, ...]
    key: Any
    jwks: Mapping[str, Any] = field(default_factory=dict)
    audience: str | None = None
    issuer: str | None = None


class Authenticator:
    """Checks credentials; None of it configured means no auth (see :attr:`enabled`)."""

    def __init__(self, keys: Iterable[ApiKey] = (), jwt_config: JwtConfig | None = None,
                 address_rate: Rate | None = None) -> None:  # fmt: skip
        self.keys = {k.sha256: k for k in keys}
        self.jwt = jwt_config
        self.limiter = RateLimiter(address_rate)

    @property
    def enabled(self) -> bool:
        """Whether any credential is required."""
        return bool(self.keys) or self.jwt is not None

    @classmethod
    def from_mapping(cls, auth: Mapping[str, Any] | None, rate_limit: Mapping[str, Any] | None,
                     *, base: Path = Path(".")) -> Authenticator:  # fmt: skip
        """Build from the ``auth`` and ``rate_limit`` sections of the config.

        Raises:
            ConfigError: naming the bad entry.
        """
        auth = dict(auth or {})
        unknown = set(auth) - {"keys", "keys_file", "jwt"}
        if unknown:
            raise ConfigError(f"auth: unknown key(s) {', '.join(sorted(unknown))}")
        entries = list(auth.get("keys") or [])
        if auth.get("keys_file"):
            path = base / str(auth["keys_file"])
            try:
                loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ConfigError(f"auth.keys_file {path}: {exc}") from exc
            entries += list(loaded.get("keys", []) if isinstance(loaded, dict) else loaded)
        keys = [_key(entry, i) for i, entry in enumerate(entries)]
        jwt_config = _jwt(auth["jwt"], base) if auth.get("jwt") else None
        rate_limit = dict(rate_limit or {})
        unknown = set(rate_limit) - {"per_address"}
        if unknown:
            raise ConfigError(f"rate_limit: unknown key(s) {', '.join(sorted(unknown))}")
        address = rate_limit.get("per_address")
        return cls(keys, jwt_config, Rate.parse(address) if address else None)

    def authenticate(self, headers: Sequence[tuple[str, str]]) -> Principal | None:
        """The caller of a request (headers in lower case), or None when auth is off.

        Raises:
            AuthError: no credential, or a bad one, saying which.
        """
        if not self.enabled:
            return None
        credential = None
        for name, value in headers:
            if name == "authorization":
                scheme, _, token = value.partition(" ")
                if scheme.lower() != "bearer" or not token.strip():
                    raise AuthError("the Authorization header must be 'Bearer <key or token>'")
                credential = token.strip()
            elif name in ("x-api-key", "x-auth-token") and credential is None:
                credential = value.strip()
        if not credential:
            raise AuthError("no credential: send 'Authorization: Bearer <key or token>' "
                            "or 'X-API-Key: <key>'")  # fmt: skip
        hashed = hash_key(credential)
        for stored, key in self.keys.items():
            if hmac.compare_digest(stored, hashed):
                return Principal(key.name, key.scopes, key.limits, key.rate, "key")
        if self.jwt is not None and credential.count(".") == 2:
            return self._token(credential)
        raise AuthError("unknown API key" if self.jwt is None else "unknown API key or bad token")

    def _token(self, token: str) -> Principal:
        config = self.jwt
        assert config is not None
        try:
            key = config.key
            if config.jwks:
                kid = str(jwt.get_unverified_header(token).get("kid"))
                if kid not in config.jwks:
                    raise AuthError(f"token signed with an unknown key id {kid!r}")
                key = config.jwks[kid]
            claims = jwt.decode(
                token, key, algorithms=list(config.algorithms), audience=config.audience,
                issuer=config.issuer,
                options={"require": ["exp"], "verify_aud": config.audience is not None},
            )  # fmt: skip
        except jwt.ExpiredSignatureError as exc:
            raise AuthError("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise AuthError("the token is not valid yet (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise AuthError(f"the token's audience is not {config.audience!r}") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError(f"the token's issuer is not {config.issuer!r}") from exc
        except jwt.PyJWTError as exc:
            raise AuthError(f"bad token: {exc}") from exc
        raw = claims.get("scope", claims.get("scopes", []))
        scopes = frozenset(raw.split() if isinstance(raw, str) else [str(s) for s in raw])
        limits = None
        if isinstance(claims.get("stack_limits"), dict):
            try:
                limits = Limits.from_mapping(claims["stack_limits"], base=_unlimited())
            except ConfigError as exc:
                raise AuthError(f"bad stack_limits in the token: {exc.message}") from exc
        rate = (
            Rate.parse(claims["stack_rate"]) if isinstance(claims.get("stack_rate"), str) else None
        )
        return Principal(str(claims.get("sub", "token")), scopes, limits, rate, "jwt")


class RateLimiter:
    """Token buckets per key and per client address."""

    def __init__(self, address_rate: Rate | None) -> None:
        self.address_rate = address_rate
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str, rate: Rate, now: float | None = None) -> tuple[int, float]:
        """Take a token from ``key``'s bucket: (tokens left, seconds until full).

        Raises:
            RateLimited: the bucket is empty; ``retry_after`` says for how long.
        """
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(key, (rate.burst, now))
        tokens = min(rate.burst, tokens + (now - last) * rate.per_second)
        if tokens < 1:
            wait = (1 - tokens) / rate.per_second
            self._buckets[key] = (tokens, now)
            retry = max(1, math.ceil(wait))  # what Retry-After says, in whole seconds
            raise RateLimited(
                f"over the rate limit of {rate.per_second:g}/s for {key.split(':', 1)[0]}; "
                f"retry in {retry} s",
                retry_after=retry,
                limit=rate.header(),
            )
        tokens -= 1
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > 100_000:  # forget the idle ones
            self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < 3600}
        return int(tokens), (rate.burst - tokens) / rate.per_second


def _unlimited() -> Limits:
    return Limits(**{name: None for name in Limits().to_json()})


def _key(entry: Any, index: int) -> ApiKey:
    where = f"auth.keys[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with name, sha256, scopes")
    unknown = set(entry) - {"name", "sha256", "scopes", "limits", "rate"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    digest = str(entry.get("sha256", ""))
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise ConfigError(f"{where}: sha256 must be the 64 hex digits of the key's SHA-256 "
                          "(stack key create prints it)")  # fmt: skip
    scopes = entry.get("scopes") or []
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not isinstance(scopes, list):
        raise ConfigError(f"{where}: unknown scope(s) {bad}; scopes: {', '.join(SCOPES)}")
    limits = None
    if entry.get("limits"):
        try:
            limits = Limits.from_mapping(entry["limits"], base=_unlimited())
        except ConfigError as exc:
            raise ConfigError(f"{where}.limits: {exc.message}") from exc
    rate = Rate.parse(entry["rate"]) if entry.get("rate") else None
    return ApiKey(str(entry.get("name") or f"key{index}"), digest, frozenset(scopes), limits, rate)


def _jwt(data: Any, base: Path) -> JwtConfig:
    if not isinstance(data, dict):
        raise ConfigError("auth.jwt: expected a mapping")
    unknown = set(data) - {"algorithms", "secret", "secret_file", "public_key_file", "jwks_file",
                           "audience", "issuer"}  # fmt: skip
    if unknown:
        raise ConfigError(f"auth.jwt: unknown key(s) {', '.join(sorted(unknown))}")
    algorithms = tuple(data.get("algorithms") or ["HS256"])
    key: Any = None
    jwks: dict[str, Any] = {}
    try:
        if data.get("secret"):
            key = str(data["secret"])
        elif data.get("secret_file"):
            key = (base / str(data["secret_file"])).read_text().strip()
        elif data.get("public_key_file"):
            key = (base / str(data["public_key_file"])).read_text()
        elif data.get("jwks_file"):
            document = json.loads((base / str(data["jwks_file"])).read_text())
            for entry in document.get("keys", []):
                jwk = jwt.PyJWK(entry)
                jwks[str(entry.get("kid"))] = jwk.key
        else:
            raise ConfigError("auth.jwt: give secret, secret_file, public_key_file or jwks_file")
    except (OSError, ValueError, jwt.PyJWTError) as exc:
        raise ConfigError(f"auth.jwt: cannot load the key: {exc}") from exc
    return JwtConfig(algorithms, key, jwks, data.get("audience"), data.get("issuer"))
