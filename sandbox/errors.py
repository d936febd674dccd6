"""Every error stack raises on purpose, in one tree.

    StackError                      base; ``status`` is the HTTP status hint
    +-- ConfigError                 a bad flag, config file or limit (400 when from a request)
    |   +-- LimitTooHigh            a requested limit above the server's maximum (400)
    +-- LanguageError               language problems
    |   +-- UnknownLanguage         no language by that name or extension (400)
    |   +-- InterpreterMissing      the language is known but not installed (503)
    +-- RequestError                a malformed request (400)
    |   +-- BodyTooLarge            the body is over the limit (413)
    +-- NotFound                    no such service or route (404)
    +-- Overloaded                  the queue is full (503, Retry-After)
    +-- SpawnError                  the process could not be started (500)
    +-- CompileError                a service's source does not compile (500)

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
