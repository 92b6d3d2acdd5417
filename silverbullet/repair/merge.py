"""`repair --merge`: fold the LoRA adapter into the quantized base and write one low-bit checkpoint.

Why: an adapter keeps the base on its grid but ships a second file and costs a LoRA matmul (or an
in-memory merge) at serving time. W + BA is off the grid, so the merged weights must be rounded
again, and how they are rounded decides whether the repair survives:

- `grid` (default): W' = dequant(W_q) + BA, rounded to nearest on the base's *own* grid: the
  same scale and zero-point tensors (byte-identical), the same format; a weight moves only where
  the adapter's delta crosses a rounding boundary, and a zero adapter gives the base back exactly.
- `gptq`: the same fixed grid, but each layer rounded GPTQ-style (error feedback through the
  inverse Hessian of calibration inputs: repair-split text through base + adapter).
- `gptq-scales`: `gptq`, then the scales (one float per row or group, already in the format) trained,
  codes frozen, so the merged model's distributions match base + adapter's on the calibration text
  (`scales.py`); only `weight_scale` tensors change.
- `requantize`: the old path: the dense merge quantized again with the base's recipe, which fits
  new min-max scales (at 2 bits this lost the whole repair, docs/repair.md).
The merged checkpoint's accuracy is measured, never assumed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from silverbullet.errors import UserError

MERGE_METHODS = ("grid", "gptq", "gptq-scales", "requantize")
CALIBRATION_TEXTS = 128  # texts whose layer inputs make the Hessians (GPTQ's usual calibration size)
SCALE_TEXTS = 512  # texts the scales are trained on (gptq-scales): more than GPTQ needs, against overfitting


def recorded_quantization(quantized: str) -> dict:
    """The QuantizeConfig fields `silverbullet quantize` wrote beside the checkpoint."""
    from silverbullet.quantize import QUANT_CONFIG_FILE

    f = Path(quantized) / QUANT_CONFIG_FILE
    if not f.is_file():
        raise UserError(
            f"{f} not found: --merge writes checkpoints of the format `silverbullet quantize` made and "
            "records; quantize the base with it, or ship the adapter instead (drop --merge)"
        )
    try:
        return json.loads(f.read_text())["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{f} has no readable 'config' ({e}); re-run `silverbullet quantize`") from None


def merge_adapter(
    quantized: str,
    adapter: Path,
    out: Path,
    method: str = "grid",
    calibration: list[str] | None = None,
    distill: list[str] | None = None,
) -> tuple[Path, dict]:
    """Merge by `method` (MERGE_METHODS); returns the checkpoint and what the merge recorded.
    `calibration` makes GPTQ's Hessians; `gptq-scales` trains the scales on `distill` (default:
    `calibration`), at most SCALE_TEXTS of them."""
    if method not in MERGE_METHODS:
        raise UserError(f"--merge-method {method!r} is not known; use one of {', '.join(MERGE_METHODS)}")
    if method == "requantize":
        path = merge_and_requantize(quantized, adapter, out)
        return path, json.loads((path / _info_name()).read_text())["merge"]
    if method.startswith("gptq") and not calibration:
        raise UserError(f"--merge-method {method} needs calibration text (the repair split's SFT set); none was found")
    return merge_on_grid(quantized, adapter, out, calibration=calibration, refine=method.startswith("gptq"),
                         scales=method == "gptq-scales", distill=distill)  # fmt: skip


def _info_name() -> str:
    from silverbullet.quantize import QUANT_CONFIG_FILE

    return QUANT_CONFIG_FILE


def _compressed_tensors_config(quantized: str) -> dict:
    f = Path(quantized) / "config.json"
    try:
        q = json.loads(f.read_text()).get("quantization_config") or {}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {f} ({e})") from None
    if not isinstance(q, dict) or q.get("quant_method") != "compressed-tensors":
        method = q.get("quant_method") if isinstance(q, dict) else None
        raise UserError(
            f"{quantized} is not a compressed-tensors checkpoint (quant_method {method!r}): the grid merge "
            "keeps a compressed-tensors base's scales; ship the adapter instead (drop --merge)"
        )
    return q


def merge_on_grid(
    quantized: str,
    adapter: Path,
    out: Path,
    calibration: list[str] | None = None,
    refine: bool = False,
    scales: bool = False,
    distill: list[str] | None = None,
) -> tuple[Path, dict]:
    """W' = dequant(W_q) + BA per quantized Linear, rounded onto the base's grid (to nearest, or
    GPTQ-style with `refine`, which needs `calibration` text; given without it, the text only adds
    output-space figures to the record). Every other tensor of the base is copied as is, but for
    non-quantized modules the adapter touched, which get the plain dense merge."""
    import torch

    from silverbullet.generation.loading import load_causal_lm
    from silverbullet.repair.grid import GridStats, merge_module

    recorded_quantization(quantized)  # one line if the base was not made by `silverbullet quantize`
    rec_info = json.loads((Path(quantized) / _info_name()).read_text())
    qcfg = _compressed_tensors_config(quantized)
    shards, metadata = _read_shards(Path(quantized))
    flat = {k: t for sd in shards.values() for k, t in sd.items()}
    model, tok = load_causal_lm(quantized, device="cpu", dtype="float32", adapter=adapter)
    quantized_modules = {
        n: m for n, m in model.named_modules() if getattr(getattr(m, "quantization_scheme", None), "weights", None)
    }
    if not quantized_modules:
        raise UserError(f"{quantized}: no quantized weights found; ship the adapter instead (drop --merge)")
    with torch.no_grad():
        hessians = _hessians(model, tok, quantized_modules, calibration) if calibration else {}
    replaced: dict[str, torch.Tensor] = {}
    stats = GridStats()
    on_grid: dict[str, tuple] = {}  # name -> (dequantized merged weight, scale, group size): for `scales`
    for name, module in quantized_modules.items():
        scheme = module.quantization_scheme
        fmt = str(getattr(scheme.format, "value", scheme.format) or qcfg.get("format"))
        base = {k.rsplit(".", 1)[1]: t for k, t in flat.items() if k.rsplit(".", 1)[0] == name}
        if "weight_g_idx" in base:
            raise UserError(
                f"{quantized}: {name} has a group index (GPTQ act-order 'group'); use --merge-method requantize"
            )
        if "weight_scale" not in base:
            raise UserError(f"{quantized}: {name} is quantized but the checkpoint holds no weight_scale for it")
        codes, module_stats = merge_module(module.weight, base, scheme, fmt, hessians.get(name), refine)
        stats.add(module_stats)
        replaced.update({f"{name}.{k}": v for k, v in codes.items()})
        if scales:
            from silverbullet.repair.grid import decompress

            strategy = str(getattr(scheme.weights.strategy, "value", scheme.weights.strategy))
            group = scheme.weights.group_size if strategy == "group" else None
            weight = decompress({**base, **codes}, scheme, fmt)["weight"]
            on_grid[name] = (weight, base["weight_scale"], group)
    dense = []
    prefixes = tuple(n + "." for n in quantized_modules)
    for key, t in model.state_dict().items():
        if key in flat and not key.startswith(prefixes) and not torch.equal(flat[key], t.to(flat[key].dtype)):
            replaced[key] = t.to(flat[key].dtype).contiguous()
            dense.append(key)
    scale_record = None
    if scales:
        scale_record = _refine_scales(model, tok, on_grid, replaced, flat, (distill or calibration or [])[:SCALE_TEXTS])
    _write(Path(quantized), out, shards, metadata, replaced)
    info = {
        "method": ("gptq-scales" if scales else "gptq") if refine else "grid",
        "base": str(quantized),
        "adapter": str(adapter),
        "modules_on_grid": len(quantized_modules),
        "dense_merged": dense,  # non-quantized tensors the adapter changed (plain W + BA)
        "calibration_texts": min(len(calibration or []), CALIBRATION_TEXTS),
        "grid": stats.as_dict(),
        **({"scales": scale_record} if scale_record else {}),
    }
    rec_info["source_model"] = f"{quantized} + LoRA {adapter}, merged ({info['method']})"
    rec_info.setdefault("config", {})["model"] = rec_info["source_model"]
    rec_info["merge"] = info
    (out / _info_name()).write_text(json.dumps(rec_info, indent=1))
    return out, info


def _refine_scales(teacher, tok, on_grid: dict, replaced: dict, flat: dict, texts: list[str]) -> dict:
    """The merged model (base + adapter with the on-grid weights put in, dense) has its scales trained
    toward `teacher` (base + adapter); the new scales join `replaced` in the base's dtype."""
    import copy

    import torch

    from silverbullet.repair.scales import refine_scales

    student = copy.deepcopy(teacher)  # dense-merged non-quantized modules, as the checkpoint has them
    with torch.no_grad():
        for name, (weight, _scale, _group) in on_grid.items():
            student.get_submodule(name).weight.copy_(weight.to(torch.float32))
    new, record = refine_scales(teacher, student, tok, {n: (s, g) for n, (_w, s, g) in on_grid.items()}, texts)
    for key, t in new.items():
        replaced[key] = t.to(flat[key].dtype).reshape(flat[key].shape).contiguous()
    return record


def _read_shards(path: Path) -> tuple[dict, dict]:
    """{shard file name: {key: tensor}} and each shard's safetensors metadata."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UserError(f"{path} holds no .safetensors files; the grid merge reads safetensors checkpoints only")
    shards, metadata = {}, {}
    for f in files:
        with safe_open(str(f), framework="pt") as h:
            shards[f.name] = {k: h.get_tensor(k) for k in h.keys()}
            metadata[f.name] = h.metadata()
    return shards, metadata


def _write(base: Path, out: Path, shards: dict, metadata: dict, replaced: dict) -> None:
    """The base's files with `replaced` tensors swapped in: same shards, same index, same config."""
    from safetensors.torch import save_file

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in base.iterdir():
        if f.is_file() and f.suffix != ".safetensors" and f.name != _info_name():
            shutil.copy2(f, out / f.name)
    for name, sd in shards.items():
        save_file({k: replaced.get(k, t).contiguous() for k, t in sd.items()}, str(out / name), metadata=metadata[name])


def _hessians(model, tok, modules: dict, texts: list[str], max_len: int = 384) -> dict:
    """X X^T / tokens of each quantized Linear's inputs over `texts`, through base + adapter."""
    import torch

    acc: dict = {}

    def hook(name):
        def f(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float32)
            h, n = acc.get(name, (0, 0))
            acc[name] = (h + x.T @ x, n + x.shape[0])

        return f

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in modules.items()]
    try:
        for text in texts[:CALIBRATION_TEXTS]:  # one text per pass: no padding tokens in the statistics
            ids = tok(text, return_tensors="pt", truncation=True, max_length=max_len, add_special_tokens=False)
            model(input_ids=ids["input_ids"])
    finally:
        for h in handles:
            h.remove()
    return {n: h / max(k, 1) for n, (h, k) in acc.items()}


def merge_and_requantize(quantized: str, adapter: Path, out: Path) -> Path:
    """Dense (base + adapter), saved to a temporary folder, then quantized with the base's recipe."""
    from silverbullet.generation.loading import load_causal_lm
    from silverbullet.quantize import LLMCOMPRESSOR_METHODS, QUANT_CONFIG_FILE, QuantizeConfig, quantize

    rec = recorded_quantization(quantized)
    if rec.get("method") not in LLMCOMPRESSOR_METHODS:
        raise UserError(
            f"{quantized} is a {rec.get('method')} checkpoint: --merge re-quantizes with llm-compressor recipes "
            "only (merging into bitsandbytes/AutoRound/GPTQ weights would round the update away); ship the adapter"
        )
    fields = set(QuantizeConfig.__dataclass_fields__) - {"model", "out"}
    model, tok = load_causal_lm(quantized, device="cpu", dtype="float32", adapter=adapter)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # the merged weights are dense now
    model.hf_quantizer = None
    with tempfile.TemporaryDirectory(prefix="silverbullet-merge-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if out.exists():
            shutil.rmtree(out)
        cfg = QuantizeConfig(model=tmp, out=str(out), **{k: v for k, v in rec.items() if k in fields})
        quantize(cfg, log=lambda m: None)
    info_file = out / QUANT_CONFIG_FILE
    info = json.loads(info_file.read_text())
    info["source_model"] = f"{quantized} + LoRA {adapter}, merged"
    info["config"]["model"] = info["source_model"]
    info["merge"] = {"method": "requantize", "base": str(quantized), "adapter": str(adapter)}
    info_file.write_text(json.dumps(info, indent=1))
    return out
