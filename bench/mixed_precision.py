"""Mixed precision against LoRA on the demo setting: which modules to keep at 8 bits, chosen by
`silverbullet sensitivity`, by naive rules, or none (LoRA repair instead), at equal bit budgets.

    python bench/mixed_precision.py --run runs/demo [--sensitivity runs/demo/sensitivity] \
        [--budgets 2.25 2.5 3] [--lora runs/demo-repair] [--lora-on-recipe auto|BUDGET] \
        [--out bench/results/mixed_precision.json]
    python bench/mixed_precision.py --plot-only   # redraw the PNG from the JSON, no measuring
    python bench/mixed_precision.py --run R --lora L --extend   # add LoRA rows to the JSON's measured ones

For each average bits-per-weight budget (over the quantized linear weights; scales not counted) it
keeps modules at 8 bits in three orders until the budget is spent:
- `sensitivity`: flips restored per byte (sensitivity.json's ranking);
- `first+last blocks`: the first and last decoder blocks, then inward;
- `weight error`: the largest squared reconstruction error of the 2-bit weights per byte.
Each recipe is quantized with llm-compressor (`silverbullet quantize --recipe`) and measured greedily
on the run's evaluation problems; the reference model's generations come from the run. With `--lora`
the run's repair (base + adapter) is a row of its own. With `--lora-on-recipe` the sensitivity recipe at
that budget (`auto`: the smallest budget whose recipe reaches 80% recovery, else the largest) is
diagnosed and repaired as any quantized checkpoint is (`run_diagnose` on the same evaluation problems,
`run_repair` with the package defaults and `--repair-limit` problems of the repair split), and the
repaired checkpoint is a row of its own. Beside the JSON it draws accuracy against bits per
weight (`--png`, default the JSON's path with .png): a line per rule, the quantized and reference models
as horizontal lines, LoRA as a point.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.generation.base import GenerationConfig  # noqa: E402
from silverbullet.generation.hf import HFGenerator  # noqa: E402
from silverbullet.measure import measure  # noqa: E402
from silverbullet.quantize import QuantizeConfig, quantize, write_recipe  # noqa: E402
from silverbullet.records import Problem  # noqa: E402
from silverbullet.report.plots import precision_curve  # noqa: E402
from silverbullet.run.jsonl import read_jsonl_rows  # noqa: E402
from silverbullet.sensitivity import linear_modules, module_block  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def orders(mods_q: dict, mods_r: dict, ranking: list[str]) -> dict[str, list[str]]:
    """Module orders to keep by, per rule."""
    blocks = sorted({module_block(n) for n in mods_q if module_block(n) is not None})
    inward = [b for pair in zip(blocks, reversed(blocks)) for b in pair]
    seen: list[int] = []
    for b in inward:
        if b not in seen:
            seen.append(b)
    first_last = [n for b in seen for n in mods_q if module_block(n) == b]
    err = {
        n: float(((mods_q[n].weight.float() - mods_r[n].weight.float()) ** 2).sum()) / mods_q[n].weight.numel()
        for n in mods_q
    }
    return {
        "sensitivity": [n for n in ranking if n in mods_q] + [n for n in mods_q if n not in ranking],
        "first+last blocks": first_last,
        "weight error": sorted(mods_q, key=lambda n: -err[n]),
    }


def within(order: list[str], sizes: dict[str, int], low: int, high: int, budget: float) -> list[str]:
    total = sum(sizes.values())
    kept, bits = [], low * total
    for n in order:
        extra = (high - low) * sizes[n]
        if (bits + extra) / total > budget + 1e-9:
            continue  # a smaller module further down may still fit
        kept.append(n)
        bits += extra
    return kept


def pick_recipe(rows: list[dict], choice: str) -> dict:
    """The sensitivity row LoRA goes on top of: a named budget, or (`auto`) the smallest budget whose
    recipe reaches 80% recovery (the issue's target), else the largest budget measured."""
    sens = sorted((r for r in rows if r["rule"] == "sensitivity"), key=lambda r: r["budget_bits_per_weight"])
    if choice != "auto":
        return next(r for r in sens if abs(r["budget_bits_per_weight"] - float(choice)) < 1e-9)
    return next((r for r in sens if (r["recovery"] or 0) >= 0.8), sens[-1])


def repair_costs(rep_dir: Path) -> dict:
    """Bytes (base + adapter) and re-measure speed of a repair run, as the budget rows report them.
    The re-measure ran in its own process, maybe beside other jobs: its tokens/s is not a controlled
    comparison with the budget rows' generation."""
    s = json.loads((rep_dir / "repair_summary.json").read_text())
    toks = sum(r.get("n_tokens") or 0 for r in read_jsonl_rows(rep_dir / "generations" / "repaired.jsonl"))
    secs = s.get("timings", {}).get("remeasure_seconds") or 0
    return {
        "bytes_on_disk": (s.get("base_bytes") or 0) + (s.get("adapter_bytes") or 0),
        "adapter_bytes": s.get("adapter_bytes"),
        "generation_seconds": secs,
        "tokens_per_second": round(toks / secs, 1) if secs else None,
    }


def lora_on_recipe(args, rows: list[dict], cfg: dict, problems: list, score) -> dict:
    """Diagnose and repair the recipe's checkpoint as a user would any quantized model, on the same
    evaluation problems; the row scores its repaired generations like every other row."""
    from silverbullet.diagnose import DiagnoseConfig, run_diagnose
    from silverbullet.repair.pipeline import RepairConfig, run_repair

    base = pick_recipe(rows, args.lora_on_recipe)
    tag = Path(base["checkpoint"]).name
    eval_dir, rep_dir = Path(f"runs/mp-{tag}-eval"), Path(f"runs/mp-{tag}-repair")
    common = dict(reference=cfg["reference"], quantized=base["checkpoint"], batch_size=args.batch_size,
                  progress=False)  # fmt: skip
    t0 = time.time()
    run_diagnose(DiagnoseConfig(benchmark=cfg["benchmark"], split=cfg["split"], limit=len(problems),
                                seed=cfg.get("seed", 0), out=str(eval_dir), **common))  # fmt: skip
    s = run_repair(
        RepairConfig(from_run=str(eval_dir), out=str(rep_dir), eval_limit=len(problems),
                     repair_limit=args.repair_limit, **common),
        log=lambda m: print(m, flush=True),
    )  # fmt: skip
    rep = {r["problem_id"]: r["correct"] for r in read_jsonl_rows(rep_dir / "generations" / "repaired.jsonl")}
    if set(rep) != {p.id for p in problems}:
        raise SystemExit(f"{rep_dir}: the repaired generations are not the run's evaluation problems")
    return {
        "rule": f"LoRA repair on the sensitivity recipe ({base['budget_bits_per_weight']} bits + adapter)",
        "budget_bits_per_weight": None,
        "bits_per_weight": base["bits_per_weight"],
        "on_recipe": base["checkpoint"],
        "recipe_accuracy": base["accuracy"],
        **score(rep),
        **repair_costs(rep_dir),
        "examples": s.get("examples"),
        "train_seconds": s.get("timings", {}).get("train_seconds"),
        "seconds": round(time.time() - t0, 1),
    }


def write_plot(json_path: Path, png_path: Path | None = None) -> Path:
    """Draw a result JSON as its curve; separate from measuring so a committed result can be redrawn
    (a plot change, a review) without re-quantizing and re-measuring every recipe."""
    png = Path(png_path) if png_path else Path(json_path).with_suffix(".png")
    png.write_bytes(precision_curve(json.loads(Path(json_path).read_text())))
    return png


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/demo")
    ap.add_argument("--sensitivity", default=None)
    ap.add_argument("--budgets", type=float, nargs="+", default=[2.25, 2.5, 3.0])
    ap.add_argument("--lora", default=None, help="A repair run on the same evaluation problems.")
    ap.add_argument("--lora-on-recipe", default=None, help="auto | a budget: LoRA repair on that recipe too.")
    ap.add_argument("--repair-limit", type=int, default=2000, help="repair-split problems for --lora-on-recipe")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "bench/results/mixed_precision.json"))
    ap.add_argument("--png", default=None, help="Where the curve goes (default: --out with .png).")
    ap.add_argument("--plot-only", action="store_true", help="Redraw the curve from --out; measure nothing.")
    ap.add_argument("--extend", action="store_true", help="Keep --out's budget rows; (re)make only the LoRA rows.")
    args = ap.parse_args()
    if args.plot_only:
        print(write_plot(Path(args.out), args.png))
        return
    t0 = time.time()
    run = Path(args.run)
    sens = json.loads((Path(args.sensitivity or run / "sensitivity") / "sensitivity.json").read_text())
    cfg = json.loads((run / "config.json").read_text())
    reference, quantized = cfg["reference"], cfg["quantized"]
    problems = [Problem(**p) for p in read_jsonl_rows(run / "problems.jsonl")]
    ref = {r["problem_id"]: r["correct"] for r in read_jsonl_rows(run / "generations" / "reference.jsonl")}
    q = {r["problem_id"]: r["correct"] for r in read_jsonl_rows(run / "generations" / "quantized.jsonl")}

    from silverbullet.generation.loading import load_causal_lm

    qm, _ = load_causal_lm(quantized, device="cpu", dtype="float32", for_training=True)
    rm, _ = load_causal_lm(reference, device="cpu", dtype="float32")
    mods_q, mods_r = linear_modules(qm), linear_modules(rm)
    sizes = {n: m.weight.numel() for n, m in mods_q.items()}
    low, high = sens["bits"]["quantized"], sens["bits"]["kept"]
    rules = orders(mods_q, mods_r, [m["name"] for m in sens["modules"]])
    del qm, rm

    def score(correct: dict[str, bool]) -> dict:
        n = len(problems)
        acc = {k: sum(d[p.id] for p in problems) / n for k, d in (("ref", ref), ("q", q), ("x", correct))}
        gap = acc["ref"] - acc["q"]
        flipped = [p.id for p in problems if ref[p.id] and not q[p.id]]
        return {
            "accuracy": round(acc["x"], 4),
            "recovery": round((acc["x"] - acc["q"]) / gap, 4) if gap > 0 else None,
            "flips_restored": sum(correct[i] for i in flipped),
            "flips": len(flipped),
            "flips_introduced": sum(q[p.id] and not correct[p.id] for p in problems),
        }

    rows = []
    earlier = None
    if args.extend:  # the measured rows of --out; only the LoRA rows asked for are (re)made
        earlier = json.loads(Path(args.out).read_text())
        drop = ("LoRA repair (base",) + (("LoRA repair on the sensitivity recipe",) if args.lora_on_recipe else ())
        rows = [r for r in earlier["rows"] if not r["rule"].startswith(drop)]
        for r in rows:  # an older on-recipe row: its repair's bytes (a re-run would overwrite its timings)
            if r.get("on_recipe") and "bytes_on_disk" not in r:
                rep_dir = Path(f"runs/mp-{Path(r['on_recipe']).name}-repair")
                s = json.loads((rep_dir / "repair_summary.json").read_text())
                r["bytes_on_disk"] = (s.get("base_bytes") or 0) + (s.get("adapter_bytes") or 0)
                r["adapter_bytes"] = s.get("adapter_bytes")
    work = Path("runs/_models/mixed")
    for budget in [] if args.extend else args.budgets:
        for rule, order in rules.items():
            keep = within(order, sizes, low, high, budget)
            bpw = (low * sum(sizes.values()) + (high - low) * sum(sizes[n] for n in keep)) / sum(sizes.values())
            tag = f"{rule.replace(' ', '').replace('+', '-')}-{budget}"
            # exactly the modules the budget pays for (a vLLM-servable recipe also keeps fused siblings)
            recipe = write_recipe(work / f"{tag}.yaml", quantized, keep, high, servable=False)
            path = quantize(
                QuantizeConfig(model=reference, recipe=str(recipe), out=str(work / tag)), log=lambda m: None
            )
            t1 = time.time()
            gen = HFGenerator(str(path), tag=tag, device="cpu")
            outs = measure(gen, problems, GenerationConfig(batch_size=args.batch_size))
            row = {
                "rule": rule,
                "budget_bits_per_weight": budget,
                "bits_per_weight": round(bpw, 4),
                "modules_kept": len(keep),
                "bytes_on_disk": sum(f.stat().st_size for f in Path(path).glob("*.safetensors")),
                **score({g.problem_id: g.correct for g in outs}),
                "generation_seconds": round(time.time() - t1, 1),
                "tokens_per_second": round(sum(g.n_tokens for g in outs) / max(1e-9, time.time() - t1), 1),
            }
            row["checkpoint"] = str(path)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.lora:
        rep = {
            r["problem_id"]: r["correct"] for r in read_jsonl_rows(Path(args.lora) / "generations" / "repaired.jsonl")
        }
        if set(rep) != {p.id for p in problems}:
            raise SystemExit(f"--lora {args.lora}: its generations/repaired.jsonl does not hold the run's "
                             f"{len(problems)} evaluation problems")  # fmt: skip
        rows.append({"rule": "LoRA repair (base 2-bit + adapter)", "budget_bits_per_weight": None,
                     "bits_per_weight": low, **score(rep), **repair_costs(Path(args.lora))})  # fmt: skip
    if args.lora_on_recipe:
        rows.append(lora_on_recipe(args, rows, cfg, problems, score))
    print(f"\n{'rule':<36} {'budget':>6} {'bpw':>6} {'acc':>6} {'recov':>6} {'restored':>9} {'intro':>5}")
    for r in rows:
        rec = "n/a" if r["recovery"] is None else f"{r['recovery']:.0%}"
        print(
            f"{r['rule']:<36} {r['budget_bits_per_weight'] or '-':>6} {r['bits_per_weight']:>6} "
            f"{r['accuracy']:>6.1%} {rec:>6} {r['flips_restored']:>4}/{r['flips']:<4} {r['flips_introduced']:>5}"
        )
    out = {
        "meta": run_meta(),
        "run": str(run),
        "n": len(problems),
        "accuracy": {
            t: round(sum(d[p.id] for p in problems) / len(problems), 4)
            for t, d in (("reference", ref), ("quantized", q))
        },
        "sensitivity": {"flips": sens["flips"], "cost": sens["cost"], "recipe": sens["recipe"]},
        "rows": rows,
        "seconds": round(time.time() - t0, 1) + (earlier["seconds"] if earlier else 0),
        "earlier_meta": ([earlier["meta"]] + earlier.get("earlier_meta", [])) if earlier else [],
        "notes": "bits per weight over the quantized linear weights only (scales and the tied embedding not counted)",
    }
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(write_plot(Path(args.out), args.png))


if __name__ == "__main__":
    main()
