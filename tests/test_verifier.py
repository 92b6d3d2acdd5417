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


def test_train_verifier_and_locate_verifier_through_the_cli(tmp_path):
    """`train-verifier` on a JSONL benchmark with gold solutions, then `locate --verifier`, with the
    shipped chat model as reader (the plumbing: no quality is claimed for so small a reader); a
    verifier whose reader files changed, and a folder that is not one, are refused in one line."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    bench = tmp_path / "train.jsonl"
    bench.write_text("".join(json.dumps({"question": p.question, "answer": p.answer, "solution": p.solution}) + "\n"
                             for p in _problems(12)))  # fmt: skip
    env = {**os.environ, "SILVERBULLET_CACHE": str(tmp_path / "cache")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "silverbullet.cli", *args], capture_output=True, text=True,
                              env=env, cwd=root, timeout=300)  # fmt: skip

    v = tmp_path / "verifier"
    r = cli("train-verifier", "--reader", "data/reference-chat-model", "--out", str(v), "--benchmark", str(bench),
            "--problems", "12", "--device", "cpu")  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert "step verifier ->" in r.stdout and (v / "probe.safetensors").is_file()
    src = tmp_path / "sols.jsonl"
    answers = {p.question: p.answer for p in _problems(3)}
    rows = [{"q": q, "s": t, "gold": answers[q]} for q, t, _ in injected_examples(_problems(3))]
    src.write_text("".join(json.dumps(x) + "\n" for x in rows))
    base = ["locate", "--input", str(src), "--question-field", "q", "--candidate-field", "s", "--answer-field", "gold"]
    r = cli(*base, "--out", str(tmp_path / "o.jsonl"), "--verifier", str(v), "--json", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = [json.loads(x) for x in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert len(out) == len(rows) >= 3 and all("verifier_step" in x for x in out)
    assert json.loads((tmp_path / "s.json").read_text())["verifier"]["threshold"] == json.loads(
        (v / "probe.json").read_text())["threshold"]  # fmt: skip
    meta = json.loads((v / "probe.json").read_text())
    (v / "probe.json").write_text(json.dumps({**meta, "reader_fingerprint": "other"}))
    r = cli(*base, "--out", str(tmp_path / "o2.jsonl"), "--verifier", str(v))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "Train it again" in r.stderr
    r = cli(*base, "--out", str(tmp_path / "o3.jsonl"), "--verifier", str(tmp_path))
    assert r.returncode == 2 and "not a step verifier" in r.stderr
