"""A rule tried beside the checker fallback and dropped: where the repaired and the quantized model's
answers differ and neither solution has a refuted step, serve the more confident one (teacher-forced
min / mean token margin, mean log-prob, each under its own model). Prints introduced and fixed flips
per measure and adds them to bench/results/fallback_rescore.json under `confidence_rule`.

    python bench/fallback_confidence.py --split runs/gpu/tune-split --run runs/gpu/r6-default-seed0 \
        --quantized runs/_models/reference-model-rtn-w2ch   # the run's adapter/ must be present
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _meta import run_meta  # noqa: E402

from silverbullet.generation.hf import HFGenerator  # noqa: E402
from silverbullet.prompting import build_prompt  # noqa: E402
from silverbullet.repair.fallback import failed_step, use_base  # noqa: E402
from silverbullet.run.jsonl import read_jsonl_rows  # noqa: E402

MEASURES = ("min_margin", "mean_margin", "mean_logprob")


def confidence(gen: HFGenerator, pairs: list[tuple[str, str]]) -> list[tuple[float, float, float]]:
    outs = gen.score_batch(pairs, batch_size=32)
    return [
        (min(o.margins, default=0.0), statistics.fmean(o.margins or [0.0]), statistics.fmean(o.logprobs or [0.0]))
        for o in outs
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", required=True, type=Path)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--quantized", required=True)
    ap.add_argument("--out", default="bench/results/fallback_rescore.json", type=Path)
    args = ap.parse_args()
    questions = {p["id"]: p["question"] for p in read_jsonl_rows(args.split / "problems.jsonl")}
    q = {r["problem_id"]: r for r in read_jsonl_rows(args.split / "generations" / "quantized.jsonl")}
    rep = {r["problem_id"]: r for r in read_jsonl_rows(args.run / "generations" / "repaired.jsonl")}
    differ = [k for k in q if q[k]["answer"] != rep[k]["answer"]]
    base = HFGenerator(args.quantized, tag="quantized", device="cpu")
    repaired = HFGenerator(args.quantized, tag="repaired", device="cpu", adapter=str(args.run / "adapter"))
    cq = dict(zip(differ, confidence(base, [(build_prompt(questions[k]), q[k]["text"]) for k in differ])))
    cr = dict(zip(differ, confidence(repaired, [(build_prompt(questions[k]), rep[k]["text"]) for k in differ])))
    result = {"meta": run_meta(), "run": str(args.run), "answers_differ": len(differ), "by_measure": {}}
    for j, name in enumerate(("checker fallback alone", *MEASURES)):
        intro = fixed = 0
        for k in q:
            pick = rep[k]
            if use_base(rep[k]["text"], q[k]["text"]):
                pick = q[k]
            elif j and k in cq and failed_step(rep[k]["text"]) is None and failed_step(q[k]["text"]) is None:
                if cq[k][j - 1] > cr[k][j - 1]:
                    pick = q[k]
            intro += q[k]["correct"] and not pick["correct"]
            fixed += (not q[k]["correct"]) and pick["correct"]
        result["by_measure"][name] = {"flips_introduced": intro, "flips_fixed": fixed}
        print(f"{name:<24} introduced {intro:>3}  fixed {fixed:>4}")
    data = json.loads(args.out.read_text()) if args.out.exists() else {}
    data["confidence_rule"] = result
    args.out.write_text(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
