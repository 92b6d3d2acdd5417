"""The thinking reference model: the chat reference model trained further to think first, R1-style.

Why: the models people quantize for math now are reasoning models (DeepSeek-R1 distills, QwQ,
Qwen3). They write a `<think>` trace that explores and corrects itself, then the response, and their
chat template opens the trace in the prompt. This model has exactly that behaviour, so the project
proves its reasoning-model path (segmentation's trace rule, the generation stop that waits for
`</think>`, the trace statistics) on a real model end to end, without a hub.

The trace is a draft: the step-format solution the chat model already writes, with its line "The
answer is: N", then "Let me write it up." and `</think>`, as R1 traces often state the answer before
writing it up. A stop at the first answer line would end the generation inside the trace, and a
checker that read the trace as the solution would count every step twice. After `</think>`: the step
format when the system message asks for it, else the chat model's free style. (A draft that corrects
itself is covered by the unit tests, not by this model: greedy decoding would not reproduce a slip.)

`<think>` and `</think>` are ordinary added tokens (not special), as in the R1 distills' and Qwen3's
tokenizers, so decoding keeps them. Same training loop as the chat model (`chat.train_loop`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from silverbullet.benchmarks import synthetic_task as task
from silverbullet.reference import chat
from silverbullet.reference.freestyle import render_free

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
# ChatML whose generation prompt opens the trace, as the DeepSeek-R1 distills' templates do.
THINK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)
MODES = ("steps", "free")  # the response after the trace: asked for the step format, or not
MAX_POSITIONS = 768  # trace + response runs past the chat model's 512 positions on long problems


def trace_for(problem: task.TaskProblem) -> str:
    """The thinking trace of a problem (without the tags): the step-format draft the chat model already
    writes, its answer line, and a hand-over to the response."""
    return f"{problem.solution.rstrip()}\nLet me write it up."


def target_for(problem: task.TaskProblem, mode: str) -> str:
    """What follows the prompt's `<think>\\n`: the trace, `</think>`, then the response."""
    response = problem.solution.rstrip("\n") if mode == "steps" else render_free(problem)
    return f"{trace_for(problem)}\n{THINK_CLOSE}\n\n{response}"


def prompt_for(tok, question: str, mode: str) -> str:
    return tok.apply_chat_template(chat.messages_for(question, mode), tokenize=False, add_generation_prompt=True)


def add_think_tokens(tok):
    """`<think>` / `</think>` as ordinary added tokens, and the template that opens the trace."""
    tok.add_tokens([THINK_OPEN, THINK_CLOSE])
    tok.chat_template = THINK_TEMPLATE
    return tok


@dataclass
class ThinkTrainConfig:
    """The shipped thinking model's recipe (`silverbullet reference train-thinking` uses these)."""

    base: str = "data/reference-chat-model"
    out: str = "data/reference-thinking-model"
    seed: int = 0
    steps: int = 20_000
    batch_size: int = 256
    lr: float = 3e-4
    min_lr_ratio: float = 0.05
    warmup: int = 100
    weight_decay: float = 0.1
    n_problems: int = 200_000
    mix: str = "0.5,0.5"  # steps response, free response
    max_minutes: float = 3.0
    combine_weight: float = 4.0
    bucket: int = 32
    log_every: int = 100
    final_eval_n: int = 1000
    device: str = "auto"
    workers: int = 16

    def mix_tuple(self) -> tuple[float, float]:
        parts = tuple(float(x) for x in self.mix.split(","))
        if len(parts) != 2 or min(parts) < 0 or sum(parts) <= 0:
            raise ValueError(f"mix must be two non-negative weights 'steps,free' (got {self.mix!r})")
        return parts  # type: ignore[return-value]


def mode_of(i: int, mix: tuple[float, ...]) -> str:
    x = ((i * 0.6180339887498949) % 1.0) * sum(mix)
    return MODES[0] if x < mix[0] else MODES[1]


def _gen_chunk(args: tuple[int, int, int, tuple[float, ...]]) -> list[tuple[str, str, str, bool]]:
    seed, n, offset, mix = args
    rows = []
    for j, p in enumerate(task.generate("train", n, seed=seed + 500)):  # problems the chat model did not see
        mode = mode_of(offset + j, mix)
        rows.append(
            (
                prompt_for(chat._TOK, p.question, mode),
                target_for(p, mode),
                mode,
                p.ops[-1] in ("together", "difference"),
            )
        )
    return rows


def think_eval(model, tok, n: int, device: str, batch: int = 256, start: int = 0) -> dict:
    """Per mode, on eval problems [start, start+n): accuracy (the response's answer), how often the
    trace closes, and step-format compliance of the response (steps mode)."""
    from silverbullet.grading import is_correct
    from silverbullet.segmentation import segment

    problems = list(task.generate("eval", n, start=start))
    res: dict = {"n": n, "start": start}
    for mode in MODES:
        prompts = [prompt_for(tok, p.question, mode) for p in problems]
        texts = [THINK_OPEN + "\n" + t for t in chat.generate_texts(model, tok, prompts, device, batch, 600)]
        segs = [segment(t) for t in texts]
        entry = {
            "accuracy": round(sum(is_correct(s.answer, str(p.answer)) for s, p in zip(segs, problems)) / n, 4),
            "trace_closed": round(sum(not s.thinking_unfinished and s.thinking_span is not None for s in segs) / n, 4),
        }
        if mode == "steps":
            entry["step_format"] = round(sum(chat.step_compliant(t.split(THINK_CLOSE)[-1]) for t in texts) / n, 4)
        entry["examples"] = texts[:2]
        res[mode] = entry
    return res


def train_thinking(cfg: ThinkTrainConfig, log=print) -> dict:
    """Load the chat reference model, add the trace tokens and template, train, save under `cfg.out`."""
    import torch

    mix = cfg.mix_tuple()
    t0 = time.time()
    device, out, tok, model, old_vocab = chat.load_base(cfg, add_think_tokens)
    model.config.max_position_embeddings = MAX_POSITIONS
    model.to(device)
    rows = chat.make_rows(_gen_chunk, tok, cfg.n_problems, cfg.workers, mix)
    end = dict.fromkeys(MODES, tok.convert_tokens_to_ids(chat.IM_END))
    ids, plen, lens, combine, modes = chat.encode_rows(tok, rows, end)
    if int(lens.max()) > MAX_POSITIONS:
        raise ValueError(f"a training sequence has {int(lens.max())} tokens, over {MAX_POSITIONS} positions")
    weights = torch.where(combine, cfg.combine_weight, 1.0)
    log(
        f"data: {len(ids)} problems ({', '.join(f'{m} {modes.count(m)}' for m in MODES)}), "
        f"longest {int(lens.max())} tokens, {time.time() - t0:.1f}s; vocab {old_vocab} -> {len(tok)}"
    )
    step, history, train_seconds = chat.train_loop(model, ids, plen, lens, weights, cfg, device, log)
    model.to(torch.bfloat16)  # evaluate the weights as shipped (bf16), computing in fp32
    model.to(torch.float32)
    final = think_eval(model, tok, cfg.final_eval_n, device) if cfg.final_eval_n else None
    if final is not None:
        log("final eval: " + json.dumps({m: {k: v for k, v in final[m].items() if k != "examples"} for m in MODES}))
    run = {"steps_done": step, "train_seconds": train_seconds, "t0": t0, "final_eval": final, "history": history}
    return chat.save_trained(model, tok, cfg, out, old_vocab, device, run, THINK_TEMPLATE)


if __name__ == "__main__":  # `python -m silverbullet.reference.thinking KEY=VALUE ...` (used on the GPU box)
    import sys

    kw = {}
    for arg in sys.argv[1:]:
        k, v = arg.split("=", 1)
        kw[k] = type(getattr(ThinkTrainConfig, k))(v)
    info = train_thinking(ThinkTrainConfig(**kw), log=lambda m: print(m, flush=True))
    print(json.dumps({k: v for k, v in info.items() if k != "history"}, indent=1)[:6000])
