"""compressed-tensors checkpoints (as llm-compressor writes them) load for inference and training."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import build_tiny_llama

from silverbullet.generation import GenerationConfig, HFGenerator
from silverbullet.generation.loading import is_compressed_tensors, load_causal_lm

pytest.importorskip("llmcompressor")


@pytest.fixture(scope="module")
def quantized_dir(tmp_path_factory):
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    root = tmp_path_factory.mktemp("quant")
    build_tiny_llama(root / "fp", hidden=128)  # W4A16 groups of 128 need dims divisible by 128
    model = oneshot(
        model=str(root / "fp"),
        recipe=QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"]),
    )
    model.save_pretrained(root / "q", save_compressed=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (root / "q" / f).write_bytes((root / "fp" / f).read_bytes())
    return root / "q"


def test_detects_compressed_tensors(quantized_dir):
    assert is_compressed_tensors(json.loads((quantized_dir / "config.json").read_text()))


def test_inference_matches_dequantized_training_load(quantized_dir):
    import torch

    trained, tok = load_causal_lm(quantized_dir, device="cpu", for_training=True)
    q_proj = trained.model.layers[0].self_attn.q_proj
    assert q_proj.weight.dtype == torch.float32  # dense, trainable weights ...
    # ... that lie on the 4-bit grid: weight / scale are integers in [-8, 7] (group size 128)
    codes = q_proj.weight / q_proj.weight_scale.repeat_interleave(128, dim=1)
    assert torch.allclose(codes, codes.round(), atol=1e-3)
    assert codes.round().min() >= -8 and codes.round().max() <= 7

    cfg = GenerationConfig(max_new_tokens=16, margins=True)
    prompts = ["Question: hi\n", "Question: what is 3 + 4?\n"]
    quant = HFGenerator(quantized_dir, tag="q", device="cpu").generate(prompts, cfg)
    dense = HFGenerator(model=trained.eval(), tokenizer=tok, tag="dq").generate(prompts, cfg)
    assert [o.text for o in quant] == [o.text for o in dense]
    assert quant[0].margins == pytest.approx(dense[0].margins, abs=1e-3)


def test_demo_quantized_checkpoint_is_rebuilt_when_the_reference_changes(tmp_path, monkeypatch):
    """A retrained (or pulled) reference model must not be diagnosed against a quantized copy of
    its previous version: the checkpoint records its source's fingerprint and is rebuilt on change."""
    from silverbullet.diagnose import demo_quantized_path
    from silverbullet.quantize import QUANT_CONFIG_FILE

    monkeypatch.chdir(tmp_path)
    ref = tmp_path / "ref"
    build_tiny_llama(ref, seed=0)
    q = Path(demo_quantized_path(str(ref)))
    first = json.loads((q / QUANT_CONFIG_FILE).read_text())
    weights = {f.name: f.read_bytes() for f in q.glob("*.safetensors")}
    assert first["source_fingerprint"]
    demo_quantized_path(str(ref))  # unchanged source: reused, not rebuilt
    assert json.loads((q / QUANT_CONFIG_FILE).read_text())["seconds"] == first["seconds"]
    assert {f.name: f.read_bytes() for f in q.glob("*.safetensors")} == weights
    build_tiny_llama(ref, seed=1)  # the reference is retrained in place
    assert demo_quantized_path(str(ref)) == str(q)
    second = json.loads((q / QUANT_CONFIG_FILE).read_text())
    assert second["source_fingerprint"] != first["source_fingerprint"]
    assert {f.name: f.read_bytes() for f in q.glob("*.safetensors")} != weights


def test_commands_started_together_build_the_checkpoint_once(tmp_path):
    """Two processes asking for the same demo checkpoint at once (two terminals, parallel test
    workers): the second waits on the first's lock and reuses its checkpoint instead of writing into
    the same folder. Fresh interpreters, not forks of this one (a fork of a process that has run torch
    can crash)."""
    import subprocess
    import sys

    from silverbullet.quantize import QUANT_CONFIG_FILE

    ref = tmp_path / "ref"
    build_tiny_llama(ref, seed=0)
    child = (
        "import silverbullet.quantize as qz\n"
        "from silverbullet.diagnose import demo_quantized_path\n"
        "real = qz.quantize\n"
        "def counted(cfg, log=print):\n"
        "    open('builds.log', 'a').write('build\\n')\n"
        "    return real(cfg, log)\n"
        "qz.quantize = counted\n"
        f"demo_quantized_path({str(ref)!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [
        subprocess.Popen([sys.executable, "-c", child], cwd=tmp_path, env=env, stderr=subprocess.PIPE) for _ in range(2)
    ]
    errs = [p.communicate(timeout=300)[1].decode()[-2000:] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    q = next((tmp_path / "runs" / "_models").glob("ref-*"))
    assert json.loads((q / QUANT_CONFIG_FILE).read_text())["source_fingerprint"]
    assert (tmp_path / "builds.log").read_text().splitlines() == ["build"]
