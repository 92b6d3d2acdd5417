"""`repair --merge` methods against the adapter they merge: does one low-bit checkpoint keep the repair?

    python bench/merge_grid.py --setting w2ch --from runs/m-demo --out runs/m-repair \
        [--methods grid gptq requantize] [--repair-limit 400 --epochs 3 --learning-rate 2e-3]
    python bench/merge_grid.py --table          # print the table of bench/results/merge_grid.json

Each setting is one `silverbullet repair --from RUN --out OUT` (in process; the sets, the adapter and
the re-measure are reused when OUT already holds them), run once per merge method: `grid` (the
adapter folded in, rounded to nearest on the base's own grid and scales), `gptq` (the same grid,
GPTQ error feedback with Hessians from the SFT set's repair-split text) and `requantize` (the old
path: the base's recipe run again on the dense merge, new scales). Reported per method: accuracy,
recovery and its share of the adapter's recovery, flips introduced against the quantized base, bytes
on disk (merged checkpoint vs base + adapter), and how the merged weights sit on the grid (share of
weights whose code changed, share of LoRA deltas over half a grid step, share of the adapter's
update kept in weight space and on calibration inputs). Results merge into --json by setting name.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "merge_grid.json"


def agreement(out: Path) -> dict:
    """How often the merged checkpoint writes what base + adapter wrote (same text; same verdict)."""

    def read(tag: str) -> dict:
        lines = (out / "generations" / f"{tag}.jsonl").read_text().splitlines()
        return {r["problem_id"]: r for r in map(json.loads, filter(str.strip, lines))}

    rep, mer = read("repaired"), read("merged")
    n = len(rep)
    return {
        "same_text_as_adapter": round(sum(mer[p]["text"] == r["text"] for p, r in rep.items()) / n, 4),
        "same_verdict_as_adapter": round(sum(mer[p]["correct"] == r["correct"] for p, r in rep.items()) / n, 4),
    }


def run_setting(args) -> dict:
    import torch

    torch.set_num_threads(1)
    from silverbullet.repair.pipeline import RepairConfig, run_repair
    from silverbullet.repair.train import RepairTrainConfig

    rows = {}
    summary = {}
    for method in args.methods:
        cfg = RepairConfig(
            from_run=args.from_run,
            out=args.out,
            repair_limit=args.repair_limit,
            merge=True,
            merge_method=method,
            progress=False,
            control=args.control,
            max_examples=args.max_examples,
            train=RepairTrainConfig(epochs=args.epochs, learning_rate=args.learning_rate),
        )
        summary = run_repair(cfg, log=lambda m: None)
        rows[method] = {**summary["merged"], **agreement(Path(args.out))}
        print(f"{args.setting} {method}: {rows[method]['accuracy']:.1%}", flush=True)
    a = summary["accuracy"]
    quantized = json.loads((Path(args.from_run) / "config.json").read_text())["quantized"]
    return {
        "from": args.from_run,
        "out": args.out,
        "quantized": quantized,
        "quantization": json.loads((Path(quantized) / "silverbullet_quantization.json").read_text())["tag"],
        "n": summary["n"],
        "repair": {"method": summary["method"], "examples": summary["examples"]},
        "accuracy": {k: a[k] for k in ("reference", "quantized")},
        "adapter": {
            "accuracy": a["repaired"],
            "recovery": summary["recovery"],
            "flips_fixed": summary["flips_fixed"],
            "flips_introduced": summary["flips_introduced"],
            "bytes": summary["base_bytes"] + summary["adapter_bytes"],
            "adapter_bytes": summary["adapter_bytes"],
        },
        "merged": rows,
    }


def table(data: dict) -> None:
    head = ("setting", "model", "acc", "recovery", "of adapter's", "fixed", "introduced", "MB on disk",
            "same text as adapter", "codes moved", "deltas > step/2", "max delta (steps)",
            "update kept (w / out)")  # fmt: skip
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for name, s in data["settings"].items():
        ad = s["adapter"]
        print(f"{name} ({s['quantization']}, n={s['n']}) | base | {s['accuracy']['quantized']:.1%} |" + " |" * 10)
        rec = ad["recovery"]
        shown = "n/a" if rec is None else f"{rec:.0%}"
        print(
            f"{name} | base + adapter | {ad['accuracy']:.1%} | {shown} | 100% | {ad['flips_fixed']} | "
            f"{ad['flips_introduced']} | {ad['bytes'] / 1e6:.2f} | 100% | | | |"
        )
        for method, m in s["merged"].items():
            share = "n/a" if not rec or m["recovery"] is None else f"{m['recovery'] / rec:.0%}"
            g = m.get("grid") or {}
            kept = f"{g.get('update_kept')} / {g.get('output_update_kept')}" if g else ""
            moved = f"{g['changed_fraction']:.2%}" if g else ""
            over = f"{g['delta_over_half_step_fraction']:.2%}" if g else ""
            big = f"{g['delta_steps_max']:.2f}" if g else ""
            same = f"{m['same_text_as_adapter']:.0%}" if "same_text_as_adapter" in m else ""
            recov = "n/a" if m["recovery"] is None else f"{m['recovery']:.0%}"
            print(
                f"{name} | merged ({method}) | {m['accuracy']:.1%} | {recov} | {share} | {m['flips_fixed']} | "
                f"{m['flips_introduced']} | {m['bytes'] / 1e6:.2f} | {same} | {moved} | {over} | {big} | {kept}"
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", help="name of this setting in the results (e.g. w2ch)")
    ap.add_argument("--from", dest="from_run", help="the evaluation diagnose run")
    ap.add_argument("--out", help="the repair run directory (its adapter is reused)")
    ap.add_argument("--methods", nargs="+", default=["grid", "gptq", "requantize"])
    ap.add_argument("--repair-limit", type=int, default=400)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--learning-rate", type=float, default=2e-3)
    ap.add_argument("--max-examples", type=int, default=332)
    ap.add_argument("--control", action="store_true", help="untargeted SFT (a base with no flips has no repair rows)")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--table", action="store_true", help="only print the table of --json")
    args = ap.parse_args()
    data = json.loads(args.json.read_text()) if args.json.exists() else {"settings": {}, "meta": {}}
    if not args.table:
        if not (args.setting and args.from_run and args.out):
            ap.error("--setting, --from and --out are required (or --table)")
        row = run_setting(args)
        kept = data["settings"].get(args.setting, {}).get("merged", {})  # methods not re-run this time stay
        row["merged"] = {**kept, **row["merged"]}
        data["settings"][args.setting] = row
        data["meta"][args.setting] = run_meta()
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1))
    table(data)


if __name__ == "__main__":
    main()
