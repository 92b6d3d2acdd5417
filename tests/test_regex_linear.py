"""Every module-level regex of the package reads long runs of one character in linear time.

Model output, dataset fields and user files reach these patterns. A pattern that can read the same
run of spaces or digits two ways (`\\s*\\$?\\s*`, `[\\d,]*\\.?\\d+`) backtracks quadratically when the
match then fails: 0.25-0.8 s on a 4,000-character line was seen in three of them. This probes each
pattern with `match` and `fullmatch` (how the package uses the anchored ones) on runs of 16,000
characters; a quadratic pattern takes seconds there, a linear one about a millisecond. Patterns the
package also scans text with (`search`, `findall`, `sub`) are probed that way on 4,000 characters:
an unanchored scan restarts at every position, so a pattern that runs over a whole run of spaces
from each start is quadratic there even when its `match` is linear."""

from __future__ import annotations

import importlib
import pkgutil
import re
import time

import pytest

import silverbullet

FILLS = (" ", "1", "a", ",", ".", "$", "\\", "(", "*", "-", "=", "<", "1 ", "1,", "a ", "\n", "& ", "1.", " $", "\t")
N = 16_000
LIMIT_S = 0.1  # per call; linear patterns take ~1 ms on this length
SCAN_N, SCAN_LIMIT_S = 4_000, 0.05  # a quadratic scan takes 0.15-0.2 s here, a linear one < 1 ms
# Scanned only over a bounded window, so their quadratic scan is bounded too (name: where)
BOUNDED_SCANS = {"silverbullet.segmentation._MINERVA_TAIL_RE": "clean_answer searches the last 200 characters"}


def _patterns() -> dict[str, re.Pattern]:
    out: dict[str, re.Pattern] = {}
    for info in pkgutil.walk_packages(silverbullet.__path__, "silverbullet."):
        try:
            mod = importlib.import_module(info.name)
        except Exception:  # optional backends (vLLM) are absent in this venv
            continue
        for name, value in vars(mod).items():
            if isinstance(value, re.Pattern) and value.__class__ is re.Pattern:
                out.setdefault(f"{mod.__name__}.{name}", value)
    return out


PATTERNS = _patterns()


def _seconds(call, text: str, limit: float) -> float:
    """The call's time, measured again (up to 3 times, the least kept) when over `limit`: a shared
    CI machine stalls now and then, a quadratic pattern is slow every time."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        call(text)
        best = min(best, time.perf_counter() - t0)
        if best < limit:
            break
    return best


def test_the_package_has_patterns_to_probe():
    assert len(PATTERNS) >= 40  # a broken collector would pass everything below


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_is_linear_on_long_runs(name):
    pattern = PATTERNS[name]
    for fill in FILLS:
        text = fill * (N // len(fill)) + "\x00"
        for method in (pattern.match, pattern.fullmatch):
            dt = _seconds(method, text, LIMIT_S)
            assert dt < LIMIT_S, f"{name}.{method.__name__} on {N} x {fill!r}: {dt:.2f} s ({pattern.pattern[:80]})"


def _scanned_names() -> set[str]:
    """Names of the package's patterns that some module calls search / finditer / findall / sub /
    split on (read off the source, so a new scanning call is probed without editing this test)."""
    import pathlib

    src = "\n".join(p.read_text() for p in pathlib.Path(silverbullet.__file__).parent.rglob("*.py"))
    used = set(re.findall(r"\b(_?[A-Z][A-Z0-9_]*)(?:\[\d+\])?\.(?:search|finditer|findall|sub|subn|split)\(", src))
    return {full for full in PATTERNS if full.rsplit(".", 1)[1] in used}


SCANNED = sorted(_scanned_names())


def test_scanning_calls_are_found():
    assert len(SCANNED) >= 20 and "silverbullet.attribution.steps._LEX_RE" in SCANNED


@pytest.mark.parametrize("name", SCANNED)
def test_scanned_pattern_is_linear_on_long_runs(name):
    if name in BOUNDED_SCANS:
        pytest.skip(BOUNDED_SCANS[name])
    pattern = PATTERNS[name]
    for fill in FILLS:
        text = fill * (SCAN_N // len(fill)) + "\x00"
        calls = (("search", pattern.search), ("findall", pattern.findall), ("sub", lambda t: pattern.sub("", t)))
        for label, call in calls:
            dt = _seconds(call, text, SCAN_LIMIT_S)
            assert dt < SCAN_LIMIT_S, f"{name}.{label} on {SCAN_N} x {fill!r}: {dt:.3f} s ({pattern.pattern[:80]})"
