"""Prompt formats: how a question becomes the text a model continues.

One renderer per run, used by every place that builds a prompt (generation, margin scoring, causal
confirmation, the repair sets, re-measure), so training matches inference and two runs can be compared
by the identity of their prompts. Formats (docs/prompts.md):

- completion: `Question: <q>\\n` (what the project's reference model was trained on);
- chat: the tokenizer's own chat template, a system message asking for the step format
  (STEP_FORMAT_INSTRUCTION, or `--system-prompt`; an empty one means no system message) and the
  question as the user message;
- fewshot: K exemplars from the benchmark's train split in the step format, then the question;
- a template file with `{question}` replaces all of these;
- auto: chat when the tokenizer has a chat template, else completion.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError
from silverbullet.prompting import ANSWER_LINE_RES, ANSWER_PREFIX, STEP_PREFIX_RE, build_prompt

# The chat reference model (data/reference-chat-model) is taught with exactly this text.
STEP_FORMAT_INSTRUCTION = (
    'Solve the problem step by step. Write each step on its own line as "Step k: ...", '
    'and end with a line "The answer is: <answer>".'
)
# The instruction's stand-in for the answer. A model that copies it ("The answer is: <answer>") has
# planned a solution without computing it: a 3-bit Qwen2.5-1.5B did so in 38 of 100 GSM8K answers.
ANSWER_PLACEHOLDER = "<answer>"
FORMATS = ("auto", "completion", "chat", "fewshot")
DEFAULT_FEWSHOT = 4
_GSM8K_CALC = re.compile(r"<<[^<>]*>>")
_GOLD_ANSWER_RE = re.compile(r"\s*####(.*)")  # stripped by the caller: `(.*?)\s*$` was quadratic


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class PromptSettings:
    """What the user asked for (flags). `system_prompt` None means the default instruction."""

    format: str = "auto"
    system_prompt: str | None = None
    template: str | None = None  # path of a text file with {question}
    fewshot: int = DEFAULT_FEWSHOT

    def identity(self) -> dict:
        """The settings as they enter a run's identity: the template's text by hash, not its path."""
        return {
            "prompt_format": self.format,
            "system_prompt": self.system_prompt,
            "prompt_template_sha256": _sha(read_template(self.template)) if self.template else None,
            "fewshot": self.fewshot if self.format == "fewshot" else None,
        }


@dataclass
class PromptRenderer:
    """Renders questions in one resolved format. `describe()` says what was used (summary.json)."""

    format: str  # completion | chat | fewshot | template
    system_prompt: str | None = None  # chat: None or "" = no system message
    template_text: str | None = None
    exemplars: list[tuple[str, str]] = field(default_factory=list)  # fewshot: (question, step solution)
    chat_template: str | None = None
    tokenizer: Any = None

    def render(self, question: str) -> str:
        q = question.strip()
        if self.format == "template":
            return self.template_text.replace("{question}", q)  # type: ignore[union-attr]
        if self.format == "chat":
            msgs = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else []) + [
                {"role": "user", "content": q}
            ]
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        if self.format == "fewshot":
            shots = "".join(build_prompt(eq) + sol + "\n" for eq, sol in self.exemplars)
            return shots + build_prompt(q)
        return build_prompt(q)

    def __call__(self, question: str) -> str:
        return self.render(question)

    def describe(self) -> dict:
        """What the prompts were made of, and `id`: a hash of all of it (equal ids, equal prompts)."""
        d: dict[str, Any] = {"format": self.format}
        if self.format == "chat":
            d["system_prompt"] = self.system_prompt or ""
            d["chat_template_sha256"] = _sha(self.chat_template or "")
        if self.format == "template":
            d["template_sha256"] = _sha(self.template_text or "")
        if self.format == "fewshot":
            d["fewshot"] = len(self.exemplars)
            d["exemplars_sha256"] = _sha(json.dumps(self.exemplars))
        d["id"] = _sha(json.dumps(d, sort_keys=True))[:16]
        return d


COMPLETION_ID = PromptRenderer("completion").describe()["id"]  # runs made before prompt formats existed


def prompt_id(summary_or_config: dict) -> str:
    """The prompt id of a run's summary.json (older runs, without one, used the completion format)."""
    p = summary_or_config.get("prompt")
    return p["id"] if isinstance(p, dict) and p.get("id") else COMPLETION_ID


def same_prompts_or_refuse(a: dict, b: dict, what_a: str, what_b: str) -> None:
    """Refuse, in one line, to combine two runs whose prompts differ (their results do not pair up)."""
    if prompt_id(a) != prompt_id(b):
        fa, fb = (s.get("prompt", {"format": "completion"}).get("format") for s in (a, b))
        raise UserError(
            f"{what_a} and {what_b} were made with different prompts ({fa} vs {fb}, prompt id "
            f"{prompt_id(a)} vs {prompt_id(b)}); compare runs made with the same --prompt-format, "
            "--system-prompt, --prompt-template and --fewshot"
        )


def read_template(path: str) -> str:
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--prompt-template {p}: cannot read it ({type(e).__name__}); pass a UTF-8 text file") from None
    if "{question}" not in text:
        raise UserError(f"--prompt-template {p} has no {{question}} placeholder; add one where the question goes")
    return text


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def step_format_solution(solution: str, answer: str) -> str:
    """A gold solution in the step format: one `Step k:` line per reasoning line, GSM8K `<<...>>`
    calculator notes removed, and `#### X` (or a missing answer line) as `The answer is: X`."""
    text = _GSM8K_CALC.sub("", solution).replace("\r\n", "\n")
    steps, final = [], None
    for line in text.split("\n"):
        if not line.strip():
            continue
        m = _GOLD_ANSWER_RE.match(line) or ANSWER_LINE_RES[0].match(line)
        if m:
            final = m.group(1).strip()
            break
        steps.append(STEP_PREFIX_RE.sub("", line, count=1).strip())
    lines = [f"Step {i + 1}: {s}" for i, s in enumerate(steps)]
    lines.append(f"{ANSWER_PREFIX} {final if final else answer}")
    return "\n".join(lines) + "\n"


def fewshot_exemplars(benchmark: str, k: int) -> list[tuple[str, str]]:
    """K (question, step solution) pairs from the benchmark's train split, the same on every run."""
    from silverbullet.benchmarks import REGISTRY, load_benchmark

    if k < 1:
        raise UserError(f"--fewshot must be >= 1, got {k}")
    path = Path(benchmark).expanduser()
    if benchmark not in REGISTRY and benchmark != "synthetic" and path.is_file():
        raise UserError(
            f"--fewshot: benchmark {benchmark} is a single file with no train split; pass a folder "
            "holding train.jsonl, or use --prompt-format chat or completion"
        )
    try:
        pool = load_benchmark(benchmark, split="train", limit=max(64, 8 * k), seed=0)
    except UserError as e:
        raise UserError(f"--fewshot: benchmark {benchmark} has no train split to draw exemplars from ({e})") from None
    shots = [(p.question.strip(), step_format_solution(p.solution, p.answer)) for p in pool if p.solution]
    if len(shots) < k:
        raise UserError(f"--fewshot {k}: the train split of {benchmark} has only {len(shots)} solved problems")
    return shots[:k]


def make_renderer(settings: PromptSettings, tokenizer: Any, benchmark: str, model: str = "the model") -> PromptRenderer:
    """Resolve `auto` against the tokenizer and check the settings (bad ones are a UserError)."""
    if settings.format not in FORMATS:
        raise UserError(f"--prompt-format {settings.format!r} is not known; use one of {', '.join(FORMATS)}")
    if settings.template:
        return PromptRenderer("template", template_text=read_template(settings.template))
    fmt = settings.format
    if fmt == "auto":
        fmt = "chat" if has_chat_template(tokenizer) else "completion"
    if fmt == "chat":
        if not has_chat_template(tokenizer):
            raise UserError(
                f"--prompt-format chat: {model} has no chat template (tokenizer_config.json chat_template); "
                "use --prompt-format completion or fewshot, or --prompt-template FILE"
            )
        system = STEP_FORMAT_INSTRUCTION if settings.system_prompt is None else settings.system_prompt
        return PromptRenderer("chat", system_prompt=system, chat_template=tokenizer.chat_template, tokenizer=tokenizer)
    if fmt == "fewshot":
        return PromptRenderer("fewshot", exemplars=fewshot_exemplars(benchmark, settings.fewshot))
    return PromptRenderer("completion")


def renders_thinking(render) -> bool:
    """Whether the model will think before it answers, and so needs a reasoning budget: the prompt
    opens a trace (an R1-style template's `<think>`), or the chat template handles trace tags and the
    prompt does not close one (Qwen3: the model opens its own trace; a prompt that pre-fills an empty
    `<think></think>` has switched thinking off)."""
    from silverbullet.segmentation import THINK_TAGS, open_thinking_tag

    prompt = render("What is 1 + 1?")
    if open_thinking_tag(prompt):
        return True
    template = getattr(render, "chat_template", None) if getattr(render, "format", None) == "chat" else None
    if not template:
        return False
    return any(o in template and c in template and c not in prompt for o, c in THINK_TAGS)


# -------------------------------------------------------------------------------- compliance


def follows_format(text: str) -> tuple[bool, bool]:
    """(every reasoning line carries a `Step k:` prefix, there is a `The answer is:` line), read in
    the response: a reasoning trace before it is free thinking, not the format."""
    from silverbullet.segmentation import thinking_split

    _, start = thinking_split(text)
    if start is None:
        return False, False
    lines = []
    answer = False
    for line in text[start:].split("\n"):
        if not line.strip():
            continue
        if ANSWER_LINE_RES[0].match(line):
            answer = True
            break
        lines.append(line)
    return bool(lines) and all(STEP_PREFIX_RE.match(ln) for ln in lines), answer


def is_placeholder_answer(text: str) -> bool:
    """The last answer line states the instruction's placeholder (`The answer is: <answer>`)."""
    found = None
    for line in text.split("\n"):
        line = STEP_PREFIX_RE.sub("", line, count=1)  # "Step 3: The answer is: <answer>"
        if (m := ANSWER_LINE_RES[0].match(line)) is not None:
            found = m.group(1)
    return found is not None and found.strip().rstrip(".").strip() == ANSWER_PLACEHOLDER


def compliance(rows: list[dict], max_new_tokens: int) -> dict:
    """Per model: share of solutions in the step format, share with the format's `The answer is:`
    line, share stating an answer in any form a reader would accept (answer line, `\\boxed{}`,
    `####`, a closing "the answer is" sentence: what free-style solutions have), and how many were cut
    at the token limit (n_tokens >= max_new_tokens and no answer stated: the model never stopped),
    and how many answer with the instruction's placeholder itself (`placeholder_answers`).
    Where solutions carry reasoning traces, `thinking`: the share with one, how many never closed, and
    their mean length (characters; tokens where token offsets were kept)."""
    from silverbullet.segmentation import segment

    n = len(rows)
    steps = answers = stated = cut = placeholder = 0
    traces: list[int] = []  # trace length in characters, per row with a reasoning trace
    trace_tokens: list[int] = []
    unfinished = 0
    for r in rows:
        text = r.get("text") or ""
        s, a = follows_format(text)
        seg = segment(text)
        any_answer = a or seg.has_answer_line
        steps += s
        answers += a
        stated += any_answer
        cut += bool(not any_answer and (r.get("n_tokens") or 0) >= max_new_tokens)
        placeholder += is_placeholder_answer(text)
        if seg.thinking_span is not None:
            lo, hi = seg.thinking_span
            traces.append(hi - lo)
            unfinished += seg.thinking_unfinished
            ends = r.get("token_ends")
            if ends:
                trace_tokens.append(sum(1 for e in ends if e <= hi))
    out = {
        "n": n,
        "step_prefix_share": round(steps / n, 4) if n else 0.0,
        "answer_line_share": round(answers / n, 4) if n else 0.0,
        "answer_stated_share": round(stated / n, 4) if n else 0.0,
        "truncated": cut,
        "placeholder_answers": placeholder,
    }
    if traces:  # reasoning models: quantized ones are reported to think longer and to not finish
        out["thinking"] = {
            "share": round(len(traces) / n, 4),
            "unfinished": unfinished,
            "mean_chars": round(sum(traces) / len(traces), 1),
            "mean_tokens": round(sum(trace_tokens) / len(trace_tokens), 1) if trace_tokens else None,
        }
    return out


def format_drop(fmt: dict, wilson) -> list[str]:
    """What the quantized model lost of the format, when it is clearly (beyond sampling noise: the
    95% intervals do not overlap) and at least 5 points below the reference."""
    ref, q = fmt.get("reference"), fmt.get("quantized")
    if not ref or not q or not ref.get("n") or not q.get("n"):
        return []
    out = []
    keys = (("step_prefix_share", "step prefixes"), ("answer_line_share", "answer line"))
    for key, name in keys + (("answer_stated_share", "answer stated"),):
        if key not in ref or key not in q:  # runs made before it was counted
            continue
        a, b = ref[key], q[key]
        lo_ref = wilson(round(a * ref["n"]), ref["n"])[0]
        hi_q = wilson(round(b * q["n"]), q["n"])[1]
        if a - b >= 0.05 and hi_q < lo_ref:
            out.append(f"{name}: {b:.1%} quantized vs {a:.1%} reference")
    return out
