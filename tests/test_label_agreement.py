"""bench/label_agreement.py: the agreement figures the dev set's precision is judged by."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from label_agreement import agreement  # noqa: E402


def _r(row: int, label, etype=None) -> dict:
    etype = etype or ("method" if label is not None else None)
    return {"row": row, "model": "m", "first_faulty_step": label, "error_type": etype}


def test_identical_passes_agree_fully():
    a = [_r(0, None), _r(1, 2), _r(2, 0), _r(3, 1)]
    res = agreement(a, a)
    assert res["position"]["kappa"] == 1.0 and res["disagreements"] == []


def test_lists_overlap_and_chance_is_subtracted():
    first = [_r(0, [1, 2]), _r(1, None), _r(2, 0), _r(3, 3)]
    second = [_r(0, 2), _r(1, None), _r(2, 1), _r(3, 3), _r(9, 0)]  # row 9: not in the first pass
    res = agreement(first, second)
    p = res["position"]
    assert p["n"] == 4 and p["observed"] == 0.75  # row 0 agrees through the list, row 2 does not
    assert p["kappa"] < p["observed"]
    assert res["position_strict"]["observed"] == 0.5  # primary labels: 1 vs 2 differ
    assert res["disagreements"] == [{"row": 2, "model": "m", "first": 0, "second": 1}]
    assert res["erroneous_vs_clean"]["kappa"] == 1.0


def test_type_agreement_per_split_and_confusion():
    # the per-split figure is the ceiling real_errors.py's type accuracy on that split is read against
    first = [{**_r(0, 1, "method"), "split": "tune"}, {**_r(1, 0, "conceptual"), "split": "tune"},
             {**_r(2, 2, "conceptual"), "split": "test"}, {**_r(3, 1, "reasoning"), "split": "test"}]  # fmt: skip
    second = [_r(0, 1, "method"), _r(1, 0, "method"), _r(2, 2, "conceptual"), _r(3, 0, "reasoning")]
    res = agreement(first, second)
    assert res["error_type_by_split"]["tune"]["n"] == 2 and res["error_type_by_split"]["tune"]["observed"] == 0.5
    assert res["error_type_by_split"]["test"]["n"] == 1  # row 3: the positions disagree, so no type pair
    assert res["error_type_confusion"] == {"conceptual": {"method": 1, "conceptual": 1}, "method": {"method": 1}}
