"""Plain, JSON-serialisable records that flow between stages (see docs/design.md)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Problem:
    """One benchmark problem. `answer` is the gold final answer as text (number or LaTeX)."""

    id: str
    question: str
    answer: str
    solution: str | None = None  # gold step solution, when the source has one
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Generation:
    """One model's solution to one problem."""

    problem_id: str
    model: str  # model tag, e.g. "reference" or "quantized"
    text: str  # the completion (without the prompt)
    answer: str | None  # extracted final answer
    correct: bool
    n_tokens: int = 0
    seconds: float = 0.0
    # Per generated token: top-1 minus top-2 log-prob (only when margins were asked for).
    margins: list[float] | None = None
    # Character offset in `text` where each generated token ends (aligned with `margins`).
    token_ends: list[int] | None = None
    # The rendered prompt the model continued (chat template, exemplars, ...: docs/prompts.md).
    prompt: str | None = None


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a dataclass from a dict, ignoring unknown keys (forward compatible run files)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Step:
    """One reasoning step as analysed by the attribution stage (values are exact rationals as text)."""

    index: int
    text: str
    equations: list[dict[str, Any]] = field(default_factory=list)  # lhs, rhs, source, values, status
    values: list[str] = field(default_factory=list)  # every number the step states, e.g. "3/4"
    result: str | None = None  # the value the step arrives at
    status: str = "unchecked"  # ok | faulty | unchecked (its own arithmetic)


@dataclass
class Attribution:
    """Where a solution first goes wrong, what kind of error it is, and why we think so."""

    problem_id: str = ""
    first_faulty_step: int | None = None  # 0-based among reasoning steps (answer line excluded)
    error_type: str | None = None  # execution | method | conceptual | reasoning
    evidence: dict[str, Any] = field(default_factory=dict)  # which check fired, equation, values
    final_answer_correct: bool | None = None  # None without a gold answer
    n_steps: int = 0
    aligned_reference_step: int | None = None
    fault_in_answer_line: bool = False  # every step checks out but the answer line does not follow
    margin_at_frontier: float | None = None
    margin_elsewhere: float | None = None
    confirmed: bool | None = None
    prefix: str = ""  # the candidate's text before the first faulty step
