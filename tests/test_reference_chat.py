"""The chat reference model (data/reference-chat-model) and the free-style renderings it was trained on."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_in_process

from silverbullet.benchmarks import synthetic_task as task
from silverbullet.prompting import STEP_PREFIX_RE, parse_solution
from silverbullet.reference.chat import (
    CHAT_TEMPLATE,
    IM_END,
    IM_START,
    STEP_FORMAT_INSTRUCTION,
    answer_of,
    generate_texts,
    has_step_prefix,
    mode_of,
    prompt_for,
    step_compliant,
)
from silverbullet.reference.freestyle import STYLES, latex_expr, render_free, split_step, style_of

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "data" / "reference-chat-model"


def _problems_by_style(split: str, per_style: int, n: int = 400) -> dict[str, list[task.TaskProblem]]:
    out: dict[str, list[task.TaskProblem]] = {s: [] for s in STYLES}
    for p in task.generate(split, n):
        bucket = out[style_of(p.question)]
        if len(bucket) < per_style:
            bucket.append(p)
    return out


# ------------------------------------------------------------------------------ renderings (pure text)


def test_latex_expr():
    assert latex_expr("3 * 45") == "3 \\times 45"
    assert latex_expr("90 / 2") == "\\frac{90}{2}"
    assert latex_expr("80 * 25 / 100") == "80 \\times \\frac{25}{100}"
    assert latex_expr("12 + 5") == "12 + 5"
    assert split_step("Tom has 3 times as many as Ann, so 3 * 45 = 135.") == (
        "Tom has 3 times as many as Ann",
        "3 * 45",
        "135",
    )
    with pytest.raises(ValueError):
        split_step("no computation here")


def test_free_styles_keep_one_computation_per_step_and_a_parseable_answer():
    """Every style: no `Step k:` line, the answer is found, and the equations in the text are the
    canonical steps' equations, in order, each ending in that step's value."""
    seen = set()
    for p in task.generate("train", 300):
        for style in STYLES:
            text = render_free(p, style)
            assert not has_step_prefix(text), (style, text)
            assert answer_of(text) == str(p.answer), (style, text)
            values = [split_step(s)[2] for s in p.steps]
            found = re.findall(r"= (\d+)", text)
            assert found == values, (style, text)
            seen.add((style, "\\frac" in text, "\\times" in text, "\\boxed" in text))
    # the LaTeX styles really use LaTeX, some styles box the answer
    assert any(s[1] for s in seen) and any(s[2] for s in seen) and any(s[3] for s in seen)


def test_style_is_chosen_per_problem_and_varies():
    by_style = _problems_by_style("eval", 1)
    assert all(by_style[s] for s in STYLES)  # every style occurs on the eval split
    p = by_style["display"][0]
    assert render_free(p) == render_free(p, "display")


def test_free_styles_segment_into_the_canonical_steps():
    """Once the free-form segmenter exists (issue 14), each rendering splits into exactly the
    canonical steps, each carrying its value as the last number."""
    seg = pytest.importorskip("silverbullet.segmentation")
    for p in task.generate("eval", 100):
        values = [split_step(s)[2] for s in p.steps]
        for style in STYLES:
            s = seg.segment(render_free(p, style))
            assert [re.findall(r"\d+", x)[-1] for x in s.steps] == values, (style, s.steps)
            assert s.answer == str(p.answer)


def test_training_mix_is_deterministic_and_near_its_weights():
    modes = [mode_of(i, (0.4, 0.4, 0.2)) for i in range(10_000)]
    assert modes == [mode_of(i, (0.4, 0.4, 0.2)) for i in range(10_000)]
    shares = {m: modes.count(m) / len(modes) for m in ("steps", "free", "completion")}
    assert abs(shares["steps"] - 0.4) < 0.01 and abs(shares["free"] - 0.4) < 0.01


# ------------------------------------------------------------------------------ the shipped model


@pytest.fixture(scope="module")
def chat_model():
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(MODEL)
    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    return model, tok


def test_shipped_files_and_size():
    files = {p.name: p.stat().st_size for p in MODEL.iterdir()}
    assert sum(files.values()) <= 30 * 2**20
    conf = json.loads((MODEL / "tokenizer_config.json").read_text())
    assert conf["chat_template"] == CHAT_TEMPLATE
    assert conf["eos_token"] == IM_END
    gen = json.loads((MODEL / "generation_config.json").read_text())
    assert len(gen["eos_token_id"]) == 2  # <|im_end|> and the completion eos <|end|>


def test_chat_template_renders_chatml(chat_model):
    _, tok = chat_model
    msgs = [{"role": "system", "content": STEP_FORMAT_INSTRUCTION}, {"role": "user", "content": "Ann has 3 apples."}]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert text == (
        f"{IM_START}system\n{STEP_FORMAT_INSTRUCTION}{IM_END}\n{IM_START}user\nAnn has 3 apples.{IM_END}\n"
        f"{IM_START}assistant\n"
    )
    assert not tok.apply_chat_template(msgs, tokenize=False).endswith("assistant\n")
    ids = tok(text, add_special_tokens=False).input_ids
    im_start, im_end, end = tok.convert_tokens_to_ids([IM_START, IM_END, "<|end|>"])
    assert ids.count(im_start) == 3 and ids.count(im_end) == 2  # one token each
    gen_eos = chat_model[0].generation_config.eos_token_id
    assert set(gen_eos) == {im_end, end}
    latex = "$\\frac{12}{3} \\times 4 = \\boxed{16}$"
    assert tok.decode(tok(latex, add_special_tokens=False).input_ids) == latex  # LaTeX round-trips


def test_step_mode_follows_the_format(chat_model):
    model, tok = chat_model
    problems = list(task.generate("eval", 3))
    texts = generate_texts(model, tok, [prompt_for(tok, p.question, "steps") for p in problems], "cpu")
    assert all(step_compliant(t) for t in texts), texts
    assert [len(parse_solution(t).steps) for t in texts] == [p.n_steps for p in problems]
    assert sum(answer_of(t) == str(p.answer) for t, p in zip(texts, problems)) >= 2


def test_free_mode_answers_in_its_own_styles(chat_model):
    """No system message: no `Step k:` lines, an answer the parser reads, and different styles on
    problems whose first names pick different styles."""
    model, tok = chat_model
    problems = [ps[0] for ps in _problems_by_style("eval", 1).values()]
    texts = generate_texts(model, tok, [prompt_for(tok, p.question, "free") for p in problems], "cpu")
    for t in texts:
        assert not any(STEP_PREFIX_RE.match(line) for line in t.split("\n")), t
        assert answer_of(t) is not None, t
    assert sum(answer_of(t) == str(p.answer) for t, p in zip(texts, problems)) >= 4
    assert any("\\boxed{" in t for t in texts) and any("\\times" in t or "\\frac" in t for t in texts)
    assert any(t.lstrip().startswith(("1.", "-")) or "\n1. " in t for t in texts)  # a markdown list
    assert len({t.split(" ", 1)[0] for t in texts}) >= 3  # they do not all open alike


def test_completion_mode_still_works(chat_model):
    model, tok = chat_model
    problems = list(task.generate("eval", 3, start=10))
    texts = generate_texts(model, tok, [prompt_for(tok, p.question, "completion") for p in problems], "cpu")
    assert all(step_compliant(t) for t in texts), texts


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "silverbullet.cli", "reference", *args], capture_output=True, text=True, cwd=ROOT
        )

    # in-process through main() (the model's tokenizer is read: a subprocess spends ~4 s importing torch)
    code, stderr = cli_in_process("reference", "eval-chat", "--model", "data/reference-model", cwd=ROOT)
    assert code == 2 and "no chat template" in stderr
    r = run("train-chat", "--mix", "1,2", "--out", str(tmp_path / "m"))
    assert r.returncode == 2 and "--mix" in r.stderr


def test_the_model_s_own_free_style_steps_line_up_with_the_canonical_steps(chat_model):
    """Issue 14's bar, on the shipped model's own free-style solutions (not the training renderings):
    of the solved problems, >= 90% split into the canonical number of steps, each carrying its value."""
    from silverbullet.segmentation import segment

    model, tok = chat_model
    problems = [p for ps in _problems_by_style("eval", 6).values() for p in ps]  # 6 of each of the 5 styles
    texts = generate_texts(model, tok, [prompt_for(tok, p.question, "free") for p in problems], "cpu")
    solved = [(p, t) for p, t in zip(problems, texts) if answer_of(t) == str(p.answer)]
    assert len(solved) >= 27
    lined_up = 0
    for p, t in solved:
        values = [split_step(s)[2] for s in p.steps]
        steps = segment(t).steps
        lined_up += len(steps) == len(values) and all(v in re.findall(r"\d+", s) for v, s in zip(values, steps))
    assert lined_up / len(solved) >= 0.9, f"{lined_up} of {len(solved)}"


def test_a_saved_tokenizer_carries_no_padding(tmp_path):
    """Batched generation turns left padding on at run time; saving after it (the recipes save after
    their final eval) must not bake it into tokenizer.json, or every later encoding pads."""
    from transformers import AutoTokenizer

    from silverbullet.reference.chat import save_tokenizer

    tok = AutoTokenizer.from_pretrained(str(MODEL))
    tok.backend_tokenizer.enable_padding(direction="left", pad_id=0, pad_token=tok.convert_ids_to_tokens(0))
    save_tokenizer(tok, tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text())["padding"] is None
    short, long = AutoTokenizer.from_pretrained(str(tmp_path))(["a", "a b c d"])["input_ids"]
    assert len(short) < len(long)  # unpadded
