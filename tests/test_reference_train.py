"""The reference model's training loop: batch drawing, the schedule, and a tiny run end to end."""

import json

import pytest
import torch

from silverbullet.reference.train import ModelConfig, TrainConfig, _lr, _progress, batches, train


def test_batches_follow_weights_and_sort_by_length():
    gen = torch.Generator().manual_seed(0)
    n = 4000
    lens = torch.randint(40, 300, (n,), generator=gen)
    combine = torch.arange(n) % 4 == 0  # a quarter of the problems
    weights = torch.where(combine, 3.0, 1.0)  # -> half of the draws
    stream = batches(lens, weights, batch_size=64, bucket=16, gen=gen)
    drawn = torch.cat([next(stream) for _ in range(160)])
    assert 0.45 < combine[drawn].float().mean() < 0.55
    spread = [int(lens[b].max() - lens[b].min()) for b in (next(stream) for _ in range(16))]
    assert max(spread) < 80  # random batches of 64 span nearly the whole 40-300 range
    flat = batches(lens, torch.ones(n), batch_size=64, bucket=1, gen=gen)
    assert min(int(lens[b].max() - lens[b].min()) for b in (next(flat) for _ in range(16))) > 150


def test_schedule_warms_up_then_anneals_by_steps_or_time():
    cfg = TrainConfig(steps=1000, warmup=100, lr=1e-3, min_lr_ratio=0.1, max_minutes=0)
    assert _lr(0, _progress(0, 0, cfg), cfg) == pytest.approx(1e-5)
    assert _lr(99, _progress(99, 0, cfg), cfg) == pytest.approx(1e-3)
    mid = _lr(500, _progress(500, 0, cfg), cfg)
    assert 4e-4 < mid < 6e-4
    assert _lr(999, _progress(999, 0, cfg), cfg) == pytest.approx(1e-4, rel=1e-3)
    timed = TrainConfig(steps=1000, warmup=100, max_minutes=1.0)
    assert _progress(200, 30.0, timed) == pytest.approx(0.5)  # time runs out before the steps do
    assert _progress(800, 30.0, timed) == pytest.approx(0.8)
    assert _progress(10, 60.0, timed) >= 1.0


def test_tiny_training_run_learns_and_saves_a_loadable_model(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "ref"
    cfg = TrainConfig(
        out=str(out), steps=60, batch_size=16, lr=3e-3, warmup=10, n_problems=400, workers=2,
        max_minutes=0, log_every=20, final_eval_n=0, combine_weight=2.0, device="cpu",
    )  # fmt: skip
    info = train(cfg, ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=1, intermediate_size=128))
    assert info["steps_done"] == 60 and info["quick_eval_accuracy"] is None
    losses = [h["loss"] for h in info["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0] * 0.6, losses
    assert 0.3 < info["combine_share"] < 0.6  # ~28% of problems, drawn at weight 2
    assert json.loads((out / "training_log.json").read_text())["steps_done"] == 60
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.hidden_size == 64 and tok.eos_token_id == model.config.eos_token_id
