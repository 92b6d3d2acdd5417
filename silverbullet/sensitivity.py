"""`silverbullet sensitivity RUN_DIR`: which quantized modules cause the first faulty steps.

Diagnose says *where in the solution* the quantized model first goes wrong; this says *where in the
model*. For each flip of a diagnose run we hold the quantized model's own prefix fixed and ask, by
teacher-forced scoring only (no generation), what restoring some modules to the reference model's
weights does at the faulty step:
- is the reference model's step now the greedy choice, token for token ("restored")?
- how does the log-probability of the reference step move against the quantized one's?
Blocks and module types are scored first, then single modules (within the most sensitive blocks on
large models), so the cost stays a few hundred batched forward passes. Modules are ranked by flips
restored per byte it costs to keep them at a higher precision, and a greedy recipe keeps the
smallest set that restores a target share of the flips (`recipe.yaml`, an llm-compressor recipe that
`silverbullet quantize --recipe` applies). Only a re-quantized, re-diagnosed checkpoint says what the
recipe really buys: teacher forcing on one step is a proxy, and `bench/mixed_precision.py` measures.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from silverbullet import ui
from silverbullet.errors import UserError
from silverbullet.grading import is_correct
from silverbullet.prompting import build_prompt, extract_answer
from silverbullet.quantize import with_fused_siblings, write_recipe
from silverbullet.run.files import ATTRIBUTION, CONFIG, PROBLEMS, SENSITIVITY
from silverbullet.run.jsonl import read_jsonl_rows

SKIP = ("lm_head",)  # kept out of every quantization recipe here (the embedding is tied)
_BLOCK_RE = re.compile(r"\.layers\.(\d+)\.")
_POSITION_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(\w+(?:\.\w+)*)$")


@dataclass
class SensitivityConfig:
    run: str
    out: str | None = None  # default: RUN/sensitivity
    max_flips: int = 128  # flips scored (the first ones in problem order)
    answer_sample: int = 16  # flips whose final answer is regenerated under the recipe
    target: float = 0.8  # share of the restorable flips the recipe must restore
    keep_bits: int = 8  # precision of the kept modules (16 = not quantized at all)
    max_single: int = 256  # score every module alone up to this many; else within the top blocks
    top_blocks: int = 4
    batch_size: int = 32
    device: str = "auto"

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path(self.run) / "sensitivity"


@dataclass
class Flip:
    problem_id: str
    prompt: str  # question prompt + the quantized model's prefix before its faulty step
    faulty: str  # the quantized model's faulty step line
    reference: str  # the reference model's step there
    gold: str
    grading: str


def module_block(name: str) -> int | None:
    m = _BLOCK_RE.search(name + ".")
    return int(m.group(1)) if m else None


def module_type(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def module_position(name: Any) -> tuple[int, str] | None:
    """(block, path inside the block) of a Llama/Qwen-style name: `model.layers.3.self_attn.q_proj`
    -> (3, "self_attn.q_proj"). None for anything else (lm_head, other layouts, non-strings), so a
    plot over blocks skips what it cannot place instead of failing on an unfamiliar model."""
    m = _POSITION_RE.search(name) if isinstance(name, str) else None
    return (int(m.group(1)), m.group(2)) if m else None


# ------------------------------------------------------------------------------------------ inputs


def read_flips(run: Path, limit: int) -> tuple[dict, list[Flip]]:
    """The run's config and its located, aligned flips (the inputs of every score)."""
    if not (run / CONFIG).is_file() or not (run / ATTRIBUTION).exists():
        raise UserError(f"{run} is not a finished `silverbullet diagnose` run (config.json/attribution.jsonl missing)")
    cfg = json.loads((run / CONFIG).read_text())
    problems = {r["id"]: r for r in read_jsonl_rows(run / PROBLEMS)}
    flips = []
    for r in read_jsonl_rows(run / ATTRIBUTION):
        located = r.get("faulty_line") and r.get("reference_line")
        if r.get("model") != "quantized" or not r.get("flip") or not located:
            continue
        p = problems.get(r["problem_id"], {})
        flips.append(
            Flip(
                problem_id=r["problem_id"],
                prompt=build_prompt(r["question"]) + r.get("prefix", ""),
                faulty=r["faulty_line"],
                reference=r["reference_line"],
                gold=str(r.get("gold_answer", p.get("answer", ""))),
                grading=(p.get("meta") or {}).get("grading", "numeric"),
            )
        )
    if not flips:
        raise UserError(
            f"{run} has no located flips (right in the reference, wrong in the quantized model, with an aligned "
            "reference step); sensitivity needs some: diagnose more problems or a lower-bit checkpoint"
        )
    return cfg, flips[:limit]


class Scorer:
    """Teacher-forced scores of every flip's reference step and faulty step on its prefix, in
    padded batches tokenized once."""

    def __init__(self, tokenizer: Any, flips: list[Flip], batch_size: int, device: str) -> None:
        import torch

        self.flips, self.batch_size, self.device = flips, batch_size, device
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.batches = []  # (ids, attention, [(prompt_len, cont_len)], kind) per batch
        prompts = [tokenizer(f.prompt, add_special_tokens=True)["input_ids"] for f in flips]
        # Flips in order of prompt length: batches of like lengths waste little on padding. Both kinds
        # use the same order, so the i-th reference and faulty scores belong to the same flip.
        order = sorted(range(len(flips)), key=lambda i: len(prompts[i]))
        for kind in ("reference", "faulty"):
            rows = []
            for i in order:
                c = tokenizer(getattr(flips[i], kind), add_special_tokens=False)["input_ids"]
                rows.append((prompts[i], c))
            for s in range(0, len(rows), batch_size):
                chunk = rows[s : s + batch_size]
                width = max(len(p) + len(c) for p, c in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                att = torch.zeros((len(chunk), width), dtype=torch.long)
                for i, (p, c) in enumerate(chunk):
                    ids[i, : len(p) + len(c)] = torch.tensor(p + c)
                    att[i, : len(p) + len(c)] = 1
                self.batches.append((ids.to(device), att.to(device), [(len(p), len(c)) for p, c in chunk], kind))
        self.forward_passes = 0

    def score(self, model: Any) -> dict:
        """restored: the reference step is the greedy choice at every token; pref: log p(reference
        step) - log p(faulty step); margin: mean top-1 minus top-2 log-prob on the faulty step."""
        import torch

        logp = {"reference": [], "faulty": []}
        greedy, margins = [], []
        with torch.inference_mode():
            for ids, att, lens, kind in self.batches:
                logits = model(input_ids=ids, attention_mask=att).logits.float()
                self.forward_passes += 1
                for i, (p, c) in enumerate(lens):
                    lg = logits[i, p - 1 : p + c - 1]
                    tgt = ids[i, p : p + c]
                    lp = torch.log_softmax(lg, dim=-1)
                    logp[kind].append(float(lp.gather(1, tgt[:, None]).sum()))
                    if kind == "reference":
                        greedy.append(bool((lg.argmax(-1) == tgt).all()))
                    else:
                        top = lg.topk(2, dim=-1).values
                        margins.append(float((top[:, 0] - top[:, 1]).mean()))
        pref = [a - b for a, b in zip(logp["reference"], logp["faulty"])]
        return {
            "restored": greedy,
            "n_restored": sum(greedy),
            "pref_mean": sum(pref) / len(pref),
            "margin_mean": sum(margins) / len(margins),
        }


# ------------------------------------------------------------------------------------------ models


def linear_modules(model: Any) -> dict[str, Any]:
    import torch

    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and not any(n.endswith(s) for s in SKIP)
    }


@contextmanager
def restored(modules: dict[str, Any], reference: dict[str, Any], names: list[str]) -> Iterator[None]:
    """Give `names` the reference model's weights for the duration of the block."""
    saved = {n: modules[n].weight.data for n in names}
    try:
        for n in names:
            modules[n].weight.data = reference[n].weight.data
        yield
    finally:
        for n, w in saved.items():
            modules[n].weight.data = w


def quantized_bits(path: str) -> int:
    q = json.loads((Path(path) / "config.json").read_text()).get("quantization_config") or {}
    bits = {
        (g.get("weights") or {}).get("num_bits")
        for g in (q.get("config_groups") or {}).values()
        if isinstance(g, dict) and g.get("weights")
    }
    bits.discard(None)
    if q.get("quant_method") != "compressed-tensors" or not bits:
        raise UserError(
            f"{path} is not a quantized compressed-tensors checkpoint (no weight bits in config.json's "
            "quantization_config); sensitivity compares a quantized model with its reference"
        )
    return min(bits)


def _answers(model: Any, tok: Any, flips: list[Flip], names: list[str], mods, ref_mods, device: str) -> dict:
    """Regenerate from the prefix with `names` restored: is the final answer right again?"""
    import torch

    right = 0
    with restored(mods, ref_mods, names), torch.inference_mode():
        for f in flips:
            ids = tok(f.prompt, return_tensors="pt").to(device)
            out = model.generate(**ids, max_new_tokens=320, do_sample=False, pad_token_id=tok.pad_token_id)
            text = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
            prefix = f.prompt.split("\n", 1)[1] if "\n" in f.prompt else ""
            right += is_correct(extract_answer(prefix + text), f.gold, f.grading)
    return {"n": len(flips), "answer_restored": right}


# ------------------------------------------------------------------------------------------ the command


def run_sensitivity(cfg: SensitivityConfig) -> dict:
    from silverbullet.generation.loading import load_causal_lm, resolve_device

    t0 = time.time()
    run = Path(cfg.run)
    out = cfg.out_dir()
    run_cfg, flips = read_flips(run, cfg.max_flips)
    reference, quantized = run_cfg["reference"], run_cfg["quantized"]
    low_bits = quantized_bits(quantized)
    if not low_bits < cfg.keep_bits <= 16:
        raise UserError(f"--keep-bits {cfg.keep_bits} must be above the checkpoint's {low_bits} bits and at most 16")
    device = resolve_device(cfg.device)
    qmodel, tok = load_causal_lm(quantized, device=device, dtype="float32", for_training=True)
    rmodel, _ = load_causal_lm(reference, device=device, dtype="float32")
    qmodel.eval()
    mods, ref_mods = linear_modules(qmodel), linear_modules(rmodel)
    missing = sorted(set(mods) - set(ref_mods))
    if missing or any(mods[n].weight.shape != ref_mods[n].weight.shape for n in mods):
        raise UserError(f"{quantized} and {reference} do not share their linear modules ({missing[:3]}...)")
    scorer = Scorer(tok, flips, cfg.batch_size, device)
    extra = {n: m.weight.numel() * (cfg.keep_bits - low_bits) / 8 for n, m in mods.items()}

    def score(names: list[str]) -> dict:
        with restored(mods, ref_mods, names):
            return scorer.score(qmodel)

    groups: dict[str, dict[str, list[str]]] = {"block": {}, "type": {}}
    for n in mods:
        groups["block"].setdefault(str(module_block(n)), []).append(n)
        groups["type"].setdefault(module_type(n), []).append(n)
    rows: dict[str, list[dict]] = {"block": [], "type": [], "module": []}
    with ui.stage("scoring restored modules") as st:
        base, full = score([]), score(list(mods))
        todo_groups = [(kind, k, v) for kind in ("block", "type") for k, v in groups[kind].items()]
        st.update(0, len(todo_groups) + len(mods))
        for i, (kind, key, names) in enumerate(todo_groups):
            rows[kind].append(_row(key, names, score(names), base, extra))
            st.update(i + 1)
        singles = list(mods)
        if len(singles) > cfg.max_single:  # bisect: single modules only inside the most sensitive blocks
            top = sorted(rows["block"], key=lambda r: (-r["restored"], -r["pref_gain"]))[: cfg.top_blocks]
            singles = [n for r in top for n in groups["block"][r["name"]]]
        for j, n in enumerate(singles):
            rows["module"].append(_row(n, [n], score([n]), base, extra))
            st.update(len(todo_groups) + j + 1, len(todo_groups) + len(singles))
        st.summary = f"{len(flips)} flips, {scorer.forward_passes} forward passes"

    ranked = sorted(rows["module"], key=lambda r: (-r["restored_per_mb"], -r["pref_gain_per_mb"]))
    goal = max(1, round(cfg.target * full["n_restored"])) if full["n_restored"] else 0
    chosen: list[str] = []
    trace = []
    with ui.stage(f"greedy recipe (target: {goal} of {full['n_restored']} restorable flips)") as st:
        for r in ranked:
            if goal and trace and trace[-1]["restored"] >= goal:
                break
            chosen.append(r["name"])
            s = score(chosen)
            trace.append({"added": r["name"], "restored": s["n_restored"], "bits_per_weight": None})
        st.summary = f"{len(chosen)} modules"
    total = sum(m.weight.numel() for m in mods.values())
    for i, t in enumerate(trace):
        kept = sum(mods[n].weight.numel() for n in chosen[: i + 1])
        t["bits_per_weight"] = round((low_bits * (total - kept) + cfg.keep_bits * kept) / total, 4)
    reached = trace[-1]["restored"] if trace else 0
    servable = with_fused_siblings(chosen, list(mods))
    kept_all = sum(mods[n].weight.numel() for n in servable)
    with ui.stage(f"answers on {min(cfg.answer_sample, len(flips))} flips") as st:
        sample = flips[: cfg.answer_sample]
        answers = {
            "quantized": _answers(qmodel, tok, sample, [], mods, ref_mods, device),
            "recipe": _answers(qmodel, tok, sample, chosen, mods, ref_mods, device),
        }
    summary = {
        "schema": 1,
        "command": "sensitivity",
        "run": str(run),
        "models": {"reference": reference, "quantized": quantized},
        "config": asdict(cfg),
        "bits": {"quantized": low_bits, "kept": cfg.keep_bits},
        "flips": len(flips),
        "baseline": _short(base),
        "all_restored": _short(full),
        "blocks": rows["block"],
        "types": rows["type"],
        "modules": ranked,
        "recipe": {
            "modules": chosen,
            "target_restored": goal,
            "restored": reached,
            "bits_per_weight": trace[-1]["bits_per_weight"] if trace else low_bits,
            "added_bytes": round(sum(extra[n] for n in chosen)),
            "trace": trace,
            # what recipe.yaml keeps: the chosen modules and their fused siblings, so vLLM can serve it
            "servable_modules": servable,
            "servable_bits_per_weight": round((low_bits * (total - kept_all) + cfg.keep_bits * kept_all) / total, 4),
            "servable_added_bytes": round(sum(extra.get(n, 0) for n in servable)),
        },
        "answers": answers,
        "cost": {"forward_passes": scorer.forward_passes, "seconds": round(time.time() - t0, 1)},
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / SENSITIVITY).write_text(json.dumps(summary, indent=1))
    write_recipe(out / "recipe.yaml", quantized, servable, cfg.keep_bits, servable=False)
    return summary


def _row(name: str, names: list[str], s: dict, base: dict, extra: dict) -> dict:
    mb = sum(extra[n] for n in names) / 1e6
    gain = s["pref_mean"] - base["pref_mean"]
    restored = s["n_restored"] - base["n_restored"]
    return {
        "name": name,
        "modules": len(names),
        "added_mb": round(mb, 4),
        "restored": restored,
        "restored_per_mb": round(restored / mb, 3) if mb else 0.0,
        "pref_gain": round(gain, 4),
        "pref_gain_per_mb": round(gain / mb, 3) if mb else 0.0,
        "margin_mean": round(s["margin_mean"], 4),
    }


def _short(s: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in s.items() if k != "restored"}
