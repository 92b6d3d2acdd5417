"""Fuzz every function that reads model text: no exception escapes, no call is slow, no code runs.

    python bench/fuzz.py [--n 100000] [--seed 0]

Inputs mix random text, step-like lines with mutated numbers/operators, and hostile strings (Python
code, dunder access, exponent and factorial towers, huge numbers, deep nesting, NUL bytes, invalid
UTF-8, right-to-left marks, 1 MB lines). `builtins.eval`/`exec` are trapped for the whole run
(only math-verify's sympy number literals and module imports pass; see docs/hardening.md).
Per-call times are CPU seconds (process_time): the machine is shared; symbolic.check_steps is timed in
wall seconds, so the time a sympy worker takes (killed at its deadline) counts. One input in five is
a LaTeX step (random chains of the new grammar, some mutated); the hostile list has TeX programming,
huge exponents and 10,000 nested braces. Prints a table and writes
bench/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import builtins
import gc
import json
import random
import re
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

HOSTILE = [
    "__import__('os').system('touch /tmp/silverbullet_pwned')",
    "().__class__.__bases__[0].__subclasses__()",
    "9**9**9**9",
    "9^9^9^9",
    "2^2^2^2^2^2^2",
    "9!!!!!!",
    "(9!)!",
    "10^(10^10)",
    "1" * 1_000_000,
    "1e999999",
    "0." + "9" * 100_000,
    "(" * 10_000 + "1" + ")" * 10_000,
    "\\frac{" * 5_000 + "1" + "}" * 5_000,
    "Step 1: 3 \x00 * 4 = 12.",
    "Step 1: \u202e21 = 4 * 3\u202c.",
    "Step 1: \ud800 2 + 2 = 4",
    b"Step 1: \xff\xfe 2 + 2 = 4".decode("utf-8", errors="surrogateescape"),
    b"\xc3\x28 \xa0\xa1 = 5".decode("utf-8", errors="replace"),
    "Step 1: " + "1 + " * 200_000 + "1 = 200001.",
    "x" * 1_000_000,
    # long runs that end in a character no pattern accepts: a pattern that reads a run two ways
    # backtracks quadratically here (session 17: 4.4 s for a plain-number check on the first)
    "1" * 16_000 + "x",
    " " * 16_000 + "x",
    "\n" * 16_000 + "x",
    "1," * 8_000 + "x",
    "=" * 100_000,
    "<<" * 50_000,
    "\\boxed{" * 2000,
    "The answer is: " + "9" * 10_000,
    "#### lambda: exec('1')",
    "Step 1: eval('2+2') = 4.",
    "\\sqrt{\\sqrt{\\sqrt{" * 1000,
    "1/0 = 5",
    "0/0",
    "5 % 0 = 1",
    "-(-(-(-(-1)))) = -1",
    # LaTeX (the symbolic checker): TeX programming is refused, never expanded
    "$\\def\\a{\\a\\a}\\a = 1$",
    "\\def\\loop{\\loop}\\loop $x = 1$",
    "$\\input{/etc/passwd} = 2$",
    "$\\newcommand{\\x}{\\x\\x}\\x = 3$",
    "$\\csname foo\\endcsname = 1$ \\write18{touch /tmp/silverbullet_pwned}",
    "$" + "{" * 10_000 + "x" + "}" * 10_000 + " = 1$",
    "$2^{10^{10^{10}}} = 4$",
    "$9^{9^{9^{9^{9}}}} = x$",
    "$(10^{100})! = 1$",
    "$\\binom{10^{9}}{10^{8}} = 2$",
    "$\\sqrt[10^{9}]{2} = x$",
    "$x^{999999} - 1 = (x-1)(x^{999998} + 1)$",
    "$(x+1)^{200} = x^{200} + 1$",
    "$\\frac{x^{150}-1}{x-1} = x + 1 = 2$",
    "\\[" + "\\left(" * 3000 + "x" + "\\right)" * 3000 + " = 1 \\]",
    "$" + "x+" * 5000 + "1 = 2$",
    "$\\sin(10^{30}) = 0$ and $\\exp(10^{9}) = 1$ and $\\ln 0 = 1$",
]
# Names a compiled sympy parse_expr code object may use on the LaTeX path (math-verify's number tokens).
SAFE_NAMES = {"Integer", "Float", "Rational", "Symbol", "Add", "Mul", "Pow", "E", "I", "pi"}
OPS = ["+", "-", "*", "/", "x", "^", "=", "%", "(", ")", "$", ",", ".", "\\times", "\\frac{", "}"]


LATEX_ATOMS = ["x", "y", "2", "3.5", "10", "\\pi", "\\frac{1}{2}", "\\sqrt{x}", "\\sqrt[3]{27}", "\\binom{5}{2}",
               "4!", "x^{2}", "(x+1)", "\\left(x-2\\right)", "2x", "x(x+2)", "3\\frac{1}{4}", "50{,}000",
               "5 \\text{ cm}", "\\sin x", "\\ln 2", "e^{x}", "10^{-3}", "1.5e3", "R_{\\mathrm{WD}}",
               # session 11: i and e (complex points), units spelled two ways, percent, braced letters
               "(75+117i)", "(a+bi)", "e^{i\\theta}", "e^{i(\\frac{\\pi}{2}+\\theta)}", "a^2+b^2", "i^{2}",
               "6.2 \\mathrm{eV}", "7.69 \\times 10^{-19} {~J}", "2 \\text{ Joules }", "0.74", "74 \\%",
               "\\text{ radians }", "{r}_{1}", "\\mathcal{F}_{1}", "\\dbinom82", "\\tfrac h4", "6784 \\AA",
               "e^{10^{9} i}", "e^{e^{e^{x}}}"]  # fmt: skip
LATEX_OPS = ["+", "-", "\\cdot", "\\times", "\\div", "/", "^", "", " "]
LATEX_RELS = ["=", "=", "=", "\\Rightarrow", "\\implies", "\\approx", "<", ","]


def random_latex(rng: random.Random) -> str:
    """A LaTeX step: chains of random expressions, some of them true identities, some mutated."""
    steps = []
    for _ in range(rng.randint(1, 4)):
        parts = []
        for _ in range(rng.randint(2, 4)):
            e = rng.choice(LATEX_ATOMS)
            for _ in range(rng.randint(0, 4)):
                e += rng.choice(LATEX_OPS) + rng.choice(LATEX_ATOMS)
            if rng.random() < 0.1:  # a cut, a stray brace, a doubled operator
                k = rng.randint(0, len(e))
                e = e[:k] + rng.choice(["{", "}", "\\", "^^", "_", "", "$"]) + e[k:]
            parts.append(e)
        chain = parts[0] + "".join(f" {rng.choice(LATEX_RELS)} {p}" for p in parts[1:])
        wrap = rng.choice(["${}$", "\\[ {} \\]", "\\begin{{aligned}} {} \\end{{aligned}}", "so ${}$.", "{}",
                           "so:\n\\[ \\begin{{aligned}} &{} \\\\", "Let $a^2+b^2=16$ and ${}$."])  # fmt: skip
        steps.append(wrap.format(chain))
    return "\n".join(steps)


def random_input(rng: random.Random) -> str:
    kind = rng.random()
    if kind > 0.8:
        return random_latex(rng)
    if kind < 0.05:
        return rng.choice(HOSTILE)
    if kind < 0.35:
        return "".join(chr(rng.randint(0, 0x2FFF)) for _ in range(rng.randint(0, 80)))
    if kind < 0.55:
        return "".join(rng.choice("0123456789+-*/^()=.,$% x\n") for _ in range(rng.randint(0, 60)))
    parts = []
    for _ in range(rng.randint(1, 6)):
        a, b = rng.randint(-50, 10 ** rng.randint(1, 8)), rng.randint(0, 999)
        op = rng.choice(OPS)
        res = rng.choice([a + b, a * b, a - b, rng.randint(0, 10**6)])
        parts.append(f"Step {rng.randint(0, 9)}: {rng.choice(['Tom has', 'so', '', 'each'])} {a} {op} {b} = {res}.")
    answer = rng.choice([str(rng.randint(0, 999)), "$1,200", "\\frac{1}{2}", "x", ""])
    parts.append("The answer is: " + answer)
    return "\n".join(parts)


def targets():
    from silverbullet.attribution import latex, locate
    from silverbullet.attribution.check import check_step
    from silverbullet.attribution.expr import evaluate
    from silverbullet.attribution.roles import contrast_sets
    from silverbullet.attribution.steps import analyse_step, parse_steps
    from silverbullet.attribution.symbolic import check_steps
    from silverbullet.grading import is_correct, parse_number
    from silverbullet.prompting import parse_solution, step_spans

    return {
        "parse_solution": lambda s: parse_solution(s),
        "step_spans": lambda s: step_spans(s),
        "parse_steps": lambda s: parse_steps(s),
        "analyse+check_step": lambda s: check_step(analyse_step(s)),
        "expr.evaluate": lambda s: evaluate(s),
        "parse_number": lambda s: parse_number(s),
        "is_correct(numeric)": lambda s: is_correct(s, "42"),
        "is_correct(latex)": lambda s: is_correct(s, "\\frac{1}{2}", "latex"),
        "latex.parse": lambda s: latex.parse(s),
        "latex.relations": lambda s: latex.relations(s),
        "symbolic.check_steps": lambda s: check_steps(s.split("\n")),
        "locate": lambda s: locate(
            "Ann has 3 apples. How many?", s, reference_text="Step 1: 3 + 0 = 3.\nThe answer is: 3", gold_answer="3"
        ),
        "roles.contrast_sets": lambda s: contrast_sets.__wrapped__(s),
        # the text as a question, with a wrong answer whose divergence reads the question's roles
        "locate(question)": lambda s: locate(
            s,
            "Step 1: 3 + 4 = 7.\nStep 2: 7 * 2 = 14.\nThe answer is: 14",
            reference_text="Step 1: 3 * 1 = 3.\nThe answer is: 3",
            gold_answer="3",
        ),
    }


def run(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    fns = targets()
    import sympy  # noqa: F401 - imported before the trap: its own import-time exec is not model text running

    fns["is_correct(latex)"]("1")  # warm math-verify's lazy imports before the trap, for the same reason

    trapped = []
    real_eval, real_exec = builtins.eval, builtins.exec

    allowed = {"sympy_number": 0, "module_import": 0}
    number = re.compile(
        r"from sympy import \*|-?(?:Integer|Float|Rational|Add|Mul|Pow|[\d.eE+\-*/() '\"])+"
        r"|Symbol \('[A-Za-z]+' \)|[A-Za-z]+ ?|def monomial_\w+\([A-Za-z, ]+\):[\s\S]*"
    )

    def guard(real):
        def trap(*a, **k):
            src = a[0] if a else None
            # math-verify's LaTeX parser builds sympy numbers from lexer NUMBER tokens (digits only)
            # through sympy's parse_expr; a lazy import runs a module file. Neither is model text.
            if isinstance(src, str) and number.fullmatch(src.strip()):
                allowed["sympy_number"] += 1
                return real(*a, **k)
            if isinstance(src, types.CodeType) and src.co_filename == "<string>" and set(src.co_names) <= SAFE_NAMES:
                allowed["sympy_number"] += 1  # sympy's parse_expr evaluating its compiled number token
                return real(*a, **k)
            if isinstance(src, types.CodeType) and src.co_name == "<module>" and src.co_filename.endswith(".py"):
                allowed["module_import"] += 1
                return real(*a, **k)
            trapped.append(repr(src)[:160])
            raise RuntimeError("eval/exec called during fuzzing")

        return trap

    stats = {k: {"calls": 0, "crashes": 0, "max_s": 0.0, "times": []} for k in fns}
    crashes = []
    builtins.eval, builtins.exec = guard(real_eval), guard(real_exec)
    # The collector runs between inputs, untimed: with 100,000 timings held, one gen-2 pass costs more
    # than any reader (0.8 s charged to a 0.2 s call), and the readers allocate little.
    gc.disable()
    try:
        for i in range(n):
            if i % 1000 == 0:
                gc.collect()
            s = random_input(rng) if i >= len(HOSTILE) else HOSTILE[i]
            for name, fn in fns.items():
                if name == "is_correct(numeric)" and i % 10:
                    continue  # cheap; sampled
                if name == "is_correct(latex)" and i % 100 and i >= len(HOSTILE):
                    continue  # math-verify (sympy, own 3 s timeouts): every hostile string + a 1% sample
                clock = time.perf_counter if name.startswith("symbolic") else time.process_time
                t0 = clock()  # symbolic: wall time, so time spent waiting on the sympy worker counts
                try:
                    fn(s)
                except Exception as e:  # noqa: BLE001 - this is what we count
                    stats[name]["crashes"] += 1
                    crashes.append({"fn": name, "input": s[:200], "error": f"{type(e).__name__}: {e}"[:200]})
                dt = clock() - t0
                st = stats[name]
                st["calls"] += 1
                st["max_s"] = max(st["max_s"], dt)
                st["times"].append(dt)
    finally:
        builtins.eval, builtins.exec = real_eval, real_exec
        gc.enable()
    for st in stats.values():
        ts = sorted(st.pop("times"))
        st["p99_s"] = round(ts[int(0.99 * (len(ts) - 1))], 6) if ts else 0.0
        st["max_s"] = round(st["max_s"], 4)
    return {
        "n_inputs": n,
        "stats": stats,
        "crashes": crashes[:50],
        "n_crashes": len(crashes),
        "eval_exec_calls": len(trapped),
        "eval_exec_sources": trapped[:10],
        "allowed_library_eval_exec": allowed,
        "pwned_file_exists": Path("/tmp/silverbullet_pwned").exists(),
    }


def main() -> None:
    from _meta import run_meta

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/fuzz.json")
    args = ap.parse_args()
    t0 = time.time()
    res = run(args.n, args.seed)
    res["seconds"] = round(time.time() - t0, 1)
    res["meta"] = run_meta()
    res["worker_kills"] = __import__("silverbullet.attribution.symbolic", fromlist=["get_pool"]).get_pool().kills
    old = Path(args.out)
    if old.is_file():  # keep the figures of the run before this one
        prev = json.loads(old.read_text())
        prev.pop("previous_run", None)
        res["previous_run"] = {k: prev.get(k) for k in ("n_inputs", "stats", "n_crashes", "seconds", "meta")}
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(f"{'function':<22} {'calls':>8} {'crashes':>8} {'p99 ms':>8} {'max ms':>8}")
    for k, st in res["stats"].items():
        print(f"{k:<22} {st['calls']:>8} {st['crashes']:>8} {1000 * st['p99_s']:>8.2f} {1000 * st['max_s']:>8.1f}")
    print(
        f"inputs {res['n_inputs']}, crashes {res['n_crashes']}, eval/exec calls {res['eval_exec_calls']}, "
        f"{res['seconds']}s"
    )


if __name__ == "__main__":
    main()
