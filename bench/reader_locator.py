"""The locator with a real model reading the steps, on the hand-labelled GSM8K dev set: the rules, step
surprise (a reader teacher-forced on the solution), a step verifier (a probe on the reader's hidden
states, from `silverbullet train-verifier`), a critic prompt (`locate --judge`), and combinations.
Every threshold and combination rule is chosen on the dev set's `tune` half; the `test` half is read
once, for the chosen settings, and reported. Each signal with the gold solution in view and without.

    python bench/reader_locator.py --reader MODEL [--verifier DIR] [--critic] [--limit N]

MODEL: a path, hub id or .gguf (the real model: `silverbullet fetch-model` prints its folder).
Readings and critic replies are cached (SILVERBULLET_CACHE), so a rerun only pays for what is new; the
seconds per solution are only meaningful on a first run (an empty cache).
JSON: bench/results/reader_locator.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RULES = ("earlier", "fallback", "judge")
SURPRISE_GRID = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)
VERIFIER_GRID = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def load_dev(dev: Path, data: Path, limit: int | None) -> list[dict]:
    """Dev rows joined with their solutions: question, candidate, gold text and answer, labels."""
    sols = [json.loads(x) for x in data.read_text().splitlines() if x.strip()]
    out = []
    for x in (json.loads(s) for s in dev.read_text().splitlines() if s.strip()):
        row = sols[x["row"]]
        gold = row["ground_truth"]
        out.append({
            "split": x.get("split", "test"),
            "label": set(lab) if isinstance(lab := x["first_faulty_step"], list) else lab,
            "question": row["question"],
            "candidate": row[x["model"]]["solution"],
            "gold_text": gold,
            "gold_answer": gold.strip().splitlines()[-1].removeprefix("A:").strip(),
        })  # fmt: skip
    return out[:limit] if limit else out


def scores(preds: list[int | None], rows: list[dict], split: str) -> dict:
    """Exact first step on erroneous solutions, clean ones passed, F1 (ProcessBench), on one split."""
    err = clean = err_hit = clean_hit = 0
    for p, r in zip(preds, rows, strict=True):
        if r["split"] != split:
            continue
        lab = r["label"]
        if lab is None:
            clean += 1
            clean_hit += p is None
        else:
            err += 1
            err_hit += p in lab if isinstance(lab, set) else p == lab
    a, c = err_hit / max(err, 1), clean_hit / max(clean, 1)
    f1 = round(2 * a * c / (a + c), 4) if a + c else 0.0
    return {"n": err + clean, "exact": round(a, 4), "clean": round(c, 4), "f1": f1}


def combine(base: list[int | None], other: list[int | None], rule: str) -> list[int | None]:
    from silverbullet.attribution.judge import combine as comb

    return [o if rule == "judge" else comb(b, o, rule) for b, o in zip(base, other, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader", required=True)
    ap.add_argument("--verifier", default=None, help="a `silverbullet train-verifier` folder (its reader: --reader)")
    ap.add_argument("--critic", action="store_true", help="also the critic prompt (generation: the slow signal)")
    ap.add_argument("--critic-max-tokens", type=int, default=384)
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--limit", type=int, default=None, help="first N dev rows (a smoke run)")
    ap.add_argument("--dev", default=str(ROOT / "data/devsets/gsm8k_first_fault_dev.jsonl"))
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/gsm8k/example_model_solutions.jsonl"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "bench/results/reader_locator.json"))
    args = ap.parse_args()

    from silverbullet.attribution.locate import locate
    from silverbullet.attribution.reader import Reader, surprise_verdict
    from silverbullet.attribution.verifier import StepProbe

    rows = load_dev(Path(args.dev), Path(args.data), args.limit)
    probe = StepProbe.load(args.verifier) if args.verifier else None
    layer = probe.meta["layer"] if probe is not None else args.layer
    reader = Reader(args.reader, device=args.device, layer=layer)
    if probe is not None and probe.meta.get("reader_fingerprint") != reader.gen.fingerprint:
        sys.exit(f"--verifier {args.verifier} was trained on another reader than {args.reader}")
    signals: dict[str, dict[str, list[int | None]]] = {}
    seconds: dict[str, float] = {}
    verified: dict[str, list[int | None]] = {}  # the verifier reads without the gold: one reading for both settings
    critic = None
    for setting, with_gold in (("no_gold", False), ("gold", True)):
        t0 = time.perf_counter()
        rules = [locate(r["question"], r["candidate"], r["gold_text"] if with_gold else None,
                        r["gold_answer"]).first_faulty_step for r in rows]  # fmt: skip
        seconds[f"rules/{setting}"] = (time.perf_counter() - t0) / len(rows)
        t0 = time.perf_counter()
        readings = reader.read([(r["question"], r["candidate"], r["gold_text"] if with_gold else None) for r in rows])
        seconds[f"reading/{setting}"] = (time.perf_counter() - t0) / len(rows)
        signals[setting] = {"rules": rules}
        for t in SURPRISE_GRID:
            signals[setting][f"surprise@{t}"] = [surprise_verdict(x, t).step for x in readings]
        if probe is not None and not with_gold:
            for t in VERIFIER_GRID:
                verified[f"verifier@{t}"] = [probe.first_faulty(x.states, t) for x in readings]
        signals[setting].update(verified)
        if args.critic:
            from silverbullet.attribution.critic import ask_critic, make_critic

            if critic is None:
                critic = make_critic(args.reader, device=args.device)
            gen, render = critic
            t0 = time.perf_counter()
            items = [(r["question"], r["candidate"], r["gold_text"] if with_gold else None) for r in rows]
            signals[setting]["critic"] = [v.step for v in ask_critic(gen, items, render, args.critic_max_tokens)]
            seconds[f"critic/{setting}"] = (time.perf_counter() - t0) / len(rows)

    # choose on tune: each signal alone, and each joined to the rules by each rule; then report test
    table = []
    for setting, sig in signals.items():
        base = sig["rules"]
        table.append({"setting": setting, "signal": "rules", "tune": scores(base, rows, "tune"),
                      "test": scores(base, rows, "test")})  # fmt: skip
        for family in ("surprise", "verifier", "critic"):
            names = [k for k in sig if k.split("@")[0] == family]
            if not names:
                continue
            cands = []
            for k in names:
                for rule in RULES:
                    preds = combine(base, sig[k], rule)
                    cands.append((scores(preds, rows, "tune")["f1"], k, rule, preds))
            f1_tune, k, rule, preds = max(cands, key=lambda c: c[0])
            table.append({"setting": setting, "signal": f"rules + {k} ({rule})", "tune": scores(preds, rows, "tune"),
                          "test": scores(preds, rows, "test")})  # fmt: skip
        rules_f1 = scores(base, rows, "tune")["f1"]
        fams = [row for row in table if row["setting"] == setting and row["signal"] != "rules"
                and row["tune"]["f1"] > rules_f1]  # fmt: skip
        if len(fams) > 1:  # the best two that each beat the rules on tune, joined in turn
            best = sorted(fams, key=lambda r: -r["tune"]["f1"])[:2]
            preds = list(base)
            for b in best:
                name, rule = b["signal"].removeprefix("rules + ").rsplit(" (", 1)
                preds = combine(preds, sig[name], rule.rstrip(")"))
            name = "rules + " + " + ".join(b["signal"].removeprefix("rules + ") for b in best)
            table.append({"setting": setting, "signal": name, "tune":
                          scores(preds, rows, "tune"), "test": scores(preds, rows, "test")})  # fmt: skip
    result = {"meta": run_meta(), "reader": args.reader, "layer": reader.layer, "verifier": args.verifier,
              "limit": args.limit, "seconds_per_solution": {k: round(v, 3) for k, v in seconds.items()},
              "table": table}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'setting':8} {'signal':44} {'tune F1':>8} {'test exact':>10} {'test clean':>10} {'test F1':>8}")
    for r in table:
        print(f"{r['setting']:8} {r['signal']:44} {r['tune']['f1']:8.3f} {r['test']['exact']:10.3f} "
              f"{r['test']['clean']:10.3f} {r['test']['f1']:8.3f}")  # fmt: skip
    print("seconds per solution:", result["seconds_per_solution"])
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
