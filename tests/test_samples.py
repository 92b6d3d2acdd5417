"""Diagnose from files: OpenAI-style, vLLM-dump and mapped-JSONL files written from the project's own
generations, then `report`, `check` and `repair --from` on the run; bad input is one line, exit 2."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from silverbullet.benchmarks import load_benchmark
from silverbullet.diagnose import DiagnoseConfig, demo_quantized_path
from silverbullet.diagnose_samples import run_from_samples
from silverbullet.errors import UserError
from silverbullet.frontier import frontier_margins
from silverbullet.generation.base import GenerationConfig
from silverbullet.generation.samples import pair_samples, read_samples
from silverbullet.measure import measure
from silverbullet.prompting import build_prompt, step_spans

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "data" / "reference-model")
N = 10


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """Both models' solutions from our own generator, with margins and the teacher-forced logprobs
    a server would report (greedy: the chosen token is the top-1)."""
    from silverbullet.generation.hf import HFGenerator

    quant = demo_quantized_path(MODEL)
    problems = load_benchmark("synthetic", split="eval", limit=N)
    out = {"problems": problems, "quantized_path": quant, "gens": {}, "scores": {}}
    for tag, path in (("reference", MODEL), ("quantized", quant)):
        gen = HFGenerator(path, tag=tag, device="cpu")
        gens = measure(gen, problems, GenerationConfig(batch_size=N, margins=True))
        out["gens"][tag] = gens
        out["scores"][tag] = gen.score_batch([(build_prompt(p.question), g.text) for p, g in zip(problems, gens)])
    return out


def _tokens(text: str, ends: list[int]) -> list[str]:
    return [text[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def export_openai_chat(problems, gens, scores, path: Path) -> None:
    """Our generations as OpenAI batch output lines with the request beside them and per-token
    top-2 logprobs (top-1 = the chosen token's logprob, top-2 = top-1 minus its margin)."""
    with path.open("w") as f:
        for p, g, s in zip(problems, gens, scores):
            toks = _tokens(g.text, s.token_ends)
            content = [
                {"token": t, "logprob": lp, "bytes": list(t.encode()),
                 "top_logprobs": [{"token": t, "logprob": lp}, {"token": "?", "logprob": lp - m}]}
                for t, lp, m in zip(toks, s.logprobs, s.margins)
            ]  # fmt: skip
            body = {
                "id": f"chatcmpl-{p.id}",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": g.text},
                             "logprobs": {"content": content}, "finish_reason": "stop"}],
                "usage": {"completion_tokens": len(toks)},
            }  # fmt: skip
            request = {"model": "m", "messages": [{"role": "user", "content": build_prompt(p.question)}]}
            f.write(json.dumps({"custom_id": p.id, "request": request, "response": {"status_code": 200, "body": body},
                                "error": None}) + "\n")  # fmt: skip


def export_openai_completions(problems, gens, scores, path: Path) -> None:
    """Legacy completions objects (no ids): `logprobs.tokens` and `top_logprobs` dicts."""
    with path.open("w") as f:
        for p, g, s in zip(problems, gens, scores):
            toks = _tokens(g.text, s.token_ends)
            tops = [{t: lp, "\x00alt": lp - m} for t, lp, m in zip(toks, s.logprobs, s.margins)]
            body = {"object": "text_completion", "choices": [{"text": g.text, "index": 0,
                    "logprobs": {"tokens": toks, "token_logprobs": s.logprobs, "top_logprobs": tops}}]}  # fmt: skip
            f.write(json.dumps({"prompt": build_prompt(p.question), "answer": p.answer, **body}) + "\n")


def export_vllm(problems, gens, scores, path: Path) -> None:
    """`RequestOutput`s as dicts: one {token_id: {logprob, rank, decoded_token}} per generated token."""
    with path.open("w") as f:
        for p, g, s in zip(problems, gens, scores):
            toks = _tokens(g.text, s.token_ends)
            lps = [{str(tid): {"logprob": lp, "rank": 1, "decoded_token": t},
                    "99999": {"logprob": lp - m, "rank": 2, "decoded_token": "?"}}
                   for tid, t, lp, m in zip(s.token_ids, toks, s.logprobs, s.margins)]  # fmt: skip
            out = {"index": 0, "text": g.text, "token_ids": s.token_ids, "logprobs": lps, "finish_reason": "stop"}
            f.write(json.dumps({"request_id": p.id, "prompt": build_prompt(p.question), "outputs": [out]}) + "\n")


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "silverbullet.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def _acc(gens) -> float:
    return round(sum(g.correct for g in gens) / len(gens), 4)


@pytest.fixture(scope="module")
def chat_run(own, tmp_path_factory):
    d = tmp_path_factory.mktemp("chat")
    for tag in ("reference", "quantized"):
        export_openai_chat(own["problems"], own["gens"][tag], own["scores"][tag], d / f"{tag}.jsonl")
    cfg = DiagnoseConfig(reference=None, quantized=own["quantized_path"], benchmark="synthetic",
                         reference_samples=str(d / "reference.jsonl"), quantized_samples=str(d / "quantized.jsonl"),
                         out=str(d / "run"), limit=None, progress=False, cache=False)  # fmt: skip
    return d, run_from_samples(cfg)


def test_openai_chat_files_give_the_generated_runs_diagnosis(own, chat_run):
    d, s = chat_run
    gens = own["gens"]
    assert s["n"] == N and s["samples"]["paired_by"] == "id" and s["samples"]["format"]["reference"] == "openai"
    assert s["accuracy"] == {"reference": _acc(gens["reference"]), "quantized": _acc(gens["quantized"])}
    flips = sum(r.correct and not q.correct for r, q in zip(gens["reference"], gens["quantized"]))
    assert s["flips"]["ref_right_quant_wrong"] == flips > 0
    for f in ("config.json", "problems.jsonl", "generations/reference.jsonl", "attribution.jsonl", "summary.json"):
        assert (d / "run" / f).is_file(), f
    # Margins from the files' top-2 logprobs are the generator's own margins at the same steps.
    by_id = {g.problem_id: g for g in gens["quantized"]}
    atts = [json.loads(x) for x in (d / "run" / "attribution.jsonl").read_text().splitlines()]
    located = [a for a in atts if a["model"] == "quantized" and a.get("frontier_chars")]
    assert located and s["samples"]["margins_available"] == {"reference": N, "quantized": N}
    for a in located:
        g = by_id[a["problem_id"]]
        want = frontier_margins(g, tuple(a["frontier_chars"]), step_spans(g.text))
        assert a["margin_at_frontier"] == pytest.approx(want["margin_at_frontier"], abs=2e-3)
    # --quantized given: causal confirmation ran; no --reference: its prefix margin did not.
    assert s["confirmation"]["status"] == "run" and s["confirmation"]["n"] > 0
    assert s["margins"]["reference_at_frontier_mean"] is None
    assert s["models"]["quantized"]["samples"].endswith("quantized.jsonl")


def test_report_and_check_read_a_samples_run(chat_run):
    d, s = chat_run
    r = _cli("report", str(d / "run"))
    assert r.returncode == 0, r.stderr
    assert (d / "run" / "report.html").stat().st_size > 1000
    drop = (s["accuracy"]["reference"] - s["accuracy"]["quantized"]) * 100
    ok = _cli("check", str(d / "run"), "--max-accuracy-drop", str(drop + 50))
    bad = _cli("check", str(d / "run"), "--max-accuracy-drop", "0")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert bad.returncode == 1, bad.stdout + bad.stderr


def test_the_results_api_reads_a_samples_run(chat_run):
    """`silverbullet.results.open_run` on a run diagnosed from sample files: the frames match its files."""
    from silverbullet.results import open_run

    d, s = chat_run
    run = open_run(d / "run")
    problems = [json.loads(x) for x in (d / "run" / "problems.jsonl").read_text().splitlines()]
    att = [json.loads(x) for x in (d / "run" / "attribution.jsonl").read_text().splitlines() if x.strip()]
    assert list(run.problems["problem_id"]) == [p["id"] for p in problems]
    assert len(run.generations) == 2 * len(problems)
    q = run.generations[run.generations["model"] == "quantized"]
    assert q["correct"].mean() == pytest.approx(s["accuracy"]["quantized"], abs=1e-4)
    assert len(run.attributions) == len(att)
    assert len(run.flips) == s["flips"]["ref_right_quant_wrong"] + s["flips"]["ref_wrong_quant_right"]
    assert run.summary["samples"]["pairs"] == len(problems)


def test_completions_and_vllm_dumps_pair_by_question_or_request_id(own, tmp_path):
    p, g, sc = own["problems"], own["gens"], own["scores"]
    export_openai_completions(p, g["reference"], sc["reference"], tmp_path / "ref.jsonl")
    export_vllm(p[::-1], g["quantized"][::-1], sc["quantized"][::-1], tmp_path / "q.jsonl")  # other order
    a, b = read_samples(tmp_path / "ref.jsonl"), read_samples(tmp_path / "q.jsonl")
    assert (a.format, b.format) == ("openai", "vllm")
    pairing = pair_samples(a, b)
    assert pairing.by == "question" and len(pairing.pairs) == N  # ids only on one side: by question hash
    assert all(x.question == y.question for x, y in pairing.pairs)
    assert all(r.margins and len(r.margins) == len(r.token_ends) for r in b.rows)
    s = run_from_samples(DiagnoseConfig(reference=None, reference_samples=str(tmp_path / "ref.jsonl"), benchmark=None,
                                    quantized_samples=str(tmp_path / "q.jsonl"), out=str(tmp_path / "run"),
                                    limit=None, progress=False))  # fmt: skip
    assert s["accuracy"] == {"reference": _acc(g["reference"]), "quantized": _acc(g["quantized"])}
    assert s["confirmation"]["status"].startswith("not run") and s["margins"]["n"] > 0


def test_mapped_jsonl_of_our_generation_rows_through_the_cli(own, tmp_path):
    """Our generations/*.jsonl rows joined with their problems under other field names; no margins."""
    for tag in ("reference", "quantized"):
        with (tmp_path / f"{tag}.jsonl").open("w") as f:
            for p, g in zip(own["problems"], own["gens"][tag]):
                f.write(json.dumps({"uid": p.id, "item": {"problem": p.question, "gold": p.answer},
                                    "out": g.text}) + "\n")  # fmt: skip
    fields = "id=uid,question=item.problem,answer=item.gold,text=out"
    r = _cli("diagnose", "--reference-samples", str(tmp_path / "reference.jsonl"), "--quantized-samples",
             str(tmp_path / "quantized.jsonl"), "--samples-fields", fields, "--out", str(tmp_path / "run"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["samples"]["format"] == {"reference": "jsonl", "quantized": "jsonl"}
    assert s["accuracy"] == {"reference": _acc(own["gens"]["reference"]), "quantized": _acc(own["gens"]["quantized"])}
    assert s["margins"]["status"].startswith("unavailable") and s["margins"]["n"] == 0
    assert "not run" in s["confirmation"]["status"] and "not run" in r.stdout


@pytest.mark.slow
def test_repair_from_a_samples_run(own, chat_run, tmp_path):
    d, s = chat_run
    r = _cli("repair", "--from", str(d / "run"), "--out", str(tmp_path / "rep"), "--quantized",
             own["quantized_path"], "--repair-limit", "32", "--max-examples", "4", "--epochs", "1")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    rs = json.loads((tmp_path / "rep" / "repair_summary.json").read_text())
    assert rs["n"] == N and rs["accuracy"]["quantized"] == s["accuracy"]["quantized"]
    assert len((tmp_path / "rep" / "generations" / "repaired.jsonl").read_text().splitlines()) == N


# ---------------------------------------------------------------------------------- bad input


def _lmeval_row(doc_id: int, text: str = "Step 1: 2 + 2 = 4.\nThe answer is: 4\n", **kw) -> dict:
    q = f"What is 2 + {doc_id}?"
    row = {"doc_id": doc_id, "doc": {"question": q, "answer": "4"}, "target": "4",
           "arguments": {"gen_args_0": {"arg_0": f"Question: {q}\n", "arg_1": {"until": ["\n\n"]}}},
           "resps": [[text]], "filtered_resps": ["4"], "filter": "answer-line", "metrics": ["exact_match"],
           "exact_match": 1.0}  # fmt: skip
    row.update(kw)
    return row


def _write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _diag_cli(a: Path, b: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return _cli("diagnose", "--reference-samples", str(a), "--quantized-samples", str(b), "--out",
                str(tmp_path / "run"))  # fmt: skip


TS = "2026-01-02T03-04-05.123456"


@pytest.mark.parametrize(
    "ref_rows, q_name, q_rows, needle",
    [
        ([_lmeval_row(0), _lmeval_row(1)], f"samples_other_{TS}.jsonl", [_lmeval_row(0)], "task 'other'"),
        ([_lmeval_row(0), _lmeval_row(1)], f"samples_t_{TS}.jsonl", [_lmeval_row(5), _lmeval_row(6)], "no problem"),
        ([_lmeval_row(0)], f"samples_t_{TS}.jsonl", [_lmeval_row(0), "{not json"], ":2: malformed JSON"),
        ([_lmeval_row(0)], f"samples_t_{TS}.jsonl", [_lmeval_row(0), _lmeval_row(1, resps="x")], ":2: 'resps' is str"),
    ],
    ids=["two-tasks", "no-overlap", "malformed-line", "resps-not-a-list"],
)
def test_bad_samples_are_one_line_and_exit_2(tmp_path, ref_rows, q_name, q_rows, needle):
    a = _write(tmp_path / f"samples_t_{TS}.jsonl", ref_rows)
    (tmp_path / "q").mkdir()
    b = _write(tmp_path / "q" / q_name, q_rows)
    r = _diag_cli(a, b, tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    err = r.stderr.strip()
    assert needle in err and str(b) in " ".join(err.split()) and "Traceback" not in err


def test_lmeval_filters_merge_and_duplicates_are_counted(tmp_path):
    rows = [_lmeval_row(0), _lmeval_row(1), _lmeval_row(0, filter="strict", exact_match=0.0), _lmeval_row(1)]
    s = read_samples(_write(tmp_path / f"samples_t_{TS}.jsonl", rows))
    assert [r.id for r in s.rows] == ["0", "1"] and s.rows[0].scores == {
        "exact_match,answer-line": 1.0, "exact_match,strict": 0.0}  # fmt: skip
    assert len(s.duplicates) == 1 and s.duplicates[0][1:] == (4, 2)
    p = pair_samples(s, read_samples(_write(tmp_path / f"samples_t_{TS}.x.jsonl", [_lmeval_row(0)]), "lm-eval"))
    assert p.unmatched == {"reference": 1, "quantized": 0} and p.duplicates["reference"] == 1


def test_reading_is_streamed_and_stops_at_the_bad_line():
    """An endless stream: reading must stop with the error at line 3 (a whole-file read never ends)."""
    good = (json.dumps(_lmeval_row(0)) + "\n").encode()
    lines = itertools.chain([good, good.replace(b'"doc_id": 0', b'"doc_id": 1'), b"{oops\n"], itertools.repeat(good))
    with pytest.raises(UserError, match=r"big\.jsonl:3: malformed JSON"):
        read_samples(Path("big.jsonl"), "lm-eval", lines=lines)


def test_a_large_file_is_not_held_in_memory(tmp_path):
    """20 rows of 1 MB prompts (lm-eval few-shot contexts): memory stays far below the file's size."""
    path = tmp_path / f"samples_t_{TS}.jsonl"
    with path.open("w") as f:
        for i in range(20):
            row = _lmeval_row(i)
            row["arguments"]["gen_args_0"]["arg_0"] = "Question: " + "x" * 1_000_000 + "\n"
            f.write(json.dumps(row) + "\n")
    size = path.stat().st_size
    tracemalloc.start()
    s = read_samples(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(s.rows) == 20 and size > 20_000_000
    assert peak < size / 4, (peak, size)
