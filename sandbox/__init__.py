"""stack: a sandboxed multi-language execution engine.

The core (:func:`open_engine`, :class:`Invocation`, :class:`Outcome`...) is
imported with the package; :func:`open_app` and :func:`create_app` (the HTTP
app with every feature) only when first used, so that importing the core does
not load the HTTP side.
"""

from typing import TYPE_CHECKING, Any

from .core.engine import Call, Engine, EngineConfig, Statistics, open_engine
from .core.invocation import Invocation
from .core.languages import Installed, Language, Registry
from .core.limits import Limits
from .core.process import CallIO, Outcome, Usage
from .errors import (
    BodyTooLarge,
    CompileError,
    ConfigError,
    InterpreterMissing,
    LanguageError,
    LimitTooHigh,
    NotFound,
    Overloaded,
    RequestError,
    RequestTimeout,
    SpawnError,
    StackError,
    UnknownLanguage,
)

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .app import create_app, open_app
    from .http.clients import ClientLimits


def __getattr__(name: str) -> Any:
    if name in ("create_app", "open_app"):
        from . import app

        return getattr(app, name)
    if name == "ClientLimits":
        from .http.clients import ClientLimits

        return ClientLimits
    raise AttributeError(f"module 'sandbox' has no attribute {name!r}")


__all__ = [
    "BodyTooLarge",
    "Call",
    "CallIO",
    "ClientLimits",
    "CompileError",
    "ConfigError",
    "Engine",
    "EngineConfig",
    "Installed",
    "InterpreterMissing",
    "Invocation",
    "Language",
    "LanguageError",
    "LimitTooHigh",
    "Limits",
    "NotFound",
    "Outcome",
    "Overloaded",
    "Registry",
    "RequestError",
    "RequestTimeout",
    "SpawnError",
    "StackError",
    "Statistics",
    "UnknownLanguage",
    "Usage",
    "create_app",
    "open_app",
    "open_engine",
]
