"""MATH-style problems with LaTeX answers (MATH-500, AIME, AMC, Minerva), graded with math-verify.

The gold answer is the `answer` field when present, else the last \\boxed{} of the solution.
"""

from __future__ import annotations

import os
from pathlib import Path

from silverbullet.benchmarks.jsonl import data_file, data_root, read_jsonl, rows_to_problems, source_name
from silverbullet.errors import UserError
from silverbullet.records import Problem

FIELDS = {"question": "problem"}


def load_file(
    path: str | os.PathLike, *, source: str | None = None, split: str | None = None
) -> list[Problem]:
    """A MATH-style JSONL file: problem, solution and/or answer, optional id / unique_id / idx."""
    path = Path(path).expanduser()
    src, file_split = source_name(path)
    return rows_to_problems(
        read_jsonl(path),
        where=str(path),
        source=source or src,
        split=split or file_split,
        fields=FIELDS,
        grading="latex",
    )


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
