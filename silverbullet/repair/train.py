"""A short TRL pass with PEFT LoRA on the quantized model, which stays on its quantized grid.

The compressed-tensors checkpoint is loaded dequantized (dense weights whose values are exactly the
quantized grid) and frozen; only LoRA matrices train, so the base stays low-bit and the repair ships
as a small adapter. Multi-GPU: run the same code under `accelerate launch` (TRL handles it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from silverbullet.errors import UserError

METHODS = ("sft", "dpo", "sft+dpo")


@dataclass
class RepairTrainConfig:
    method: str = "sft"  # sft | dpo | sft+dpo
    # Defaults chosen by bench/repair_sweep.py on held-out repair-split problems (bench/results/repair_sweep.json)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    learning_rate: float = 1e-3
    dpo_learning_rate: float = 2e-4
    epochs: float = 10.0
    dpo_epochs: float | None = None  # None: `epochs`
    weight_decay: float = 0.0
    batch_size: int = 16
    max_length: int = 512
    beta: float = 0.1
    seed: int = 0
    device: str = "auto"


def _lora(cfg: RepairTrainConfig):
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
    )


def _common_args(cfg: RepairTrainConfig, out: Path, lr: float, epochs: float) -> dict:
    import torch

    return dict(
        output_dir=str(out),
        num_train_epochs=epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        logging_steps=10,
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
        max_length=cfg.max_length,
        disable_tqdm=False,
        use_cpu=not torch.cuda.is_available() or cfg.device == "cpu",
        bf16=False,
    )


def train_adapter(
    quantized: str, sft_path: Path | None, dpo_path: Path | None, out: Path, cfg: RepairTrainConfig
) -> dict:
    """Train a LoRA adapter on the quantized model; returns timings and sizes."""
    if cfg.method not in METHODS:
        raise UserError(f"--method {cfg.method!r} is not known; use one of {', '.join(METHODS)}")
    from datasets import load_dataset

    from silverbullet.generation.loading import load_causal_lm, resolve_device

    # Load straight onto the training device: the Trainer does not move quantization-configured models.
    device = resolve_device(cfg.device)
    model, tok = load_causal_lm(quantized, device=device, dtype="float32", for_training=True)
    t0 = time.time()
    info: dict = {"method": cfg.method}
    adapter_dir = out
    if cfg.method in ("sft", "sft+dpo"):
        from trl import SFTConfig, SFTTrainer

        ds = load_dataset("json", data_files=str(sft_path), split="train").select_columns(["prompt", "completion"])
        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**_common_args(cfg, out / "_sft", cfg.learning_rate, cfg.epochs), completion_only_loss=True),
            train_dataset=ds,
            processing_class=tok,
            peft_config=_lora(cfg),
        )
        res = trainer.train()
        info["sft"] = {"examples": len(ds), "steps": res.global_step, "loss": round(res.training_loss, 4)}
        model = trainer.model
    if cfg.method in ("dpo", "sft+dpo"):
        from trl import DPOConfig, DPOTrainer

        ds = load_dataset("json", data_files=str(dpo_path), split="train").select_columns(
            ["prompt", "chosen", "rejected"]
        )
        peft_cfg = None if cfg.method == "sft+dpo" else _lora(cfg)
        if cfg.method == "sft+dpo":  # keep training the SFT adapter; the frozen base is DPO's reference
            for n, p in model.named_parameters():
                p.requires_grad = "lora_" in n
        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(
                **_common_args(cfg, out / "_dpo", cfg.dpo_learning_rate, cfg.dpo_epochs or cfg.epochs), beta=cfg.beta
            ),
            train_dataset=ds,
            processing_class=tok,
            peft_config=peft_cfg,
        )
        res = trainer.train()
        info["dpo"] = {"examples": len(ds), "steps": res.global_step, "loss": round(res.training_loss, 4)}
        model = trainer.model
    info["train_seconds"] = round(time.time() - t0, 1)
    model.save_pretrained(str(adapter_dir))
    info["adapter_bytes"] = sum(f.stat().st_size for f in adapter_dir.glob("*.safetensors"))
    info["base_bytes"] = sum(f.stat().st_size for f in Path(quantized).glob("*.safetensors"))
    return info
