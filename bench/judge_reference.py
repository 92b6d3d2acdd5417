"""The full-precision judge against the checker on the reference task, where the truth is known.

    python bench/judge_reference.py --run runs/demo [--thresholds 1 2 3 4 6] [--out bench/results/judge_reference.json]

`--run` is a `silverbullet diagnose` run on the synthetic benchmark (its reference model is read from
the run's config). For each flip (reference right, quantized wrong) the true first faulty step is the
first step of the quantized solution whose numbers differ from the canonical solution's same step
(the task's generator writes one canonical solution per problem, and the reference model was
trained on it); a step worded differently with the same numbers ("loses 7" for "sells 7") is not
counted as an error. Reported: exact first-step accuracy of
- the checker alone (the run's `first_faulty_step`),
- the judge alone (the reference model teacher-forced on the quantized solution; first step with a
  token whose log-prob gap to the reference's own top-1 exceeds the threshold), per threshold,
- both combined, per threshold: `earlier` (the earlier of the two) and `fallback` (the checker's step,
  the judge's where the checker has none).
What it cannot show: the reference task's errors are mostly arithmetic, which the checker sees; the
judge is meant for semantic errors with right arithmetic, which this task rarely produces.
Only flips whose quantized solution has a step that differs are scored.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.attribution.judge import combine, judge  # noqa: E402
from silverbullet.generation.hf import HFGenerator  # noqa: E402
from silverbullet.segmentation import segment  # noqa: E402

NUM = re.compile(r"\d+(?:\.\d+)?")


def true_first_step(candidate: str, canonical: str) -> int | None:
    """First step whose numbers differ from the canonical step's (or that the canonical lacks)."""
    cand, canon = segment(candidate).steps, segment(canonical).steps
    for k, step in enumerate(cand):
        if k >= len(canon) or NUM.findall(step) != NUM.findall(canon[k]):
            return k
    return None


def rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True)
    ap.add_argument("--thresholds", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 6.0])
    ap.add_argument("--out", default="bench/results/judge_reference.json")
    args = ap.parse_args()
    run = Path(args.run)
    cfg = json.loads((run / "config.json").read_text())
    problems = {p["id"]: p for p in rows(run / "problems.jsonl")}
    quant = {g["problem_id"]: g for g in rows(run / "generations" / "quantized.jsonl")}
    flips = [r for r in rows(run / "attribution.jsonl") if r["model"] == "quantized" and r["flip"]]
    scored = []
    for r in flips:
        text = quant[r["problem_id"]]["text"]
        truth = true_first_step(text, problems[r["problem_id"]]["solution"])
        if truth is not None:
            scored.append((r, text, truth))
    gen = HFGenerator(cfg["reference"], tag="reference", device="cpu")
    prompt = {g["problem_id"]: g.get("prompt") for g in quant.values()}
    from silverbullet.prompting import build_prompt

    pairs = [(prompt[r["problem_id"]] or build_prompt(r["question"]), text) for r, text, _ in scored]
    scores = gen.score_batch(pairs)
    n = len(scored)
    checker = sum(r["first_faulty_step"] == t for r, _, t in scored)
    table = []
    for th in args.thresholds:
        verdicts = [
            judge(s.logprobs, s.top_logprobs, s.token_ends, segment(text).spans, th).step
            for s, (_, text, _) in zip(scores, scored)
        ]
        j = sum(v == t for v, (_, _, t) in zip(verdicts, scored))
        both = sum(combine(r["first_faulty_step"], v, "earlier") == t for v, (r, _, t) in zip(verdicts, scored))
        fb = sum(combine(r["first_faulty_step"], v) == t for v, (r, _, t) in zip(verdicts, scored))
        early = sum(v is not None and v < t for v, (_, _, t) in zip(verdicts, scored))
        table.append({"threshold": th, "judge": round(j / n, 4), "combined_earlier": round(both / n, 4),
                      "combined_fallback": round(fb / n, 4),
                      "judge_too_early": early})  # fmt: skip
    res = {"meta": run_meta(), "run": str(run), "n_flips": len(flips), "n_scored": n,
           "checker": round(checker / n, 4), "by_threshold": table}  # fmt: skip
    print(f"{n} flips scored (of {len(flips)}); checker alone: {checker / n:.1%} exact first step")
    print(f"{'threshold':>9} {'judge':>7} {'earlier':>8} {'fallback':>9} {'judge too early':>16}")
    for t in table:
        print(f"{t['threshold']:9.1f} {t['judge']:7.1%} {t['combined_earlier']:8.1%} "
              f"{t['combined_fallback']:9.1%} {t['judge_too_early']:16d}")  # fmt: skip
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
