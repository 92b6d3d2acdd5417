"""GRPO with the checker's process reward against outcome-only GRPO and SFT, on the demo setting.

    python bench/grpo.py [--run runs/demo] [--repair runs/demo-repair] [--variants sft,grpo-process,grpo-outcome]
                         [--grpo-lr 1e-4] [--max-examples N] [--out bench/results/grpo_cpu.json]

`make demo` writes the two runs this reads: the evaluation diagnose (`--run`, 200 problems) and a
repair whose repair-split diagnose (400 problems) every variant copies, so each costs only its
training and its re-measure. Every variant trains LoRA on the same flipped problems (the demo's
SFT selection): SFT on the reference model's whole solutions with the demo's settings, GRPO on the
same prompts with `num_generations` sampled solutions each, rewarded by `repair/reward.py`.
Compute differs by method: the table gives each one's training seconds, optimizer steps and the
solutions it trained on (SFT: rows x epochs; GRPO: sampled completions). The reward columns are
the batch means of the first and last quarter of GRPO's steps.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.repair.pipeline import RepairConfig, run_repair  # noqa: E402
from silverbullet.repair.train import RepairTrainConfig  # noqa: E402

# SFT variants (issue #19): the LoRA flavour, or the SFT data (`own`: the quantized model's own
# sampled right solutions of the flipped problems, the reference's where it found none)
SFT_VARIANTS = {"sft": {}, "sft-rslora": {"use_rslora": True}, "sft-dora": {"use_dora": True}, "sft-own": {},
                "sft-dora-own": {"use_dora": True}, "sft-dft": {"sft_loss": "dft"}}  # fmt: skip


def sft_data(name: str) -> str:
    """The repair's `sft_data` for a variant: `own` for sft-own and sft-dora-own, else the default."""
    return "own" if name.endswith("-own") else "flipped-full"


def variant_config(name: str, demo_train: dict, args, seed: int = 0) -> RepairTrainConfig:
    if name in SFT_VARIANTS:  # the settings of the repair run read (--repair): the demo's, or the full recipe's
        return RepairTrainConfig(method="sft", epochs=demo_train["epochs"], learning_rate=demo_train["learning_rate"],
                                 seed=seed, **SFT_VARIANTS[name])  # fmt: skip
    reward = name.split("-", 1)[1]
    return RepairTrainConfig(method="grpo", reward=reward, grpo_learning_rate=args.grpo_lr, seed=seed,
                             grpo_epochs=args.grpo_epochs, num_generations=args.num_generations,
                             batch_size=args.train_batch_size or demo_train["batch_size"])  # fmt: skip


def reward_trend(log: Path, reward: str) -> tuple[float | None, float | None]:
    key = f"rewards/{reward}_reward/mean"
    rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.exists() else []
    vals = [r[key] for r in rows if key in r]
    if not vals:
        return None, None
    q = max(1, len(vals) // 4)
    return round(sum(vals[:q]) / q, 4), round(sum(vals[-q:]) / q, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--repair", default="runs/demo-repair")
    ap.add_argument("--variants", default="sft,grpo-process,grpo-outcome")
    ap.add_argument("--grpo-lr", type=float, default=1e-4)
    ap.add_argument("--grpo-epochs", type=float, default=1.0)
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-examples", type=int, default=None, help="problems per variant (default: the demo's)")
    ap.add_argument("--train-batch-size", type=int, default=None, help="GRPO's (default: the repair run's)")
    ap.add_argument("--seeds", default="0", help="training seeds, comma-separated; each variant runs once per seed")
    ap.add_argument("--eval-batch-size", type=int, default=64, help="re-measure batch (a GPU takes 256)")
    ap.add_argument("--budget-s", type=float, default=None, help="start no new variant after this many seconds")
    ap.add_argument("--out", default="bench/results/grpo_cpu.json")
    ap.add_argument("--runs-root", default="runs/bench-grpo", help="where each run goes: ROOT/<variant>-s<seed>")
    ap.add_argument("--own-samples", type=int, default=8, help="sft-own: solutions sampled per problem at most")
    ap.add_argument("--own-temperature", type=float, default=0.7, help="sft-own: sampling temperature")
    args = ap.parse_args()
    deadline = time.time() + args.budget_s if args.budget_s else None
    meta = run_meta()  # at the start: the commit the code was imported from, the load before the runs
    import torch

    hardware = {"device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
                "torch": torch.__version__}  # fmt: skip
    demo = json.loads((Path(args.repair) / "repair_summary.json").read_text())
    repair_limit = len((Path(args.repair) / "repair-split" / "problems.jsonl").read_text().splitlines())
    rows = []
    not_run = []
    runs = [(name, int(seed)) for seed in args.seeds.split(",") for name in args.variants.split(",")]
    for name, seed in runs:
        if deadline and time.time() > deadline:
            not_run.append(f"{name} seed {seed}: out of the time budget")
            continue
        out = Path(args.runs_root) / f"{name}-s{seed}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        shutil.copytree(Path(args.repair) / "repair-split", out / "repair-split")
        train = variant_config(name, demo["train"]["config"], args, seed)
        t0 = time.time()
        s = run_repair(
            RepairConfig(from_run=args.run, out=str(out), repair_limit=repair_limit, batch_size=args.eval_batch_size,
                         max_examples=args.max_examples or demo["examples"], progress=False, train=train,
                         sft_data=sft_data(name), own_samples=args.own_samples,
                         own_temperature=args.own_temperature),
            log=lambda m: None,
        )  # fmt: skip
        info = s["train"]
        done = info.get("grpo") or info.get("sft") or {}
        first, last = reward_trend(out / "train_log.jsonl", train.reward) if train.method == "grpo" else (None, None)
        row = {
            "variant": name,
            "seed": seed,
            "train_batch_size": train.batch_size,
            "accuracy": s["accuracy"],
            "recovery": s["recovery"],
            "flips_fixed": s["flips_fixed"],
            "flips_introduced": s["flips_introduced"],
            "examples": s["examples"],
            "train_seconds": info["train_seconds"],
            "steps": done.get("steps"),
            "solutions_trained_on": done.get("completions") or round(s["examples"] * train.epochs),
            "reward_first_quarter": first,
            "reward_last_quarter": last,
            "learning_rate": train.grpo_learning_rate if train.method == "grpo" else train.learning_rate,
            "lora": {"use_rslora": train.use_rslora, "use_dora": train.use_dora},
            "sft_loss": train.sft_loss,
            "sets": s.get("sets"),
            "examples_by_error_type": s.get("examples_by_error_type"),
            "remeasure_seconds": s.get("timings", {}).get("remeasure_seconds"),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "seconds": round(time.time() - t0, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
        Path(args.out).write_text(json.dumps({"meta": meta, "hardware_device": hardware, "n": s["n"],
                                              "rows": rows, "not_run": not_run}, indent=1) + "\n")  # fmt: skip
    if not_run:
        Path(args.out).write_text(json.dumps({**json.loads(Path(args.out).read_text()), "not_run": not_run}, indent=1))
    print(f"\n{'variant':<14} {'seed':>4} {'repaired':>8} {'recovery':>8} {'fixed':>5} {'intro':>5} {'train s':>8} "
          f"{'steps':>5} {'solutions':>9} {'reward':>13}")  # fmt: skip
    for r in rows:
        a, b = r["reward_first_quarter"], r["reward_last_quarter"]
        rew = "-" if a is None else f"{a:.2f}->{b:.2f}"
        rec = "n/a" if r["recovery"] is None else f"{r['recovery']:.1%}"
        print(f"{r['variant']:<14} {r['seed']:>4} {r['accuracy']['repaired']:>8.3f} {rec:>8} {r['flips_fixed']:>5} "
              f"{r['flips_introduced']:>5} {r['train_seconds']:>8} {r['steps']:>5} {r['solutions_trained_on']:>9} "
              f"{rew:>13}")  # fmt: skip


if __name__ == "__main__":
    main()
