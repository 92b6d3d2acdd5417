"""The package's import graph: no circles, and no module reaching up the data flow.

Every import counts, also those inside functions and under TYPE_CHECKING: a lazy import that runs
up the flow is still a circle a reader has to untangle (measure -> repair.fallback -> diagnose ->
measure was one)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "silverbullet"

# Stages earlier in the flow never import later ones (prompts -> generation -> steps -> attribution
# -> dataset -> training -> report); `check` gates, `report` renders it.
FORBIDDEN = [
    ("silverbullet.generation", ("silverbullet.attribution", "silverbullet.repair", "silverbullet.diagnose")),
    ("silverbullet.attribution", ("silverbullet.repair", "silverbullet.diagnose", "silverbullet.report")),
    ("silverbullet.measure", ("silverbullet.repair", "silverbullet.diagnose", "silverbullet.attribution")),
    ("silverbullet.check", ("silverbullet.report", "silverbullet.repair", "silverbullet.diagnose")),
    ("silverbullet.prompting", ("silverbullet.attribution", "silverbullet.generation", "silverbullet.diagnose")),
    ("silverbullet.stats", ("silverbullet.",)),
    ("silverbullet.ui", ("silverbullet.",)),
]


# bottom to top: a package may import from its own layer and the ones below
LAYERS = [
    ("errors", "paths", "settings", "config_file", "ui", "stats", "records", "grading", "startup", "run"),
    ("segmentation",),
    ("prompting", "benchmarks"),
    ("generation",),
    ("attribution", "measure", "frontier"),
    ("quantize", "sharding", "reference"),
    ("diagnose", "diagnose_samples", "sensitivity"),
    ("repair",),
    ("check", "results", "report"),
    ("cli", "__init__"),
]
KNOWN_UPWARD: dict[tuple[str, str], str] = {}  # (lower, higher): why, while one is allowed


def _modules() -> dict[str, Path]:
    mods = {}
    for f in ROOT.rglob("*.py"):
        parts = f.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


def import_graph() -> dict[str, set[str]]:
    """module -> the silverbullet modules it imports (`from pkg import sub` counts as `pkg.sub` when
    `sub` is a module; a module's own parent packages are not counted: they are already loaded)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        ancestors = {".".join(m.split(".")[:i]) for i in range(1, m.count(".") + 1)}
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                for a in node.names:
                    targets.append(f"{src}.{a.name}" if f"{src}.{a.name}" in mods else src)
            for t in targets:
                if t in mods and t != m and t not in ancestors:
                    graph[m].add(t)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    cycles, state, stack = [], {}, []

    def visit(u: str) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v)
        stack.pop()
        state[u] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    return cycles


def test_the_detector_sees_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles: " + "; ".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize("src,banned", FORBIDDEN)
def test_no_module_imports_up_the_flow(src, banned):
    graph = import_graph()
    bad = [
        (m, t)
        for m, targets in graph.items()
        if m == src or m.startswith(src + ".")
        for t in targets
        if any(t == b or t.startswith(b if b.endswith(".") else b + ".") for b in banned)
    ]
    assert not bad, f"{src} imports up the flow: {bad}"


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_no_package_imports_from_a_higher_layer():
    """The README's Layout lists the same layers. A known exception is named with its reason and must
    still exist (a fixed one comes off the list, so the list only shrinks)."""
    level = {p: i for i, layer in enumerate(LAYERS) for p in layer}
    graph = import_graph()
    packages = {_package(m) for m in graph}
    assert packages <= set(level), f"put these in a layer: {sorted(packages - set(level))}"
    found: dict[tuple[str, str], list[str]] = {}
    for m, targets in graph.items():
        for t in targets:
            a, b = _package(m), _package(t)
            if level[b] > level[a] and t != "silverbullet":
                found.setdefault((a, b), []).append(f"{m} -> {t}")
    unknown = {k: v for k, v in found.items() if k not in KNOWN_UPWARD}
    assert not unknown, f"imports from a higher layer: {unknown}"
    stale = set(KNOWN_UPWARD) - set(found)
    assert not stale, f"fixed, take them off KNOWN_UPWARD: {stale}"
