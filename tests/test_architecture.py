"""The import graph (docs/architecture.md): imports flow one way through the layers, with no cycles, lazy imports
inside functions included."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

#: the layers, bottom first; packages on one level are siblings and do not import each other
LEVELS = [
    {"core"},
    {"video"},
    {"models", "synth", "pairs"},
    {"measure"},
    {"train", "visualize", "report", "ablate", "perturb"},
    {"explain", "selectivity", "integrations"},
    {"showcase"},
    {"cli"},
    {"__main__"},
]
#: top-level modules of the bottom layer (dependency-free: the standard library, numpy, torch, stlens.errors)
CORE_MODULES = {"stlens", "stlens._version", "stlens._lazy", "stlens.errors", "stlens.files", "stlens.runs",
                "stlens.names", "stlens.interrupts"}
def modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "stlens").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module → the stlens modules it imports (anywhere in the file: function bodies and ``if TYPE_CHECKING:``
    blocks included)."""
    mods = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in mods else base for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in mods and t != name)
    return graph


def level(module: str) -> tuple[int, str]:
    if module in CORE_MODULES:
        return 0, "core"
    package = module.split(".")[1]
    for index, members in enumerate(LEVELS):
        if package in members:
            return index, package
    raise AssertionError(f"{module}: its package '{package}' is not placed in a layer (add it to LEVELS)")


def violations() -> set[tuple[str, str]]:
    found = set()
    for source, targets in import_graph().items():
        (low, pkg) = level(source)
        for target in targets:
            (high, other) = level(target)
            if high > low or (high == low and pkg != other):
                found.add((source, target))
    return found


def test_imports_follow_the_layers():
    found = violations()
    assert not found, "imports against the layer order (docs/architecture.md): " + ", ".join(
        f"{a} → {b}" for a, b in sorted(found))


def test_no_import_cycles_between_modules():
    cycles = strongly_connected(import_graph())
    assert not cycles, f"import cycles (lazy imports included): {cycles}"


def test_the_checks_can_fail():
    """The graph reader sees lazy imports in function bodies, and the cycle finder finds a planted cycle."""
    graph = import_graph()
    assert "stlens.models.tvvideo" not in graph["stlens.models.registry"]  # dispatchers import no family
    assert "stlens.measure.result" in graph["stlens.report.load"]
    assert "stlens.runs" in graph["stlens.measure.verb"]  # imported inside a function only
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
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


def test_the_estimator_imports_neither_torch_nor_the_rest_of_stlens():
    code = ("import sys, stlens.measure.estimate; print(sorted(m for m in sys.modules if m == 'torch' "
            "or m.startswith('stlens')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert eval(loaded) == ["stlens", "stlens._lazy", "stlens._version", "stlens.measure", "stlens.measure.estimate"]
