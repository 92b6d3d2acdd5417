"""Any JSONL file as a benchmark: read rows with line numbers, map fields to `Problem`s.

Every other file-backed benchmark is this loader plus a fixed field mapping, so bad input is
reported the same way everywhere: the file, the line number and the field.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError
from silverbullet.grading import PLAIN_NUMBER
from silverbullet.paths import project_root
from silverbullet.prompting import boxed
from silverbullet.records import Problem

SPLIT_NAMES = {"test", "train", "validation", "valid", "dev", "eval"}
# Field names tried, in order, when no mapping is given.
GUESSES = {
    "question": ("question", "problem", "Question", "input", "prompt"),
    "answer": ("answer", "final_answer", "Answer", "target", "ground_truth"),
    "solution": ("solution", "rationale", "reasoning"),
    "id": ("id", "unique_id", "ID", "idx"),
}
_PLAIN_NUMBER_RE = re.compile(PLAIN_NUMBER + r"(?:%\s*)?")  # "15 %" too
_MISSING = object()


def data_root() -> Path:
    """Where shared benchmark data lives: $SILVERBULLET_DATA, else ../shared/data beside the repo."""
    env = os.environ.get("SILVERBULLET_DATA")
    if env:
        return Path(env).expanduser()
    return project_root().parent / "shared" / "data"


def data_file(folder: str, split: str) -> Path:
    """<data root>/<folder>/<split>.jsonl, or a UserError naming the splits that do exist."""
    d = data_root() / folder
    path = d / f"{split}.jsonl"
    if path.is_file():
        return path
    if not d.is_dir():
        raise UserError(
            f"benchmark data folder {d} not found; set SILVERBULLET_DATA to the folder holding {folder}/"
        )
    have = sorted(p.stem for p in d.glob("*.jsonl"))
    raise UserError(f"{folder} has no split {split!r} ({path} missing); splits: {', '.join(have) or 'none'}")


def read_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) for every non-blank line; malformed lines raise a UserError naming them."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"benchmark file {path} not found")
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def get_field(row: dict[str, Any], dotted: str, default: Any = _MISSING) -> Any:
    """row["a"]["b"] for "a.b" (list indices allowed: "choices.0.text")."""
    cur: Any = row
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            if default is _MISSING:
                raise KeyError(dotted)
            return default
    return cur


def answer_text(value: Any) -> str:
    """Gold answers as text: 27.0 -> '27', 0.5 -> '0.5', strings stripped."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list) and len(value) == 1:
        return answer_text(value[0])
    return str(value).strip()


def guess_fields(row: dict[str, Any]) -> dict[str, str]:
    """The field mapping a row most likely uses (question and id; answer or solution)."""
    out = {}
    for target, names in GUESSES.items():
        name = next((n for n in names if n in row), None)
        if name is not None:
            out[target] = name
    return out


def split_gsm8k_answer(text: str) -> str | None:
    """'... #### 1,200' -> '1,200' (None without a #### line)."""
    if "####" not in text:
        return None
    return text.rsplit("####", 1)[1].strip() or None


def infer_grading(answers: Iterable[str]) -> str:
    """'numeric' when every gold answer is a plain number, else 'latex' (math-verify)."""
    return "numeric" if all(_PLAIN_NUMBER_RE.fullmatch(a) for a in answers) else "latex"


def source_name(path: Path) -> tuple[str, str | None]:
    """(source, split) from a file path: data/gsm8k/test.jsonl -> ('gsm8k', 'test')."""
    if path.stem in SPLIT_NAMES and path.parent.name:
        return path.parent.name, path.stem
    return path.stem, None


def make_id(source: str, split: str | None, key: Any) -> str:
    """Stable problem id: source, the split unless it is 'test', then the file's id or row index."""
    return f"{source}-{key}" if split in (None, "test") else f"{source}-{split}-{key}"


def rows_to_problems(
    rows: Iterable[tuple[int, dict[str, Any]]],
    *,
    where: str,
    source: str,
    split: str | None = None,
    fields: dict[str, str] | None = None,
    grading: str | None = None,
    keep_row: bool = False,
) -> list[Problem]:
    """Map rows to Problems. `fields` maps question/answer/solution/id to (dotted) row fields; absent
    targets are guessed per row. The answer may come from the answer field (a GSM8K `#### x` tail is
    split off) or from the last \\boxed{} of the solution. Errors name `where`:line and the field."""
    fields = dict(fields or {})
    grading = fields.pop("grading", None) or grading
    if grading not in (None, "auto", "numeric", "latex"):
        raise UserError(f"{where}: grading must be 'numeric', 'latex' or 'auto', not {grading!r}")
    unknown = set(fields) - set(GUESSES)
    if unknown:
        raise UserError(
            f"{where}: unknown field mapping key(s) {sorted(unknown)}; "
            "use question, answer, solution, id, grading"
        )
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, (lineno, row) in enumerate(rows):
        mapping = {**guess_fields(row), **fields}
        values: dict[str, Any] = {}
        for target, name in mapping.items():
            try:
                values[target] = get_field(row, name)
            except KeyError:
                if target in fields:
                    raise UserError(
                        f"{where}:{lineno}: missing field {name!r} (for {target}); "
                        f"fields present: {', '.join(sorted(row))}"
                    ) from None
        question = values.get("question")
        if question is None or not str(question).strip():
            name = mapping.get("question", "question")
            raise UserError(
                f"{where}:{lineno}: missing or empty question field {name!r}; fields present: "
                f"{', '.join(sorted(row))} (pass fields={{'question': ...}})"
            )
        solution = values.get("solution")
        solution = None if solution is None else str(solution)
        answer = values.get("answer")
        if isinstance(answer, str) and "####" in answer:
            solution = solution or answer
            answer = split_gsm8k_answer(answer)
        if answer is None and solution is not None:
            answer = boxed(solution) or split_gsm8k_answer(solution)
        if answer is None or answer_text(answer) == "":
            name = mapping.get("answer", "answer")
            raise UserError(
                f"{where}:{lineno}: missing answer: no field {name!r} and no \\boxed{{}} in a solution; "
                f"fields present: {', '.join(sorted(row))}"
            )
        pid = make_id(source, split, values["id"] if "id" in values else index)
        if pid in seen:
            raise UserError(f"{where}:{lineno}: duplicate id {pid!r} (first on line {seen[pid]})")
        seen[pid] = lineno
        meta: dict[str, Any] = {"line": lineno}
        if keep_row:
            meta["row"] = row
        problems.append(
            Problem(
                id=pid,
                question=str(question).strip(),
                answer=answer_text(answer),
                solution=solution,
                source=source,
                meta=meta,
            )
        )
    if not problems:
        raise UserError(f"{where}: no problems (empty dataset)")
    kind = grading if grading not in (None, "auto") else infer_grading(p.answer for p in problems)
    for p in problems:
        p.meta["grading"] = kind
    return problems


def load_jsonl(
    path: str | os.PathLike,
    *,
    fields: dict[str, str] | None = None,
    grading: str | None = None,
    source: str | None = None,
    split: str | None = None,
) -> list[Problem]:
    """Problems from any JSONL file (see `rows_to_problems` for the field mapping)."""
    path = Path(path).expanduser()
    src, file_split = source_name(path)
    return rows_to_problems(
        read_jsonl(path),
        where=str(path),
        source=source or src,
        split=split or file_split,
        fields=fields,
        grading=grading,
    )


def subsample(problems: list[Problem], limit: int | None, seed: int) -> list[Problem]:
    """A seeded random subset of `limit` problems, kept in file order (all when limit is None)."""
    if limit is None or limit >= len(problems):
        return problems
    if limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    keep = sorted(random.Random(seed).sample(range(len(problems)), limit))
    return [problems[i] for i in keep]
