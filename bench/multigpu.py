"""One GPU against two, on the demo setting, through the CLI: HF-backend `diagnose` (one process vs
`--devices cuda:0,cuda:1`) and `repair` (one process vs `accelerate launch --multi_gpu
--num_processes 2`).

    python bench/multigpu.py --part diagnose|repair [--limit 1000] [--quantized Q] [--out DIR]

`--part diagnose` runs `silverbullet diagnose --limit N` twice into DIR/d1 and DIR/d2 and compares
the generations (same texts expected). `--part repair` runs the default repair (332 examples, 10
epochs) from DIR/d1 with one process into DIR/r1, then with two processes into DIR/r2 (the repair
split's diagnosis copied from r1, so the two differ only in training and re-measure). Each part
writes DIR/multigpu_<part>.json (command, times, accuracies) with run_meta().
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "silverbullet.cli"]


def timed(cmd: list[str]) -> float:
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.time()
    res = subprocess.run(cmd, cwd=ROOT)
    if res.returncode != 0:
        sys.exit(f"failed ({res.returncode})")
    return round(time.time() - t0, 1)


def rows(path: Path) -> dict[str, dict]:
    return {r["problem_id"]: r for r in map(json.loads, path.read_text().splitlines()) if r}


def diagnose(args, out: Path) -> dict:
    base = [*CLI, "diagnose", "--limit", str(args.limit), "--quantized", args.quantized, "--no-cache"]
    t1 = timed([*base, "--device", "cuda:0", "--out", str(out / "d1")])
    t2 = timed([*base, "--devices", args.devices, "--out", str(out / "d2")])
    same = {}
    for tag in ("reference", "quantized"):
        a, b = (rows(out / d / "generations" / f"{tag}.jsonl") for d in ("d1", "d2"))
        same[tag] = sum(a[i]["text"] == b[i]["text"] for i in a) / len(a)
    s1, s2 = (json.loads((out / d / "summary.json").read_text()) for d in ("d1", "d2"))
    def info(t: float, s: dict) -> dict:
        return {"seconds": t, "generation_seconds": s["timings"]["generation_seconds"], "accuracy": s["accuracy"]}

    return {"one_gpu": info(t1, s1), "two_gpus": info(t2, s2), "same_text_share": same}


def repair(args, out: Path) -> dict:
    t1 = timed([*CLI, "repair", "--from", str(out / "d1"), "--out", str(out / "r1")])
    (out / "r2").mkdir(exist_ok=True)
    shutil.copytree(out / "r1" / "repair-split", out / "r2" / "repair-split", dirs_exist_ok=True)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "-m", "silverbullet.cli"]  # fmt: skip
    t2 = timed([*launch, "repair", "--from", str(out / "d1"), "--out", str(out / "r2")])
    res = {}
    for name, d, t in (("one_gpu", "r1", t1), ("two_gpus", "r2", t2)):
        s = json.loads((out / d / "repair_summary.json").read_text())
        res[name] = {"seconds": t, "timings": s["timings"], "examples": s["examples"], "accuracy": s["accuracy"],
                     "recovery": s["recovery"], "flips_fixed": s["flips_fixed"],
                     "flips_introduced": s["flips_introduced"], "rank": s.get("rank", 0)}  # fmt: skip
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=("diagnose", "repair"), required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--quantized", default="runs/_models/reference-model-rtn-w2ch")
    ap.add_argument("--out", default="runs/multigpu")
    ap.add_argument("--devices", default="cuda:0,cuda:1", help="diagnose's sharded run (cuda:0,cuda:0: two on one GPU)")
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)
    res = diagnose(args, out) if args.part == "diagnose" else repair(args, out)
    (out / f"multigpu_{args.part}.json").write_text(json.dumps({"meta": run_meta(), args.part: res}, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
