"""GSM8K: grade-school word problems; the gold solution ends with `#### <number>`."""

from __future__ import annotations

from silverbullet.benchmarks.jsonl import data_file, read_jsonl, rows_to_problems
from silverbullet.errors import UserError
from silverbullet.records import Problem


def load(split: str = "test") -> list[Problem]:
    """Problems from <data>/gsm8k/<split>.jsonl. The full gold answer text (steps with `<<a*b=c>>`
    calculator notes, then `#### x`) is kept as `solution`; `answer` is the text after ####."""
    path = data_file("gsm8k", split)
    rows = []
    for lineno, row in read_jsonl(path):
        for name in ("question", "answer"):
            if not isinstance(row.get(name), str):
                raise UserError(f"{path}:{lineno}: missing field {name!r} (GSM8K rows have question, answer)")
        if "####" not in row["answer"]:
            raise UserError(f"{path}:{lineno}: field 'answer' has no '#### <final answer>' line")
        rows.append((lineno, row))
    return rows_to_problems(
        rows,
        where=str(path),
        source="gsm8k",
        split=split,
        fields={"question": "question", "answer": "answer"},
        grading="numeric",
    )
