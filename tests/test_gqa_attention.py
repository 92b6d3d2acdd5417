"""Decode attention for grouped KV heads without copying K/V (generation/gqa_attention.py): the same
numbers as transformers' sdpa, on plain and static-cache decoding, and only where it applies."""

from __future__ import annotations

import pytest
import torch

from silverbullet.generation import gqa_attention


def _qwen(heads: int, kv_heads: int, attn: str = "sdpa"):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
    )  # fmt: skip
    cfg._attn_implementation = attn
    return Qwen2ForCausalLM(cfg).eval()


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 300, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # left padding: the case transformers' sdpa copies K/V for
    mask[1, :2] = 0
    return ids, mask


def _greedy(model, ids, mask):
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
            output_scores=True, return_dict_in_generate=True, pad_token_id=0,
        )  # fmt: skip
    return out.sequences, torch.stack(out.scores)


def test_same_tokens_and_scores_as_sdpa_and_the_decode_is_folded(monkeypatch):
    model = _qwen(8, 2)
    ids, mask = _batch()
    seq_a, scores_a = _greedy(model, ids, mask)
    assert gqa_attention.use_for(model) and model.config._attn_implementation == gqa_attention.NAME
    folded = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        folded.append(q.shape[1:3] == (2, 4))  # (KV heads, group) in place of (heads, 1 query)
        return sdpa(q, k, v, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    seq_b, scores_b = _greedy(model, ids, mask)
    assert torch.equal(seq_a, seq_b)
    assert torch.allclose(scores_a, scores_b, atol=1e-5)
    assert sum(folded) == 7 * 2  # every decode step after the first token, both layers; prefill is not


def test_static_cache_decode_matches():
    from silverbullet.generation.static_decode import StaticDecoder

    model = _qwen(8, 2)
    ids, mask = _batch()
    stop = lambda toks, start, row: None  # noqa: E731  (run to max_new_tokens)
    before = StaticDecoder(model, 3, 128, compile=False).decode(ids, mask, 10, stop, margins=True)
    gqa_attention.use_for(model)
    after = StaticDecoder(model, 3, 128, compile=False).decode(ids, mask, 10, stop, margins=True)
    assert before.tokens == after.tokens
    for a, b in zip(after.margins, before.margins, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


@pytest.mark.parametrize(("heads", "kv_heads", "attn"), [(4, 4, "sdpa"), (8, 2, "eager")])
def test_left_alone_without_groups_or_sdpa(heads, kv_heads, attn):
    model = _qwen(heads, kv_heads, attn)
    assert not gqa_attention.use_for(model) and model.config._attn_implementation == attn


def test_cpu_generation_uses_it_without_compile(tiny_model_dir):
    """On CPU the plain (uncompiled) path decodes through it too, and writes the same solutions as
    transformers' own sdpa does."""
    from silverbullet.generation.base import GenerationConfig
    from silverbullet.generation.hf import HFGenerator

    prompts = ["Q: 12 + 30 = ?\nA:", "Tell me: 7 * 6\n", "x"]
    cfg = GenerationConfig(max_new_tokens=12, batch_size=3)
    gen = HFGenerator(tiny_model_dir, device="cpu")
    assert gen.model.config.num_key_value_heads < gen.model.config.num_attention_heads
    fast = [o.text for o in gen.generate(prompts, cfg)]
    assert gen.model.config._attn_implementation == gqa_attention.NAME
    gen.model.set_attn_implementation("sdpa")
    gen._gqa_checked = True  # keep transformers' sdpa for the comparison
    assert [o.text for o in gen.generate(prompts, cfg)] == fast
