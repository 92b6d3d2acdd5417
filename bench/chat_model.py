"""The chat path on the shipped chat reference model, in both prompt modes, as a user runs it.

    python bench/chat_model.py [--limit 200] [--repair-limit 400] [--out bench/results/chat_model.json]

For each mode it runs the CLI:
- `steps`: `silverbullet diagnose --reference data/reference-chat-model` (auto picks the chat template
  with the step-format instruction);
- `free`: the same with `--system-prompt ""` (no instruction: the model answers in its free styles and
  the segmenter has to find the steps);
then `silverbullet repair --from <run>` with the demo's repair settings, and `silverbullet report`.
The quantized model is the demo quantized variant of the chat model (`diagnose` builds it on first use).
It records per mode: accuracy of both models, format compliance, first-fault positions, error types,
causal confirmation, and the repair's accuracy and recovery.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODEL = "data/reference-chat-model"
MODES = {"steps": [], "free": ["--system-prompt", ""]}
REPAIR = ["--repair-limit", "400", "--epochs", "3", "--learning-rate", "2e-3"]


def _cli(*args: str) -> float:
    t0 = time.time()
    cmd = [sys.executable, "-m", "silverbullet.cli", *args]
    print("$ silverbullet " + " ".join(repr(a) if a == "" else a for a in args), flush=True)
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode}): {' '.join(args)}\n{res.stderr[-3000:]}")
    return round(time.time() - t0, 1)


def run_mode(mode: str, limit: int, repair_limit: int, runs: Path) -> dict:
    run, rep = runs / f"chat-{mode}", runs / f"chat-{mode}-repair"
    repair_args = ["--repair-limit", str(repair_limit), *REPAIR[2:]]
    t_diag = _cli("diagnose", "--reference", MODEL, "--limit", str(limit), "--out", str(run), *MODES[mode])
    t_rep = _cli("repair", "--from", str(run), "--out", str(rep), *repair_args, *MODES[mode])
    _cli("report", str(run))
    s = json.loads((run / "summary.json").read_text())
    r = json.loads((rep / "repair_summary.json").read_text())
    rows = [json.loads(x) for x in (run / "attribution.jsonl").read_text().splitlines() if x.strip()]
    flips = [x for x in rows if x["model"] == "quantized" and x.get("flip")]
    return {
        "run": str(run),
        "prompt": s["prompt"],
        "n": s["n"],
        "accuracy": s["accuracy"],
        "format": s["format"],
        "format_drop": s.get("format_drop", []),
        "flips": s["flips"],
        "first_fault_position": s["first_fault_position"],
        "steps_per_flip_mean": round(sum(x["n_steps"] for x in flips) / max(1, len(flips)), 2),
        "error_types": s["error_types"],
        "confirmation": s["confirmation"],
        "repair": {
            "examples": r["examples"],
            "accuracy": r["accuracy"],
            "recovery": r["recovery"],
            "flips_fixed": r["flips_fixed"],
            "flips_introduced": r["flips_introduced"],
            "train_seconds": r["timings"]["train_seconds"],
        },
        "seconds": {"diagnose": t_diag, "repair": t_rep},
    }


def table(results: dict) -> None:
    cols = f"{'mode':6} {'ref':>6} {'quant':>6} {'Step k':>7} {'answer':>7} {'flips':>5}"
    print(cols + f" {'faults at steps 1/2/3/4+':>25} {'repaired':>8} {'recov':>6}")
    for m, r in results.items():
        fq = r["format"]["quantized"]
        pos = {int(k): v for k, v in r["first_fault_position"]["absolute"].items() if k.isdigit()}
        n = max(1, sum(pos.values()))
        at = [pos.get(0, 0), pos.get(1, 0), pos.get(2, 0), sum(v for k, v in pos.items() if k >= 3)]
        rec = r["repair"]["recovery"]
        print(
            f"{m:6} {r['accuracy']['reference']:6.1%} {r['accuracy']['quantized']:6.1%} "
            f"{fq['step_prefix_share']:7.1%} {fq['answer_stated_share']:7.1%} {r['flips']['ref_right_quant_wrong']:5d} "
            f"{' / '.join(f'{x / n:.0%}' for x in at):>25} {r['repair']['accuracy']['repaired']:8.1%} "
            f"{'n/a' if rec is None else format(rec, '.0%'):>6}"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--repair-limit", type=int, default=400)
    ap.add_argument("--runs", default="runs/bench-chat")
    ap.add_argument("--out", default="bench/results/chat_model.json")
    ap.add_argument("--show", action="store_true", help="Print the table of --out's results; run nothing.")
    args = ap.parse_args()
    out = ROOT / args.out
    if args.show:
        table(json.loads(out.read_text())["modes"])
        return
    runs = ROOT / args.runs
    results = {m: run_mode(m, args.limit, args.repair_limit, runs) for m in MODES}
    table(results)
    out.write_text(json.dumps({"meta": run_meta(), "limit": args.limit, "modes": results}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
