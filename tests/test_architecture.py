"""The shape docs/DESIGN.md promises (issue 23), checked on the source: no import cycle inside autowu/, framework/
or experiments/ (module-level and function-level imports alike), the library never imports the framework, and no
class in autowu/ over ~300 lines (AutoWU was 746)."""
from __future__ import annotations

import ast

from conftest import ROOT

PACKAGES = ("autowu", "framework", "experiments")


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (``from .x import y``, ``from pkg import mod``, ``import pkg.mod``)."""
    modules = {f"{p}.{f.stem}": f for p in PACKAGES for f in (ROOT / p).glob("*.py") if f.stem != "__init__"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = name.rsplit(".", node.level)[0] if node.level else ""
                target = ".".join(p for p in (base, node.module or "") if p)
                deps |= {c for c in [target, *(f"{target}.{a.name}" for a in node.names)] if c in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                found.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles_and_the_library_never_imports_the_framework():
    graph = import_graph()
    assert len(graph) > 30  # the checker sees the packages
    assert cycles(graph) == []
    assert not [(m, d) for m, ds in graph.items() if m.startswith("autowu.") for d in ds
                if not d.startswith("autowu.")]


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_class_in_the_library_is_over_300_lines():
    long = [(p.name, n.name, n.end_lineno - n.lineno + 1) for p in (ROOT / "autowu").glob("*.py")
            for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.ClassDef)
            and n.end_lineno - n.lineno + 1 > 300]
    assert long == []
