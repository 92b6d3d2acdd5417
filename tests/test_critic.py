"""`locate --judge`: the critic prompt, the strict verdict parser, how a verdict folds into a row, and
the plumbing against a local OpenAI-compatible server (a stdlib stand-in here; vLLM's own server in
tests/test_vllm.py). These test the plumbing and the parsing, not how good any judge is."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from silverbullet.attribution.batch import locate_file
from silverbullet.attribution.critic import apply_verdict, critic_prompt, make_critic, parse_verdict
from silverbullet.errors import UserError
from silverbullet.generation.openai_api import base_url

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "Ann has 24 marbles. Tom has 3 times as many. Tom gives 15 away. How many does Tom have?"
# a semantic first error (step 0 adds where it should multiply) with right arithmetic everywhere
SEMANTIC = "Tom has 3 + 24 = 27.\nHe keeps 27 - 15 = 12.\nThe answer is: 12"
# an arithmetic slip in step 1
SLIP = "Tom has 3 * 24 = 72.\nHe keeps 72 - 15 = 59.\nThe answer is: 59"
CLEAN = "Tom has 3 * 24 = 72.\nHe keeps 72 - 15 = 57.\nThe answer is: 57"


@pytest.mark.parametrize(
    "reply, status, step",
    [
        ("Step 0 adds instead of multiplying. \\boxed{0}", "error", 0),
        ("first \\boxed{1} then on reflection \\boxed{ 2 }", "error", 2),
        ("All steps hold. \\boxed{-1}", "correct", None),
        ("\\boxed{7}", "out_of_range", None),
        ("\\boxed{x+1}", "unparsed", None),
        ("The earliest error is step 1.", "unparsed", None),
        ("\\boxed{1.5}", "unparsed", None),
        ("\\boxed{\\frac{1}{2}}", "unparsed", None),
    ],
)
def test_only_a_final_boxed_integer_counts(reply: str, status: str, step: int | None) -> None:
    v = parse_verdict(reply, n_steps=3)
    assert (v.status, v.step) == (status, step)


def test_prompt_indexes_steps_as_locate_counts() -> None:
    p = critic_prompt(QUESTION, ["Tom has 3 + 24 = 27.", "He keeps 27 - 15 = 12."], "12")
    assert "[0] Tom has 3 + 24 = 27." in p and "[1] He keeps 27 - 15 = 12." in p
    assert QUESTION in p and "\\boxed{-1}" in p and "[2]" not in p


def _row(step: int | None) -> dict:
    return {
        "first_faulty_step": step,
        "error_type": "execution" if step is not None else None,
        "evidence": {"check": "equation"} if step is not None else {},
        "fault_in_answer_line": False,
    }


def test_rules_combine_checker_and_judge() -> None:
    v = parse_verdict("\\boxed{0}", 3)
    r = _row(1)
    apply_verdict(r, v, "earlier")
    assert (r["first_faulty_step"], r["checker_step"], r["judge_step"]) == (0, 1, 0)
    assert r["error_type"] is None and r["evidence"] == {"check": "judge", "checker_step": 1}
    r = _row(1)
    apply_verdict(r, v, "fallback")  # the checker has a step: it stands, with its type
    assert (r["first_faulty_step"], r["error_type"]) == (1, "execution")
    r = _row(None)
    apply_verdict(r, v, "fallback")
    assert r["first_faulty_step"] == 0
    r = _row(1)
    apply_verdict(r, parse_verdict("\\boxed{-1}", 3), "judge")
    assert r["first_faulty_step"] is None and r["checker_step"] == 1 and r["evidence"] == {}
    r = _row(1)
    apply_verdict(r, v, "checker")
    assert r["first_faulty_step"] == 1 and r["judge_step"] == 0


@pytest.mark.parametrize(
    "url", ["http://h:8000", "http://h:8000/", "http://h:8000/v1", "http://h:8000/v1/chat/completions"]
)
def test_endpoint_url_forms(url: str) -> None:
    assert base_url(url) == "http://h:8000/v1"


# ------------------------------------------------------------------ a stand-in OpenAI-compatible server


class _Judge(BaseHTTPRequestHandler):
    """Names the first step holding `3 + 24` or `= 59` (what a good critic would say), else -1."""

    requests: list[dict] = []
    fail_with: int | None = None

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"object": "list", "data": [{"id": "critic-7b", "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        if type(self).fail_with:
            self._send(type(self).fail_with, {"error": {"message": "model overloaded"}})
            return
        prompt = body["messages"][-1]["content"]
        k = -1
        for m in re.finditer(r"^\[(\d+)\] (.*)$", prompt, re.MULTILINE):
            if "3 + 24" in m.group(2) or "= 59" in m.group(2):
                k = int(m.group(1))
                break
        text = f"Checking each step in turn.\n\\boxed{{{k}}}"
        self._send(
            200, {"choices": [{"message": {"role": "assistant", "content": text}}], "usage": {"completion_tokens": 9}}
        )


@pytest.fixture()
def server():
    _Judge.requests, _Judge.fail_with = [], None
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()
    httpd.server_close()


def _rows(tmp_path: Path) -> Path:
    src = tmp_path / "sols.jsonl"
    src.write_text("".join(json.dumps({"q": QUESTION, "s": s, "gold": "57"}) + "\n" for s in (SEMANTIC, SLIP, CLEAN)))
    return src


def test_judge_over_http_combines_and_resumes_from_cache(tmp_path: Path, server) -> None:
    url, httpd = server
    src, out, cache = _rows(tmp_path), tmp_path / "att.jsonl", tmp_path / "cache.sqlite"
    s = locate_file(src, out, "q", "s", answer_field="gold", critic=make_critic(url, cache=cache))
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["judge_step"] for r in rows] == [0, 1, None]
    assert [r["judge_status"] for r in rows] == ["error", "error", "correct"]
    assert rows[1]["checker_step"] == 1 and rows[1]["first_faulty_step"] == 1  # both agree: checker's type kept
    assert rows[1]["error_type"] == "execution"
    assert rows[0]["first_faulty_step"] == 0  # the semantic step only the judge names ("earlier")
    assert rows[2]["first_faulty_step"] is None
    assert s["judge"]["error"] == 2 and s["judge"]["correct"] == 1 and s["judge"]["rule"] == "earlier"
    assert len(_Judge.requests) == 3 and _Judge.requests[0]["model"] == "critic-7b"
    assert _Judge.requests[0]["temperature"] == 0.0
    # a rerun with the server gone is answered from the cache: nothing is lost, nothing asked again
    httpd.shutdown()
    out2 = tmp_path / "att2.jsonl"
    locate_file(src, out2, "q", "s", answer_field="gold", critic=make_critic(url, "critic-7b", cache=cache))
    assert out2.read_text() == out.read_text()


def test_server_error_is_one_line(tmp_path: Path, server) -> None:
    url, _ = server
    _Judge.fail_with = 400
    with pytest.raises(UserError, match=r"--judge .*/v1/chat/completions: HTTP 400"):
        locate_file(_rows(tmp_path), tmp_path / "o.jsonl", "q", "s", critic=make_critic(url, "m", cache=tmp_path / "c"))


def _cli(*args: str, cache: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SILVERBULLET_CACHE": str(cache), **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "silverbullet.cli", "locate", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )


def test_cli_unreachable_judge_and_bad_rule_exit_2(tmp_path: Path) -> None:
    src = _rows(tmp_path)
    base = ["--input", str(src), "--question-field", "q", "--candidate-field", "s", "--out", str(tmp_path / "o.jsonl")]
    r = _cli(*base, "--judge", "http://127.0.0.1:9", "--judge-model", "m", cache=tmp_path / "c")
    assert r.returncode == 2 and "cannot reach the server" in r.stderr and "Traceback" not in r.stderr + r.stdout
    r = _cli(*base, "--judge", "http://127.0.0.1:9", "--judge-rule", "vote", cache=tmp_path / "c")
    assert r.returncode == 2 and "--judge-rule 'vote'" in r.stderr
    r = _cli(*base, "--judge-model", "m", cache=tmp_path / "c")
    assert r.returncode == 2 and "--judge-model goes with --judge" in r.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_local_weights_judge_end_to_end(tmp_path: Path) -> None:
    """The shipped chat reference model as a local judge, through its chat template: the plumbing
    (prompt rendered, reply generated, parsed, row written). The model was never trained to critique,
    so its verdicts are expected to be unparsed; no quality is claimed."""
    src = _rows(tmp_path)
    out = tmp_path / "o.jsonl"
    r = _cli(
        "--input",
        str(src),
        "--question-field",
        "q",
        "--candidate-field",
        "s",
        "--answer-field",
        "gold",
        "--out",
        str(out),
        "--judge",
        "data/reference-chat-model",
        "--judge-max-tokens",
        "24",
        "--device",
        "cpu",
        "--json",
        str(tmp_path / "summary.json"),
        cache=tmp_path / "c",
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r_["judge_status"] in ("error", "correct", "unparsed", "out_of_range") for r_ in rows)
    assert all(r_["judge_reply"] for r_ in rows)  # the model did reply
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert sum(summary["judge"][k] for k in ("error", "correct", "unparsed", "out_of_range")) == 3
    assert (tmp_path / "o.jsonl.log").exists()  # library output went to the log, not the terminal


def test_local_judge_from_a_gguf_file(tmp_path: Path) -> None:
    """`--judge X.gguf`: the file is checked and converted once (generation/gguf.py), with the chat
    template it carries, then judged with as local weights are."""
    from gguf_build import build_gguf

    chat = ROOT / "data" / "reference-chat-model"
    template = json.loads((chat / "tokenizer_config.json").read_text())["chat_template"]
    gguf_path = build_gguf(chat, tmp_path / "judge.gguf", chat_template=template)
    src = _rows(tmp_path)
    out = tmp_path / "o.jsonl"
    args = ["--input", str(src), "--question-field", "q", "--candidate-field", "s", "--answer-field", "gold"]
    args += ["--out", str(out), "--judge", str(gguf_path), "--judge-max-tokens", "16", "--device", "cpu"]
    env_models = {"SILVERBULLET_MODELS": str(tmp_path / "models")}
    r = _cli(*args, cache=tmp_path / "c", env=env_models)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r_["judge_reply"] for r_ in rows)
    converted = [p for p in (tmp_path / "models").iterdir() if p.name.startswith("gguf-")]
    assert len(converted) == 1 and (converted[0] / "gguf_source.json").is_file()
    # a truncated file is refused in one line, before anything loads
    bad = tmp_path / "short.gguf"
    bad.write_bytes(gguf_path.read_bytes()[: gguf_path.stat().st_size // 2])
    r = _cli(*args[:-6], "--judge", str(bad), cache=tmp_path / "c", env=env_models)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "short.gguf" in r.stderr


def test_judge_gold_puts_the_reference_solution_in_the_prompt(tmp_path: Path, server) -> None:
    url, _ = server
    gold_text = "Tom has 3 * 24 = 72 marbles.\nHe keeps 72 - 15 = 57.\n#### 57"
    src = tmp_path / "sols.jsonl"
    src.write_text("".join(json.dumps({"q": QUESTION, "s": s, "ref": gold_text}) + "\n" for s in (SEMANTIC, CLEAN)))
    for gold in (False, True):
        _Judge.requests = []
        s = locate_file(src, tmp_path / f"o{gold}.jsonl", "q", "s", reference_field="ref",
                        critic=make_critic(url, "m", cache=tmp_path / f"c{gold}"), judge_gold=gold)  # fmt: skip
        prompts = [r["messages"][-1]["content"] for r in _Judge.requests]
        assert len(prompts) == 2 and all(("He keeps 72 - 15 = 57.\n#### 57" in p) == gold for p in prompts)
        assert all(p.index("Problem:") < p.index("Solution, split into steps") for p in prompts)
        assert s["judge"]["gold"] is gold


def test_reader_through_the_cli_on_the_chat_model(tmp_path: Path) -> None:
    """`locate --reader` with the shipped chat model (its chat template frames the solution as the
    reply): every row gets the reader's step and gap, the summary says what it moved; a rerun is read
    from the cache. The plumbing only: this model was never trained to read other solutions."""
    src = _rows(tmp_path)
    args = ["--input", str(src), "--question-field", "q", "--candidate-field", "s", "--answer-field", "gold"]
    args += ["--reader", "data/reference-chat-model", "--surprise-threshold", "0.5", "--device", "cpu"]
    for run in (1, 2):
        out = tmp_path / f"o{run}.jsonl"
        r = _cli(*args, "--out", str(out), "--json", str(tmp_path / f"s{run}.json"), cache=tmp_path / "c")
        assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (tmp_path / "o1.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all("reader_step" in r_ and "checker_step" in r_ for r_ in rows)
    assert any(r_["reader_step"] is not None for r_ in rows)  # at 0.5 nats a random-ish reader flags something
    summary = json.loads((tmp_path / "s1.json").read_text())
    assert summary["reader"]["threshold"] == 0.5 and summary["reader"]["flagged"] >= 1
    assert (tmp_path / "o2.jsonl").read_text() == (tmp_path / "o1.jsonl").read_text()
    assert list((tmp_path / "reader").glob("*.npz")), "readings were cached beside the generation cache"
    r = _cli(*args, "--out", str(tmp_path / "o3.jsonl"), "--reader-rule", "nope", cache=tmp_path / "c")
    assert r.returncode == 2 and "--reader-rule 'nope'" in r.stderr
