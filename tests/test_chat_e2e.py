"""The chat path end to end on the shipped chat model (data/reference-chat-model), as a user runs it:
`diagnose` (auto picks the chat template), `locate` on the run's solutions, `repair --from`, `report`;
once with the step-format instruction and once in the model's free style (`--system-prompt ""`),
where the segmenter must find the steps. The quantized model is the chat model's demo variant
(RTN 2-bit, built on first use)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from silverbullet.prompting.formats import STEP_FORMAT_INSTRUCTION

ROOT = Path(__file__).resolve().parents[1]
MODEL = "data/reference-chat-model"
MODES = {"steps": (), "free": ("--system-prompt", "")}
LIMIT, REPAIR_LIMIT = 20, 16

pytestmark = pytest.mark.slow


def _cli(*args, threads: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, "-m", "silverbullet.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _diagnose_then_repair(d: Path, mode: str, threads: int) -> tuple[Path, Path, list]:
    run, rep = d / "run", d / "repair"
    done = [_cli("diagnose", "--reference", MODEL, "--limit", LIMIT, "--out", run, *MODES[mode], threads=threads)]
    if done[0].returncode == 0:
        done.append(
            _cli("repair", "--from", run, "--out", rep, "--repair-limit", REPAIR_LIMIT, "--epochs", 1, *MODES[mode],
                 threads=threads)
        )  # fmt: skip
    return run, rep, done


@pytest.fixture(scope="module")
def chat_runs(tmp_path_factory) -> dict[str, tuple[Path, Path, list]]:
    """Both modes' `diagnose` then `repair --from`, the two chains side by side, each on its share of
    the cores (the commands are mostly single-threaded: imports, the locator, small-batch decoding).
    The first `diagnose` to need the quantized chat model builds it; the other waits for it (its lock)."""
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, len(os.sched_getaffinity(0)) // len(MODES))
    with ThreadPoolExecutor(len(MODES)) as pool:
        futures = {m: pool.submit(_diagnose_then_repair, tmp_path_factory.mktemp(f"chat-{m}"), m, threads)
                   for m in sorted(MODES)}  # fmt: skip
        return {m: f.result() for m, f in futures.items()}


@pytest.fixture(scope="module", params=sorted(MODES))
def chat_run(request, chat_runs) -> tuple[str, Path, Path]:
    mode = request.param
    run, rep, done = chat_runs[mode]
    for res in done:
        assert res.returncode == 0, res.stderr[-2000:]
    assert len(done) == 2  # diagnose, then repair
    return mode, run, rep


def test_diagnose_uses_the_chat_template_and_measures_compliance(chat_run):
    mode, run, _ = chat_run
    s = json.loads((run / "summary.json").read_text())
    assert s["prompt"]["format"] == "chat"
    assert s["prompt"]["system_prompt"] == (STEP_FORMAT_INSTRUCTION if mode == "steps" else "")
    gens = _rows(run / "generations" / "reference.jsonl")
    assert all(g["prompt"].startswith("<|im_start|>") and g["prompt"].endswith("<|im_start|>assistant\n") for g in gens)
    assert all("<|im_end|>" not in g["text"] for g in gens)  # stopped at the end-of-turn token
    f = s["format"]["reference"]
    assert s["accuracy"]["reference"] >= 0.9 and f["answer_stated_share"] >= 0.9 and f["truncated"] == 0
    if mode == "steps":
        assert f["step_prefix_share"] >= 0.9
    else:
        assert f["step_prefix_share"] <= 0.1  # free style: no "Step k:" lines; the segmenter finds steps
    assert s["flips"]["ref_right_quant_wrong"] >= 1  # the 2-bit variant breaks some problems


def test_first_faults_are_placed_in_the_solution_s_own_steps(chat_run):
    mode, run, _ = chat_run
    flips = [r for r in _rows(run / "attribution.jsonl") if r["model"] == "quantized" and r["flip"]]
    placed = [r for r in flips if r["first_faulty_step"] is not None]
    assert placed and len(placed) >= 0.8 * len(flips)
    for r in placed:
        assert 0 <= r["first_faulty_step"] < r["n_steps"]
        assert r["faulty_line"] and r["faulty_line"].strip()
        assert r["faulty_line"].lstrip().startswith("Step") == (mode == "steps")
    if mode == "free":  # free text is cut into several steps, not one block
        assert sum(r["n_steps"] for r in placed) / len(placed) >= 2


def test_locate_on_the_run_s_solutions_agrees_with_diagnose(chat_run, tmp_path):
    """`silverbullet locate` on the same solutions, as a user holding only the texts would run it."""
    _, run, _ = chat_run
    problems = {p["id"]: p for p in _rows(run / "problems.jsonl")}
    ref = {g["problem_id"]: g for g in _rows(run / "generations" / "reference.jsonl")}
    flips = [r for r in _rows(run / "attribution.jsonl") if r["model"] == "quantized" and r["flip"]]
    quant = {g["problem_id"]: g for g in _rows(run / "generations" / "quantized.jsonl")}
    src = tmp_path / "solutions.jsonl"
    src.write_text(
        "".join(
            json.dumps(
                {
                    "id": r["problem_id"],
                    "q": problems[r["problem_id"]]["question"],
                    "cand": quant[r["problem_id"]]["text"],
                    "ref": ref[r["problem_id"]]["text"],
                    "gold": problems[r["problem_id"]]["answer"],
                }
            )
            + "\n"
            for r in flips
        )
    )
    out = tmp_path / "located.jsonl"
    args = ("--question-field", "q", "--candidate-field", "cand", "--reference-field", "ref")
    res = _cli("locate", "--input", src, *args, "--answer-field", "gold", "--id-field", "id", "--out", out)
    assert res.returncode == 0, res.stderr[-2000:]
    located = {r["problem_id"]: r for r in _rows(out)}
    assert len(located) == len(flips)
    for r in flips:
        assert located[r["problem_id"]]["first_faulty_step"] == r["first_faulty_step"], r["problem_id"]
        assert located[r["problem_id"]]["error_type"] == r["error_type"]


def test_repair_and_report_on_the_chat_run(chat_run):
    mode, run, rep = chat_run
    s = json.loads((run / "summary.json").read_text())
    r = json.loads((rep / "repair_summary.json").read_text())
    assert r["prompt"]["id"] == s["prompt"]["id"]  # the repair kept the run's prompts
    assert r["examples"] >= 1 and r["n"] == s["n"]
    repaired = _rows(rep / "generations" / "repaired.jsonl")
    first = _rows(run / "generations" / "quantized.jsonl")
    assert [g["prompt"] for g in repaired] == [g["prompt"] for g in first]
    sft = _rows(rep / "silverbullet_sft.jsonl")
    assert sft and all(x["prompt"].startswith("<|im_start|>") for x in sft)  # trained on the chat prompts
    if mode == "steps":
        assert all("Step 1:" in x["prompt"] + x["completion"] for x in sft)
    res = _cli("report", run)
    assert res.returncode == 0, res.stderr[-2000:]
    md = (run / "report.md").read_text()
    assert "## Format compliance" in md and "Prompt format <code>chat</code>" in md
