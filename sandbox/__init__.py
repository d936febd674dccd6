"""stack: a sandboxed multi-language execution engine."""

from .engine import Call, Engine, EngineConfig, Invocation, Statistics, open_engine
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
from .languages import Installed, Language, Registry
from .limits import Limits
from .process import CallIO, Outcome, Usage

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
