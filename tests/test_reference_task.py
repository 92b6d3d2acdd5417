"""The reference task: determinism, disjoint splits, solutions that verify, the variety we need."""

from collections import Counter
from fractions import Fraction

import pytest

from silverbullet.attribution.check import check_step
from silverbullet.attribution.steps import parse_steps
from silverbullet.benchmarks import load_benchmark
from silverbullet.benchmarks import synthetic_task as task
from silverbullet.grading import is_correct
from silverbullet.prompting import parse_solution


def test_generation_is_deterministic():
    a = [p.text for p in task.generate("eval", 50)]
    b = [p.text for p in task.generate("eval", 50)]
    assert a == b
    c = [p.text for p in task.generate("eval", 50, seed=1)]
    assert a != c


def test_splits_are_disjoint_by_construction():
    qs = {s: {p.question for p in task.generate(s, 2000)} for s in ("train", "repair", "eval")}
    assert not qs["train"] & qs["eval"]
    assert not qs["train"] & qs["repair"]
    assert not qs["repair"] & qs["eval"]
    for s, questions in qs.items():
        assert all(task.split_of(q) == s for q in questions)


def test_start_offset_continues_the_stream():
    whole = [p.question for p in task.generate("repair", 30)]
    tail = [p.question for p in task.generate("repair", 10, start=20)]
    assert whole[20:] == tail


def test_every_solution_verifies_step_by_step():
    for p in task.generate("eval", 400):
        parsed = parse_steps(p.solution)
        assert len(parsed.steps) == p.n_steps
        for st in parsed.steps:
            assert check_step(st).status == "ok", (p.text, st)
        assert parse_solution(p.solution).answer == str(p.answer)
        assert is_correct(str(p.answer), str(p.answer))
        assert parsed.answer_value == Fraction(p.answer)


def test_variety_of_reasoning():
    ps = list(task.generate("train", 3000))
    ops = Counter(o for p in ps for o in p.ops)
    for op in (
        "times",
        "more",
        "fewer",
        "half",
        "gives",
        "buys",
        "packs",
        "split",
        "percent",
        "together",
        "difference",
        "money",
    ):
        assert ops[op] > 20, op
    assert Counter(p.n_steps for p in ps).keys() == {1, 2, 3, 4, 5, 6}
    assert 0.3 < sum(p.has_distractor for p in ps) / len(ps) < 0.7
    kinds = Counter(
        "more"
        if "How many more" in p.question
        else "together"
        if "together?" in p.question
        else "dollars"
        if "How many dollars" in p.question
        else "each"
        if "each friend get" in p.question
        else "other"
        for p in ps
    )
    assert all(kinds[k] > 50 for k in ("more", "together", "dollars", "each", "other")), kinds
    assert all(0 < p.answer <= task.MAX_VALUE for p in ps)
    assert any("twice" in p.question for p in ps) and any("%" in p.question for p in ps)


def test_synthetic_benchmark_loader():
    ps = load_benchmark("synthetic", split="test", limit=5)
    assert [p.id for p in ps] == [f"synthetic-eval-{i}" for i in range(5)]
    assert ps[0].meta["grading"] == "numeric" and ps[0].solution.endswith(f"The answer is: {ps[0].answer}\n")
    with pytest.raises(Exception, match="split"):
        load_benchmark("synthetic", split="nope", limit=5)
