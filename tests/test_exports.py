"""The public API: what ``sandbox.__all__`` promises is there (as trio's test_exports)."""

from __future__ import annotations

import importlib

import pytest

import sandbox


def test_all_is_sorted() -> None:
    assert sandbox.__all__ == sorted(sandbox.__all__)


def test_all_has_no_duplicates() -> None:
    duplicates = sorted({name for name in sandbox.__all__ if sandbox.__all__.count(name) > 1})
    assert duplicates == []


@pytest.mark.parametrize("name", sandbox.__all__)
def test_every_export_is_importable(name: str) -> None:
    module = importlib.import_module("sandbox")
    assert hasattr(module, name), f"sandbox.__all__ lists {name!r} but sandbox has no such name"
    namespace: dict[str, object] = {}
    exec(f"from sandbox import {name}", namespace)
    assert namespace[name] is getattr(sandbox, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from sandbox import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(sandbox.__all__)


def test_exported_errors_are_stack_errors() -> None:
    for name in sandbox.__all__:
        value = getattr(sandbox, name)
        if isinstance(value, type) and issubclass(value, Exception):
            assert issubclass(value, sandbox.StackError), name


def test_exports_are_public_names() -> None:
    assert [name for name in sandbox.__all__ if name.startswith("_")] == []
