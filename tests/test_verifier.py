"""The step verifier (attribution/verifier.py): labels, a probe that learns a separable signal, its
files, the injected training examples, and training through a reader end to end on a tiny model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from silverbullet.attribution.verifier import (
    StepProbe,
    first_fault_scores,
    injected_examples,
    step_labels,
    train_probe,
    train_verifier,
)
from silverbullet.errors import UserError
from silverbullet.records import Problem
from silverbullet.segmentation import segment


def test_step_labels_leave_out_what_follows_the_fault():
    assert step_labels(4, 2) == [0, 0, 1, None]
    assert step_labels(3, None) == [0, 0, 0]


def _synthetic(n: int, rng: np.random.Generator):
    """Solutions of 4 steps in 8 dims; the first faulty step's state has a +3 offset on dim 0."""
    states, faults = [], []
    for i in range(n):
        st = rng.normal(size=(4, 8)).astype(np.float32)
        k = None if i % 3 == 0 else int(rng.integers(0, 4))
        if k is not None:
            st[k, 0] += 3.0
        states.append(st)
        faults.append(k)
    return states, faults


def test_the_probe_learns_a_separable_signal_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    states, faults = _synthetic(300, rng)
    probe = train_probe(states, faults)
    assert probe.meta["training"]["step_accuracy"] > 0.9
    test_states, test_faults = _synthetic(90, np.random.default_rng(1))
    scores = first_fault_scores([probe.first_faulty(s) for s in test_states], test_faults)
    assert scores["f1"] > 0.8, scores
    probe.meta["reader"] = "x"
    back = StepProbe.load(probe.save(tmp_path / "v"))
    np.testing.assert_allclose(back.probs(test_states[0]), probe.probs(test_states[0]), rtol=1e-5)
    assert back.meta["reader"] == "x" and back.threshold == probe.threshold


def test_a_bad_verifier_folder_is_one_line(tmp_path):
    with pytest.raises(UserError, match="not a step verifier"):
        StepProbe.load(tmp_path)
    (tmp_path / "probe.safetensors").write_bytes(b"garbage")
    (tmp_path / "probe.json").write_text(json.dumps({"threshold": 0.5}))
    with pytest.raises(UserError, match="unreadable step verifier"):
        StepProbe.load(tmp_path)


def test_training_needs_both_classes():
    with pytest.raises(UserError, match="both right and wrong"):
        train_probe([np.zeros((3, 4), dtype=np.float32)], [None])


def _problems(n: int) -> list[Problem]:
    out = []
    for i in range(n):
        a, b, c = 2 + i % 3, 8 + 2 * i, 4
        q = f"A box holds {b} pens. Sam buys {a} boxes. He gives {c} pens to each friend. Then 3 more come. How many?"
        sol = (f"Sam buys {a}*{b} = <<{a}*{b}={a * b}>>{a * b} pens.\n"
               f"He gives {c} each, so {a * b}/{c} = <<{a * b}/{c}={a * b / c:g}>>{a * b / c:g} friends get pens.\n"
               f"With 3 more, {a * b / c:g}+3 = <<{a * b / c:g}+3={a * b / c + 3:g}>>{a * b / c + 3:g} friends.\n"
               f"#### {a * b / c + 3:g}")  # fmt: skip
        out.append(Problem(id=f"p{i}", question=q, answer=f"{a * b / c + 3:g}", solution=sol))
    return out


def test_injected_examples_count_steps_as_locate_does():
    ex = injected_examples(_problems(6), seed=0)
    clean = [e for e in ex if e[2] is None]
    faulty = [e for e in ex if e[2] is not None]
    assert len(clean) == 6 and faulty and all("<<" not in t for _, t, _ in ex)
    gold = {q: t for q, t, _ in clean}
    for q, text, k in faulty:
        seg, gseg = segment(text), segment(gold[q])
        assert seg.steps[:k] == gseg.steps[:k] and seg.steps[k] != gseg.steps[k]  # the fault is step k


def test_train_verifier_end_to_end_on_a_tiny_reader(tiny_model_dir, tmp_path):
    from silverbullet.attribution.reader import Reader

    reader = Reader(str(tiny_model_dir), device="cpu", layer=1, cache_dir=tmp_path / "r")
    probe = train_verifier(reader, _problems(10), seed=0, holdout=0.3)
    assert probe.meta["reader_fingerprint"] == reader.gen.fingerprint and probe.meta["layer"] == 1
    assert probe.meta["examples"]["train"] > 0 and probe.meta["examples"]["held_out"] > 0
    assert 0.0 < probe.threshold < 1.0 and set(probe.meta["held_out"]) == {"exact_erroneous", "clean_passed", "f1"}
    back = StepProbe.load(probe.save(tmp_path / "v"))
    assert back.weight.shape == (reader.gen.model.config.hidden_size,)
