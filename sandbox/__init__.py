"""stack: a sandboxed multi-language execution engine.

Every public name (:func:`open_engine`, :class:`Invocation`, :class:`Outcome`,
:func:`open_app`...) is imported when first used, so that ``import sandbox``
(and the ``stack`` command's start: ``stack --help``) does not load the
engine, Trio or the HTTP side until something needs them.
"""

import importlib
from typing import TYPE_CHECKING, Any

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

_LAZY = {
    "Call": ".core.engine",
    "Engine": ".core.engine",
    "EngineConfig": ".core.engine",
    "Statistics": ".core.engine",
    "open_engine": ".core.engine",
    "Invocation": ".core.invocation",
    "Installed": ".core.languages",
    "Language": ".core.languages",
    "Registry": ".core.languages",
    "Limits": ".core.limits",
    "CallIO": ".core.process",
    "Outcome": ".core.process",
    "Usage": ".core.process",
    "create_app": ".app",
    "open_app": ".app",
    "ClientLimits": ".http.clients",
}

if TYPE_CHECKING:
    from .app import create_app, open_app
    from .core.engine import Call, Engine, EngineConfig, Statistics, open_engine
    from .core.invocation import Invocation
    from .core.languages import Installed, Language, Registry
    from .core.limits import Limits
    from .core.process import CallIO, Outcome, Usage
    from .http.clients import ClientLimits


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sandbox' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


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
