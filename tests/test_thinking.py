"""Reasoning models: a `<think>` trace before the response (segmentation, generation, locate, stats)."""

from __future__ import annotations

import pytest

from silverbullet.attribution.locate import locate
from silverbullet.generation.base import GenerationConfig
from silverbullet.generation.hf import HFGenerator, answer_line_end, cut_after_answer, row_stop
from silverbullet.generation.openai_api import with_reasoning
from silverbullet.measure import measure
from silverbullet.prompting import extract_answer
from silverbullet.prompting.formats import compliance, follows_format
from silverbullet.records import Problem
from silverbullet.segmentation import open_thinking_tag, segment, thinking_opener, with_opener

Q = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
TRACE = "Okay. 48 / 2 = 24.\nThe answer is: 73\nHmm, 48 + 24 = 73? No, it is 72. \\boxed{73}\n"
RESPONSE = "In May: $48 / 2 = 24$.\n\nAltogether: $48 + 24 = 72$.\n\nThe final answer is $\\boxed{72}$."


def test_steps_and_answer_come_from_the_response_not_the_trace():
    text = f"<think>\n{TRACE}</think>\n\n{RESPONSE}"
    s = segment(text)
    assert s.steps == ("In May: $48 / 2 = 24$.", "Altogether: $48 + 24 = 72$.")
    assert s.answer == "72"  # not the trace's answer line (73) nor its \boxed{73}
    assert text[s.thinking_span[0] : s.thinking_span[1]] == "\n" + TRACE
    assert not s.thinking_unfinished
    assert all(a >= text.index("</think>") for a, _ in s.spans)  # spans index the whole text
    # a bare closing tag: the template opened the trace in the prompt
    bare = f"{TRACE}</think>\n\n{RESPONSE}"
    assert segment(bare).steps == s.steps and segment(bare).thinking_span == (0, len(TRACE))
    # Magistral's tags
    assert segment(f"[THINK]{TRACE}[/THINK]{RESPONSE}").answer == "72"


def test_an_unfinished_trace_has_no_steps_and_no_answer():
    s = segment(f"<think>\n{TRACE}")
    assert (s.steps, s.answer, s.has_answer_line, s.thinking_unfinished) == ((), None, False, True)
    assert extract_answer(f"<think>\n{TRACE}") is None  # graded wrong, as a grader of the response would
    # without a tag it is an ordinary solution (nothing says it is a trace)
    assert segment(TRACE).answer == "73" and segment(TRACE).thinking_span is None


def test_prompt_openers_move_to_the_text():
    r1 = "<|User|>q<|Assistant|><think>\n"
    assert thinking_opener(r1) == "<think>\n" and open_thinking_tag(r1) == "<think>"
    closed = "<|im_start|>assistant\n<think>\n\n</think>\n\n"  # Qwen3 with thinking off
    assert thinking_opener(closed) == "" and open_thinking_tag(closed) == ""
    assert thinking_opener("Question: x\n") == ""
    # a prompt that ends deep inside a trace (a continuation): answer lines must wait, no opener moves
    deep = r1 + "Let me see, 3 + 4 = 7 and"
    assert thinking_opener(deep) == "" and open_thinking_tag(deep) == "<think>"
    prompt, text, ends = with_opener(r1, "abc</think>\nx", [1, 2, 3])
    assert prompt + text == r1 + "abc</think>\nx" and text.startswith("<think>\n")
    assert ends == [9, 10, 11]  # still where each token ends in `text`
    assert with_opener(None, "t", None) == (None, "t", None)
    assert with_opener("Question: q\n", "t", [1]) == ("Question: q\n", "t", [1])


def test_answer_line_stop_waits_for_the_trace_to_close():
    inside = "Hmm.\nThe answer is: 5\nno, wait\n"
    assert answer_line_end(inside) is not None  # no trace: the first answer line ends it
    assert answer_line_end(inside, "<think>") is None  # the prompt opened a trace: keep going
    assert answer_line_end("<think>\n" + inside) is None  # the text opened it
    done = inside + "</think>\nStep 1: 3 + 3 = 6.\nThe answer is: 6\nchatter"
    end = answer_line_end(done, "<think>")
    assert done[:end].endswith("</think>\nStep 1: 3 + 3 = 6.\nThe answer is: 6\n")
    assert cut_after_answer(done, "<think>") == done[:end]


def test_locate_checks_the_response_only():
    text = f"<think>\n{TRACE}</think>\n\n{RESPONSE}"
    a = locate(Q, text, None, "72")
    assert a.first_faulty_step is None, a.evidence  # the trace's corrected slip is not a fault
    wrong = text.replace("= 72$", "= 73$").replace("{72}", "{73}")
    a = locate(Q, wrong, None, "72")
    assert (a.first_faulty_step, a.error_type) == (1, "execution")
    a = locate(Q, f"<think>\n{TRACE}", None, "72")
    assert (a.first_faulty_step, a.error_type, a.evidence["check"]) == (None, "reasoning", "unfinished_thinking")
    # the trace's own reading: its slip corrected, its answers all 73 (trace.py; tests/test_trace.py)
    assert a.evidence["trace"] == {"lines": 3, "corrected": 1, "answer": "73", "right_answer_line": None}


def test_format_and_thinking_stats():
    step = "Step 1: 3 + 3 = 6.\nThe answer is: 6\n"
    assert follows_format(f"<think>\nfree thoughts\n</think>\n{step}") == (True, True)
    assert follows_format("<think>\nStep 1: 1 + 1 = 2.\nThe answer is: 2\n") == (False, False)
    rows = [
        {"text": f"<think>\n1234567</think>\n{step}", "n_tokens": 40, "token_ends": list(range(1, 41))},
        {"text": "<think>\n123", "n_tokens": 12, "token_ends": list(range(1, 13))},
        {"text": step, "n_tokens": 20},
    ]
    c = compliance(rows, max_new_tokens=12)
    assert c["thinking"] == {"share": 0.6667, "unfinished": 1, "mean_chars": 6.0, "mean_tokens": 13.0}
    assert c["truncated"] == 1 and c["answer_stated_share"] == 0.6667
    assert "thinking" not in compliance(rows[2:], 12)  # no traces: the summary keeps its old keys


def test_cells_for_people():
    from silverbullet.cli import _thinking_cell

    assert _thinking_cell({"thinking": {"mean_tokens": 1234.4, "mean_chars": 5000, "unfinished": 3}}) == "1,234 tok/3"
    assert _thinking_cell({"thinking": {"mean_tokens": None, "mean_chars": 5000.0, "unfinished": 0}}) == "5,000 chars/0"
    assert _thinking_cell({}) == "-"


def test_a_reasoning_servers_trace_is_put_back():
    msg = {"content": "Step 1: 3 + 3 = 6.\nThe answer is: 6", "reasoning_content": "hmm 3+3"}
    assert segment(with_reasoning(msg, msg["content"])).answer == "6"
    assert segment(with_reasoning(msg, msg["content"])).thinking_span is not None
    unfinished = with_reasoning({"content": None, "reasoning": "still going"}, "")
    assert segment(unfinished).thinking_unfinished
    assert with_reasoning({"content": "x"}, "x") == "x"


# -- a real model: a memorizer whose prompt opens the trace, and whose trace has an answer line --

THINK_PROMPT = "Question: think 6\n<think>\n"
THINK_COMPLETION = "The answer is: 5\nNo: 3 + 3 = 6.\n</think>\nStep 1: 3 + 3 = 6.\nThe answer is: 6\nchatter xx"


@pytest.fixture(scope="module")
def thinker(tmp_path_factory):
    from tests.conftest import train_memorizer

    d = tmp_path_factory.mktemp("thinker")
    train_memorizer(d, [THINK_PROMPT + THINK_COMPLETION])
    return d


def test_generation_goes_on_through_the_trace_and_the_record_carries_the_opener(thinker):
    g = HFGenerator(thinker, tag="think", device="cpu")
    cfg = GenerationConfig(max_new_tokens=90, margins=True, batch_size=2)
    out = g.generate([THINK_PROMPT], cfg)[0]
    assert out.text == THINK_COMPLETION[: THINK_COMPLETION.index("chatter")]  # cut after the response's line
    [gen] = measure(g, [Problem("p", "think 6", "6")], cfg, render=lambda q: THINK_PROMPT)
    assert gen.prompt + gen.text == THINK_PROMPT + out.text
    assert gen.text.startswith("<think>\n") and gen.answer == "6" and gen.correct
    assert gen.token_ends[-1] == len(gen.text)
    # the static decoder's stopping rule, per row
    tok = g.tokenizer
    ids = tok(THINK_COMPLETION, add_special_tokens=False)["input_ids"]
    stop = row_stop(tok, {tok.eos_token_id}, g._newline_ids(), ["<think>", ""])
    assert tok.decode(ids[: stop(ids, 0, 0)]) == out.text
    assert tok.decode(ids[: stop(ids, 0, 1)]) == "The answer is: 5\n"  # a row without a trace stops early


def test_a_reasoning_judges_verdict_is_read_after_its_trace():
    from silverbullet.attribution.critic import parse_verdict

    assert parse_verdict("<think>\nmaybe \\boxed{0}? no.\n</think>\nStep 2 is wrong. \\boxed{1}", 3).step == 1
    assert parse_verdict("<think>\nmaybe \\boxed{0}", 3).status == "unparsed"  # never closed: no verdict
    assert parse_verdict("plain \\boxed{2}", 3).step == 2


def test_lm_eval_samples_of_a_reasoning_model(tmp_path):
    """lm-eval rows whose prompt opened the trace (R1 template): a quantized trace that never closed is
    graded wrong even though it wrote the right number in an answer line, and the run says so."""
    import json

    from conftest import run_main

    def row(i: int, text: str) -> dict:
        q = f"What is 2 + {i}?"
        prompt = f"<|User|>{q}<|Assistant|><think>\n"
        return {"doc_id": i, "doc": {"question": q, "answer": str(2 + i)}, "target": str(2 + i),
                "arguments": {"gen_args_0": {"arg_0": prompt, "arg_1": {"until": []}}},
                "resps": [[text]], "filtered_resps": [text], "filter": "none", "metrics": ["exact_match"],
                "exact_match": 1.0}  # fmt: skip

    def closed(i: int) -> str:
        return f"So 2 + {i}.\nThe answer is: 99\n</think>\nStep 1: 2 + {i} = {2 + i}.\nThe answer is: {2 + i}\n"

    unfinished = "Let me think. 2 + 1 = 3.\nThe answer is: 3\nBut wait, let me check again, 2 + 1"
    ts = "2026-01-02T03-04-05.123456"
    (tmp_path / "r").mkdir()
    (tmp_path / "q").mkdir()
    ref = tmp_path / "r" / f"samples_t_{ts}.jsonl"
    quant = tmp_path / "q" / f"samples_t_{ts}.jsonl"
    ref.write_text("".join(json.dumps(row(i, closed(i))) + "\n" for i in range(3)))
    quant.write_text("".join(json.dumps(row(i, closed(i) if i != 1 else unfinished)) + "\n" for i in range(3)))
    code, out, err = run_main("diagnose", "--reference-samples", ref, "--quantized-samples", quant,
                              "--out", tmp_path / "run", "--no-confirm")  # fmt: skip
    assert code in (0, None), err
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert s["accuracy"] == {"reference": 1.0, "quantized": 0.6667}
    assert s["format"]["quantized"]["thinking"]["unfinished"] == 1
    assert s["format"]["reference"]["thinking"]["unfinished"] == 0
    assert "thinking: length/unfinished" in out
    gens = [json.loads(line) for line in (tmp_path / "run" / "generations" / "quantized.jsonl").open()]
    assert all(g["text"].startswith("<think>\n") for g in gens)  # the prompt's opener moved to the text
    att = [json.loads(line) for line in (tmp_path / "run" / "attribution.jsonl").open()]
    [wrong] = [a for a in att if a["model"] == "quantized"]
    assert wrong["evidence"]["check"] == "unfinished_thinking" and wrong["flip"]
    # the right number was in the trace's answer line: it reasoned, and did not finish
    assert wrong["evidence"]["rule"] == "answered_in_trace" and wrong["evidence"]["trace"]["right_answer_line"] == 1
    assert s["trace_faults"]["unfinished_answered"] == 1 and "1 had stated the right answer" in " ".join(out.split())
    from silverbullet.report import write_report

    md = next(p for p in write_report(tmp_path / "run") if p.suffix == ".md").read_text()
    assert "reasoning traces (quantized): mean" in md and "1 never close (1 had stated the right answer" in md


def test_the_thinking_reference_models_training_text():
    """What the thinking model is taught: a draft with an answer line inside the trace, closed, then a
    response the segmenter reads as the solution (and the locator finds right)."""
    from silverbullet.benchmarks import synthetic_task as task
    from silverbullet.reference.thinking import THINK_TEMPLATE, target_for, trace_for

    for p in task.generate("train", 30, seed=7):
        trace = trace_for(p)
        assert trace.splitlines()[-2] == f"The answer is: {p.answer}"
        for mode in ("steps", "free"):
            text = "<think>\n" + target_for(p, mode)
            s = segment(text)
            assert s.answer == str(p.answer) and not s.thinking_unfinished
            assert len(s.steps) == p.n_steps if mode == "steps" else s.steps  # not the draft's steps as well
            a = locate(p.question, text, None, str(p.answer))
            assert a.first_faulty_step is None, (text, a.evidence)
            end = answer_line_end(target_for(p, mode) + "\n", "<think>")  # the stop waits for the close
            assert (end is None and mode == "free") or end > len(trace)
    assert THINK_TEMPLATE.endswith("{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}")


def test_a_prompt_that_opens_a_trace_gets_a_reasoning_budget():
    from silverbullet.benchmarks import THINKING_BUDGET_FACTOR, default_max_new_tokens
    from silverbullet.diagnose import budget_for

    assert budget_for("gsm8k", lambda q: f"<|User|>{q}<|Assistant|><think>\n") == 512 * THINKING_BUDGET_FACTOR
    assert budget_for("gsm8k", lambda q: f"Question: {q}\n") == 512 == default_max_new_tokens("gsm8k")


QWEN3_LIKE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if '</think>' in m.content %}{{ m.content.split('</think>')[-1] }}{% else %}{{ m.content }}{% endif %}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@pytest.mark.parametrize(
    "template, thinks",
    [
        (QWEN3_LIKE, True),  # the model opens its own trace: the prompt shows nothing
        (
            QWEN3_LIKE.replace("{% if enable_thinking is defined and enable_thinking is false %}", "{% if true %}"),
            False,
        ),  # thinking switched off: the prompt pre-fills an empty trace
        ("{% for m in messages %}{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}A: {% endif %}", False),
    ],
)
def test_a_template_whose_model_opens_its_own_trace_gets_the_budget_too(template, thinks):
    from transformers import AutoTokenizer

    from silverbullet.benchmarks import THINKING_BUDGET_FACTOR
    from silverbullet.diagnose import budget_for
    from silverbullet.prompting.formats import PromptRenderer

    tok = AutoTokenizer.from_pretrained("data/reference-chat-model")
    tok.chat_template = template
    render = PromptRenderer("chat", chat_template=template, tokenizer=tok)
    assert budget_for("gsm8k", render) == 512 * (THINKING_BUDGET_FACTOR if thinks else 1)


def test_the_results_api_has_the_trace_columns():
    from silverbullet.results import format_compliance

    assert format_compliance("<think>\nab")["thinking_chars"] == 3
    assert format_compliance("<think>\nab")["thinking_unfinished"] is True
    assert format_compliance("Step 1: 1 + 1 = 2.\nThe answer is: 2")["thinking_chars"] is None


def test_eval_thinking_on_a_model_without_a_trace_template_is_one_line():
    from conftest import run_main

    code, _, err = run_main("reference", "eval-thinking", "--model", "data/reference-chat-model", "--n", "1")
    assert code == 2 and "does not open a <think> trace" in err and "Traceback" not in err


def test_a_flip_whose_trace_never_closed_is_still_taught_by_its_whole_solution(tmp_path):
    """No first-fault pair exists where the quantized trace never closed (no step to pair at), but
    the whole-solution SFT modes still take the problem: before, such flips gave no row at all."""
    from silverbullet.repair.dataset import candidates, sft_rows, unlocated_flips
    from silverbullet.run.jsonl import write_rows

    prompt = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    ref_text = f"<think>\n{TRACE}</think>\n\nStep 1: 48 / 2 = 24\nStep 2: 48 + 24 = 72\nThe answer is: 72"
    problems = [{"id": f"p{i}", "question": f"{Q} ({i})", "answer": "72"} for i in range(3)]
    write_rows(tmp_path / "problems.jsonl", problems)
    (tmp_path / "generations").mkdir()
    write_rows(
        tmp_path / "generations" / "reference.jsonl",
        [{"problem_id": p["id"], "prompt": prompt, "text": ref_text, "correct": True} for p in problems],
    )
    write_rows(tmp_path / "generations" / "quantized.jsonl",
               [{"problem_id": p["id"], "prompt": prompt, "text": "<think>\n48 / 2 = 24. So", "correct": False}
                for p in problems])  # fmt: skip
    att = [{"problem_id": p["id"], "question": p["question"], "model": "quantized", "flip": i < 2,
            "first_faulty_step": None, "error_type": "reasoning", "evidence": {"check": "unfinished_thinking"}}
           for i, p in enumerate(problems)]  # fmt: skip
    write_rows(tmp_path / "attribution.jsonl", att)

    assert candidates(tmp_path) == []  # no pair: there is no step
    assert unlocated_flips(tmp_path) == {"p0", "p1"}  # p2 did not flip
    rows = sft_rows("flipped-full", [], tmp_path, 10)
    assert sorted(r["problem_id"] for r in rows) == ["p0", "p1"]
    assert all(r["completion"] == ref_text and r["prompt"] == prompt for r in rows)
    assert sft_rows("step", [], tmp_path, 10) == []  # the step set needs a step


def test_the_repair_summary_says_whether_traces_close_again(capsys):
    """repair_summary.json `format` has each model's trace figures; the repair table adds one line."""
    from silverbullet.cli import print_repair
    from silverbullet.records import Generation
    from silverbullet.repair.pipeline import repair_format

    closed = f"<think>\n{TRACE}</think>\n\n{RESPONSE}"
    problems = [Problem(id=f"p{i}", question=Q, answer="72") for i in range(4)]
    gens = {
        "reference": {p.id: {"text": closed, "n_tokens": 50} for p in problems},
        "quantized": {p.id: {"text": "<think>\n48 / 2 = 24. So" if i < 3 else closed, "n_tokens": 700}
                      for i, p in enumerate(problems)},
    }  # fmt: skip
    repaired = [Generation(p.id, "repaired", closed if i else "<think>\nhm", None, bool(i))
                for i, p in enumerate(problems)]  # fmt: skip
    fmt = repair_format(problems, gens, repaired, 700)
    assert [fmt[m]["thinking"]["unfinished"] for m in ("reference", "quantized", "repaired")] == [0, 3, 1]
    s = {"method": "sft", "examples": 3, "n": 4, "accuracy": {"reference": 1.0, "quantized": 0.25, "repaired": 0.75},
         "recovery": 0.67, "flips_fixed": 2, "flips_introduced": 0, "flips_introduced_rate": 0.0,
         "adapter_bytes": 1e5, "base_bytes": 1e6, "timings": {"train_seconds": 1.0}, "format": fmt}  # fmt: skip
    print_repair(s)
    out = capsys.readouterr().out
    assert "reasoning traces (mean length/unfinished)" in out and "quantized" in out and "chars/3" in out
    print_repair({**s, "format": {m: {k: v for k, v in f.items() if k != "thinking"} for m, f in fmt.items()}})
    assert "reasoning traces" not in capsys.readouterr().out  # a plain model: no such line


def test_first_fault_pairs_inside_an_unclosed_trace(tmp_path):
    """Where a trace never closed, the pair is cut inside it at what locate read there: after the line
    that had stated the right answer (chosen: the reference closes its trace and answers), or before
    the trace's first slip (chosen: the reference from the aligned line). No evidence, no pair."""
    from silverbullet.repair.dataset import candidates, sft_rows
    from silverbullet.run.jsonl import write_rows

    prompt = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
    draft = "Step 1: 48 / 2 = 24\nStep 2: 48 + 24 = 72\nThe answer is: 72"
    ref_text = f"<think>\n{draft}\nLet me write it up.\n</think>\n\n{draft}"
    quant = {
        "answered": f"<think>\n{draft}\nLet m 5 * 5 = 25\nThe answer is: 25",
        "slipped": "<think>\nStep 1: 48 / 2 = 26\nStep 2: 48 + 26 = 74\nThe answer is: 74\nLet",
        "silent": "<think>\nStep 1: half of them\nHmm, so",
    }
    write_rows(tmp_path / "problems.jsonl", [{"id": k, "question": f"{Q} {k}", "answer": "72"} for k in quant])
    (tmp_path / "generations").mkdir()
    write_rows(
        tmp_path / "generations" / "reference.jsonl",
        [{"problem_id": k, "prompt": prompt, "text": ref_text, "answer": "72", "correct": True} for k in quant],
    )
    write_rows(
        tmp_path / "generations" / "quantized.jsonl",
        [{"problem_id": k, "prompt": prompt, "text": t, "correct": False} for k, t in quant.items()],
    )
    from silverbullet.diagnose import attribute
    from silverbullet.records import Generation

    ref_gen = Generation("x", "reference", ref_text, "72", True)
    att = [
        attribute(Problem(id=k, question=f"{Q} {k}", answer="72"), Generation(k, "quantized", t, None, False), ref_gen)
        for k, t in quant.items()
    ]
    write_rows(tmp_path / "attribution.jsonl", att)
    # diagnose puts the frontier on a trace line: measured (margins) and swapped (confirmation) there
    by_id = {r["problem_id"]: r for r in att}
    assert by_id["answered"]["faulty_line"] == "Let m 5 * 5 = 25" and by_id["answered"]["trace_line"] == 3
    assert by_id["answered"]["reference_line"] == "Let me write it up."
    assert by_id["slipped"]["faulty_line"] == "Step 1: 48 / 2 = 26" and by_id["slipped"]["trace_line"] == 0
    assert by_id["slipped"]["reference_line"] == "Step 1: 48 / 2 = 24"
    assert by_id["silent"]["faulty_line"] is None and "trace_line" not in by_id["silent"]

    pairs = {p["problem_id"]: p for p in candidates(tmp_path)}
    assert set(pairs) == {"answered", "slipped"}  # the silent trace shows no fault: no pair
    a = pairs["answered"]
    assert a["prompt"] == prompt + f"<think>\n{draft}\n" and a["trace_line"] == 3 and a["step_index"] is None
    assert a["chosen"] == f"Let me write it up.\n</think>\n\n{draft}"  # close the trace, then answer
    assert a["rejected"] == "Let m 5 * 5 = 25\nThe answer is: 25" and a["error_type"] == "reasoning"
    s = pairs["slipped"]
    assert s["prompt"] == prompt + "<think>\n" and s["trace_line"] == 0 and s["error_type"] == "execution"
    assert s["chosen"] == ref_text.removeprefix("<think>\n") and s["rejected"].startswith("Step 1: 48 / 2 = 26")
    rows = sft_rows("step", list(pairs.values()), tmp_path, 10)
    assert [r["completion"] for r in rows] == [p["chosen"] for p in pairs.values()]
    assert all(r["trace_line"] is not None for r in rows)
