"""The package's structure, checked: no import circle between modules, and no package importing one
from a higher layer (the README's Layout lists the same layers). Lazy imports inside functions count:
they are structure too. A known exception is named with its reason and must still exist (a fixed
one is taken off the list, so the list only shrinks)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "silverbullet"

# bottom to top: a package may import from its own layer and the ones below
LAYERS = [
    ("errors", "paths", "settings", "ui", "stats", "records", "grading", "startup", "run"),
    ("segmentation",),
    ("prompting", "benchmarks"),
    ("generation",),
    ("attribution", "measure"),
    ("quantize", "sharding", "reference"),
    ("diagnose", "diagnose_samples", "sensitivity"),
    ("repair",),
    ("check", "results", "report"),
    ("cli", "__init__"),
]
KNOWN_UPWARD = {
    ("benchmarks", "reference"): "the synthetic task's generator lives in reference/ (issue #38 moves it)",
}


def _modules() -> dict[str, Path]:
    out = {}
    for f in ROOT.rglob("*.py"):
        name = ".".join(("silverbullet", *f.relative_to(ROOT).with_suffix("").parts))
        out[name.removesuffix(".__init__")] = f
    return out


def _imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file)."""

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = defaultdict(set)
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("silverbullet"):
                names = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("silverbullet")]
            for n in names:
                if n == "silverbullet.__version__":  # metadata, not the package's API facade on top
                    continue
                t = resolve(n)
                if t is not None and t != m:
                    edges[m].add(t)
    return edges


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_import_circle():
    mods = _modules()
    edges = _imports(mods)
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(edges[m]):
            if state.get(t) == 1:
                raise AssertionError("import circle: " + " -> ".join(path[path.index(t) :] + [t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(mods):
        if m not in state:
            visit(m)


def test_no_package_imports_from_a_higher_layer():
    level = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    mods = _modules()
    packages = {_package(m) for m in mods}
    assert packages <= set(level), f"put these in a layer: {sorted(packages - set(level))}"
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for m, targets in _imports(mods).items():
        for t in targets:
            a, b = _package(m), _package(t)
            if level[b] > level[a]:
                found[(a, b)].append(f"{m} -> {t}")
    unknown = {k: v for k, v in found.items() if k not in KNOWN_UPWARD}
    assert not unknown, f"imports from a higher layer: {unknown}"
    stale = set(KNOWN_UPWARD) - set(found)
    assert not stale, f"fixed, take them off KNOWN_UPWARD: {stale}"
