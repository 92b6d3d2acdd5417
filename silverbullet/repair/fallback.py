"""Checker fallback: the repaired model answers, but a solution with an arithmetic step that the step
checker refutes is replaced by the unrepaired quantized model's solution when that one has none.

Why: a LoRA repair fixes most flipped problems yet breaks a few that the quantized model solved, and
most of those are one arithmetic slip (docs/repair.md). The checker sees a slip without knowing the
answer, so the unrepaired solution is then the better bet. The rule has no parameters, and it costs a
second generation only for the flagged problems (about 4% at the demo setting). The model served
stays the low-bit base plus its adapter; the base alone is the same weights with the adapter off.
"""

from __future__ import annotations

from collections.abc import Callable

from silverbullet.attribution.check import FAULTY, check_step
from silverbullet.attribution.steps import parse_steps
from silverbullet.generation.base import GenerationConfig, Generator, GenOutput, ScoreOutput, close_generator
from silverbullet.records import Generation, to_dict


def failed_step(text: str) -> int | None:
    """Index (0-based) of the first step whose arithmetic does not hold; None when every step holds
    or has nothing to check. Parses with the project's restricted grammar (never eval)."""
    for i, step in enumerate(parse_steps(text).steps):
        if check_step(step).status == FAULTY:
            return i
    return None


def use_base(repaired_text: str, base_text: str) -> bool:
    """The fallback rule: take the base's solution only when the repaired one has a refuted step and
    the base's has none (if both slip, the repaired one is kept: it is right more often)."""
    return failed_step(repaired_text) is not None and failed_step(base_text) is None


def checker_fallback(repaired: list[Generation], base: dict[str, dict]) -> list[dict]:
    """Per problem, the row the checker fallback serves: the repaired solution, or the quantized
    model's own (from the evaluation diagnose: the same weights with the adapter off, same greedy
    decoding) where `use_base` says so."""
    out = []
    for g in repaired:
        own = base[g.problem_id]
        out.append(own if use_base(g.text, own["text"]) else to_dict(g))
    return out


class FallbackGenerator:
    """A Generator: `primary` (base + adapter) writes every solution; the flagged prompts are sent
    to the base (built on first need by `make_base`) and the rule above picks per prompt.
    `flagged` and `fallbacks` count what happened, for the summary. Give it many prompts per call:
    the base's batch is made of one call's flagged prompts."""

    def __init__(self, primary: Generator, make_base: Callable[[], Generator]) -> None:
        self.primary = primary
        self.tag = primary.tag
        self._make_base = make_base
        self._base: Generator | None = None
        self.flagged = 0
        self.fallbacks = 0

    @property
    def fingerprint(self) -> str:
        return f"checker-fallback-1:{self.primary.fingerprint}"

    @property
    def base(self) -> Generator:
        if self._base is None:
            self._base = self._make_base()
        return self._base

    def generate(self, prompts: list[str], config: GenerationConfig | None = None) -> list[GenOutput]:
        outs = list(self.primary.generate(prompts, config))
        flagged = [i for i, o in enumerate(outs) if failed_step(o.text) is not None]
        self.flagged += len(flagged)
        if flagged:
            alts = self.base.generate([prompts[i] for i in flagged], config)
            for i, alt in zip(flagged, alts):
                if failed_step(alt.text) is None:
                    outs[i] = alt
                    self.fallbacks += 1
        return outs

    def continue_from(self, prompts: list[str], config: GenerationConfig | None = None) -> list[GenOutput]:
        return self.primary.continue_from(prompts, config)

    def score(self, prompt: str, continuation: str) -> ScoreOutput:
        return self.primary.score(prompt, continuation)

    def close(self) -> None:
        close_generator(self.primary)
        if self._base is not None:
            close_generator(self._base)


def evaluate_with_fallback(
    path: str,
    problems: list,
    tag: str = "model",
    batch_size: int = 64,
    device: str = "auto",
    adapter: str = "",
    load_in: str | None = None,
    **measure_kwargs,
) -> dict:
    """`measure.evaluate_model` of base + adapter behind the checker fallback (`silverbullet evaluate
    --adapter A --fallback`): the summary adds how many solutions were flagged and replaced."""
    from silverbullet.generation.hf import HFGenerator
    from silverbullet.measure import evaluate_model

    gen = FallbackGenerator(
        HFGenerator(path, tag=tag, device=device, adapter=adapter, load_in=load_in),
        lambda: HFGenerator(path, tag=f"{tag}-base", device=device, load_in=load_in),
    )
    # One chunk: the flagged prompts of all problems then fill whole base batches (per 64-problem
    # chunk, a batch of 2-3 costs a GPU nearly as much as a full one).
    res = evaluate_model(
        path, problems, tag=tag, batch_size=batch_size, generator=gen, chunk=max(1, len(problems)), **measure_kwargs
    )
    return {"model": res.pop("model"), "adapter": adapter, "flagged": gen.flagged, "fallbacks": gen.fallbacks, **res}
