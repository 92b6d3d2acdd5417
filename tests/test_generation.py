"""HFGenerator on tiny local Llamas: batching, margins, teacher forcing, stopping at the answer line."""

from __future__ import annotations

import math

import pytest
from conftest import MEMORIZED

from silverbullet.generation import GenerationConfig, Generator, HFGenerator
from silverbullet.generation.hf import answer_line_end, cut_after_answer, token_ends

PROMPTS = [
    "Question: What is 2 + 2?\n",
    "Question: hi\n",
    "Question: A much longer question, with many more characters than the others?\n",
    "Question: Tom has 3 apples.\n",
]


@pytest.fixture(scope="module")
def gen(tiny_model_dir) -> HFGenerator:
    return HFGenerator(tiny_model_dir, tag="tiny", device="cpu")


def test_is_a_generator(gen):
    assert isinstance(gen, Generator)
    assert gen.continue_from == gen.generate or gen.continue_from.__func__ is HFGenerator.generate


def test_left_padded_batch_equals_single_prompt(gen):
    cfg = GenerationConfig(max_new_tokens=24, batch_size=8)
    batched = gen.generate(PROMPTS, cfg)
    singles = [gen.generate([p], cfg)[0] for p in PROMPTS]
    assert [b.text for b in batched] == [s.text for s in singles]
    assert [b.n_tokens for b in batched] == [s.n_tokens for s in singles]
    # order is restored even when batches split the length-sorted prompts
    small = gen.generate(PROMPTS, cfg.replace(batch_size=3))
    assert [b.text for b in small] == [b.text for b in batched]


def test_margins_nonnegative_and_aligned(gen):
    outs = gen.generate(PROMPTS, GenerationConfig(max_new_tokens=20, margins=True))
    for o in outs:
        assert o.margins is not None and o.token_ends is not None
        assert len(o.margins) == len(o.token_ends) == o.n_tokens
        assert all(m >= 0 and math.isfinite(m) for m in o.margins)
        assert o.token_ends == sorted(o.token_ends)
        assert not o.token_ends or o.token_ends[-1] == len(o.text)
    plain = gen.generate(PROMPTS, GenerationConfig(max_new_tokens=20))
    assert [p.text for p in plain] == [o.text for o in outs]
    assert all(p.margins is None and p.token_ends is None for p in plain)


def test_score_matches_generate_margins(gen):
    out = gen.generate([PROMPTS[0]], GenerationConfig(max_new_tokens=20, margins=True))[0]
    sc = gen.score(PROMPTS[0], out.text)
    assert len(sc.margins) == out.n_tokens
    assert sc.margins == pytest.approx(out.margins, abs=1e-4)
    assert sc.token_ends == out.token_ends
    # greedy picked every token: each is the model's top-1, so its log-prob is the row maximum
    assert all(lp <= 0 for lp in sc.logprobs)
    assert sc.margins[0] > 0


def test_score_batch_equals_single(gen):
    pairs = [(PROMPTS[0], "Step 1: 2 + 2 = 4.\n"), (PROMPTS[2], "The answer is: 9\n"), (PROMPTS[1], "")]
    many = gen.score_batch(pairs)
    for (p, c), m in zip(pairs, many, strict=True):
        one = gen.score(p, c)
        assert m.token_ids == one.token_ids
        assert m.logprobs == pytest.approx(one.logprobs, abs=1e-4)
    assert many[2].margins == []
    assert many[0].token_ends[-1] == len(pairs[0][1])


def test_score_batch_sorts_by_length_and_keeps_order(gen):
    # prompts of different lengths, longest first, over several batches: the length sort and the
    # logits kept only from the earliest continuation token must not shift any row's scores
    long_prompt = PROMPTS[0] + " Show every step of the work, and check the answer twice. " * 3
    pairs = [
        (long_prompt, "Step 1: 7 - 3 = 4.\nThe answer is: 4\n"),
        (PROMPTS[1], "Step 1: 1 + 1 = 2.\n"),
        (PROMPTS[2][:12], "9"),
        (PROMPTS[0], "The answer is: 12\n"),
        (long_prompt, ""),
    ]
    many = gen.score_batch(pairs, batch_size=2)
    assert len(many) == len(pairs)
    for (p, c), m in zip(pairs, many, strict=True):
        one = gen.score(p, c)
        assert m.token_ids == one.token_ids
        assert m.logprobs == pytest.approx(one.logprobs, abs=1e-4)
        assert m.margins == pytest.approx(one.margins, abs=1e-4)
        assert m.top_logprobs == pytest.approx(one.top_logprobs, abs=1e-4)
        assert m.token_ends == one.token_ends


def test_sampling_is_seeded(gen):
    cfg = GenerationConfig(max_new_tokens=16, temperature=1.0, seed=3, margins=True)
    a, b = gen.generate(PROMPTS[:2], cfg), gen.generate(PROMPTS[:2], cfg)
    assert [x.text for x in a] == [x.text for x in b]
    assert all(m >= 0 for o in a for m in o.margins)


def test_fingerprint_stable_and_lazy(tiny_model_dir):
    g1 = HFGenerator(tiny_model_dir, tag="a", device="cpu")
    g2 = HFGenerator(tiny_model_dir, tag="b", device="cpu")
    assert g1.fingerprint == g2.fingerprint
    assert g1._model is None  # fingerprinting did not load the model
    assert HFGenerator(tiny_model_dir, device="cpu", dtype="bfloat16").fingerprint != g1.fingerprint


def test_in_memory_model(gen):
    wrapped = HFGenerator(model=gen.model, tokenizer=gen.tokenizer, tag="mem")
    cfg = GenerationConfig(max_new_tokens=10)
    assert wrapped.generate(PROMPTS[:1], cfg)[0].text == gen.generate(PROMPTS[:1], cfg)[0].text
    assert len(wrapped.fingerprint) == 16


def test_stops_at_answer_line(memorizer_dir):
    g = HFGenerator(memorizer_dir, tag="mem", device="cpu")
    prompts = list(MEMORIZED)
    outs = g.generate(prompts, GenerationConfig(max_new_tokens=120, margins=True))
    # prompt 0 ends with eos after the answer line; prompt 1 keeps talking and is cut there
    assert outs[0].text == "Step 1: 2 + 3 = 5.\nThe answer is: 5\n"
    assert outs[1].text == "Step 1: 4 * 2 = 8.\nThe answer is: 8\n"
    for o in outs:
        assert o.n_tokens == len(o.text)  # one token per character
        assert o.token_ends[-1] == len(o.text)
        assert o.n_tokens < 120  # stopped early, not at max_new_tokens


def test_answer_line_helpers():
    assert answer_line_end("Step 1: x\nThe answer is: 5\nmore") == len("Step 1: x\nThe answer is: 5\n")
    assert answer_line_end("The answer is: 5") is None  # not finished yet
    assert cut_after_answer("a\nThe answer is: 7\nb\n") == "a\nThe answer is: 7\n"
    assert cut_after_answer("no answer yet") == "no answer yet"


def test_token_ends(gen):
    ids = gen.tokenizer("abc\nd", add_special_tokens=False)["input_ids"]
    assert token_ends(gen.tokenizer, ids) == [1, 2, 3, 4, 5]
    assert token_ends(gen.tokenizer, ids, limit=3) == [1, 2, 3, 3, 3]
    assert token_ends(gen.tokenizer, []) == []


def test_empty_prompt_list(gen):
    assert gen.generate([], GenerationConfig()) == []


def test_config_validation():
    with pytest.raises(ValueError):
        GenerationConfig(max_new_tokens=0)
    assert GenerationConfig().greedy
    assert GenerationConfig().cache_settings() == {"max_new_tokens": 320, "temperature": 0.0}
    assert "seed" in GenerationConfig(temperature=0.7).cache_settings()


def test_out_of_memory_halves_the_batch_and_loses_nothing(tiny_model_dir):
    """A CUDA OOM (simulated: this machine has no GPU; bench/scale.py is where a real one runs)
    makes the backend retry the same prompts in halves; answers and order are unchanged."""
    import torch

    from silverbullet.errors import UserError

    prompts = [f"Question: what is {i} + {i + 1}?\n" for i in range(7)]
    cfg = GenerationConfig(max_new_tokens=6, batch_size=8)
    plain = HFGenerator(tiny_model_dir, device="cpu").generate(prompts, cfg)
    g = HFGenerator(tiny_model_dir, device="cpu")
    real, sizes = g._generate_batch, []

    def small_gpu(batch, config):
        sizes.append(len(batch))
        if len(batch) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch, config)

    g._generate_batch = small_gpu
    halved = g.generate(prompts, cfg)
    assert [o.text for o in halved] == [o.text for o in plain]
    assert sizes[0] == 7 and max(sizes[1:]) <= 4 and sum(s for s in sizes if s <= 2) == 7
    g.generate(prompts[:4], cfg)  # the next call starts at the size that fitted: no failed try first
    assert sizes[-2:] == [2, 2]

    def no_gpu(batch, config):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    g._generate_batch = no_gpu
    with pytest.raises(UserError, match="out of GPU memory generating one prompt"):
        g.generate(prompts[:2], cfg)


def test_out_of_memory_retry_runs_after_the_failed_batch_is_freed(tiny_model_dir):
    """The halves are generated outside the OOM handler: inside it, the exception's traceback keeps
    the failed batch's frames (its KV cache, logits) alive, and the retry would run out of memory too."""
    import gc
    import weakref

    import torch

    class Activations:  # stands in for the tensors the failed batch held
        pass

    g = HFGenerator(tiny_model_dir, device="cpu")
    real, held, alive_at_retry = g._generate_batch, [], []

    def oom_once(batch, config):
        if not held:
            acts = Activations()
            held.append(weakref.ref(acts))
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        gc.collect()
        alive_at_retry.append(held[0]() is not None)
        return real(batch, config)

    g._generate_batch = oom_once
    outs = g.generate(["Question: what is 1 + 2?\n", "Question: what is 3 + 4?\n"], GenerationConfig(max_new_tokens=4))
    assert len(outs) == 2 and alive_at_retry and not any(alive_at_retry)
