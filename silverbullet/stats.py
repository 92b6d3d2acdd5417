"""Intervals for proportions and their differences: the one place for the statistics that
`diagnose`, `check` and `report` quote (95% by default)."""

from __future__ import annotations

import math

Z95 = 1.959964


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k/n: honest at small n and near 0 or 1."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, mid - half), min(1.0, mid + half)


def newcombe_unpaired(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:
    """95% interval for p1 - p2 from independent samples (Newcombe 1998, method 10)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1)
    l2, u2 = wilson(k2, n2)
    d = p1 - p2
    return d - math.hypot(p1 - l1, u2 - p2), d + math.hypot(u1 - p1, p2 - l2)


def newcombe_paired(a: int, b: int, c: int, d: int) -> tuple[float, float]:
    """95% interval for p1 - p2 on the same items (Newcombe 1998, paired method 10).

    a: both right, b: only the first right, c: only the second right, d: both wrong. Pairing removes
    the problem-difficulty variance the two runs share, so the interval is much tighter than unpaired.
    """
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n)
    l2, u2 = wilson(a + c, n)
    den = math.sqrt((a + b) * (c + d) * (a + c) * (b + d))
    phi = (a * d - b * c) / den if den else 0.0
    diff = p1 - p2
    lo_sq = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    hi_sq = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return diff - math.sqrt(max(0.0, lo_sq)), diff + math.sqrt(max(0.0, hi_sq))
