"""Locator on GSM8K gold solutions with one injected error of a known type at a known step.

Injections (one per solution, types in rotation), each propagated to later steps and the answer:
- execution: the step's result is written wrong (calculator result + a small delta);
- method: one operator of the step's expression is swapped (+ <-> -, * -> +, / -> *);
- conceptual: a number taken from the question is replaced by one the question does not give;
- reasoning: an operand carried over from an earlier result is replaced by a slightly wrong value.
Scored against the *original* gold solution as reference and the gold answer: exact match of the
first faulty step (target >= 95%) and of the error type (target >= 90%).

    python bench/injected_errors.py [--n 1200] [--out bench/results/injected_errors.json]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.attribution.expr import evaluate  # noqa: E402
from silverbullet.attribution.locate import locate  # noqa: E402
from silverbullet.attribution.steps import question_numbers  # noqa: E402
from silverbullet.attribution.taxonomy import COMMON_CONSTANTS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("execution", "method", "conceptual", "reasoning")
ANN_RE = re.compile(r"<<([^<>=]+)=([^<>]+)>>(\$?)(-?[\d,]*\.?\d+)?")
NUM_RE = re.compile(r"\d+(?:\.\d+)?")
SWAP = {"+": "-", "-": "+", "*": "+", "/": "*"}


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1200, help="solutions to inject (>= 1000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/gsm8k"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/injected_errors.json"))
    args = ap.parse_args()
    rows = []
    for name in ("test.jsonl", "train.jsonl"):
        rows += [json.loads(x) for x in (Path(args.data) / name).read_text().splitlines() if x.strip()]
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    per_type = {t: Counter() for t in TYPES}
    confusion: Counter = Counter()
    misses: list[dict] = []
    skipped: Counter = Counter()
    n = 0
    for idx, row in enumerate(rows):
        if n >= args.n:
            break
        etype = TYPES[idx % 4]
        got = inject(row["question"], row["answer"], etype, rng)
        if got is None:
            skipped[etype] += 1
            continue
        text, k = got
        gold = row["answer"].split("####")[-1].strip()
        a = locate(row["question"], text, row["answer"], gold)
        n += 1
        c = per_type[etype]
        c["n"] += 1
        c["position"] += a.first_faulty_step == k
        c["type"] += a.error_type == etype
        c["both"] += a.first_faulty_step == k and a.error_type == etype
        confusion[f"{etype}->{a.error_type}"] += 1
        if (a.first_faulty_step != k or a.error_type != etype) and len(misses) < 40:
            misses.append({"row": idx, "injected": etype, "step": k, "predicted_step": a.first_faulty_step,
                           "predicted_type": a.error_type, "evidence": a.evidence, "text": text})  # fmt: skip
    seconds = time.perf_counter() - t0
    tot = Counter()
    for c in per_type.values():
        tot.update(c)
    res = {
        "meta": run_meta(),
        "n": n,
        "position_exact": round(tot["position"] / max(n, 1), 4),
        "type_accuracy": round(tot["type"] / max(n, 1), 4),
        "both": round(tot["both"] / max(n, 1), 4),
        "targets": {"position_exact": ">= 0.95", "type_accuracy": ">= 0.90"},
        "per_type": {
            t: {"n": c["n"], "position": round(c["position"] / max(c["n"], 1), 4),
                "type": round(c["type"] / max(c["n"], 1), 4)}
            for t, c in per_type.items()
        },  # fmt: skip
        "confusion": dict(confusion.most_common()),
        "skipped_no_injectable_step": dict(skipped),
        "seconds": round(seconds, 2),
        "misses_sample": misses,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"{'type':<12}{'n':>6}{'position':>10}{'type acc':>10}")
    for t, c in res["per_type"].items():
        print(f"{t:<12}{c['n']:>6}{c['position']:>10.3f}{c['type']:>10.3f}")
    print(f"{'all':<12}{n:>6}{res['position_exact']:>10.3f}{res['type_accuracy']:>10.3f}", end="")
    print("   targets >= 0.95 / >= 0.90")
    print("confusion:", res["confusion"])
    print(f"{seconds:.2f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
