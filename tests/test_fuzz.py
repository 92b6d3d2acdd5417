"""CI-sized fuzzing of everything that reads model text (bench/fuzz.py runs the 100,000-input version)."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from fuzz import HOSTILE, run  # noqa: E402


def test_fuzz_2000_inputs_no_crash_no_code_execution():
    """bench/fuzz.py's generator, 2,000 inputs x every reader: 0 crashes, no eval/exec, bounded time
    (the CI-sized run docs/hardening.md names; it was run twice, here and in the untrusted suite)."""
    t0 = time.time()
    res = run(2000, seed=1)
    assert res["n_crashes"] == 0, res["crashes"][:3]
    assert res["eval_exec_calls"] == 0
    assert not res["pwned_file_exists"]
    for name, st in res["stats"].items():
        # generous on 2 shared CPU cores; LaTeX grading is bounded by math-verify's own timeouts
        bound = 8.0 if "latex" in name else 2.0
        assert st["max_s"] < bound, (name, st)
    assert len(HOSTILE) > 25
    assert time.time() - t0 < 60  # ~20 s on 2 CPU cores


def test_huge_rational_in_evidence_does_not_crash():
    from silverbullet.attribution import locate

    # found by bench/fuzz.py: formatting a 10^1000-scale rational as a float overflowed
    att = locate(
        "Ann has 3 apples. How many?",
        "48/%-\n9=309302092479%^78,(x370",
        reference_text="Step 1: 3 + 0 = 3.\nThe answer is: 3",
        gold_answer="3",
    )
    assert att.final_answer_correct is False
