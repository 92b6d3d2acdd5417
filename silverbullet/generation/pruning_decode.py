"""Greedy decoding that drops finished rows from the batch, for CPU runs.

`generate()` keeps every row of a batch until the longest one ends: on GSM8K at a 512-token budget a
few rambling solutions hold the whole batch, and the rows that stopped at 150 tokens are computed to
the end (on a CPU, where each row costs its share of compute, that is the waste). Here the batch is
checked for stops every `check_every` steps and the stopped rows leave the KV cache
(`Cache.batch_select_indices`) and the inputs, so each step computes only the rows still writing.

Stops are decided after the fact by the same `RowStop` rule the plain path applies token by token
(`hf.row_stop`), so the kept tokens are the plain path's: greedy decoding of a row does not depend on
when other rows stop (up to the last bits of a float that another batch width can move, as a
different --batch-size can). Margins are the top-1 minus top-2 logit of each step, as the plain
path's recorder takes them.
"""

from __future__ import annotations

from typing import Any

from silverbullet.generation.static_decode import Decoded, RowStop


def prune_decode(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    max_new_tokens: int,
    stop: RowStop,
    *,
    margins: bool = False,
    check_every: int = 16,
) -> Decoded:
    """Greedy continuation of left-padded `input_ids` (rows x prompt) until every row has stopped
    (by `stop`) or `max_new_tokens`; rows leave the batch once they have stopped."""
    import torch
    from transformers import DynamicCache

    rows = input_ids.shape[0]
    cache = DynamicCache(config=model.config)
    active = list(range(rows))  # original row of each batch position
    host: list[list[int]] = [[] for _ in range(rows)]
    host_m: list[list[float]] = [[] for _ in range(rows)]
    ends: list[int | None] = [None] * rows
    mask = attention_mask
    positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 0)
    pending: list[Any] = []  # tokens (and margins) since the last check, on the device
    step = checked = 0
    with torch.inference_mode():
        tokens, pos = input_ids, positions
        while True:
            out = model(
                input_ids=tokens,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1].float()
            nxt = logits.argmax(dim=-1)
            top = logits.topk(2, dim=-1).values if margins else None
            pending.append((nxt, top[:, 0] - top[:, 1] if top is not None else None))
            step += 1
            if step == max_new_tokens or step - checked >= check_every:
                new = torch.stack([t for t, _ in pending], dim=1).tolist()
                new_m = torch.stack([m for _, m in pending], dim=1).tolist() if margins else None
                pending.clear()
                keep = []
                for i, r in enumerate(active):
                    host[r].extend(new[i])
                    if new_m is not None:
                        host_m[r].extend(new_m[i])
                    ends[r] = stop(host[r], checked, r)
                    if ends[r] is None:
                        keep.append(i)
                checked = step
                if step == max_new_tokens or not keep:
                    break
                if len(keep) < len(active):
                    idx = torch.tensor(keep, device=input_ids.device)
                    cache.batch_select_indices(idx)
                    mask, nxt, positions = mask[idx], nxt[idx], positions[idx]
                    active = [active[i] for i in keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
            pos = positions[:, -1:] + step
            tokens = nxt[:, None]
    kept = [h[: e if e is not None else len(h)] for h, e in zip(host, ends, strict=True)]
    return Decoded(
        tokens=kept,
        margins=[m[: len(t)] for m, t in zip(host_m, kept, strict=True)] if margins else None,
        steps=step,
    )
