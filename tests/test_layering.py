"""The layers, read from the imports of every module (function-level and type-only imports included):
cli -> (server, loadtest); inside the server http -> engine -> backends; loadtest -> the server's public entry
points; corpus, which both sides read, imports neither; and no circle anywhere. No module is exempt."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGES = ("cli", "corpus", "server", "loadtest")
WEB_FRAMEWORKS = {"fastapi", "litserve", "starlette", "uvicorn"}
# What each part of the server may import from the server; a module's own part is always allowed.
SERVER_LAYERS = {
    "server.settings": set(),
    "server.hardware": set(),
    "server.backends": {"server.settings", "server.hardware"},
    "server.engine": {"server.settings", "server.hardware", "server.backends"},
    "server.metrics": {"server", "server.settings", "server.hardware", "server.backends", "server.engine"},
    "server.http": {"server.settings", "server.hardware", "server.backends", "server.engine", "server.metrics"},
}
# What each top-level package may import of ours, besides itself.
PACKAGE_IMPORTS = {
    "cli": {"server", "loadtest"},
    "corpus": set(),
    "server": {"corpus"},
    "loadtest": {"server", "corpus"},
}
# The load-testing side sees the server only through these (package-level names, configuration types).
PUBLIC_ENTRY_POINTS = {"server.settings", "server.engine"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth of its code; `from a import b` counts a.b when b is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(
                f"{node.module}.{alias.name}" for alias in node.names if is_module(f"{node.module}.{alias.name}")
            )
    return found


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer(module: str) -> str:
    for prefix in sorted(SERVER_LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return module


GRAPH = {
    module_name(path): imported_modules(path) for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))
}


def internal(imports: set[str]) -> set[str]:
    return {name for name in imports if name.split(".")[0] in PACKAGES and is_module(name)}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if layer(m) in SERVER_LAYERS))
def test_server_layers_import_only_downwards(module):
    allowed = SERVER_LAYERS[layer(module)] | {layer(module)}
    own = {name for name in internal(GRAPH[module]) if name.split(".")[0] == "server"}
    upward = {name for name in own if layer(name) not in allowed}
    assert not upward, f"{module} imports {sorted(upward)}; its layer may import {sorted(allowed)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith(("server.engine", "server.backends"))))
def test_engine_and_backends_know_no_web_framework(module):
    frameworks = {name.split(".")[0] for name in GRAPH[module]} & WEB_FRAMEWORKS
    assert not frameworks, f"{module} imports {sorted(frameworks)}"


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("server") and m != "cli"))
def test_only_the_cli_names_the_load_testing_side(module):
    assert not {name for name in GRAPH[module] if name.split(".")[0] == "loadtest"}


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if m.startswith("loadtest")))
def test_load_testing_uses_only_the_servers_public_entry_points(module):
    server_imports = {name for name in internal(GRAPH[module]) if name.split(".")[0] == "server"}
    assert server_imports <= PUBLIC_ENTRY_POINTS, f"{module} imports {sorted(server_imports - PUBLIC_ENTRY_POINTS)}"


def test_the_import_graph_has_no_circle():
    edges = {module: internal(imports) - {module} for module, imports in GRAPH.items()}
    state: dict[str, str] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            if state.get(target) == "open":
                cycle = [*trail[trail.index(target) :], target] if target in trail else [module, target]
                pytest.fail(f"import circle: {' -> '.join(cycle)}")
            if target not in state:
                visit(target, [*trail, target])
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_the_guard_sees_a_violation(tmp_path):
    """The checks above read real imports: an upward import written in a file is found, at any depth."""
    offending = tmp_path / "offending.py"
    offending.write_text(
        "def f():\n    from server.http.embeddings_api import EmbeddingAPI\n    from loadtest.probe import launcher\n"
    )
    found = internal(imported_modules(offending))
    assert "server.http.embeddings_api" in found and "loadtest.probe.launcher" in found
    assert layer("server.http.embeddings_api") not in SERVER_LAYERS["server.engine"]
    assert "loadtest" not in PACKAGE_IMPORTS["server"]
