"""Prompt formats (chat template, few-shot, template file), stops at end-of-turn tokens, per-benchmark
lengths, format compliance, and the refusal to pair runs made with different prompts."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import build_char_tokenizer, cli_in_process

from silverbullet.benchmarks import default_max_new_tokens
from silverbullet.errors import UserError
from silverbullet.generation.base import GenerationConfig
from silverbullet.generation.cache import cache_key
from silverbullet.generation.loading import renderer_for_model
from silverbullet.prompting.formats import (
    COMPLETION_ID,
    STEP_FORMAT_INSTRUCTION,
    PromptRenderer,
    PromptSettings,
    compliance,
    fewshot_exemplars,
    follows_format,
    format_drop,
    make_renderer,
    same_prompts_or_refuse,
    step_format_solution,
)

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "data" / "reference-model")
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def chat_tok(tmp_path_factory):
    return build_char_tokenizer(tmp_path_factory.mktemp("chat_tok"), chat=True)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "silverbullet.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env
    )


# ------------------------------------------------------------------------------------------ rendering


def test_chat_renders_the_template_with_the_step_instruction(chat_tok):
    r = make_renderer(PromptSettings(), chat_tok, "synthetic")
    assert r.format == "chat"  # auto: the tokenizer has a chat template
    assert r.render("  What is 2 + 3?\n") == (
        f"<|im_start|>system\n{STEP_FORMAT_INSTRUCTION}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    )
    custom = make_renderer(PromptSettings(format="chat", system_prompt="Be brief."), chat_tok, "synthetic")
    assert custom.render("q").startswith("<|im_start|>system\nBe brief.<|im_end|>")
    free = make_renderer(PromptSettings(format="chat", system_prompt=""), chat_tok, "synthetic")
    assert free.render("q") == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n"  # no system message
    ids = {x.describe()["id"] for x in (r, custom, free, PromptRenderer("completion"))}
    assert len(ids) == 4  # every prompt change is a new identity
    assert make_renderer(PromptSettings(), chat_tok, "synthetic").describe() == r.describe()  # and a stable one


def test_auto_picks_completion_without_a_chat_template():
    r = renderer_for_model(PromptSettings(), MODEL, "synthetic")
    assert r.format == "completion" and r.render("Ann has 3 apples.") == "Question: Ann has 3 apples.\n"
    assert r.describe()["id"] == COMPLETION_ID


def test_template_file_replaces_rendering(tmp_path, chat_tok):
    t = tmp_path / "t.txt"
    t.write_text("Solve: {question}\nUse \\frac{a}{b} if needed.\nStep 1:")
    r = make_renderer(PromptSettings(format="chat", template=str(t)), chat_tok, "synthetic")
    assert r.render("x + 1?") == "Solve: x + 1?\nUse \\frac{a}{b} if needed.\nStep 1:"  # braces kept
    before = PromptSettings(template=str(t)).identity()["prompt_template_sha256"]
    t.write_text("Q: {question}\n")
    assert PromptSettings(template=str(t)).identity()["prompt_template_sha256"] != before


def test_gsm8k_gold_in_the_step_format():
    gold = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 in all.\n#### 72"
    assert step_format_solution(gold, "72") == (
        "Step 1: Natalia sold 48/2 = 24 clips in May.\nStep 2: She sold 48+24 = 72 in all.\nThe answer is: 72\n"
    )


@pytest.mark.skipif(not (DATA / "gsm8k" / "train.jsonl").exists(), reason="shared GSM8K data not present")
def test_fewshot_exemplars_from_the_gsm8k_train_split(monkeypatch):
    monkeypatch.setenv("SILVERBULLET_DATA", str(DATA))
    shots = fewshot_exemplars("gsm8k", 4)
    assert len(shots) == 4 and shots == fewshot_exemplars("gsm8k", 4)  # deterministic
    test_questions = {json.loads(x)["question"].strip() for x in (DATA / "gsm8k/test.jsonl").open()}
    for q, sol in shots:
        assert q not in test_questions
        lines = sol.strip().split("\n")
        assert "<<" not in sol and "####" not in sol
        assert all(ln.startswith(f"Step {i + 1}: ") for i, ln in enumerate(lines[:-1]))
        assert lines[-1].startswith("The answer is: ") and follows_format(sol) == (True, True)
    r = make_renderer(PromptSettings(format="fewshot", fewshot=2), None, "gsm8k")
    p = r.render("How many?")
    assert p.startswith(f"Question: {shots[0][0]}\n{shots[0][1]}\n") and p.endswith("\nQuestion: How many?\n")
    assert p.count("Question: ") == 3


def test_bad_prompt_settings_are_user_errors(tmp_path, chat_tok):
    with pytest.raises(UserError, match="no chat template"):
        renderer_for_model(PromptSettings(format="chat"), MODEL, "synthetic")
    bad = tmp_path / "bad.txt"
    bad.write_text("Question: {q}\n")
    with pytest.raises(UserError, match=r"no \{question\} placeholder"):
        make_renderer(PromptSettings(template=str(bad)), chat_tok, "synthetic")
    with pytest.raises(UserError, match="no train split"):
        fewshot_exemplars(str(tmp_path / "bad.txt"), 2)


@pytest.mark.parametrize(
    "args, needle, as_command",
    [
        (("--prompt-format", "chat"), "has no chat template", False),
        (("--prompt-template", "{tmp}/t.txt"), "{question}", False),
        (("--fewshot", "2", "--benchmark", "svamp"), "no train split", False),
        (("--prompt-format", "banana"), "--prompt-format 'banana' is not known", True),
    ],
)
def test_bad_prompt_flags_exit_2_with_one_line(tmp_path, args, needle, as_command):
    """Through `silverbullet.cli.main()` in-process (the real entry point; about 5 s less a command
    than a new interpreter that imports torch), one case as `python -m silverbullet.cli` in a subprocess."""
    (tmp_path / "t.txt").write_text("no placeholder\n")
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    cmds = [["diagnose", "--quantized", MODEL, "--out", str(tmp_path / "r"), "--limit", "2"]]
    if "chat" in args:
        cmds.append(["evaluate", "--limit", "2"])
    for cmd in cmds:
        if as_command:
            res = _cli(*cmd, *args)
            code, stderr = res.returncode, res.stderr
        else:
            code, stderr = cli_in_process(*cmd, *args, cwd=ROOT)
        assert code == 2, stderr
        assert needle in stderr and len(stderr.strip().splitlines()) == 1, stderr


# ------------------------------------------------------------------------------- stops and lengths


def bigram_chat_model(out_dir: Path, chain: dict[str, str]):
    """A tiny Llama with a ChatML tokenizer whose greedy next token depends only on the current one,
    following `chain` (token -> next token): attention and MLP outputs zeroed, one-hot embeddings,
    and an lm_head that maps each token to its successor. A model with known output, built at once."""
    import torch
    from conftest import build_tiny_llama

    model, tok = build_tiny_llama(out_dir, hidden=128, layers=1, chat=True)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb.zero_()
        emb[:, : emb.shape[0]] = torch.eye(emb.shape[0])
        head = model.lm_head.weight
        head.zero_()
        for cur, nxt in chain.items():
            head[tok.convert_tokens_to_ids(nxt), tok.convert_tokens_to_ids(cur)] = 1.0
    model.save_pretrained(out_dir)
    return model, tok


def test_generation_stops_at_the_end_of_turn_token(tmp_path):
    """A chat model ends its turn with <|im_end|> (not its eos): generation must stop there."""
    from silverbullet.generation.hf import HFGenerator

    chain = {"\n": "o", "o": "k", "k": ".", ".": "<|im_end|>", "<|im_end|>": "z", "z": "z"}
    bigram_chat_model(tmp_path / "m", chain)
    gen = HFGenerator(str(tmp_path / "m"), device="cpu")
    im_end = gen.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert im_end in gen._eos_ids() and gen.tokenizer.eos_token_id in gen._eos_ids()
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    out = gen.generate([prompt], GenerationConfig(max_new_tokens=20))[0]
    assert out.text == "ok." and out.n_tokens == 3
    # Without the end-of-turn stop the same model runs on to the limit (what the stop prevents).
    gen._eos_ids = lambda: [gen.tokenizer.eos_token_id]
    assert gen.generate([prompt], GenerationConfig(max_new_tokens=20))[0].text.startswith("ok.zzzz")


def test_max_new_tokens_per_benchmark():
    assert [default_max_new_tokens(b) for b in ("synthetic", "gsm8k", "svamp", "math", "aime24", "amc23")] == [
        320,
        512,
        512,
        1024,
        2048,
        2048,
    ]


def test_cache_key_holds_the_rendered_prompt(chat_tok):
    cfg = GenerationConfig()
    chat = make_renderer(PromptSettings(), chat_tok, "synthetic").render("q")
    free = make_renderer(PromptSettings(system_prompt=""), chat_tok, "synthetic").render("q")
    keys = {cache_key("fp", p, cfg) for p in (chat, free, PromptRenderer("completion").render("q"))}
    assert len(keys) == 3


# ------------------------------------------------------------------------------------ compliance


def test_compliance_counts_format_and_cuts():
    rows = [
        {"text": "Step 1: 2 + 3 = 5.\nThe answer is: 5\n", "n_tokens": 30},
        {"text": "First, 2 + 3 = 5.\nThe answer is: 5\n", "n_tokens": 30},  # answer line, no Step prefixes
        {"text": "Step 1: 2 + 3 = 5.\nStep 2: and then", "n_tokens": 64},  # cut at the limit
        {"text": "We add them: \\boxed{5}", "n_tokens": 12},  # stopped (eos) without an answer line
    ]
    c = compliance(rows, max_new_tokens=64)
    assert c["n"] == 4 and c["step_prefix_share"] == 0.5 and c["answer_line_share"] == 0.5
    assert c["answer_stated_share"] == 0.75 and c["truncated"] == 1  # the boxed answer is stated


def test_format_drop_only_when_clearly_below_the_reference():
    from silverbullet.diagnose import wilson

    ref = {"n": 200, "step_prefix_share": 0.99, "answer_line_share": 1.0, "truncated": 0}
    lost = {"n": 200, "step_prefix_share": 0.6, "answer_line_share": 0.98, "truncated": 9}
    assert format_drop({"reference": ref, "quantized": lost}, wilson) == [
        "step prefixes: 60.0% quantized vs 99.0% reference"
    ]
    few = {"n": 10, "step_prefix_share": 0.9, "answer_line_share": 1.0, "truncated": 0}
    assert format_drop({"reference": ref, "quantized": few}, wilson) == []  # 1 of 10: within noise


# ------------------------------------------------------------------------- identity and pairing


def test_runs_with_other_prompts_are_refused_as_a_pair(tmp_path):
    chat = {"prompt": {"format": "chat", "id": "abc"}}
    with pytest.raises(UserError, match="different prompts") as e:
        same_prompts_or_refuse(chat, {}, "this run", "baseline b")
    assert "\n" not in str(e.value)
    same_prompts_or_refuse({}, {"prompt": {"format": "completion", "id": COMPLETION_ID}}, "a", "b")  # old runs


def test_check_baseline_refuses_another_prompt(tmp_path):
    """`check --baseline`: two runs made with different prompts are refused (exit 2, one line)."""
    fixtures = ROOT / "tests" / "fixtures" / "runs"
    base, rel = tmp_path / "baseline", tmp_path / "release"
    shutil.copytree(fixtures / "baseline", base)
    shutil.copytree(fixtures / "release", rel)
    ok = _cli("check", rel, "--baseline", base, "--baseline-tolerance", "100")
    assert ok.returncode == 0, ok.stdout + ok.stderr  # older runs: both completion
    s = json.loads((rel / "summary.json").read_text())
    s["prompt"] = {"format": "chat", "id": "0123456789abcdef"}
    (rel / "summary.json").write_text(json.dumps(s))
    res = _cli("check", rel, "--baseline", base, "--baseline-tolerance", "100")
    assert res.returncode == 2 and "different prompts (chat vs completion" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_run_dir_refuses_another_prompt_format(tmp_path):
    from silverbullet.diagnose import DiagnoseConfig, _check_run_dir

    out = tmp_path / "run"
    _check_run_dir(out, DiagnoseConfig(out=str(out), max_new_tokens=320))
    (out / "generations").mkdir()
    (out / "generations" / "reference.jsonl").write_text('{"problem_id": "a"}\n')
    with pytest.raises(UserError, match="prompt_format"):
        _check_run_dir(out, DiagnoseConfig(out=str(out), max_new_tokens=320, prompt_format="fewshot"))
    with pytest.raises(UserError, match="system_prompt"):
        _check_run_dir(out, DiagnoseConfig(out=str(out), max_new_tokens=320, system_prompt=""))
    _check_run_dir(out, DiagnoseConfig(out=str(out), max_new_tokens=320, batch_size=3))  # resumable change


def test_repair_sets_use_the_stored_prompts(tmp_path):
    from silverbullet.repair.dataset import control_set

    run = tmp_path / "run"
    (run / "generations").mkdir(parents=True)
    (run / "problems.jsonl").write_text(json.dumps({"id": "p1", "question": "q one"}) + "\n")
    row = {"problem_id": "p1", "text": "Step 1: 1 + 1 = 2.\nThe answer is: 2\n", "correct": True}
    (run / "generations" / "reference.jsonl").write_text(json.dumps({**row, "prompt": "<chat>q one</chat>"}) + "\n")
    assert control_set(run, 5)[0]["prompt"] == "<chat>q one</chat>"
    (run / "generations" / "reference.jsonl").write_text(json.dumps(row) + "\n")  # a run from before prompts
    assert control_set(run, 5)[0]["prompt"] == "Question: q one\n"


def test_margins_and_confirmation_use_the_stored_prompt():
    from silverbullet.diagnose import DiagnoseConfig
    from silverbullet.frontier import add_margins_and_confirmation
    from silverbullet.generation.base import GenOutput, ScoreOutput
    from silverbullet.records import Generation, Problem

    seen: list[str] = []

    class Fake:
        tag = "fake"
        fingerprint = "f"

        def score(self, prompt, cont):
            seen.append(prompt)
            return ScoreOutput([1], [0.0], [1.0], [1])

        def generate(self, prompts, config=None):
            seen.extend(prompts)
            return [GenOutput(text="The answer is: 5\n", n_tokens=3) for _ in prompts]

    g = Generation("p", "quantized", "Step 1: 2 + 2 = 5.\n", "5", False, prompt="<|im_start|>user\nq<|im_end|>\n")
    row = {
        "problem_id": "p",
        "model": "quantized",
        "faulty_line": "Step 1: 2 + 2 = 5.",
        "frontier_chars": [0, 18],
        "prefix": "",
        "question": "q",
        "reference_line": "Step 1: 2 + 3 = 5.",
        "flip": True,
    }
    problems = {"p": Problem("p", "q", "5")}
    add_margins_and_confirmation([row], problems, {"p": g}, Fake(), Fake(), DiagnoseConfig(max_new_tokens=8))
    # one reference pass on the whole solution (the judge and the margin at the frontier), then confirmation
    assert seen == [g.prompt, g.prompt + "Step 1: 2 + 3 = 5.\n"] and row["confirmed"] is True
    assert row["reference_margin_at_frontier"] == 1.0 and "judge_step" in row


# -------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def tiny_chat_dir(tmp_path_factory) -> Path:
    from conftest import build_tiny_llama

    d = tmp_path_factory.mktemp("tiny_chat")
    build_tiny_llama(d, chat=True)
    return d


@pytest.mark.slow
def test_diagnose_chat_path_end_to_end(tmp_path, tiny_chat_dir):
    """`silverbullet diagnose` on a model with a ChatML template: auto picks chat, every row keeps the
    rendered prompt, the summary has the prompt identity and the format table, and `report` shows it."""
    out = tmp_path / "run"
    m = str(tiny_chat_dir)
    res = _cli(
        "diagnose", "--reference", m, "--quantized", m, "--limit", "3", "--max-new-tokens", "12",
        "--no-cache", "--out", out,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["prompt"]["format"] == "chat" and s["prompt"]["max_new_tokens"] == 12
    assert s["prompt"]["system_prompt"] == STEP_FORMAT_INSTRUCTION
    problems = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    rows = [json.loads(x) for x in (out / "generations" / "reference.jsonl").read_text().splitlines()]
    for p, r in zip(problems, rows):
        assert r["prompt"] == (
            f"<|im_start|>system\n{STEP_FORMAT_INSTRUCTION}<|im_end|>\n"
            f"<|im_start|>user\n{p['question'].strip()}<|im_end|>\n<|im_start|>assistant\n"
        )
        assert r["n_tokens"] <= 12
    cut = sum(r["n_tokens"] >= 12 and "The answer is" not in r["text"] for r in rows)
    assert s["format"]["reference"]["truncated"] == cut and s["format"]["reference"]["n"] == 3
    assert "format: steps/ans/any/cut" in res.stdout and "prompt chat" in res.stdout
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["prompt_format"] == "auto" and cfg["fewshot"] is None
    # the same directory with the free style is another run: refused, one line (in-process: main())
    code, stderr = cli_in_process(
        "diagnose", "--reference", m, "--quantized", m, "--limit", "3", "--max-new-tokens", "12",
        "--system-prompt", "", "--out", out, cwd=ROOT,
    )  # fmt: skip
    assert code == 2 and "system_prompt" in stderr
    rep = _cli("report", out)
    assert rep.returncode == 0, rep.stderr
    md = (out / "report.md").read_text()
    assert "## Format compliance" in md and "Prompt format <code>chat</code>" in md
    assert "format (quantized)" in (out / "report.html").read_text()


@pytest.mark.slow
def test_diagnose_chat_template_on_the_reference_model(tmp_path):
    """The shipped reference model behind a chat template that writes its training format: the chat
    path end to end on a model that solves the problems, so compliance numbers mean something."""
    m = tmp_path / "ref-chat"
    shutil.copytree(MODEL, m)
    tc = json.loads((m / "tokenizer_config.json").read_text())
    tc["chat_template"] = "{% for x in messages %}{% if x['role'] == 'user' %}Question: {{ x['content'] }}\n{% endif %}{% endfor %}"  # noqa: E501
    (m / "tokenizer_config.json").write_text(json.dumps(tc))
    out = tmp_path / "run"
    args = ("--limit", "6", "--no-cache", "--no-confirm", "--out", out)
    res = _cli("diagnose", "--reference", m, "--quantized", m, *args)
    assert res.returncode == 0, res.stderr
    s = json.loads((out / "summary.json").read_text())
    assert s["prompt"]["format"] == "chat" and s["prompt"]["id"] != COMPLETION_ID
    assert s["prompt"]["max_new_tokens"] == 320  # the synthetic benchmark's default
    f = s["format"]["reference"]
    assert f["step_prefix_share"] >= 0.9 and f["answer_line_share"] >= 0.9 and f["truncated"] == 0
    assert s["accuracy"]["reference"] >= 0.75 and s["format_drop"] == []


def test_repair_from_a_run_with_other_prompts_is_refused(tmp_path):
    from silverbullet.repair.pipeline import RepairConfig, _renderer

    run = tmp_path / "eval"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"prompt": {"format": "fewshot", "id": "feedfacefeedface"}}))
    with pytest.raises(UserError, match="different prompts") as e:
        _renderer(RepairConfig(from_run=str(run)), run, MODEL, "synthetic")
    assert f"--from {run}" in str(e.value)
    (run / "summary.json").write_text(json.dumps({"prompt": {"format": "completion", "id": COMPLETION_ID}}))
    assert _renderer(RepairConfig(from_run=str(run)), run, MODEL, "synthetic").format == "completion"
