"""What the output head costs on a sliced input (`logits_to_keep`), with and without the project's
contiguous-input hook (generation/loading.py `contiguous_head_input`).

When the weights do not require grad (a model loaded with a PEFT adapter and merged, as the repair's
re-measure loads it; any frozen model), torch.matmul does not fold the strided [batch, k, hidden]
slice into one matrix product and copies the head's [vocab, hidden] weight once per batch row
instead. With weights that require grad (a plain from_pretrained) it folds, and the hook changes
nothing. This measures one forward of a Qwen2.5-1.5B-shaped model (random weights, untied head,
frozen unless --trainable) at several batch sizes: the peak memory above the model's own and the
seconds, before and after the hook. On CPU the model keeps 2 of its 28 layers
(the head's cost does not depend on them; `--layers` changes it).

    python bench/head_fold.py [--device cuda] [--batches 8,32,64] [--prompt-len 256]

JSON: bench/results/head_fold_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _meta import run_meta  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QWEN_1_5B = dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12, num_key_value_heads=2,
                 vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=False)  # fmt: skip


def _rss_mb() -> float:
    return int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024


def measure(model, batch: int, prompt_len: int, device: str, repeats: int) -> dict:
    """Peak memory above the model's (MB) and median seconds of one forward with logits_to_keep=1."""
    import torch

    ids = torch.randint(100, 50_000, (batch, prompt_len), device=device)
    times, peak = [], 0.0
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            base, top, stop = _rss_mb(), [0.0], threading.Event()

            def watch(top=top, stop=stop):
                while not stop.is_set():
                    top[0] = max(top[0], _rss_mb())
                    time.sleep(0.005)

            t = threading.Thread(target=watch, daemon=True)
            t.start()
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=ids, logits_to_keep=1)
        if device == "cuda":
            torch.cuda.synchronize()
            peak = max(peak, (torch.cuda.max_memory_allocated() - base) / 2**20)
        else:
            stop.set()
            t.join()
            peak = max(peak, top[0] - base)
        times.append(time.perf_counter() - t0)
    return {"batch": batch, "peak_extra_mb": round(peak, 1), "seconds": round(statistics.median(times), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="4,16")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--layers", type=int, default=None, help="default: 28 on cuda, 2 on cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dtype", default="bfloat16", help="bfloat16 or float32")
    ap.add_argument("--trainable", action="store_true", help="weights that require grad (the fold happens)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from silverbullet.generation.loading import contiguous_head_input

    layers = args.layers or (28 if args.device == "cuda" else 2)
    torch.manual_seed(0)
    cfg = Qwen2Config(num_hidden_layers=layers, **QWEN_1_5B)
    model = Qwen2ForCausalLM(cfg).to(dtype=getattr(torch, args.dtype), device=args.device).eval()
    model.requires_grad_(args.trainable)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for hook in (False, True):
        if hook:
            contiguous_head_input(model)
        measure(model, batches[0], args.prompt_len, args.device, 1)  # warm-up (kernels, allocator)
        for b in batches:
            r = {"hook": hook, **measure(model, b, args.prompt_len, args.device, args.repeats)}
            rows.append(r)
            print(f"hook {'on ' if hook else 'off'}  batch {b:3d}  peak +{r['peak_extra_mb']:9.1f} MB  "
                  f"{r['seconds']:.4f} s", flush=True)  # fmt: skip
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else None
    doc = {
        "meta": {**run_meta(), "device_name": device_name},
        "command": " ".join(sys.argv),
        "layers": layers,
        "dtype": args.dtype,
        "trainable": args.trainable,
        "prompt_len": args.prompt_len,
        "shape": QWEN_1_5B,
        "rows": rows,
    }
    out = Path(args.out or ROOT / "bench" / "results" / f"head_fold_{args.device}_{args.dtype}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"-> {out}")


if __name__ == "__main__":
    main()
