"""`repair --merge`: fold the LoRA adapter into the base and quantize the result again.

Why: an adapter keeps the base on its grid but ships a second file and costs a LoRA matmul (or an
in-memory merge) at serving time. Merging gives one low-bit checkpoint, but W + BA is off the grid,
so re-quantizing with the base's own recipe may undo part of the repair; the merged checkpoint's
accuracy is therefore measured, never assumed.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from silverbullet.errors import UserError


def recorded_quantization(quantized: str) -> dict:
    """The QuantizeConfig fields `silverbullet quantize` wrote beside the checkpoint."""
    from silverbullet.quantize import QUANT_CONFIG_FILE

    f = Path(quantized) / QUANT_CONFIG_FILE
    if not f.is_file():
        raise UserError(
            f"{f} not found: --merge re-quantizes with the base's recipe, which only checkpoints made by "
            "`silverbullet quantize` record; ship the adapter instead (drop --merge)"
        )
    try:
        return json.loads(f.read_text())["config"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise UserError(f"{f} has no readable 'config' ({e}); re-run `silverbullet quantize`") from None


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
    info_file.write_text(json.dumps(info, indent=1))
    return out
