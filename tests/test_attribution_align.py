"""Aligner: merged, split, reordered and extra steps."""

from __future__ import annotations

from silverbullet.attribution.align import align
from silverbullet.attribution.steps import parse_steps

REF = "Ann has 3 * 24 = 72 marbles.\nShe gives 72 - 15 = 57 away.\nThen 57 + 10 = 67.\nA: 67"


def mapping(cand: str, ref: str = REF) -> list:
    return list(align(parse_steps(cand).steps, parse_steps(ref).steps).mapping)


def test_identical() -> None:
    assert mapping(REF) == [0, 1, 2]


def test_extra_step() -> None:
    cand = "Ann has 3 * 24 = 72 marbles.\nLet us think about Lee.\n" + REF.split("\n", 1)[1]
    assert mapping(cand) == [0, None, 1, 2]


def test_merged_steps() -> None:
    cand = "Ann has 3 * 24 - 15 = 57 marbles.\nThen 57 + 10 = 67.\nA: 67"
    assert mapping(cand) == [1, 2]


def test_split_step() -> None:
    ref = "She has 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = 18.\nA: 18"
    cand = "She uses 3 + 4 = 7 eggs.\nShe has 16 - 7 = 9 eggs.\nShe makes 9 * 2 = 18.\nA: 18"
    assert mapping(cand, ref)[1:] == [0, 1]


def test_reordered_steps() -> None:
    ref = "Tom has 2 * 5 = 10 pens.\nAnn has 3 * 4 = 12 pens.\nTogether 10 + 12 = 22.\nA: 22"
    cand = "Ann has 3 * 4 = 12 pens.\nTom has 2 * 5 = 10 pens.\nTogether 12 + 10 = 22.\nA: 22"
    m = mapping(cand, ref)
    assert m[0] == 1 and m[1] == 0 and m[2] == 2


def test_empty() -> None:
    assert mapping("A: 5") == []
