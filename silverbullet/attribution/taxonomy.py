"""The four error types of arXiv 2505.11574 and the operational rules that assign them.

See docs/taxonomy.md for the rules in prose. Kept apart from locate.py so the rules can be read
(and changed) without the search for the position.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from fractions import Fraction

EXECUTION, METHOD, CONCEPTUAL, REASONING = "execution", "method", "conceptual", "reasoning"
ERROR_TYPES = (EXECUTION, METHOD, CONCEPTUAL, REASONING)

# Quantities any solution may use without the problem stating them (units, halves, percent).
COMMON_CONSTANTS = frozenset(
    Fraction(v) for v in (0, 1, 2, 7, 10, 12, 24, 30, 52, 60, 100, 365, 1000, 3600)
) | {Fraction(1, 2), Fraction(1, 100)}


def _digits(v: Fraction) -> str | None:
    if v.denominator == 1:
        return str(abs(v.numerator))
    for d in range(1, 5):
        if (v * 10**d).denominator == 1:
            return str(abs(v * 10**d).numerator)
    return None


def nearness(a: Fraction, b: Fraction) -> float:
    """Small when `a` looks like a slip for `b` (one digit changed, digits swapped, a few % off)."""
    if a == b:
        return 0.0
    rel = float(min(abs(a - b) / max(abs(b), Fraction(1)), Fraction(1)))
    da, db = _digits(a), _digits(b)
    if da is not None and db is not None and len(da) == len(db):
        diff = sum(x != y for x, y in zip(da, db, strict=False))
        if diff == 1 or (diff == 2 and sorted(da) == sorted(db)):
            return 1.0 + rel
    if rel <= 0.2 or abs(a - b) <= 2:
        return 2.0 + rel
    return float("inf")


def supported(value: Fraction, known: Iterable[Fraction] | set[Fraction]) -> bool:
    """Can a solution use `value` here: given, computed earlier, a constant, or a % form of one."""
    ks = known if isinstance(known, (set, frozenset)) else set(known)
    if value in ks or value in COMMON_CONSTANTS:
        return True
    if value * 100 in ks or value / 100 in ks:  # 15% used as 0.15 or 15
        return True
    return value != 0 and 1 / value in ks  # a rate used inverted (1/4 from 4)


def classify_unsupported(
    operand: Fraction, question: Iterable[Fraction], earlier_results: Sequence[Fraction]
) -> tuple[str, Fraction | None]:
    """Unsupported operand: a slip for an earlier result -> reasoning, else conceptual.

    Returns the type and the value it most likely stands for.
    """
    q_best = min(((nearness(operand, v), v) for v in question), default=(float("inf"), None))
    r_best = min(((nearness(operand, v), v) for v in earlier_results), default=(float("inf"), None))
    if r_best[0] < q_best[0]:
        return REASONING, r_best[1]
    return CONCEPTUAL, q_best[1] if q_best[0] < float("inf") else None


def classify_divergence(
    cand_operands: Sequence[Fraction],
    ref_operands: Sequence[Fraction] | None,
    own_results: set[Fraction],
    question: set[Fraction] | frozenset[Fraction],
    same_quantities: bool = False,
) -> tuple[str, str]:
    """Arithmetic true but the value leaves the reference's dataflow: which kind of mistake.

    The boundary follows docs/labelling-guide.md, read as evidence in the numbers (docs/taxonomy.md).
    `own_results`: values this solution computed (by an operation) before this step; `question`:
    the question's numbers; `same_quantities`: the given numbers under this step equal those under
    the aligned reference step (earlier results expanded into what they came from).

    - reasoning, only on evidence from the solution's own earlier steps (guide rule 4: "uses 25 when
      its own previous step computed 20", "drops an earlier result from a total"): the reference
      step has a value this solution computed earlier (not a question number, not used in this step)
      and this step either puts a non-given number in its place (one operand swapped: wrong
      carry-over) or leaves it out and adds nothing (dropped earlier result). A reference value the
      solution never formed is not a carry-over slip: it ignored a condition or read another
      quantity, which is conceptual;
    - method ("right quantities combined with the wrong operation"): the same given numbers as the
      reference step, or the same operands (as a set: `6/3*6` for `6*3`), combined differently;
    - conceptual ("a wrong quantity plugged into a right-looking formula", "ignores/invents a
      condition"): anything else: another given in a quantity's place, a quantity the reference
      step does not use, a dropped given.
    Returns (type, rule name).
    """
    if ref_operands is None or not cand_operands:
        return CONCEPTUAL, "no_aligned_reference_step"
    cc, rc = Counter(cand_operands), Counter(ref_operands)
    missing, extra = rc - cc, cc - rc
    own = [m for m in missing if m in own_results and m not in question and m not in cc]
    swapped = sum(missing.values()) == sum(extra.values()) == 1  # one operand replaced by one number
    if own and not same_quantities:
        if swapped and next(iter(extra)) not in question:
            return REASONING, "wrong_carry_over"
        if not extra:
            return REASONING, "dropped_earlier_result"
    if same_quantities or set(cc) == set(rc):
        return METHOD, "same_quantities_other_operation"
    if swapped and next(iter(extra)) in question and next(iter(missing)) in question:
        return CONCEPTUAL, "wrong_given_quantity"
    return CONCEPTUAL, "other_quantities"
