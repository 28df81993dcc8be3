"""The import graph of the marsedge package, read from the source (no module is imported).

Each subpackage (``marsedge.train``, ``marsedge.export``...) and each top-level module
(``marsedge.cli``...) is one node; an import anywhere in a node's files, at the top or
inside a function, is an edge. No two nodes may import each other, directly or round a
loop, and the edge runtime imports nothing but itself, ``marsedge.core``, the standard
library, numpy, Pillow, Typer and the TFLite interpreters.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "marsedge"
EDGE_THIRD_PARTY = {"numpy", "PIL", "typer", "ai_edge_litert", "tflite_runtime"}
# the interpreter falls back to TensorFlow's copy of LiteRT on a development machine
EDGE_TENSORFLOW_ALLOWED = {"interpreter.py"}
# archive readers (extras), imported inside functions of edge_runtime/sources only
EDGE_LAZY_READERS = {"pdr", "rosbags"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((module, node.lineno))
            # `from marsedge import atomic` imports the module marsedge.atomic
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names if module == "marsedge"]
    return found


def _node(module: str) -> str | None:
    """The graph node of a marsedge module: ``marsedge.X`` for anything in X; None for the
    package root itself (``marsedge/__init__.py`` holds only the version)."""
    parts = module.split(".")
    if parts[0] != "marsedge" or len(parts) < 2:
        return None
    return ".".join(parts[:2])


def _exists(node: str) -> bool:
    path = PACKAGE.parent / node.replace(".", "/")
    return path.is_dir() or path.with_suffix(".py").is_file()


def _graph() -> dict[str, dict[str, list[str]]]:
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = _node(_module_name(path))
        if source is None:
            continue
        edges = graph.setdefault(source, {})
        for module, line in _imports(path):
            target = _node(module)
            if target is not None and target != source and _exists(target):
                edges.setdefault(target, []).append(f"{path.relative_to(PACKAGE.parent)}:{line}")
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_graph_is_read_from_the_source():
    graph = _graph()
    assert {"marsedge.core", "marsedge.edge_runtime", "marsedge.train", "marsedge.export", "marsedge.cli"} <= set(graph)
    assert "marsedge.core" in graph["marsedge.edge_runtime"]
    assert "marsedge.train" in graph["marsedge.export"]


def test_no_subpackage_imports_one_that_imports_it_back():
    graph = _graph()
    problems = []
    for component in _cycles(graph):
        members = set(component)
        where = [
            f"  {source} -> {target}: {', '.join(lines[:3])}"
            for source in component
            for target, lines in graph[source].items()
            if target in members
        ]
        problems.append(" <-> ".join(component) + "\n" + "\n".join(where))
    assert not problems, "import cycles between parts of marsedge:\n" + "\n".join(problems)


def test_the_cycle_finder_finds_a_loop():
    loop = {"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}, "d": {"a": ["w"]}}
    assert _cycles(loop) == [["a", "b", "c"]]
    assert _cycles({"a": {"b": ["x"]}, "b": {}}) == []


def test_the_edge_runtime_imports_only_itself_core_and_light_libraries():
    allowed_stdlib = set(sys.stdlib_module_names)
    problems = []
    for path in sorted((PACKAGE / "edge_runtime").rglob("*.py")):
        for module, line in _imports(path):
            top = module.split(".")[0]
            if module.startswith(("marsedge.edge_runtime", "marsedge.core")) or module in ("marsedge.edge_runtime",):
                continue
            if top in allowed_stdlib or top in EDGE_THIRD_PARTY or top == "__future__":
                continue
            if top == "tensorflow" and path.name in EDGE_TENSORFLOW_ALLOWED:
                continue
            if top in EDGE_LAZY_READERS and path.parent.name == "sources" and (module, line) not in _top_level(path):
                continue
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not problems, "the edge runtime must stay light:\n" + "\n".join(problems)


def _top_level(path: Path) -> set[tuple[str, int]]:
    """(module, line) of the imports a module runs when it is imported (outside functions)."""
    found = set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.Import):
            found |= {(alias.name, node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add((node.module, node.lineno))
        stack.extend(ast.iter_child_nodes(node))
    return found


def test_core_imports_only_the_standard_library_and_numpy():
    problems = []
    for path in sorted((PACKAGE / "core").rglob("*.py")):
        for module, line in _imports(path):
            top = module.split(".")[0]
            if module.startswith("marsedge.core") or top in sys.stdlib_module_names or top in ("numpy", "__future__"):
                continue
            problems.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}")
    assert not problems, "marsedge.core is numpy-only:\n" + "\n".join(problems)
