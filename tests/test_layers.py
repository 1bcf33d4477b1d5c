"""The import graph of the package: layers in the order `birdclef.LAYERS`, no cycles, a torch-free core."""

from __future__ import annotations

import ast
from pathlib import Path

import birdclef

PACKAGE = Path(birdclef.__file__).parent
TORCH_FREE = ("torch", "lightning", "torchmetrics", "torchaudio", "timm", "hydra", "omegaconf")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file (lazy imports count too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found |= {f"{module}.{a.name}" for a in node.names}  # `from pkg import submodule`
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports(path) if m in files and m != name} for name, path in files.items()
    }


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_every_module_sits_in_a_layer():
    assert {layer(m) for m in graph()} - {""} == set(birdclef.LAYERS)


def test_no_import_runs_upwards():
    rank = {name: i for i, name in enumerate(birdclef.LAYERS)}
    upward = [
        f"{a} -> {b}"
        for a, targets in graph().items()
        for b in targets
        if layer(a) and layer(b) and rank[layer(b)] > rank[layer(a)]
    ]
    assert upward == []


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_core_is_torch_free_and_imports_only_itself():
    for path in (PACKAGE / "core").glob("*.py"):
        found = imports(path)
        project = {
            m for m in found if m.startswith("birdclef") and not m.startswith("birdclef.core")
        }
        heavy = {m for m in found if m.split(".")[0] in TORCH_FREE}
        assert (project, heavy) == (set(), set()), path.name
