"""Accuracy of the reference model under RTN / GPTQ / AWQ / SmoothQuant at several bit widths.

    python bench/quantization.py [--n 500] [--only rtn-w4g128,...]

Prints a table and writes bench/results/quantization.json (updated after every setting, so a
killed run keeps what it measured). The model card's quantization table comes from this file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _meta import run_meta  # noqa: E402

from silverbullet.benchmarks import load_benchmark  # noqa: E402
from silverbullet.measure import evaluate_model  # noqa: E402
from silverbullet.quantize import QuantizeConfig, quantize  # noqa: E402

SETTINGS = [  # lowest bits first: the repairable regime of a small model is at 2-3 bits
    ("gptq", 2, 32),
    ("rtn", 2, 32),
    ("gptq", 2, 0),
    ("rtn", 2, 0),
    ("gptq", 2, 128),
    ("rtn", 2, 128),
    ("gptq", 2, 64),
    ("rtn", 2, 64),
    ("gptq", 3, 0),
    ("rtn", 3, 0),
    ("gptq", 2, 16),
    ("rtn", 2, 16),
    ("gptq", 3, 32),
    ("rtn", 3, 32),
    ("awq", 3, 32),
    ("gptq", 4, 128),
    ("rtn", 4, 128),
    ("rtn", 4, 32),
    ("gptq", 4, 32),
    ("rtn", 4, 0),
    ("awq", 4, 128),
    ("rtn", 8, 128),
    ("gptq", 8, 128),
    ("smoothquant", 8, 0),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="data/reference-model")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--only", default="")
    ap.add_argument("--out", default="bench/results/quantization.json")
    args = ap.parse_args()
    problems = load_benchmark("synthetic", split="eval", limit=args.n)
    out = Path(args.out)
    result = {"meta": run_meta(), "n": args.n, "benchmark": "synthetic/eval", "rows": []}
    if out.exists() and args.only:
        result["rows"] = [r for r in json.loads(out.read_text())["rows"]]
    ref = evaluate_model(args.model, problems, tag="reference")
    rows = {r["setting"]: r for r in result["rows"]}
    rows["reference (bf16 weights, fp32 compute)"] = {"setting": "reference (bf16 weights, fp32 compute)", **ref}
    only = set(filter(None, args.only.split(",")))
    for method, bits, group in SETTINGS:
        cfg = QuantizeConfig(model=args.model, method=method, bits=bits, group_size=group)
        if only and cfg.tag() not in only:
            continue
        t0 = time.time()
        try:
            path = quantize(cfg, log=lambda m: None)
            row = {
                "setting": cfg.tag(),
                "quantize_seconds": round(time.time() - t0, 1),
                **evaluate_model(str(path), problems, tag=cfg.tag()),
            }
        except Exception as e:  # a method that does not run on this model is reported, not hidden
            row = {"setting": cfg.tag(), "error": f"{type(e).__name__}: {e}"[:300]}
        row["drop_points"] = round(100 * (ref["accuracy"] - row["accuracy"]), 1) if "accuracy" in row else None
        rows[row["setting"]] = row
        result["rows"] = list(rows.values())
        out.write_text(json.dumps(result, indent=1))
        print(
            f"{row['setting']:<22} acc={row.get('accuracy')} drop={row['drop_points']} {row.get('error', '')}",
            flush=True,
        )
    print(f"\n{'setting':<40} {'accuracy':>9} {'drop (pts)':>10}")
    for r in result["rows"]:
        print(f"{r['setting']:<40} {r.get('accuracy', 'error'):>9} {r.get('drop_points') or '':>10}")


if __name__ == "__main__":
    main()
