"""attribution/judge.py: the full-precision model's verdict on a quantized solution's steps."""

from __future__ import annotations

import re

from silverbullet.attribution.judge import combine, judge, step_gaps

TEXT = "Step 1: 3 * 4 = 12.\nStep 2: 12 - 2 = 9.\nThe answer is: 9"
SPANS = [(0, 19), (20, 39), (40, len(TEXT))]


def _tokens(text: str) -> list[int]:
    """One token per word and one per newline (their end offsets), for the tests."""
    return [m.end() for m in re.finditer(r"\n|[^ \n]+ ?", text)]


def test_gaps_go_to_the_step_holding_each_token():
    ends = _tokens(TEXT)
    lp = [-0.01] * len(ends)
    top = [-0.01] * len(ends)
    k = next(i for i, e in enumerate(ends) if TEXT[:e].endswith("9."))  # the wrong "9." of step 2
    lp[k] = -5.0
    gaps = step_gaps(lp, top, ends, SPANS)
    assert gaps[0] == 0.0 and abs(gaps[1] - 4.99) < 1e-9 and gaps[2] == 0.0


def test_first_step_above_the_threshold_is_the_verdict():
    ends = _tokens(TEXT)
    lp, top = [-0.1] * len(ends), [-0.1] * len(ends)
    lp[1] = -2.0  # a hesitation in step 1, below the threshold
    lp[-2] = -9.0  # step 3 far off
    v = judge(lp, top, ends, SPANS, threshold=3.0)
    assert v.step == 2 and v.gap == 8.9 and v.gaps[0] == 1.9
    assert judge(lp, top, ends, SPANS, threshold=1.0).step == 0


def test_no_top1_scores_measure_from_certainty_and_nothing_flagged_is_none():
    ends = _tokens(TEXT)
    assert judge([-0.5] * len(ends), None, ends, SPANS).step is None
    assert judge([-4.0] + [-0.1] * (len(ends) - 1), None, ends, SPANS).step == 0


def test_combine_rules():
    assert combine(3, 1) == 3 and combine(None, 2) == 2 and combine(None, None) is None  # fallback
    assert combine(3, 1, "earlier") == 1 and combine(0, None, "earlier") == 0
