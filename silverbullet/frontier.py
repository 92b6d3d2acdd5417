"""At the failure frontier: token margins on the first faulty line (the quantized model's own, and
the reference's on the same text), the full-precision judge's verdict from the same pass, and causal
confirmation (swap in the reference's line and let the quantized model continue)."""

from __future__ import annotations

from typing import Any

from silverbullet.attribution.judge import judge
from silverbullet.attribution.trace import trace_line_spans
from silverbullet.generation.base import GenerationConfig, Generator
from silverbullet.grading import is_correct
from silverbullet.prompting import build_prompt, extract_answer, segment, step_spans
from silverbullet.records import Generation, Problem


def rounded_mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def span_margins(margins: list[float], ends: list[int], span: list[int] | tuple[int, int]) -> list[float]:
    """The margins of the tokens whose middle falls in `span` (character offsets): the rule
    frontier_margins reads the quantized model's own tokens by."""
    out, start = [], 0
    for m, end in zip(margins, ends):
        if span[0] <= (start + end) / 2 < span[1]:
            out.append(m)
        start = end
    return out


def frontier_margins(gen: Generation, span: tuple[int, int], spans: list[tuple[int, int]]) -> dict:
    """Margins on the faulty line vs the other step lines: the mean over tokens, and the minimum
    (the step's most uncertain decision, where a flip happens) averaged over the other steps."""
    if not gen.margins or not gen.token_ends:
        return {}
    per_step: dict[tuple[int, int], list[float]] = {tuple(sp): [] for sp in spans}
    start = 0
    for m, end in zip(gen.margins, gen.token_ends):
        mid = (start + end) / 2
        start = end
        for sp in per_step:
            if sp[0] <= mid < sp[1]:
                per_step[sp].append(m)
                break
    at = per_step.get(tuple(span), [])
    others = [v for sp, v in per_step.items() if sp != tuple(span) and v]
    return {
        "margin_at_frontier": rounded_mean(at),
        "margin_elsewhere": rounded_mean([m for v in others for m in v]),
        "min_margin_at_frontier": round(min(at), 4) if at else None,
        "min_margin_elsewhere": rounded_mean([min(v) for v in others]),
    }


def add_margins_and_confirmation(
    rows: list[dict],
    problems: dict[str, Problem],
    gens: dict[str, Generation],
    ref_gen: Generator | None,
    quant_gen: Generator | None,
    cfg: Any,
    prompts: dict[str, str] | None = None,
) -> None:
    """Frontier margins (quantized and reference on the same prefix) and causal confirmation. `cfg`:
    the run's DiagnoseConfig (margins, confirm, batch_size, max_new_tokens, compile are read).
    `prompts` (problem id -> prompt) replaces the built prompt where a sample file says what was sent."""

    def prompt(r: dict) -> str:
        return (prompts or {}).get(r["problem_id"]) or _prompt_of(gens, r)

    todo = [r for r in rows if r.get("faulty_line") and r["model"] == "quantized"]
    for r in todo:
        g = gens[r["problem_id"]]
        spans = trace_line_spans(g.text) if r.get("trace_line") is not None else step_spans(g.text)
        r.update(frontier_margins(g, tuple(r["frontier_chars"]), spans or []))
    # One reference-model pass per flip: the whole quantized solution teacher-forced under the
    # full-precision model gives both the judge's verdict and the reference's margin on the faulty
    # line (its tokens, read by the rule frontier_margins uses). Flips only: the summary reads these
    # on flips, and on a 1.5B model on CPU a second pass, and passes over the solutions both models
    # got wrong, were most of the attribution time.
    judged = [r for r in rows if r["model"] == "quantized" and r["flip"] and gens.get(r["problem_id"]) is not None]
    if cfg.margins and ref_gen is not None and judged:
        scored = _score_batch(ref_gen, [(prompt(r), gens[r["problem_id"]].text) for r in judged])
        for r, s in zip(judged, scored):
            v = judge(s.logprobs, s.top_logprobs, s.token_ends, segment(gens[r["problem_id"]].text).spans)
            r["judge_step"], r["judge_gap"] = v.step, v.gap
            if r.get("frontier_chars"):
                at = span_margins(s.margins, s.token_ends, r["frontier_chars"])
                r["reference_margin_at_frontier"] = rounded_mean(at)
    confirmable = [r for r in todo if r.get("reference_line") and r["flip"]]
    if cfg.confirm and confirmable:
        texts = [prompt(r) + r["prefix"] + r["reference_line"] + "\n" for r in confirmable]
        outs = quant_gen.generate(
            texts,
            GenerationConfig(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, compile=cfg.compile),
        )
        for r, o in zip(confirmable, outs):
            full = r["prefix"] + r["reference_line"] + "\n" + o.text
            ans = extract_answer(full)
            p = problems[r["problem_id"]]
            r["confirmed"] = is_correct(ans, p.answer, p.meta.get("grading", "numeric"))
            r["confirmation_text"] = o.text


def _prompt_of(gens: dict[str, Generation], row: dict) -> str:
    """The prompt the quantized model was given for this row's problem (stored with its generation;
    rows of runs made before prompts were stored used the completion format)."""
    g = gens.get(row["problem_id"])
    return g.prompt if g is not None and g.prompt is not None else build_prompt(row["question"])


def _score_batch(gen: Generator, pairs: list[tuple[str, str]]) -> list:
    inner = getattr(gen, "inner", gen)
    if hasattr(inner, "score_batch"):
        return inner.score_batch(pairs)
    return [gen.score(p, c) for p, c in pairs]
