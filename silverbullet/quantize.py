"""Post-training quantization through llm-compressor, writing compressed-tensors checkpoints.

We do not write our own quantizers: llm-compressor's RTN (`QuantizationModifier`), GPTQ, AWQ and
SmoothQuant are what people ship with, and their compressed-tensors output loads in transformers
and vLLM alike. This module only turns a small config (method, bits, group size) into a recipe,
supplies calibration text, and records what was done next to the checkpoint.
"""

from __future__ import annotations

import fcntl
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError

LLMCOMPRESSOR_METHODS = ("rtn", "gptq", "awq", "smoothquant")  # -> compressed-tensors checkpoints
# Formats of other libraries, each saved as transformers loads it (see docs/formats.md):
# bitsandbytes NF4 / LLM.int8 (quantized as the weights load), AutoRound, GPTQModel's GPTQ and AWQ.
OTHER_METHODS = ("bnb-nf4", "bnb-int8", "autoround", "gptqmodel", "gptqmodel-awq")
METHODS = LLMCOMPRESSOR_METHODS + OTHER_METHODS
QUANT_CONFIG_FILE = "silverbullet_quantization.json"


@dataclass
class QuantizeConfig:
    model: str = "data/reference-model"
    method: str = "gptq"  # rtn | gptq | awq | smoothquant (W8A8)
    bits: int = 4
    group_size: int = 128  # 0 = one scale per output channel
    symmetric: bool = True
    out: str | None = None  # default: runs/_models/<model>-<method>-w<bits>g<group>
    calibration: str = "synthetic"  # benchmark name or JSONL path for calibration text
    calibration_samples: int = 256
    max_seq_length: int = 384
    seed: int = 0
    iters: int = 0  # AutoRound tuning iterations (0: its RTN mode; 200 is its default on a GPU)
    ignore: list[str] = field(default_factory=lambda: ["lm_head"])
    recipe: str | None = None  # an llm-compressor recipe file (e.g. sensitivity's recipe.yaml): replaces method/bits

    def tag(self) -> str:
        if self.recipe:
            import hashlib

            digest = hashlib.sha256(Path(self.recipe).read_bytes()).hexdigest()[:8]
            return f"recipe-{Path(self.recipe).stem}-{digest}"
        if self.method == "smoothquant":
            return "smoothquant-w8a8"
        if self.method.startswith("bnb-"):
            return self.method
        g = f"g{self.group_size}" if self.group_size else "ch"
        return f"{self.method}-w{self.bits}{g}"

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        from silverbullet.generation.gguf import gguf_source

        src = gguf_source(self.model)  # a converted GGUF file: named after the file, not its cache folder
        name = Path(str(src["gguf"]["path"])).stem if src and src.get("gguf", {}).get("path") else Path(self.model).name
        return Path("runs/_models") / f"{name}-{self.tag()}"


def _weight_args(cfg: QuantizeConfig):
    from compressed_tensors.quantization import QuantizationArgs

    if cfg.group_size:
        return QuantizationArgs(
            num_bits=cfg.bits, type="int", symmetric=cfg.symmetric, strategy="group", group_size=cfg.group_size
        )
    return QuantizationArgs(num_bits=cfg.bits, type="int", symmetric=cfg.symmetric, strategy="channel")


def check_method(cfg: QuantizeConfig) -> None:
    """Method, bits and group size, and the method's library: one line naming the extra if missing."""
    if cfg.method not in METHODS:
        raise UserError(f"--method {cfg.method!r} is not known; use one of {', '.join(METHODS)}")
    if not 2 <= cfg.bits <= 8:
        raise UserError(f"--bits {cfg.bits} is out of range; use 2 to 8")
    if cfg.group_size < 0:
        raise UserError(f"--group-size {cfg.group_size} is negative; use 0 (per output channel) or e.g. 32, 128")
    from silverbullet.generation.loading import require_quant_library

    library = {
        "bnb-nf4": "bitsandbytes",
        "bnb-int8": "bitsandbytes",
        "autoround": "auto-round",
        "gptqmodel": "gptq",
        "gptqmodel-awq": "awq",
    }.get(cfg.method, "compressed-tensors")
    require_quant_library(library, f"--method {cfg.method}")
    if cfg.method in LLMCOMPRESSOR_METHODS:
        import importlib.util

        if importlib.util.find_spec("llmcompressor") is None:
            raise UserError(
                f'--method {cfg.method} needs llm-compressor; install it with: pip install "silverbullet[quantize]"'
            )


def build_recipe(cfg: QuantizeConfig) -> list:
    """The llm-compressor modifiers for a config (weight-only unless SmoothQuant)."""
    check_method(cfg)
    if cfg.method in OTHER_METHODS:
        raise UserError(f"--method {cfg.method} is not an llm-compressor recipe")  # pragma: no cover - internal
    from compressed_tensors.quantization import QuantizationScheme
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    if cfg.method == "smoothquant":
        from llmcompressor.modifiers.smoothquant import SmoothQuantModifier

        return [
            SmoothQuantModifier(smoothing_strength=0.8),
            GPTQModifier(targets="Linear", scheme="W8A8", ignore=cfg.ignore),
        ]
    groups = {"group_0": QuantizationScheme(targets=["Linear"], weights=_weight_args(cfg))}
    if cfg.method == "rtn":
        return [QuantizationModifier(config_groups=groups, ignore=cfg.ignore)]
    if cfg.method == "gptq":
        return [GPTQModifier(config_groups=groups, ignore=cfg.ignore)]
    from llmcompressor.modifiers.awq import AWQModifier

    return [AWQModifier(config_groups=groups, ignore=cfg.ignore)]


def calibration_texts(cfg: QuantizeConfig) -> list[str]:
    """Calibration text: full solutions from a *training* split, never evaluation problems."""
    from silverbullet.benchmarks import load_benchmark
    from silverbullet.prompting import build_prompt

    problems = load_benchmark(cfg.calibration, split="train", limit=cfg.calibration_samples, seed=cfg.seed)
    return [build_prompt(p.question) + (p.solution or f"The answer is: {p.answer}\n") for p in problems]


def quantize(cfg: QuantizeConfig, log=print) -> Path:
    """Quantize `cfg.model` and save a compressed-tensors checkpoint; returns its directory."""

    check_method(cfg)
    out = cfg.out_dir()
    t0 = time.time()
    if cfg.method in OTHER_METHODS:
        _quantize_other(cfg, out)
    else:
        _quantize_llmcompressor(cfg, out)
    info = {
        "config": asdict(cfg),
        "tag": cfg.tag(),
        "seconds": round(time.time() - t0, 1),
        "source_model": str(cfg.model),
        "source_fingerprint": source_fingerprint(cfg.model),
    }
    (out / QUANT_CONFIG_FILE).write_text(json.dumps(info, indent=1))
    log(f"quantized {cfg.model} with {cfg.tag()} -> {out} in {info['seconds']}s")
    return out


def _quantize_llmcompressor(cfg: QuantizeConfig, out: Path) -> None:
    from silverbullet.generation.loading import load_causal_lm

    if cfg.recipe:
        if not Path(cfg.recipe).is_file():
            raise UserError(f"recipe {cfg.recipe} not found")
        recipe: Any = str(cfg.recipe)
    else:
        recipe = build_recipe(cfg)
    # "auto": fp32 for small models as before; a large one on a CPU with native bf16 loads in bf16
    # (calibrating a 1.5B model in fp32 takes hours on 2 cores; its weights came as bf16 anyway)
    model, tok = load_causal_lm(cfg.model, device="cpu", dtype="auto")
    if cfg.recipe:
        names = [n for n, _ in model.named_modules()]
        check_recipe_targets(Path(cfg.recipe), names, {type(m).__name__ for m in model.modules()})
        text = Path(cfg.recipe).read_text()
        needs_data = any(k in text for k in ("GPTQModifier", "AWQModifier", "SmoothQuantModifier"))
    else:
        needs_data = cfg.method != "rtn"
    kwargs = {}
    if needs_data:
        from datasets import Dataset

        texts = calibration_texts(cfg)
        enc = tok(texts, truncation=True, max_length=cfg.max_seq_length, add_special_tokens=False)
        kwargs = dict(
            dataset=Dataset.from_dict({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}),
            num_calibration_samples=len(texts),
            max_seq_length=cfg.max_seq_length,
        )
    from llmcompressor import oneshot

    _quiet_loguru()
    model = oneshot(model=model, recipe=recipe, tokenizer=tok, **kwargs)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)


def _quantize_other(cfg: QuantizeConfig, out: Path) -> None:
    """bitsandbytes (quantized as it loads, then saved), AutoRound and GPTQModel, each through its
    own library's API; the checkpoint's config.json names the format for transformers."""
    from silverbullet.generation.loading import load_causal_lm

    if cfg.method.startswith("bnb-"):
        load_in = "4bit" if cfg.method == "bnb-nf4" else "8bit"
        model, tok = load_causal_lm(cfg.model, device="auto", dtype="auto", load_in=load_in)
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        return
    texts = calibration_texts(cfg)
    if cfg.method == "autoround":
        from auto_round import AutoRound

        model, tok = load_causal_lm(cfg.model, device="cpu", dtype="float32")
        _quiet_loguru()
        # iters=0 is AutoRound's RTN mode (seconds on a CPU); its tuned mode takes minutes per layer there.
        ar = AutoRound(
            model,
            tok,
            bits=cfg.bits,
            group_size=cfg.group_size or -1,
            sym=cfg.symmetric,
            iters=cfg.iters,
            dataset=texts,
            nsamples=len(texts),
            seqlen=min(cfg.max_seq_length, 128),
            seed=cfg.seed,
        )
        tmp = out.with_name(out.name + ".tmp")
        ar.quantize_and_save(str(tmp), format="auto_round")
        _move_saved(tmp, out)
        tok.save_pretrained(out)
        return
    _quantize_gptqmodel(cfg, out, texts)


def _quantize_gptqmodel(cfg: QuantizeConfig, out: Path, texts: list[str]) -> None:
    """GPTQModel's GPTQ (`gptqmodel`) or AWQ (`gptqmodel-awq`, AutoAWQ's GEMM layout, always with zero
    points). Runs on a CPU with GPTQModel's torch kernels (checked with gptqmodel 7.6.0; docs/formats.md)."""
    import os
    import shutil
    import tempfile

    from silverbullet.generation.loading import load_tokenizer, preflight

    preflight(cfg.model)  # safetensors only, no checkpoint code: GPTQModel loads the model itself
    # gptqmodel 7.6.0 sizes its CPU worker pool at half the cores and then asks for 2 loader workers
    # out of it: on a 1-3 core machine that is "requests 2 workers but parent 'cpu' only has 1".
    # Its own default otherwise (half the cores, at most 12), but never fewer than 2.
    os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(12, max(2, ((os.cpu_count() or 1) + 1) // 2))))
    import torch
    from gptqmodel import BACKEND, GPTQModel
    from gptqmodel import QuantizeConfig as GPTQConfig

    group_size = cfg.group_size or -1
    backend = BACKEND.AUTO
    if cfg.method == "gptqmodel-awq":
        qcfg = GPTQConfig(bits=cfg.bits, group_size=group_size, sym=False, method="awq", format="gemm")
        if not torch.cuda.is_available():
            backend = BACKEND.TORCH  # AUTO picks the CUDA GEMM kernel to pack with, and fails on a CPU
    else:
        qcfg = GPTQConfig(bits=cfg.bits, group_size=group_size, sym=cfg.symmetric)
    model = GPTQModel.load(cfg.model, qcfg, trust_remote_code=False)
    with tempfile.TemporaryDirectory() as logs:
        _gptqmodel_logs_to(Path(logs))  # not ./logs/ in the working directory
        model.quantize(texts, backend=backend)
    model.save(str(out))  # with its per-layer quant_log.csv
    # GPTQModel rewrites generation_config.json (it sets do_sample: true) and the tokenizer config:
    # the quantized checkpoint generates as its source does.
    src = Path(cfg.model)
    if (src / "generation_config.json").is_file():
        shutil.copyfile(src / "generation_config.json", out / "generation_config.json")
    load_tokenizer(cfg.model).save_pretrained(out)


def _gptqmodel_logs_to(path: Path) -> None:
    """GPTQModel 7.6 writes a log file per quantization pass under a relative `logs/`."""
    try:
        from gptqmodel.looper import loop_processor
    except ImportError:  # pragma: no cover - another layout
        return
    if hasattr(loop_processor, "_PROJECT_LOG_DIR"):
        loop_processor._PROJECT_LOG_DIR = path


def _move_saved(tmp: Path, out: Path) -> None:
    """AutoRound saves into a subfolder it names; move the checkpoint to `out`."""
    import shutil

    found = [p.parent for p in tmp.rglob("config.json")]
    if not found:
        raise UserError(f"AutoRound wrote no checkpoint under {tmp}")
    if out.exists():
        shutil.rmtree(out)
    shutil.move(str(found[0]), str(out))
    shutil.rmtree(tmp, ignore_errors=True)


def ensure_quantized(cfg: QuantizeConfig, log=print) -> Path:
    """`cfg.out_dir()`, quantized now unless a checkpoint built from the same source files is
    already there (a retrained or pulled source model makes the old one stale)."""
    out = cfg.out_dir()
    if _built_from_source(out, cfg.model):
        return out
    # Two commands started together (two terminals, parallel test workers) would both write into the
    # same folder: the second waits for the first and then finds its checkpoint.
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _built_from_source(out, cfg.model):
            return out
        exists = (out / "config.json").exists()
        t0 = time.time()
        path = quantize(cfg, log=lambda m: None)
    why = f"{cfg.model} changed since it was quantized" if exists else "first use"
    log(f"[green]✓[/] quantized {cfg.model} ({cfg.tag()}) -> {path} [dim]({why}; {time.time() - t0:.1f}s)[/]")
    return path


def _built_from_source(out: Path, model: str) -> bool:
    """A checkpoint is in `out` and was built from `model`'s current files."""
    try:
        built_from = json.loads((out / QUANT_CONFIG_FILE).read_text()).get("source_fingerprint")
    except (OSError, ValueError, AttributeError):
        return False
    return (out / "config.json").exists() and built_from == source_fingerprint(model)


def source_fingerprint(model: str) -> str | None:
    """Hash of a local source model's files (None for a hub id): a checkpoint built from another
    version of the model (retrained, pulled) is then known to be stale."""
    from silverbullet.generation.loading import fingerprint_dir, is_local

    return fingerprint_dir(model)[:16] if is_local(model) else None


def _quiet_loguru() -> None:
    try:
        from loguru import logger

        logger.remove()
        logger.add(lambda m: None, level="ERROR")
    except ImportError:  # pragma: no cover
        pass


# ------------------------------------------------------------------------------------------ recipes


# vLLM serves q/k/v as one fused layer and gate/up as another, and needs one scheme per fused layer
# ("Found different quantization schemes for the shards of ...qkv_proj").
FUSED = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def with_fused_siblings(keep: list[str], module_names: list[str] | None = None) -> list[str]:
    """`keep` plus every module vLLM fuses with one of them (the same parent's q/k/v or gate/up), in
    order; with `module_names`, only siblings the model has."""
    out = list(keep)
    for name in keep:
        parent, _, leaf = name.rpartition(".")
        for group in FUSED:
            if leaf in group:
                for sib in group:
                    full = f"{parent}.{sib}" if parent else sib
                    if full not in out and (module_names is None or full in module_names):
                        out.append(full)
    return out


def write_recipe(
    path: Path, quantized: str, keep: list[str], keep_bits: int, servable: bool = True,
    module_names: list[str] | None = None,
) -> Path:  # fmt: skip
    """An llm-compressor recipe: the base checkpoint's own weight scheme for every linear module but
    `keep`, which get `keep_bits` (or stay unquantized at 16). Targets are exact module names. With
    `servable` a kept module's fused siblings are kept too (`with_fused_siblings`), so vLLM loads the
    checkpoint; without it the recipe keeps exactly `keep` (transformers loads either)."""
    if servable:
        keep = with_fused_siblings(keep, module_names)
    q = json.loads((Path(quantized) / "config.json").read_text())["quantization_config"]
    group = next(g for g in q["config_groups"].values() if isinstance(g, dict) and g.get("weights"))
    w = {k: v for k, v in group["weights"].items() if v is not None and k in _WEIGHT_KEYS}
    base_ignore = [x for x in q.get("ignore") or [] if isinstance(x, str)] or ["lm_head"]
    kept = [f"re:^{re.escape(n)}$" for n in keep]
    groups: dict[str, Any] = {"group_0": {"targets": ["Linear"], "weights": w}}
    ignore = list(base_ignore)
    if keep_bits >= 16:
        ignore += kept
    else:
        groups["group_1"] = {"targets": kept, "weights": {**w, "num_bits": keep_bits}}
    recipe = {"quant_stage": {"quant_modifiers": {"QuantizationModifier": {"ignore": ignore, "config_groups": groups}}}}
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# silverbullet sensitivity: keep these modules at higher precision (silverbullet quantize --recipe)\n"
        + yaml.safe_dump(recipe, sort_keys=False)
    )
    return path


_WEIGHT_KEYS = ("num_bits", "type", "symmetric", "strategy", "group_size", "block_structure", "dynamic", "observer")


def recipe_targets(path: Path) -> list[str]:
    """Every module target a recipe names (config groups' targets and ignore lists), for validation."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UserError(f"cannot read recipe {path}: {str(e).splitlines()[0]}") from None
    found: list[str] = []

    def walk(x: Any, key: str = "") -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, k)
        elif isinstance(x, list):
            for v in x:
                walk(v, key)
        elif isinstance(x, str) and key in ("targets", "ignore"):
            found.append(x)

    walk(data)
    if not found:
        raise UserError(f"recipe {path} names no targets; expected llm-compressor config_groups with targets")
    return found


def check_recipe_targets(path: Path, module_names: list[str], class_names: set[str]) -> None:
    """One line for a recipe naming a module the model does not have (llm-compressor would skip it)."""
    for t in recipe_targets(path):
        if t in class_names:
            continue
        if t.startswith("re:"):
            rx = re.compile(t[3:])
            if not any(rx.search(n) for n in module_names):
                raise UserError(f"recipe {path}: target {t!r} matches no module of the model; check the names")
        elif t not in module_names and not any(n.endswith("." + t) or n == t for n in module_names):
            raise UserError(f"recipe {path}: target {t!r} matches no module of the model; check the names")
