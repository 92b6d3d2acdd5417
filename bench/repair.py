"""Repair benchmark on the evaluation split: recovery of the demo quantized reference model by each
SFT data choice (whole solutions of flipped problems, the paper's first-fault continuations, the
untargeted control), DPO, SFT then DPO, a recovery curve over the example budget, a second
quantization setting.

    python bench/repair.py [--eval-limit 1000] [--repair-limit 2000] [--only a,b] [--shard k/n]
    python bench/repair.py --table                # merge shard files, print the table
    python bench/repair.py --only "sft (flipped-full),sft (flipped-full) seed 1,..."   # seed spread

Every variant uses the package defaults (chosen on held-out repair-split problems by
bench/repair_sweep.py, never on this split) and the same example budget (332 unless the curve says
otherwise). Variants of one quantized model share one evaluation diagnose and one repair-split
diagnose, so each costs its training and re-measurement. Writes bench/results/repair[.shardK].json
after every variant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _meta import run_meta  # noqa: E402

from silverbullet.diagnose import DEFAULT_REFERENCE, DEMO_QUANT, DiagnoseConfig, run_diagnose  # noqa: E402
from silverbullet.quantize import QuantizeConfig, ensure_quantized  # noqa: E402
from silverbullet.repair.pipeline import RepairConfig, run_repair  # noqa: E402
from silverbullet.repair.train import RepairTrainConfig  # noqa: E402

# The two quantized checkpoints, by path; `prepare` builds each (again if the reference changed).
CHECKPOINTS = {
    str(c.out_dir()): c
    for c in (
        QuantizeConfig(model=DEFAULT_REFERENCE, **DEMO_QUANT),  # runs/_models/reference-model-rtn-w2ch
        QuantizeConfig(model=DEFAULT_REFERENCE, **{**DEMO_QUANT, "group_size": 128}),  # ...-rtn-w2g128
    )
}
DEMO, SECOND = CHECKPOINTS
# name -> (quantized model, RepairConfig overrides, RepairTrainConfig overrides)
VARIANTS: dict[str, tuple[str, dict, dict]] = {
    "sft (flipped-full)": (DEMO, {}, {}),
    "sft (step, paper-style)": (DEMO, {"sft_data": "step"}, {}),
    "control (full, untargeted)": (DEMO, {"control": True}, {}),
    "dpo": (DEMO, {}, {"method": "dpo", "epochs": 6}),  # DPO's own best on the tuning set (dpo-ep6)
    "sft+dpo": (DEMO, {}, {"method": "sft+dpo", "dpo_epochs": 3, "dpo_learning_rate": 1e-4}),
    "curve-25": (DEMO, {"max_examples": 25}, {}),
    "curve-50": (DEMO, {"max_examples": 50}, {}),
    "curve-100": (DEMO, {"max_examples": 100}, {}),
    "curve-200": (DEMO, {"max_examples": 200}, {}),
    "second: rtn-w2g128": (SECOND, {}, {}),
    "second: rtn-w2g128 control": (SECOND, {"control": True}, {}),
}
# Training-seed spread of the default (run with --only; not part of a plain run).
SEEDS = {f"sft (flipped-full) seed {k}": (DEMO, {}, {"seed": k}) for k in range(1, 6)}
# 25% anchors (the quantized model's own least-confident correct solutions): the lowest flips
# introduced with the checker fallback on the tuning set (0.6% over 3 seeds, recovery 87.6%).
SEEDS.update({f"sft anchors 0.25 seed {k}": (DEMO, {"anchor": 0.25}, {"seed": k}) for k in range(3)})
MAIN = list(VARIANTS)
VARIANTS.update(SEEDS)
KEYS = (
    "accuracy",
    "recovery",
    "flips_fixed",
    "flips_introduced",
    "flips_introduced_rate",
    "flips_introduced_reference_solves",
    "checked",
    "examples",
    "examples_by_error_type",
    "sets",
    "adapter_bytes",
    "base_bytes",
    "timings",
    "method",
    "sft_data",
    "n",
)


def parse_only(text: str) -> list[str]:
    """Comma-separated variant names, where names may hold commas themselves ("sft (step,
    paper-style)"): pieces are joined until they form a known name."""
    names, piece = [], ""
    for part in text.split(","):
        piece = f"{piece},{part}" if piece else part.strip()
        if piece in VARIANTS:
            names.append(piece)
            piece = ""
    if piece:
        sys.exit(f"unknown variant {piece!r}; known: {'; '.join(VARIANTS)}")
    return names


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-")


def _dirs(quantized: str) -> tuple[Path, Path]:
    tag = "" if quantized == DEMO else "-" + Path(quantized).name
    return Path("runs/bench-eval" + tag), Path("runs/bench-repair/repair-split" + tag)


def prepare(quantized: str, args) -> None:
    """The shared diagnoses of one quantized model: evaluation split and repair split."""
    ensure_quantized(CHECKPOINTS[quantized])
    eval_dir, shared = _dirs(quantized)
    common = dict(quantized=quantized, batch_size=args.batch_size, progress=False)
    run_diagnose(DiagnoseConfig(limit=args.eval_limit, out=str(eval_dir), **common))
    run_diagnose(
        DiagnoseConfig(split="repair", limit=args.repair_limit, out=str(shared), confirm=False, margins=True, **common)
    )


def repair_with(
    quantized: str, eval_run: Path, shared_split: Path, rep_dir: Path, args, rep_over: dict, train_over: dict
) -> dict:
    """One `run_repair` on a copy of a shared repair-split diagnosis (so it costs only training and
    re-measuring), with RepairConfig / RepairTrainConfig overrides. Also used by repair_sweep.py."""
    if not (rep_dir / "repair-split").exists():
        rep_dir.mkdir(parents=True, exist_ok=True)
        shutil.copytree(shared_split, rep_dir / "repair-split")
    return run_repair(
        RepairConfig(
            quantized=quantized,
            from_run=str(eval_run),
            out=str(rep_dir),
            repair_limit=args.repair_limit,
            batch_size=args.batch_size,
            progress=False,
            train=RepairTrainConfig(**train_over),
            **rep_over,
        ),
        log=lambda m: print(m, flush=True),
    )


def run_variant(name: str, args) -> dict:
    quantized, rep_over, train_over = VARIANTS[name]
    eval_dir, shared = _dirs(quantized)
    rep_dir = Path("runs/bench-repair") / _slug(name)
    s = repair_with(quantized, eval_dir, shared, rep_dir, args, rep_over, train_over)
    if args.keep_adapters:
        dest = Path(args.keep_adapters) / _slug(name)
        shutil.copytree(rep_dir / "adapter", dest, dirs_exist_ok=True)
    row = {k: s[k] for k in KEYS if k in s}
    row["quantized"] = quantized
    row["overrides"] = {"repair": rep_over, "train": train_over}
    row["train_config"] = s["train"]["config"]
    return row


def table(result: dict) -> None:
    print(
        f"\n{'variant':<28} {'examples':>8} {'reference':>9} {'quantized':>9} {'repaired':>9} {'recovery':>9} "
        f"{'introduced':>10} {'+fallback':>9} {'recovery':>9} {'introduced':>10} {'train s':>8}"
    )
    pct = lambda x: "n/a" if x is None else f"{x:.1%}"  # noqa: E731
    for name, v in result["variants"].items():
        a, c = v["accuracy"], v.get("checked")
        fb = (
            f"{c['accuracy']:>9.3f} {pct(c['recovery']):>9} {c['flips_introduced_rate']:>10.3f}"
            if c
            else f"{'-':>9} {'-':>9} {'-':>10}"
        )
        print(
            f"{name:<28} {v['examples']:>8} {a['reference']:>9.3f} {a['quantized']:>9.3f} {a['repaired']:>9.3f} "
            f"{pct(v['recovery']):>9} {v['flips_introduced_rate']:>10.3f} {fb} {v['timings']['train_seconds']:>8}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--eval-limit", type=int, default=1000)
    ap.add_argument("--repair-limit", type=int, default=2000)
    ap.add_argument("--only", default=None, help="comma-separated variant names")
    ap.add_argument("--shard", default="0/1", help="k/n: every n-th variant starting at k")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default="bench/results/repair.json")
    ap.add_argument("--keep-adapters", default=None, help="copy each variant's adapter under this folder")
    ap.add_argument("--table", action="store_true", help="merge shard files into --out and print the table")
    args = ap.parse_args()
    out = Path(args.out)
    if args.table:
        merged: dict = {"meta": [], "variants": {}}
        for f in sorted(out.parent.glob(out.stem + ".shard*.json")):
            part = json.loads(f.read_text())
            merged["meta"].append(part["meta"])
            merged["variants"].update(part["variants"])
        order = [n for n in VARIANTS if n in merged["variants"]]
        merged["variants"] = {n: merged["variants"][n] for n in order}
        out.write_text(json.dumps(merged, indent=1))
        table(merged)
        return
    k, n = (int(x) for x in args.shard.split("/"))
    selected = parse_only(args.only) if args.only else MAIN
    names = selected[k::n]
    # Model i's shared diagnoses are prepared by shard i % n; a shard waits for those its variants need.
    models = sorted({VARIANTS[x][0] for x in selected})
    flags = {q: Path("runs/bench-repair") / f".prepared-{Path(q).name}" for q in models}
    for i, q in enumerate(models):
        if i % n == k:
            prepare(q, args)
            flags[q].parent.mkdir(parents=True, exist_ok=True)
            flags[q].touch()
    for q in {VARIANTS[x][0] for x in names}:
        while not flags[q].exists():
            time.sleep(5)
    if n > 1:
        out = out.with_suffix(f".shard{k}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"meta": run_meta(), "variants": {}}
    for name in names:
        t0 = time.time()
        result["variants"][name] = run_variant(name, args)
        result["variants"][name]["wall_seconds"] = round(time.time() - t0, 1)
        out.write_text(json.dumps(result, indent=1))
        v = result["variants"][name]
        print(f"{name:<28} recovery={v['recovery']} acc={v['accuracy']}", flush=True)
    table(result)


if __name__ == "__main__":
    main()
