"""Shared fixtures: tiny Llama models + a character-level tokenizer, built once per session.

A character-level tokenizer makes tokenization unique (re-tokenizing a generated text gives the same
ids), so teacher-forced scores can be compared with generation exactly. Weights are random with a
large init scale so greedy decoding has clear winners (no float near-ties between code paths).
"""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]
CHARS = sorted(set(string.printable) - set("\t\r\x0b\x0c"))


# ChatML, as Qwen and many others write it (the test tokenizer's `chat=True` template).
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def run_main(*args) -> tuple[int | None, str, str]:
    """`silverbullet.cli.main()` in-process with these arguments (the real entry point, without a new
    interpreter's start-up); returns (exit code, stdout, stderr)."""
    import contextlib
    import io
    import sys

    from silverbullet.cli import main

    err, out = io.StringIO(), io.StringIO()
    old, code = sys.argv, None
    sys.argv = ["silverbullet", *map(str, args)]
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                main()
            except SystemExit as e:
                code = e.code
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def build_char_tokenizer(out_dir: Path, chat: bool = False):
    """A PreTrainedTokenizerFast with one token per character, <s> prepended, </s> as eos. With `chat`,
    also `<|im_start|>`/`<|im_end|>` special tokens and a ChatML chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + CHARS)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )
    if chat:
        tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
        tok.chat_template = CHATML_TEMPLATE
    tok.save_pretrained(out_dir)
    return tok


def build_tiny_llama(
    out_dir: Path,
    *,
    seed: int = 0,
    vocab_size: int | None = None,
    hidden: int = 64,
    layers: int = 2,
    init: float = 0.3,
    chat: bool = False,
):
    """Save a random LlamaForCausalLM (safetensors) + char tokenizer to out_dir; return (model, tok)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer(out_dir, chat=chat)
    cfg = LlamaConfig(
        vocab_size=vocab_size or len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=init,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(out_dir)
    return model, tok


def train_memorizer(out_dir: Path, texts: list[str], *, steps: int = 300, seed: int = 0):
    """A tiny Llama overfitted on `texts` (each ends with </s> when it contains it), so greedy decoding
    reproduces them: a real model with known output, for stop-at-answer tests."""
    import torch

    model, tok = build_tiny_llama(out_dir, seed=seed, hidden=96, layers=2, init=0.02)
    rows = []
    for t in texts:
        body, eos = (t[: -len("</s>")], True) if t.endswith("</s>") else (t, False)
        ids = tok(body)["input_ids"] + ([tok.eos_token_id] if eos else [])
        rows.append(ids)
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    att = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        labels[r, : len(row)] = torch.tensor(row)
        att[r, : len(row)] = 1
    torch.manual_seed(seed)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.01:
            break
    model.eval()
    model.save_pretrained(out_dir)
    return model, tok


# Two memorized solutions: one ends with eos after the answer line (like the reference model),
# one keeps talking after it (so only the answer-line stopping criterion ends it).
MEMORIZED = {
    "Question: add 2 and 3\n": "Step 1: 2 + 3 = 5.\nThe answer is: 5\n</s>",
    "Question: double 4\n": "Step 1: 4 * 2 = 8.\nThe answer is: 8\nStep 2: and more chatter here\nxx",
}


def cli_in_process(*args, cwd: Path | None = None) -> tuple[int | None, str]:
    """`silverbullet ARGS` through the real entry point, `silverbullet.cli.main()`, in this process (no
    interpreter start and no torch import: seconds less than a subprocess); returns (exit code,
    stderr). As in tests/test_hardening_cli.py, where most bad-input cases run this way."""
    import contextlib
    import io
    import sys

    from silverbullet.cli import main

    err, out = io.StringIO(), io.StringIO()
    old_argv, old_cwd = sys.argv, os.getcwd()
    sys.argv = ["silverbullet", *map(str, args)]
    code = None
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code
    finally:
        sys.argv = old_argv
        os.chdir(old_cwd)
    return code, err.getvalue()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tiny_llama")
    build_tiny_llama(d)
    return d


@pytest.fixture(scope="session")
def memorizer_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("memorizer")
    train_memorizer(d, [p + c for p, c in MEMORIZED.items()])
    return d


# -- `make test-gptq` sets SILVERBULLET_REQUIRE_GPTQ=1: a GPTQModel test that would skip fails instead --
# (the tests skip without gptqmodel; where it is meant to be installed, a broken install must not pass)

REQUIRE_GPTQ = os.environ.get("SILVERBULLET_REQUIRE_GPTQ") == "1"


def pytest_collection_finish(session):
    if REQUIRE_GPTQ and not any(item.get_closest_marker("gptq") for item in session.items):
        pytest.exit("SILVERBULLET_REQUIRE_GPTQ=1, but no test marked gptq was collected", returncode=1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if REQUIRE_GPTQ and rep.skipped and not hasattr(rep, "wasxfail") and item.get_closest_marker("gptq"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else rep.longrepr
        rep.outcome = "failed"
        rep.longrepr = f"SILVERBULLET_REQUIRE_GPTQ=1, but this GPTQModel test skipped: {reason}"
    return rep
