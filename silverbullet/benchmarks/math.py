"""MATH-style problems with LaTeX answers (MATH-500, AIME, AMC, Minerva), graded with math-verify.

The gold answer is the `answer` field when present, else the last \\boxed{} of the solution.
"""

from __future__ import annotations

import os

from silverbullet.benchmarks.jsonl import data_file, data_root, load_jsonl
from silverbullet.errors import UserError
from silverbullet.records import Problem

FIELDS = {"question": "problem"}


def load_file(
    path: str | os.PathLike, *, source: str | None = None, split: str | None = None
) -> list[Problem]:
    """A MATH-style JSONL file: problem, solution and/or answer, optional id / unique_id / idx."""
    return load_jsonl(path, fields=FIELDS, grading="latex", source=source, split=split)


def load_folder(folder: str, split: str = "test") -> list[Problem]:
    """<data>/<folder>/<split>.jsonl, e.g. aime24, amc23, minerva_math."""
    return load_file(data_file(folder, split), source=folder, split=split)


def load_math(split: str = "test") -> list[Problem]:
    """MATH-500 (or full MATH) when a copy is in the data folder under math500/ or math/."""
    for folder in ("math500", "math"):
        if (data_root() / folder / f"{split}.jsonl").is_file():
            return load_folder(folder, split)
    raise UserError(
        f"MATH is not in the data folder ({data_root()}/math500/{split}.jsonl missing); pass a local "
        "MATH-style JSONL path instead, or use aime24, amc23 or minerva_math"
    )
