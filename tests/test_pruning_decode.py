"""CPU greedy decoding that drops stopped rows (generation/pruning_decode.py): the same tokens and
margins as transformers' generate() with the plain path's stops, and the batch really shrinks."""

from __future__ import annotations

import torch

from silverbullet.generation.base import GenerationConfig
from silverbullet.generation.hf import HFGenerator
from silverbullet.generation.pruning_decode import prune_decode

PROMPTS = ["Question: add 2 and 3\n", "Question: double 4\n", "Q: 12 + 30 = ?\nA:", "x", "Tell me: 7 * 6\n"]


def test_same_outputs_as_generate(memorizer_dir, tiny_model_dir):
    for d in (memorizer_dir, tiny_model_dir):
        cfg = GenerationConfig(max_new_tokens=40, batch_size=5, margins=True)
        pruned = HFGenerator(d, device="cpu").generate(PROMPTS, cfg)
        plain_gen = HFGenerator(d, device="cpu")
        plain_gen.prune_on_cpu = False  # transformers' generate(), as before (and as on a GPU)
        plain = plain_gen.generate(PROMPTS, cfg)
        assert [o.text for o in pruned] == [o.text for o in plain]
        assert [o.n_tokens for o in pruned] == [o.n_tokens for o in plain]
        for a, b in zip(pruned, plain, strict=True):
            assert a.token_ends == b.token_ends
            assert torch.allclose(torch.tensor(a.margins), torch.tensor(b.margins), atol=1e-4)


def test_stopped_rows_leave_the_batch(memorizer_dir):
    """The memorizer stops "add 2 and 3" at its answer line within 20 tokens; the others run to the
    budget. After the first check the forward passes carry fewer rows."""
    gen = HFGenerator(memorizer_dir, device="cpu")
    seen: list[int] = []
    hook = gen.model.register_forward_pre_hook(
        lambda mod, args, kw: seen.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        enc = gen.tokenizer(PROMPTS[:3], return_tensors="pt", padding=True, padding_side="left")
        from silverbullet.generation.hf import row_stop

        stops = set(gen._eos_ids()) | {gen.tokenizer.pad_token_id}
        stop = row_stop(gen.tokenizer, stops, gen._newline_ids(), ["", "", ""])
        out = prune_decode(gen.model, enc["input_ids"], enc["attention_mask"], 64, stop, check_every=8)
    finally:
        hook.remove()
    text = gen.tokenizer.decode(out.tokens[0], skip_special_tokens=True)
    assert text.startswith("Step 1: 2 + 3 = 5.\nThe answer is: 5")
    assert seen[0] == 3 and min(seen) < 3  # the prefill had every row; later steps fewer
    assert out.steps <= 64 and len(seen) == out.steps
