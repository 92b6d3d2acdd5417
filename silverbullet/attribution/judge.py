"""The full-precision model as judge: the first step of a quantized solution that the reference
model, teacher-forced on the quantized text, would not have written.

Why: the arithmetic checker cannot see a step whose arithmetic is right but whose reasoning is
wrong. In `diagnose` the reference model is at hand; where it is confident of another token than the
one the quantized model wrote, the quantized model has left the reference's path. The gap between
the reference's own top-1 token and the forced token (in log-probability) measures how far. The
first step holding a token with a gap above `threshold` is the judge's candidate first error.

Pure functions over the scores (token log-probs, top-1 log-probs, token end offsets) and the steps'
character spans, so the signal is tested without a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# ln(20): the reference finds the written token at least 20x less likely than its own choice
DEFAULT_THRESHOLD = 3.0


@dataclass
class JudgeVerdict:
    step: int | None  # first step whose largest gap is above the threshold (None: the judge sees none)
    gap: float | None  # that step's largest gap (nats)
    gaps: list[float]  # the largest gap of every step, in step order


def step_gaps(
    logprobs: Sequence[float],
    top_logprobs: Sequence[float],
    token_ends: Sequence[int],
    spans: Sequence[tuple[int, int]],
) -> list[float]:
    """Largest (top-1 minus forced) log-prob gap over the tokens that end inside each step's span.
    A token belongs to the step its last character falls in."""
    gaps = [0.0] * len(spans)
    k = 0
    for lp, top, end in zip(logprobs, top_logprobs, token_ends):
        c = end - 1  # the token's last character
        while k < len(spans) and spans[k][1] <= c:
            k += 1
        if k == len(spans):
            break
        if c >= spans[k][0]:  # else between steps (a newline, a space)
            gaps[k] = max(gaps[k], float(top) - float(lp))
    return gaps


def judge(
    logprobs: Sequence[float],
    top_logprobs: Sequence[float] | None,
    token_ends: Sequence[int],
    spans: Sequence[tuple[int, int]],
    threshold: float = DEFAULT_THRESHOLD,
) -> JudgeVerdict:
    """The judge's first faulty step. Without top-1 log-probs (a backend that does not report them)
    the gap is measured from certainty (log p = 0), which over-flags tokens the reference itself
    would have hesitated on."""
    tops = top_logprobs if top_logprobs is not None else [0.0] * len(logprobs)
    return first_over(step_gaps(logprobs, tops, token_ends, spans), threshold)


def first_over(gaps: Sequence[float], threshold: float = DEFAULT_THRESHOLD) -> JudgeVerdict:
    """The first step whose gap is above `threshold`: the judge's (or a reader's) candidate."""
    for k, g in enumerate(gaps):
        if g > threshold:
            return JudgeVerdict(k, round(g, 4), [round(x, 4) for x in gaps])
    return JudgeVerdict(None, None, [round(x, 4) for x in gaps])


def combine(checker_step: int | None, judge_step: int | None, rule: str = "fallback") -> int | None:
    """Checker and judge together. `fallback` (the default): the checker's step where it has one, the
    judge's where the checker sees nothing (a semantic error with right arithmetic). `earlier`: the
    earlier of the two. On the reference task `earlier` lost 8 points to the judge's early alarms on
    harmless rewordings (bench/results/judge_reference.json), so it is not the default."""
    if rule == "earlier":
        steps = [s for s in (checker_step, judge_step) if s is not None]
        return min(steps) if steps else None
    return checker_step if checker_step is not None else judge_step
