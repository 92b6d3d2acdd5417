"""A short TRL pass with PEFT LoRA on the quantized model, which stays on its quantized grid.

The compressed-tensors checkpoint is loaded dequantized (dense weights whose values are exactly the
quantized grid) and frozen; only LoRA matrices train, so the base stays low-bit and the repair ships
as a small adapter. Several GPUs: run the same command under `accelerate launch`; every process
trains on its share of each batch (TRL/Accelerate data parallel) and rank 0 saves the adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError
from silverbullet.run.files import TRAIN_LOG

METHODS = ("sft", "dpo", "sft+dpo", "grpo")
SFT_LOSSES = ("nll", "dft")
# Config fields added after adapters were first keyed, with their defaults: at the default they are
# left out of the training key, so an adapter trained before they existed is still reused.
_LATER_FIELDS = {"use_rslora": False, "use_dora": False, "sft_loss": "nll", "grad_accum": 1}


@dataclass
class RepairTrainConfig:
    method: str = "sft"  # sft | dpo | sft+dpo | grpo
    # Defaults chosen by bench/repair_sweep.py on held-out repair-split problems (bench/results/repair_sweep.json)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # PEFT's variants, off by default (measured on the demo setting, docs/repair.md): rsLoRA scales
    # the update by alpha/sqrt(r) instead of alpha/r; DoRA splits each weight into magnitude and direction
    use_rslora: bool = False
    use_dora: bool = False
    # SFT's token loss: nll, or dft (TRL's Dynamic Fine-Tuning: each token's loss weighted by the
    # model's own detached probability of it, a guard against drifting on what it already writes)
    sft_loss: str = "nll"
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    learning_rate: float = 1e-3
    dpo_learning_rate: float = 2e-4
    epochs: float = 10.0
    dpo_epochs: float | None = None  # None: `epochs`
    weight_decay: float = 0.0
    batch_size: int = 16  # the global batch: examples per optimizer step, over all processes
    grad_accum: int = 1  # steps accumulated per optimizer step: batch_size / grad_accum examples per forward
    max_length: int = 512
    beta: float = 0.1
    seed: int = 0
    device: str = "auto"
    gradient_checkpointing: bool = False  # True trades compute for memory on models that need it
    load_in: str | None = None  # bitsandbytes base ("4bit" NF4 | "8bit"): QLoRA, the base stays quantized
    # GRPO (TRL's GRPOTrainer): the model samples `num_generations` solutions per prompt and learns
    # from their rewards (repair/reward.py); `batch_size` completions per step
    reward: str = "process"  # process | outcome
    num_generations: int = 8
    grpo_epochs: float = 1.0
    grpo_learning_rate: float = 1e-4
    max_completion_length: int = 320
    temperature: float = 1.0


def check_grpo_options(cfg: RepairTrainConfig) -> None:
    """One line before any diagnosis runs: an unknown reward, or a batch GRPO cannot split."""
    from silverbullet.repair.reward import REWARDS

    if cfg.reward not in REWARDS:
        raise UserError(f"--reward {cfg.reward!r} is not known; use one of {', '.join(REWARDS)}")
    if cfg.num_generations < 2 or cfg.batch_size % cfg.num_generations:
        raise UserError(
            f"--num-generations {cfg.num_generations}: GRPO needs at least 2 per prompt, and the training batch "
            f"({cfg.batch_size}) must be a multiple of it"
        )


def check_batch_options(cfg: RepairTrainConfig) -> None:
    """One line before any diagnosis runs: a --grad-accum that does not divide each process's share
    of the training batch."""
    world = dist_world()[1]
    if cfg.grad_accum < 1 or (cfg.batch_size // world) % cfg.grad_accum:
        raise UserError(
            f"--grad-accum {cfg.grad_accum} must divide the training batch per process "
            f"({cfg.batch_size} over {world} process(es)); pick a divisor of {cfg.batch_size // world}"
        )


def dist_world() -> tuple[int, int]:
    """(rank, world size) as `accelerate launch` / torchrun set them; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def leave_process_group() -> None:
    """End this process's part in the training process group (after the last collective), so
    what rank 0 does next (loading and generating) cannot wait on ranks that have exited."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _lora(cfg: RepairTrainConfig, model: Any):
    from peft import LoraConfig

    from silverbullet.generation.loading import lora_custom_modules

    config = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        task_type="CAUSAL_LM",
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
    )
    custom = lora_custom_modules(model)
    if custom:  # AutoRound's QuantLinear: PEFT's GPTQ LoRA wrapper (generation/loading.py)
        config._register_custom_module(custom)
    return config


def _common_args(cfg: RepairTrainConfig, out: Path, lr: float, epochs: float) -> dict:
    import torch

    check_batch_options(cfg)
    _, world = dist_world()
    return dict(
        output_dir=str(out),
        num_train_epochs=epochs,
        # `batch_size` is the global batch: the same recipe on one device or several, and with
        # gradient accumulation (smaller forward passes, the same optimizer steps)
        per_device_train_batch_size=max(1, cfg.batch_size // world // cfg.grad_accum),
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=lr,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=2,
        logging_steps=1,  # every step into train_log.jsonl (and the bar), cheap next to the step itself
        save_strategy="no",
        report_to=[],
        seed=cfg.seed,
        max_length=cfg.max_length,
        disable_tqdm=True,  # our own progress bar (with the loss) and train_log.jsonl instead
        use_cpu=not torch.cuda.is_available() or cfg.device == "cpu",
        ddp_find_unused_parameters=False,  # every LoRA matrix takes part in every forward
        bf16=False,
        # TRL turns checkpointing on by default; for a model this small it only recomputes the
        # forward pass (the same gradients, about a third more compute per step).
        gradient_checkpointing=cfg.gradient_checkpointing,
    )


def _one_process_one_gpu(args) -> None:
    """A plain process on a host with several GPUs: train on the model's own GPU. (Trainer would
    wrap it in nn.DataParallel, which TRL refuses; several GPUs are for `accelerate launch`.)"""
    if dist_world()[1] == 1 and args.n_gpu > 1:
        args._n_gpu = 1  # what Trainer itself does for a model placed with a device_map


def _train(trainer, description: str, log_path: Path, show: bool):
    """trainer.train() behind one progress bar of ours, its loss in the bar's postfix and every
    logged dict (loss, learning rate, grad norm) appended to `log_path` as JSONL."""
    from transformers import TrainerCallback

    from silverbullet import ui

    class _Report(TrainerCallback):
        def __init__(self, st: ui.Stage) -> None:
            self.st = st

        def on_train_begin(self, args, state, control, **kwargs):
            self.st.update(0, state.max_steps)

        def on_step_end(self, args, state, control, **kwargs):
            self.st.update(state.global_step, state.max_steps)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not logs or not show:
                return
            with open(log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"stage": description, "step": state.global_step, **logs}) + "\n")
            if "loss" in logs:
                self.st.postfix(f"loss {float(logs['loss']):.4g}")

    import torch

    with ui.stage(description, show) as st:
        trainer.add_callback(_Report(st))
        try:
            res = trainer.train()
        except torch.OutOfMemoryError:
            res = None  # handled below, outside the handler: its traceback holds the step's tensors
        if res is None:
            raise _out_of_memory(trainer, description)
        st.summary = f"{res.global_step} steps, loss {res.training_loss:.4g}"
    return res


def _out_of_memory(trainer, description: str) -> UserError:
    """Out of GPU memory in training: one line naming a setting that fits. Smaller per-step batches
    (the divisors of the one that failed, largest first) are tried until a forward and backward pass
    of that many of the longest examples fits; the global batch stays, the rest is gradient
    accumulation (`--grad-accum`)."""
    import gc

    import torch

    args, model = trainer.args, trainer.model
    per_step, accum = args.per_device_train_batch_size, args.gradient_accumulation_steps
    rows, length = _probe_shape(trainer)
    model.zero_grad(set_to_none=True)
    trainer.optimizer = trainer.lr_scheduler = None
    gc.collect()
    torch.cuda.empty_cache()
    fits = next((b for b in _divisors_below(per_step) if _step_fits(model, b * rows, length)), None)
    where = f"{description} with {per_step} examples per step (--grad-accum {accum})"
    if fits is None:
        return UserError(
            f"out of GPU memory {where}: not even 1 example of {length} tokens fits a forward and backward pass; "
            "use --load-in 4bit (QLoRA), shorter solutions, or a GPU with more memory"
        )
    k = accum * per_step // fits
    return UserError(
        f"out of GPU memory {where}: {fits} per step fit (a forward and backward pass of the longest, {length} "
        f"tokens); rerun with --grad-accum {k}: the same batch, {fits} examples a step, {k} steps accumulated"
    )


def _divisors_below(n: int) -> list[int]:
    return [b for b in range(n - 1, 0, -1) if n % b == 0]


def _probe_shape(trainer) -> tuple[int, int]:
    """(sequences per example, tokens in the longest) of the trainer's set: SFT rows are one
    sequence, DPO rows two (chosen and rejected), GRPO a prompt and its longest completion."""
    ds, args = trainer.train_dataset, trainer.args
    cols = set(ds.column_names)
    if "input_ids" in cols:
        return 1, max(len(x) for x in ds["input_ids"])
    if "chosen_ids" in cols:  # TRL's DPO columns
        longest = max(
            len(p) + max(len(c), len(r))
            for p, c, r in zip(ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], strict=True)
        )
        return 2, min(longest, getattr(args, "max_length", None) or longest)
    tok = trainer.processing_class
    prompt = max((len(tok(p)["input_ids"]) for p in ds["prompt"]), default=0) if "prompt" in cols else 0
    return 1, prompt + (getattr(args, "max_completion_length", None) or 512)


def _step_fits(model, rows: int, length: int) -> bool:
    """Does one forward and backward pass of `rows` sequences of `length` tokens fit on the GPU?"""
    import gc

    import torch

    ok = True
    try:
        ids = torch.ones((rows, length), dtype=torch.long, device=model.device)
        model(input_ids=ids, labels=ids).loss.backward()
    except torch.OutOfMemoryError:
        ok = False
    model.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return ok


def train_dtype(device: str, quantized: str, load_in: str | None = None) -> str:
    """float32, except where generation itself runs the model in bf16 on CPU (a large model on a CPU
    with native bf16: loading.resolve_dtype). There a 1.5B model's forward and backward in fp32 on 2
    cores are about 3x slower; the frozen base computes in bf16 as QLoRA's does, and the LoRA
    matrices stay float32 (PEFT keeps adapters in fp32 over a bf16 base)."""
    from silverbullet.generation.loading import resolve_dtype

    if device.startswith("cuda") or load_in is not None:
        return "float32"
    import torch

    return "bfloat16" if resolve_dtype("auto", "cpu", quantized) == torch.bfloat16 else "float32"


def train_adapter(
    quantized: str, sft_path: Path | None, dpo_path: Path | None, out: Path, cfg: RepairTrainConfig
) -> dict:
    """Train a LoRA adapter on the quantized model; returns timings and sizes. With `grpo`,
    `sft_path` is the GRPO prompt set (prompt / question / answer: `dataset.grpo_rows`)."""
    if cfg.method not in METHODS:
        raise UserError(f"--method {cfg.method!r} is not known; use one of {', '.join(METHODS)}")
    if cfg.sft_loss not in SFT_LOSSES:
        raise UserError(f"sft_loss {cfg.sft_loss!r} is not known; use one of {', '.join(SFT_LOSSES)}")
    from datasets import load_dataset

    from silverbullet.generation.loading import load_causal_lm, resolve_device

    # Load straight onto the training device: the Trainer does not move quantization-configured models.
    device = resolve_device(cfg.device)
    rank, world = dist_world()
    if world > 1 and device == "cuda":
        device = f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    dtype = train_dtype(device, quantized, cfg.load_in)
    model, tok = load_causal_lm(quantized, device=device, dtype=dtype, for_training=True, load_in=cfg.load_in)
    t0 = time.time()
    info: dict = {"method": cfg.method}
    adapter_dir = out
    if cfg.method in ("sft", "sft+dpo"):
        from trl import SFTConfig, SFTTrainer

        ds = load_dataset("json", data_files=str(sft_path), split="train").select_columns(["prompt", "completion"])
        args = SFTConfig(**_common_args(cfg, out / "_sft", cfg.learning_rate, cfg.epochs), completion_only_loss=True,
                         loss_type=cfg.sft_loss)  # fmt: skip
        _one_process_one_gpu(args)
        with _lora_supported(quantized):
            trainer = SFTTrainer(
                model=model,
                args=args,
                train_dataset=ds,
                processing_class=tok,
                peft_config=_lora(cfg, model),
            )
        res = _train(trainer, "training LoRA (SFT)", out.parent / TRAIN_LOG, rank == 0)
        info["sft"] = {"examples": len(ds), "steps": res.global_step, "loss": round(res.training_loss, 4)}
        model = trainer.model
    if cfg.method in ("dpo", "sft+dpo"):
        from trl import DPOConfig, DPOTrainer

        ds = load_dataset("json", data_files=str(dpo_path), split="train").select_columns(
            ["prompt", "chosen", "rejected"]
        )
        peft_cfg = None if cfg.method == "sft+dpo" else _lora(cfg, model)
        if cfg.method == "sft+dpo":  # keep training the SFT adapter; the frozen base is DPO's reference
            for n, p in model.named_parameters():
                p.requires_grad = "lora_" in n
        args = DPOConfig(
            **_common_args(cfg, out / "_dpo", cfg.dpo_learning_rate, cfg.dpo_epochs or cfg.epochs), beta=cfg.beta
        )
        _one_process_one_gpu(args)
        with _lora_supported(quantized):
            trainer = DPOTrainer(
                model=model,
                args=args,
                train_dataset=ds,
                processing_class=tok,
                peft_config=peft_cfg,
            )
        res = _train(trainer, "training LoRA (DPO)", out.parent / TRAIN_LOG, rank == 0)
        info["dpo"] = {"examples": len(ds), "steps": res.global_step, "loss": round(res.training_loss, 4)}
        model = trainer.model
    if cfg.method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        from silverbullet.repair.reward import reward_function

        check_grpo_options(cfg)
        ds = load_dataset("json", data_files=str(sft_path), split="train").select_columns(
            ["prompt", "question", "answer"]
        )
        common = _common_args(cfg, out / "_grpo", cfg.grpo_learning_rate, cfg.grpo_epochs)
        common.pop("max_length")
        args = GRPOConfig(
            **common,
            num_generations=cfg.num_generations,
            max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature,
            remove_unused_columns=False,  # the reward reads `question` and `answer`
            beta=0.0,  # no KL term: no reference model to hold (the frozen base is the LoRA's anchor)
        )
        _one_process_one_gpu(args)
        with _lora_supported(quantized):
            trainer = GRPOTrainer(
                model=model,
                reward_funcs=[reward_function(cfg.reward)],
                args=args,
                train_dataset=ds,
                processing_class=tok,
                peft_config=_lora(cfg, model),
            )
        res = _train(trainer, f"training LoRA (GRPO, {cfg.reward} reward)", out.parent / TRAIN_LOG, rank == 0)
        info["grpo"] = {"prompts": len(ds), "steps": res.global_step, "loss": round(res.training_loss, 4),
                        "reward": cfg.reward, "num_generations": cfg.num_generations,
                        "completions": res.global_step * cfg.batch_size}  # fmt: skip
        model = trainer.model
    info["train_seconds"] = round(time.time() - t0, 1)
    info["processes"] = world
    if rank == 0:
        model.save_pretrained(str(adapter_dir))
        info["adapter_bytes"] = sum(f.stat().st_size for f in adapter_dir.glob("*.safetensors"))
    info["base_bytes"] = sum(f.stat().st_size for f in Path(quantized).glob("*.safetensors"))
    return info


@contextmanager
def _lora_supported(quantized: str):
    """PEFT refuses layers it cannot wrap (a quantized linear of a library it does not know):
    one line naming the checkpoint and the layer, not PEFT's traceback."""
    try:
        yield
    except ValueError as e:
        msg = str(e)
        if "is not supported" not in msg or "Target module" not in msg:
            raise
        layer = msg.split("Target module", 1)[1].split("is not supported", 1)[0].strip()
        raise UserError(
            f"LoRA cannot attach to {quantized}: PEFT does not support its {layer} layers; repair a checkpoint "
            "whose layers PEFT wraps (compressed-tensors, bitsandbytes; docs/formats.md) or ship it unrepaired"
        ) from None


def training_key(quantized: str, sft_path: Path | None, dpo_path: Path | None, cfg: RepairTrainConfig) -> str:
    """What an adapter was trained from: the base, the set files' bytes and the config."""
    config = asdict(cfg)
    for name, default in _LATER_FIELDS.items():
        if config[name] == default:
            del config[name]
    h = hashlib.sha256(json.dumps({"base": str(quantized), "config": config}, sort_keys=True).encode())
    for path in (sft_path, dpo_path):
        h.update(path.read_bytes() if path is not None and path.exists() else b"-")
    return h.hexdigest()[:16]


def train_or_reuse(
    quantized: str, sft_path: Path | None, dpo_path: Path | None, out: Path, cfg: RepairTrainConfig
) -> tuple[dict, bool]:
    """The adapter in `out` when a finished run trained it from the same sets and config (an
    interrupted repair resumes at the re-measure, not minutes of training earlier); else train."""
    key = training_key(quantized, sft_path, dpo_path, cfg)
    info_path = out / "train_info.json"
    if info_path.exists() and (out / "adapter_model.safetensors").exists():
        try:
            old = json.loads(info_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = {}
        if old.get("key") == key:
            return old["info"], True
    main = dist_world()[0] == 0
    if main:
        info_path.unlink(missing_ok=True)  # an interrupted training leaves no claim on the adapter
    info = train_adapter(quantized, sft_path, dpo_path, out, cfg)
    if main:
        info_path.write_text(json.dumps({"key": key, "info": info}, indent=1))
    return info, False
