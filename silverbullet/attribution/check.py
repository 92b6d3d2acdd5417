"""Check each step's own arithmetic exactly, with a stated tolerance for rounded decimals.

`10/3 = 3.33` is a rounding (the claim has 2 decimals and is within one unit of the last place), not
an error; `3 * 24 = 74` is. Equations whose sides are both bare numbers with no operator
("1 hour = 60 minutes") are unit statements, not arithmetic claims, and stay unchecked. A binary
float printed in full (`100/12 = 8.333333333333334`, a calculator annotation's repr) is the exact
value to float precision: an artefact, not a fault (docs/labelling-guide.md).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from fractions import Fraction

from silverbullet.attribution.steps import Equation, StepInfo, prose_numbers

OK, ROUNDING, FAULTY, UNCHECKED = "ok", "rounding", "faulty", "unchecked"
MAX_DECIMALS = 8
FLOAT_DECIMALS = 40  # a float64 repr has at most 17 significant digits; a typed 0.333...3 may run on
FLOAT_PRECISION = Fraction(1, 10**12)  # relative: float64 carries ~16 digits, a chain of ops loses a few


@dataclass(frozen=True)
class EquationCheck:
    status: str  # ok | rounding | faulty | unchecked
    equation: Equation
    lhs_value: Fraction | None
    rhs_value: Fraction | None

    def evidence(self) -> dict:
        return {
            "equation": f"{self.equation.lhs} = {self.equation.rhs}",
            "source": self.equation.source,
            "lhs_value": _fmt(self.lhs_value),
            "claimed": _fmt(self.rhs_value),
            "status": self.status,
        }


@dataclass(frozen=True)
class StepCheck:
    """ok: some equation holds and none fails; faulty: one fails; unchecked: nothing to check."""

    status: str
    checks: tuple[EquationCheck, ...]

    @property
    def first_fault(self) -> EquationCheck | None:
        return next((c for c in self.checks if c.status == FAULTY), None)

    @property
    def roundings(self) -> int:
        return sum(c.status == ROUNDING for c in self.checks)


def _fmt(v: Fraction | None) -> str | None:
    if v is None:
        return None
    if v.denominator == 1:
        return str(v.numerator)
    try:
        return f"{v} (~{float(v):.6g})"
    except OverflowError:  # a huge rational from hostile text: show it exactly, without a float
        return str(v)


def _places(v: Fraction, cap: int) -> int | None:
    """Decimal places v needs, read off its denominator (2^a 5^b needs max(a, b) places; any other
    factor never terminates); None past `cap`."""
    d, twos, fives = v.denominator, 0, 0
    while d % 2 == 0 and twos <= cap:
        d //= 2
        twos += 1
    while d % 5 == 0 and fives <= cap:
        d //= 5
        fives += 1
    places = max(twos, fives)
    return places if d == 1 and places <= cap else None


def decimals(v: Fraction) -> int | None:
    """Decimal places needed to write v exactly (None: not a terminating decimal within the cap)."""
    return _places(v, MAX_DECIMALS)


def is_float_print(exact: Fraction, claimed: Fraction) -> bool:
    """Is `claimed` a binary float's full print of `exact` (`8.333333333333334` for 100/12), or a
    repeating decimal written out at length (`0.3333333333333333333333`): more decimals than a
    rounding has (over MAX_DECIMALS), and equal to float precision?"""
    places = _places(claimed, FLOAT_DECIMALS)
    if places is None or places <= MAX_DECIMALS:
        return False
    return abs(exact - claimed) <= abs(exact) * FLOAT_PRECISION


def is_rounding(exact: Fraction, claimed: Fraction, approx: bool = False) -> bool:
    """Is `claimed` the exact value rounded or truncated to the decimals it is written with, or
    printed as a binary float (`is_float_print`)?"""
    d = decimals(claimed)
    if d is None:
        return is_float_print(exact, claimed)
    if d == 0 and exact.denominator == 1 and not approx:
        return False  # an integer result written as another integer is an error, not a rounding
    unit = Fraction(1, 10**d)
    if abs(exact - claimed) < unit:
        return True
    # a rounded percentage or relative rounding of large values written with '≈'
    return approx and exact != 0 and abs(exact - claimed) / abs(exact) < Fraction(1, 100)


def check_equation(eq: Equation) -> EquationCheck:
    lv, rv = eq.lhs_eval, eq.rhs_eval
    if not (lv.ok and rv.ok) or lv.value is None or rv.value is None:
        return EquationCheck(UNCHECKED, eq, lv.value, rv.value)
    a, b = lv.value, rv.value
    if a == b:
        return EquationCheck(OK, eq, a, b)
    if is_rounding(a, b, eq.approx) or is_rounding(b, a, eq.approx):
        return EquationCheck(ROUNDING, eq, a, b)
    if eq.source == "text" and not lv.ops and not rv.ops:
        return EquationCheck(UNCHECKED, eq, a, b)  # "1 hour = 60 minutes", "20% = 0.2" handled above
    if eq.source == "text" and (is_rounding(a * 100, b) or is_rounding(b * 100, a) or a * 100 == b or b * 100 == a):
        return EquationCheck(ROUNDING, eq, a, b)  # "x / y * 100% = 8.333": percent written without '%'
    return EquationCheck(FAULTY, eq, a, b)


def check_step(step: StepInfo) -> StepCheck:
    """Check every equation of a step."""
    checks = tuple(check_equation(e) for e in step.equations)
    if any(c.status == FAULTY for c in checks):
        status = FAULTY
    elif any(c.status in (OK, ROUNDING) for c in checks):
        status = OK
    else:
        status = UNCHECKED
    return StepCheck(status, checks)


_BECAUSE_RE = re.compile(r"\b(?:because|since)\b", re.IGNORECASE)
_AVERAGE_RE = re.compile(r"\baverage\b", re.IGNORECASE)
_SUM_WORDS_RE = re.compile(r"\b(?:total|sum|add|adding|added|first|combined|together|altogether)\b", re.IGNORECASE)
_SUM_RE = re.compile(r"[\d.,$€£\s]+(?:\+[\d.,$€£\s]+)+")  # numbers (with units' signs) added, nothing else
_WHOLE_RE = re.compile(r"\b100\s*%")  # "the total is 100% because ...": framing, not a claimed value


def claim_mismatch(
    step: StepInfo, known: Collection[Fraction], reference: Collection[Fraction] = ()
) -> dict | None:
    """A step that states one number and justifies it with a computation of another: "She slept 7
    hours because 8 - 2 = 6". The claim before `because`/`since` is false whatever the equation's
    own arithmetic; an execution error the equation check cannot see. A claimed number that is
    written in the question or stated earlier (`known`: no unit conversions, so "7 hours" is not
    excused by "week"), an operand, the result itself (also negated: "lost $9 because 11 - 20 = -9",
    or as a percent: "14 percent because x = .14"), or "100%" is not a claim of the result.
    When a reference solution's values (`reference`) hold the claim but not the computation, the
    computation is what went wrong (wrong quantities or operation): left to the checks that type
    such faults, so None.
    """
    if step.result is None or not step.operands:
        return None
    m = _BECAUSE_RE.search(step.text)
    if m is None or "=" not in step.text[m.end() :] or "=" in step.text[: m.start()]:
        return None
    ops = set(step.operands)
    before = _WHOLE_RE.sub(" ", step.text[: m.start()])
    for x in prose_numbers(before):
        r = step.result
        if x not in (r, -r, r * 100, r / 100) and x not in ops and x not in known:
            if x in reference and step.result not in reference:
                return None
            return {"check": "claim_mismatch", "claimed": _fmt(x), "computed": _fmt(step.result)}
    return None


def average_without_division(step: StepInfo) -> dict | None:
    """A step that calls its result an average and computes it as a sum with no division ("the
    average of the hat and jacket is 25 + 75 = 100"): the right quantities, the wrong operation, a
    method error whatever the arithmetic. Only where every computation of the step is additions and
    the step does not call the sum what it is (a total, "first add"), as a solution on its way to
    dividing does."""
    if step.result is None or len(step.operands) < 2 or not _AVERAGE_RE.search(step.text):
        return None
    if _SUM_WORDS_RE.search(step.text):  # "to find the average, first add ...": a sum on the way
        return None
    exprs = [e.lhs for e in step.equations if e.source != "written"]
    if not exprs or any(not _SUM_RE.fullmatch(x.strip()) for x in exprs):
        return None
    return {"check": "average_without_division", "computed": _fmt(step.result)}


# A written number, matched only from its first character (the look-behind) and with bounded runs,
# so a line of a million digits is read in linear time (tests/test_fuzz.py).
_NUM = r"(?<![\d.,])\$?\s?(-?\d[\d,]{0,24}(?:\.\d{1,12})?)"
# "48 < 3": two bare numbers compared (not the end of an expression: "11 < 30 / 11")
_COMPARE_RE = re.compile(r"(?<![*/+\-])" + _NUM + r"\s*(<=|>=|<|>|\u2264|\u2265)\s*" + _NUM + r"(?!\s*[-+*/x\d.,])")
# "$1980 is 110% of $2000" (the percent may be the end of a sum: "100% + 10% = 110%")
_PERCENT_OF_RE = re.compile(
    _NUM + r"\s+(?:is|are|was|were)\s+(?:[\d.%+ =]{0,40}=\s*)?(\d{1,12}(?:\.\d{1,12})?)\s*%\s+of\s+(?:the\s+\w+\s+)?"
    + _NUM
)
_ANNOTATION_RE = re.compile(r"<<[^<>]*>>")
_COMPARE = {"<": Fraction.__lt__, ">": Fraction.__gt__, "<=": Fraction.__le__, ">=": Fraction.__ge__,
            "\u2264": Fraction.__le__, "\u2265": Fraction.__ge__}  # fmt: skip


def false_relation(step: StepInfo) -> dict | None:
    """A relation between written numbers that is false: a comparison ("48 hours, because 48 < 3") or
    a percent-of claim ("$1980 is 110% of $2000"). Neither is an equation, so the arithmetic check
    does not read them. Rare in GSM8K-style text (one of each in the 4,076 solutions of
    ../shared/data, both in wrong answers), never a false alarm there."""
    text = _ANNOTATION_RE.sub(" ", step.text)
    for m in _COMPARE_RE.finditer(text):
        a, b = Fraction(m.group(1).replace(",", "")), Fraction(m.group(3).replace(",", ""))
        if not _COMPARE[m.group(2)](a, b):
            return {"check": "false_relation", "relation": m.group(0).strip()}
    for m in _PERCENT_OF_RE.finditer(text):
        a, pct, b = (Fraction(m.group(k).replace(",", "")) for k in (1, 2, 3))
        if b != 0 and abs(a - pct * b / 100) > Fraction(1, 100) * max(1, abs(a)):
            return {"check": "false_relation", "relation": m.group(0).strip()}
    return None
