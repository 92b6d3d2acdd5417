"""Rewards for `repair --method grpo`, from the project's own checker (`locate`).

arXiv 2511.15694 found quantization-aware RL with outcome rewards harmful to a quantized model's
reasoning. The process reward asks for more than the answer: no refuted step, and the earlier the
first faulty step, the larger the penalty. The outcome reward is the answer alone, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable

from silverbullet.attribution.locate import locate

REWARDS = ("process", "outcome")
ANSWER_WEIGHT = 0.6  # process reward: right answer; the rest is how late the first refuted step is


def outcome_reward(question: str, completion: str, gold: str) -> float:
    """1 for a right final answer, else 0."""
    return 1.0 if locate(question, completion, gold_answer=gold).final_answer_correct else 0.0


def process_reward(question: str, completion: str, gold: str) -> float:
    """ANSWER_WEIGHT for a right answer, plus the rest times k/n for a first refuted step at k of n
    steps (0-based; k = n when none is refuted). A right answer with every step standing gets 1; a
    wrong one that goes wrong in its first step gets 0; a wrong answer with no step refuted gets
    the process part in full, below any right answer."""
    # a wrong answer with no refuted step is blamed on its last step, not on the locator's prior
    # (its earliest used step): the process part scores evidence
    att = locate(question, completion, gold_answer=gold, without_evidence="last")
    n = max(1, att.n_steps)
    k = n if att.first_faulty_step is None else min(att.first_faulty_step, n)
    return ANSWER_WEIGHT * bool(att.final_answer_correct) + (1 - ANSWER_WEIGHT) * k / n


def reward_function(kind: str) -> Callable[..., list[float]]:
    """A TRL GRPOTrainer reward function: it gets the completions and the set's `question` and
    `answer` columns, one entry per completion."""
    score = {"process": process_reward, "outcome": outcome_reward}[kind]

    def reward(completions: list, question: list[str], answer: list[str], **_: object) -> list[float]:
        return [score(q, _text(c), str(a)) for c, q, a in zip(completions, question, answer, strict=True)]

    reward.__name__ = f"{kind}_reward"
    return reward


def _text(completion: object) -> str:
    """A completion as text: a string, or a chat turn list (conversational prompts)."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)
