"""The package's shape holds by test: layers, no import circles, no borrowed private names.

The layers are the import-linter contract in pyproject.toml; a new upward import or
circle fails here, and so in CI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

from .conftest import ROOT

PACKAGE = ROOT / "skyseg"


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("skyseg", include_external_packages=False)


def test_import_linter_layers_contract_is_kept():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 kept, 0 broken" in result.stdout


def _strongly_connected(modules, imports_of) -> list[set[str]]:
    """Tarjan's algorithm: the groups of modules that import each other in a circle."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in imports_of(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            group = set()
            while True:
                other = stack.pop()
                on_stack.discard(other)
                group.add(other)
                if other == module:
                    break
            if len(group) > 1:
                groups.append(group)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in sorted(modules):
        if module not in index:
            visit(module)
    return groups


def test_the_circle_finder_finds_a_circle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(edges, edges.__getitem__) == [{"a", "b", "c"}]
    assert _strongly_connected({"a": set(), "b": {"a"}}, {"a": set(), "b": {"a"}}.__getitem__) == []


def test_no_module_imports_itself_back_through_others(graph):
    # A package's __init__ that re-exports its modules is not a circle: leave those edges out.
    def imports_of(module):
        return {other for other in graph.find_modules_directly_imported_by(module)
                if not module.startswith(other + ".")}

    circles = _strongly_connected(graph.modules, imports_of)
    assert circles == [], f"import circles: {[sorted(group) for group in circles]}"


def test_every_package_says_what_it_owns_and_declares_all():
    for init in sorted(PACKAGE.rglob("__init__.py")):
        tree = ast.parse(init.read_text(encoding="utf-8"))
        docstring = ast.get_docstring(tree)
        assert docstring and len(docstring.split()) >= 8, f"{init}: no docstring saying its job"
        names = {target.id for node in tree.body if isinstance(node, ast.Assign)
                 for target in node.targets if isinstance(target, ast.Name)}
        assert "__all__" in names, f"{init}: no __all__"


def test_no_module_imports_another_modules_private_names():
    borrowed = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skyseg"):
                borrowed += [f"{path.relative_to(ROOT)}: {node.module}.{alias.name}"
                             for alias in node.names
                             if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert borrowed == []


#: A function fits on a screen: its docstring included, at most this many lines.
MAX_FUNCTION_LINES = 80


def test_every_function_fits_on_a_screen():
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == [], "split these into their steps: " + ", ".join(long)
