"""Segmentation on real solutions: per source, how many steps, how often the extracted answer
agrees with gold (where a gold answer exists apart from the text), and how long it takes.

    python bench/segmentation.py [--out bench/results/segmentation.json]

Sources (../shared/data): GSM8K gold solutions (train + test; gold = the `####` value), the 4,076
GSM8K model solutions (agreement = grading the extracted answer against the problem's gold answer
gives the solution's own is_correct label), MATH (minerva_math: no separate gold field, so no
agreement), AIME 2024 (gold = the `answer` field). Time is CPU seconds of `segment` alone, one pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.benchmarks.jsonl import data_root  # noqa: E402
from silverbullet.grading import is_correct  # noqa: E402
from silverbullet.segmentation import segment  # noqa: E402

MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")


def _rows(rel: str) -> list[dict]:
    return [json.loads(line) for line in (data_root() / rel).open(encoding="utf-8")]


def sources() -> dict[str, list[tuple[str, object]]]:
    """name -> [(solution text, check)]: check(answer) -> bool, or None where no gold exists."""
    out: dict[str, list] = {}
    gold = _rows("gsm8k/train.jsonl") + _rows("gsm8k/test.jsonl")
    out["gsm8k gold"] = [(r["answer"], ("gold", r["answer"].split("####")[-1].strip())) for r in gold]
    model = []
    for r in _rows("gsm8k/example_model_solutions.jsonl"):
        g = r["ground_truth"].split("####")[-1].strip()
        model += [(r[m]["solution"], ("label", g, r[m]["is_correct"])) for m in MODELS]
    out["gsm8k model solutions"] = model
    out["minerva_math"] = [(r["solution"], None) for r in _rows("minerva_math/test.jsonl")]
    out["aime24"] = [(r["solution"], ("gold", str(r["answer"]))) for r in _rows("aime24/test.jsonl")]
    return out


def _agrees(answer: str | None, check: tuple) -> bool:
    if check[0] == "gold":
        return is_correct(answer, check[1])
    return is_correct(answer, check[1]) == check[2]


def run() -> dict:
    table = []
    for name, items in sources().items():
        t0 = time.process_time()
        segs = [segment(text) for text, _ in items]
        secs = time.process_time() - t0
        checked = [(s, c) for s, (_, c) in zip(segs, items, strict=True) if c is not None]
        agree = sum(_agrees(s.answer, c) for s, c in checked)
        table.append(
            {
                "source": name,
                "solutions": len(items),
                "mean_steps": round(sum(len(s.spans) for s in segs) / len(segs), 3),
                "free_style_share": round(sum(s.style == "free" for s in segs) / len(segs), 4),
                "answer_found_share": round(sum(s.answer is not None for s in segs) / len(segs), 4),
                "answer_agreement": round(agree / len(checked), 4) if checked else None,
                "answer_disagreements": len(checked) - agree if checked else None,
                "cpu_seconds": round(secs, 3),
            }
        )
    return {"meta": run_meta(), "results": table}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "segmentation.json")
    args = ap.parse_args()
    res = run()
    head = f"{'source':<24}{'solutions':>10}{'mean steps':>12}{'answer agreement':>18}{'seconds':>10}"
    print(head)
    for r in res["results"]:
        agree = "n/a" if r["answer_agreement"] is None else f"{100 * r['answer_agreement']:.2f}%"
        print(f"{r['source']:<24}{r['solutions']:>10}{r['mean_steps']:>12.2f}{agree:>18}{r['cpu_seconds']:>10.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
