"""Train the reference model: a small LlamaForCausalLM on the reference task, from a seed.

A nanoGPT-style loop (readable in one sitting) rather than a Trainer: the data is generated, the
model is tiny, and what matters is throughput on one GPU and a reproducible recipe. Loss is on the
solution tokens only (the question is given, not predicted). The result is saved in bf16
safetensors (sharded under 16 MiB) with its tokenizer and a training log.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from silverbullet.benchmarks import synthetic_task as task
from silverbullet.prompting import build_prompt

if TYPE_CHECKING:  # torch is imported where it is used: the CLI reads TrainConfig's defaults at start
    import torch


@dataclass
class ModelConfig:
    hidden_size: int = 256
    num_hidden_layers: int = 8
    num_attention_heads: int = 8  # head_dim 32 (vLLM's CPU attention takes 32, 64, 80, ...)
    intermediate_size: int = 1024
    max_position_embeddings: int = 512


@dataclass
class TrainConfig:
    """The shipped model's recipe (`silverbullet reference train` uses these defaults)."""

    out: str = "data/reference-model"
    seed: int = 0
    steps: int = 20_000  # upper bound; on one H100 the time budget ends the schedule first
    batch_size: int = 512
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup: int = 200
    weight_decay: float = 0.1
    n_problems: int = 800_000  # distinct training problems (drawn again as steps need more)
    max_minutes: float = 7.0  # > 0: a wall-clock budget; the schedule anneals to fit it, then stops
    combine_weight: float = 4.0  # sampling weight of problems that end in a combining step
    bucket: int = 32  # batches drawn at once and sorted by length (1: no bucketing)
    log_every: int = 100
    eval_every: int = 0
    eval_n: int = 256
    final_eval_n: int = 1000
    device: str = "auto"
    workers: int = 16  # data generation chunks (fixed count keeps the data identical anywhere)


COMBINE_OPS = ("together", "difference")


def _gen_chunk(args: tuple[int, int]) -> list[tuple[str, str, bool]]:
    seed, n = args
    return [
        (build_prompt(p.question), p.solution, bool(p.ops) and p.ops[-1] in COMBINE_OPS)
        for p in task.generate("train", n, seed=seed)
    ]


def make_data(tok, n: int, workers: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (padded), prompt lengths, total lengths and combining-step flags of `n` training
    problems."""
    import torch

    per = math.ceil(n / workers)
    chunks = [(1000 + i, per) for i in range(workers)]
    procs = min(workers, mp.cpu_count())
    if procs > 1:
        with mp.get_context("fork").Pool(procs) as pool:
            parts = pool.map(_gen_chunk, chunks)
    else:
        parts = [_gen_chunk(c) for c in chunks]
    rows = [x for part in parts for x in part][:n]
    enc_p = tok.backend_tokenizer.encode_batch([p for p, _, _ in rows], add_special_tokens=False)
    enc_c = tok.backend_tokenizer.encode_batch([c for _, c, _ in rows], add_special_tokens=False)
    eos = tok.eos_token_id
    seqs = [a.ids + b.ids + [eos] for a, b in zip(enc_p, enc_c)]
    plen = torch.tensor([len(a.ids) for a in enc_p], dtype=torch.int32)
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.int32)
    width = int(lens.max())
    ids = torch.full((len(seqs), width), tok.pad_token_id, dtype=torch.int32)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.int32)
    combine = torch.tensor([c for _, _, c in rows], dtype=torch.bool)
    return ids, plen, lens, combine


def batches(lens: torch.Tensor, weights: torch.Tensor, batch_size: int, bucket: int, gen: torch.Generator):
    """Endless index batches. Problems are drawn by weight, `bucket` batches at a time, sorted by
    length and cut into batches (in shuffled order): random batches of this task are ~44% padding,
    length-sorted ones almost none, so a step costs about half."""
    import torch

    while True:
        idx = torch.multinomial(weights, batch_size * bucket, replacement=True, generator=gen)
        idx = idx[torch.argsort(lens[idx], stable=True)]
        for k in torch.randperm(bucket, generator=gen).tolist():
            yield idx[k * batch_size : (k + 1) * batch_size]


def build_model(vocab_size: int, cfg: ModelConfig, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    conf = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads,
        head_dim=cfg.hidden_size // cfg.num_attention_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        tie_word_embeddings=True,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(conf)


def quick_eval(model, tok, n: int, device: str, batch: int = 256) -> float:
    """Greedy exact-answer accuracy on the first `n` eval problems (training-time monitor only;
    the model card's figures come from `silverbullet reference eval`)."""
    import torch

    from silverbullet.grading import is_correct
    from silverbullet.prompting import extract_answer

    problems = list(task.generate("eval", n))
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, n, batch):
            chunk = problems[i : i + batch]
            enc = tok([build_prompt(p.question) for p in chunk], return_tensors="pt", padding=True)
            enc = {k: v.to(device) for k, v in enc.items()}
            out = model.generate(
                **enc, max_new_tokens=320, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id
            )
            texts = tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            correct += sum(is_correct(extract_answer(t), str(p.answer)) for t, p in zip(texts, chunk))
    model.train()
    return correct / n


def train(cfg: TrainConfig, mcfg: ModelConfig | None = None, log=print) -> dict:
    """Generate the data, train, save weights + tokenizer + training log under `cfg.out`."""
    import torch

    from silverbullet.reference.tokenizer import build_and_save

    mcfg = mcfg or ModelConfig()
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tok = build_and_save(out)
    ids, plen, lens, combine = make_data(tok, cfg.n_problems, cfg.workers)
    weights = torch.where(combine, cfg.combine_weight, 1.0)
    share = float(weights[combine].sum() / weights.sum())
    log(f"data: {len(ids)} problems, width {ids.shape[1]}, {time.time() - t0:.1f}s; combining in {share:.0%} of draws")
    model = build_model(len(tok), mcfg, tok).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"model: {n_params / 1e6:.2f}M parameters on {device}")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, 0.95),
        fused=device == "cuda",
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    stream = batches(lens, weights, cfg.batch_size, max(1, cfg.bucket), gen)
    pos = torch.arange(ids.shape[1])
    history = []
    t_train = time.time()
    model.train()
    step = 0
    for step in range(cfg.steps):
        progress = _progress(step, time.time() - t_train, cfg)
        if progress >= 1.0:
            log(f"schedule done at step {step} ({time.time() - t_train:.0f}s)")
            break
        lr = _lr(step, progress, cfg)
        for g in opt.param_groups:
            g["lr"] = lr
        idx = next(stream)
        width = int(lens[idx].max())
        x = ids[idx, :width].long()
        attn = pos[:width][None, :] < lens[idx][:, None]
        labels = x.clone()
        labels[(pos[:width][None, :] < plen[idx][:, None]) | ~attn] = -100
        x, attn, labels = x.to(device, non_blocking=True), attn.to(device), labels.to(device)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(input_ids=x, attention_mask=attn.long(), labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % cfg.log_every == 0:
            log(f"step {step} loss {loss.item():.4f} lr {lr:.2e} {time.time() - t_train:.0f}s")
            history.append({"step": step, "loss": round(loss.item(), 5), "seconds": round(time.time() - t_train, 1)})
        if cfg.eval_every and step and step % cfg.eval_every == 0:
            acc = quick_eval(model, tok, cfg.eval_n, device)
            log(f"step {step} quick-eval accuracy {acc:.3f}")
            history[-1]["quick_eval"] = acc
    else:
        step = cfg.steps
    train_seconds = time.time() - t_train
    final_acc = quick_eval(model, tok, cfg.final_eval_n, device) if cfg.final_eval_n else None
    if final_acc is not None:
        log(f"final quick-eval accuracy on {cfg.final_eval_n} eval problems: {final_acc:.3f}")
    model.to(torch.bfloat16).save_pretrained(out, max_shard_size="12MB", safe_serialization=True)
    info = {
        "train_config": asdict(cfg),
        "model_config": asdict(mcfg),
        "parameters": n_params,
        "steps_done": step,
        "combine_share": round(share, 3),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t0, 1),
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()}",
        "torch": torch.__version__,
        "quick_eval_accuracy": final_acc,
        "history": history,
    }
    (out / "training_log.json").write_text(json.dumps(info, indent=1))
    return info


def _progress(step: int, seconds: float, cfg: TrainConfig) -> float:
    """How far through the schedule: by steps, or by the time budget if that runs out first, so
    a capped run still ends annealed instead of being cut mid-schedule."""
    by_steps = step / max(1, cfg.steps)
    return max(by_steps, seconds / (cfg.max_minutes * 60)) if cfg.max_minutes > 0 else by_steps


def _lr(step: int, progress: float, cfg: TrainConfig) -> float:
    """Linear warm-up over `warmup` steps, then cosine to `min_lr_ratio` as progress reaches 1."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    frac = min(1.0, max(0.0, progress))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


if __name__ == "__main__":  # `python -m silverbullet.reference.train KEY=VALUE ...` (used on the GPU box)
    import sys

    kw = {}
    for arg in sys.argv[1:]:
        k, v = arg.split("=", 1)
        typ = type(getattr(TrainConfig, k))
        kw[k] = typ(v)
    print(json.dumps(train(TrainConfig(**kw), log=lambda m: print(m, flush=True)), indent=1)[:2000])
