"""Greedy decoding with a static KV cache and one compiled step, for `--compile` on a GPU.

Why not `generate(cache_implementation="static")`: its compiled forward is fast, but the Python
around it (input preparation, mask bookkeeping, logits processors, a stop check that syncs the GPU)
costs more than the step itself once the step is a CUDA graph; measured on an H200 it held the
compiled path to 2.2-2.9x the plain one. Here one compiled function does the forward, the argmax and
the top-1 minus top-2 margin; the loop around it only copies the result into preallocated buffers,
and stops are checked on the host every `check_every` steps (one sync per check).

Stops are decided after the fact by `RowStop`, the same rule the plain path's stopping criterion
applies token by token, so the tokens kept are the ones the plain path returns: greedy decoding of a
row does not depend on when other rows stop. Tokens generated past a row's stop are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# A row's stop: given its new tokens so far and where the unseen ones start, how many to keep, or
# None while it has not stopped.
RowStop = Callable[[Sequence[int], int, int], "int | None"]  # (row's tokens, checked up to, row index)


@dataclass
class Decoded:
    tokens: list[list[int]]  # per row, cut at its stop
    margins: list[list[float]] | None  # per row, aligned with tokens
    steps: int  # decode steps run (the longest row's length, rounded up to a stop check)


def supports_static_decode(model: Any) -> bool:
    """Decoder-only models whose every layer keeps a full (not sliding-window) static cache: the
    compiled step then has one shape for the whole decode. Others use generate()'s own path."""
    cfg = model.config.get_text_config(decoder=True) if hasattr(model.config, "get_text_config") else model.config
    if getattr(cfg, "is_encoder_decoder", False):
        return False
    layer_types = getattr(cfg, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        return False
    return not getattr(cfg, "use_sliding_window", False) or getattr(cfg, "sliding_window", None) is None


class StaticDecoder:
    """One static KV cache of `batch` rows x `cache_len` tokens, reused batch after batch (reset, not
    reallocated, so the compiled graph's addresses stay valid)."""

    def __init__(self, model: Any, batch: int, cache_len: int, *, compile: bool = True) -> None:
        import torch
        from transformers import StaticCache

        self.model, self.batch, self.cache_len = model, batch, cache_len
        self.cache = StaticCache(config=model.config, max_cache_len=cache_len)
        self.compiled = compile
        self._step = (
            torch.compile(self._forward_select, mode="reduce-overhead", fullgraph=False, dynamic=False)
            if compile
            else self._forward_select
        )

    def _forward_select(self, tokens: Any, positions: Any, mask: Any, margins: bool) -> tuple[Any, Any]:
        out = self.model(
            input_ids=tokens,
            position_ids=positions,
            attention_mask=mask,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        logits = out.logits[:, -1].float()  # what generate() selects from
        nxt = logits.argmax(dim=-1)
        if not margins:
            return nxt, None
        top = logits.topk(2, dim=-1).values
        return nxt, top[:, 0] - top[:, 1]

    def decode(
        self,
        input_ids: Any,
        attention_mask: Any,
        max_new_tokens: int,
        stop: RowStop,
        *,
        margins: bool = False,
        check_every: int = 16,
    ) -> Decoded:
        """Greedy continuation of left-padded `input_ids` (batch x prompt) until every row has
        stopped (by `stop`) or `max_new_tokens`."""
        import torch

        rows, prompt_len = input_ids.shape
        if rows != self.batch:
            raise ValueError(f"the decoder holds {self.batch} rows, got {rows}")
        if prompt_len + max_new_tokens > self.cache_len:
            raise ValueError(f"{prompt_len} prompt + {max_new_tokens} new tokens exceed the cache ({self.cache_len})")
        device = input_ids.device
        self.cache.reset()
        mask = torch.zeros(rows, self.cache_len, dtype=attention_mask.dtype, device=device)
        mask[:, :prompt_len] = attention_mask
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
        last_pos = positions[:, -1:].clone()
        out_tokens = torch.zeros(rows, max_new_tokens, dtype=torch.long, device=device)
        out_margins = torch.zeros(rows, max_new_tokens, dtype=torch.float32, device=device) if margins else None

        with torch.no_grad():
            nxt, m = self._forward_select(input_ids, positions, mask, margins)  # prefill: eager, any length
            ends: list[int | None] = [None] * rows
            host: list[list[int]] = [[] for _ in range(rows)]
            checked = 0
            step = 0
            while True:
                out_tokens[:, step] = nxt
                if out_margins is not None:
                    out_margins[:, step] = m
                step += 1
                if step == max_new_tokens or step - checked >= check_every:
                    new = out_tokens[:, checked:step].tolist()  # the one sync of a check
                    for r in range(rows):
                        if ends[r] is None:
                            host[r].extend(new[r])
                            ends[r] = stop(host[r], checked, r)
                    checked = step
                    if step == max_new_tokens or all(e is not None for e in ends):
                        break
                mask[:, prompt_len + step - 1] = 1
                if self.compiled:
                    torch.compiler.cudagraph_mark_step_begin()
                nxt, m = self._step(nxt[:, None].clone(), last_pos + step, mask, margins)
                nxt = nxt.clone()  # a CUDA graph's outputs are overwritten by its next replay
                m = m.clone() if m is not None else None
        tokens = [h[: e if e is not None else len(h)] for h, e in zip(host, ends, strict=True)]
        kept = out_margins[:, :step].tolist() if out_margins is not None else None
        return Decoded(
            tokens=tokens,
            margins=[k[: len(t)] for k, t in zip(kept, tokens, strict=True)] if kept is not None else None,
            steps=step,
        )
