"""The reference task as a benchmark: `synthetic` with splits train / repair / eval (test = eval)."""

from __future__ import annotations

from silverbullet.benchmarks import synthetic_task as task
from silverbullet.errors import UserError
from silverbullet.records import Problem

DEFAULT_LIMIT = 1000
ALIASES = {"test": "eval", "validation": "eval", "dev": "eval"}


def load(split: str = "eval", limit: int | None = None, seed: int = 0) -> list[Problem]:
    """The first `limit` problems of a split's deterministic stream (seed picks another stream)."""
    split = ALIASES.get(split, split)
    if split not in task.SPLITS:
        raise UserError(f"synthetic has no split {split!r}; use one of {', '.join(task.SPLITS)}")
    n = DEFAULT_LIMIT if limit is None else limit
    return [
        Problem(
            id=f"synthetic-{split}-{i}" + (f"-s{seed}" if seed else ""),
            question=p.question,
            answer=str(p.answer),
            solution=p.solution,
            source="synthetic",
            meta={
                "n_steps": p.n_steps,
                "ops": p.ops,
                "has_distractor": p.has_distractor,
                "grading": "numeric",
                "split": split,
            },
        )
        for i, p in enumerate(task.generate(split, n, seed=seed))
    ]
