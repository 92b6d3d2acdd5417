"""One error of a known kind at a known step of a GSM8K gold solution, carried to the answer.

Why: a step verifier needs labelled first faults that the project can make without a dev set, and
the locator's own injected-error bench needs the same. Kinds (each propagated to later steps and the
final answer through the `<<expr=result>>` annotations, so the solution stays self-consistent after
the fault, as a model's would):
- execution: the step's result is written wrong (the result plus a small delta);
- method: one operator of the step's expression is swapped (+ <-> -, * -> +, / -> *);
- conceptual: a number taken from the question is replaced by one the question does not give;
- reasoning: an operand carried over from an earlier result is replaced by a slightly wrong value;
- swap (a semantic fault with right arithmetic): a question number is replaced by another number of
  the same question, a quantity bound to the wrong entity;
- backwards: the operands of a subtraction or division are reversed, a relation read the wrong way.
`strip_annotations` gives the solution as prose, the way a model writes it.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from silverbullet.attribution.expr import evaluate
from silverbullet.attribution.steps import question_numbers
from silverbullet.attribution.taxonomy import COMMON_CONSTANTS

TYPES = ("execution", "method", "conceptual", "reasoning")
SEMANTIC = ("swap", "backwards")  # right arithmetic, wrong reasoning
ANN_RE = re.compile(r"<<([^<>=]+)=([^<>]+)>>(\$?)(-?[\d,]*\.?\d+)?")
NUM_RE = re.compile(r"\d+(?:\.\d+)?")
SWAP = {"+": "-", "-": "+", "*": "+", "/": "*"}
# two literals around a minus or a division sign, not inside a longer product or sum chain's middle
_BINARY_RE = re.compile(r"(?<![\d.*/])(\d+(?:\.\d+)?)\s*([-/])\s*(\d+(?:\.\d+)?)(?![\d.*/])")
_ANN_STRIP_RE = re.compile(r"<<[^<>]*>>")


def strip_annotations(text: str) -> str:
    """The solution as a model would write it: GSM8K's `<<expr=result>>` calculator notes removed."""
    return _ANN_STRIP_RE.sub("", text)


def fmt(v: Fraction) -> str | None:
    """Decimal text for a terminating value, None otherwise (we only inject clean numbers)."""
    if v.denominator == 1:
        return str(v.numerator)
    for d in range(1, 5):
        if (v * 10**d).denominator == 1:
            return f"{float(v):.{d}f}"
    return None


def value(expr: str) -> Fraction | None:
    r = evaluate(expr)
    return r.value if r.ok else None


def sub_numbers(expr: str, old: Fraction, new: str, only_first: bool = False) -> str:
    done = False

    def rep(m: re.Match) -> str:
        nonlocal done
        if (only_first and done) or Fraction(m.group(0)) != old:
            return m.group(0)
        done = True
        return new

    return NUM_RE.sub(rep, expr)


def rewrite_line(line: str, new_expr: str, new_res: str) -> str:
    """Replace the first annotation and the visible expression before it."""
    m = ANN_RE.search(line)
    assert m is not None
    head = line[: m.start()]
    vis = re.search(r"[\d.,$\s+\-*/x×()%]+=\s*\$?\s*$", head)
    if vis and re.search(r"\d", vis.group(0)):
        dollar = "$" if head.rstrip().endswith("$") else ""
        head = head[: vis.start()] + " " + new_expr + " = " + dollar
    return head + f"<<{new_expr}={new_res}>>{new_res}" + line[m.end() :]


def inject(question: str, answer: str, etype: str, rng: random.Random) -> tuple[str, int] | None:
    lines = [ln for ln in answer.split("\n") if ln.strip()]
    if len(lines) < 2 or not lines[-1].startswith("####"):
        return None
    steps = lines[:-1]
    anns = [ANN_RE.search(s) for s in steps]
    qn = question_numbers(question)
    results: list[Fraction | None] = [value(m.group(2)) if m else None for m in anns]
    all_values = set(qn) | {r for r in results if r is not None}
    order = list(range(len(steps)))
    rng.shuffle(order)
    for k in order:
        m = anns[k]
        if m is None or results[k] is None:
            continue
        expr, old_res = m.group(1), results[k]
        earlier = {r for r in results[:k] if r is not None}
        new_expr: str | None = expr
        new_res: Fraction | None = None
        if etype == "execution":
            new_res = old_res + rng.choice([1, -1, 2, 10, -10, 3])
        elif etype == "method":
            ops = [i for i, c in enumerate(expr) if c in SWAP and i > 0]
            if not ops:
                continue
            i = rng.choice(ops)
            new_expr = expr[:i] + SWAP[expr[i]] + expr[i + 1 :]
            new_res = value(new_expr)
        elif etype == "swap":
            lits = [Fraction(x) for x in NUM_RE.findall(expr)]
            pool = [v for v in lits if v in qn and v not in earlier and v.denominator == 1]
            others = sorted(v for v in qn if v not in lits and v not in earlier and v > 0 and v.denominator == 1)
            if not pool or not others:
                continue
            old = rng.choice(pool)
            new_expr = sub_numbers(expr, old, str(rng.choice(others).numerator), only_first=True)
            new_res = value(new_expr)
        elif etype == "backwards":
            pairs = list(_BINARY_RE.finditer(expr))
            if not pairs:
                continue
            m2 = rng.choice(pairs)
            a, op, b = m2.group(1), m2.group(2), m2.group(3)
            if Fraction(a) == Fraction(b):
                continue
            new_expr = expr[: m2.start()] + f"{b}{op}{a}" + expr[m2.end() :]
            new_res = value(new_expr)
        else:
            lits = [Fraction(x) for x in NUM_RE.findall(expr)]
            if etype == "conceptual":
                pool = [v for v in lits if v in qn and v not in earlier and v.denominator == 1]
            else:
                pool = [v for v in lits if v in earlier and v not in qn and v.denominator == 1]
            if not pool:
                continue
            old = rng.choice(pool)
            s = str(old.numerator)
            cands = [old + 1, old - 1, old + 2, old + 10]
            if len(s) > 1 and s[0] != s[1]:
                cands.insert(0, Fraction(int(s[::-1])))
            if etype == "reasoning":
                cands = [old + d for d in (2, -2, 1, -1, 10)]
            bad = set(qn) | set(earlier) | set(COMMON_CONSTANTS)
            cands = [c for c in cands if c > 0 and c not in bad]
            if not cands:
                continue
            new_expr = sub_numbers(expr, old, str(cands[0].numerator), only_first=True)
            new_res = value(new_expr)
        if new_res is None or new_res == old_res or new_res <= 0 or fmt(new_res) is None:
            continue
        if etype != "execution" and new_res in all_values:
            continue  # lands on a value the reference computes: not an observable error
        out = list(steps)
        if etype == "execution":
            out[k] = rewrite_line(steps[k], expr, fmt(new_res) or "")
        else:
            out[k] = rewrite_line(steps[k], new_expr or expr, fmt(new_res) or "")
        changed = {old_res: new_res}
        for j in range(k + 1, len(steps)):
            mj = anns[j]
            if mj is None:
                continue
            ej = mj.group(1)
            for o, nv in changed.items():
                if any(Fraction(x) == o for x in NUM_RE.findall(ej)):
                    ej = sub_numbers(ej, o, fmt(nv) or "")
            if ej != mj.group(1):
                rv = value(ej)
                if rv is None or fmt(rv) is None:
                    return None
                out[j] = rewrite_line(steps[j], ej, fmt(rv) or "")
                if results[j] is not None and rv != results[j]:
                    changed[results[j]] = rv
        final_old = value(lines[-1][4:].strip().replace(",", ""))
        final_new = changed.get(final_old) if final_old is not None else None
        if final_new is None:
            return None  # the change does not reach the answer: no observable error
        out.append(f"#### {fmt(final_new)}")
        return "\n".join(out), k
    return None
