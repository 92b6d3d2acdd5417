"""The efficiency promise, measured: the reference model, its quantized version, the quantized
version with the repair adapter, and the adapter merged onto the quantized grid (`repair --merge`).

For each: bytes on disk, peak resident memory of a process that loads it and generates, and greedy
generation tokens/s through the HF backend (and vLLM where its CPU build can serve the checkpoint).
Each variant runs in a fresh process, so peak memory is its own. A repair run supplies the adapter
and the quantized base (`make demo` writes runs/demo-repair); the merged checkpoint is made here from
the same adapter when the run has none.

    python bench/efficiency.py [--repair runs/demo-repair] [--n 64] [--merge-method gptq] [--device cuda]

`--device cuda` runs the HF backend on the GPU (vLLM's CPU build stays on CPU, so it is left out)
and adds each process's peak GPU memory (torch.cuda.max_memory_allocated).

What it cannot show: this is an 8.5M-parameter model on CPU. The HF backend dequantizes
compressed-tensors weights to dense float32 at load, so on this path a 2-bit checkpoint is small on
disk but neither lighter in memory nor faster than the reference; the adapter is merged into the dense
weights at load (pipeline.py), so it costs nothing at generation time either. Low-bit speed needs
low-bit kernels (vLLM on GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import ROOT, run_meta  # noqa: E402

VLLM_PY = ROOT / ".venv-vllm" / "bin" / "python"
_WHO = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)


def _bytes(*dirs: Path | None) -> int:
    return sum(f.stat().st_size for d in dirs if d for f in Path(d).glob("*.safetensors"))


def _child(args: argparse.Namespace) -> None:
    """Load one variant, generate args.n greedy solutions after a warm-up, print one JSON line."""
    from silverbullet.benchmarks.synthetic_task import generate as problems
    from silverbullet.generation import GenerationConfig
    from silverbullet.generation.base import close_generator
    from silverbullet.prompting import build_prompt

    prompts = [build_prompt(p.question) for p in problems("eval", args.n)]
    cfg = GenerationConfig(batch_size=args.n)
    t0 = time.perf_counter()
    if args.backend == "vllm":
        from silverbullet.generation.vllm import cpu_kernel_gap, create

        gap = cpu_kernel_gap(args.model)
        if gap:
            print(json.dumps({"skipped": gap}))
            return
        gen = create(args.model, tag="bench", adapter=args.adapter, device="cpu")
    else:
        from silverbullet.generation.hf import HFGenerator

        gen = HFGenerator(args.model, tag="bench", device=args.device, adapter=args.adapter)
    gen.generate(prompts[:4], cfg.replace(batch_size=4))  # load + warm-up
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    outs = gen.generate(prompts, cfg)
    secs = time.perf_counter() - t0
    tokens = sum(o.n_tokens for o in outs)
    close_generator(gen)  # a vLLM engine process ends and is reaped: its peak counts in RUSAGE_CHILDREN
    gpu: dict = {}
    if args.device.startswith("cuda"):
        import torch

        gpu = {"peak_gpu_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    print(
        json.dumps(
            {
                **gpu,
                "tokens": tokens,
                "seconds": round(secs, 2),
                "tokens_per_s": round(tokens / secs, 1),
                "load_and_warmup_s": round(load_s, 1),
                # the largest process's peak: vLLM runs its engine in a child process
                "peak_rss_mib": round(max(resource.getrusage(w).ru_maxrss for w in _WHO) / 1024, 1),
            }
        )
    )


def _measure(python: Path | str, backend: str, model: Path, adapter: Path | None, n: int, device: str = "cpu") -> dict:
    cmd = [str(python), __file__, "--child", "--backend", backend, "--model", str(model), "--n", str(n)]
    cmd += ["--device", device]
    if adapter:
        cmd += ["--adapter", str(adapter)]
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # keep a carried site
    env = {**os.environ, "PYTHONPATH": path, "VLLM_LOGGING_LEVEL": "ERROR"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=1800)
    lines = [x for x in r.stdout.splitlines() if x.startswith("{")]
    if r.returncode != 0 or not lines:
        return {"error": (r.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def _merged(repair: Path, quantized: Path, adapter: Path, method: str) -> Path:
    """The run's merged checkpoint, or one made now from its adapter (calibration: its SFT set)."""
    have = repair / "merged"
    if (have / "config.json").exists():
        return have
    from silverbullet.repair.merge import merge_adapter

    sft = repair / "silverbullet_sft.jsonl"
    texts = (
        [r["prompt"] + r["completion"] for r in map(json.loads, sft.read_text().splitlines())] if sft.exists() else []
    )
    out = ROOT / "runs" / "_bench_efficiency" / f"merged-{method}"
    path, _ = merge_adapter(str(quantized), adapter, out, method, texts or None)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repair", default="runs/demo-repair", help="a `silverbullet repair` output dir")
    ap.add_argument("--n", type=int, default=64, help="problems generated per variant (one batch)")
    ap.add_argument("--merge-method", default="gptq")
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--device", default="cpu", help="the HF backend's device: cpu or cuda[:N]")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "efficiency.json"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="hf", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--adapter", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    repair = Path(args.repair)
    summary = json.loads((repair / "repair_summary.json").read_text())
    run_cfg = json.loads((Path(summary["eval_run"]) / "config.json").read_text())
    reference, quantized = Path(run_cfg["reference"]), Path(run_cfg["quantized"])
    adapter = repair / "adapter"
    merged = _merged(repair, quantized, adapter, args.merge_method)
    variants = [
        ("reference", reference, None),
        ("quantized", quantized, None),
        ("quantized + adapter", quantized, adapter),
        (f"merged ({args.merge_method})", merged, None),
    ]
    on_gpu = args.device.startswith("cuda")
    no_vllm = args.no_vllm or on_gpu or not VLLM_PY.exists()
    backends = [("hf", sys.executable)] + ([] if no_vllm else [("vllm", VLLM_PY)])
    meta = run_meta()
    rows = []
    for name, model, adp in variants:
        row = {"variant": name, "model": str(model), "adapter": str(adp) if adp else None, "bytes": _bytes(model, adp)}
        for backend, py in backends:
            row[backend] = _measure(py, backend, model, adp, args.n, args.device if backend == "hf" else "cpu")
        rows.append(row)
    table = _table(rows, [b for b, _ in backends], args.n, args.device)
    print(table)
    result = {
        "meta": meta,
        "n": args.n,
        "device": args.device,
        "repair_run": str(repair),
        "rows": rows,
        "table": table,
        "note": __doc__.split("What it cannot show: ")[1].strip(),
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


def _table(rows: list[dict], backends: list[str], n: int, device: str = "cpu") -> str:
    def cell(m: dict, key: str, fmt: str) -> str:
        if "skipped" in m:
            return "not served (CPU)"
        if "error" in m:
            return "failed"
        return fmt.format(m[key])

    gpu = device.startswith("cuda")
    cols = [
        f"{b}: peak RSS (MiB) | " + ("hf: peak GPU memory (MiB) | " if gpu and b == "hf" else "") + f"{b}: tok/s"
        for b in backends
    ]
    head = "| variant | on disk (MB) | " + " | ".join(cols) + " |"
    where = "on the GPU (HF backend)" if gpu else "2 CPU threads"
    out = [f"Greedy generation of {n} evaluation problems in one batch, {where}, one process per variant.", "", head]
    out.append("|" + "---|" * (2 + 2 * len(backends) + gpu))
    for r in rows:
        cells = [r["variant"], f"{r['bytes'] / 1e6:.2f}"]
        for b in backends:
            cells += [cell(r[b], "peak_rss_mib", "{:.0f}")]
            if gpu and b == "hf":
                cells += [cell(r[b], "peak_gpu_mib", "{:.0f}")]
            cells += [cell(r[b], "tokens_per_s", "{:.0f}")]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
