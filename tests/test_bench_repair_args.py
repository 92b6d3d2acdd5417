"""bench/repair.py's --only: variant names hold commas themselves."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import repair as bench_repair  # noqa: E402


def test_only_splits_on_commas_between_names_not_inside_them():
    text = "sft (flipped-full),sft (step, paper-style),control (full, untargeted),dpo"
    assert bench_repair.parse_only(text) == [
        "sft (flipped-full)", "sft (step, paper-style)", "control (full, untargeted)", "dpo",
    ]  # fmt: skip
    with pytest.raises(SystemExit, match="unknown variant 'nope'"):
        bench_repair.parse_only("dpo,nope")
