"""stack: a sandboxed multi-language execution engine."""

from .core.engine import Call, Engine, EngineConfig, Invocation, Statistics, open_engine
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
    SpawnError,
    StackError,
    UnknownLanguage,
)

__version__ = "0.1.0"

__all__ = [
    "BodyTooLarge",
    "Call",
    "CallIO",
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
    "SpawnError",
    "StackError",
    "Statistics",
    "UnknownLanguage",
    "Usage",
    "open_engine",
]
