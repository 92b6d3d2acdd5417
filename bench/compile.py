"""The HF backend's compiled decode (`--compile`: static KV cache + torch.compile, CUDA graphs) against
its plain decode, through `HFGenerator` itself (margins on, the answer-line stop, as `diagnose` runs
it), measured in one run on one GPU:

1. identity on the reference model (data/reference-model): greedy solutions of N evaluation problems
   of the reference task, plain and compiled at the same batch size: texts, answers, token counts,
   margins compared; both runs timed on their second pass (the first compiles);
2. speed on random-weight models in the shapes of Qwen2.5-1.5B and 7B (bench/scale.py's configs, the
   reference tokenizer feeding ~200-token prompts): tokens/s of one batch, plain vs compiled, each timed
   on its second call after a warm-up; the ratio is the figure;
3. CUDA out-of-memory: the process's GPU memory capped (torch.cuda.set_per_process_memory_fraction) so
   a large batch does not fit a real-shape model; the generator must halve the batch, return every
   output in order, and match an uncapped run at the batch size that fitted.

Random weights write no answers: their rows run to the token limit, and their token identity says
nothing (near-flat logits flip argmax ties between kernels). Usage, on a GPU machine:
    python bench/compile.py --out bench/results/compile.json
CPU smoke run (no compiler there: checks the script, measures nothing): --smoke
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _meta import run_meta  # noqa: E402

from silverbullet.benchmarks.synthetic_task import generate as task_problems  # noqa: E402
from silverbullet.generation import GenerationConfig, HFGenerator  # noqa: E402
from silverbullet.prompting import build_prompt, extract_answer  # noqa: E402


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(gen: HFGenerator, prompts: list[str], cfg: GenerationConfig) -> tuple[list, float]:
    _sync()
    t0 = time.perf_counter()
    outs = gen.generate(prompts, cfg)
    _sync()
    return outs, time.perf_counter() - t0


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch._dynamo.reset()  # drops compiled graphs (and their CUDA-graph pools) of a freed model
        torch.cuda.empty_cache()


def _passes(gen: HFGenerator, cfg: GenerationConfig) -> list[tuple[str, GenerationConfig]]:
    """plain, then compiled; for grouped KV heads also the compiled decode with transformers' sdpa
    (K/V copied per query head) before gqa_attention's (generation/gqa_attention.py): run first, so
    the model still has sdpa, and with its own decoder (compiled graph)."""
    passes = [("plain", cfg), ("compiled", cfg.replace(compile=True))]
    text_cfg = gen.model.config.get_text_config(decoder=True)
    if text_cfg.num_key_value_heads != text_cfg.num_attention_heads and not gen._gqa_checked:
        passes.insert(1, ("compiled_kv_copy", cfg.replace(compile=True)))
    return passes


def _before_pass(gen: HFGenerator, name: str, res: dict) -> None:
    if name == "compiled_kv_copy":
        gen._gqa_checked = True  # keep transformers' sdpa for this pass
    elif name == "compiled" and "compiled_kv_copy" in res:
        gen._gqa_checked = False  # the next compiled decode switches to gqa_attention, with a new graph
        gen._decoders.clear()
        _free()


def identity(reference: str, n: int, batch: int, max_new: int, dtype: str, device: str) -> dict:
    """Plain vs compiled HFGenerator on the reference model, each run twice (the second timed)."""
    problems = list(task_problems("eval", n))
    prompts = [build_prompt(p.question) for p in problems]
    gen = HFGenerator(reference, tag="reference", device=device, dtype=dtype)
    cfg = GenerationConfig(batch_size=batch, max_new_tokens=max_new, margins=True)
    res: dict = {"model": reference, "dtype": str(gen.model.dtype), "problems": n, "batch": batch,
                 "max_new_tokens": max_new}  # fmt: skip
    outs = {}
    for name, c in _passes(gen, cfg):
        _before_pass(gen, name, res)
        _, first = _timed(gen, prompts, c)
        outs[name], second = _timed(gen, prompts, c)
        toks = sum(o.n_tokens for o in outs[name])
        res[name] = {"first_pass_s": round(first, 2), "second_pass_s": round(second, 2), "tokens": toks,
                     "tokens_per_s": round(toks / second, 1),
                     "accuracy": round(sum(extract_answer(o.text) == str(p.answer)
                                           for o, p in zip(outs[name], problems)) / n, 4)}  # fmt: skip
    a, b = outs["plain"], outs["compiled"]
    res["texts_identical"] = sum(x.text == y.text for x, y in zip(a, b))
    res["answers_identical"] = sum(extract_answer(x.text) == extract_answer(y.text) for x, y in zip(a, b))
    res["n_tokens_identical"] = sum(x.n_tokens == y.n_tokens for x, y in zip(a, b))
    res["share_texts_identical"] = round(res["texts_identical"] / n, 4)
    same = [(x, y) for x, y in zip(a, b) if x.text == y.text]
    res["max_margin_abs_diff_where_text_identical"] = round(
        max((abs(u - v) for x, y in same for u, v in zip(x.margins or [], y.margins or [])), default=0.0), 5
    )
    diff = [i for i, (x, y) in enumerate(zip(a, b)) if x.text != y.text]
    res["first_differences"] = [
        {"problem": i, "plain": a[i].text[-160:], "compiled": b[i].text[-160:]} for i in diff[:3]
    ]
    res["speedup_second_pass"] = round(res["plain"]["second_pass_s"] / res["compiled"]["second_pass_s"], 2)
    del gen
    _free()
    return res


def long_prompts(tok, n: int, min_tokens: int) -> list[str]:
    """Prompts of about `min_tokens` reference-tokenizer tokens (GSM8K-like length): questions joined."""
    qs = [p.question for p in task_problems("eval", 4 * n)]
    out, k = [], 0
    while len(out) < n:
        text = qs[k % len(qs)]
        k += 1
        while len(tok(build_prompt(text))["input_ids"]) < min_tokens:
            text += " " + qs[k % len(qs)]
            k += 1
        out.append(build_prompt(text))
    return out


def ratio(
    shape_name: str,
    tok,
    batch: int,
    new_tokens: int,
    prompt_tokens: int,
    device: str,
    margins: bool = True,
    equal_prompts: bool = False,
    gen: HFGenerator | None = None,
) -> tuple[dict, object]:
    """Plain vs compiled decode of one batch through HFGenerator on a random-weight model.
    `equal_prompts`: every prompt cut to the same token count (no left padding)."""
    import torch
    from scale import SHAPES, build

    if gen is not None:
        model = gen.model
    elif device == "cpu":  # smoke: a small model of the same family
        from transformers import AutoModelForCausalLM, Qwen2Config

        small = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     intermediate_size=128, vocab_size=1000, pad_token_id=0, eos_token_id=1)  # fmt: skip
        model = AutoModelForCausalLM.from_config(Qwen2Config(**small))
    else:
        model = build(SHAPES[shape_name])
    gen = gen or HFGenerator(model=model, tokenizer=tok, tag=shape_name)
    prompts = long_prompts(tok, batch, prompt_tokens)
    if equal_prompts:
        prompts = [tok.decode(tok(p)["input_ids"][:prompt_tokens]) for p in prompts]
    cfg = GenerationConfig(batch_size=batch, max_new_tokens=new_tokens, margins=margins)
    res: dict = {"shape": shape_name, "margins": margins, "equal_prompts": equal_prompts,
                  "params_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
                 "batch": batch, "new_tokens": new_tokens,
                 "prompt_tokens_mean": round(sum(len(tok(p)["input_ids"]) for p in prompts) / batch, 1)}  # fmt: skip
    outs = {}
    for name, c in _passes(gen, cfg):
        _before_pass(gen, name, res)
        _, first = _timed(gen, prompts, c)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        outs[name], secs = _timed(gen, prompts, c)
        steps = max(o.n_tokens for o in outs[name])  # a row that never stops ran every step
        res[name] = {"first_call_s": round(first, 2), "seconds": round(secs, 3), "decode_steps": steps,
                     "tokens_per_s": round(batch * steps / secs, 1),
                     "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                     if torch.cuda.is_available() else None}  # fmt: skip
    res["speedup"] = round(res["compiled"]["tokens_per_s"] / res["plain"]["tokens_per_s"], 2)
    if "compiled_kv_copy" in res:
        res["speedup_kv_copy"] = round(res["compiled_kv_copy"]["tokens_per_s"] / res["plain"]["tokens_per_s"], 2)
        res["attention"] = gen.model.config._attn_implementation
    res["rows_identical_random_weights"] = sum(x.text == y.text for x, y in zip(outs["plain"], outs["compiled"]))
    return res, gen


def oom(gen: HFGenerator, tok, big: int, new_tokens: int, prompt_tokens: int, keep: float) -> dict:
    """Cap the process's GPU memory so batch `big` does not fit; the plain path, then the compiled
    path (first compiled in this process, so no graph memory is held yet), must halve the batch and
    lose nothing. The cap is set from the plain path's uncapped peak."""
    import torch

    prompts = long_prompts(tok, big, prompt_tokens)
    cfg = GenerationConfig(batch_size=big, max_new_tokens=new_tokens, margins=True)
    gen._fits = None
    _free()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    uncapped, secs_uncapped = _timed(gen, prompts, cfg)
    peak = torch.cuda.max_memory_allocated()
    total = torch.cuda.get_device_properties(0).total_memory
    cap = base + keep * (peak - base)
    res: dict = {"model": gen.tag, "prompts": big, "new_tokens": new_tokens,
                 "weights_and_rest_gib": round(base / 2**30, 2), "uncapped_peak_gib": round(peak / 2**30, 2),
                 "cap_gib": round(cap / 2**30, 2), "cap_fraction_of_gpu": round(cap / total, 4),
                 "uncapped_s": round(secs_uncapped, 2)}  # fmt: skip
    real = gen._generate_batch
    for name, c in (("plain", cfg), ("compiled", cfg.replace(compile=True))):
        sizes: list[int] = []
        errors: list[int] = []

        def spy(batch, config, sizes=sizes, errors=errors):
            sizes.append(len(batch))
            try:
                return real(batch, config)
            except torch.OutOfMemoryError:
                errors.append(len(batch))
                raise

        gen._generate_batch = spy
        gen._fits = None
        _free()
        torch.cuda.set_per_process_memory_fraction(cap / total)
        try:
            capped, secs_capped = _timed(gen, prompts, c)
        except Exception as e:  # recorded: the other path still runs
            res[name] = {"failed": f"{type(e).__name__}: {str(e)[:300]}", "batch_sizes_tried": sizes}
            continue
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0)
            gen._generate_batch = real
        fitted = gen._fits
        gen._fits = None
        _free()
        same_batch, _ = _timed(gen, prompts, c.replace(batch_size=fitted or big))
        res[name] = {
            "batch_sizes_tried": sizes,
            "out_of_memory_at": errors,
            "batch_that_fitted": fitted,
            "outputs_returned": sum(o is not None for o in capped),
            "identical_to_uncapped_same_batch": sum(x.text == y.text and x.margins == y.margins
                                                    for x, y in zip(capped, same_batch)),  # fmt: skip
            "identical_to_plain_uncapped_full_batch": sum(x.text == y.text for x, y in zip(capped, uncapped)),
            "capped_s": round(secs_capped, 2),
        }
    return res


def profile(gen: HFGenerator, tok, batch: int, new_tokens: int, prompt_tokens: int, top: int = 25) -> dict:
    """Where a decode step's GPU time goes: one batch through a StaticDecoder under torch.profiler,
    compiled (CUDA graphs: CUPTI may or may not see the kernels inside a replay) and eager (the same
    ops, unfused). Per mode: wall seconds, the summed kernel time, and the top kernels by it."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from silverbullet.generation.static_decode import StaticDecoder

    prompts = long_prompts(tok, batch, prompt_tokens)
    tok.padding_side = "left"
    enc = tok(prompts, padding=True, return_tensors="pt").to(gen.model.device)
    rows, prompt_len = enc["input_ids"].shape
    cache_len = -(-(prompt_len + new_tokens) // 256) * 256
    res: dict = {"batch": rows, "prompt_len": prompt_len, "new_tokens": new_tokens, "cache_len": cache_len}
    for mode in ("compiled", "eager"):
        dec = StaticDecoder(gen.model, rows, cache_len, compile=mode == "compiled")

        def run(dec=dec):
            return dec.decode(enc["input_ids"], enc["attention_mask"], new_tokens, lambda ids, start, row: None,
                              margins=True)  # fmt: skip

        run()  # compiles / warms
        _sync()
        t0 = time.perf_counter()
        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            out = run()
            _sync()
        wall = time.perf_counter() - t0
        events = []
        for e in prof.key_averages():
            dev = getattr(e, "self_device_time_total", None)
            dev = getattr(e, "self_cuda_time_total", 0) if dev is None else dev
            if dev:
                events.append((dev, e.count, e.key))
        events.sort(reverse=True)
        kernel_us = sum(d for d, _, _ in events)
        res[mode] = {"wall_s": round(wall, 3), "steps": out.steps, "device_time_s": round(kernel_us / 1e6, 3),
                     "ms_per_step_wall": round(1e3 * wall / out.steps, 3),
                     "ms_per_step_device": round(kernel_us / 1e3 / out.steps, 3),
                     "top": [{"kernel": k[:160], "calls": c, "ms": round(d / 1e3, 2),
                              "share": round(d / max(kernel_us, 1), 4)} for d, c, k in events[:top]]}  # fmt: skip
        del dec, prof
        _free()
    return res


def environment() -> dict:
    import torch
    import transformers

    return {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "triton": getattr(__import__("triton"), "__version__", None) if torch.cuda.is_available() else None,
    }


def table(res: dict) -> str:
    lines = ["| what | plain | compiled | ratio | identical |", "|---|---|---|---|---|"]
    for r in res.get("identity", []):
        if "plain" in r:
            lines.append(f"| reference model {r['dtype']}, {r['problems']} problems, batch {r['batch']} (s, 2nd pass) "
                         f"| {r['plain']['second_pass_s']} | {r['compiled']['second_pass_s']} "
                         f"| {r['speedup_second_pass']}x | {r['texts_identical']}/{r['problems']} texts |")  # fmt: skip
    for r in res.get("speed", []):
        if "plain" in r:
            v = "" if r.get("margins", True) else ", no margins"
            v += ", equal prompts" if r.get("equal_prompts") else ""
            lines.append(f"| {r['shape']} random weights, batch {r['batch']}{v} (tok/s) | {r['plain']['tokens_per_s']} "
                         f"| {r['compiled']['tokens_per_s']} | {r['speedup']}x | (not meaningful) |")  # fmt: skip
            if "compiled_kv_copy" in r:
                lines.append(f"| same, compiled with transformers' sdpa (K/V copied per head) | "
                             f"{r['plain']['tokens_per_s']} | {r['compiled_kv_copy']['tokens_per_s']} "
                             f"| {r['speedup_kv_copy']}x | |")  # fmt: skip
    o = res.get("oom") or {}
    for key in ("plain", "compiled"):
        if "batch_sizes_tried" in o.get(key, {}):
            r = o[key]
            lines.append(f"| OOM, {key}: cap {o['cap_gib']} GiB, {o['prompts']} prompts: batches "
                         f"{r['batch_sizes_tried']} | | | | {r.get('identical_to_uncapped_same_batch')}/{o['prompts']} "
                         "vs uncapped |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=str(ROOT / "data" / "reference-model"))
    ap.add_argument("--problems", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--shapes", default="qwen2.5-1.5b,qwen2.5-7b")
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=200)
    ap.add_argument("--oom-batch", type=int, default=256)
    ap.add_argument("--oom-keep", type=float, default=0.6, help="cap = weights + this share of batch's peak")
    ap.add_argument("--fp32", action="store_true", help="also the identity check in float32, time allowing")
    ap.add_argument("--variants", action="store_true",
                    help="only the first shape, speed variants: margins off, equal prompts, batch x2")  # fmt: skip
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no new section after this")
    ap.add_argument("--out", default="bench/results/compile.json")
    ap.add_argument("--smoke", action="store_true", help="CPU: tiny sizes, checks the script only")
    ap.add_argument("--oom-only", action="store_true", help="only the OOM test, on a fresh first shape")
    ap.add_argument("--no-oom", action="store_true", help="skip the OOM test (run it alone with --oom-only)")
    ap.add_argument("--no-identity", action="store_true", help="skip the reference-model identity check")
    ap.add_argument("--profile", action="store_true",
                    help="also profile each shape's decode (kernel time per step, top kernels)")  # fmt: skip
    args = ap.parse_args(argv)
    import torch
    from transformers import AutoTokenizer

    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench/compile.py needs a CUDA GPU (or --smoke)")
    if args.smoke:
        args.problems, args.batch, args.new_tokens, args.prompt_tokens, args.shapes = 6, 4, 8, 40, "tiny"
    deadline = time.time() + args.budget_s
    meta = run_meta()
    meta["commit"] = os.environ.get("BENCH_COMMIT", meta["commit"])  # a device copy carries no .git
    res: dict = {"what": __doc__.split("\n\n")[0], "meta": meta, "environment": environment(),
                 "identity": [], "speed": [], "not_run": []}  # fmt: skip
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(section: str, row) -> None:
        out.write_text(json.dumps(res, indent=1))
        print(section, json.dumps(row), flush=True)

    def guarded(section: str, fn):
        if time.time() > deadline:
            res["not_run"].append(f"{section}: out of the time budget")
            save(section, res["not_run"][-1])
            return None
        try:
            return fn()
        except Exception as e:  # one section's failure is recorded; the others still run
            import traceback

            traceback.print_exc()
            row = {"failed": f"{type(e).__name__}: {str(e)[:400]}"}
            res["not_run"].append(f"{section}: {row['failed']}")
            _free()
            return row

    if args.oom_only:
        from scale import SHAPES, build

        tok = AutoTokenizer.from_pretrained(args.reference)
        name = args.shapes.split(",")[0]
        fresh = HFGenerator(model=build(SHAPES[name]), tokenizer=tok, tag=name)
        o = guarded("oom", lambda: oom(fresh, tok, args.oom_batch, 64, args.prompt_tokens, args.oom_keep))
        res["oom"] = o
        save("oom", o)
        return
    if args.variants:
        tok = AutoTokenizer.from_pretrained(args.reference)
        name, gen = args.shapes.split(",")[0], None
        for margins, equal, batch in ((False, False, args.batch), (False, True, args.batch),
                                      (True, False, 2 * args.batch)):  # fmt: skip
            def variant(m=margins, e=equal, b=batch, g=gen):
                return ratio(name, tok, b, args.new_tokens, args.prompt_tokens, device, m, e, g)

            got = guarded(f"variant {margins} {equal} {batch}", variant)
            if isinstance(got, tuple):
                row, gen = got
                res["speed"].append(row)
                save("variant", row)
        res["table"] = table(res)
        out.write_text(json.dumps(res, indent=1))
        print(res["table"])
        return
    row = None if args.no_identity else guarded(
        "identity", lambda: identity(args.reference, args.problems, args.batch, 320, "auto", device)
    )
    if row:
        res["identity"].append(row)
        save("identity", row)
    tok = AutoTokenizer.from_pretrained(args.reference)
    for i, name in enumerate(args.shapes.split(",")):
        def speed(name=name):
            return ratio(name, tok, args.batch, args.new_tokens, args.prompt_tokens, device)

        got = guarded(f"speed {name}", speed)
        if got is None:
            continue
        row, gen = got if isinstance(got, tuple) else (got, None)
        res["speed"].append(row)
        save(f"speed {name}", row)
        if args.profile and gen is not None:
            p = guarded(f"profile {name}", lambda gen=gen: profile(gen, tok, args.batch, args.new_tokens,
                                                                   args.prompt_tokens))  # fmt: skip
            if p:
                res.setdefault("profile", {})[name] = p
                save(f"profile {name}", {k: v for k, v in p.items() if k not in ("compiled", "eager")})
        if i == 0 and gen is not None and device == "cuda" and not args.no_oom:  # OOM test on the first shape
            o = guarded("oom", lambda gen=gen: oom(gen, tok, args.oom_batch, 64, args.prompt_tokens, args.oom_keep))
            if o:
                res["oom"] = o
                save("oom", o)
        del gen, got
        _free()
    if args.fp32:
        row = guarded("identity fp32", lambda: identity(args.reference, args.problems, args.batch, 320, "float32",
                                                         device))  # fmt: skip
        if row:
            res["identity"].append(row)
            save("identity fp32", row)
    res["table"] = table(res)
    out.write_text(json.dumps(res, indent=1))
    print(res["table"])


if __name__ == "__main__":
    main()
