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
from silverbullet.generation.hf import COMPILE_CACHE_BUCKET, compile_settings

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"Question: what is {i} + {i + 1}?\n" for i in range(5)]


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


def test_static_cache_path_on_cpu_matches_plain(tiny_model_dir, memorizer_dir, monkeypatch):
    """The compiled path minus the compiler (transformers compiles only on CUDA): a static cache sized
    to the bucket, the batch padded to the batch size and the padding dropped, margins and the
    answer-line stop between steps. Texts, token counts and margins equal the plain path's."""
    import transformers

    seen: list[tuple] = []
    real = transformers.GenerationMixin.generate

    def spy(model, *a, **k):
        gc = k["generation_config"]
        seen.append((k["input_ids"].shape[0], gc.cache_implementation, gc.max_cache_len))
        return real(model, *a, **k)

    monkeypatch.setattr(transformers.GenerationMixin, "generate", spy)
    for path in (tiny_model_dir, memorizer_dir):
        g = HFGenerator(path, device="cpu")
        cfg = GenerationConfig(max_new_tokens=12, batch_size=4, margins=True)
        plain = g.generate(PROMPTS, cfg)
        monkeypatch.setattr(HFGenerator, "compiles", lambda self, config: config.compile)
        seen.clear()
        static = g.generate(PROMPTS, cfg.replace(compile=True))
        monkeypatch.undo()
        monkeypatch.setattr(transformers.GenerationMixin, "generate", spy)
        assert [s[0] for s in seen] == [4, 4]  # 5 prompts: batches of 4 and 1, the second padded to 4
        assert all(s[1] == "static" and s[2] % COMPILE_CACHE_BUCKET == 0 for s in seen)
        assert len(static) == len(PROMPTS)
        for a, b in zip(static, plain):
            assert (a.text, a.n_tokens, a.token_ends) == (b.text, b.n_tokens, b.token_ends)
            assert a.margins == pytest.approx(b.margins, abs=1e-4)


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
