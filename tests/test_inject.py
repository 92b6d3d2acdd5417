"""Injected errors (attribution/inject.py): a known fault at a known step, carried to the answer."""

from __future__ import annotations

import random
import re

import pytest

from silverbullet.attribution.expr import evaluate
from silverbullet.attribution.inject import SEMANTIC, TYPES, inject, strip_annotations

Q = "A box holds 8 pens. Sam buys 2 boxes. He gives 4 pens to each friend. Then 3 more friends come. How many friends?"
GOLD = (
    "Sam buys 2*8 = <<2*8=16>>16 pens.\n"
    "He gives 4 pens each, so 16/4 = <<16/4=4>>4 friends get pens.\n"
    "With 3 more friends, 4+3 = <<4+3=7>>7 friends.\n"
    "#### 7"
)
ANN = re.compile(r"<<([^<>=]+)=([^<>]+)>>")


@pytest.mark.parametrize("kind", TYPES + SEMANTIC)
def test_each_kind_changes_one_step_and_carries_it_to_the_answer(kind):
    hits = 0
    for seed in range(30):
        got = inject(Q, GOLD, kind, random.Random(seed))
        if got is None:
            continue
        hits += 1
        text, k = got
        old, new = GOLD.split("\n"), text.split("\n")
        assert old[:k] == new[:k] and old[k] != new[k]  # the first change is at step k
        assert new[-1] != old[-1] and new[-1].startswith("#### ")  # it reaches the answer
        for line in new[k + 1 : -1]:  # later steps compute right from the faulty value
            expr, res = ANN.search(line).groups()
            assert evaluate(expr).value == evaluate(res).value
        if kind in SEMANTIC:  # right arithmetic at the fault too: only the reasoning is wrong
            expr, res = ANN.search(new[k]).groups()
            assert evaluate(expr).value == evaluate(res).value
    assert hits, f"no {kind} injection in 30 seeds"


def test_strip_annotations_leaves_prose():
    assert strip_annotations(GOLD).split("\n")[0] == "Sam buys 2*8 = 16 pens."
