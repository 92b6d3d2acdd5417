"""Locate first faults for every row of a JSONL file (the engine behind `silverbullet locate`).

Fields are dotted paths into each row (`175b_finetuning.solution`). Bad input is a `UserError`
with one line naming the file, the line and the field; output is written atomically so a killed
run never leaves half a file.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from silverbullet.attribution.critic import DEFAULT_RULE, apply_reading, apply_verdict, ask_critic
from silverbullet.attribution.judge import DEFAULT_THRESHOLD, JudgeVerdict
from silverbullet.attribution.locate import locate
from silverbullet.attribution.peers import locate_with_peers, right_peers
from silverbullet.attribution.reader import surprise_verdict
from silverbullet.errors import UserError
from silverbullet.records import to_dict
from silverbullet.run.jsonl import write_rows

# spaces within the line only: `^\s*` also ran over newlines, from every line start (quadratic)
_GOLD_RE = re.compile(r"^[ \t]*(?:####|A[ \t]*:)[ \t]*(.+?)[ \t]*$", re.MULTILINE)


def get_field(row: Any, path: str) -> Any:
    """Value at a dotted path (`a.b.c`); raises KeyError naming the missing part."""
    cur = row
    for part in path.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise KeyError(part)
    return cur


def _text(value: Any, where: str, field: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{field}' is {type(value).__name__}, not text; point it at a string field")
    return value


def _gold_from_reference(reference: str | None) -> str | None:
    """GSM8K-style references end with '#### 42' or 'A: 42'."""
    if not reference:
        return None
    found = _GOLD_RE.findall(reference)
    return found[-1] if found else None


def _worked_solution(answer: str | None) -> bool:
    """An answer value with several lines that ends in a GSM8K-style answer line: a gold solution."""
    return bool(answer) and answer.strip().count("\n") >= 1 and _gold_from_reference(answer) is not None


def locate_file(
    input_path: str | Path,
    out_path: str | Path,
    question_field: str,
    candidate_field: str,
    reference_field: str | None = None,
    answer_field: str | None = None,
    id_field: str | None = None,
    critic: tuple[Any, Any] | None = None,
    judge_rule: str = DEFAULT_RULE,
    judge_max_tokens: int = 1024,
    peers: bool = True,
    judge_gold: bool = False,
    reader: Any = None,
    reader_rule: str = DEFAULT_RULE,
    surprise_threshold: float = DEFAULT_THRESHOLD,
    verifier: tuple[Any, Any] | None = None,
    verifier_rule: str = DEFAULT_RULE,
    verifier_threshold: float | None = None,
) -> dict[str, Any]:
    """Locate the first faulty step of each row's candidate solution; one output row per input row.

    `peers`: a row with a gold answer but no reference is located against the right-answer
    candidates of other rows with the same question (attribution/peers.py), when there are any.

    `critic`: (judge generator, prompt renderer) from `critic.make_critic`; its verdict on every row
    is combined with the checker's by `judge_rule` (attribution/critic.py); `judge_gold` shows it the
    row's reference solution too.

    `reader`: a `reader.Reader`; each row's first step whose surprise is above `surprise_threshold`
    (nats) is combined with the step found so far by `reader_rule`.

    `verifier`: (reader, verifier.StepProbe); the probe's first step above `verifier_threshold` (its
    own when None) on the reader's reading without the reference is combined by `verifier_rule`.
    Returns a summary: rows, flagged, error-type counts, position histogram, answer accuracy.
    """
    src = Path(input_path)
    if not src.is_file():
        raise UserError(f"{src}: no such file; pass an existing JSONL file with --input")
    try:
        lines = src.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{src}: not UTF-8 text ({e.reason}); pass a UTF-8 JSONL file") from None
    if not any(line.strip() for line in lines):
        raise UserError(f"{src}: empty file; it needs one JSON object per line")
    parsed: list[tuple[int, dict[str, str | None]]] = []
    worked = 0  # answer-field values that are whole worked solutions (a gold solution given as the answer)
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{src}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{where}: malformed JSON ({e.msg}); fix or remove that line") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
        values: dict[str, str | None] = {}
        for name, path in (
            ("question", question_field),
            ("candidate", candidate_field),
            ("reference", reference_field),
            ("answer", answer_field),
            ("id", id_field),
        ):
            if path is None:
                values[name] = None
                continue
            try:
                values[name] = _text(get_field(row, path), where, path)
            except KeyError as e:
                keys = ", ".join(sorted(row)[:12])
                raise UserError(
                    f"{where}: missing field '{path}' (no '{e.args[0]}'); keys here: {keys}; check --{name}-field"
                ) from None
        values["gold"] = values["answer"] if answer_field else _gold_from_reference(values["reference"])
        if reference_field is None and _worked_solution(values["answer"]):
            worked += 1
        parsed.append((lineno, values))
    by_question: dict[str, list[int]] = defaultdict(list)  # rows of one question, for peers
    if peers:
        for k, (_, values) in enumerate(parsed):
            by_question[_question_key(values["question"] or "")].append(k)
    out_rows: list[dict[str, Any]] = []
    texts: list[tuple[str, str, str | None]] = []  # (question, candidate, reference) per row, for the judges
    n_peered = 0
    right: dict[int, bool] = {}
    for k, (lineno, values) in enumerate(parsed):
        question, candidate, gold = values["question"] or "", values["candidate"] or "", values["gold"]
        pid = values["id"] or str(lineno)
        found: list[str] = []
        if values["reference"] is None and gold is not None:
            for j in by_question.get(_question_key(question), ()):
                if j != k and parsed[j][1]["gold"] == gold:
                    if j not in right:  # graded once per row, however many rows ask
                        right[j] = bool(right_peers([parsed[j][1]["candidate"] or ""], gold))
                    if right[j]:
                        found.append(parsed[j][1]["candidate"] or "")
        if found:
            att = locate_with_peers(question, candidate, found, gold, problem_id=pid)
            n_peered += "peer_references" in att.evidence
        else:
            att = locate(question, candidate, values["reference"], gold, problem_id=pid)
        rec = to_dict(att)
        rec["line"] = lineno
        out_rows.append(rec)
        texts.append((question, candidate, values["reference"]))
    judged: Counter = Counter()
    if critic is not None:
        gen, render = critic
        asked = texts if judge_gold else [(q, c) for q, c, _ in texts]
        verdicts = ask_critic(gen, asked, render, judge_max_tokens)
        for rec, verdict in zip(out_rows, verdicts, strict=True):
            apply_verdict(rec, verdict, judge_rule)
            judged[verdict.status] += 1
            judged["moved"] += rec["first_faulty_step"] != rec["checker_step"]
    read: Counter = Counter()
    if reader is not None:
        for rec, reading in zip(out_rows, reader.read(texts), strict=True):
            before = rec["first_faulty_step"]
            apply_reading(rec, surprise_verdict(reading, surprise_threshold), reader_rule)
            read["flagged"] += rec["reader_step"] is not None
            read["moved"] += rec["first_faulty_step"] != before
    checked: Counter = Counter()
    if verifier is not None:
        v_reader, probe = verifier
        threshold = probe.threshold if verifier_threshold is None else verifier_threshold
        for rec, reading in zip(out_rows, v_reader.read([(q, c, None) for q, c, _ in texts]), strict=True):
            before = rec["first_faulty_step"]
            step = probe.first_faulty(reading.states, threshold)
            apply_reading(rec, JudgeVerdict(step, None, []), verifier_rule, prefix="verifier")
            checked["flagged"] += step is not None
            checked["moved"] += rec["first_faulty_step"] != before
    write_rows(Path(out_path), out_rows)
    summary = _summary(out_rows)
    if verifier is not None:
        counts = {k: checked[k] for k in ("flagged", "moved")}
        summary["verifier"] = {"rule": verifier_rule, "threshold": threshold, **counts}
    if critic is not None:
        summary["judge"] = {
            "rule": judge_rule,
            "gold": judge_gold,
            **{k: judged[k] for k in ("error", "correct", "unparsed", "out_of_range", "moved")},
        }
    if reader is not None:
        summary["reader"] = {
            "rule": reader_rule,
            "threshold": surprise_threshold,
            "layer": reader.layer,
            **{k: read[k] for k in ("flagged", "moved")},
        }
    if peers:
        summary["located_against_peers"] = n_peered
    if worked:
        summary["answer_field_worked_solutions"] = worked
    summary["out"] = str(out_path)
    return summary


def _question_key(question: str) -> str:
    """Questions compare equal up to case and whitespace."""
    return " ".join(question.lower().split())


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Rows, flagged, error-type counts, position histogram, answer accuracy."""
    steps = [r["first_faulty_step"] for r in rows if r["first_faulty_step"] is not None]
    graded = [r["final_answer_correct"] for r in rows if r["final_answer_correct"] is not None]
    return {
        "rows": len(rows),
        "flagged": len(steps),
        "graded": len(graded),
        "final_answer_correct": sum(graded),
        "error_types": dict(Counter(r["error_type"] for r in rows if r["error_type"]).most_common()),
        "position_histogram": {str(k): v for k, v in sorted(Counter(steps).items())},
    }
