"""Locator on real model solutions: GSM8K example_model_solutions.jsonl (4 models per problem).

Reports: share of wrong-answer solutions where a faulty step before the answer line is found
(target >= 85%), share of right-answer solutions flagged (target <= 5%), position histogram, error
types; and, when data/devsets/gsm8k_first_fault_dev.jsonl exists, ProcessBench-style F1 against its
hand labels, beside the baseline "step 0 if the final answer is wrong".

    python bench/real_errors.py [--data PATH] [--dev PATH] [--out bench/results/real_errors.json] [--no-gold]

Dev-set scores are reported in two settings: `dev_set*` with the gold solution text as reference
(locate's reference-dataflow matching), `dev_set_no_gold*` without it (the ProcessBench setting:
no reference solution). Without gold text the gold *final answer* is still given, so locate knows
the answer is wrong and blames the first unsupported operand, or the earliest step the solution
goes on to use (a prior: docs/taxonomy.md); with neither it could only run the local checks.
`--no-gold` also runs the 4,076-solution flag rates that way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.attribution.locate import locate  # noqa: E402
from silverbullet.attribution.peers import locate_with_peers, right_peers  # noqa: E402

TYPES = ("execution", "method", "conceptual", "reasoning")
MODELS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
ROOT = Path(__file__).resolve().parents[1]


def f1(acc_err: float, acc_clean: float) -> float:
    return 0.0 if acc_err + acc_clean == 0 else 2 * acc_err * acc_clean / (acc_err + acc_clean)


def dev_scores(
    dev_path: Path,
    preds: dict[tuple[int, str], int | None],
    rows: list[dict],
    split: str | None = None,
    types: dict[tuple[int, str], str | None] | None = None,
) -> dict:
    """Position accuracy on erroneous and clean labelled solutions, F1, type accuracy; on one split
    (`tune` / `test`) or all rows."""
    labels = [json.loads(line) for line in dev_path.read_text().splitlines() if line.strip()]
    labels = [x for x in labels if split is None or x.get("split", "test") == split]
    err_hits = err_n = clean_hits = clean_n = 0
    base_err = base_clean = 0
    type_hits = type_n = 0
    # labelled type -> predicted type, where the position is right: where the type rules go wrong
    # (docs/taxonomy.md reads the method / conceptual boundary off this matrix)
    confusion = {t: dict.fromkeys((*TYPES, "none"), 0) for t in TYPES}
    for lab in labels:
        key = (lab["row"], lab["model"])
        pred = preds[key]
        gold = lab["first_faulty_step"]
        baseline = None if rows[lab["row"]][lab["model"]]["is_correct"] else 0
        if gold is None:
            clean_n += 1
            clean_hits += pred is None
            base_clean += baseline is None
        else:
            ok = set(gold) if isinstance(gold, list) else {gold}
            err_n += 1
            err_hits += pred in ok
            base_err += baseline in ok
            if pred in ok and lab.get("error_type"):
                ptype = (types if types is not None else preds_types)[key]
                type_n += 1
                type_hits += ptype == lab["error_type"]
                confusion[lab["error_type"]][ptype or "none"] += 1
    acc_e, acc_c = err_hits / max(err_n, 1), clean_hits / max(clean_n, 1)
    b_e, b_c = base_err / max(err_n, 1), base_clean / max(clean_n, 1)
    return {
        "n": len(labels),
        "n_erroneous": err_n,
        "n_clean": clean_n,
        "acc_erroneous": round(acc_e, 4),
        "acc_clean": round(acc_c, 4),
        "f1": round(f1(acc_e, acc_c), 4),
        "type_accuracy_where_position_right": round(type_hits / max(type_n, 1), 4),
        "n_typed_where_position_right": type_n,
        "type_confusion_where_position_right": {"rows": "labelled type", "columns": "predicted type", **confusion},
        "baseline_step0_if_wrong": {
            "acc_erroneous": round(b_e, 4),
            "acc_clean": round(b_c, 4),
            "f1": round(f1(b_e, b_c), 4),
        },
    }


preds_types: dict[tuple[int, str], str | None] = {}


def gold_answer(row: dict) -> str:
    """The gold final answer alone (the `A: ...` line of the gold solution)."""
    return row["ground_truth"].strip().splitlines()[-1].removeprefix("A:").strip()


def dev_no_gold(dev_path: Path, rows: list[dict], no_gold: bool) -> tuple[dict, dict, dict]:
    """Predictions on the dev rows in the other setting than the main run (gold text <-> none)."""
    preds: dict = {}
    types: dict = {}
    for line in dev_path.read_text().splitlines():
        if not line.strip():
            continue
        lab = json.loads(line)
        row = rows[lab["row"]]
        sol = row[lab["model"]]["solution"]
        if no_gold:
            a = locate(row["question"], sol, row["ground_truth"])
        else:
            a = locate(row["question"], sol, None, gold_answer(row))
        preds[(lab["row"], lab["model"])] = a.first_faulty_step
        types[(lab["row"], lab["model"])] = a.error_type
    return preds, types, {}


def dev_peers(dev_path: Path, rows: list[dict]) -> tuple[dict, dict, int]:
    """Predictions without gold text, each wrong solution checked against the right-answer solutions
    of the same question by the other three models (attribution/peers.py; they are graded against
    the gold answer, never by the dev labels). Also returns how many dev rows had a peer."""
    preds: dict = {}
    types: dict = {}
    with_peer = 0
    for line in dev_path.read_text().splitlines():
        if not line.strip():
            continue
        lab = json.loads(line)
        row = rows[lab["row"]]
        gold = gold_answer(row)
        others = [row[m]["solution"] for m in MODELS if m != lab["model"]]
        peers = right_peers(others, gold)
        with_peer += bool(peers)
        a = locate_with_peers(row["question"], row[lab["model"]]["solution"], peers, gold)
        preds[(lab["row"], lab["model"])] = a.first_faulty_step
        types[(lab["row"], lab["model"])] = a.error_type
    return preds, types, with_peer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/gsm8k/example_model_solutions.jsonl"))
    ap.add_argument("--dev", default=str(ROOT / "data/devsets/gsm8k_first_fault_dev.jsonl"))
    ap.add_argument("--out", default=str(ROOT / "bench/results/real_errors.json"))
    ap.add_argument("--no-gold", action="store_true", help="flag rates without the gold solution text")
    args = ap.parse_args()
    rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    t0 = time.perf_counter()
    stats = {True: Counter(), False: Counter()}
    pos_hist: Counter = Counter()
    types: Counter = Counter()
    checks: Counter = Counter()
    per_model: dict[str, Counter] = {m: Counter() for m in MODELS}
    preds: dict[tuple[int, str], int | None] = {}
    for i, row in enumerate(rows):
        for m in MODELS:
            sol = row[m]
            if args.no_gold:
                a = locate(row["question"], sol["solution"], None, gold_answer(row))
            else:
                a = locate(row["question"], sol["solution"], row["ground_truth"])
            preds[(i, m)] = a.first_faulty_step
            preds_types[(i, m)] = a.error_type
            correct = bool(sol["is_correct"])
            flagged = a.first_faulty_step is not None
            stats[correct]["n"] += 1
            stats[correct]["flagged"] += flagged
            per_model[m][f"{'right' if correct else 'wrong'}_n"] += 1
            per_model[m][f"{'right' if correct else 'wrong'}_flagged"] += flagged
            if a.final_answer_correct != correct:
                stats[correct]["grading_disagrees"] += 1
            if not correct:
                if flagged:
                    rel = (
                        "first"
                        if a.first_faulty_step == 0
                        else "last"
                        if a.first_faulty_step == a.n_steps - 1
                        else "middle"
                    )
                    pos_hist[str(a.first_faulty_step)] += 1
                    pos_hist[rel] += 0
                    types[a.error_type or "none"] += 1
                checks[a.evidence.get("check", "none")] += 1
    seconds = time.perf_counter() - t0
    wrong, right = stats[False], stats[True]

    def share(c: Counter, target: str) -> dict:
        rate = round(c["flagged"] / max(c["n"], 1), 4)
        return {"n": c["n"], "flagged": c["flagged"], "rate": rate, "target": target,
                "grading_disagrees": c["grading_disagrees"]}  # fmt: skip

    hist = sorted(((k, v) for k, v in pos_hist.items() if v), key=lambda kv: int(kv[0]))
    result = {
        "meta": run_meta(),
        "n_solutions": wrong["n"] + right["n"],
        "wrong_answer": share(wrong, ">= 0.85"),
        "right_answer": share(right, "<= 0.05"),
        "position_histogram_wrong": dict(hist),
        "error_types_wrong": dict(types.most_common()),
        "checks_fired_wrong": dict(checks.most_common()),
        "per_model": {m: dict(c) for m, c in per_model.items()},
        "seconds": round(seconds, 2),
    }
    dev = Path(args.dev)
    if dev.exists():
        where = str(dev.relative_to(ROOT)) if dev.is_relative_to(ROOT) else str(dev)
        other, other_types, _ = dev_no_gold(dev, rows, args.no_gold)
        gold_run = (other, other_types) if args.no_gold else (preds, preds_types)
        bare_run = (preds, preds_types) if args.no_gold else (other, other_types)
        target = "acc_erroneous >= 0.85, f1 >= 0.90, acc_clean >= 0.97 (issue 21)"
        for suffix, (p, t), setting in (
            ("", gold_run, "gold solution text as reference"),
            ("_no_gold", bare_run, "no reference solution; gold final answer given"),
        ):
            result[f"dev_set{suffix}"] = {"path": where, **dev_scores(dev, p, rows, "test", t), "split": "test",
                                          "setting": setting, "target": target}  # fmt: skip
            result[f"dev_set{suffix}_tune"] = {"split": "tune", **dev_scores(dev, p, rows, "tune", t)}
            result[f"dev_set{suffix}_all"] = {"split": "all", **dev_scores(dev, p, rows, None, t)}
        p, t, with_peer = dev_peers(dev, rows)
        setting = ("no gold text; gold final answer given; right-answer solutions of the same question by the "
                   "other three models as peer references (plain no-gold locate where none is right)")  # fmt: skip
        result["dev_set_peers"] = {**dev_scores(dev, p, rows, "test", t), "split": "test", "setting": setting,
                                   "rows_with_a_peer": with_peer}  # fmt: skip
        result["dev_set_peers_tune"] = {"split": "tune", **dev_scores(dev, p, rows, "tune", t)}
        result["dev_set_peers_all"] = {"split": "all", **dev_scores(dev, p, rows, None, t)}
        result["main_run_setting"] = "no gold text" if args.no_gold else "gold solution text"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'set':<22}{'n':>7}{'flagged':>9}{'rate':>8}  target")
    for name, key in (("wrong answer", "wrong_answer"), ("right answer", "right_answer")):
        r = result[key]
        print(f"{name:<22}{r['n']:>7}{r['flagged']:>9}{r['rate']:>8.3f}  {r['target']}")
    print("positions (wrong):", result["position_histogram_wrong"])
    print("types (wrong):", result["error_types_wrong"])
    print("checks (wrong):", result["checks_fired_wrong"])
    for key in ("dev_set", "dev_set_tune", "dev_set_all", "dev_set_no_gold", "dev_set_no_gold_tune",
                "dev_set_no_gold_all", "dev_set_peers", "dev_set_peers_tune", "dev_set_peers_all"):  # fmt: skip
        if key not in result:
            continue
        d = result[key]
        b = d["baseline_step0_if_wrong"]
        tag = "no-gold " if "no_gold" in key else "peers " if "peers" in key else ""
        print(f"{tag}dev {d['split']:<5} n={d['n']}: acc_err={d['acc_erroneous']:.3f} acc_clean={d['acc_clean']:.3f} "
              f"F1={d['f1']:.3f} (baseline F1={b['f1']:.3f}; acc_err={b['acc_erroneous']:.3f}) "
              f"type acc={d['type_accuracy_where_position_right']:.3f}")  # fmt: skip
    for key in ("dev_set_tune", "dev_set"):
        if key in result:
            print_confusion(result[key])
    print(f"{seconds:.2f}s; wrote {args.out}")


def print_confusion(d: dict) -> None:
    """The type confusion matrix of one split: rows labelled, columns predicted (position right)."""
    m = d["type_confusion_where_position_right"]
    cols = (*TYPES, "none")
    n = d["n_typed_where_position_right"]
    print(f"types, {d['split']} (n={n}, position right): rows labelled, columns predicted")
    print(f"{'':<12}" + "".join(f"{c[:5]:>7}" for c in cols))
    for t in TYPES:
        print(f"{t:<12}" + "".join(f"{m[t][c]:>7}" for c in cols))


if __name__ == "__main__":
    main()
