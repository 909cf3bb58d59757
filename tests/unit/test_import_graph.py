"""No import cycle inside the statebus package.

Reads every module with ast (nothing is imported), draws an edge for each module-level
import of another statebus module, and asserts the graph has no cycle. Imports under
`if TYPE_CHECKING:` are left out (they never run), and so are imports inside functions
(deferred on purpose: they run after every module has loaded), and so are edges from a
module to its own parent packages, which Python always initialises first.
"""

from __future__ import annotations

import ast
from pathlib import Path

import statebus

PACKAGE = Path(statebus.__file__).parent


def module_name(path: Path) -> str:
    parts = ["statebus", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(tree: ast.Module, name: str, is_package: bool) -> set[str]:
    """Modules named by imports that run when the module is imported."""
    found: set[str] = set()
    package = name if is_package else name.rpartition(".")[0]

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                found.add(base)
                # `from statebus import sqlfiles` imports the submodule too
                found.update(f"{base}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If):
                if not is_type_checking(node.test):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, ast.With):
                visit(node.body)

    visit(tree.body)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        imported = module_level_imports(tree, name, path.name == "__init__.py")
        # A module's own packages are always initialised before it: no edge back to them.
        graph[name] = {
            target
            for target in imported
            if target in paths and target != name and not name.startswith(target + ".")
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path of module names (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := walk(node)) is not None:
            return cycle
    return None


def test_the_statebus_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checker_sees_a_cycle_and_skips_type_checking_imports() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from statebus import hub\n"
        "if TYPE_CHECKING:\n    from statebus.runtime import Runtime\n"
        "def later():\n    from statebus import app\n"
    )
    imported = module_level_imports(tree, "statebus.x", is_package=False)
    assert "statebus.hub" in imported
    assert "statebus.runtime" not in imported and "statebus.app" not in imported


def test_the_graph_covers_the_package() -> None:
    graph = import_graph()
    assert "statebus.stripe.gateway" in graph["statebus.stripe.service"]
    assert "statebus.hub" in graph["statebus.runtime"]
    assert "statebus.runtime" not in graph["statebus.stripe.service"]


def test_no_two_modules_share_a_name() -> None:
    """A file name says which module it is: `routes.py` twice made every traceback and
    every `import` line ambiguous."""
    seen: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            seen.setdefault(path.name, []).append(path.relative_to(PACKAGE).as_posix())
    shared = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not shared, f"module names used twice: {shared}"
