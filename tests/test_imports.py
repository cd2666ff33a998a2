"""mspan_jax's imports flow one way: no circle between its modules, nor between its parts (the
subpackages and top-level modules), lazy function-level imports included (read with ast, nothing
imported), and the models import nothing of the package but themselves and `errors`."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "mspan_jax"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `path` imports anywhere in its code (a package's `__init__` for
    `from package import name`, the submodule for `from package import submodule`)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in modules else target)
    return {m for m in found if m in modules and m != name}


@functools.cache
def import_graph() -> dict[str, set[str]]:
    """module -> the modules of mspan_jax it imports."""
    paths = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: _imports(path, set(paths)) for name, path in paths.items()}


def part_of(module: str) -> str:
    """'mspan_jax.convert.rules' -> 'mspan_jax.convert'; 'mspan_jax.cli' -> 'mspan_jax.cli'."""
    return ".".join(module.split(".")[:2])


def part_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    parts: dict[str, set[str]] = {}
    for module, imported in graph.items():
        parts.setdefault(part_of(module), set()).update(
            part_of(m) for m in imported if part_of(m) != part_of(module))
    return parts


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walker_sees_lazy_imports_and_finds_a_circle():
    graph = import_graph()
    assert "mspan_jax.models.registry" in graph["mspan_jax.config_base"]  # inside functions
    assert "mspan_jax.convert" in graph["mspan_jax.checkpoints.resolve"]  # `from package import`
    assert "mspan_jax.convert.rules" in graph["mspan_jax.convert"]
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back():
    assert circles(import_graph()) == []


def test_no_part_of_the_package_imports_itself_back():
    """e.g. checkpoints -> convert -> checkpoints, or config_base -> models -> config_base."""
    assert circles(part_graph(import_graph())) == []


def test_the_models_import_nothing_above_them():
    upward = {module: sorted(m for m in imported if part_of(m) not in ("mspan_jax.models",
                                                                         "mspan_jax.errors"))
              for module, imported in import_graph().items() if part_of(module) == "mspan_jax.models"}
    assert {module: found for module, found in upward.items() if found} == {}
