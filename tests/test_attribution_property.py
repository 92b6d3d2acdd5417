"""Property: parse / check / locate never raise, whatever the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from silverbullet.attribution.check import check_step
from silverbullet.attribution.expr import evaluate
from silverbullet.attribution.locate import locate
from silverbullet.attribution.steps import analyse_step

MATHY = st.text(alphabet="0123456789+-*/^=().,%$x× \n<>#:ASteptheanswris\\frac{}", max_size=200)
ANY = st.text(max_size=200)


@settings(max_examples=150, deadline=None)
@given(st.one_of(MATHY, ANY))
def test_evaluate_never_raises(text: str) -> None:
    r = evaluate(text)
    assert r.status in ("ok", "symbolic", "unparseable", "rejected")


@settings(max_examples=150, deadline=None)
@given(st.one_of(MATHY, ANY))
def test_check_never_raises(text: str) -> None:
    check_step(analyse_step(text))


@settings(max_examples=100, deadline=None)
@given(st.one_of(MATHY, ANY), st.one_of(MATHY, ANY), st.one_of(st.none(), MATHY), st.one_of(st.none(), ANY))
def test_locate_never_raises(q: str, cand: str, ref: str | None, gold: str | None) -> None:
    a = locate(q, cand, ref, gold)
    assert a.first_faulty_step is None or 0 <= a.first_faulty_step < a.n_steps
