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
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.attribution.inject import TYPES, inject  # noqa: E402
from silverbullet.attribution.locate import locate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
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
