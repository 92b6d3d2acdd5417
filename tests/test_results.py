"""Results as data (silverbullet.results): every frame column against the run files it comes from,
repair runs, compare_runs against `check`, export round trips, the report's links, bad input."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import silverbullet
from silverbullet.errors import UserError
from silverbullet.prompting import STEP_PREFIX_RE, parse_solution
from silverbullet.results import TornLineWarning, compare_runs, export_run, format_compliance, open_run

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "fixtures" / "runs"
MODEL = str(ROOT / "data" / "reference-model")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _na(x) -> bool:
    return x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x))


def _same(got, want) -> bool:
    """A frame cell against a file value: missing is NA, numbers compare as numbers."""
    if _na(want):
        return _na(got)
    if isinstance(want, float) or isinstance(got, float):
        return not _na(got) and math.isclose(float(got), float(want), rel_tol=1e-12)
    return got == want


def assert_matches_files(run_dir: Path) -> None:
    """Every column of problems, generations, attributions and flips against the files of run_dir."""
    run = open_run(run_dir)
    d = run.diagnose_dir
    probs = _jsonl(d / "problems.jsonl")
    p = run.problems
    assert list(p["problem_id"]) == [x["id"] for x in probs]
    for row, want in zip(p.to_dict("records"), probs):
        for k in ("question", "answer", "solution", "source"):
            assert _same(row[k], want.get(k)), k
        for k, v in want.get("meta", {}).items():
            expect = v if isinstance(v, (str, int, float, bool)) else json.dumps(v, sort_keys=True)
            assert _same(row[f"meta_{k}"], expect), k

    g = run.generations
    files = {tag: _jsonl(d / "generations" / f"{tag}.jsonl") for tag in ("reference", "quantized")}
    assert len(g) == sum(map(len, files.values()))
    by = {(r["problem_id"], r["model"]): r for r in g.to_dict("records")}
    for tag, rows in files.items():
        for want in rows:
            got = by[(want["problem_id"], tag)]
            for k in ("answer", "correct", "n_tokens", "seconds"):
                assert _same(got[k], want.get(k)), (tag, k)
            assert got["text"] == want["text"] and got["served_by"] == want["model"]
            parsed = parse_solution(want["text"])
            assert got["n_steps"] == len(parsed.steps) and got["has_answer_line"] == parsed.has_answer_line
            prefixed = bool(parsed.raw_steps) and all(map(STEP_PREFIX_RE.match, parsed.raw_steps))
            assert got["has_step_prefixes"] == prefixed
            m = want.get("margins")
            assert got["has_margins"] == bool(m)
            if m:
                assert math.isclose(got["mean_margin"], sum(m) / len(m)) and got["min_margin"] == min(m)
            else:
                assert _na(got["mean_margin"]) and _na(got["min_margin"])
    order = [x["id"] for x in probs]
    assert list(dict.fromkeys(g["problem_id"])) == [i for i in order if i in set(g["problem_id"])]

    a = run.attributions
    atts = _jsonl(d / "attribution.jsonl") if (d / "attribution.jsonl").exists() else []
    assert len(a) == len(atts)
    by = {(r["problem_id"], r["model"]): r for r in a.to_dict("records")}
    plain = ("flip", "first_faulty_step", "error_type", "aligned_reference_step", "n_steps", "final_answer_correct",
             "fault_in_answer_line", "reference_source", "margin_at_frontier", "margin_elsewhere",
             "min_margin_at_frontier", "min_margin_elsewhere", "reference_margin_at_frontier", "confirmed", "prefix",
             "faulty_line", "reference_line", "confirmation_text")  # fmt: skip
    for want in atts:
        got = by[(want["problem_id"], want["model"])]
        for k in plain:
            assert _same(got[k], want.get(k)), k
        assert _same(got["evidence_check"], (want.get("evidence") or {}).get("check"))
        assert json.loads(got["evidence"]) == want["evidence"]
        chars = want.get("frontier_chars") or [None, None]
        assert _same(got["frontier_start"], chars[0]) and _same(got["frontier_end"], chars[1])

    f = run.flips
    s = run.summary
    counts = f["direction"].value_counts()
    assert counts["ref_right_quant_wrong"] == s["flips"]["ref_right_quant_wrong"]
    assert counts["ref_wrong_quant_right"] == s["flips"]["ref_wrong_quant_right"]
    ref = {r["problem_id"]: r for r in files["reference"]}
    quant = {r["problem_id"]: r for r in files["quantized"]}
    assert list(f["problem_id"]) == [i for i in order if ref[i]["correct"] != quant[i]["correct"]]
    att_q = {r["problem_id"]: r for r in atts if r["model"] == "quantized"}
    for row in f.to_dict("records"):
        pid = row["problem_id"]
        assert row["reference_answer"] == ref[pid]["answer"] and row["quantized_answer"] == quant[pid]["answer"]
        want = att_q.get(pid, {})
        lost = row["direction"] == "ref_right_quant_wrong"
        assert want.get("flip", lost) == lost
        for k in ("first_faulty_step", "error_type", "confirmed", "margin_at_frontier", "faulty_line"):
            assert _same(row[k], want.get(k)), k


@pytest.fixture()
def release(tmp_path) -> Path:
    return Path(shutil.copytree(RUNS / "release", tmp_path / "release"))


@pytest.mark.parametrize("name", ["release", "baseline"])
def test_every_column_matches_the_files(name):
    """The fixtures are schema-1 runs of an older diagnose (no min_margin_* keys): still read."""
    assert_matches_files(RUNS / name)


def test_dtypes():
    run = open_run(RUNS / "release")
    g, a, f = run.generations, run.attributions, run.flips
    assert isinstance(g["model"].dtype, pd.CategoricalDtype)
    assert list(g["model"].cat.categories[:2]) == ["reference", "quantized"]
    for frame in (a, f):
        assert list(frame["error_type"].cat.categories) == ["execution", "method", "conceptual", "reasoning"]
    assert str(g["correct"].dtype) == "boolean" and str(g["n_tokens"].dtype) == "Int64"
    assert str(g["mean_margin"].dtype) == "Float64" and str(g["problem_id"].dtype) == "string"
    assert str(a["first_faulty_step"].dtype) == "Int64" and str(a["confirmed"].dtype) == "boolean"
    assert str(run.problems["meta_n_steps"].dtype) == "Int64"
    assert a["first_faulty_step"].isna().sum() == sum(
        r["first_faulty_step"] is None for r in _jsonl(RUNS / "release" / "attribution.jsonl")
    )
    # The same categorical dtype on every run: frames of two runs concatenate without losing it.
    both = pd.concat([run.generations, open_run(RUNS / "baseline").generations])
    assert isinstance(both["model"].dtype, pd.CategoricalDtype)


@pytest.mark.parametrize(
    "text, want",
    [
        ("Step 1: 2 + 3 = 5.\nStep 2: 5 * 2 = 10.\nThe answer is: 10\n", (2, True, True, True, True)),
        ("Step 1: 2 + 3 = 5.\nStep 3: 5 * 2 = 10.\nThe answer is: 10\n", (2, True, False, True, False)),
        ("2 + 3 = 5\nso 5 * 2 = 10\n#### 10\n", (2, False, False, True, False)),
        ("Step 1: 2 + 3 = 5.\nStep 2: 5 * 2 = 10.", (2, True, True, False, False)),
        ("", (0, False, False, False, False)),
    ],
)
def test_format_compliance(text, want):
    got = format_compliance(text)
    keys = ("n_steps", "has_step_prefixes", "steps_in_order", "has_answer_line", "format_ok")
    assert tuple(got[k] for k in keys) == want


def test_known_misnumbered_step_in_the_fixture():
    g = open_run(RUNS / "release").generations
    row = g[(g["problem_id"] == "synthetic-eval-0") & (g["model"] == "quantized")].iloc[0]
    assert "Step 15:" in row["text"] and not row["steps_in_order"] and row["has_step_prefixes"]


# ------------------------------------------------------------------------------------ repair runs


def _build_repair(out: Path, eval_run: Path, eval_run_field: str) -> None:
    """A repair run's files, made by the repair code itself (sets, checker fallback, flip stats)
    where that needs no model: the repaired model's rows are the reference model's, re-tagged."""
    from silverbullet.records import Generation
    from silverbullet.repair.dataset import DatasetConfig, candidates, curate, sft_rows, write_sets
    from silverbullet.repair.fallback import checker_fallback
    from silverbullet.repair.pipeline import flip_stats

    pairs = curate(candidates(eval_run), DatasetConfig(max_examples=4))
    write_sets(sft_rows("flipped-full", pairs, eval_run, 4), pairs, out)
    ref = _jsonl(eval_run / "generations" / "reference.jsonl")
    quant = {r["problem_id"]: r for r in _jsonl(eval_run / "generations" / "quantized.jsonl")}
    # One repaired solution with a refuted step where the quantized one has none: the fallback serves it.
    rep = [Generation(**{**r, "model": "repaired"}) for r in ref]
    rep[1].text = rep[1].text.replace("= 11", "= 12")
    (out / "generations").mkdir(parents=True, exist_ok=True)
    (out / "generations" / "repaired.jsonl").write_text("".join(json.dumps(g.__dict__) + "\n" for g in rep))
    checked = checker_fallback(rep, quant)
    (out / "generations" / "checked.jsonl").write_text("".join(json.dumps(r) + "\n" for r in checked))
    stats = flip_stats([r["correct"] for r in ref], [quant[r["problem_id"]]["correct"] for r in ref],
                       [g.correct for g in rep])  # fmt: skip
    summary = {"schema": 1, "command": "repair", "n": len(ref), "eval_run": eval_run_field, **stats}
    (out / "repair_summary.json").write_text(json.dumps(summary))


@pytest.fixture()
def repair_run(tmp_path) -> Path:
    out = tmp_path / "rep"
    shutil.copytree(RUNS / "release", out / "eval-split")
    (out / "eval-split" / "repair_summary.json").unlink()
    _build_repair(out, out / "eval-split", str(out / "eval-split"))
    return out


def test_repair_run_adds_repaired_and_the_sets(repair_run):
    run = open_run(repair_run)
    assert run.diagnose_dir == repair_run / "eval-split" and run.repair_dir == repair_run
    assert run.repair_summary["command"] == "repair"
    assert_matches_files(repair_run)
    r = run.repaired
    rep = _jsonl(repair_run / "generations" / "repaired.jsonl")
    checked = _jsonl(repair_run / "generations" / "checked.jsonl")
    assert len(r) == len(rep) + len(checked) and set(r["model"]) == {"repaired", "checked"}
    got = r[r["model"] == "checked"]
    assert list(got["served_by"]) == [x["model"] for x in checked]
    assert "quantized" in set(got["served_by"])  # the planted refuted step fell back
    assert list(got["correct"]) == [x["correct"] for x in checked]
    assert list(r[r["model"] == "repaired"]["answer"]) == [x["answer"] for x in rep]
    sets = run.sets
    for kind in ("sft", "dpo"):
        rows = _jsonl(repair_run / f"silverbullet_{kind}.jsonl")
        part = sets[sets["set"] == kind]
        assert len(part) == len(rows) > 0
        for k in ("problem_id", "step_index", "error_type", "prompt"):
            assert list(part[k]) == [x[k] for x in rows], k
    assert isinstance(sets["error_type"].dtype, pd.CategoricalDtype)
    assert set(run.frames()) == {"problems", "generations", "attributions", "flips", "repaired", "sets"}


def test_repair_run_finds_its_evaluation_run_by_eval_run(tmp_path, monkeypatch):
    """`repair --from RUN`: the evaluation diagnose is elsewhere, named (relative to the cwd) in eval_run."""
    shutil.copytree(RUNS / "release", tmp_path / "runs" / "diag")
    _build_repair(tmp_path / "runs" / "rep", tmp_path / "runs" / "diag", "runs/diag")
    monkeypatch.chdir(tmp_path)
    run = open_run("runs/rep")
    assert run.diagnose_dir == Path("runs/diag") and len(run.repaired) == 40
    monkeypatch.chdir(tmp_path / "runs")  # from elsewhere: a clear error, not a KeyError
    with pytest.raises(UserError, match="evaluation diagnose .* is not found"):
        open_run("rep")


def test_unfinished_repair_and_a_run_without_wrong_answers(repair_run):
    (repair_run / "repair_summary.json").unlink()
    with pytest.raises(UserError, match="repair run that has not finished"):
        open_run(repair_run)
    diag = repair_run / "eval-split"  # every answer right: no attribution.jsonl, no flips
    (diag / "attribution.jsonl").unlink()
    ref = (diag / "generations" / "reference.jsonl").read_text()
    (diag / "generations" / "quantized.jsonl").write_text(ref.replace('"model": "reference"', '"model": "quantized"'))
    run = open_run(diag)
    assert len(run.attributions) == 0 and len(run.flips) == 0
    assert list(run.flips.columns)[:4] == ["problem_id", "direction", "reference_answer", "quantized_answer"]
    assert isinstance(run.flips["error_type"].dtype, pd.CategoricalDtype)


def test_diagnose_run_with_repair_output_in_the_same_directory(tmp_path):
    """`repair --from RUN --out RUN`: summary.json, repair_summary.json and repaired.jsonl side by side."""
    run_dir = Path(shutil.copytree(RUNS / "release", tmp_path / "r"))
    _build_repair(run_dir, run_dir, str(run_dir))
    run = open_run(run_dir)
    assert run.repair_dir == run_dir and set(run.generations["model"]) == {"reference", "quantized"}
    assert len(run.repaired) == 40 and len(run.sets) > 0


def test_a_diagnose_run_with_a_copied_repair_summary_has_no_repaired_frame():
    run = open_run(RUNS / "release")  # the fixture has repair_summary.json, as `repair --from` leaves it
    assert run.repair_summary["accuracy"]["repaired"] == 0.9 and run.repaired is None and run.sets is None


# ------------------------------------------------------------------------------------ export


def test_export_parquet_round_trips(repair_run):
    files = export_run(repair_run, "parquet")
    frames = open_run(repair_run).frames()
    assert [p.name for p in files] == [f"{n}.parquet" for n in frames]
    for p in files:
        assert p.parent == repair_run / "export"
        pd.testing.assert_frame_equal(pd.read_parquet(p), frames[p.stem])


def test_export_csv(release, tmp_path):
    files = export_run(release, "csv", tmp_path / "csv")
    frames = open_run(release).frames()
    for p in files:
        back = pd.read_csv(p)
        assert list(back.columns) == list(frames[p.stem].columns) and len(back) == len(frames[p.stem])
    back = pd.read_csv(tmp_path / "csv" / "generations.csv")
    assert list(back["correct"]) == list(frames["generations"]["correct"])


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "silverbullet.cli", *args], capture_output=True, text=True, cwd=cwd)


def test_export_command_and_the_report_links_the_parquet_files(release, tmp_path):
    from silverbullet.report import EXPORT_DIR, write_report
    from silverbullet.results import EXPORT_DIR as RESULTS_EXPORT_DIR

    assert EXPORT_DIR == RESULTS_EXPORT_DIR
    html, md = write_report(release)
    assert "parquet" not in html.read_text() and "parquet" not in md.read_text()  # nothing exported yet
    r = _cli("export", str(release), "--format", "parquet")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [str(release / "export" / f"{n}.parquet") for n in
                                ("problems", "generations", "attributions", "flips")]  # fmt: skip
    html, md = write_report(release)
    links = re.findall(r'<a href="(export/[a-z]+\.parquet)">', html.read_text())
    assert sorted(links) == sorted(f"export/{n}.parquet" for n in ("problems", "generations", "attributions", "flips"))
    assert "(export/flips.parquet)" in md.read_text()
    r = _cli("export", str(release), "--format", "xlsx")
    assert r.returncode == 2 and "use parquet or csv" in r.stderr and "Traceback" not in r.stderr


# ------------------------------------------------------------------------------------ compare_runs


def test_compare_runs_aligns_on_problem_id_with_checks_statistics():
    from silverbullet.check import run_check
    from silverbullet.settings import CheckThresholds

    cmp = compare_runs([RUNS / "baseline", RUNS / "release"])
    f = cmp.frame
    base = {r["problem_id"]: r for r in _jsonl(RUNS / "baseline" / "generations" / "quantized.jsonl")}
    rel = {r["problem_id"]: r for r in _jsonl(RUNS / "release" / "generations" / "quantized.jsonl")}
    assert list(f.index) == list(base)
    assert list(f["baseline.correct"]) == [base[i]["correct"] for i in f.index]
    assert list(f["release.correct"]) == [rel[i]["correct"] for i in f.index]
    assert list(f["release.answer"]) == [rel[i]["answer"] for i in f.index]
    want = ["fixed" if rel[i]["correct"] and not base[i]["correct"] else
            "broken" if base[i]["correct"] and not rel[i]["correct"] else "same" for i in f.index]  # fmt: skip
    assert list(f["release.change"]) == want and want.count("broken") == 6
    assert f.loc["synthetic-eval-0", "release.error_type"] == "execution"
    assert pd.isna(f.loc["synthetic-eval-0", "baseline.error_type"])

    d = cmp.differences.set_index("run")
    res = run_check(RUNS / "release", CheckThresholds(), baseline=RUNS / "baseline")
    b = res.baseline
    assert d.loc["release", "vs_first_drop_points"] == b.drop_points
    assert (d.loc["release", "vs_first_ci_low"], d.loc["release", "vs_first_ci_high"]) == b.ci_points
    assert d.loc["release", "vs_first_paired"] == b.paired and d.loc["release", "vs_first_n"] == b.n_compared
    assert pd.isna(d.loc["baseline", "vs_first_drop_points"])
    drop_note = next(r.note for r in res.rows if r.name == "max_accuracy_drop")
    lo, hi = d.loc["release", "drop_ci_low"], d.loc["release", "drop_ci_high"]
    assert f"paired 95% CI of the drop [{lo:.1f}, {hi:.1f}] pts" in drop_note
    assert d.loc["release", "drop_points"] == pytest.approx(35.0)


def test_compare_runs_labels_and_bad_calls(release):
    cmp = compare_runs([RUNS / "release", release], labels=["a", "b"])
    assert list(cmp.runs) == ["a", "b"] and (cmp.frame["b.change"] == "same").all()
    assert list(compare_runs([RUNS / "release", release]).runs) == ["release", "release-2"]
    with pytest.raises(UserError, match="at least two"):
        compare_runs([release])
    with pytest.raises(UserError, match="one label per run"):
        compare_runs([release, release], labels=["x"])


# ------------------------------------------------------------------------------------ bad input


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_not_a_run(tmp_path):
    with pytest.raises(UserError) as e:
        open_run(tmp_path / "nope")
    assert "does not exist" in _one_line(e)
    with pytest.raises(UserError) as e:
        open_run(tmp_path)
    assert "is not a silverbullet run" in _one_line(e)
    (tmp_path / "generations").mkdir()
    (tmp_path / "generations" / "quantized.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="still running or was stopped"):
        open_run(tmp_path)
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="not a run directory"):
        open_run(tmp_path / "x.txt")
    r = _cli("export", str(tmp_path / "nope"))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "does not exist" in r.stderr


def test_newer_schema(release):
    s = json.loads((release / "summary.json").read_text())
    (release / "summary.json").write_text(json.dumps({**s, "schema": 2}))
    with pytest.raises(UserError, match="schema 2") as e:
        open_run(release)
    _one_line(e)
    (release / "summary.json").write_text(json.dumps(s))
    rs = json.loads((release / "repair_summary.json").read_text())
    (release / "repair_summary.json").write_text(json.dumps({**rs, "schema": 3}))
    with pytest.raises(UserError, match="schema 3 .*upgrade silverbullet"):
        open_run(release)


def test_torn_last_line_is_skipped_with_a_warning(release):
    path = release / "generations" / "quantized.jsonl"
    text = path.read_text()
    path.write_text(text + text.splitlines()[0][:40])
    with pytest.warns(TornLineWarning, match="quantized.jsonl: skipped a torn last line"):
        g = open_run(release).generations
    assert (g["model"] == "quantized").sum() == 20
    assert path.read_text().endswith(text.splitlines()[0][:40])  # the reader never rewrites a run file
    lines = text.splitlines()
    path.write_text("\n".join(lines[:19]) + "\n" + lines[19][:50])  # the last real row torn off
    with pytest.warns(TornLineWarning):
        g = open_run(release).generations
        flips = open_run(release).flips
    assert (g["model"] == "quantized").sum() == 19 and len(flips) == 6  # the torn row was a flip


@pytest.mark.parametrize(
    "file, mutate, match",
    [
        ("generations/quantized.jsonl", lambda ls: [ls[0], "{not json", *ls[1:]], "malformed JSON"),
        ("generations/quantized.jsonl", lambda ls: [json.dumps({"text": "x"}), *ls], "no 'problem_id' field"),
        ("generations/quantized.jsonl", lambda ls: [json.dumps({**json.loads(ls[0]), "correct": "yes"}), *ls[1:]],
         "field 'correct' holds 'yes'"),
        ("attribution.jsonl", lambda ls: [json.dumps({"problem_id": "x"}), *ls], "no 'model' field"),
        ("attribution.jsonl", lambda ls: [json.dumps({**json.loads(ls[0]), "first_faulty_step": "two"}), *ls[1:]],
         "field 'first_faulty_step'"),
        ("problems.jsonl", lambda ls: ["[1, 2]", *ls], "not a JSON object"),
    ],
)  # fmt: skip
def test_bad_rows_are_one_line_user_errors(release, file, mutate, match):
    path = release / file
    path.write_text("\n".join(mutate(path.read_text().splitlines())) + "\n")
    with pytest.raises(UserError, match=match) as e:
        open_run(release).frames()
    assert file.split("/")[-1] in _one_line(e)


# ------------------------------------------------------------------------------------ package and docs


def test_import_silverbullet_stays_cheap():
    code = (
        "import sys, silverbullet; assert 'pandas' not in sys.modules; "
        "f = silverbullet.open_run; assert 'pandas' in sys.modules; print(f.__module__)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "silverbullet.results", r.stderr
    assert silverbullet.compare_runs is compare_runs
    with pytest.raises(AttributeError):
        silverbullet.no_such_thing  # noqa: B018


def test_docs_example_runs(tmp_path, monkeypatch):
    """docs/python-api.md's Python blocks, run in order in one namespace on two fixture runs."""
    doc = (ROOT / "docs" / "python-api.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) >= 3
    shutil.copytree(RUNS / "baseline", tmp_path / "runs" / "previous")
    shutil.copytree(RUNS / "release", tmp_path / "runs" / "demo")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "docs/python-api.md", "exec"), ns)  # noqa: S102 - our own documentation
    assert (tmp_path / "runs" / "demo" / "export" / "flips.parquet").is_file()


# ------------------------------------------------------------------------------------ real CLI output


@pytest.mark.slow
def test_a_run_written_by_the_diagnose_command(tmp_path, memorizer_dir, tiny_model_dir):
    """`silverbullet diagnose` as a user runs it, read back and exported. The reference is the
    memorizer (it knows the two problems' solutions), the quantized model a random tiny one (every
    answer wrong): flips, attribution rows and margins all appear, in seconds."""
    from conftest import MEMORIZED

    bench = tmp_path / "bench.jsonl"
    rows = [{"question": q[len("Question: "):].strip(), "answer": c.split("The answer is: ")[1].split("\n")[0],
             "solution": c.split("</s>")[0]} for q, c in MEMORIZED.items()]  # fmt: skip
    bench.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    r = _cli("diagnose", "--reference", str(memorizer_dir), "--quantized", str(tiny_model_dir), "--benchmark",
             str(bench), "--no-cache", "--device", "cpu", "--batch-size", "2", "--out", str(out))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert_matches_files(out)
    run = open_run(out)
    assert run.summary["accuracy"] == {"reference": 1.0, "quantized": 0.0}
    assert len(run.flips) == 2 and (run.flips["direction"] == "ref_right_quant_wrong").all()
    g = run.generations
    assert g[g["model"] == "reference"]["format_ok"].all() and g["has_margins"].all()
    assert not g[g["model"] == "quantized"]["format_ok"].any()
    r = _cli("export", str(out), "--format", "parquet", "--out", str(tmp_path / "pq"))
    assert r.returncode == 0, r.stderr
    for name, df in run.frames().items():
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "pq" / f"{name}.parquet"), df)
