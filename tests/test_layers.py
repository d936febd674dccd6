"""The package's layers: imports only go down (docs/ARCHITECTURE.md, "Layers").

    cli            the `stack` command            may import everything below
    app, config    composition: open_app, Config
    http           the ASGI side of every front door
    features       services, jobs, actions, triggers, workers, auth, ops
    core, brokers  running calls; talking to brokers (neither imports the other)
    errors, logs   shared by all

Checked from the source with :mod:`ast`, function-level imports included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sandbox"

RANK = {
    "errors": 0, "logs": 0,
    "core": 1, "brokers": 1,
    "features": 2,
    "http": 3,
    "app": 4, "config": 4,
    "cli": 5,
}  # fmt: skip
# Libraries of the front doors: the core runs calls and knows none of them.
FRONT_DOOR_LIBRARIES = {
    "python_multipart", "multipart", "hypercorn", "httpx", "h11", "h2", "wsproto",
    "prometheus_client", "jsonschema", "jwt", "nats", "redis", "aiomqtt", "paho",
}  # fmt: skip


def _layer(module: str) -> str:
    """``sandbox.core.engine`` -> ``core``; ``sandbox.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _module_of(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in the file."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if node.module is None or (node.level and target.count(".") < 2):
                # `from .. import x`: x may be a module of that package
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, target))
    return found


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
                  or p.parent != PACKAGE)  # fmt: skip


def _violations() -> list[str]:
    problems = []
    for path in _sources():
        own = _layer(_module_of(path))
        for line, target in _imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if target.split(".")[0] in FRONT_DOOR_LIBRARIES and own == "core":
                problems.append(f"{where}: the core imports {target}")
            if not target.startswith("sandbox.") or own not in RANK:
                continue
            other = _layer(target)
            if other in ("", "__version__") or other == own:
                continue
            if other not in RANK:
                problems.append(f"{where}: imports {target}, which is in no layer")
            elif RANK[other] > RANK[own] or (RANK[other] == RANK[own] and other != own):
                problems.append(f"{where}: {own} imports {target} ({other} is not below it)")
    return problems


def test_every_module_is_in_a_layer() -> None:
    layers = {_layer(_module_of(p)) for p in _sources()}
    assert layers <= set(RANK), sorted(layers - set(RANK))


def test_imports_only_go_down() -> None:
    assert _violations() == []


def test_the_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "sandbox"
    (fake / "core").mkdir(parents=True)
    (fake / "http").mkdir()
    (fake / "core" / "bad.py").write_text("def f():\n    from ..http import app\n")
    (fake / "core" / "worse.py").write_text("import httpx\n")
    (fake / "http" / "app.py").write_text("from ..core import bad\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    found = _violations()
    assert len(found) == 2
    assert "sandbox/core/bad.py:2: core imports sandbox.http.app" in found[0]
    assert "the core imports httpx" in found[1]


def _graph() -> dict[str, set[str]]:
    modules = {_module_of(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        for _, target in _imports(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]  # `from x import name` -> x
            if target and target != name and not path.name.startswith("__"):
                edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_import_circles() -> None:
    # Package __init__ files re-export their modules, so their edges are left out.
    assert _cycles(_graph()) == []


def test_importing_the_core_loads_no_front_door() -> None:
    import subprocess
    import sys

    code = (
        "import sys, sandbox, sandbox.core.engine; "
        "print(sorted(m for m in sys.modules if m.startswith(('sandbox.http', 'sandbox.features', "
        "'sandbox.cli', 'hypercorn', 'python_multipart', 'prometheus_client'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
