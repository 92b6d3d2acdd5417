"""`repair --merge` onto the base's own grid (repair/merge.py, repair/grid.py), on tiny quantized
Llamas: RTN 2-bit per channel (symmetric, the demo's scheme) and 4-bit groups of 32 with a zero
point (asymmetric, so the packed zero-point tensor is exercised too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_llama

from silverbullet.errors import UserError

SCHEMES = {
    "w2ch": dict(bits=2, group_size=0, symmetric=True),
    "w4g32-asym": dict(bits=4, group_size=32, symmetric=False),
}
TEXTS = ["Question: add 2 and 3\nStep 1: 2 + 3 = 5.\nThe answer is: 5\n", "Question: double 4\nStep 1: 4 * 2 = 8.\n"]


@pytest.fixture(scope="module", params=list(SCHEMES))
def base(request, tmp_path_factory) -> Path:
    """A tiny Llama quantized by `silverbullet quantize` (RTN through llm-compressor)."""
    from silverbullet.quantize import QuantizeConfig, quantize

    root = tmp_path_factory.mktemp(f"grid-{request.param}")
    build_tiny_llama(root / "dense", init=0.05)
    cfg = QuantizeConfig(model=str(root / "dense"), method="rtn", out=str(root / "q"), **SCHEMES[request.param])
    return quantize(cfg, log=lambda m: None)


def _adapter(base: Path, out: Path, std: float) -> Path:
    """A LoRA adapter on q_proj and down_proj: PEFT's own init (B = 0) when std is 0, else random B."""
    from peft import LoraConfig, get_peft_model

    from silverbullet.generation.loading import load_causal_lm

    model, _ = load_causal_lm(str(base), device="cpu", dtype="float32", for_training=True)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    torch.manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name and std:
            torch.nn.init.normal_(p, std=std)
    peft_model.save_pretrained(out)
    return out


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return {k: t for f in sorted(path.glob("*.safetensors")) for k, t in load_file(str(f)).items()}


def test_a_zero_adapter_gives_back_the_base_exactly(base, tmp_path):
    from silverbullet.repair.merge import merge_adapter

    path, info = merge_adapter(str(base), _adapter(base, tmp_path / "zero", 0.0), tmp_path / "merged")
    before, after = _tensors(base), _tensors(path)
    assert before.keys() == after.keys()
    assert all(before[k].numpy().tobytes() == after[k].numpy().tobytes() for k in before)
    assert (path / "config.json").read_bytes() == (base / "config.json").read_bytes()
    assert info["method"] == "grid" and info["grid"]["modules"] == 0 and info["dense_merged"] == []


@pytest.fixture(scope="module")
def merged(base, tmp_path_factory):
    """A random adapter large enough that many deltas cross a rounding boundary, merged both ways."""
    from silverbullet.repair.merge import merge_adapter

    root = tmp_path_factory.mktemp("merged")
    adapter = _adapter(base, root / "adapter", 0.5)
    grid = merge_adapter(str(base), adapter, root / "grid", "grid", TEXTS)
    gptq = merge_adapter(str(base), adapter, root / "gptq", "gptq", TEXTS)
    return base, adapter, grid, gptq


def test_scales_and_zero_points_stay_byte_identical(merged):
    base, _, (grid, _), (gptq, _) = merged
    before = _tensors(base)
    for path in (grid, gptq):
        after = _tensors(path)
        kept = [k for k in before if not k.endswith("weight_packed")]
        assert any(k.endswith("weight_zero_point") for k in kept) == ("asym" in str(base.parent))
        assert all(before[k].numpy().tobytes() == after[k].numpy().tobytes() for k in kept)
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert changed and all(k.endswith(("q_proj.weight_packed", "down_proj.weight_packed")) for k in changed)


def _dense(path: Path, adapter: Path | None = None) -> dict:
    from silverbullet.generation.loading import load_causal_lm

    model, _ = load_causal_lm(str(path), device="cpu", dtype="float32", adapter=adapter, for_training=adapter is None)
    return {n: m for n, m in model.named_modules() if hasattr(m, "quantization_scheme")}


def test_grid_merge_is_base_plus_adapter_rounded_to_nearest_on_the_base_grid(merged):
    """Independently: W' = the PEFT merge of base + adapter; q = clamp(round(W'/s + zp)); the
    merged checkpoint dequantizes to (q - zp) * s with the base's s and zp."""
    from compressed_tensors.quantization.utils import calculate_range

    base, adapter, (grid, info), _ = merged
    want, got = _dense(base, adapter), _dense(grid)
    for name, m in got.items():
        args = m.quantization_scheme.weights
        q_min, q_max = calculate_range(args, "cpu")
        s = m.weight_scale.detach().to(torch.float32)
        zp = getattr(m, "weight_zero_point", None)
        zp = torch.zeros_like(s) if zp is None else zp.detach().to(torch.float32)
        if args.group_size:
            s, zp = (t.repeat_interleave(args.group_size, dim=1) for t in (s, zp))
        codes = torch.clamp(torch.round(want[name].weight.detach() / s + zp), q_min, q_max)
        assert torch.equal(got[name].weight.detach(), (codes - zp) * s), name
        on_grid = got[name].weight.detach() / s + zp  # integer codes, up to float division
        assert torch.allclose(on_grid, on_grid.round(), atol=1e-4)
        assert on_grid.round().min() >= q_min and on_grid.round().max() <= q_max
    g = info["grid"]
    assert g["modules"] == 4 and 0 < g["changed_fraction"] < 1 and 0 < g["update_kept"] <= 1


def test_gptq_refinement_stays_on_the_grid_and_fits_outputs_better(merged):
    base, _, (_, grid_info), (gptq, info) = merged
    assert info["method"] == "gptq" and info["calibration_texts"] == len(TEXTS)
    for m in _dense(gptq).values():
        args = m.quantization_scheme.weights
        if args.group_size:
            continue  # the grouped grid is checked above; here the per-channel one
        w = m.weight.detach() / m.weight_scale.detach()
        assert torch.allclose(w, w.round(), atol=1e-4)
    assert info["grid"]["output_update_kept"] >= grid_info["grid"]["output_update_kept"]
    recorded = json.loads((gptq / "silverbullet_quantization.json").read_text())
    assert recorded["merge"]["method"] == "gptq" and "merged (gptq)" in recorded["source_model"]


def test_the_merged_checkpoint_loads_and_generates(merged):
    from silverbullet.generation.loading import load_causal_lm

    _, _, (grid, _), _ = merged
    cfg = json.loads((grid / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    model, tok = load_causal_lm(str(grid), device="cpu", dtype="float32")
    ids = tok("Question: add 2 and 3\n", return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 5


def test_bad_bases_are_one_line_errors(base, tmp_path):
    from silverbullet.repair.merge import merge_adapter

    adapter = tmp_path / "adapter"
    with pytest.raises(UserError, match="silverbullet_quantization.json not found") as e:
        merge_adapter(str(tmp_path), adapter, tmp_path / "m")  # no record beside the checkpoint
    assert "\n" not in str(e.value)
    dense = base.parent / "dense"
    (dense / "silverbullet_quantization.json").write_text(json.dumps({"config": {"method": "rtn"}}))
    with pytest.raises(UserError, match="not a compressed-tensors checkpoint") as e:
        merge_adapter(str(dense), adapter, tmp_path / "m")
    assert "\n" not in str(e.value)
    (dense / "silverbullet_quantization.json").unlink()
    with pytest.raises(UserError, match="--merge-method 'fancy' is not known"):
        merge_adapter(str(base), adapter, tmp_path / "m", "fancy")
    with pytest.raises(UserError, match="needs calibration text"):
        merge_adapter(str(base), adapter, tmp_path / "m", "gptq", [])


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("group_size", [None, 16])
def test_gptq_onto_a_fixed_grid_beats_nearest_on_the_calibration_outputs(act_order, group_size):
    """gptq_to_grid alone: the scales are inputs and stay; every result is (code - zp) * scale with a
    code in range; the output error on the calibration inputs is below rounding to nearest's."""
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    from silverbullet.repair.grid import gptq_to_grid

    torch.manual_seed(0)
    strategy = "group" if group_size else "channel"
    args = QuantizationArgs(num_bits=3, symmetric=True, strategy=strategy, group_size=group_size)
    w = torch.randn(24, 64)
    x = torch.randn(512, 64) @ torch.randn(64, 64) * 0.3  # correlated inputs: where GPTQ helps
    scale = torch.rand(24, 64 // group_size if group_size else 1) * 0.2 + 0.3
    zp = torch.zeros_like(scale, dtype=torch.int8)
    h = x.T @ x / len(x)
    q = gptq_to_grid(w, h, scale, zp, args, act_order=act_order)
    s = scale.repeat_interleave(group_size, dim=1) if group_size else scale
    codes = q / s
    assert torch.allclose(codes, codes.round(), atol=1e-4) and -4 <= codes.round().min() <= codes.round().max() <= 3
    nearest = fake_quantize(w, scale, zp, args)
    assert ((w - q) @ x.T).norm() < ((w - nearest) @ x.T).norm()


def _kl(teacher, student, tok) -> float:
    total = 0.0
    for t in TEXTS:
        ids = tok(t, return_tensors="pt", add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            p = torch.log_softmax(teacher(input_ids=ids).logits.float(), -1)
            q = torch.log_softmax(student(input_ids=ids).logits.float(), -1)
        total += float(torch.nn.functional.kl_div(q, p, log_target=True, reduction="sum")) / ids.shape[1]
    return total


def test_gptq_scales_moves_only_scales_and_comes_closer_to_the_adapter(merged, tmp_path):
    """`gptq-scales`: GPTQ's codes, byte for byte; only weight_scale tensors change (of every quantized
    module, not only those the adapter touched); and the written
    checkpoint, loaded, is closer to base + adapter (KL on the calibration text, computed here) than
    the GPTQ merge it starts from."""
    from silverbullet.generation.loading import load_causal_lm
    from silverbullet.repair.merge import merge_adapter

    base, adapter, _, (gptq, _) = merged
    path, info = merge_adapter(str(base), adapter, tmp_path / "gs", "gptq-scales", TEXTS)
    after, start = _tensors(path), _tensors(gptq)
    changed = [k for k in after if not torch.equal(after[k], start[k])]
    # every quantized module's scales train (those the adapter left alone can still move toward it)
    assert changed and all(k.endswith("weight_scale") for k in changed)
    assert any(k.endswith("gate_proj.weight_scale") for k in changed)
    assert info["method"] == "gptq-scales" and info["scales"]["texts"] == len(TEXTS)
    assert info["scales"]["kl_to_adapter_after"] < info["scales"]["kl_to_adapter_before"]
    teacher, tok = load_causal_lm(str(base), device="cpu", dtype="float32", adapter=adapter)
    kl_gptq = _kl(teacher, load_causal_lm(str(gptq), device="cpu", dtype="float32")[0], tok)
    kl_scales = _kl(teacher, load_causal_lm(str(path), device="cpu", dtype="float32")[0], tok)
    assert kl_scales < 0.9 * kl_gptq


def test_scaled_linear_starts_as_the_layer_it_replaces():
    from silverbullet.repair.scales import ScaledLinear, unit_codes

    torch.manual_seed(0)
    for group in (None, 4):
        scale = torch.rand(6, 1 if group is None else 3) + 0.1
        codes = torch.randint(-2, 2, (6, 12)).float()
        s = scale if group is None else scale.repeat_interleave(group, dim=1)
        w = codes * s
        assert torch.equal(unit_codes(w, scale, group), codes)
        lin = ScaledLinear(unit_codes(w, scale, group), scale, group, None)
        x = torch.randn(2, 12)
        assert torch.allclose(lin(x), x @ w.T, atol=1e-6)
        assert [n for n, _ in lin.named_parameters()] == ["r"]  # the codes are buffers: frozen
