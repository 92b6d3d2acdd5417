"""Step checker on every GSM8K calculator annotation (`<<a*b=c>>`) in train + test.

Each annotation is parsed with the safe parser and checked exactly (with the rounding policy).
Target: >= 99% judged correct. Those judged wrong are listed in the JSON for inspection, together
with annotations whose written result (the number after `>>`) disagrees with the annotation.

    python bench/checker_gsm8k.py [--data DIR] [--out bench/results/checker_gsm8k.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.attribution.check import FAULTY, OK, ROUNDING, check_equation  # noqa: E402
from silverbullet.attribution.steps import analyse_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/gsm8k"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/checker_gsm8k.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    status: Counter = Counter()
    judged_wrong: list[dict] = []
    written_mismatch: list[dict] = []
    for name in ("train.jsonl", "test.jsonl"):
        for i, line in enumerate((Path(args.data) / name).read_text().splitlines()):
            row = json.loads(line)
            for text in row["answer"].split("\n"):
                if "<<" not in text:
                    continue
                for eq in analyse_step(text).equations:
                    c = check_equation(eq)
                    where = {"file": name, "row": i, "line": text, **c.evidence()}
                    if eq.source == "written":
                        if c.status == FAULTY:
                            written_mismatch.append(where)
                        continue
                    status[c.status] += 1
                    if c.status not in (OK, ROUNDING):
                        judged_wrong.append(where)
    seconds = time.perf_counter() - t0
    n = sum(status.values())
    right = status[OK] + status[ROUNDING]
    res = {
        "meta": run_meta(),
        "annotations": n,
        "judged_correct": right,
        "rate": round(right / max(n, 1), 6),
        "target": ">= 0.99",
        "status_counts": dict(status),
        "judged_wrong_or_unchecked": judged_wrong,
        "written_result_disagrees_with_annotation": written_mismatch,
        "seconds": round(seconds, 2),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"{'annotations':<14}{'correct':>9}{'rate':>10}  target")
    print(f"{n:<14}{right:>9}{res['rate']:>10.4%}  >= 99%")
    print("status:", dict(status))
    for w in judged_wrong:
        print(f"  {w['status']}: {w['file']}:{w['row']} {w['equation']} (lhs {w['lhs_value']})")
    print(f"written result != annotation: {len(written_mismatch)}")
    for w in written_mismatch[:10]:
        print(f"  {w['file']}:{w['row']} {w['line'][:100]}")
    print(f"{seconds:.2f}s; wrote {args.out}")


if __name__ == "__main__":
    main()
