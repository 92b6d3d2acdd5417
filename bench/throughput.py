"""Generation throughput: HF vs vLLM backends on the same prompts and model, as a ratio in one run.

For context it also prints the memory-bandwidth limit of decoding: each decode step reads every
weight once, so one stream can go no faster than bandwidth / weight bytes tokens/s, and a batch of
B streams no faster than B times that. Bandwidth is measured here (a numpy copy on CPU, a torch
copy on GPU), counting bytes read plus written. A tiny model's weights fit in cache, so on CPU the
limit is loose and both backends are bound by per-step overhead instead; on a GPU with a real
model the limit is what matters.

Run it from .venv-vllm (it needs vllm and transformers in one process; the engine lives in its own
process, and is shut down before the next model):

    .venv-vllm/bin/python bench/throughput.py --n 200
    .venv-vllm/bin/python bench/throughput.py --n 200 --device cuda   # on a GPU where vLLM runs

The W4A16 model defaults to runs/_models/reference-model-gptq-w4g128 (`make quantize` or
`silverbullet quantize --method gptq --bits 4 --group-size 128` in the main venv writes it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def measure_bandwidth(device: str) -> float:
    """Sustained copy bandwidth in bytes/s (read + write), best of 5 copies of a 256 MiB buffer."""
    n = 256 * 1024 * 1024
    best = float("inf")
    if device.startswith("cuda"):
        import torch

        src = torch.empty(n, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        for _ in range(6):
            torch.cuda.synchronize()
            t = time.perf_counter()
            dst.copy_(src)
            torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t)
    else:
        import numpy as np

        src = np.ones(n, dtype=np.uint8)
        dst = np.empty_like(src)
        for _ in range(6):
            t = time.perf_counter()
            np.copyto(dst, src)
            best = min(best, time.perf_counter() - t)
    return 2 * n / best


def weight_bytes(path: Path, dense_dtype_bytes: int) -> dict:
    """Bytes of weights one decode step reads: dense params at the compute dtype, and for a
    compressed-tensors checkpoint served compressed (vLLM) the packed tensors as stored."""
    from safetensors import safe_open

    n_params = packed = 0
    bytes_per = {"F32": 4, "BF16": 2, "F16": 2, "I32": 4, "I8": 1, "U8": 1, "I64": 8}
    for f in sorted(path.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                sl = st.get_slice(k)
                numel = 1
                for d in sl.get_shape():
                    numel *= d
                packed += numel * bytes_per.get(sl.get_dtype(), 4)
                if not k.endswith(("weight_scale", "weight_zero_point", "weight_shape", "weight_g_idx")):
                    n_params += numel * (8 if k.endswith("weight_packed") else 1)  # 8 int4 per int32
    cfg = json.loads((path / "config.json").read_text())
    quantized = "quantization_config" in cfg
    return {
        "params": n_params,
        "dense_bytes": n_params * dense_dtype_bytes,
        "stored_bytes": packed,
        "quantized": quantized,
    }


def run_backend(backend: str, path: Path, prompts: list[str], args) -> dict:
    from silverbullet.generation import GenerationConfig, HFGenerator

    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=args.hf_batch_size)
    t0 = time.perf_counter()
    if backend == "hf":
        gen = HFGenerator(path, tag="bench", device=args.device)
        gen.model  # noqa: B018 - load now, so load time is not generation time
        dtype = str(gen.model.dtype).removeprefix("torch.")
    else:
        from silverbullet.generation.vllm import create

        gen = create(path, tag="bench", device=args.device)
        gen.engine  # noqa: B018
        dtype = gen.dtype
    load = time.perf_counter() - t0
    gen.generate(prompts[: min(8, len(prompts))], cfg)  # warm-up (vLLM compiles lazily, HF allocates)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    outs = gen.generate(prompts, cfg)
    secs = time.perf_counter() - t0
    if backend == "vllm":
        gen.close()
    tokens = sum(o.n_tokens for o in outs)
    return {
        "backend": backend,
        "dtype": dtype,
        "load_seconds": round(load, 1),
        "seconds": round(secs, 2),
        "tokens": tokens,
        "tokens_per_s": round(tokens / secs, 1),
        "problems_per_s": round(len(prompts) / secs, 2),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "texts": [o.text for o in outs],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--max-new-tokens", type=int, default=320)
    ap.add_argument("--hf-batch-size", type=int, default=64)
    ap.add_argument("--reference", default=str(ROOT / "data" / "reference-model"))
    ap.add_argument("--w4a16", default=str(ROOT / "runs" / "_models" / "reference-model-gptq-w4g128"))
    ap.add_argument("--out", default=None, help="JSON path (default bench/results/throughput_<device>.json)")
    args = ap.parse_args()

    from silverbullet.benchmarks.synthetic_task import generate as task_problems
    from silverbullet.generation.loading import resolve_device
    from silverbullet.prompting import build_prompt, parse_solution

    args.device = resolve_device(args.device)
    prompts = [build_prompt(p.question) for p in task_problems("eval", args.n)]
    meta = run_meta()
    import vllm

    meta["vllm"] = vllm.__version__
    bw = measure_bandwidth(args.device)
    rows = []
    models = [("reference", Path(args.reference)), ("w4a16", Path(args.w4a16))]
    for name, path in models:
        if not (path / "config.json").is_file():
            print(f"skipping {name}: {path} not found", file=sys.stderr)
            continue
        res = {b: run_backend(b, path, prompts, args) for b in ("hf", "vllm")}
        hf, vl = res["hf"], res["vllm"]
        same = sum(
            parse_solution(a).answer == parse_solution(b).answer for a, b in zip(hf["texts"], vl["texts"], strict=True)
        )
        w = weight_bytes(path, 4 if hf["dtype"] == "float32" else 2)
        vllm_bytes = w["stored_bytes"] if w["quantized"] else w["params"] * (4 if vl["dtype"] == "float32" else 2)
        per_stream = {"hf": bw / w["dense_bytes"], "vllm": bw / vllm_bytes}
        for r in (hf, vl):
            r.pop("texts")
        rows.append(
            {
                "model": name,
                "path": str(path),
                "n": len(prompts),
                "hf": hf,
                "vllm": vl,
                "ratio_tokens_per_s": round(vl["tokens_per_s"] / hf["tokens_per_s"], 2),
                "answers_agree": round(same / len(prompts), 4),
                "weights": w,
                "bandwidth_limit_tokens_per_s_one_stream": {k: round(v) for k, v in per_stream.items()},
                "bandwidth_limit_tokens_per_s_batch": {
                    "hf": round(per_stream["hf"] * min(args.hf_batch_size, len(prompts))),
                    "vllm": round(per_stream["vllm"] * len(prompts)),  # vLLM runs all prompts as one batch here
                },
            }
        )
    meta["loadavg_at_end"] = os.getloadavg()
    out = {
        "meta": meta,
        "device": args.device,
        "bandwidth_bytes_per_s": round(bw),
        "bandwidth_note": "best of 5 copies of 256 MiB, bytes read + written",
        "max_new_tokens": args.max_new_tokens,
        "hf_batch_size": args.hf_batch_size,
        "rows": rows,
    }
    path = Path(args.out) if args.out else RESULTS / f"throughput_{args.device.split(':')[0]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")

    print(f"\nbandwidth {bw / 1e9:.1f} GB/s ({args.device}); load avg {meta['hardware']['loadavg_at_start']}")
    cols = ("model", 10), ("backend", 7), ("dtype", 9), ("tok/s", 9), ("prob/s", 8), ("tokens", 7), ("s", 7)
    print(" ".join(f"{c:{w}}" for c, w in cols) + " limit 1-stream")
    for r in rows:
        for b in ("hf", "vllm"):
            x = r[b]
            lim = r["bandwidth_limit_tokens_per_s_one_stream"][b]
            print(
                f"{r['model']:10} {b:7} {x['dtype']:9} {x['tokens_per_s']:9.1f} {x['problems_per_s']:8.2f} "
                f"{x['tokens']:7d} {x['seconds']:7.1f} {lim:15,d}"
            )
        print(f"{'':10} vllm/hf {r['ratio_tokens_per_s']:.2f}x tokens/s; answers agree {r['answers_agree']:.1%}")
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
