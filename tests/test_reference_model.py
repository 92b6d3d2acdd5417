"""The shipped reference model: loads from data/, its tokenizer round-trips, it solves problems."""

from pathlib import Path

import pytest

from silverbullet.benchmarks import synthetic_task as task
from silverbullet.generation.base import GenerationConfig
from silverbullet.generation.hf import HFGenerator
from silverbullet.measure import measure

MODEL = Path(__file__).resolve().parents[1] / "data" / "reference-model"


@pytest.fixture(scope="module")
def ref_gen():
    return HFGenerator(str(MODEL), tag="reference", device="cpu")


def test_tokenizer_round_trip_and_single_digits(ref_gen):
    tok = ref_gen.tokenizer
    for p in task.generate("eval", 50):
        ids = tok(p.text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == p.text
    pieces = tok.convert_ids_to_tokens(tok("Step 1: 1234 + 56 = 1290.", add_special_tokens=False)["input_ids"])
    digits = [x.lstrip("\u0120") for x in pieces if any(c.isdigit() for c in x)]
    assert all(len(d) == 1 for d in digits)
    assert tok.decode(tok("héllo wörld 你好", add_special_tokens=False)["input_ids"]) == "héllo wörld 你好"


def test_model_config_is_what_the_card_says(ref_gen):
    cfg = ref_gen.model.config
    assert cfg.model_type == "llama" and cfg.head_dim == 32 and cfg.num_attention_heads == 8
    n = sum(p.numel() for p in ref_gen.model.parameters())
    assert 5e6 < n < 15e6
    assert sum(f.stat().st_size for f in MODEL.glob("*.safetensors")) <= 30 * 2**20


def test_reference_model_solves_eval_problems(ref_gen):
    from silverbullet.benchmarks import load_benchmark

    problems = load_benchmark("synthetic", split="eval", limit=48)
    gens = measure(ref_gen, problems, GenerationConfig(batch_size=48))
    acc = sum(g.correct for g in gens) / len(gens)
    assert acc >= 0.9, acc  # 99.2% on 1,000 problems (model card); 48 is a smoke-sized sample
    assert all(g.text.strip().splitlines()[0].startswith("Step 1:") for g in gens)
