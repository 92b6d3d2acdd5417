"""The reader (attribution/reader.py): one teacher-forced pass per solution gives each step's surprise
and the hidden state at each step's end, cached. Checked against direct model calls on a tiny model."""

from __future__ import annotations

import numpy as np
import pytest

from silverbullet.attribution.judge import step_gaps
from silverbullet.attribution.reader import (
    GOLD_HEADER,
    Reader,
    Reading,
    reader_context,
    step_end_tokens,
    surprise_verdict,
)
from silverbullet.segmentation import segment

Q = "Ann has 3 apples and buys 4 more. How many apples does she have?"
SOL = "Step 1: 3 + 4 = 7.\nStep 2: She has 7 apples.\nThe answer is: 7\n"
GOLD = "She has 3 + 4 = 7 apples.\n#### 7"


def test_step_end_tokens_picks_the_token_holding_each_steps_last_character():
    # tokens end at 2, 4, 5, 8; steps [0,3) and [3,8)
    assert step_end_tokens([2, 4, 5, 8], [(0, 3), (3, 8)]) == [1, 3]
    assert step_end_tokens([2, 4], [(0, 2), (5, 9)]) == [0, -1]


def test_reader_context_puts_the_gold_after_the_question():
    assert reader_context(Q) == Q
    ctx = reader_context(Q, GOLD)
    assert ctx.startswith(Q) and ctx.index(GOLD_HEADER) < ctx.index("#### 7")


def test_surprise_verdict_is_the_first_step_over_the_threshold():
    r = Reading([0.5, 4.0, 9.0], np.zeros((3, 2), dtype=np.float32))
    assert surprise_verdict(r, 3.0).step == 1 and surprise_verdict(r, 5.0).step == 2
    assert surprise_verdict(r, 10.0).step is None


@pytest.fixture()
def reader(tiny_model_dir, tmp_path) -> Reader:
    return Reader(str(tiny_model_dir), device="cpu", layer=1, cache_dir=tmp_path / "reader", batch_size=2)


def test_reading_matches_the_model_read_directly(reader):
    import torch

    items = [(Q, SOL, None), (Q, "Step 1: 3 * 4 = 12.\nThe answer is: 12\n", GOLD), (Q, SOL, GOLD)]
    readings = reader.read(items)
    assert len(readings) == 3
    for (q, sol, gold), rd in zip(items, readings, strict=True):
        spans = segment(sol).spans
        prompt = reader.prompt(q, gold)
        one = reader.gen.score(prompt, sol)
        assert rd.gaps == pytest.approx(step_gaps(one.logprobs, one.top_logprobs, one.token_ends, spans), abs=1e-4)
        # the state is the layer's hidden state at the step's last token, from a plain forward pass
        tok, model = reader.gen.tokenizer, reader.gen.model
        p_ids = tok(prompt)["input_ids"]
        c_ids = tok(sol, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            hs = model(input_ids=torch.tensor([p_ids + c_ids]), output_hidden_states=True).hidden_states[1][0]
        for k, t in enumerate(step_end_tokens(one.token_ends, spans)):
            np.testing.assert_allclose(rd.states[k], hs[len(p_ids) + t].float().numpy(), rtol=1e-4, atol=1e-5)
        assert rd.states.shape == (len(spans), model.config.hidden_size)
    assert readings[0].gaps != readings[2].gaps  # the gold solution in the prompt changes the reading


def test_readings_come_from_the_cache_the_second_time(reader, monkeypatch):
    first = reader.read([(Q, SOL, GOLD)])[0]
    monkeypatch.setattr(reader.gen, "score_batch", lambda *a, **k: pytest.fail("read the model again"))
    again = reader.read([(Q, SOL, GOLD)])[0]
    assert again.gaps == pytest.approx(first.gaps) and np.array_equal(again.states, first.states)


def test_a_torn_cache_file_is_read_again(reader):
    first = reader.read([(Q, SOL, None)])[0]
    files = list(reader.cache_dir.glob("*.npz"))
    assert len(files) == 1
    files[0].write_bytes(b"PK\x03\x04 torn")
    again = reader.read([(Q, SOL, None)])[0]
    assert again.gaps == pytest.approx(first.gaps)
