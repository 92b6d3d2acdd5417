"""An external judge (`locate --judge`): a model asked, ProcessBench-style, for the earliest wrong
step of a solution, its strict answer parsed, and combined with the checker's step.

Why: the checker sees false arithmetic and quantities that no gold path supports; a strong critic
also sees an equation set up wrongly or a relation read backwards. The judge is any model behind the
`Generator` protocol: an OpenAI-compatible endpoint (generation/openai_api.py) or local weights
(transformers). Its reply is untrusted text: only the last `\\boxed{k}` with a bare integer counts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from silverbullet.attribution.judge import combine
from silverbullet.errors import UserError
from silverbullet.generation.base import GenerationConfig, Generator
from silverbullet.segmentation import segment, thinking_split

RULES = ("earlier", "fallback", "judge", "checker")
DEFAULT_RULE = "earlier"
_BOXED = re.compile(r"\\boxed\{([^{}]{0,40})\}")
_INT = re.compile(r"[+-]?\d{1,6}")
REPLY_KEEP = 600  # characters of the judge's reply kept in the output row (its end: the verdict)


@dataclass
class CriticVerdict:
    step: int | None  # earliest wrong step (0-based, as `locate` counts), None: none named
    status: str  # "error" (a step named) | "correct" (-1) | "unparsed" | "out_of_range"
    reply: str = ""  # the tail of the judge's text


def critic_prompt(question: str, steps: Sequence[str], answer: str | None = None, gold: str | None = None) -> str:
    """The question, a gold solution when given (`locate --judge-gold`: the critic compares instead of
    solving), the steps indexed from 0 (the numbering `locate` reports), the request."""
    lines = [
        "You are checking a solution to a math problem, one step at a time.",
        "",
        "Problem:",
        question.strip(),
        "",
    ]
    if gold:
        lines += ["A correct solution, for reference (other correct routes exist):", gold.strip(), ""]
    lines += [
        "Solution, split into steps numbered from 0:",
    ]
    lines += [f"[{i}] {s.strip()}" for i, s in enumerate(steps)]
    if answer:
        lines.append(f"(final answer given: {answer.strip()})")
    lines += [
        "",
        "Find the earliest step that is wrong: a miscalculation, a quantity taken from the wrong place, "
        "a relation read the wrong way round, an equation set up wrongly, or a step that does not follow. "
        "Later steps that only carry an earlier mistake forward do not count.",
        "End your reply with the number of the earliest wrong step in \\boxed{}, for example \\boxed{2}, "
        "or \\boxed{-1} if every step is right.",
    ]
    return "\n".join(lines)


def parse_verdict(reply: str, n_steps: int) -> CriticVerdict:
    """The last `\\boxed{...}` of the reply, read as an integer and nothing else. A reasoning judge's
    trace (`<think>...</think>`) only deliberates: the verdict is read after it, and a trace that
    never closed gives none."""
    tail = reply[-REPLY_KEEP:]
    _, start = thinking_split(reply)
    if start is None:
        return CriticVerdict(None, "unparsed", tail)
    boxes = _BOXED.findall(reply, start)
    if not boxes or not _INT.fullmatch(boxes[-1].strip()):
        return CriticVerdict(None, "unparsed", tail)
    k = int(boxes[-1].strip())
    if k == -1:
        return CriticVerdict(None, "correct", tail)
    if 0 <= k < n_steps:
        return CriticVerdict(k, "error", tail)
    return CriticVerdict(None, "out_of_range", tail)


def apply_verdict(rec: dict[str, Any], verdict: CriticVerdict, rule: str) -> None:
    """Fold the judge's verdict into a `locate` output row. The checker's own step stays as
    `checker_step`; `first_faulty_step` becomes the combined one. A step only the judge named gets no
    error type (the checker saw nothing wrong there to classify) and `evidence.check = "judge"`."""
    rec["judge_step"], rec["judge_status"], rec["judge_reply"] = verdict.step, verdict.status, verdict.reply
    fold_step(rec, verdict.step, rule, "judge")


def apply_reading(rec: dict[str, Any], verdict: Any, rule: str, prefix: str = "reader") -> None:
    """A reader's verdict (reader.surprise_verdict), or a step verifier's step with `prefix`
    "verifier", folded in as `apply_verdict` folds a critic's: `<prefix>_step` (and `reader_gap`) kept."""
    rec[f"{prefix}_step"] = verdict.step
    if prefix == "reader":
        rec["reader_gap"] = verdict.gap
    fold_step(rec, verdict.step, rule, prefix)


def fold_step(rec: dict[str, Any], other: int | None, rule: str, check: str) -> None:
    """Combine a model's step with the row's step so far by `rule` (the checker's own step is kept
    once, as `checker_step`). A step only the model named gets no error type and `evidence.check`."""
    current = rec.get("first_faulty_step")
    rec.setdefault("checker_step", current)
    if rule == "checker":
        return
    step = other if rule == "judge" else combine(current, other, rule)
    if step == current:
        return
    rec["first_faulty_step"] = step
    rec["error_type"] = None
    rec["fault_in_answer_line"] = False
    rec["evidence"] = {"check": check, "checker_step": rec["checker_step"]} if step is not None else {}


def ask_critic(
    gen: Generator,
    items: Sequence[tuple[str, str] | tuple[str, str, str | None]],
    render: Any = None,
    max_new_tokens: int = 1024,
) -> list[CriticVerdict]:
    """One verdict per (question, solution[, gold solution]). `render` turns the request into the
    model's prompt (a chat template for local weights; None: the text as is, for an endpoint that
    applies its own)."""
    segs = [segment(it[1]) for it in items]
    prompts = [
        critic_prompt(it[0], seg.steps, seg.answer, it[2] if len(it) > 2 else None)
        for it, seg in zip(items, segs, strict=True)
    ]
    if render is not None:
        prompts = [render(p) for p in prompts]
    cfg = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=8)
    outs = gen.generate(prompts, cfg) if prompts else []
    return [parse_verdict(o.text, len(s.steps)) for o, s in zip(outs, segs, strict=True)]


def make_critic(spec: str, model: str | None = None, device: str = "auto", cache: Any = None) -> tuple[Generator, Any]:
    """The judge named by `--judge`: an http(s) URL is an OpenAI-compatible endpoint (`model` names
    the served model; default the first listed), anything else local weights (a path or hub id) whose
    chat template, when it has one, wraps the request. Replies are cached, so a rerun resumes."""
    from silverbullet.generation.cache import CachedGenerator
    from silverbullet.generation.openai_api import OpenAIChatGenerator, is_url

    if is_url(spec):
        return CachedGenerator(OpenAIChatGenerator(spec, model), cache), None
    from silverbullet.generation.hf import HFGenerator
    from silverbullet.generation.loading import load_tokenizer, preflight
    from silverbullet.prompting.formats import PromptRenderer, has_chat_template

    if model is not None:
        raise UserError(f"--judge-model {model!r} names a served model; it only goes with an http(s) --judge URL")
    preflight(spec)
    tok = load_tokenizer(spec)
    render = PromptRenderer("chat", tokenizer=tok).render if has_chat_template(tok) else None
    return CachedGenerator(HFGenerator(spec, tag="judge", device=device), cache), render
