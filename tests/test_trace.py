"""Faults inside a reasoning trace (attribution/trace.py) and how locate and the summary report them."""

from __future__ import annotations

import time

from silverbullet.attribution.locate import locate
from silverbullet.attribution.trace import read_trace
from silverbullet.diagnose import trace_fault_summary

Q = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
GOLD = "In May: 48 / 2 = 24\nAltogether: 48 + 24 = 72\nThe answer is: 72"


def test_a_slip_the_trace_corrects_is_not_a_fault():
    same_line = "<think>\nOkay. 48 / 2 = 24.\nHmm, 48 + 24 = 73? No, it is 72.\n</think>\n\nThe answer is: 72"
    next_line = "<think>\n48 / 2 = 24\n48 + 24 = 73\nWait, let me redo that: 48 + 24 = 72.\n</think>\nThe answer is: 72"
    recomputed = "<think>\n48 / 2 = 24\n48 + 24 = 73\nHmm. Adding 48 and 24 again gives 72.\n</think>\n"
    for text in (same_line, next_line, recomputed):
        r = read_trace(text)
        assert r is not None and r.fault is None and r.corrected == 1, text
    # going on from the true value is not noticing the slip: the false equation stands
    went_on = "<think>\nMay: 48 / 2 = 26\nTotal: 48 + 24 = 72\n</think>\nThe answer is: 72"
    r = read_trace(went_on)
    assert r.fault["line"] == 0 and r.fault["used_later"] is False and r.corrected == 0


def test_the_first_uncorrected_slip_is_the_trace_fault():
    text = (
        "<think>\nApril: 48 clips.\nMay: 48 / 2 = 24.\nTotal: 48 + 24 = 82.\nSo 82 clips.\n"
        "Check: 82 - 48 = 34\n</think>\n\nShe sold 48 + 24 = 82 clips.\nThe answer is: 82"
    )
    r = read_trace(text)
    assert r.fault["line"] == 2 and r.fault["check"] == "arithmetic" and r.fault["claimed"] == "82"
    assert r.fault["used_later"] is True  # "So 82 clips." builds on it
    # the same slip repeated a line later is not its own correction
    again = "<think>\n48 + 24 = 82\n48 + 24 = 82\n</think>\n"
    assert read_trace(again).fault["line"] == 0


def test_a_loop_is_a_fault_where_it_starts():
    loop = "So she sold 72 clips in all.\n" * 4
    text = f"<think>\nMay: 48 / 2 = 24.\nTotal: 48 + 24 = 72.\n{loop}Then 2 + 2 = 5\n"
    r = read_trace(text)
    assert r.fault == {"line": 2, "text": "So she sold 72 clips in all.", "check": "repetition"}
    # short interjections repeat in healthy traces
    assert read_trace("<think>\nWait.\nHmm.\nWait.\nWait.\n48 + 24 = 72\n</think>\n").fault is None


def test_no_trace_is_none_and_a_clean_trace_has_no_fault():
    assert read_trace("Step 1: 48 + 24 = 73\nThe answer is: 73") is None
    r = read_trace(f"<think>\n{GOLD}\n</think>\n\n{GOLD}")
    assert r.fault is None and r.answers == ((2, "72"),) and r.lines == 3


def test_locate_types_an_unclosed_trace_by_what_went_wrong_in_it():
    answered = "<think>\nMay: 48 / 2 = 24\nTotal: 48 + 24 = 72\nThe answer is: 72\nLet me wr"
    a = locate(Q, answered, GOLD)
    assert a.first_faulty_step is None and a.evidence["check"] == "unfinished_thinking"
    assert a.evidence["rule"] == "answered_in_trace" and a.error_type == "reasoning"
    assert a.evidence["trace"]["right_answer_line"] == 2

    slipped = "<think>\nMay: 48 / 2 = 26\nTotal: 48 + 26 = 74\nThe answer is: 74\nLet me wr"
    a = locate(Q, slipped, GOLD)
    assert a.evidence["rule"] == "trace_arithmetic" and a.error_type == "execution"
    assert a.evidence["trace"]["fault"]["line"] == 0 and a.evidence["trace"]["right_answer_line"] is None

    nothing = "<think>\nMay: half of April.\nHmm, so"
    a = locate(Q, nothing, GOLD)
    assert "rule" not in a.evidence and a.error_type == "reasoning" and "fault" not in a.evidence["trace"]


def test_locate_says_whether_a_closed_traces_slip_reached_the_response():
    response = "Step 1: 48 / 2 = 24\nStep 2: 48 + 24 = 82\nThe answer is: 82"
    text = f"<think>\nMay: 48 / 2 = 24\nTotal: 48 + 24 = 82\n</think>\n\n{response}"
    a = locate(Q, text, GOLD)
    assert a.first_faulty_step == 1 and a.evidence["check"] == "arithmetic"  # the response's own step
    assert a.evidence["trace"]["fault"]["line"] == 1 and a.evidence["trace"]["fault"]["in_response"] is True
    # a right answer: no trace evidence (a wrong slip on the way is the trace's business)
    right = "<think>\n48 + 24 = 82\n</think>\nStep 1: 48 / 2 = 24\nStep 2: 48 + 24 = 72\nThe answer is: 72"
    assert "trace" not in locate(Q, right, GOLD).evidence


def test_summary_of_trace_faults():
    rows = [
        {"evidence": {"check": "unfinished_thinking", "rule": "answered_in_trace", "trace": {"lines": 3}}},
        {"evidence": {"check": "unfinished_thinking", "rule": "trace_arithmetic",
                      "trace": {"fault": {"check": "arithmetic"}}}},
        {"evidence": {"check": "arithmetic", "trace": {"fault": {"check": "repetition"}}}},
        {"evidence": {"check": "arithmetic"}},
    ]  # fmt: skip
    assert trace_fault_summary(rows) == {
        "flips_with_trace": 3, "fault_in_trace": 2, "by_check": {"arithmetic": 1, "repetition": 1},
        "unfinished": 2, "unfinished_answered": 1, "unfinished_fault": 1,
    }  # fmt: skip
    assert trace_fault_summary(rows[3:]) is None


def test_a_runaway_trace_is_read_in_bounded_time():
    text = "<think>\n" + "1 + 1 = 3 and then 2 * 2 = 5, 3 + 3 = 7 again\n" * 20_000
    t0 = time.perf_counter()
    r = read_trace(text)
    assert r.fault["line"] == 0 and time.perf_counter() - t0 < 5
