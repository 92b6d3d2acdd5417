"""First faulty step and error type, on the reference task's format and on GSM8K-style text."""

from __future__ import annotations

import pytest

from silverbullet.attribution.locate import locate

Q = (
    "Ann has 24 marbles. Tom has 3 times as many marbles as Ann. Tom gives 15 marbles to Lee. "
    "How many marbles does Tom have now?"
)
REF = (
    "Step 1: Tom has 3 times as many marbles as Ann, so 3 * 24 = 72.\n"
    "Step 2: Tom gives away 15, so 72 - 15 = 57.\nThe answer is: 57\n"
)


def sol(a: str, b: str, ans: str) -> str:
    return (
        f"Step 1: Tom has 3 times as many marbles as Ann, so {a}.\n"
        f"Step 2: Tom gives away 15, so {b}.\nThe answer is: {ans}\n"
    )


CASES = [
    # (candidate, first_faulty_step, error_type)
    (sol("3 * 24 = 74", "74 - 15 = 59", "59"), 0, "execution"),
    (sol("3 + 24 = 27", "27 - 15 = 12", "12"), 0, "method"),
    (sol("3 * 42 = 126", "126 - 15 = 111", "111"), 0, "conceptual"),
    (sol("3 * 24 = 72", "74 - 15 = 59", "59"), 1, "reasoning"),
    (sol("3 * 24 = 72", "72 - 15 = 58", "58"), 1, "execution"),
]


@pytest.mark.parametrize("cand,step,etype", CASES)
def test_with_reference(cand: str, step: int, etype: str) -> None:
    a = locate(Q, cand, REF)
    assert (a.first_faulty_step, a.error_type) == (step, etype), a.evidence
    assert a.final_answer_correct is False
    assert a.n_steps == 2


@pytest.mark.parametrize("cand,step,etype", [c for c in CASES if c[2] != "method"])
def test_gold_answer_only(cand: str, step: int, etype: str) -> None:
    a = locate(Q, cand, gold_answer="57")
    assert (a.first_faulty_step, a.error_type) == (step, etype)


def test_no_reference_no_gold_local_checks() -> None:
    a = locate(Q, CASES[0][0])
    assert a.first_faulty_step == 0 and a.final_answer_correct is None


def test_correct_solution_is_clean() -> None:
    a = locate(Q, REF, REF)
    assert a.first_faulty_step is None and a.error_type is None and a.final_answer_correct is True


def test_alternative_route_with_right_answer_is_clean() -> None:
    cand = "Step 1: 24 * 3 = 72 marbles for Tom.\nStep 2: He keeps 72 - 15 = 57.\nThe answer is: 57"
    assert locate(Q, cand, REF).first_faulty_step is None


def test_evidence_names_check_and_reference_step() -> None:
    a = locate(Q, CASES[1][0], REF)
    assert a.evidence["check"] == "reference_divergence"
    assert a.aligned_reference_step == 0
    assert a.evidence["reference_text"].endswith("3 * 24 = 72.")


GSM_Q = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes muffins "
    "for her friends every day with four. She sells the remainder at the farmers' market daily for $2 "
    "per fresh duck egg. How much in dollars does she make every day at the farmers' market?"
)
GSM_REF = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18"
)


def test_dropped_quantity_blames_the_partial_step() -> None:
    cand = (
        "She eats 3 eggs, so she has 16 - 3 = <<16-3=13>>13 eggs left\n"
        "She makes 13 * 2 = $<<13*2=26>>26\nA: 26"
    )
    a = locate(GSM_Q, cand, GSM_REF)
    assert a.first_faulty_step == 0


def test_partial_sum_then_wrong_operation() -> None:
    cand = (
        "She eats 3 + 4 = <<3+4=7>>7 eggs\n"
        "The ducks lay 16 * 7 = <<16*7=112>>112 eggs\n"
        "She makes 112 * 2 = $<<112*2=224>>224\nA: 224"
    )
    a = locate(GSM_Q, cand, GSM_REF)
    assert (a.first_faulty_step, a.error_type) == (1, "method")


def test_only_answer_line_wrong() -> None:
    cand = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 eggs.\nShe makes 9 * 2 = $<<9*2=18>>18.\nA: 5"
    a = locate(GSM_Q, cand, GSM_REF)
    assert a.first_faulty_step is None and a.fault_in_answer_line and a.error_type == "reasoning"


def test_a_whole_answer_cut_from_the_last_value_does_not_blame_the_answer_line() -> None:
    """"A: 33" after 33.333 follows from the steps; the fault is in them (no reference: the prior)."""
    cand = (
        "It takes 3 minutes to charge 1%, so 100/3 = <<100/3=33.333333333333336>>33.333333333333336 minutes.\n"
        "That is 33.333333333333336 hours.\nA: 33"
    )
    q = "A phone charges 1% every 3 minutes. How many hours to charge 60%?"
    a = locate(q, cand, gold_answer="3")
    assert not a.fault_in_answer_line and a.first_faulty_step == 0, a.evidence
    a = locate(q, cand.replace("A: 33", "A: 40"), gold_answer="3")
    assert a.fault_in_answer_line  # 40 is no cut of any stated value


def test_repetition_is_reasoning() -> None:
    line = "Tom has 3 * 24 = 72 marbles now."
    cand = f"Step 1: {line}\nStep 2: {line}\nThe answer is: 72"
    a = locate(Q, cand, gold_answer="57")
    assert a.first_faulty_step == 1 and a.error_type == "reasoning"


def test_record_is_json_serialisable() -> None:
    import json

    from silverbullet.records import to_dict

    json.dumps(to_dict(locate(Q, CASES[2][0], REF)))


def test_steps_word_for_word_the_references_do_not_diverge_from_it():
    """A prefix the candidate shares with the reference, step for step, has not left the reference's
    dataflow: the first fault is after it (was: step 2, 'same quantities, other operation')."""
    q = "A teapot costs $8 and Jo spent $40 on the teapot and 4 mugs. How many dollars did each mug cost?"
    ref = "Let m be the number of mugs\n8+4*m=40\n4*m=40-8=32\n4m=<<32=32>>32\nm=<<32/4=8>>8\n#### 8"
    cand = "Let m be the number of mugs\n8+4*m=40\n4*m=40-8=32\n4m=<<32=32>>32\nm=<<8=11>>11\n#### 11"
    att = locate(q, cand, reference_text=ref, gold_answer="8")
    assert att.first_faulty_step == 4 and att.evidence["check"] != "reference_divergence"


def test_claim_mismatch_is_an_execution_error_even_with_the_right_answer() -> None:
    q = "Maggie's oven reads 468 when set to 450. What is the error?"
    cand = "The oven is off by 22 degrees because 468 - 450 = <<468-450=18>>18\nA: 18"
    a = locate(q, cand, None, "18")
    assert a.first_faulty_step == 0 and a.error_type == "execution"
    assert a.evidence["check"] == "claim_mismatch" and a.evidence["claimed"] == "22"


def test_claim_mismatch_does_not_excuse_a_unit_conversion() -> None:
    """7 comes with "week" as a conversion, but the question does not write it: still a false claim."""
    q = "Sadie slept 8 hours on Monday and 2 hours less on the next two days. How much in a week?"
    cand = (
        "Sadie slept 7 hours on Tuesday and Wednesday because 8 - 2 = <<8-2=6>>6\n"
        "She slept 20 hours in total because 7 x 2 = <<7*2=14>>14\nA: 14"
    )
    a = locate(q, cand, None, "48")
    assert a.first_faulty_step == 0 and a.evidence["check"] == "claim_mismatch"


def test_half_a_dozen_is_a_given_number() -> None:
    q = "Half a dozen plates cost $6000 each. What do they cost?"
    cand = "Half a dozen plates cost 6*6000=$<<6*6000=36000>>36000\nA: 36000"
    a = locate(q, cand, None, "3000")  # wrong answer: the full checks run, and 6 is given
    assert a.evidence.get("check") != "unsupported_operand"


def test_an_average_summed_without_dividing_is_a_method_error() -> None:
    """The sum is a gold intermediate (25 + 75 = 100), so the dataflow check finds nothing there; the
    step calls it the average, which it is not."""
    q = (
        "Each uniform has a hat that costs $25, a jacket that costs three times as much as the hat, and "
        "pants that cost the average of the costs of the hat and jacket. How much does each uniform cost?"
    )
    ref = "\n".join(["25 * 3 = <<25*3=75>>75", "25 + 75 = <<25+75=100>>100", "100 / 2 = <<100/2=50>>50",
                     "25 + 75 + 50 = <<25+75+50=150>>150", "A: 150"])  # fmt: skip
    cand = (
        "The jacket costs $25 * 3 = $<<25*3=75>>75.\n"
        "So the pants cost the average of the hat and jacket, or $25 + $75 = $<<25+75=100>>100.\n"
        "Thus the uniform costs $25 + $75 + $100 = $<<25+75+100=200>>200.\nA: 200"
    )
    a = locate(q, cand, ref, "150")
    assert a.first_faulty_step == 1 and a.error_type == "method"
    assert a.evidence["check"] == "average_without_division"


def test_a_negative_count_is_the_first_fault_unless_the_problem_has_negatives() -> None:
    """A count, price or time below zero is impossible in a problem without negatives: the step that
    computes one is placed (method: the subtraction runs the wrong way), before later evidence."""
    from silverbullet.attribution.locate import locate

    q = "A shop sold 14 cups on Monday and 6 cups on Tuesday. How many more cups did it sell on Monday?"
    gold = "14 - 6 = <<14-6=8>>8 more cups.\nA: 8"
    cand = "It sold 6 - 14 = <<6-14=-8>>-8 more cups.\nSo -8 * 2 = <<-8*2=-16>>-16 in two days.\nA: -16"
    a = locate(q, cand, gold)
    assert a.first_faulty_step == 0 and a.evidence["check"] == "negative_result" and a.error_type == "method"
    assert locate(q, cand, gold_answer="8").evidence["check"] == "negative_result"  # no reference text
    cold = "At noon it was 6 degrees; by night it fell 14 degrees. What was the night temperature?"
    b = locate(cold, "It was 6 - 14 = <<6-14=-8>>-8 degrees.\nA: -8", gold_answer="-8")
    assert b.first_faulty_step is None  # right answer, and negatives are part of the problem
    c = locate(cold, "It was 6 - 14 = <<6-14=-8>>-8 degrees.\nSo -8 - 1 = <<-8-1=-9>>-9.\nA: -9", gold_answer="-8")
    assert c.evidence.get("check") != "negative_result"
