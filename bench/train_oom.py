"""Out of GPU memory in repair training, on a real GPU: the line `silverbullet repair` stops with, and
whether the setting it names then trains.

A random-weight model in the Qwen2.5-0.5B shape (bench/scale.py's config; the reference tokenizer,
whose ids are a subset of the vocabulary) is saved as a checkpoint and trained through
`train_adapter` itself (SFT, LoRA r=16, float32 as repair loads it) on 64 rows of GSM8K length, with
the process's GPU memory capped (torch.cuda.set_per_process_memory_fraction) so that the default
training batch of 16 does not fit:

1. batch 16: must stop with one UserError line naming a `--grad-accum` k;
2. the same cap, `grad_accum=k`: must train (its steps and seconds are recorded).

No accuracy is claimed (random weights). Usage, on a GPU machine (needs trl and datasets):
    python bench/train_oom.py --out bench/results/train_oom.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _meta import run_meta  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="qwen2.5-0.5b")
    ap.add_argument("--cap-gib", type=float, default=12.0, help="the process's GPU memory cap")
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--reference", default=str(ROOT / "data" / "reference-model"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_oom.json"))
    args = ap.parse_args(argv)

    import torch
    from compile import long_prompts
    from scale import SHAPES, build
    from transformers import AutoTokenizer

    from silverbullet.errors import UserError
    from silverbullet.repair.train import RepairTrainConfig, train_adapter

    if not torch.cuda.is_available():
        raise SystemExit("bench/train_oom.py needs a CUDA GPU")
    meta = run_meta()
    meta["commit"] = os.environ.get("BENCH_COMMIT", meta["commit"])
    tok = AutoTokenizer.from_pretrained(args.reference)
    work = Path(tempfile.mkdtemp(prefix="train_oom_"))
    model = build(SHAPES[args.shape])
    model.save_pretrained(work / "model", safe_serialization=True)
    tok.save_pretrained(work / "model")
    del model
    torch.cuda.empty_cache()
    prompts = long_prompts(tok, args.rows, 200)
    sols = long_prompts(tok, args.rows, 150)
    with open(work / "sft.jsonl", "w") as f:
        for p, s in zip(prompts, sols, strict=True):
            f.write(json.dumps({"prompt": p, "completion": s}) + "\n")
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(args.cap_gib * 2**30 / total)
    res: dict = {"what": __doc__.split("\n\n")[0], "meta": meta, "shape": args.shape, "cap_gib": args.cap_gib,
                 "rows": args.rows, "gpu": torch.cuda.get_device_name(0), "torch": torch.__version__}  # fmt: skip
    t0 = time.perf_counter()
    try:
        info = train_adapter(str(work / "model"), work / "sft.jsonl", None, work / "a16",
                             RepairTrainConfig(epochs=1, batch_size=16, device="cuda"))  # fmt: skip
        res["batch16"] = {"trained": True, "info": info}
    except UserError as e:
        res["batch16"] = {"trained": False, "line": str(e), "seconds": round(time.perf_counter() - t0, 1)}
    print("batch 16:", json.dumps(res["batch16"])[:600], flush=True)
    m = re.search(r"--grad-accum (\d+)", res["batch16"].get("line", "").split("rerun with", 1)[-1])
    if m:
        k = int(m.group(1))
        import gc

        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            info = train_adapter(str(work / "model"), work / "sft.jsonl", None, work / f"a16k{k}",
                                 RepairTrainConfig(epochs=1, batch_size=16, grad_accum=k, device="cuda"))  # fmt: skip
            res["suggested"] = {"grad_accum": k, "trained": True, "steps": info["sft"]["steps"],
                                "seconds": round(time.perf_counter() - t0, 1),
                                "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}  # fmt: skip
        except (UserError, torch.OutOfMemoryError) as e:
            res["suggested"] = {"grad_accum": k, "trained": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
        print("suggested:", json.dumps(res["suggested"]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
