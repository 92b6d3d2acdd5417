"""The chat reference model: the reference model trained further to talk ChatML, in two styles.

Why: users bring instruct models with a chat template. This model lets the project prove the chat
path end to end without a hub: with the step-format system instruction it answers in `Step k:`
lines exactly like the reference model; with no system message it answers in a free style
(`reference.freestyle`) that silverbullet must segment itself. Plain `Question: ...` completion
keeps working too, since a third of nothing is forgotten: some completion data stays in the mix.

Same plain loop as `reference.train` (and its batching and schedule); loss on the answer tokens
and the closing `<|im_end|>` only.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from silverbullet.benchmarks import synthetic_task as task
from silverbullet.prompting import STEP_PREFIX_RE, build_prompt, parse_solution
from silverbullet.reference.freestyle import render_free

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# ChatML, as Qwen-style instruct models ship it (no default system message).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The contract with the prompt side (`--prompt-format chat`): this exact system message asks for
# the step format. Keep it equal to the prompt builder's instruction.
STEP_FORMAT_INSTRUCTION = (
    'Solve the problem step by step. Write each step on its own line as "Step k: ...", '
    'and end with a line "The answer is: <answer>".'
)
MODES = ("steps", "free", "completion")


def add_chat_tokens(tok):
    """Add `<|im_start|>`/`<|im_end|>` as special tokens and the ChatML template (in place)."""
    tok.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def save_tokenizer(tok, out: Path, template: str = CHAT_TEMPLATE) -> None:
    """Save with the template inside tokenizer_config.json (where chat models have carried it),
    not in a separate chat_template.jinja, and `<|im_end|>` as eos, as ChatML instruct models do.
    Without padding: batched generation pads on the left at run time, and a tokenizer.json that
    carried it would pad every encoding, training targets included."""
    tok.eos_token = IM_END
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        backend.no_padding()
    tok.save_pretrained(str(out))
    (out / "chat_template.jinja").unlink(missing_ok=True)
    conf_path = out / "tokenizer_config.json"
    conf = json.loads(conf_path.read_text())
    conf["chat_template"] = template
    conf_path.write_text(json.dumps(conf, indent=2) + "\n")


def messages_for(question: str, mode: str) -> list[dict[str, str]]:
    """Chat messages of a question: with the step instruction as system message ('steps') or
    the bare question ('free')."""
    user = {"role": "user", "content": question.strip()}
    if mode == "steps":
        return [{"role": "system", "content": STEP_FORMAT_INSTRUCTION}, user]
    if mode == "free":
        return [user]
    raise ValueError(f"unknown chat mode {mode!r}")


def prompt_for(tok, question: str, mode: str) -> str:
    """The text the model continues in `mode` ('completion' is the reference model's prompt)."""
    if mode == "completion":
        return build_prompt(question)
    return tok.apply_chat_template(messages_for(question, mode), tokenize=False, add_generation_prompt=True)


def target_for(problem: task.TaskProblem, mode: str) -> str:
    """What the model should answer in `mode` (without the closing token)."""
    return render_free(problem) if mode == "free" else problem.solution.rstrip("\n")


def mode_of(i: int, mix: tuple[float, float, float]) -> str:
    """Deterministic mode of the i-th training problem for a (steps, free, completion) mix."""
    x = ((i * 0.6180339887498949) % 1.0) * sum(mix)
    return MODES[0] if x < mix[0] else (MODES[1] if x < mix[0] + mix[1] else MODES[2])


@dataclass
class ChatTrainConfig:
    """The shipped chat model's recipe (`silverbullet reference train-chat` uses these defaults)."""

    base: str = "data/reference-model"
    out: str = "data/reference-chat-model"
    seed: int = 0
    steps: int = 20_000  # upper bound; the time budget ends the schedule first on a GPU
    batch_size: int = 256
    lr: float = 1e-3
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.1
    n_problems: int = 300_000
    mix: str = "0.4,0.4,0.2"  # steps (system instruction), free (no system), completion
    max_minutes: float = 4.0
    combine_weight: float = 4.0
    bucket: int = 32
    log_every: int = 100
    final_eval_n: int = 1000
    device: str = "auto"
    workers: int = 16

    def mix_tuple(self) -> tuple[float, float, float]:
        parts = tuple(float(x) for x in self.mix.split(","))
        if len(parts) != 3 or min(parts) < 0 or sum(parts) <= 0:
            raise ValueError(f"mix must be three non-negative weights 'steps,free,completion' (got {self.mix!r})")
        return parts  # type: ignore[return-value]


_TOK = None  # the tokenizer in data workers (set before fork)


def _gen_chunk(args: tuple[int, int, int, tuple[float, float, float]]) -> list[tuple[str, str, str, bool]]:
    seed, n, offset, mix = args
    rows = []
    for j, p in enumerate(task.generate("train", n, seed=seed)):
        mode = mode_of(offset + j, mix)
        rows.append(
            (prompt_for(_TOK, p.question, mode), target_for(p, mode), mode, p.ops[-1] in ("together", "difference"))
        )
    return rows


def make_rows(chunk_fn, tok, n: int, workers: int, mix: tuple[float, ...]) -> list:
    """`n` training rows from `workers` chunks of `chunk_fn((seed, n, offset, mix))` (forked workers
    share the tokenizer): disjoint seeds per chunk, so rows are distinct problems."""
    global _TOK
    _TOK = tok
    per = math.ceil(n / workers)
    chunks = [(2000 + i, per, i * per, mix) for i in range(workers)]
    procs = min(workers, mp.cpu_count())
    if procs > 1:
        with mp.get_context("fork").Pool(procs) as pool:
            parts = pool.map(chunk_fn, chunks)
    else:
        parts = [chunk_fn(c) for c in chunks]
    return [x for part in parts for x in part][:n]


def make_chat_data(tok, n: int, workers: int, mix: tuple[float, float, float]):
    """Token ids (padded), prompt lengths, lengths, combining flags and modes of `n` problems."""

    rows = make_rows(_gen_chunk, tok, n, workers, mix)
    end = {"steps": tok.convert_tokens_to_ids(IM_END), "free": tok.convert_tokens_to_ids(IM_END)}
    end["completion"] = tok.convert_tokens_to_ids(task_eos(tok))
    return encode_rows(tok, rows, end)


def encode_rows(tok, rows: list[tuple[str, str, str, bool]], end: dict[str, int]):
    """(prompt, target, mode, combining) rows -> padded token ids, prompt lengths, lengths, combining
    flags and modes; each target closes with its mode's end token."""
    import torch

    bt = tok.backend_tokenizer
    bt.no_padding()  # a saved tokenizer (the chat model's) can carry padding: encodings must be unpadded
    bt.no_truncation()
    enc_p = bt.encode_batch([r[0] for r in rows], add_special_tokens=False)
    enc_t = bt.encode_batch([r[1] for r in rows], add_special_tokens=False)
    seqs = [a.ids + b.ids + [end[r[2]]] for a, b, r in zip(enc_p, enc_t, rows)]
    plen = torch.tensor([len(a.ids) for a in enc_p], dtype=torch.int32)
    lens = torch.tensor([len(s) for s in seqs], dtype=torch.int32)
    ids = torch.full((len(seqs), int(lens.max())), tok.pad_token_id, dtype=torch.int32)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.int32)
    combine = torch.tensor([r[3] for r in rows], dtype=torch.bool)
    modes = [r[2] for r in rows]
    return ids, plen, lens, combine, modes


def task_eos(tok) -> str:
    """The completion-mode end token of the reference tokenizer."""
    from silverbullet.reference.tokenizer import EOS

    return EOS


# --------------------------------------------------------------------------------------- eval

_ANSWER_IS_RE = re.compile(r"answer is\s*:?\s*\$?(?:\\boxed\{)?\s*(-?\d+)", re.IGNORECASE)


def answer_of(text: str) -> str | None:
    """The final answer of any of the model's styles: the parser's answer line or last `\\boxed{}`,
    else the last 'the answer is N' inside a paragraph (the prose style)."""
    ans = parse_solution(text).answer
    if ans is not None:
        return ans
    found = _ANSWER_IS_RE.findall(text)
    return found[-1] if found else None


def step_compliant(text: str) -> bool:
    """The step format: every reasoning line is `Step k:` numbered 1, 2, ... and an answer line ends it."""
    parsed = parse_solution(text)
    if not parsed.has_answer_line or not parsed.raw_steps:
        return False
    nums = [STEP_PREFIX_RE.match(line) for line in parsed.raw_steps]
    return all(m is not None and int(m.group(1)) == k + 1 for k, m in enumerate(nums))


def has_step_prefix(text: str) -> bool:
    return any(STEP_PREFIX_RE.match(line) for line in text.split("\n"))


def generate_texts(
    model, tok, prompts: list[str], device: str, batch: int = 256, max_new_tokens: int = 400
) -> list[str]:
    """Greedy answers (special tokens dropped), stopping at `<|im_end|>` or the completion eos."""
    import torch

    eos = [tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(task_eos(tok))]
    out_texts: list[str] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            enc = tok(prompts[i : i + batch], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            room = max(1, min(max_new_tokens, model.config.max_position_embeddings - enc["input_ids"].shape[1]))
            out = model.generate(
                **enc, max_new_tokens=room, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=eos
            )
            out_texts += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out_texts


def chat_eval(model, tok, n: int, device: str, batch: int = 256, start: int = 0) -> dict:
    """Accuracy of each mode on eval problems [start, start+n), step-format compliance, and how
    often the free style stays free (no `Step k:` lines)."""
    from silverbullet.grading import is_correct

    problems = list(task.generate("eval", n, start=start))
    res: dict = {"n": n, "start": start}
    for mode in MODES:
        texts = generate_texts(model, tok, [prompt_for(tok, p.question, mode) for p in problems], device, batch)
        correct = [is_correct(answer_of(t), str(p.answer)) for t, p in zip(texts, problems)]
        entry = {
            "accuracy": round(sum(correct) / n, 4),
            "answer_found": round(sum(answer_of(t) is not None for t in texts) / n, 4),
        }
        if mode in ("steps", "completion"):
            entry["step_format"] = round(sum(map(step_compliant, texts)) / n, 4)
        else:
            entry["without_step_prefix"] = round(sum(not has_step_prefix(t) for t in texts) / n, 4)
        entry["examples"] = texts[:3]
        res[mode] = entry
    return res


# --------------------------------------------------------------------------------------- train


def train_loop(model, ids, plen, lens, weights, cfg, device: str, log=print) -> tuple[int, list[dict], float]:
    """The chat models' fine-tuning loop (AdamW, warm-up then cosine over the time budget, bf16 autocast
    on CUDA), loss on the answer tokens only (positions at or after `plen`). Returns (steps done, loss
    history, training seconds). Shared by the chat and the thinking reference models."""
    import torch

    from silverbullet.reference.train import _lr, _progress, batches

    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
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
        progress = _progress(step, time.time() - t_train, cfg)  # type: ignore[arg-type]
        if progress >= 1.0:
            log(f"schedule done at step {step} ({time.time() - t_train:.0f}s)")
            break
        lr = _lr(step, progress, cfg)  # type: ignore[arg-type]
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
    else:
        step = cfg.steps
    return step, history, time.time() - t_train


def load_base(cfg, add_tokens) -> tuple:
    """(device, out dir, tokenizer, fp32 model, old vocab size) for fine-tuning `cfg.base`: the
    tokenizer gets `add_tokens`' tokens and template, the embeddings grow to match (mean-initialised)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    tok = add_tokens(AutoTokenizer.from_pretrained(cfg.base))
    model = AutoModelForCausalLM.from_pretrained(cfg.base, dtype=torch.float32)
    old_vocab = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tok), mean_resizing=True)
    return device, out, tok, model, old_vocab


def train_chat(cfg: ChatTrainConfig, log=print) -> dict:
    """Load the base reference model, add the chat tokens, train on the mix, save under `cfg.out`."""
    import torch

    mix = cfg.mix_tuple()
    t0 = time.time()
    device, out, tok, model, old_vocab = load_base(cfg, add_chat_tokens)
    model.config.eos_token_id = [tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(task_eos(tok))]
    model.generation_config.eos_token_id = model.config.eos_token_id
    model.to(device)
    ids, plen, lens, combine, modes = make_chat_data(tok, cfg.n_problems, cfg.workers, mix)
    weights = torch.where(combine, cfg.combine_weight, 1.0)
    log(
        f"data: {len(ids)} problems ({', '.join(f'{m} {modes.count(m)}' for m in MODES)}), width {ids.shape[1]}, "
        f"longest {int(lens.max())} tokens, {time.time() - t0:.1f}s; vocab {old_vocab} -> {len(tok)}"
    )
    step, history, train_seconds = train_loop(model, ids, plen, lens, weights, cfg, device, log)
    model.to(torch.bfloat16)  # evaluate the weights as shipped (bf16), computing in fp32
    model.to(torch.float32)
    final = chat_eval(model, tok, cfg.final_eval_n, device) if cfg.final_eval_n else None
    if final is not None:
        log("final eval: " + json.dumps({m: {k: v for k, v in final[m].items() if k != "examples"} for m in MODES}))
    run = {"steps_done": step, "train_seconds": train_seconds, "t0": t0, "final_eval": final, "history": history}
    return save_trained(model, tok, cfg, out, old_vocab, device, run, CHAT_TEMPLATE)


def save_trained(model, tok, cfg, out: Path, old_vocab: int, device: str, run: dict, template: str) -> dict:
    """Save a trained chat-style model as shipped (bf16 shards, the tokenizer with `template`) and its
    training_log.json (config, sizes, steps, times, device, final eval, loss history)."""
    import torch

    model.to(torch.bfloat16).save_pretrained(out, max_shard_size="12MB", safe_serialization=True)
    save_tokenizer(tok, out, template)
    info = {
        "train_config": asdict(cfg),
        "base": cfg.base,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab": [old_vocab, len(tok)],
        "steps_done": run["steps_done"],
        "train_seconds": round(run["train_seconds"], 1),
        "total_seconds": round(time.time() - run["t0"], 1),
        "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu x{torch.get_num_threads()}",
        "torch": torch.__version__,
        "final_eval": run["final_eval"],
        "history": run["history"],
    }
    (out / "training_log.json").write_text(json.dumps(info, indent=1))
    return info


if __name__ == "__main__":  # `python -m silverbullet.reference.chat KEY=VALUE ...` (used on the GPU box)
    import sys

    kw = {}
    for arg in sys.argv[1:]:
        k, v = arg.split("=", 1)
        kw[k] = type(getattr(ChatTrainConfig, k))(v)
    info = train_chat(ChatTrainConfig(**kw), log=lambda m: print(m, flush=True))
    print(json.dumps({k: v for k, v in info.items() if k != "history"}, indent=1)[:6000])
