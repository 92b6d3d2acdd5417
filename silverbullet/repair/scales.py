"""Refine a merged checkpoint's quantization scales toward base + adapter (`--merge-method gptq-scales`).

Why: rounding base + adapter onto the base's grid keeps little of the repair at 2 bits. The
adapter works by many sub-step shifts; the integer codes cannot follow them, but each row's (or
group's) scale is a float the format already stores. So after the GPTQ merge has fixed the codes,
the scales are trained, codes frozen, to make the merged model's next-token distributions match
base + adapter's on the calibration text (KL divergence, teacher-forced). The checkpoint keeps its
format, its codes and its size: only `weight_scale` tensors change. This is PEQA's idea (Kim et al.
2023, fine-tuning only the scales of a quantized model) used as a distillation step.

Each scale is parametrized as s0 * exp(r) with r trained from 0, so a step changes scales by the
same proportion whatever their magnitude, and a scale never changes sign.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class ScaleRefineConfig:
    epochs: int = 8
    learning_rate: float = 1e-2
    max_len: int = 384
    seed: int = 0
    norms: bool = False  # also train the RMS/LayerNorm gains (dense in the base, so the format still holds)


class ScaledLinear(torch.nn.Module):
    """weight = (scale0 * exp(r)) per row/group x frozen integer codes (q - zero_point)."""

    def __init__(self, unit: torch.Tensor, scale0: torch.Tensor, group: int | None, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("unit", unit)
        self.register_buffer("scale0", scale0)
        self.r = torch.nn.Parameter(torch.zeros_like(scale0))
        self.group = group
        self.bias = bias

    def scale(self) -> torch.Tensor:
        return self.scale0 * torch.exp(self.r)

    def weight(self) -> torch.Tensor:
        s = self.scale()
        if self.group:
            s = s.repeat_interleave(self.group, dim=1)[:, : self.unit.shape[1]]
        return self.unit * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight(), self.bias)


def unit_codes(weight: torch.Tensor, scale: torch.Tensor, group: int | None) -> torch.Tensor:
    """(q - zero_point) from a dequantized weight and its scale: integers, up to float rounding."""
    s = scale.to(torch.float32)
    if group:
        s = s.repeat_interleave(group, dim=1)[:, : weight.shape[1]]
    return torch.round(weight.to(torch.float32) / s)


def refine_scales(
    teacher, student, tok, modules: dict[str, tuple[torch.Tensor, int | None]], texts: list[str],
    cfg: ScaleRefineConfig | None = None,
) -> tuple[dict[str, torch.Tensor], dict]:  # fmt: skip
    """Train the scales of `modules` ({name: (scale0, group size or None)}) in `student` (the merged
    model, dense, float32), and with `cfg.norms` its norm gains, so its distributions match
    `teacher`'s on `texts`. Returns the new tensors by checkpoint key (`<module>.weight_scale`, and
    the norm gains' own keys), float32, and a record (KL before / after, how far scales moved)."""
    cfg = cfg or ScaleRefineConfig()
    torch.manual_seed(cfg.seed)
    wrapped: dict[str, ScaledLinear] = {}
    for name, (scale0, group) in modules.items():
        parent_name, _, child = name.rpartition(".")
        parent = student.get_submodule(parent_name) if parent_name else student
        lin = getattr(parent, child)
        scale0 = scale0.to(torch.float32)
        unit = unit_codes(lin.weight.detach(), scale0, group)
        bias = lin.bias.detach() if getattr(lin, "bias", None) is not None else None
        wrapped[name] = ScaledLinear(unit, scale0, group, bias)
        setattr(parent, child, wrapped[name])
    for p in student.parameters():
        p.requires_grad_(False)
    params = [w.r for w in wrapped.values()]
    norms = {
        f"{mod_name}.{pn}": p
        for mod_name, mod in student.named_modules()
        if cfg.norms and "norm" in type(mod).__name__.lower()
        for pn, p in mod.named_parameters(recurse=False)
    }
    groups = [{"params": params}]
    if norms:  # gains sit near 1 (scales near 0.01-0.1): a tenth of the step, or they overshoot
        groups.append({"params": list(norms.values()), "lr": cfg.learning_rate / 10})
    for group in groups:
        for p in group["params"]:
            p.requires_grad_(True)
    opt = torch.optim.Adam(groups, lr=cfg.learning_rate)
    total = max(1, cfg.epochs * len(texts))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    encoded = [
        tok(t, return_tensors="pt", truncation=True, max_length=cfg.max_len, add_special_tokens=False)["input_ids"]
        for t in texts
    ]
    encoded = [e for e in encoded if e.shape[1] > 1]
    teacher.eval()
    student.eval()
    def kl(e: torch.Tensor) -> torch.Tensor:
        # the teacher's distributions are recomputed each time, not stored: texts x tokens x vocab
        # floats would not fit for a real vocabulary
        with torch.no_grad():
            target = torch.log_softmax(teacher(input_ids=e).logits.float(), dim=-1)
        logp = torch.log_softmax(student(input_ids=e).logits.float(), dim=-1)
        return torch.nn.functional.kl_div(logp, target, log_target=True, reduction="batchmean") / e.shape[1]

    with torch.no_grad():
        before = sum(float(kl(e)) for e in encoded) / max(len(encoded), 1)
    order = list(range(len(encoded)))
    g = torch.Generator().manual_seed(cfg.seed)
    for _ in range(cfg.epochs):
        for i in torch.randperm(len(order), generator=g).tolist():
            opt.zero_grad(set_to_none=True)
            kl(encoded[i]).backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        after = sum(float(kl(e)) for e in encoded) / max(len(encoded), 1)
        ratios = torch.cat([torch.exp(w.r).flatten() for w in wrapped.values()])
        new = {f"{name}.weight_scale": w.scale().detach().clone() for name, w in wrapped.items()}
        new.update({name: p.detach().clone() for name, p in norms.items()})
    record = {
        "texts": len(encoded),
        "epochs": cfg.epochs,
        "learning_rate": cfg.learning_rate,
        "scales": int(ratios.numel()),
        "norm_gains": sum(p.numel() for p in norms.values()),
        "kl_to_adapter_before": round(before, 6),
        "kl_to_adapter_after": round(after, 6),
        "scale_ratio_mean_abs_log": round(float(ratios.log().abs().mean()), 6),
        "scale_ratio_max": round(float(ratios.max()), 4),
        "scale_ratio_min": round(float(ratios.min()), 4),
    }
    return new, record
