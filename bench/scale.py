"""What the tool costs at real model sizes, on one GPU: random weights in the shapes of Qwen2.5-0.5B,
1.5B, 7B and Llama-3.1-8B (configs written here from their public config.json values; no hub access).

Measures, per shape, in bf16:
- HF-backend decode throughput as `diagnose` drives it: greedy `generate()` with the KV cache,
  left-padded prompts of GSM8K length, a fixed number of new tokens (random weights never write an
  answer line, so every row runs to the limit), tokens/s and peak GPU memory per batch size;
- `diagnose` wall time on the 1,319 GSM8K test problems, extrapolated from that throughput (two
  models x 1,319 generations; labelled `extrapolated`);
- LoRA repair training time for 332 examples of GSM8K length x 10 epochs (r=16 on every linear layer,
  the repair defaults, global batch 16), the base in bf16 and in bitsandbytes NF4: a measured number
  of optimizer steps, extrapolated to the full run (labelled), next to the paper's 3-5 GPU minutes.

No accuracy is claimed (the weights are random). Usage (on a GPU machine):
    python bench/scale.py --out bench/results/scale.json [--shapes qwen2.5-0.5b,llama-3.1-8b]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

# From the models' public config.json files (hidden, layers, heads, kv heads, intermediate, vocab, tie).
SHAPES = {
    "qwen2.5-0.5b": dict(arch="qwen2", hidden=896, layers=24, heads=14, kv=2, inter=4864, vocab=151936, tie=True),
    "qwen2.5-1.5b": dict(arch="qwen2", hidden=1536, layers=28, heads=12, kv=2, inter=8960, vocab=151936, tie=True),
    "qwen2.5-7b": dict(arch="qwen2", hidden=3584, layers=28, heads=28, kv=4, inter=18944, vocab=152064, tie=False),
    "llama-3.1-8b": dict(arch="llama", hidden=4096, layers=32, heads=32, kv=8, inter=14336, vocab=128256, tie=False),
}
GSM8K_TEST = 1319
PROMPT_TOKENS = 200  # a GSM8K question in the prompt format
NEW_TOKENS = 256  # a GSM8K solution is ~100-200 tokens; diagnose allows up to 320
TRAIN_EXAMPLES, EPOCHS, TRAIN_BATCH, TRAIN_TOKENS = 332, 10, 16, 350  # prompt + solution
PAPER_MINUTES = [3, 5]


def make_config(shape: dict):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv"],
        intermediate_size=shape["inter"],
        vocab_size=shape["vocab"],
        tie_word_embeddings=shape["tie"],
        max_position_embeddings=4096,
        pad_token_id=0,
        eos_token_id=1,
    )
    return Qwen2Config(**common) if shape["arch"] == "qwen2" else LlamaConfig(**common)


def build(shape: dict, nf4: bool = False):
    """A randomly initialised model of the shape on the GPU, in bf16 (or with its decoder linears
    swapped for bitsandbytes NF4 ones, as `--load-in-4bit` loads them; lm_head stays bf16)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(make_config(shape), dtype=torch.bfloat16)
    if nf4:
        import bitsandbytes as bnb

        for _name, mod in list(model.model.layers.named_modules()):
            for cname, child in list(mod.named_children()):
                if isinstance(child, torch.nn.Linear):
                    q = bnb.nn.Linear4bit(
                        child.in_features,
                        child.out_features,
                        bias=child.bias is not None,
                        compute_dtype=torch.bfloat16,
                        quant_type="nf4",
                        device="meta",
                    )
                    q.weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, quant_type="nf4").to("cuda")
                    if child.bias is not None:
                        q.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                    setattr(mod, cname, q)
        torch.cuda.empty_cache()
    model.eval()
    return model


def gen_throughput(model, vocab: int, batch: int, new_tokens: int = NEW_TOKENS) -> dict:
    """One `generate()` call as the HF backend makes it: greedy, KV cache, left-padded batch."""
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(2, vocab, (batch, PROMPT_TOKENS), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    mask[: batch // 2, : PROMPT_TOKENS // 4] = 0  # half the rows shorter (left padding), as in a real batch
    torch.cuda.reset_peak_memory_stats()
    with torch.no_grad():
        model.generate(input_ids=ids[:, :8], attention_mask=mask[:, :8], max_new_tokens=4, do_sample=False)  # warm
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        torch.cuda.synchronize()
    secs = time.perf_counter() - t0
    n = batch * (out.shape[1] - PROMPT_TOKENS)
    return {
        "batch": batch,
        "prompt_tokens": PROMPT_TOKENS,
        "new_tokens": new_tokens,
        "seconds": round(secs, 2),
        "tokens_per_s": round(n / secs, 1),
        "ms_per_decode_step": round(1000 * secs / new_tokens, 1),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def compiled_ratio(model, vocab: int, batch: int, new_tokens: int = NEW_TOKENS) -> dict:
    """Plain `generate()` against a static KV cache + torch.compile'd decode step (transformers'
    `cache_implementation="static"`), same prompts and batch, measured in one run; the greedy
    tokens are compared (bf16 kernels may differ in the last bits)."""
    import torch

    g = torch.Generator(device="cuda").manual_seed(0)
    ids = torch.randint(2, vocab, (batch, PROMPT_TOKENS), device="cuda", generator=g)
    mask = torch.ones_like(ids)
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
              do_sample=False, pad_token_id=0)
    res = {"batch": batch, "new_tokens": new_tokens}
    outs = {}
    for name, extra in (("plain", {}), ("static+compile", {"cache_implementation": "static"})):
        with torch.no_grad():
            t0 = time.perf_counter()
            model.generate(**kw, **extra)  # warm-up (compiles for the static cache)
            torch.cuda.synchronize()
            res[f"{name}_first_call_s"] = round(time.perf_counter() - t0, 2)
            t0 = time.perf_counter()
            outs[name] = model.generate(**kw, **extra)
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        res[f"{name}_tokens_per_s"] = round(batch * new_tokens / secs, 1)
    res["speedup"] = round(res["static+compile_tokens_per_s"] / res["plain_tokens_per_s"], 2)
    a, b = outs["plain"][:, PROMPT_TOKENS:], outs["static+compile"][:, PROMPT_TOKENS:]
    res["rows_identical"] = int((a == b).all(dim=1).sum())
    return res


def train_time(model, vocab: int, steps: int, checkpointing: bool = False) -> dict:
    """LoRA (repair defaults: r=16, alpha=32, every linear of the decoder, lr 1e-3, AdamW) on a
    global batch of 16 rows of TRAIN_TOKENS tokens, bf16 autocast; `steps` timed after 2 warm-ups."""
    import torch
    from peft import LoraConfig, get_peft_model

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules=targets, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator(device="cuda").manual_seed(1)
    ids = torch.randint(2, vocab, (TRAIN_BATCH, TRAIN_TOKENS), device="cuda", generator=g)
    labels = ids.clone()
    labels[:, : TRAIN_TOKENS // 2] = -100  # completion-only loss, as the repair SFT trains
    torch.cuda.reset_peak_memory_stats()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / steps
    total_steps = math.ceil(TRAIN_EXAMPLES / TRAIN_BATCH) * EPOCHS
    return {
        "examples": TRAIN_EXAMPLES,
        "epochs": EPOCHS,
        "batch": TRAIN_BATCH,
        "tokens_per_row": TRAIN_TOKENS,
        "steps_measured": steps,
        "seconds_per_step": round(per_step, 3),
        "steps_full_run": total_steps,
        "minutes_full_run": round(per_step * total_steps / 60, 2),
        "minutes_full_run_is": f"extrapolated from {steps} measured steps",
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "gradient_checkpointing": checkpointing,
    }


def run_shape(name: str, batches: list[int], steps: int, deadline: float) -> dict:
    import gc

    import torch

    shape = SHAPES[name]
    row: dict = {"shape": name, "config": shape, "generation": [], "not_run": []}
    model = build(shape)
    row["params_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    for b in batches:
        if time.time() > deadline:
            row["not_run"].append(f"generation batch {b}: out of the time budget")
            continue
        try:
            row["generation"].append(gen_throughput(model, shape["vocab"], b))
        except torch.OutOfMemoryError:
            row["not_run"].append(f"generation batch {b}: CUDA out of memory")
            torch.cuda.empty_cache()
    if row["generation"]:
        best = max(row["generation"], key=lambda r: r["tokens_per_s"])
        tokens = 2 * GSM8K_TEST * NEW_TOKENS  # reference + quantized, every row to the token limit
        row["diagnose_gsm8k"] = {
            "problems": GSM8K_TEST,
            "generations": 2 * GSM8K_TEST,
            "new_tokens_each": NEW_TOKENS,
            "batch": best["batch"],
            "minutes": round(tokens / best["tokens_per_s"] / 60, 2),
            "is": "extrapolated from the measured tokens/s at that batch (generation only, no attribution)",
        }
    for base in ("bf16", "nf4"):
        if time.time() > deadline:
            row["not_run"].append(f"training ({base} base): out of the time budget")
            continue
        try:
            if base == "nf4":
                del model
                gc.collect()
                torch.cuda.empty_cache()
                model = build(shape, nf4=True)
            try:
                row[f"train_{base}"] = train_time(model, shape["vocab"], steps)
            except torch.OutOfMemoryError:  # what a user does next: the same run with checkpointing
                row["not_run"].append(f"training ({base} base) without gradient checkpointing: CUDA out of memory")
                model = model.unload() if hasattr(model, "unload") else model
                gc.collect()
                torch.cuda.empty_cache()
                row[f"train_{base}"] = train_time(model, shape["vocab"], steps, checkpointing=True)
        except torch.OutOfMemoryError:
            row["not_run"].append(f"training ({base} base): CUDA out of memory at batch {TRAIN_BATCH}")
        except ImportError as e:
            row["not_run"].append(f"training ({base} base): {e}")
        finally:
            gc.collect()
            torch.cuda.empty_cache()
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return row


def environment() -> dict:
    import torch
    import transformers

    env = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
    for mod in ("peft", "bitsandbytes"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            env[mod] = None
    return env


def table(res: dict) -> str:
    lines = [
        "| shape | params | decode tok/s (batch) | peak GiB | diagnose GSM8K (min, extrap.) "
        "| LoRA 332x10 bf16 base (min) | LoRA NF4 base (min) | paper |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        gen = ", ".join(f"{g['tokens_per_s']:.0f} ({g['batch']})" for g in r["generation"]) or "not run"
        peak = max((g["peak_gib"] for g in r["generation"]), default=None)
        d = r.get("diagnose_gsm8k", {}).get("minutes", "not run")
        tb = r.get("train_bf16", {}).get("minutes_full_run", "not run")
        tn = r.get("train_nf4", {}).get("minutes_full_run", "not run")
        lines.append(f"| {r['shape']} | {r.get('params_b')}B | {gen} | {peak} | {d} | {tb} | {tn} | 3-5 |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--batches", default="64,256")
    ap.add_argument("--train-steps", type=int, default=6)
    ap.add_argument("--budget-s", type=float, default=480.0, help="stop starting new measurements after this")
    ap.add_argument("--out", default="bench/results/scale.json")
    ap.add_argument("--compile-only", action="store_true", help="only the static-cache + compile ratio (batch 64)")
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("bench/scale.py needs a CUDA GPU")
    deadline = time.time() + args.budget_s
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    res = {
        "what": "random weights in real model shapes; no accuracy claimed",
        "environment": environment(),
        "paper_repair_gpu_minutes": PAPER_MINUTES,
        "rows": [],
    }
    if args.compile_only:
        res["rows"] = []
        for name in args.shapes.split(","):
            if time.time() > deadline:
                break
            try:
                model = build(SHAPES[name])
                row = {"shape": name, **compiled_ratio(model, SHAPES[name]["vocab"], int(args.batches.split(",")[0]))}
                del model
            except Exception as e:
                row = {"shape": name, "failed": f"{type(e).__name__}: {str(e)[:300]}"}
            torch.cuda.empty_cache()
            res["rows"].append(row)
            out.write_text(json.dumps(res, indent=1))
            print(json.dumps(row), flush=True)
        return
    for name in args.shapes.split(","):
        if time.time() > deadline:
            res["rows"].append({"shape": name, "generation": [], "not_run": ["out of the time budget"]})
            continue
        try:
            row = run_shape(name, [int(b) for b in args.batches.split(",")], args.train_steps, deadline)
        except Exception as e:  # one shape's failure is recorded, the others still run
            row = {"shape": name, "generation": [], "not_run": [f"failed: {type(e).__name__}: {str(e)[:300]}"]}
            torch.cuda.empty_cache()
        res["rows"].append(row)
        out.write_text(json.dumps(res, indent=1))  # after each shape: a cut-off run keeps what it measured
        print(json.dumps(res["rows"][-1]), flush=True)
    res["table"] = table(res)
    out.write_text(json.dumps(res, indent=1))
    print(res["table"])


if __name__ == "__main__":
    main()
