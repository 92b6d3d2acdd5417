"""Re-score finished repair runs with the checker fallback (silverbullet/repair/fallback.py), from
their generation files alone: no model runs, so earlier GPU sweeps can be read again on a CPU.

    python bench/fallback_rescore.py --split runs/gpu/tune-split --runs runs/gpu/r6-* \
        [--source "where the generations came from"] [--out bench/results/fallback_rescore.json]

`--split` is the diagnose run the repairs were measured against (its reference and quantized
generations); each run in `--runs` holds `generations/repaired.jsonl`. Prints one row per run and
the mean per configuration (the run name less its `-seedN`), and writes them as JSON.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _meta import run_meta  # noqa: E402

from silverbullet.records import Generation  # noqa: E402
from silverbullet.repair.fallback import checker_fallback  # noqa: E402
from silverbullet.repair.pipeline import flip_stats  # noqa: E402
from silverbullet.run.jsonl import read_jsonl_rows  # noqa: E402


def rescore(split: Path, run: Path) -> dict:
    gens = {t: {r["problem_id"]: r for r in read_jsonl_rows(split / "generations" / f"{t}.jsonl")}
            for t in ("reference", "quantized")}  # fmt: skip
    rows = read_jsonl_rows(run / "generations" / "repaired.jsonl")
    if len(rows) != len(gens["quantized"]):
        raise SystemExit(f"{run}: {len(rows)} repaired rows against {len(gens['quantized'])} in {split}")
    repaired = [Generation(**{k: r.get(k) for k in Generation.__dataclass_fields__}) for r in rows]
    ids = [g.problem_id for g in repaired]
    ref = [gens["reference"][i]["correct"] for i in ids]
    q = [gens["quantized"][i]["correct"] for i in ids]
    served = checker_fallback(repaired, gens["quantized"])
    n = len(ids)
    return {
        "n": n,
        "quantized": round(sum(q) / n, 4),
        "reference": round(sum(ref) / n, 4),
        "adapter": {"accuracy": round(sum(g.correct for g in repaired) / n, 4),
                    **flip_stats(ref, q, [g.correct for g in repaired])},  # fmt: skip
        "checked": {
            "accuracy": round(sum(r["correct"] for r in served) / n, 4),
            "fallbacks": sum(r["model"] != "repaired" for r in served),
            **flip_stats(ref, q, [r["correct"] for r in served]),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", required=True, type=Path)
    ap.add_argument("--runs", required=True, nargs="+", type=Path)
    ap.add_argument("--source", default="", help="where the generation files came from (recorded)")
    ap.add_argument("--out", default="bench/results/fallback_rescore.json", type=Path)
    args = ap.parse_args()
    runs = {r.name: rescore(args.split, r) for r in sorted(args.runs)}
    configs: dict[str, list[dict]] = defaultdict(list)
    for name, v in runs.items():
        configs[re.sub(r"-seed\d+$", "", name)].append(v)
    means = {
        c: {
            "runs": len(vs),
            **{f"{side}_{k}": round(statistics.mean(v[side][k] for v in vs), 4)
               for side in ("adapter", "checked") for k in ("recovery", "flips_introduced_rate")},  # fmt: skip
            "checked_introduced_max": max(v["checked"]["flips_introduced_rate"] for v in vs),
        }
        for c, vs in configs.items()
    }
    head = f"{'run':<24} {'adapter acc':>11} {'recovery':>8} {'introduced':>10} | {'+fallback':>9} {'recovery':>8}"
    print(head + f" {'introduced':>10} {'fallbacks':>9}")
    for name, v in runs.items():
        a, c = v["adapter"], v["checked"]
        print(
            f"{name:<24} {a['accuracy']:>11.3f} {a['recovery']:>8.1%} {a['flips_introduced_rate']:>10.1%} | "
            f"{c['accuracy']:>9.3f} {c['recovery']:>8.1%} {c['flips_introduced_rate']:>10.1%} {c['fallbacks']:>9}"
        )
    print(f"\n{'configuration (mean)':<24} {'runs':>4} {'recovery':>8} {'introduced':>10} | ", end="")
    print(f"{'recovery':>8} {'introduced':>10}")
    for c, m in means.items():
        print(
            f"{c:<24} {m['runs']:>4} {m['adapter_recovery']:>8.1%} {m['adapter_flips_introduced_rate']:>10.2%} | "
            f"{m['checked_recovery']:>8.1%} {m['checked_flips_introduced_rate']:>10.2%}"
        )
    result = {"meta": run_meta(), "split": str(args.split), "source": args.source, "runs": runs, "means": means}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
