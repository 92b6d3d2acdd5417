"""Check each step's own arithmetic exactly, with a stated tolerance for rounded decimals.

`10/3 = 3.33` is a rounding (the claim has 2 decimals and is within one unit of the last place), not
an error; `3 * 24 = 74` is. Equations whose sides are both bare numbers with no operator
("1 hour = 60 minutes") are unit statements, not arithmetic claims, and stay unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from silverbullet.attribution.steps import Equation, StepInfo

OK, ROUNDING, FAULTY, UNCHECKED = "ok", "rounding", "faulty", "unchecked"
MAX_DECIMALS = 8


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


def decimals(v: Fraction) -> int | None:
    """Decimal places needed to write v exactly (None: not a terminating decimal within the cap)."""
    for d in range(MAX_DECIMALS + 1):
        if (v * 10**d).denominator == 1:
            return d
    return None


def is_rounding(exact: Fraction, claimed: Fraction, approx: bool = False) -> bool:
    """Is `claimed` the exact value rounded or truncated to the decimals it is written with?"""
    d = decimals(claimed)
    if d is None:
        return False
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
