"""Reference-dataflow matching (attribution/dataflow.py) and the locator's tie rules around it."""

from __future__ import annotations

from fractions import Fraction

from silverbullet.attribution import dataflow as df
from silverbullet.attribution.locate import locate
from silverbullet.attribution.steps import analyse_step, parse_steps, question_numbers

MIA_Q = "Mia reads 6 pages a day for 4 days, then 10 more pages on the last day. How many pages did she read?"
MIA_GOLD = "She reads 6 * 4 = <<6*4=24>>24 pages in 4 days.\nIn all 24 + 10 = <<24+10=34>>34 pages.\nA: 34"

SHOP_Q = "Tom buys 3 apples at $2 each and 4 pears at $5 each. How much does he spend?"
SHOP_GOLD = (
    "Apples cost 3 * 2 = <<3*2=6>>6 dollars.\nPears cost 4 * 5 = <<4*5=20>>20 dollars.\n"
    "He spends 6 + 20 = <<6+20=26>>26 dollars.\nA: 26"
)


def _flow(question: str, gold: str) -> df.GoldFlow:
    ref = parse_steps(gold)
    return df.gold_flow(ref.steps, question_numbers(question), Fraction(ref.answer or 0),
                        question_numbers(question, False))  # fmt: skip


def test_wrong_given_quantity_with_right_arithmetic_is_placed_at_that_step() -> None:
    cand = (
        "Apples cost 3 * 5 = <<3*5=15>>15 dollars.\nPears cost 4 * 5 = <<4*5=20>>20 dollars.\n"
        "He spends 15 + 20 = <<15+20=35>>35 dollars.\nA: 35"
    )
    a = locate(SHOP_Q, cand, SHOP_GOLD)
    assert a.first_faulty_step == 0
    assert a.evidence["check"] == "reference_divergence"


def test_gold_value_from_foreign_quantities_is_a_coincidence() -> None:
    # step 1 reaches the gold's 24 from 10 and 4 (the gold's 24 is 6 * 4): not support, so the
    # wrong step 0 that feeds it is the first fault, not the last step
    cand = (
        "She reads 10 + 4 = <<10+4=14>>14 pages first.\nThen 14 + 10 = <<14+10=24>>24 pages.\n"
        "In all 24 + 6 = <<24+6=30>>30 pages.\nA: 30"
    )
    flow = _flow(MIA_Q, MIA_GOLD)
    steps = parse_steps(cand).steps
    leaves = df.candidate_leaves(steps, flow)
    assert df.support(steps[1], leaves[1], flow, set()) == df.COINCIDENCE
    assert locate(MIA_Q, cand, MIA_GOLD).first_faulty_step == 0


def test_same_quantities_other_order_is_gold() -> None:
    flow = _flow(MIA_Q, MIA_GOLD)
    step = analyse_step("Over 4 days that is 4 x 6 = <<4*6=24>>24 pages.")
    assert df.support(step, df.candidate_leaves([step], flow)[0], flow, set()) == df.GOLD


def test_gold_sub_expression_is_a_gold_quantity() -> None:
    q = "There are 12 players and 3 coaches; each player brings 2 guests. How many people come?"
    flow = _flow(q, "12 + 3 + 12 * 2 = <<12+3+12*2=39>>39 people come.\nA: 39")
    step = analyse_step("The players bring 12 * 2 = <<12*2=24>>24 guests.")
    assert df.support(step, df.candidate_leaves([step], flow)[0], flow, set()) == df.GOLD


def test_one_operation_on_a_gold_quantity_is_supported() -> None:
    # the gold's 15 is 10 + 10/2 (hours a night); 5 * 3 (reading hours a week) meets the same
    # number by another route: one operation on a gold quantity and a given, so supported
    q = "Jo plays 10 hours and reads half as long, 3 times a week. How many hours is that a week?"
    gold = (
        "She reads 10 / 2 = <<10/2=5>>5 hours.\nSo 10 + 5 = <<10+5=15>>15 hours a night.\n15 * 3 = <<15*3=45>>45\nA: 45"
    )
    flow = _flow(q, gold)
    steps = parse_steps(
        "She reads 10 / 2 = <<10/2=5>>5 hours.\nA week of reading is 5 * 3 = <<5*3=15>>15 hours.\nA: 15"
    ).steps
    leaves = df.candidate_leaves(steps, flow)
    assert df.support(steps[1], leaves[1], flow, set()) == df.DERIVED
    assert df.DERIVED in df.SUPPORTED


def test_tie_rule_earliest_unsupported_step_beats_later_arithmetic() -> None:
    cand = "She reads 6 + 4 = <<6+4=10>>10 pages.\nThen 10 + 10 = <<10+10=21>>21 pages.\nA: 21"
    a = locate(MIA_Q, cand, MIA_GOLD)
    assert (a.first_faulty_step, a.evidence["check"]) == (0, "reference_divergence")


def test_tie_rule_same_step_arithmetic_wins() -> None:
    cand = "She reads 6 + 4 = <<6+4=11>>11 pages.\nThen 11 + 10 = <<11+10=21>>21 pages.\nA: 21"
    a = locate(MIA_Q, cand, MIA_GOLD)
    assert (a.first_faulty_step, a.evidence["check"], a.error_type) == (0, "arithmetic", "execution")


def test_right_answer_other_route_stays_clean() -> None:
    cand = "First 10 + 6 * 4 is what she reads: 10 + 24 = <<10+24=34>>34 pages.\nA: 34"
    assert locate(MIA_Q, cand, MIA_GOLD).first_faulty_step is None


def test_hostile_gold_text_does_not_raise() -> None:
    flow = _flow("x", "a = <<" + "(" * 300 + "1=1>>\n" + "9" * 5000 + " * 2 = 1\nA: 1")
    assert isinstance(flow, df.GoldFlow)


def test_no_reference_blames_earliest_step_the_answer_uses() -> None:
    # no gold text: every step checks out, the answer is wrong, no check fires. The earliest computing
    # step whose value the solution goes on to use (step 1; step 0's 16 is never used) is blamed, not
    # the last step: a prior (docs/taxonomy.md), the ProcessBench setting
    cand = (
        "She reads 6 + 10 = <<6+10=16>>16 pages on two days.\nShe reads 6 * 4 = <<6*4=24>>24 pages.\n"
        "In all 24 + 4 = <<24+4=28>>28 pages.\nA: 28"
    )
    a = locate(MIA_Q, cand, None, "34")
    assert (a.first_faulty_step, a.error_type, a.evidence["rule"]) == (1, "conceptual", "earliest_used_step")
    # a value carried on only inside a later calculation counts as used
    b = locate(MIA_Q, "She reads 6 * 4 = <<6*4=24>>24 pages.\nIn all she reads <<2+24=26>>26.\nA: 26", None, "34")
    assert b.first_faulty_step == 0
    # one computing step: it is the last step, as before
    c = locate(MIA_Q, "She reads 6 * 4 = <<6*4=24>>24 pages.\nA: 24", None, "34")
    assert (c.first_faulty_step, c.evidence["rule"]) == (0, "answers_other_question")
    # without_evidence="last": the last step, as before (the GRPO process reward asks for this: it
    # scores refuted steps, not the prior)
    assert locate(MIA_Q, cand, None, "34", without_evidence="last").first_faulty_step == 2
    from silverbullet.repair.reward import ANSWER_WEIGHT, process_reward

    assert process_reward(MIA_Q, cand, "34") == (1 - ANSWER_WEIGHT) * 2 / 3
