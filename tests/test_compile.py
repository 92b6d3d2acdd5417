"""The HF backend's opt-in compiled decode (`--compile`): static KV cache + torch.compile on CUDA.
CPU only here: the option's path from the command line to the generator, the one line it gives on
CPU, the generation config it builds, and the static-cache path itself (uncompiled on CPU).
What it buys on a GPU, and whether its answers match, is bench/compile.py's (docs/formats.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from silverbullet.generation import GenerationConfig, HFGenerator
from silverbullet.generation.hf import COMPILE_CACHE_BUCKET, compile_settings, row_stop

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"Question: what is {i} + {i + 1}?\n" for i in range(5)]
MEMORIZED = ["Question: add 2 and 3\n", "Question: double 4\n"]  # conftest.MEMORIZED's prompts


def test_compile_settings_build_a_valid_static_cache_config():
    from transformers import CompileConfig
    from transformers import GenerationConfig as HFGenerationConfig

    s = compile_settings(prompt_len=100, max_new_tokens=320)
    assert s["cache_implementation"] == "static"
    assert s["max_cache_len"] == 512 and s["max_cache_len"] % COMPILE_CACHE_BUCKET == 0
    assert compile_settings(128, 0)["max_cache_len"] == 128  # an exact multiple is not rounded up
    cc = s["compile_config"]
    assert isinstance(cc, CompileConfig) and cc.mode == "reduce-overhead" and cc.fullgraph is False
    # equal configs, so transformers reuses its compiled call across batches (get_compiled_call)
    assert cc == compile_settings(3, 7)["compile_config"]
    HFGenerationConfig(max_new_tokens=320, **s).validate(strict=True)


def test_compile_is_no_cache_key_and_travels_to_workers():
    from dataclasses import asdict

    assert GenerationConfig(compile=True).cache_settings() == GenerationConfig().cache_settings()
    cfg = GenerationConfig(batch_size=8, compile=True)
    assert GenerationConfig(**asdict(cfg)).compile  # sharding.py passes the config as JSON of asdict


def test_on_cpu_compile_is_ignored_with_one_line(tiny_model_dir, monkeypatch):
    from silverbullet import ui

    lines: list[str] = []
    monkeypatch.setattr(ui, "note", lines.append)
    g = HFGenerator(tiny_model_dir, tag="tiny", device="cpu")
    cfg = GenerationConfig(max_new_tokens=6, batch_size=2, margins=True)
    plain = g.generate(PROMPTS, cfg)
    assert not lines
    compiled = g.generate(PROMPTS, cfg.replace(compile=True))
    g.generate(PROMPTS[:1], cfg.replace(compile=True))
    assert len(lines) == 1 and "--compile ignored for tiny" in lines[0] and "cpu" in lines[0]
    assert [o.text for o in compiled] == [o.text for o in plain]
    assert [o.margins for o in compiled] == [o.margins for o in plain]


def test_static_decoder_on_cpu_matches_plain(tiny_model_dir, memorizer_dir, monkeypatch):
    """The compiled greedy path minus the compiler: `StaticDecoder` (one static cache sized to the
    bucket, the batch padded to the batch size and the padding dropped, stops decided after the fact
    every few steps) returns the plain path's texts, token counts and token ends, and its margins."""
    from silverbullet.generation import static_decode

    made: list[tuple] = []

    class Spy(static_decode.StaticDecoder):
        def __init__(self, model, batch, cache_len, *, compile=True):
            made.append((batch, cache_len, compile))
            super().__init__(model, batch, cache_len, compile=compile)

    import silverbullet.generation.hf as hf

    for path in (tiny_model_dir, memorizer_dir):
        g = HFGenerator(path, device="cpu")
        cfg = GenerationConfig(max_new_tokens=12, batch_size=4, margins=True)
        plain = g.generate(PROMPTS + list(MEMORIZED), cfg)
        with monkeypatch.context() as m:
            m.setattr(HFGenerator, "compiles", lambda self, config: config.compile)
            m.setattr(hf, "StaticDecoder", Spy)
            made.clear()
            static = g.generate(PROMPTS + list(MEMORIZED), cfg.replace(compile=True))
        assert made == [(4, COMPILE_CACHE_BUCKET, False)]  # 7 prompts, 2 batches, one cache (reset, reused)
        # both test models have grouped KV heads (4 on 2): the compiled path decodes with gqa_attention
        assert g.model.config._attn_implementation == "silverbullet_gqa_sdpa"
        assert len(static) == len(plain) == 7
        for a, b in zip(static, plain):
            assert (a.text, a.n_tokens, a.token_ends) == (b.text, b.n_tokens, b.token_ends)
            assert a.margins == pytest.approx(b.margins, abs=1e-4)


def test_static_decoder_stops_when_every_row_has(memorizer_dir):
    """Rows stop by the plain path's rule, checked every `check_every` steps: the decode ends at the
    first check after the last row stopped, not at max_new_tokens."""
    from silverbullet.generation.static_decode import StaticDecoder

    g = HFGenerator(memorizer_dir, device="cpu")
    tok, model = g.tokenizer, g.model
    enc = tok(list(MEMORIZED), return_tensors="pt", padding=True, padding_side="left")
    stop = row_stop(tok, set(g._eos_ids()) | {tok.pad_token_id}, g._newline_ids())
    d = StaticDecoder(model, 2, 256, compile=False)
    out = d.decode(enc["input_ids"], enc["attention_mask"], 200, stop, check_every=4)
    texts = [tok.decode(t, skip_special_tokens=True) for t in out.tokens]
    assert texts == ["Step 1: 2 + 3 = 5.\nThe answer is: 5\n", "Step 1: 4 * 2 = 8.\nThe answer is: 8\n"]
    assert out.steps % 4 == 0 and out.steps < 200 and out.steps - 4 < max(len(t) for t in out.tokens) <= out.steps
    with pytest.raises(ValueError, match="exceed the cache"):
        d.decode(enc["input_ids"], enc["attention_mask"], 255, stop)


def test_row_stop_is_the_plain_paths_rule(memorizer_dir):
    g = HFGenerator(memorizer_dir, device="cpu")
    tok = g.tokenizer
    stop = row_stop(tok, {g.tokenizer.eos_token_id}, g._newline_ids())
    ids = tok("Step 1: 2 + 3 = 5.\nThe answer is: 5\nmore", add_special_tokens=False)["input_ids"]
    end = stop(ids, 0)
    assert tok.decode(ids[:end]) == "Step 1: 2 + 3 = 5.\nThe answer is: 5\n"  # the newline token is kept
    assert stop(ids[: end - 1], 0) is None  # no answer line yet
    assert stop(ids, end) is None  # only tokens from `start` on are looked at
    eos = tok.eos_token_id
    assert stop([ids[0], eos, ids[1]], 0) == 1  # eos is dropped


def test_sampling_under_compile_keeps_generates_static_cache(tiny_model_dir, monkeypatch):
    """Sampling is not the static decoder's (it is greedy): under --compile it goes through
    generate() with the static cache, as before."""
    import transformers

    seen: list[tuple] = []
    real = transformers.GenerationMixin.generate

    def spy(model, *a, **k):
        gc = k["generation_config"]
        seen.append((k["input_ids"].shape[0], gc.cache_implementation, gc.max_cache_len))
        return real(model, *a, **k)

    monkeypatch.setattr(transformers.GenerationMixin, "generate", spy)
    monkeypatch.setattr(HFGenerator, "compiles", lambda self, config: config.compile)
    g = HFGenerator(tiny_model_dir, device="cpu")
    outs = g.generate(PROMPTS, GenerationConfig(max_new_tokens=6, batch_size=4, temperature=0.7, compile=True))
    assert len(outs) == 5 and [s[0] for s in seen] == [4, 4]
    assert all(s[1] == "static" and s[2] % COMPILE_CACHE_BUCKET == 0 for s in seen)


def test_diagnose_flag_reaches_the_config(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    import silverbullet.diagnose as diagnose_mod
    from silverbullet import cli

    got = {}

    class Stop(Exception):
        pass

    def fake_run(cfg):
        got["cfg"] = cfg
        raise Stop

    monkeypatch.setattr(diagnose_mod, "run_diagnose", fake_run)
    for args, want in (([], False), (["--compile"], True)):
        out = str(tmp_path / "run")
        r = CliRunner().invoke(cli.app, ["diagnose", "--limit", "2", "--out", out, *args])
        assert isinstance(r.exception, Stop), r.output
        assert got["cfg"].compile is want
    assert "compile" in diagnose_mod.DiagnoseConfig._RESUMABLE  # a resumed run may switch it


def test_evaluate_on_cpu_says_one_line_and_runs(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "silverbullet.cli", "evaluate", "--limit", "2", "--max-new-tokens", "8",
         "--compile", "--json", str(tmp_path / "res.json")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr.count("--compile ignored") == 1 and "Traceback" not in r.stderr
    assert (tmp_path / "res.json").exists()


def test_out_of_memory_in_the_static_decoder_halves_and_drops_its_cache(tiny_model_dir, monkeypatch):
    """An OOM inside the compiled path (simulated: no GPU here) halves the batch like the plain
    path's, and the static cache made for the width that failed is released, not kept beside the
    smaller one; outputs equal the plain path's, in order."""
    import torch

    from silverbullet.generation import static_decode

    prompts = PROMPTS + list(MEMORIZED)
    cfg = GenerationConfig(max_new_tokens=8, batch_size=8)
    plain = HFGenerator(tiny_model_dir, device="cpu").generate(prompts, cfg)
    real = static_decode.StaticDecoder.decode
    widths: list[int] = []

    def small_gpu(self, input_ids, *a, **k):
        widths.append(input_ids.shape[0])
        if input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, input_ids, *a, **k)

    monkeypatch.setattr(static_decode.StaticDecoder, "decode", small_gpu)
    monkeypatch.setattr(HFGenerator, "compiles", lambda self, config: config.compile)
    g = HFGenerator(tiny_model_dir, device="cpu")
    halved = g.generate(prompts, cfg.replace(compile=True))
    assert [o.text for o in halved] == [o.text for o in plain]
    assert widths[:3] == [8, 4, 2] and set(widths[3:]) == {2}
    assert list(g._decoders) == [(2, False)]  # the 8- and 4-row caches were dropped
