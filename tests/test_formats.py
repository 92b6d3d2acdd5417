"""Checkpoint formats beyond compressed-tensors: bitsandbytes NF4 / INT8 at load time and saved,
QLoRA repair on a 4-bit base (base weights untouched), and one clear line (exit 2) when a format's
library is missing or the format is unknown."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from silverbullet.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "data" / "reference-model"


def run_hidden(args: list[str], hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter in which the named modules cannot be imported (as if not installed)."""
    code = (
        "import sys\n"
        + "".join(f"sys.modules[{m!r}] = None\n" for m in hide)
        + f"sys.argv = ['silverbullet', *{args!r}]\n"
        + "from silverbullet.cli import main\nmain()\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def assert_one_line_exit_2(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def fake_quantized(tmp_path: Path, quant_config: dict) -> Path:
    """The reference model's files with a quantization_config of another format in its config.json."""
    d = tmp_path / "ckpt"
    shutil.copytree(REF, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["quantization_config"] = quant_config
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def test_gptq_checkpoint_without_its_library(tmp_path):
    d = fake_quantized(tmp_path, {"quant_method": "gptq", "bits": 4, "group_size": 128})
    res = run_hidden(["evaluate", "--model", str(d), "--limit", "1"], hide=("gptqmodel",))
    assert_one_line_exit_2(res, "gptq", 'pip install "silverbullet[gptq]"', "config.json")


def test_gptq_checkpoint_without_optimum(tmp_path):
    """transformers' GPTQ quantizer needs optimum as well as gptqmodel: the missing one is named."""
    d = fake_quantized(tmp_path, {"quant_method": "gptq", "bits": 4, "group_size": 128})
    res = run_hidden(["evaluate", "--model", str(d), "--limit", "1"], hide=("optimum",))
    assert_one_line_exit_2(res, "gptq", "'optimum'", 'pip install "silverbullet[gptq]"')


def test_awq_checkpoint_names_the_library_transformers_runs_it_with(tmp_path):
    d = fake_quantized(tmp_path, {"quant_method": "awq", "bits": 4, "group_size": 128})
    args = ["diagnose", "--quantized", str(d), "--limit", "1", "--out", str(tmp_path / "run")]
    res = run_hidden(args, hide=("gptqmodel",))
    assert_one_line_exit_2(res, "awq", "silverbullet[gptq]")


def test_unknown_quant_method(tmp_path):
    d = fake_quantized(tmp_path, {"quant_method": "secret-sauce-q3"})
    res = run_hidden(["evaluate", "--model", str(d), "--limit", "1"])
    assert_one_line_exit_2(res, "secret-sauce-q3", "not a format")


def test_load_in_4bit_without_bitsandbytes(tmp_path):
    res = run_hidden(["evaluate", "--load-in-4bit", "--limit", "1"], hide=("bitsandbytes",))
    assert_one_line_exit_2(res, "--load-in 4bit", 'pip install "silverbullet[bnb]"')
    res = run_hidden(
        ["diagnose", "--load-in-8bit", "--limit", "1", "--out", str(tmp_path / "run")], hide=("bitsandbytes",)
    )
    assert_one_line_exit_2(res, "--load-in 8bit", "silverbullet[bnb]")


def test_quantize_method_without_its_library(tmp_path):
    res = run_hidden(["quantize", "--method", "gptqmodel", "--out", str(tmp_path / "q")], hide=("gptqmodel",))
    assert_one_line_exit_2(res, "--method gptqmodel", "silverbullet[gptq]")
    res = run_hidden(["quantize", "--method", "gptqmodel-awq", "--out", str(tmp_path / "q")], hide=("gptqmodel",))
    assert_one_line_exit_2(res, "--method gptqmodel-awq", "silverbullet[gptq]")
    res = run_hidden(["quantize", "--method", "autoround", "--out", str(tmp_path / "q")], hide=("auto_round",))
    assert_one_line_exit_2(res, "--method autoround", "silverbullet[autoround]")
    assert not (tmp_path / "q").exists()


def test_load_in_flags_refused_where_they_cannot_apply(tmp_path):
    res = run_hidden(["evaluate", "--load-in-4bit", "--load-in-8bit", "--limit", "1"])
    assert_one_line_exit_2(res, "exclude each other")
    d = fake_quantized(tmp_path, {"quant_method": "compressed-tensors", "format": "pack-quantized"})
    res = run_hidden(["evaluate", "--model", str(d), "--load-in-4bit", "--limit", "1"])
    assert_one_line_exit_2(res, "already quantized", "--load-in 4bit")


def test_merge_refuses_a_base_it_cannot_requantize(tmp_path):
    from silverbullet.quantize import QUANT_CONFIG_FILE
    from silverbullet.repair.merge import merge_and_requantize

    (tmp_path / QUANT_CONFIG_FILE).write_text(json.dumps({"config": {"method": "bnb-nf4"}}))
    with pytest.raises(UserError, match="bnb-nf4 checkpoint: --merge"):
        merge_and_requantize(str(tmp_path), tmp_path / "adapter", tmp_path / "merged")


# -- GPTQModel (GPTQ and AWQ) on this CPU: runs where silverbullet[gptq] is installed -------------------
# Marked gptq: `make test` deselects them, `make test-gptq` (CI, after `make test`) runs them with GPTQModel
# on PYTHONPATH and SILVERBULLET_REQUIRE_GPTQ=1, which turns their skip into a failure (tests/conftest.py).

SFT_ROWS = [
    {"prompt": f"Question: What is {a} + {b}?\n", "completion": f"{a} + {b} = {a + b}\nThe answer is: {a + b}\n"}
    for a, b in ((3, 4), (10, 7), (21, 5), (8, 8))
]


def _gptqmodel_checkpoint(tmp_path_factory, method: str) -> Path:
    pytest.importorskip("gptqmodel")
    pytest.importorskip("optimum")
    from silverbullet.quantize import QuantizeConfig, quantize

    out = tmp_path_factory.mktemp("gptqmodel") / method
    cfg = QuantizeConfig(model=str(REF), method=method, calibration_samples=16, out=str(out))
    return quantize(cfg, log=lambda m: None)


@pytest.fixture(scope="module")
def gptq_ckpt(tmp_path_factory):
    """`silverbullet quantize --method gptqmodel`: the reference model as a GPTQ W4G128 checkpoint."""
    return _gptqmodel_checkpoint(tmp_path_factory, "gptqmodel")


def _close_to_reference(model, dense) -> float:
    import torch

    x = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(x).logits, dense(x).logits
    return float((a - b).abs().mean() / b.abs().mean())


@pytest.mark.gptq
def test_gptqmodel_writes_a_gptq_checkpoint_that_loads_packed(gptq_ckpt):
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    from silverbullet.generation.loading import load_causal_lm, preflight, quant_method

    q = json.loads((gptq_ckpt / "config.json").read_text())["quantization_config"]
    assert quant_method({"quantization_config": q}) == "gptq" and q["bits"] == 4 and q["group_size"] == 128
    # GPTQModel sets do_sample: true in generation_config.json; the source's file is kept instead
    assert (gptq_ckpt / "generation_config.json").read_text() == (REF / "generation_config.json").read_text()
    preflight(gptq_ckpt)
    model, _ = load_causal_lm(gptq_ckpt, device="cpu")
    dense, _ = load_causal_lm(REF, device="cpu")
    assert isinstance(model.model.layers[0].mlp.down_proj, BaseQuantLinear)
    assert 1e-4 < _close_to_reference(model, dense) < 0.2  # rounded, but the same model


@pytest.mark.slow
@pytest.mark.gptq
def test_lora_repair_on_the_gptq_base_is_served_unmerged(gptq_ckpt, tmp_path):
    """A slice of repair training (train_adapter, as `repair` calls it) on the GPTQ base: PEFT wraps
    GPTQModel's layers; the packed weights are untouched and the adapter is served on top of them
    (PEFT cannot merge into GPTQ layers)."""
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file

    from silverbullet.generation.loading import load_causal_lm
    from silverbullet.repair.train import RepairTrainConfig, train_adapter

    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    packed = load_file(gptq_ckpt / "model.safetensors")
    cfg = RepairTrainConfig(method="sft", epochs=2, batch_size=4, device="cpu", max_length=64)
    info = train_adapter(str(gptq_ckpt), sft, None, tmp_path / "adapter", cfg)
    assert info["sft"]["steps"] == 2 and info["adapter_bytes"] > 0
    lora = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # it learned (B starts at 0)
    after = load_file(gptq_ckpt / "model.safetensors")
    assert all(torch.equal(v, after[k]) for k, v in packed.items())  # the base checkpoint is not touched
    served, tok = load_causal_lm(gptq_ckpt, device="cpu", adapter=tmp_path / "adapter")
    base, _ = load_causal_lm(gptq_ckpt, device="cpu")
    assert isinstance(served, PeftModel)
    x = tok(SFT_ROWS[0]["prompt"] + SFT_ROWS[0]["completion"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert (served(x).logits - base(x).logits).abs().max() > 1e-4


@pytest.mark.slow
@pytest.mark.gptq
def test_gptqmodel_awq_checkpoint_loads_through_gptqmodel(tmp_path_factory):
    """`quantize --method gptqmodel-awq`: AutoAWQ's GEMM layout, which transformers 5 loads through GPTQModel."""
    ckpt = _gptqmodel_checkpoint(tmp_path_factory, "gptqmodel-awq")  # skips without gptqmodel
    from gptqmodel.nn_modules.qlinear import BaseQuantLinear

    from silverbullet.generation.loading import load_causal_lm

    q = json.loads((ckpt / "config.json").read_text())["quantization_config"]
    assert q["quant_method"] == "awq" and q["format"] == "gemm" and q["zero_point"] is True
    model, _ = load_causal_lm(ckpt, device="cpu")
    dense, _ = load_causal_lm(REF, device="cpu")
    assert isinstance(model.model.layers[0].self_attn.q_proj, BaseQuantLinear)
    assert 1e-4 < _close_to_reference(model, dense) < 0.3


# -- bitsandbytes on this CPU ------------------------------------------------------------------------

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def nf4_saved(tmp_path_factory):
    """`silverbullet quantize --method bnb-nf4`: the reference model saved as a pre-quantized NF4 checkpoint."""
    from silverbullet.quantize import QuantizeConfig, quantize

    out = tmp_path_factory.mktemp("bnb") / "nf4"
    quantize(QuantizeConfig(model=str(REF), method="bnb-nf4", out=str(out)), log=lambda m: None)
    return out


@pytest.mark.slow
def test_load_in_4bit_and_8bit_quantize_the_linear_layers():
    import torch

    from silverbullet.generation.loading import fingerprint_model_source, load_causal_lm

    m4, _ = load_causal_lm(REF, device="cpu", load_in="4bit")
    m8, _ = load_causal_lm(REF, device="cpu", load_in="8bit")
    dense, _ = load_causal_lm(REF, device="cpu")
    assert isinstance(m4.model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
    assert m4.model.layers[0].mlp.down_proj.weight.quant_state.quant_type == "nf4"
    assert isinstance(m8.model.layers[0].mlp.down_proj, bnb.nn.Linear8bitLt)
    # the weights really are rounded: NF4 differs from the dense weights, by less than their spread
    w4 = bnb.functional.dequantize_4bit(m4.model.layers[0].mlp.down_proj.weight.data,
                                        m4.model.layers[0].mlp.down_proj.weight.quant_state)
    w = dense.model.layers[0].mlp.down_proj.weight
    err = (w4.float() - w).abs().mean() / w.abs().mean()
    assert 0.01 < err < 0.3
    x = torch.randint(3, 100, (1, 12))
    with torch.no_grad():
        assert not torch.equal(m4(x).logits, dense(x).logits)
    fps = {fingerprint_model_source(REF, device="cpu", load_in=x) for x in (None, "4bit", "8bit")}
    assert len(fps) == 3  # the generation cache never mixes up the three


def test_saved_nf4_checkpoint_loads_as_nf4_and_matches_load_time_quantization(nf4_saved):
    import torch

    from silverbullet.generation.loading import load_causal_lm, preflight, quant_method

    assert quant_method(json.loads((nf4_saved / "config.json").read_text())) == "bitsandbytes"
    preflight(nf4_saved)
    saved, _ = load_causal_lm(nf4_saved, device="cpu")
    live, _ = load_causal_lm(REF, device="cpu", load_in="4bit")
    assert isinstance(saved.model.layers[3].self_attn.q_proj, bnb.nn.Linear4bit)
    x = torch.randint(3, 100, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(saved(x).logits, live(x).logits)
    with pytest.raises(UserError, match="already quantized"):
        load_causal_lm(nf4_saved, device="cpu", load_in="8bit")


@pytest.mark.slow
def test_qlora_repair_on_the_4bit_reference_leaves_the_base_untouched(tmp_path):
    """A tiny slice of repair training (train_adapter, as `repair` calls it) on the NF4 base."""
    import torch

    from silverbullet.generation import GenerationConfig, HFGenerator
    from silverbullet.generation.loading import load_causal_lm
    from silverbullet.repair.train import RepairTrainConfig, train_adapter

    rows = [
        {"prompt": f"Question: What is {a} + {b}?\n", "completion": f"{a} + {b} = {a + b}\nThe answer is: {a + b}\n"}
        for a, b in ((3, 4), (10, 7), (21, 5), (8, 8))
    ]
    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps(r) + "\n" for r in rows))
    before, _ = load_causal_lm(REF, device="cpu", load_in="4bit")
    packed_before = {n: p.detach().clone() for n, p in before.named_parameters() if "proj" in n}
    cfg = RepairTrainConfig(method="sft", epochs=2, batch_size=4, device="cpu", load_in="4bit", max_length=64)
    info = train_adapter(str(REF), sft, None, tmp_path / "adapter", cfg)
    assert info["sft"]["steps"] == 2 and info["adapter_bytes"] > 0
    from safetensors.torch import load_file

    lora = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # it learned (B starts at 0)
    # the base is the same NF4 model: loading it again gives identical packed weights
    again, _ = load_causal_lm(REF, device="cpu", load_in="4bit")
    for n, p in again.named_parameters():
        if n in packed_before:
            assert torch.equal(p, packed_before[n]), n
    # the adapter serves on the 4-bit base (not merged into it: that would re-round the weights)
    # and changes the model's output on the training prompts
    rep = HFGenerator(REF, device="cpu", load_in="4bit", adapter=tmp_path / "adapter")
    assert isinstance(rep.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer, bnb.nn.Linear4bit)
    out = rep.generate([rows[0]["prompt"]], GenerationConfig(max_new_tokens=24))[0]
    assert out.text and out.n_tokens > 0
    x = rep.tokenizer(rows[0]["prompt"] + rows[0]["completion"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert (rep.model(x).logits - again(x).logits).abs().max() > 1e-3


def test_a_layer_peft_cannot_wrap_is_one_line():
    """A layer type PEFT cannot wrap (AutoRound's QuantLinear was one before lora_custom_modules): one line."""
    from silverbullet.repair.train import _lora_supported

    peft_msg = "Target module QuantLinear() is not supported. Currently, only the following modules are supported: ..."
    with pytest.raises(UserError, match=r"LoRA cannot attach to ckpt: PEFT does not support its QuantLinear"):
        with _lora_supported("ckpt"):
            raise ValueError(peft_msg)
    with pytest.raises(ValueError, match="something else"):
        with _lora_supported("ckpt"):
            raise ValueError("something else")


def _fake_autoround_model(kernel_module: str):
    import torch

    layer = type("QuantLinear", (torch.nn.Module,), {"__module__": kernel_module})
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), layer())
    model.hf_quantizer = type("AutoRoundQuantizer", (), {"is_trainable": property(lambda self: False)})()
    return model, layer


def test_autoround_training_allowed_on_its_torch_kernels_only():
    """transformers marks AutoRound untrainable; on AutoRound's pure-torch kernels (its CPU backend) we
    let LoRA train through PEFT's GPTQ wrapper, and any other AutoRound kernel stops with one line."""
    from peft.tuners.lora.gptq import GPTQLoraLinear

    from silverbullet.generation.loading import _trainable_autoround, lora_custom_modules

    model, layer = _fake_autoround_model("auto_round_extension.torch.qlinear_torch_zp")
    assert lora_custom_modules(model) == {layer: GPTQLoraLinear}
    _trainable_autoround(model, "ckpt")
    assert model.hf_quantizer.is_trainable
    model, _ = _fake_autoround_model("auto_round_extension.triton.qlinear_tritonv2")
    assert lora_custom_modules(model) == {}
    with pytest.raises(UserError, match=r"LoRA cannot train on ckpt: .*pure-torch kernels \(found: .*triton"):
        _trainable_autoround(model, "ckpt")
    assert not model.hf_quantizer.is_trainable


@pytest.mark.autoround
def test_autoround_checkpoint_quantizes_loads_generates_and_repairs_on_cpu(tmp_path):
    """`quantize --method autoround` on a tiny Llama (AutoRound's own CPU path, about 15 s), loaded as
    transformers loads it: auto-round's QuantLinear layers, fp16 on CPU, text out, and logits that
    follow the dense model's. Then a slice of repair training on it: LoRA through PEFT's GPTQ wrapper,
    the packed checkpoint untouched, the adapter served on top and changing the logits."""
    import torch
    from conftest import build_tiny_llama

    from silverbullet.generation import GenerationConfig, HFGenerator
    from silverbullet.quantize import QuantizeConfig, quantize

    build_tiny_llama(tmp_path / "dense", init=0.05)
    out = quantize(QuantizeConfig(model=str(tmp_path / "dense"), method="autoround", out=str(tmp_path / "q"),
                                  bits=4, group_size=32), log=lambda m: None)  # fmt: skip
    qcfg = json.loads((Path(out) / "config.json").read_text())["quantization_config"]
    assert qcfg["quant_method"] in ("auto-round", "intel/auto-round") and qcfg["bits"] == 4
    g = HFGenerator(str(out), device="cpu")
    layer = g.model.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == "QuantLinear" and not hasattr(layer, "weight")
    text = g.generate(["Question: add 2 and 3\n"], GenerationConfig(max_new_tokens=8))[0]
    assert text.n_tokens > 0
    dense = HFGenerator(str(tmp_path / "dense"), device="cpu")
    ids = dense.tokenizer("Question: add 2 and 3\n", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = dense.model(ids).logits.float(), g.model(ids).logits.float()
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.9

    from peft import PeftModel
    from peft.tuners.lora.gptq import GPTQLoraLinear
    from safetensors.torch import load_file

    from silverbullet.generation.loading import load_causal_lm
    from silverbullet.repair.train import RepairTrainConfig, train_adapter

    sft = tmp_path / "sft.jsonl"
    sft.write_text("".join(json.dumps(r) + "\n" for r in SFT_ROWS))
    packed = load_file(Path(out) / "model.safetensors")
    cfg = RepairTrainConfig(method="sft", epochs=2, batch_size=4, device="cpu", max_length=64)
    info = train_adapter(str(out), sft, None, tmp_path / "adapter", cfg)
    assert info["sft"]["steps"] == 2 and info["adapter_bytes"] > 0
    lora = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in lora.items())  # it learned (B starts at 0)
    after = load_file(Path(out) / "model.safetensors")
    assert all(torch.equal(v, after[k]) for k, v in packed.items())
    served, tok = load_causal_lm(out, device="cpu", adapter=tmp_path / "adapter")
    assert isinstance(served, PeftModel)
    assert isinstance(served.base_model.model.model.layers[0].self_attn.q_proj, GPTQLoraLinear)
    with torch.no_grad():
        assert (served(ids).logits - g.model(ids).logits).abs().max() > 1e-4


def test_compliance_counts_answers_that_copy_the_placeholder():
    from silverbullet.prompting.formats import ANSWER_PLACEHOLDER, STEP_FORMAT_INSTRUCTION, compliance

    assert ANSWER_PLACEHOLDER in STEP_FORMAT_INSTRUCTION  # one owner: the instruction's own stand-in
    rows = [
        {"text": "Step 1: Work out the total.\nThe answer is: <answer>", "n_tokens": 12},
        {"text": "Step 1: Work out the total.\nStep 2: The answer is: <answer>.", "n_tokens": 14},
        {"text": "Step 1: 2 + 3 = 5.\nThe answer is: 5", "n_tokens": 12},
        {"text": "Step 1: <answer> is what we want.\nThe answer is: 5", "n_tokens": 12},
    ]
    assert compliance(rows, 512)["placeholder_answers"] == 2
