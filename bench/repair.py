"""Repair benchmark: recovery of the demo quantized reference model by SFT, DPO, SFT+DPO, the
untargeted full-solution control, a recovery curve over the example budget, and a second setting.

    python bench/repair.py [--eval-limit 1000] [--repair-limit 1500] [--only sft,dpo,...]

Runs share one evaluation diagnose (runs/bench-eval) and one repair-split diagnose, so each variant
costs only its training and re-measurement. Writes bench/results/repair.json after every variant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _meta import run_meta  # noqa: E402

from silverbullet.diagnose import DiagnoseConfig, run_diagnose  # noqa: E402
from silverbullet.repair.pipeline import RepairConfig, run_repair  # noqa: E402
from silverbullet.repair.train import RepairTrainConfig  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-limit", type=int, default=1000)
    ap.add_argument("--repair-limit", type=int, default=1500)
    ap.add_argument("--only", default="sft,control,dpo,sft+dpo,curve,second")
    ap.add_argument("--out", default="bench/results/repair.json")
    args = ap.parse_args()
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {}
    result["meta"] = run_meta()
    result.setdefault("variants", {})
    variants = []
    only = args.only.split(",")
    for m in ("sft", "control", "dpo", "sft+dpo"):
        if m in only:
            variants.append((m, None, 332, m == "control"))
    if "curve" in only:
        variants += [(f"sft-{n}", None, n, False) for n in (25, 50, 100, 200)]
    if "second" in only:
        variants.append(("sft-rtn-w2g128", "runs/_models/reference-model-rtn-w2g128", 332, False))
    for name, quantized, n, control in variants:
        eval_dir = Path("runs/bench-eval" + ("" if quantized is None else "-" + Path(quantized).name))
        run_diagnose(DiagnoseConfig(quantized=quantized, limit=args.eval_limit, out=str(eval_dir), progress=False))
        rep_dir = Path("runs/bench-repair") / name
        shared = Path("runs/bench-repair") / (
            "repair-split" + ("" if quantized is None else "-" + Path(quantized).name)
        )
        if shared.exists() and not (rep_dir / "repair-split").exists():
            rep_dir.mkdir(parents=True, exist_ok=True)
            shutil.copytree(shared, rep_dir / "repair-split")
        method = "sft" if name.startswith("sft-") or control else name
        s = run_repair(
            RepairConfig(
                quantized=quantized,
                from_run=str(eval_dir),
                out=str(rep_dir),
                repair_limit=args.repair_limit,
                max_examples=n,
                control=control,
                progress=False,
                train=RepairTrainConfig(method=method),
            ),
            log=lambda m: print(m, flush=True),
        )
        if not shared.exists():
            shutil.copytree(rep_dir / "repair-split", shared)
        result["variants"][name] = {
            k: s[k]
            for k in (
                "accuracy",
                "recovery",
                "flips_fixed",
                "flips_introduced",
                "flips_introduced_rate",
                "examples",
                "examples_by_error_type",
                "adapter_bytes",
                "base_bytes",
                "timings",
                "method",
                "n",
            )
        }
        result["variants"][name]["quantized"] = quantized or "demo (rtn-w2ch)"
        out.write_text(json.dumps(result, indent=1))
        print(
            f"{name:<16} recovery={s['recovery']} acc={s['accuracy']} introduced={s['flips_introduced_rate']} "
            f"train={s['timings']['train_seconds']}s",
            flush=True,
        )
    print(
        f"\n{'variant':<16} {'examples':>8} {'quantized':>9} {'repaired':>9} {'recovery':>9} {'introduced':>10} "
        f"{'train s':>8}"
    )
    for name, v in result["variants"].items():
        print(
            f"{name:<16} {v['examples']:>8} {v['accuracy']['quantized']:>9.3f} {v['accuracy']['repaired']:>9.3f} "
            f"{v['recovery'] if v['recovery'] is not None else 'n/a':>9} {v['flips_introduced_rate']:>10.3f} "
            f"{v['timings']['train_seconds']:>8}"
        )


if __name__ == "__main__":
    main()
