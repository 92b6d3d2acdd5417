"""Speed of check + align + locate, single process: the 1,019 GSM8K test gold solutions (against
themselves) and the 4,076 model solutions of example_model_solutions.jsonl (against the gold).
Target: <= 10 s for both. Caches are cleared first, so this is a cold run.

    python bench/locate_speed.py [--out bench/results/locate_speed.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.attribution import expr, steps  # noqa: E402
from silverbullet.attribution.locate import locate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/gsm8k"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/locate_speed.json"))
    args = ap.parse_args()
    data = Path(args.data)
    test = [json.loads(x) for x in (data / "test.jsonl").read_text().splitlines() if x.strip()]
    sols = [
        json.loads(x) for x in (data / "example_model_solutions.jsonl").read_text().splitlines() if x.strip()
    ]
    expr.evaluate.cache_clear()
    steps.analyse_step.cache_clear()
    steps.question_numbers.cache_clear()
    t0 = time.perf_counter()
    for row in test:
        locate(row["question"], row["answer"], row["answer"])
    t1 = time.perf_counter()
    n_model = 0
    for row in sols:
        for m in MODELS:
            locate(row["question"], row[m]["solution"], row["ground_truth"])
            n_model += 1
    t2 = time.perf_counter()
    res = {
        "meta": run_meta(),
        "gold_solutions": len(test),
        "gold_seconds": round(t1 - t0, 3),
        "model_solutions": n_model,
        "model_seconds": round(t2 - t1, 3),
        "total_seconds": round(t2 - t0, 3),
        "target": "<= 10 s",
        "ms_per_solution": round(1000 * (t2 - t0) / (len(test) + n_model), 3),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"{'set':<18}{'n':>7}{'seconds':>10}")
    print(f"{'gold (test)':<18}{len(test):>7}{t1 - t0:>10.2f}")
    print(f"{'model solutions':<18}{n_model:>7}{t2 - t1:>10.2f}")
    print(f"{'total':<18}{len(test) + n_model:>7}{t2 - t0:>10.2f}   target <= 10 s")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
