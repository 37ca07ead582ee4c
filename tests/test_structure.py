"""The structure of gateway/, routing/ and inference/: no import cycles between
files, the layers gateway -> routing -> inference (no import runs back up), and
every file opening with a docstring or comment that says what it holds.

The graph is grimp's (the engine of import-linter): every import statement
counts, at module level, inside a function or under `if TYPE_CHECKING:`. An
import moved into a function only to dodge a cycle is still the cycle; a lazy
import kept for start-up cost (MLX loaded on first use) always points down the
layers, so it never closes one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp
import pytest

PACKAGES = ("gateway", "routing", "inference")
LAYERS = ["gateway", "routing", "inference"]  # each may import only those after it

# Upward imports that are not layering mistakes. Management commands are entry
# points that Django finds by app (like asgi.py, they sit above every layer):
# `serve` starts the gateway's own servers.
ENTRY_POINTS = ("routing.management",)
KNOWN_UPWARD: dict[tuple[str, str], str] = {
    # The route tester's and the mapping admin's reads of the request log, which
    # moved into the gateway.usage app (issue 12, apps12); nothing there imports
    # them back, but they point up the layers.
    ("routing.health", "gateway.usage.models"): "recent outcomes from the request log",
    ("routing.admin", "gateway.usage.links"): "a mapping's link to the requests it routed",
}


def strongly_connected(graph: grimp.ImportGraph) -> list[list[str]]:
    """The graph's import cycles: each strongly connected set of two or more
    modules (Tarjan's algorithm, iterative so deep chains cannot overflow)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    """The cycle's modules and the import lines that close it."""
    lines = [" <-> ".join(cycle)]
    for importer in cycle:
        for imported in cycle:
            if graph.direct_import_exists(importer=importer, imported=imported):
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    lines.append(
                        f"    {importer}:{detail['line_number']}: {detail['line_contents']}"
                    )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def test_no_import_cycles(graph: grimp.ImportGraph) -> None:
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles between files:\n" + "\n".join(
        describe(graph, cycle) for cycle in cycles
    )


def test_layers_import_only_downwards(graph: grimp.ImportGraph) -> None:
    upward = []
    for dependency in graph.find_illegal_dependencies_for_layers(layers=LAYERS):
        for route in dependency.routes:
            for head in route.heads:
                for tail in route.tails:
                    if head.startswith(ENTRY_POINTS) or (head, tail) in KNOWN_UPWARD:
                        continue
                    via = " -> ".join(route.middle)
                    upward.append(f"{head} -> {via + ' -> ' if via else ''}{tail}")
    assert not upward, (
        "imports against the layers " + " -> ".join(LAYERS) + ":\n" + "\n".join(sorted(upward))
    )


def test_cycle_finder_reports_cycles() -> None:
    """The checker itself: a two-file cycle, a longer one through a function-level
    import, and a chain without a cycle."""
    graph = grimp.ImportGraph()
    for importer, imported in [
        ("pkg.a", "pkg.b"),
        ("pkg.b", "pkg.a"),
        ("pkg.c", "pkg.d"),
        ("pkg.d", "pkg.e"),
        ("pkg.e", "pkg.c"),
        ("pkg.e", "pkg.f"),
        ("pkg.f", "pkg.g"),
    ]:
        graph.add_import(importer=importer, imported=imported)
    assert strongly_connected(graph) == [["pkg.a", "pkg.b"], ["pkg.c", "pkg.d", "pkg.e"]]


def test_function_level_and_type_checking_imports_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An import inside a function body, or under TYPE_CHECKING, still closes a
    cycle: moving an import there does not hide one from this check."""
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from . import b\n")
    (package / "b.py").write_text("def late():\n    from . import a\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import d\n"
    )
    (package / "d.py").write_text("from . import c\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = strongly_connected(grimp.build_graph("cyclic", cache_dir=None))
    assert found == [["cyclic.a", "cyclic.b"], ["cyclic.c", "cyclic.d"]]


# Where every Python file says what it holds; migrations are generated.
DESCRIBED = ("gateway", "routing", "inference", "fake_upstream", "benchmarks", "tests")
ROOT = Path(__file__).resolve().parent.parent


def undescribed(root: Path, folders: tuple[str, ...]) -> list[str]:
    """Files under `folders` whose first statement is not a docstring and whose
    first line is not a comment (a shebang does not count). An empty file (a
    package marker) holds nothing to describe."""
    found = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            text = path.read_text()
            if not text.strip() or ast.get_docstring(ast.parse(text)) is not None:
                continue
            first = text.lstrip().splitlines()[0]
            if not first.startswith("#") or first.startswith("#!"):
                found.append(str(path.relative_to(root)))
    return found


def test_every_file_says_what_it_holds() -> None:
    missing = undescribed(ROOT, DESCRIBED)
    assert not missing, "files without an opening docstring or comment:\n" + "\n".join(missing)


def test_undescribed_finds_a_bare_file(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "doc.py").write_text('"""Holds x."""\nx = 1\n')
    (tmp_path / "pkg" / "comment.py").write_text("# Holds y.\ny = 1\n")
    (tmp_path / "pkg" / "bare.py").write_text("import os\n")
    (tmp_path / "pkg" / "shebang.py").write_text("#!/usr/bin/env python\nimport os\n")
    assert undescribed(tmp_path, ("pkg",)) == ["pkg/bare.py", "pkg/shebang.py"]
