"""Every module-level regex of the package reads long runs of one character in linear time.

Model output, dataset fields and user files reach these patterns. A pattern that can read the same
run of spaces or digits two ways (`\\s*\\$?\\s*`, `[\\d,]*\\.?\\d+`) backtracks quadratically when the
match then fails: 0.25-0.8 s on a 4,000-character line was seen in three of them. This probes each
pattern with `match` and `fullmatch` (how the package uses the anchored ones) on runs of 16,000
characters; a quadratic pattern takes seconds there, a linear one about a millisecond."""

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


def test_the_package_has_patterns_to_probe():
    assert len(PATTERNS) >= 40  # a broken collector would pass everything below


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_pattern_is_linear_on_long_runs(name):
    pattern = PATTERNS[name]
    for fill in FILLS:
        text = fill * (N // len(fill)) + "\x00"
        for method in (pattern.match, pattern.fullmatch):
            t0 = time.perf_counter()
            method(text)
            dt = time.perf_counter() - t0
            assert dt < LIMIT_S, f"{name}.{method.__name__} on {N} x {fill!r}: {dt:.2f} s ({pattern.pattern[:80]})"
