"""Untrusted model text: every function that reads it answers any string, quickly, without running it.

Property-based (hypothesis) over random text, step-like lines with mutated numbers/operators, and
hostile strings; `builtins.eval`/`exec` are trapped for the whole module and must never fire;
code-shaped inputs must never create their marker file. bench/fuzz.py is the 100,000-input version.
"""

from __future__ import annotations

import builtins
import gc
import re
import sys
import time
import types
import uuid
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from silverbullet.attribution import locate
from silverbullet.attribution.check import check_equation, check_step
from silverbullet.attribution.expr import evaluate
from silverbullet.attribution.roles import contrast_sets, named
from silverbullet.attribution.steps import analyse_step, parse_steps, question_numbers
from silverbullet.grading import is_correct, parse_number
from silverbullet.prompting import parse_solution, step_spans

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from fuzz import HOSTILE  # noqa: E402

LIMIT_S = 0.5  # per call, for everything but math-verify (see test_latex_grading_is_bounded)
MARK = Path(f"/tmp/silverbullet_pwned_{uuid.uuid4().hex[:8]}")
CODE = [
    f"__import__('os').system('touch {MARK}')",
    f"Step 1: __import__('os').system('touch {MARK}') = 4.",
    f"The answer is: __import__('os').system('touch {MARK}')",
    f"\\boxed{{__import__('os').system('touch {MARK}')}}",
    f"open('{MARK}', 'w').write('x')",
    f"().__class__.__base__.__subclasses__()[0] and open('{MARK}','w')",
    f"exec(\"open('{MARK}','w')\") = 1",
    f'eval(\'open("{MARK}","w")\') + 2 = 3',
    f"lambda: open('{MARK}','w')",
    "{{ config.__class__.__init__.__globals__ }}",
    "${7*7}",
]

trapped: list[str] = []


# math-verify's LaTeX parser (latex2sympy2) builds numbers with sympy.Number(token), which goes through
# sympy's parse_expr: `exec("from sympy import *")` and `eval("Integer (12 )")` on a lexer NUMBER token
# (digits only). Those are allowed on the LaTeX grading path only, and only in exactly that shape.
SAFE_NAMES = {"Integer", "Float", "Rational", "Symbol", "Add", "Mul", "Pow", "E", "I", "pi"}
SYMPY_NUMBER = re.compile(
    r"from sympy import \*|-?(?:Integer|Float|Rational|Add|Mul|Pow|[\d.eE+\-*/() '\"])+"
    r"|Symbol \('[A-Za-z]+' \)|[A-Za-z]+ ?|def monomial_\w+\([A-Za-z, ]+\):[\s\S]*"
)


@contextmanager
def no_eval_exec(allow_sympy_numbers: bool = False):
    """Any eval/exec while model text is being read is a failure. Installed around the calls only:
    hypothesis and pytest use exec themselves; sympy and math-verify are imported and warmed first
    (their import-time exec is not model text running)."""
    import math_verify  # noqa: F401
    import sympy  # noqa: F401

    is_correct("1", "1", "latex")
    real = builtins.eval, builtins.exec

    def guard(which):
        def trap(*a, **k):
            src = a[0] if a else None
            if allow_sympy_numbers and isinstance(src, str) and SYMPY_NUMBER.fullmatch(src.strip()):
                return real[which](*a, **k)
            if isinstance(src, types.CodeType) and src.co_filename == "<string>" and set(src.co_names) <= SAFE_NAMES:
                return real[which](*a, **k)  # sympy's parse_expr evaluating its compiled number token
            if isinstance(src, types.CodeType) and src.co_name == "<module>" and src.co_filename.endswith(".py"):
                return real[which](*a, **k)  # a lazy `import` running a module file, not a string
            trapped.append(repr(src)[:120])
            raise RuntimeError("eval/exec called on model text")

        return trap

    builtins.eval, builtins.exec = guard(0), guard(1)
    try:
        yield
    finally:
        builtins.eval, builtins.exec = real


@pytest.fixture(autouse=True)
def nothing_ran():
    yield
    assert not trapped, trapped[:3]
    assert not MARK.exists()


REF = "Step 1: 3 + 4 = 7.\nStep 2: 7 * 2 = 14.\nThe answer is: 14"
FNS = {
    "parse_solution": parse_solution,
    "step_spans": step_spans,
    "parse_steps": parse_steps,
    "analyse_step+check_step": lambda s: check_step(analyse_step(s)),
    "equations": lambda s: [check_equation(e) for e in analyse_step(s).equations],
    "question_numbers": question_numbers,
    "expr.evaluate": evaluate,
    "parse_number": parse_number,
    "is_correct(numeric)": lambda s: is_correct(s, "14"),
    "locate(candidate)": lambda s: locate("Ann has 3 and 4, doubled.", s, reference_text=REF, gold_answer="14"),
    "locate(reference)": lambda s: locate("q", REF, reference_text=s, gold_answer="14"),
    "locate(question,gold)": lambda s: locate(s, REF, reference_text=REF, gold_answer=s[:200]),
    "roles.contrast_sets": lambda s: contrast_sets.__wrapped__(s),  # uncached: each call reads
    "roles.named": lambda s: named(analyse_step(s)),
}


def cpu_seconds(fn, *args, allow_sympy_numbers: bool = False):
    """CPU seconds of one call, with eval/exec trapped and the collector paused.

    CPU, not wall time: the machine is shared, and wall time measures the neighbours. The collector
    is paused because in a full suite run the heap holds torch and transformers, and one gen-2 pass
    over it costs 0.3-0.6 s that is not the reader's (CI saw locate take 0.61 s on an input it
    reads in 4 ms). The readers allocate little, so pausing it hides no cost of theirs."""
    gc.disable()
    try:
        with no_eval_exec(allow_sympy_numbers):  # its warm-up (imports, one LaTeX grade) is not timed
            t0 = time.thread_time()
            out = fn(*args)  # an exception here fails the test: none may escape
            dt = time.thread_time() - t0
        return dt, out
    finally:
        gc.enable()


def call_all(s: str) -> None:
    for name, fn in FNS.items():
        dt, _ = cpu_seconds(fn, s)
        assert dt < LIMIT_S, (name, round(dt, 3), s[:80])


# ------------------------------------------------------------------------------ strategies

NUM = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=3).map(str),
    st.sampled_from(["1,200", "$5", "3/4", "-0", "1e999999", "9" * 60, ".5", "1_000", "٣", "½", "0x1F"]),
)
OP = st.sampled_from(
    ["+", "-", "*", "/", "x", "×", "÷", "^", "**", "%", "=", "==", "(", ")", "\\times", "!", "\\frac{"]
)


@st.composite
def step_like(draw) -> str:
    lines = []
    for i in range(draw(st.integers(1, 6))):
        parts = [draw(NUM)]
        for _ in range(draw(st.integers(0, 4))):
            parts += [draw(OP), draw(NUM)]
        words = draw(st.sampled_from(["", "Tom has ", "so ", "each costs $", "<<", "\\("]))
        lines.append(f"Step {draw(st.integers(-1, 12))}: {words}{' '.join(parts)} = {draw(NUM)}.")
        if i == 0 and draw(st.booleans()):
            lines.append(draw(st.text(max_size=30)))
    lines.append(draw(st.sampled_from(["The answer is: ", "#### ", "\\boxed{", ""])) + draw(NUM))
    return "\n".join(lines)


surrogate_text = st.binary(max_size=60).map(lambda b: b.decode("utf-8", errors="surrogateescape"))
replaced_text = st.binary(max_size=60).map(lambda b: b.decode("utf-8", errors="replace"))
UNTRUSTED = st.one_of(
    st.text(max_size=200),
    st.text(alphabet="0123456789+-*/^()=.,$%! x\n\\{}", max_size=120),
    step_like(),
    surrogate_text,
    replaced_text,
    st.sampled_from(HOSTILE + CODE),
)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


@FAST
@given(UNTRUSTED)
def test_every_reader_answers_any_string_fast(s):
    call_all(s)


@FAST
@given(
    step_like(), st.integers(0, 10), st.sampled_from(["\x00", "\u202e", "\u202c", "\ufeff", "\ud800", "\n", "9" * 50])
)
def test_mutated_steps_with_control_characters(s, pos, junk):
    call_all(s[:pos] + junk + s[pos:])


@pytest.mark.parametrize("s", HOSTILE + CODE, ids=range(len(HOSTILE + CODE)))
def test_hostile_strings(s):
    call_all(s)


def test_code_shaped_text_is_never_run():
    for s in CODE:
        call_all(s)
        with no_eval_exec():
            locate(s, s, reference_text=s, gold_answer=s)
        with no_eval_exec(allow_sympy_numbers=True):
            assert is_correct(s, "\\frac{1}{2}", "latex") is False
            is_correct(s, s, "latex")
    assert not MARK.exists()
    assert not trapped


def test_expression_limits_are_answers_not_hangs():
    for s in ["9**9**9**9", "9^9^9^9", "2^2^2^2^2^2^2", "9!!!!!!", "(9!)!", "10^(10^10)", "1" * 1_000_000]:
        dt, r = cpu_seconds(evaluate, s)
        assert dt < LIMIT_S, (s[:20], dt)
        assert r.status in ("rejected", "unparseable", "symbolic", "ok"), r
    assert evaluate("3 * 4").value == Fraction(12)
    assert evaluate("9^9^9^9").status == "rejected"


def test_deep_nesting_and_long_lines():
    for s in ["(" * 10_000 + "1" + ")" * 10_000, "\\frac{" * 5_000 + "1" + "}" * 5_000, "x" * 1_000_000]:
        call_all(s)
        call_all("Step 1: " + s + " = 3.\nThe answer is: 3")


def test_latex_grading_is_bounded():
    """math-verify has its own 3 s parse/verify timeouts; answers over 1,000 chars never reach it."""
    for s in ["1" * 1_000_000, "x" * 100_000, "\\sqrt{" * 2_000, *CODE]:
        dt, ok = cpu_seconds(is_correct, s, "\\frac{1}{2}", "latex", allow_sympy_numbers=True)
        assert ok is False
        assert dt < LIMIT_S, (s[:20], dt)
    assert is_correct("\\frac{2}{4}", "\\frac{1}{2}", "latex")
