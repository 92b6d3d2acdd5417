"""The method / conceptual / reasoning boundary of taxonomy.classify_divergence (docs/taxonomy.md),
on small constructed solutions whose type the labelling guide fixes."""

from __future__ import annotations

from fractions import Fraction

import pytest

from silverbullet.attribution import taxonomy as tx
from silverbullet.attribution.locate import locate

Q = (
    "Ann has 24 marbles. Tom has 3 times as many marbles as Ann. Tom gives 22 marbles to Lee. "
    "Tom shares the rest equally among 5 friends. How many marbles does each friend get?"
)
REF = (
    "Step 1: Tom has 3 * 24 = 72 marbles.\nStep 2: After giving 22 away he has 72 - 22 = 50.\n"
    "Step 3: Each friend gets 50 / 5 = 10.\nThe answer is: 10\n"
)


def steps(*lines: str, answer: str) -> str:
    body = "".join(f"Step {i + 1}: {line}\n" for i, line in enumerate(lines))
    return f"{body}The answer is: {answer}\n"


CASES = [
    # right quantities, wrong operation (guide: method), on givens and on an earlier result alike
    ("givens, other operation", steps("3 + 24 = 27.", "27 - 22 = 5.", "5 / 5 = 1.", answer="1"), 0, "method"),
    ("own result, other operation", steps("3 * 24 = 72.", "72 + 22 = 94.", "94 / 5 = 18.8.", answer="18.8"),
     1, "method"),
    # a given used in another quantity's place (guide: conceptual, "the price as a count")
    ("wrong given in place", steps("3 * 24 = 72.", "72 - 5 = 67.", "67 / 5 = 13.4.", answer="13.4"), 1, "conceptual"),
    # a quantity the question never gives (guide: conceptual, invents a quantity)
    ("foreign quantity", steps("3 * 42 = 126.", "126 - 22 = 104.", "104 / 5 = 20.8.", answer="20.8"),
     0, "conceptual"),
    # this solution computed 50 and divides its earlier 72 instead (guide rule 4: reasoning)
    ("own earlier result swapped", steps("3 * 24 = 72.", "72 - 22 = 50.", "72 / 5 = 14.4.", answer="14.4"),
     2, "reasoning"),
]  # fmt: skip


@pytest.mark.parametrize("name,cand,step,etype", CASES, ids=[c[0] for c in CASES])
def test_constructed_solutions_are_typed_by_the_guide(name: str, cand: str, step: int, etype: str) -> None:
    a = locate(Q, cand, REF)
    assert (a.first_faulty_step, a.error_type) == (step, etype), a.evidence


Q2 = "Ann has 24 marbles. Tom has 3 times as many marbles as Ann. Lee has 10 marbles. How many marbles do they have?"
REF2 = "Step 1: Tom has 3 * 24 = 72.\nStep 2: Together 24 + 72 + 10 = 106.\nThe answer is: 106\n"


def test_dropping_an_own_earlier_result_from_a_total_is_reasoning() -> None:
    a = locate(Q2, steps("Tom has 3 * 24 = 72.", "Together 24 + 10 = 34.", answer="34"), REF2)
    assert (a.first_faulty_step, a.error_type) == (1, "reasoning"), a.evidence
    assert a.evidence["rule"] == "dropped_earlier_result"


def test_a_reference_value_the_solution_never_formed_is_not_a_carry_over() -> None:
    # 72 is missing from the total, but this solution never computed it: it ignored "3 times as many"
    a = locate(Q2, steps("Ann and Lee have 24 + 10 = 34.", answer="34"), REF2)
    assert a.first_faulty_step == 0 and a.error_type == "conceptual", a.evidence


def test_stopping_at_a_reference_intermediate_is_conceptual() -> None:
    # every step checks out, the last value is the reference's 50: another quantity answered (guide rule 3)
    a = locate(Q, steps("3 * 24 = 72.", "72 - 22 = 50.", answer="50"), REF)
    assert (a.first_faulty_step, a.error_type) == (1, "conceptual"), a.evidence
    assert a.evidence["rule"] == "stops_early"


F = Fraction


@pytest.mark.parametrize(
    "cand,ref,own,question,same,expected",
    [
        ((F(3), F(24)), (F(3), F(24)), set(), {F(3), F(24)}, True, (tx.METHOD, "same_quantities_other_operation")),
        ((F(6), F(3), F(6)), (F(6), F(3)), set(), {F(6), F(3)}, False, (tx.METHOD, "same_quantities_other_operation")),
        ((F(72), F(5)), (F(72), F(22)), {F(72)}, {F(5), F(22)}, False, (tx.CONCEPTUAL, "wrong_given_quantity")),
        ((F(72), F(5)), (F(50), F(5)), {F(72), F(50)}, {F(5)}, False, (tx.REASONING, "wrong_carry_over")),
        # the swapped-in number is a given: a wrong quantity, not a carry-over
        ((F(12), F(5)), (F(50), F(5)), {F(50)}, {F(5), F(12)}, False, (tx.CONCEPTUAL, "other_quantities")),
        # the missing value is also a question number: no evidence it was the solution's own result
        ((F(4), F(12)), (F(4), F(4)), {F(4)}, {F(4), F(12)}, False, (tx.CONCEPTUAL, "wrong_given_quantity")),
        ((F(24), F(10)), (F(24), F(72), F(10)), {F(72)}, {F(24), F(10)}, False,
         (tx.REASONING, "dropped_earlier_result")),
        ((F(24), F(10)), (F(24), F(72), F(10)), set(), {F(24), F(10)}, False, (tx.CONCEPTUAL, "other_quantities")),
        ((F(24),), None, set(), {F(24)}, False, (tx.CONCEPTUAL, "no_aligned_reference_step")),
    ],
)  # fmt: skip
def test_classify_divergence_rules(cand, ref, own, question, same, expected) -> None:
    assert tx.classify_divergence(cand, ref, own, question, same_quantities=same) == expected


# ---------------------------------------------------------------------------------- unexecuted plans


def test_a_plan_never_computed_is_an_execution_error_at_its_first_step():
    # what a 3-bit Qwen2.5-1.5B wrote for 38 of 100 GSM8K problems: the steps, then the placeholder
    text = steps("Calculate how many marbles Tom has.", "Subtract the marbles he gives away.",
                 "Divide the rest among the friends.", answer="<answer>")  # fmt: skip
    for ref in (REF, None):
        a = locate(Q, text, reference_text=ref, gold_answer="10")
        assert (a.first_faulty_step, a.error_type) == (0, tx.EXECUTION), ref
        assert a.evidence["rule"] == "planned_not_computed"


def test_the_plan_starts_where_the_computing_stops():
    text = steps("Tom has 3 * 24 = 72 marbles.", "Subtract the marbles he gives away.",
                 "Divide the rest among the friends.", answer="<answer>")  # fmt: skip
    a = locate(Q, text, reference_text=REF, gold_answer="10")
    assert (a.first_faulty_step, a.error_type, a.evidence["rule"]) == (1, tx.EXECUTION, "planned_not_computed")
    assert a.evidence["computed_steps"] == 1


def test_a_solution_cut_mid_step_is_not_a_plan():
    # computed, then cut at the token limit: no placeholder, so not an unexecuted plan
    text = "Step 1: Tom has 3 * 24 = 72 marbles.\nStep 2: Now we need to find how many"
    a = locate(Q, text, reference_text=REF, gold_answer="10")
    assert a.evidence.get("rule") != "planned_not_computed"
