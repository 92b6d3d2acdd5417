"""Checker fallback: which solutions it refutes, which it replaces, and that it asks the base only
for the flagged prompts."""

import time

from silverbullet.generation.base import GenOutput
from silverbullet.records import Generation
from silverbullet.repair.fallback import FallbackGenerator, checker_fallback, failed_step, use_base
from silverbullet.repair.pipeline import flip_stats

GOOD = "Step 1: Ann has 3 boxes of 12, so 3 * 12 = 36.\nStep 2: She gives 6, so 36 - 6 = 30.\nThe answer is: 30\n"
SLIP = "Step 1: Ann has 3 boxes of 12, so 3 * 12 = 36.\nStep 2: She gives 6, so 36 - 6 = 31.\nThe answer is: 31\n"
WRONG_BUT_CONSISTENT = "Step 1: Ann has 3 boxes of 12, so 3 + 12 = 15.\nThe answer is: 15\n"


def test_failed_step_finds_the_first_refuted_step():
    assert failed_step(GOOD) is None
    assert failed_step(SLIP) == 1
    assert failed_step("Step 1: 564 * 25 / 100 = 116.\nStep 2: 2 + 2 = 5.\nThe answer is: 5") == 0
    assert failed_step(WRONG_BUT_CONSISTENT) is None  # a wrong method whose arithmetic holds is not seen
    assert failed_step("Step 1: she thinks hard.\nThe answer is: 4") is None  # nothing to check
    assert failed_step("") is None


def test_failed_step_on_hostile_text_is_fast_and_safe():
    t0 = time.time()
    assert failed_step("Step 1: 9^9^9^9 = 1.\nStep 2: __import__('os') = 2\nThe answer is: 2") in (None, 0, 1)
    assert failed_step("Step 1: " + "(" * 5000 + "1" + ")" * 5000 + " = 1\n") in (None, 0)
    assert time.time() - t0 < 5


def test_use_base_only_when_the_repaired_slips_and_the_base_does_not():
    assert use_base(SLIP, GOOD)
    assert not use_base(GOOD, SLIP)
    assert not use_base(SLIP, SLIP)  # both slip: keep the repaired one
    assert not use_base(GOOD, GOOD)
    assert use_base(SLIP, WRONG_BUT_CONSISTENT)  # the rule sees arithmetic, not answers


class FakeGen:
    def __init__(self, tag, answers):
        self.tag, self.answers, self.calls = tag, answers, []

    @property
    def fingerprint(self):
        return self.tag

    def generate(self, prompts, config=None):
        self.calls.append(list(prompts))
        return [GenOutput(text=self.answers[p], n_tokens=1) for p in prompts]


def test_fallback_generator_asks_the_base_only_for_flagged_prompts():
    primary = FakeGen("rep", {"a": GOOD, "b": SLIP, "c": SLIP})
    base = FakeGen("base", {"a": SLIP, "b": GOOD, "c": SLIP})
    made = []
    gen = FallbackGenerator(primary, lambda: made.append(1) or base)
    outs = gen.generate(["a", "b", "c"])
    assert [o.text for o in outs] == [GOOD, GOOD, SLIP]  # b replaced; c kept (the base slips too)
    assert base.calls == [["b", "c"]] and made == [1]
    assert (gen.flagged, gen.fallbacks) == (2, 1)
    assert gen.fingerprint != primary.fingerprint  # never shares cache entries with the plain adapter

    clean = FallbackGenerator(FakeGen("rep", {"a": GOOD}), lambda: made.append(2) or base)
    clean.generate(["a"])
    assert made == [1]  # nothing flagged: the base is never even built


def _gen(pid, text, correct):
    return Generation(problem_id=pid, model="repaired", text=text, answer=None, correct=correct, n_tokens=1)


def test_checker_fallback_rows_and_their_flips():
    repaired = [_gen("p1", SLIP, False), _gen("p2", GOOD, True), _gen("p3", SLIP, False), _gen("p4", GOOD, True)]
    base = {
        "p1": {"problem_id": "p1", "model": "quantized", "text": GOOD, "correct": True},
        "p2": {"problem_id": "p2", "model": "quantized", "text": SLIP, "correct": False},
        "p3": {"problem_id": "p3", "model": "quantized", "text": SLIP, "correct": False},
        "p4": {"problem_id": "p4", "model": "quantized", "text": GOOD, "correct": True},
    }
    rows = checker_fallback(repaired, base)
    assert [r["model"] for r in rows] == ["quantized", "repaired", "repaired", "repaired"]
    assert rows[0] is base["p1"] and rows[1]["text"] == GOOD
    ref, q = [True, True, True, True], [True, False, False, True]
    plain = flip_stats(ref, q, [g.correct for g in repaired])
    served = flip_stats(ref, q, [r["correct"] for r in rows])
    assert (plain["flips_introduced"], plain["flips_fixed"]) == (1, 1)  # p1 broken by the adapter
    assert (served["flips_introduced"], served["flips_fixed"]) == (0, 1)  # the fallback saves it
    assert served["recovery"] == 0.5 and plain["recovery"] == 0.0
