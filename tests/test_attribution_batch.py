"""Batch locate over JSONL: dotted fields, gold from the reference, one row out per row in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from silverbullet.attribution.batch import locate_file
from silverbullet.errors import UserError

ROW = {
    "question": "Ann has 24 marbles. Tom has 3 times as many. Tom gives 15 away. How many does Tom have?",
    "ground_truth": "Tom has 3 * 24 = <<3*24=72>>72.\nHe keeps 72 - 15 = <<72-15=57>>57.\n#### 57",
    "m": {"solution": "Tom has 3 * 24 = <<3*24=74>>74.\nHe keeps 74 - 15 = <<74-15=59>>59.\nA: 59"},
    "ok": {"solution": "Tom has 3 * 24 = <<3*24=72>>72.\nHe keeps 72 - 15 = <<72-15=57>>57.\nA: 57"},
}


def write(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "in.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


def test_dotted_fields_and_gold_from_reference(tmp_path: Path) -> None:
    src = write(tmp_path, [json.dumps(ROW), json.dumps({**ROW, "m": ROW["ok"]})])
    out = tmp_path / "out" / "att.jsonl"
    summary = locate_file(src, out, "question", "m.solution", "ground_truth")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary["rows"] == 2 and summary["flagged"] == 1
    assert rows[0]["first_faulty_step"] == 0 and rows[0]["error_type"] == "execution"
    assert rows[0]["final_answer_correct"] is False and rows[1]["final_answer_correct"] is True
    assert {"first_faulty_step", "error_type", "final_answer_correct", "n_steps", "evidence"} <= set(rows[0])


def test_answer_field(tmp_path: Path) -> None:
    src = write(tmp_path, [json.dumps({**ROW, "gold": "59"})])
    out = tmp_path / "o.jsonl"
    locate_file(src, out, "question", "m.solution", answer_field="gold")
    assert json.loads(out.read_text())["final_answer_correct"] is True


@pytest.mark.parametrize(
    "lines,needle",
    [
        ([], "empty file"),
        (["   "], "empty file"),
        ([json.dumps(ROW), "{not json"], ":2: malformed JSON"),
        ([json.dumps({"question": "q"})], "missing field 'm.solution'"),
        (["[1, 2]"], "expected a JSON object"),
        ([json.dumps({**ROW, "m": {"solution": [1]}})], "not text"),
    ],
)
def test_bad_input(tmp_path: Path, lines: list[str], needle: str) -> None:
    src = write(tmp_path, lines)
    with pytest.raises(UserError) as e:
        locate_file(src, tmp_path / "o.jsonl", "question", "m.solution", "ground_truth")
    msg = str(e.value)
    assert needle in msg and str(src) in msg and "\n" not in msg
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="no such file"):
        locate_file(tmp_path / "nope.jsonl", tmp_path / "o.jsonl", "q", "c")


PEER_Q = "Sam has 4 boxes of 6 pens and buys 5 more pens. How many pens does he have?"
PEER_WRONG = "He has 4 + 6 = <<4+6=10>>10 pens in boxes.\nWith the new ones he has 10 + 5 = <<10+5=15>>15 pens.\nA: 15"
PEER_RIGHT = "The boxes hold 4 * 6 = <<4*6=24>>24 pens.\nHe then has 24 + 5 = <<24+5=29>>29 pens.\nA: 29"


def _peer_rows(tmp_path: Path) -> Path:
    rows = [
        {"q": PEER_Q, "s": PEER_WRONG, "gold": "29"},
        {"q": PEER_Q.upper(), "s": PEER_RIGHT, "gold": "29"},  # the same question, other case
        {"q": "Another question with 3 and 4?", "s": "3 + 4 = <<3+4=7>>7\nA: 7", "gold": "12"},
    ]
    return write(tmp_path, [json.dumps(r) for r in rows])


def test_peers_stand_in_for_a_missing_reference(tmp_path: Path) -> None:
    """A wrong solution with only its gold answer: alone, no check fires and a prior blames it; with a
    right-answer peer of the same question, its first step leaves the peer's dataflow."""
    src, out, bare = _peer_rows(tmp_path), tmp_path / "o.jsonl", tmp_path / "bare.jsonl"
    s = locate_file(src, out, "q", "s", answer_field="gold")
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert s["located_against_peers"] == 1
    assert rows[0]["first_faulty_step"] == 0 and rows[0]["evidence"]["check"] == "reference_divergence"
    assert rows[0]["evidence"]["peer_references"] == 1
    assert "peer_references" not in rows[1]["evidence"] and "peer_references" not in rows[2]["evidence"]
    locate_file(src, bare, "q", "s", answer_field="gold", peers=False)
    alone = json.loads(bare.read_text().splitlines()[0])
    assert alone["evidence"]["check"] == "wrong_final_value" and "peer_references" not in alone["evidence"]


def test_a_reference_field_wins_over_peers(tmp_path: Path) -> None:
    rows = [{**json.loads(x), "ref": PEER_RIGHT} for x in _peer_rows(tmp_path).read_text().splitlines()]
    src = write(tmp_path, [json.dumps(r) for r in rows])
    s = locate_file(src, tmp_path / "o.jsonl", "q", "s", reference_field="ref", answer_field="gold")
    assert s["located_against_peers"] == 0


def test_locate_prints_a_table_or_json_and_names_a_gold_solution_passed_as_the_answer(tmp_path):
    """`locate` shows a table (a person reads it), --json FILE writes the summary; a gold *solution* given as the answer
    field loses the dataflow check (test acc_err 0.42 vs 0.71), so the command says so."""
    from conftest import run_main

    src = write(tmp_path, [json.dumps(ROW), json.dumps({**ROW, "m": ROW["ok"]})])

    def run(*args: str) -> tuple[int | None, str, str]:
        return run_main("locate", "--input", src, "--question-field", "question", "--candidate-field", "m.solution",
                        "--out", tmp_path / "o.jsonl", *args)  # fmt: skip

    code, out, err = run("--answer-field", "ground_truth")
    assert code in (None, 0), err
    assert "first faulty step found" in out and "1 of 2 (50.0%)" in out
    assert "--answer-field 'ground_truth' holds worked solutions (2 of 2 rows)" in err
    assert "--reference-field" in err
    code, out, err = run("--reference-field", "ground_truth", "--json", str(tmp_path / "s.json"))
    assert "first faulty step found" in out and "s.json" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["rows"] == 2 and summary["flagged"] == 1 and "answer_field_worked_solutions" not in summary
    assert "worked solutions" not in err


def test_locate_table_shows_peers_and_the_judge():
    from rich.console import Console

    from silverbullet.cli import _locate_table

    judge = {"rule": "earlier", "error": 3, "correct": 1, "unparsed": 1, "out_of_range": 0, "moved": 1}
    s = {"rows": 5, "flagged": 3, "graded": 5, "final_answer_correct": 2, "error_types": {"method": 2, "execution": 1},
         "position_histogram": {"0": 1, "4": 2}, "located_against_peers": 2, "judge": judge}  # fmt: skip
    console = Console(width=120, record=True)
    console.print(_locate_table(s, Path("x.jsonl")))
    text = console.export_text()
    assert "1 / 0 / 0 / 2" in text and "2 of 5 (40.0%)" in text and "method errors" in text
    assert "located against right-answer peers" in text and "judge (earlier): error / correct / unparsed" in text
    assert "3 / 1 / 1" in text and "judge moved the checker's step" in text
