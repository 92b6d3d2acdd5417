"""SVAMP and ASDiv: short arithmetic word problems (body + question), numeric answers."""

from __future__ import annotations

import re

from silverbullet.benchmarks.jsonl import data_file, read_jsonl, rows_to_problems
from silverbullet.errors import UserError
from silverbullet.records import Problem

_ASDIV_NUMBER_RE = re.compile(r"^\s*(-?(?:\d+(?:,\d+)*(?:\.\d+)?|\.\d+)(?:/\d+)?)\s*(?:\([^)]*\)\s*)?$")  # linear


def _joined(path, lineno: int, row: dict, body: str, question: str) -> str:
    for name in (body, question):
        if not isinstance(row.get(name), str):
            raise UserError(f"{path}:{lineno}: missing field {name!r}")
    b, q = row[body].strip(), row[question].strip()
    return f"{b}{'' if b.endswith(('.', '?', '!')) else '.'} {q}"


def load_svamp(split: str = "test") -> list[Problem]:
    path = data_file("svamp", split)
    rows = []
    for lineno, row in read_jsonl(path):
        rows.append((lineno, {**row, "_question": _joined(path, lineno, row, "Body", "Question")}))
    return rows_to_problems(
        rows,
        where=str(path),
        source="svamp",
        split=split,
        fields={"question": "_question", "answer": "Answer", "id": "ID"},
        grading="numeric",
    )


def load_asdiv(split: str = "test") -> list[Problem]:
    """ASDiv rows whose answer is a number ('9 (apples)' -> '9'); the ~8% with non-numeric answers
    (names, yes/no, clock times) are skipped, since grading here is numeric. Ids keep the file's idx."""
    path = data_file("asdiv", split)
    rows = []
    for lineno, row in read_jsonl(path):
        m = _ASDIV_NUMBER_RE.match(str(row.get("answer", "")))
        if m is None:
            continue
        q = _joined(path, lineno, row, "body", "question")
        rows.append((lineno, {**row, "_question": q, "_answer": m.group(1)}))
    return rows_to_problems(
        rows,
        where=str(path),
        source="asdiv",
        split=split,
        fields={"question": "_question", "answer": "_answer", "id": "idx"},
        grading="numeric",
    )
