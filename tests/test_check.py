"""`silverbullet check`: every gate trips and passes, noise-aware baseline, exit codes, outputs, bad input."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from silverbullet.check import (
    CheckThresholds,
    newcombe_paired,
    newcombe_unpaired,
    run_check,
    wilson,
)
from silverbullet.errors import UserError
from silverbullet.report import write_check_files
from silverbullet.settings import resolve_thresholds

FIXTURES = Path(__file__).parent / "fixtures"
RELEASE = FIXTURES / "runs" / "release"  # reference 95%, quantized 60%, 7 flips, 8 typed faults
BASELINE = FIXTURES / "runs" / "baseline"  # the previous release: quantized 90% on the same problems


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_summary(run: Path, **changes) -> None:
    s = json.loads((run / "summary.json").read_text())
    s.update(changes)
    (run / "summary.json").write_text(json.dumps(s))


def synthetic_run(path: Path, quant: list[bool], ref: list[bool] | None = None, generations: bool = True) -> Path:
    """A minimal schema-1 run with the given per-problem correctness (ids p0, p1, ...)."""
    ref = ref if ref is not None else [True] * len(quant)
    n, kq, kr = len(quant), sum(quant), sum(ref)
    r2w = sum(r and not q for r, q in zip(ref, quant))
    w2r = sum(q and not r for r, q in zip(ref, quant))
    s = json.loads((RELEASE / "summary.json").read_text())
    s.update(
        run=path.name,
        n=n,
        accuracy={"reference": kr / n, "quantized": kq / n},
        accuracy_ci={"reference": list(wilson(kr, n)), "quantized": list(wilson(kq, n))},
        correct={"reference": kr, "quantized": kq},
        flips={"ref_right_quant_wrong": r2w, "ref_wrong_quant_right": w2r, "rate": r2w / n},
    )
    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps(s))
    if generations:
        (path / "generations").mkdir()
        rows = [
            {"problem_id": f"p{i}", "model": "quantized", "text": "", "answer": None, "correct": c}
            for i, c in enumerate(quant)
        ]
        (path / "generations" / "quantized.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(result, name):
    return next(r for r in result.rows if r.name == name)


# ---------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize(
    "key, passing, failing",
    [
        ("max_accuracy_drop", 40.0, 30.0),  # drop is 35 points
        ("max_flip_rate", 0.40, 0.30),  # 7/20 = 0.35
        ("max_execution_share", 0.40, 0.30),  # 3 of 8 typed faults = 0.375
        ("max_method_share", 0.20, 0.10),  # 1 of 8 = 0.125
        ("min_frontier_margin", 12.0, 13.0),  # mean 12.41
    ],
)
def test_each_threshold_trips_and_passes(key, passing, failing):
    ok = run_check(RELEASE, CheckThresholds(**{key: passing}))
    assert row(ok, key).status == "pass" and ok.exit_code == 0
    bad = run_check(RELEASE, CheckThresholds(**{key: failing}))
    assert row(bad, key).status == "fail" and bad.exit_code == 1
    assert [r.name for r in bad.failures] == [key]
    # the other gates were not set: reported, not gated
    assert all(r.status == "skip" for r in bad.rows if r.name != key)


def test_values_match_the_summary():
    res = run_check(RELEASE, CheckThresholds())
    assert row(res, "max_accuracy_drop").value == pytest.approx(35.0)
    assert row(res, "max_flip_rate").value == pytest.approx(0.35)
    assert row(res, "max_execution_share").value == pytest.approx(0.375)
    assert row(res, "min_frontier_margin").value == pytest.approx(12.413)
    assert "paired 95% CI" in row(res, "max_accuracy_drop").note


def test_nothing_set_passes_with_a_warning():
    res = run_check(RELEASE, CheckThresholds())
    assert res.exit_code == 0 and all(r.status == "skip" for r in res.rows)
    assert res.warnings and "nothing was gated" in res.warnings[0]


def test_missing_measurements_skip_rather_than_fail(tmp_path):
    run = copy_run(RELEASE, tmp_path / "run")
    s = json.loads((run / "summary.json").read_text())
    s["margins"]["frontier_mean"] = None
    s["error_types"]["quantized"] = {"execution": 0, "method": 0, "conceptual": 0, "reasoning": 0, "none": 8}
    (run / "summary.json").write_text(json.dumps(s))
    res = run_check(run, CheckThresholds(min_frontier_margin=1.0, max_execution_share=0.1))
    assert row(res, "min_frontier_margin").status == "skip" and "no margins" in row(res, "min_frontier_margin").note
    assert row(res, "max_execution_share").status == "skip" and res.exit_code == 0


def _with_traces(run: Path, ref: dict | None, quant: dict | None) -> Path:
    fmt = {m: {"n": 20, "thinking": th} if th else {"n": 20} for m, th in (("reference", ref), ("quantized", quant))}
    edit_summary(run, format=fmt)
    return run


def test_reasoning_trace_gates(tmp_path):
    """A quantized reasoning model that runs out of budget inside its trace, or thinks much longer
    (format.<model>.thinking of the summary), fails its gates; a plain model's table has no such rows."""
    ref = {"share": 1.0, "unfinished": 0, "mean_chars": 215.0, "mean_tokens": 121.6}
    quant = {"share": 1.0, "unfinished": 5, "mean_chars": 430.0, "mean_tokens": 243.2}
    run = _with_traces(copy_run(RELEASE, tmp_path / "run"), ref, quant)
    res = run_check(run, CheckThresholds())
    assert row(res, "max_unfinished_thinking").value == pytest.approx(0.25)  # 5 of n=20
    assert row(res, "max_thinking_ratio").value == pytest.approx(2.0)  # tokens: both runs kept them
    assert "5 of 20 quantized traces never closed" in row(res, "max_unfinished_thinking").note
    for key, passing, failing in (("max_unfinished_thinking", 0.3, 0.2), ("max_thinking_ratio", 2.1, 1.5)):
        assert row(run_check(run, CheckThresholds(**{key: passing})), key).status == "pass"
        bad = run_check(run, CheckThresholds(**{key: failing}))
        assert [r.name for r in bad.failures] == [key] and bad.exit_code == 1
    # characters where one side has no token offsets
    _with_traces(run, {**ref, "mean_tokens": None}, quant)
    assert row(run_check(run, CheckThresholds()), "max_thinking_ratio").value == pytest.approx(2.0)
    # a plain model: no trace rows unless a trace gate was set, and then skip, never fail
    plain = copy_run(RELEASE, tmp_path / "plain")
    assert not any("thinking" in r.name for r in run_check(plain, CheckThresholds()).rows)
    res = run_check(plain, CheckThresholds(max_unfinished_thinking=0.1))
    assert row(res, "max_unfinished_thinking").status == "skip" and res.exit_code == 0
    # the flags, through the real entry point
    from conftest import cli_in_process

    assert cli_in_process("check", run, "--max-unfinished-thinking", "0.2")[0] == 1
    assert cli_in_process("check", run, "--max-unfinished-thinking", "0.3", "--max-thinking-ratio", "2.1")[0] == 0
    code, err = cli_in_process("check", run, "--max-thinking-ratio", "-1")
    assert code == 2 and "--max-thinking-ratio is a ratio" in err
    with pytest.raises(UserError, match="did you mean 0.3"):
        resolve_thresholds({"max_unfinished_thinking": 30})
    with pytest.raises(UserError, match="max-thinking-ratio is a ratio"):
        resolve_thresholds({"max_thinking_ratio": 0})


def test_run_dir_may_be_the_summary_file():
    assert run_check(RELEASE / "summary.json", CheckThresholds(max_flip_rate=0.5)).exit_code == 0


# ---------------------------------------------------------------------------- baseline and noise


def test_regression_beyond_noise_fails():
    res = run_check(RELEASE, CheckThresholds(), baseline=BASELINE)
    r = row(res, "baseline_regression")
    assert r.status == "fail" and res.exit_code == 1
    assert res.baseline.paired and res.baseline.n_compared == 20
    assert res.baseline.drop_points == pytest.approx(30.0)
    assert res.baseline.ci_points[0] > 1.0 and "beyond sampling noise" in r.note


def test_drop_within_noise_passes_and_says_so(tmp_path):
    """Baseline 18/20, now 17/20 on the same problems: a 5-point drop a 20-problem run cannot resolve."""
    now = copy_run(BASELINE, tmp_path / "now")
    gens = [json.loads(x) for x in (now / "generations" / "quantized.jsonl").read_text().splitlines()]
    victim = next(g for g in gens if g["correct"])
    victim["correct"] = False
    (now / "generations" / "quantized.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gens))
    s = json.loads((now / "summary.json").read_text())
    s["correct"]["quantized"] -= 1
    s["accuracy"]["quantized"] = s["correct"]["quantized"] / s["n"]
    s["flips"]["ref_right_quant_wrong"] += 1
    s["flips"]["rate"] = s["flips"]["ref_right_quant_wrong"] / s["n"]
    (now / "summary.json").write_text(json.dumps(s))
    md = tmp_path / "summary.md"
    res = run_check(now, CheckThresholds(), baseline=BASELINE / "summary.json")
    write_check_files(res, markdown=md)
    r = row(res, "baseline_regression")
    assert r.status == "pass" and res.exit_code == 0
    assert res.baseline.within_noise and "within noise" in r.note
    assert res.baseline.drop_points == pytest.approx(5.0) and res.baseline.ci_points[0] < 1.0
    assert "within sampling noise" in md.read_text()


@pytest.mark.parametrize("paired", [True, False])
def test_same_drop_fails_at_large_n_and_passes_at_small_n(tmp_path, paired):
    """A 4-point drop: noise at n=100, a real regression at n=4000 (paired and unpaired)."""
    for n in (100, 4000):
        k_before, k_now = int(0.90 * n), int(0.86 * n)
        before = synthetic_run(tmp_path / f"b{n}", [i < k_before for i in range(n)], generations=paired)
        now = synthetic_run(tmp_path / f"n{n}", [i < k_now for i in range(n)], generations=paired)
        res = run_check(now, CheckThresholds(), baseline=before)
        assert res.baseline.paired is paired
        assert row(res, "baseline_regression").status == ("pass" if n == 100 else "fail"), n
        assert res.baseline.within_noise is (n == 100)


def test_improvement_and_tolerance(tmp_path):
    before = synthetic_run(tmp_path / "b", [i < 80 for i in range(100)])
    better = synthetic_run(tmp_path / "better", [i < 85 for i in range(100)])
    res = run_check(better, CheckThresholds(), baseline=before)
    assert row(res, "baseline_regression").status == "pass" and "no regression" in row(res, "baseline_regression").note
    # A tolerance larger than the whole interval accepts even the release fixture's 30-point drop.
    assert run_check(RELEASE, CheckThresholds(baseline_tolerance=60.0), baseline=BASELINE).exit_code == 0


def test_baseline_on_another_benchmark_is_refused(tmp_path):
    other = copy_run(BASELINE, tmp_path / "other")
    edit_summary(other, benchmark="gsm8k")
    with pytest.raises(UserError, match="benchmark 'gsm8k'.*same benchmark"):
        run_check(RELEASE, CheckThresholds(), baseline=other)


def test_intervals_match_known_values():
    lo, hi = wilson(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    # Newcombe (1998), Statistics in Medicine 17:873, example (a): 56/70 - 48/80.
    lo, hi = newcombe_unpaired(56, 70, 48, 80)
    assert (lo, hi) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))
    # Paired: contains the estimate, symmetric when discordant counts are equal, tighter than unpaired.
    lo, hi = newcombe_paired(300, 40, 20, 140)
    assert lo < (40 - 20) / 500 < hi
    plo, phi = newcombe_paired(400, 0, 0, 100)
    assert plo == pytest.approx(-phi, abs=1e-9)
    ulo, uhi = newcombe_unpaired(340, 500, 320, 500)
    assert hi - lo < uhi - ulo


# ---------------------------------------------------------------------------- outputs


def test_junit_structure(tmp_path):
    path = tmp_path / "reports" / "check.xml"
    res = run_check(RELEASE, CheckThresholds(max_flip_rate=0.1, max_method_share=0.5), baseline=BASELINE)
    write_check_files(res, junit=path)
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    for el in (root, suite):
        for attr in ("tests", "failures", "errors", "skipped", "time"):
            assert attr in el.attrib, (el.tag, attr)
        assert int(el.get("tests")) == len(res.rows) == 6
        assert int(el.get("failures")) == len(res.failures) == 2
        assert int(el.get("skipped")) == 3 == sum(r.status == "skip" for r in res.rows)
        assert int(el.get("errors")) == 0
        float(el.get("time"))
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == [r.name for r in res.rows]
    for case, r in zip(cases, res.rows):
        assert case.get("classname") and float(case.get("time")) >= 0
        failure, skipped = case.find("failure"), case.find("skipped")
        assert (failure is not None) == (r.status == "fail")
        assert (skipped is not None) == (r.status == "skip")
        if failure is not None:
            assert failure.get("message") and failure.get("type")
    props = {p.get("name"): p.get("value") for p in suite.find("properties")}
    assert props["run"] == "release" and props["n"] == "20"


def test_junit_validates_against_the_xsd(tmp_path):
    xmlschema = pytest.importorskip("xmlschema")
    res = run_check(RELEASE, CheckThresholds(max_flip_rate=0.1))
    write_check_files(res, junit=tmp_path / "j.xml")
    path = res.junit_path
    xmlschema.XMLSchema(str(FIXTURES / "junit.xsd")).validate(str(path))


def test_markdown_summary(tmp_path):
    md = tmp_path / "step-summary.md"
    write_check_files(run_check(RELEASE, CheckThresholds(max_flip_rate=0.1)), markdown=md)
    text = md.read_text()
    assert text.startswith("## silverbullet check: ❌ FAIL")
    assert "| `max_flip_rate` | 35.0% | &lt;= 10.0% | ❌ fail |" in text
    assert text.count("\n| `") == 5  # one table row per gate


def test_terminal_table_renders():
    from rich.console import Console

    from silverbullet.check import print_check

    console = Console(record=True, width=200)
    print_check(run_check(RELEASE, CheckThresholds(max_flip_rate=0.1)), console)
    out = console.export_text()
    assert "max_flip_rate" in out and "FAIL" in out and "max_flip_rate" in out.splitlines()[-1]


# ---------------------------------------------------------------------------- config precedence


def test_precedence_cli_over_toml_over_pyproject_over_default(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        "[tool.silverbullet.check]\nmax_flip_rate = 0.1\nmax_accuracy_drop = 10\nmax-method-share = 0.4\n"
    )
    t = resolve_thresholds({}, cwd=tmp_path)
    assert (t.max_flip_rate, t.max_accuracy_drop, t.max_method_share) == (0.1, 10.0, 0.4)
    assert t.source("max_flip_rate") == "pyproject.toml" and t.source("baseline_tolerance") == "default"
    (tmp_path / "silverbullet.toml").write_text("[check]\nmax_flip_rate = 0.2\n")
    t = resolve_thresholds({}, cwd=tmp_path)
    assert t.max_flip_rate == 0.2 and t.source("max_flip_rate") == "silverbullet.toml"
    assert t.max_accuracy_drop == 10.0  # still from pyproject
    t = resolve_thresholds({"max_flip_rate": 0.3, "max_accuracy_drop": None}, cwd=tmp_path)
    assert t.max_flip_rate == 0.3 and t.source("max_flip_rate") == "cli" and t.max_accuracy_drop == 10.0
    other = tmp_path / "ci" / "gate.toml"
    other.parent.mkdir()
    other.write_text("[check]\nmax_flip_rate = 0.25\nbaseline_tolerance = 2\n")
    t = resolve_thresholds({}, config=other, cwd=tmp_path)  # --config replaces ./silverbullet.toml
    assert t.max_flip_rate == 0.25 and t.baseline_tolerance == 2.0 and t.max_accuracy_drop == 10.0
    assert resolve_thresholds({}, cwd=tmp_path / "ci") == CheckThresholds()  # no files: defaults


def test_config_thresholds_gate_the_run(tmp_path):
    (tmp_path / "silverbullet.toml").write_text("[check]\nmax_accuracy_drop = 20\n")
    res = run_check(RELEASE, resolve_thresholds({}, cwd=tmp_path))
    assert res.exit_code == 1 and row(res, "max_accuracy_drop").source == "silverbullet.toml"


@pytest.mark.parametrize(
    "text, match",
    [
        ("[check]\nmax_flip = 0.1\n", "unknown key 'max_flip'.*known keys"),
        ("[check]\nmax_flip_rate = 'low'\n", "max_flip_rate must be a number"),
        ("[check]\nmax_flip_rate = 5\n", "fraction between 0 and 1, got 5; did you mean 0.05"),
        ("[check]\nmax_accuracy_drop = -1\n", "cannot be negative"),
        ("[check\nmax_flip_rate = 0.1\n", "not valid TOML"),
        ("check = 3\n", r"\[check\] must be a table"),
    ],
)
def test_bad_config_is_a_user_error_naming_the_file(tmp_path, text, match):
    (tmp_path / "silverbullet.toml").write_text(text)
    with pytest.raises(UserError, match=match) as e:
        resolve_thresholds({}, cwd=tmp_path)
    assert "silverbullet.toml" in str(e.value)


def test_bad_flags_and_missing_config(tmp_path):
    with pytest.raises(UserError, match="--max-flip-rate is a fraction"):
        resolve_thresholds({"max_flip_rate": 12.0}, cwd=tmp_path)
    with pytest.raises(UserError, match="does not exist"):
        resolve_thresholds({}, config=tmp_path / "nope.toml", cwd=tmp_path)


# ---------------------------------------------------------------------------- bad input


def test_missing_and_unfinished_runs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run_check(tmp_path / "nope", CheckThresholds())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no summary.json; run `silverbullet diagnose"):
        run_check(empty, CheckThresholds())
    running = copy_run(RELEASE, tmp_path / "running")
    (running / "summary.json").unlink()
    with pytest.raises(UserError, match="still running or was stopped. Wait.*resumes"):
        run_check(running, CheckThresholds())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda p: p.write_text('{"schema": 1, "n": 2'), "not valid JSON"),
        (lambda p: p.write_text("[1, 2]"), "not a JSON object"),
        (lambda p: p.write_text('{"n": 3}'), "no 'schema' key"),
        (lambda p: _edit(p, schema=2), "schema 2 but this silverbullet reads schema 1"),
        (
            lambda p: _edit(p, flips={"ref_right_quant_wrong": 7, "ref_wrong_quant_right": 0}),
            "missing key 'flips.rate'",
        ),
        (lambda p: _edit(p, accuracy={"reference": 0.95}), "missing key 'accuracy.quantized'"),
        (lambda p: _edit(p, n=0), "'n' must be a positive integer"),
        (lambda p: _edit(p, correct={"reference": 19, "quantized": 3}), "do not add up"),
    ],
)
def test_corrupt_summary_is_a_user_error_naming_file_and_key(tmp_path, mutate, match):
    run = copy_run(RELEASE, tmp_path / "run")
    mutate(run / "summary.json")
    with pytest.raises(UserError, match=match) as e:
        run_check(run, CheckThresholds(max_flip_rate=0.5))
    assert "summary.json" in str(e.value)


def test_corrupt_baseline_is_a_user_error(tmp_path):
    base = copy_run(BASELINE, tmp_path / "base")
    _edit(base / "summary.json", schema=7)
    with pytest.raises(UserError, match="base/summary.json has schema 7"):
        run_check(RELEASE, CheckThresholds(), baseline=base)
    with pytest.raises(UserError, match="does not exist"):
        run_check(RELEASE, CheckThresholds(), baseline=tmp_path / "missing")


def _edit(path: Path, **changes) -> None:
    edit_summary(path.parent, **changes)
