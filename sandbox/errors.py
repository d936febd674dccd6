"""Every error stack raises on purpose, in one tree.

    StackError                      base; ``status`` is the HTTP status hint
    +-- ConfigError                 a bad flag, config file or limit (400 when from a request)
    |   +-- LimitTooHigh            a requested limit above the server's maximum (400)
    +-- LanguageError               language problems
    |   +-- UnknownLanguage         no language by that name or extension (400)
    |   +-- InterpreterMissing      the language is known but not installed (503)
    +-- RequestError                a malformed request (400)
    |   +-- BodyTooLarge            the body is over the limit (413)
    |   +-- InvalidSubmission       a Judge0 submission with bad fields (422)
    |   +-- NotUtf8                 Judge0 output asked for as text is not UTF-8 (400)
    |   +-- RequestTimeout          the body came too slowly (408)
    +-- NotFound                    no such service or route (404)
    +-- Overloaded                  the queue is full (503, Retry-After)
    +-- SpawnError                  the process could not be started (500)
    +-- CompileError                a service's source does not compile (500)
    +-- AuthError                   a missing or bad credential (401)
    |   +-- Forbidden               the credential lacks the route's scope (403)
    +-- RateLimited                 over a rate limit (429, Retry-After)
    +-- BrokerError                 a broker problem (502)
        +-- BrokerUnavailable       not connected, or closed (503); it reconnects by itself
        +-- BrokerTimeout           a request got no reply in time (504)
        |   +-- NoResponders        nobody listens on the request's subject (503)
        +-- BrokerUnsupported       this broker cannot do that (501)
        +-- InvalidMessage          bad headers or payload (400)
            +-- InvalidSubject      a malformed subject or pattern (400)

Each error's message says what happened and what to do instead; context
rides on attributes so that front doors map errors to responses in one place.
"""

from __future__ import annotations

from typing import Any


class StackError(Exception):
    """Base class of the errors stack raises on purpose."""

    status = 500
    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_json(self) -> dict[str, Any]:
        """The JSON body a front door sends for this error."""
        body: dict[str, Any] = {"error": self.code, "message": self.message}
        body.update(self.details)
        return body


class ConfigError(StackError):
    """A flag, a config file or a limit is wrong."""

    status = 400
    code = "bad_config"


class LimitTooHigh(ConfigError):
    """A per-request limit is above the server's maximum."""

    code = "limit_too_high"


class LanguageError(StackError):
    """Base of the language errors."""

    status = 400
    code = "language"


class UnknownLanguage(LanguageError):
    """No language has that name, alias, extension or shebang."""

    code = "unknown_language"


class InterpreterMissing(LanguageError):
    """The language is registered but its interpreter is not installed."""

    status = 503
    code = "interpreter_missing"


class RequestError(StackError):
    """The request is malformed."""

    status = 400
    code = "bad_request"


class BodyTooLarge(RequestError):
    """The request body is larger than the limit."""

    status = 413
    code = "body_too_large"


class InvalidSubmission(RequestError):
    """A Judge0 submission has bad fields; ``errors`` maps each to its messages (422)."""

    status = 422
    code = "invalid_submission"

    def __init__(self, message: str, errors: dict[str, list[str]]) -> None:
        super().__init__(message, errors=errors)
        self.errors = errors


class NotUtf8(RequestError):
    """A Judge0 submission's output is not UTF-8 and was asked for without base64."""


class RequestTimeout(RequestError):
    """The request body did not arrive in time (a client sending too slowly)."""

    status = 408
    code = "request_timeout"


class NotFound(StackError):
    """No service or route by that name."""

    status = 404
    code = "not_found"


class Overloaded(StackError):
    """Every slot is busy and the queue is full."""

    status = 503
    code = "overloaded"

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)
        self.retry_after = retry_after


class CompileError(StackError):
    """A service's source did not compile; ``output`` holds the compiler's words."""

    status = 500
    code = "compile"


class SpawnError(StackError):
    """The process could not be started."""

    status = 500
    code = "spawn_failed"


class AuthError(StackError):
    """A missing or bad credential (401) or a missing scope (403)."""

    status = 401
    code = "unauthorized"


class Forbidden(AuthError):
    """The credential is good but lacks the scope this route needs."""

    status = 403
    code = "forbidden"


class RateLimited(StackError):
    """Over the rate limit (429); ``retry_after`` seconds until a token is free."""

    status = 429
    code = "rate_limited"


class BrokerError(StackError):
    """Base of the broker errors; ``broker`` names the broker when known."""

    status = 502
    code = "broker"


class BrokerUnavailable(BrokerError):
    """The broker is not connected (the server is down or unreachable) or was closed.

    The connection comes back by itself; ``Broker.wait_connected()`` waits for it.
    """

    status = 503
    code = "broker_unavailable"


class BrokerTimeout(BrokerError):
    """A request got no reply within its timeout."""

    status = 504
    code = "broker_timeout"


class NoResponders(BrokerTimeout):
    """Nobody listens on the request's subject, so no reply can come (known at once)."""

    status = 503
    code = "no_responders"


class BrokerUnsupported(BrokerError):
    """This broker cannot do what was asked (e.g. queue groups on Redis)."""

    status = 501
    code = "broker_unsupported"


class InvalidMessage(BrokerError):
    """A message's headers or payload cannot be sent."""

    status = 400
    code = "invalid_message"


class InvalidSubject(InvalidMessage):
    """A subject or pattern is malformed, or cannot be spelled on this broker."""

    code = "invalid_subject"
