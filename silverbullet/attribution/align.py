"""Align a candidate solution's steps to a reference solution's steps.

Two solutions of one problem rarely have the same number of lines: models merge, split, reorder
and add steps. A Needleman-Wunsch pass over a similarity score (same value computed, shared
operands, shared words) gives an order-preserving alignment with free gaps (extra / missing steps);
candidate steps it leaves out are then matched by value alone, which recovers reordered steps.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from silverbullet.attribution.steps import StepInfo

MIN_MATCH = 0.2  # below this a pair is never aligned
W_VALUE, W_OPERANDS, W_WORDS = 0.55, 0.3, 0.15


@dataclass(frozen=True)
class Alignment:
    """mapping[i] = index of the reference step aligned to candidate step i, or None."""

    mapping: tuple[int | None, ...]
    scores: tuple[float, ...]  # similarity of each aligned pair (0.0 when unaligned)


def _jaccard_multiset(a: Sequence[Fraction], b: Sequence[Fraction]) -> float:
    if not a and not b:
        return 0.0
    ca, cb = Counter(a), Counter(b)
    inter = sum((ca & cb).values())
    union = sum((ca | cb).values())
    return inter / union if union else 0.0


def similarity(c: StepInfo, r: StepInfo) -> float:
    """How likely two steps do the same job, in [0, 1]."""
    value = 1.0 if c.result is not None and c.result == r.result else 0.0
    ops = _jaccard_multiset(c.operands or c.numbers, r.operands or r.numbers)
    if c.words or r.words:
        words = len(c.words & r.words) / len(c.words | r.words)
    else:
        words = 0.0
    return W_VALUE * value + W_OPERANDS * ops + W_WORDS * words


def align(candidate: Sequence[StepInfo], reference: Sequence[StepInfo]) -> Alignment:
    """Order-preserving best alignment, then value matches for the steps it left out."""
    n, m = len(candidate), len(reference)
    if n == 0 or m == 0:
        return Alignment(tuple([None] * n), tuple([0.0] * n))
    sim = [[similarity(c, r) for r in reference] for c in candidate]
    # dp[i][j]: best total for candidate[:i] vs reference[:j]; gaps are free
    dp = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        row, prev, s_row = dp[i], dp[i - 1], sim[i - 1]
        for j in range(1, m + 1):
            best = prev[j] if prev[j] > row[j - 1] else row[j - 1]
            s = s_row[j - 1]
            if s >= MIN_MATCH and prev[j - 1] + s > best:
                best = prev[j - 1] + s
            row[j] = best
    mapping: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        s = sim[i - 1][j - 1]
        if s >= MIN_MATCH and abs(dp[i][j] - (dp[i - 1][j - 1] + s)) < 1e-12:
            mapping[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif abs(dp[i][j] - dp[i - 1][j]) < 1e-12:
            i -= 1
        else:
            j -= 1
    for i in range(n):  # reordered steps: same value computed elsewhere in the reference
        if mapping[i] is None:
            best_j = max(range(m), key=lambda jj: sim[i][jj])
            if sim[i][best_j] >= W_VALUE:
                mapping[i] = best_j
    scores = tuple(sim[i][j] if j is not None else 0.0 for i, j in enumerate(mapping))
    return Alignment(tuple(mapping), scores)
