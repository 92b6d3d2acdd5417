"""Agreement between the dev set's labels and an independent second labelling pass (issue 21).

    python bench/label_agreement.py [--dev data/devsets/gsm8k_first_fault_dev.jsonl] \
        [--second data/devsets/gsm8k_first_fault_second_pass.jsonl] [--out bench/results/label_agreement.json]

A locator cannot be measured more precisely than its labels agree. Reported, over the items both
passes labelled:
- position: observed agreement (the two labels agree when their acceptable indices overlap; `null`
  agrees only with `null`) and Cohen's kappa, whose chance term comes from each pass's marginal
  distribution of its primary label (the smallest listed index, or null);
- strict position: both primary labels equal (kappa likewise);
- erroneous vs clean (binary kappa);
- error type, on the items where both placed the first error at an agreeing step.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def acceptable(label) -> set:
    return {None} if label is None else set(label) if isinstance(label, list) else {label}


def primary(label):
    return None if label is None else min(label) if isinstance(label, list) else label


def kappa(a: list, b: list, agree: list[bool]) -> dict:
    """Observed agreement and Cohen's kappa, chance from the two passes' marginals of `a` and `b`."""
    n = len(a)
    po = sum(agree) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    k = 1.0 if pe == 1 else (po - pe) / (1 - pe)  # one category on both sides: agreement is total
    return {"n": n, "observed": round(po, 4), "chance": round(pe, 4), "kappa": round(k, 4)}


def _type_kappa(both: list[tuple[dict, dict]]) -> dict:
    """Type agreement over (first, second) label pairs."""
    a, b = [p["error_type"] for p, _ in both], [q["error_type"] for _, q in both]
    return kappa(a, b, [x == y for x, y in zip(a, b)])


def agreement(first: list[dict], second: list[dict]) -> dict:
    by_key = {(r["row"], r["model"]): r for r in first}
    pairs = [(by_key[(r["row"], r["model"])], r) for r in second if (r["row"], r["model"]) in by_key]
    if not pairs:
        raise SystemExit("no item is in both files: check --dev and --second")
    x = [p[0]["first_faulty_step"] for p in pairs]
    y = [p[1]["first_faulty_step"] for p in pairs]
    overlap = [bool(acceptable(a) & acceptable(b)) for a, b in zip(x, y)]
    px, py = [primary(a) for a in x], [primary(b) for b in y]
    both = [(p, q) for (p, q), ok in zip(pairs, overlap) if ok and p["error_type"] and q["error_type"]]
    tx, ty = [p["error_type"] for p, _ in both], [q["error_type"] for _, q in both]
    return {
        "position": kappa(px, py, overlap),
        "position_strict": kappa(px, py, [a == b for a, b in zip(px, py)]),
        "erroneous_vs_clean": kappa(
            [a is None for a in x], [b is None for b in y], [(a is None) == (b is None) for a, b in zip(x, y)]
        ),
        "error_type_where_position_agrees": kappa(tx, ty, [a == b for a, b in zip(tx, ty)]) if both else None,
        # per split of the first file and as a first-pass x second-pass matrix: the ceiling the
        # locator's type accuracy on that split is read against (real_errors.py)
        "error_type_by_split": {sp: _type_kappa([b for b in both if b[0].get("split", "test") == sp])
                                 for sp in sorted({p.get("split", "test") for p, _ in both})},  # fmt: skip
        "error_type_confusion": {
            t: dict(Counter(q["error_type"] for p, q in both if p["error_type"] == t)) for t in sorted(set(tx))
        },
        "disagreements": [
            {"row": p["row"], "model": p["model"], "first": p["first_faulty_step"], "second": q["first_faulty_step"]}
            for (p, q), ok in zip(pairs, overlap)
            if not ok
        ],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dev", default=str(ROOT / "data/devsets/gsm8k_first_fault_dev.jsonl"))
    ap.add_argument("--second", default=str(ROOT / "data/devsets/gsm8k_first_fault_second_pass.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/label_agreement.json"))
    args = ap.parse_args()

    def read(p: str) -> list[dict]:
        return [json.loads(line) for line in Path(p).read_text().splitlines() if line.strip()]

    res = agreement(read(args.dev), read(args.second))
    print(f"{'measure':34} {'n':>4} {'observed':>9} {'chance':>7} {'kappa':>6}")
    for key in ("position", "position_strict", "erroneous_vs_clean", "error_type_where_position_agrees"):
        r = res[key]
        if r:
            print(f"{key:34} {r['n']:4d} {r['observed']:9.3f} {r['chance']:7.3f} {r['kappa']:6.3f}")
    for sp, r in res["error_type_by_split"].items():
        name = f"error_type, {sp} split"
        print(f"{name:34} {r['n']:4d} {r['observed']:9.3f} {r['chance']:7.3f} {r['kappa']:6.3f}")
    print("error type, first pass -> second pass:", res["error_type_confusion"])
    Path(args.out).write_text(json.dumps({"meta": run_meta(), **res}, indent=1) + "\n")
    print(f"{len(res['disagreements'])} position disagreements; wrote {args.out}")


if __name__ == "__main__":
    main()
