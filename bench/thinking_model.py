"""The reasoning-model path on the shipped thinking reference model, as a user runs it.

    python bench/thinking_model.py [--limit 200] [--max-new-tokens 1024] [--repair-limit 400]
                                   [--method sft] [--sft-data flipped-full]
                                   [--out bench/results/thinking_model.json]

Runs `silverbullet diagnose --reference data/reference-thinking-model` (its chat template opens
`<think>` in the prompt; the quantized model is its demo RTN 2-bit variant, built on first use), then
`silverbullet repair --from <run>` with the demo's repair settings. Records both models' accuracy, how
long they think and how often their traces never close, the flips, where their first faults are, and
the repair. A smaller --max-new-tokens than the default (8x the task's 320) keeps a CPU run short; a
trace cut by it counts as unfinished.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "data/reference-thinking-model"
REPAIR = ["--epochs", "3", "--learning-rate", "2e-3"]


def _cli(*args: str) -> float:
    t0 = time.time()
    print("$ silverbullet " + " ".join(args), flush=True)
    res = subprocess.run([sys.executable, "-m", "silverbullet.cli", *args], cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(args)}\n{res.stderr[-3000:]}")
    return round(time.time() - t0, 1)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--repair-limit", type=int, default=400)
    ap.add_argument("--runs", default="runs/bench-thinking")
    ap.add_argument("--method", default="sft", help="repair --method (sft, dpo, sft+dpo)")
    ap.add_argument("--sft-data", default="flipped-full", help="repair --sft-data")
    ap.add_argument("--out", default="bench/results/thinking_model.json")
    a = ap.parse_args()
    runs = Path(a.runs)
    run, rep = runs / "diagnose", runs / "repair"
    budget = ["--max-new-tokens", str(a.max_new_tokens)]
    t_diag = _cli("diagnose", "--reference", MODEL, "--limit", str(a.limit), "--out", str(run), *budget)
    t_rep = _cli("repair", "--from", str(run), "--out", str(rep), "--repair-limit", str(a.repair_limit), *REPAIR,
                 "--method", a.method, "--sft-data", a.sft_data, *budget)  # fmt: skip
    s = json.loads((run / "summary.json").read_text())
    r = json.loads((rep / "repair_summary.json").read_text())
    att = _rows(run / "attribution.jsonl")
    flips = [x for x in att if x["model"] == "quantized" and x.get("flip")]
    checks = Counter((x.get("evidence") or {}).get("check", "none") for x in flips)
    res = {
        "meta": run_meta(),
        "model": MODEL,
        "n": s["n"],
        "max_new_tokens": a.max_new_tokens,
        "accuracy": s["accuracy"],
        "accuracy_ci": s["accuracy_ci"],
        "thinking": {tag: s["format"][tag].get("thinking") for tag in ("reference", "quantized")},
        "format": s["format"],
        "flips": s["flips"],
        "flip_checks": dict(checks.most_common()),
        "first_fault_position": s["first_fault_position"]["absolute"],
        "error_types": s["error_types"]["quantized"],
        "confirmation": s["confirmation"],
        "trace_faults": s.get("trace_faults"),
        "repair": {
            "method": a.method,
            "sft_data": a.sft_data,
            "sets": r.get("sets"),
            **{k: r[k] for k in ("examples", "accuracy", "recovery", "flips_fixed", "flips_introduced")},
        },
        "repaired_format": (r.get("format") or {}).get("repaired"),
        "seconds": {"diagnose": t_diag, "repair": t_rep},
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    th = res["thinking"]
    print(f"\nthinking model, n={res['n']}, budget {a.max_new_tokens} tokens")
    print("| | reference | quantized |\n|---|---|---|")
    print(f"| accuracy | {s['accuracy']['reference']:.1%} | {s['accuracy']['quantized']:.1%} |")
    for k in ("mean_tokens", "mean_chars", "unfinished"):
        print(f"| thinking {k} | {(th['reference'] or {}).get(k)} | {(th['quantized'] or {}).get(k)} |")
    print(f"flips {s['flips']['ref_right_quant_wrong']}; their checks {res['flip_checks']}")
    print(f"their traces: {res['trace_faults']}")
    print(f"repaired: {r['accuracy']['repaired']:.1%}, recovery {r['recovery']}  ({a.out})")


if __name__ == "__main__":
    main()
