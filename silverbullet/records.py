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


def to_dict(record: Any) -> dict[str, Any]:
    return dataclasses.asdict(record)


def from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a dataclass from a dict, ignoring unknown keys (forward compatible run files)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
