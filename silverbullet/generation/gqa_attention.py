"""SDPA attention for one-token decode steps of grouped-query-attention models, without copying K/V.

transformers' `sdpa` attention, given a padding mask (every batch with left padding has one), copies
each layer's keys and values once per query head in a group (`repeat_kv`) before calling
`scaled_dot_product_attention`: SDPA's own `enable_gqa` is only used without a mask. With a static
cache that copy is the whole cache, every layer, every step: for a Qwen2.5-7B shape (28 query heads
on 4 KV heads) at batch 64 and a 512-token cache it is about 13 GB written and read per step, several
times the weights themselves.

A decode step has one query token, so the heads of a group can be read as G query positions against
their shared KV head instead: query (B, H, 1, D) -> (B, KV, G, D), attention against the cache as it
is, back to (B, 1, H, D). The same numbers, no copy. Prefill (more than one query token), models
without groups, and anything unusual (dropout, a position bias) go to transformers' own `sdpa`.

`use_for(model)` registers the function and its mask builder (sdpa's) under `NAME` and switches a
model with grouped KV heads to it; `--compile` decoding does this (hf.py).
"""

from __future__ import annotations

from typing import Any

NAME = "silverbullet_gqa_sdpa"
_registered = False


def gqa_decode_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' attention-function signature; returns (output (B, q_len, H, D), None)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    batch, heads, q_len, dim = query.shape
    plain = (
        groups == 1
        or q_len != 1
        or dropout
        or kwargs.get("position_bias") is not None
        or (attention_mask is not None and attention_mask.shape[1] != 1)
    )
    if plain:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    kv_heads = key.shape[1]
    # head h reads KV head h // groups (repeat_kv's order), so (B, H, 1, D) -> (B, KV, G, D)
    q = query.reshape(batch, kv_heads, groups, dim)
    out = torch.nn.functional.scaled_dot_product_attention(q, key, value, attn_mask=attention_mask, scale=scaling)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


def register() -> None:
    """Make `NAME` known to transformers (attention function and mask builder); idempotent."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, gqa_decode_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    _registered = True


def use_for(model: Any) -> bool:
    """Switch a model that runs transformers' `sdpa` with grouped KV heads to `NAME`. Returns whether
    it switched (other attention implementations and models without groups are left alone)."""
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    heads, kv_heads = getattr(cfg, "num_attention_heads", None), getattr(cfg, "num_key_value_heads", None)
    if not heads or not kv_heads or heads == kv_heads or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    register()
    model.set_attn_implementation(NAME)
    return True
