"""`silverbullet repair`: diagnose a *repair* split, build the Silver Bullet sets, train a LoRA
adapter on the quantized model, and re-measure on the *evaluation* split.

The evaluation problems never feed the repair data (checked), so recovery measures repair, not
memory. Every stage writes into the run directory and is skipped on a re-run when its output exists.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from silverbullet import ui
from silverbullet.benchmarks import default_split, repair_split
from silverbullet.diagnose import (
    DiagnoseConfig,
    attribute,
    demo_quantized_path,
    make_generator,
    run_diagnose,
)
from silverbullet.errors import UserError
from silverbullet.generation.base import GenerationConfig, close_generator
from silverbullet.generation.loading import renderer_for_model
from silverbullet.measure import measure
from silverbullet.prompting.formats import PromptSettings, same_prompts_or_refuse
from silverbullet.records import Generation, Problem
from silverbullet.repair.dataset import (
    DatasetConfig,
    assert_disjoint,
    candidates,
    check_sft_options,
    curate,
    grpo_path,
    grpo_rows,
    set_paths,
    sft_rows,
    write_sets,
)
from silverbullet.repair.fallback import checker_fallback
from silverbullet.repair.train import (
    METHODS,
    RepairTrainConfig,
    check_batch_options,
    check_grpo_options,
    dist_world,
    leave_process_group,
    train_or_reuse,
)
from silverbullet.run.files import (
    CONFIG,
    EVAL_SPLIT,
    PROBLEMS,
    REPAIR_CONFIG,
    REPAIR_SPLIT,
    REPAIR_SUMMARY,
    SUMMARY,
    generations_file,
)
from silverbullet.run.jsonl import read_jsonl_rows, write_rows, write_text_atomic


@dataclass
class RepairConfig:
    reference: str = "data/reference-model"
    quantized: str | None = None  # None: the demo quantized reference model
    load_in: str | None = None  # bitsandbytes at load time for the quantized model (4bit | 8bit)
    from_run: str | None = None  # a diagnose run on the evaluation split to reuse (its generations)
    out: str = "runs/repair"
    benchmark: str = "synthetic"
    eval_split: str | None = None  # None: the benchmark's evaluation split (benchmarks.default_split)
    eval_limit: int | None = 500
    repair_split: str | None = None  # None: the benchmark's repair split (benchmarks.repair_split)
    repair_limit: int = 1500  # problems diagnosed on the repair split (about 23% flip at the demo setting)
    max_examples: int = 332
    control: bool = False  # the untargeted control: same as sft_data="full", method sft
    sft_data: str = "flipped-full"  # what the SFT set teaches: flipped-full | step | full (see dataset.py)
    replay: float = 0.0  # share of the SFT budget given to whole solutions of random other problems
    anchor: float = 0.0  # share of the SFT budget given to the quantized model's own correct solutions
    guard: float = 0.0  # share given to problems the reference fails (own correct or gold solutions)
    own_samples: int = 8  # sft_data "own": solutions sampled from the quantized model per problem, at most
    own_temperature: float = 0.7  # sft_data "own": their sampling temperature
    balance: bool = False  # round-robin the first-fault pairs over error types (off: tuned, see bench)
    merge: bool = False  # also merge the adapter into the base (one low-bit checkpoint) and measure that
    merge_method: str = "grid"  # grid (base's scales, nearest) | gptq (same grid, error feedback) | requantize
    backend: str = "hf"  # generation backend of the repair-split diagnose and the re-measure
    vllm_options: dict = field(default_factory=dict)
    batch_size: int = 64
    seed: int = 0
    progress: bool = True
    max_new_tokens: int | None = None  # None: the benchmark's default
    # Prompts (docs/prompts.md), as in DiagnoseConfig: the sets' prompts and the re-measure use them.
    prompt_format: str = "auto"
    system_prompt: str | None = None
    prompt_template: str | None = None
    fewshot: int = 4
    train: RepairTrainConfig = field(default_factory=RepairTrainConfig)


def recovery(ref_acc: float, quant_acc: float, repaired_acc: float) -> float | None:
    """(repaired - quantized) / (reference - quantized); None when quantization cost nothing."""
    gap = ref_acc - quant_acc
    return None if gap <= 0 else round((repaired_acc - quant_acc) / gap, 4)


def _eval_run(cfg: RepairConfig, out: Path) -> Path:
    if cfg.from_run:
        run = Path(cfg.from_run)
        if not (run / SUMMARY).exists():
            raise UserError(f"{run}/summary.json not found; pass --from a finished `silverbullet diagnose` run")
        try:
            json.loads((run / SUMMARY).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(f"{run}/summary.json is not valid JSON ({e}); re-run `silverbullet diagnose`") from None
        for name in (CONFIG, PROBLEMS):
            if not (run / name).exists():
                raise UserError(f"{run}/{name} not found; pass --from a finished `silverbullet diagnose` run")
        return run
    dcfg = DiagnoseConfig(
        reference=cfg.reference,
        quantized=cfg.quantized,
        load_in=cfg.load_in,
        benchmark=cfg.benchmark,
        split=cfg.eval_split or default_split(cfg.benchmark),
        limit=cfg.eval_limit,
        out=str(out / EVAL_SPLIT),
        backend=cfg.backend,
        vllm_options=cfg.vllm_options,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        progress=cfg.progress,
        **_prompt_fields(cfg),
    )
    run_diagnose(dcfg)
    return out / EVAL_SPLIT


def _prompt_fields(cfg: RepairConfig) -> dict:
    return {
        "max_new_tokens": cfg.max_new_tokens,
        "prompt_format": cfg.prompt_format,
        "system_prompt": cfg.system_prompt,
        "prompt_template": cfg.prompt_template,
        "fewshot": cfg.fewshot,
    }


def _renderer(cfg: RepairConfig, eval_run: Path, reference: str, benchmark: str):
    """The run's prompt renderer; an evaluation run (--from) made with other prompts is refused, since
    the repaired model would be measured on prompts its baseline never saw."""
    settings = PromptSettings(cfg.prompt_format, cfg.system_prompt, cfg.prompt_template, cfg.fewshot)
    renderer = renderer_for_model(settings, reference, benchmark)
    if cfg.from_run:
        eval_summary = json.loads((eval_run / SUMMARY).read_text())
        if (eval_summary.get("prompt") or {}).get("format") == "samples":
            return _FilePrompts(renderer, eval_run, eval_summary["prompt"])
        same_prompts_or_refuse(eval_summary, {"prompt": renderer.describe()}, f"--from {eval_run}", "this repair")
    return renderer


class _FilePrompts:
    """A run read from sample files: its problems are re-measured on the prompts the files say were
    sent (the quantized baseline saw those); new problems (the repair split) get `base`'s prompts."""

    def __init__(self, base, eval_run: Path, described: dict):
        self.base, self.described, self.format = base, described, "samples"
        problems = read_jsonl_rows(eval_run / PROBLEMS)
        self.sent = {p["question"]: p["meta"]["prompt"] for p in problems if (p.get("meta") or {}).get("prompt")}

    def __call__(self, question: str) -> str:
        return self.sent.get(question) or self.base(question)

    def describe(self) -> dict:
        return {**self.described, "repair_split": self.base.describe()}


def _models(cfg: RepairConfig, eval_run: Path) -> tuple[dict, str, str]:
    """The evaluation run's config and its (reference, quantized) checkpoints."""
    eval_cfg = json.loads((eval_run / CONFIG).read_text())
    reference, quantized = eval_cfg["reference"], eval_cfg["quantized"]
    if eval_cfg.get("reference_samples"):  # diagnosed from sample files: the models come from this command
        if not eval_cfg.get("benchmark"):
            raise UserError(
                f"{eval_run} was diagnosed from sample files without --benchmark; repair draws its repair split "
                "from the benchmark: re-run diagnose with --benchmark NAME"
            )
        reference, quantized = reference or cfg.reference, quantized or cfg.quantized
        if not quantized:
            raise UserError(
                f"{eval_run} was diagnosed from sample files; pass the models they came from: "
                "--reference MODEL --quantized MODEL"
            )
        return eval_cfg, reference, quantized
    if cfg.quantized is None and not quantized:
        quantized = demo_quantized_path(cfg.reference)
    return eval_cfg, reference, quantized


def run_repair(cfg: RepairConfig, log=print) -> dict:
    """The whole loop. Under `accelerate launch` (several processes) rank 0 diagnoses and builds the
    sets, every rank trains (TRL's data parallel), and rank 0 re-measures and writes the summary."""
    t_start = time.time()
    if cfg.train.method not in METHODS:  # fail before any diagnosis runs
        raise UserError(f"--method {cfg.train.method!r} is not known; use one of {', '.join(METHODS)}")
    check_sft_options(cfg.sft_data, cfg.replay, cfg.anchor, cfg.guard)
    check_batch_options(cfg.train)
    if cfg.train.method == "grpo":
        check_grpo_options(cfg.train)
    if cfg.merge and cfg.load_in:
        raise UserError(f"--merge writes a compressed-tensors checkpoint; it does not apply to --load-in {cfg.load_in}")
    if cfg.merge:
        from silverbullet.repair.merge import MERGE_METHODS

        if cfg.merge_method not in MERGE_METHODS:
            raise UserError(f"--merge-method {cfg.merge_method!r} is not known; use one of {', '.join(MERGE_METHODS)}")
    out = Path(cfg.out)
    rank, world = dist_world()
    if world > 1:
        from datetime import timedelta

        from accelerate import PartialState

        # One process group for the whole run; the long timeout covers rank 0's diagnoses.
        state = PartialState(timeout=timedelta(hours=12))
        if rank != 0:
            state.wait_for_everyone()  # rank 0 has written the sets
            return _train_only(cfg, out, rank, log)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / REPAIR_CONFIG, json.dumps(asdict(cfg), indent=1))
    eval_run = _eval_run(cfg, out)
    eval_cfg, reference, quantized = _models(cfg, eval_run)
    renderer = _renderer(cfg, eval_run, reference, eval_cfg["benchmark"])
    if cfg.max_new_tokens is None:
        from silverbullet.diagnose import budget_for

        cfg = dataclasses.replace(cfg, max_new_tokens=budget_for(eval_cfg["benchmark"], renderer))
    problems = [Problem(**p) for p in read_jsonl_rows(eval_run / PROBLEMS)]
    gens = {
        tag: {r["problem_id"]: r for r in read_jsonl_rows(generations_file(eval_run, tag))}
        for tag in ("reference", "quantized")
    }

    # 1. first faulty steps on the repair split
    split_name = cfg.repair_split or repair_split(eval_cfg["benchmark"])
    rcfg = DiagnoseConfig(
        reference=reference,
        quantized=quantized,
        load_in=eval_cfg.get("load_in"),
        benchmark=eval_cfg["benchmark"],
        split=split_name,
        limit=cfg.repair_limit,
        out=str(out / REPAIR_SPLIT),
        backend=cfg.backend,
        vllm_options=cfg.vllm_options,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
        confirm=False,
        margins=True,  # anchors are the quantized model's least confident correct solutions
        progress=cfg.progress,
        **_prompt_fields(cfg),
    )
    log(f"diagnosing {cfg.repair_limit} problems of the {split_name} split (repair data)")
    split_summary = run_diagnose(rcfg)

    # 2. the Silver Bullet sets: first-fault pairs (DPO) and the SFT rows (`sft_data`)
    repair_dir = out / REPAIR_SPLIT
    sft_mode = "full" if cfg.control else cfg.sft_data
    method = _method(cfg)
    # One example budget for the whole run: SFT then DPO on different rows share it half and half.
    split = method == "sft+dpo" and sft_mode != "step"
    pairs = curate(
        candidates(repair_dir),
        DatasetConfig(
            max_examples=cfg.max_examples // 2 if split else cfg.max_examples, seed=cfg.seed, balance=cfg.balance
        ),
    )
    n_sft = cfg.max_examples - len(pairs) if split else cfg.max_examples
    sampler = _OwnSampler(quantized, cfg, eval_cfg) if sft_mode == "own" else None
    with ui.stage(f"sampling the quantized model's own solutions (up to {cfg.own_samples} each)",
                  cfg.progress and sampler is not None):  # fmt: skip
        sft = sft_rows(
            sft_mode,
            pairs,
            repair_dir,
            n_sft,
            cfg.seed,
            replay=0.0 if cfg.control else cfg.replay,
            anchor=0.0 if cfg.control else cfg.anchor,
            guard=0.0 if cfg.control else cfg.guard,
            sample=sampler,
            own_samples=cfg.own_samples,
        )
    if sampler is not None:
        sampler.close()
    if method == "dpo":
        used = pairs
    elif method in ("sft", "grpo"):
        used = sft
    else:
        used = sft + [p for p in pairs if p["problem_id"] not in {r["problem_id"] for r in sft}]
    if not used or (method == "sft+dpo" and not pairs):
        raise UserError(_no_examples(repair_dir, split_summary))
    eval_questions = {p.question for p in problems}
    assert_disjoint(sft, eval_questions)
    assert_disjoint(pairs, eval_questions)
    write_sets(sft, pairs, out)
    log(f"Silver Bullet sets: {len(sft)} SFT rows ({sft_mode}), {len(pairs)} DPO pairs -> {out}")
    if method == "grpo":  # the same problems as prompts with gold answers; the model samples the rest
        write_rows(grpo_path(out), grpo_rows(sft, repair_dir))
    sft_path, dpo_path = training_sets(out, method)

    # 3. LoRA on the quantized model (reused when a finished run trained the same sets the same way)
    if world > 1:
        state.wait_for_everyone()  # the other ranks start training from the sets written above
    train_cfg = _train_config(cfg, eval_cfg)
    adapter = out / "adapter"
    train_info, reused = train_or_reuse(quantized, sft_path, dpo_path, adapter, train_cfg)
    if world > 1:
        leave_process_group()  # rank 0 goes on alone: the re-measure must not wait on other ranks
    if reused:
        log(f"reused the {train_cfg.method} adapter in {adapter} (trained from the same sets and config)")

    # 4. re-measure on the evaluation split
    t0 = time.time()
    # Cached like every generation: the key holds the adapter's files, so a retrained adapter misses.
    gcfg = DiagnoseConfig(backend=cfg.backend, vllm_options=cfg.vllm_options, load_in=eval_cfg.get("load_in"))
    rep_gen = make_generator(quantized, "repaired", gcfg, adapter=str(adapter))
    rep_path = generations_file(out, "repaired")
    if rep_path.exists() and not reused:
        rep_path.unlink()  # a new adapter: old repaired generations are stale (else: resume them)
    gen_cfg = GenerationConfig(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens)
    with ui.stage("re-measuring (quantized + adapter)", cfg.progress) as st:
        repaired = measure(rep_gen, problems, gen_cfg, rep_path, on_progress=ui.progress_callback(st), render=renderer)
        st.summary = f"{sum(g.correct for g in repaired)}/{len(repaired)} correct"
    close_generator(rep_gen)
    remeasure_seconds = round(time.time() - t0, 1)
    checked = checker_fallback(repaired, gens["quantized"])
    write_rows(generations_file(out, "checked"), checked)
    summary = summarise_repair(problems, gens, repaired, used, train_info, cfg, checked)
    summary["prompt"] = {**renderer.describe(), "max_new_tokens": cfg.max_new_tokens}
    summary["format"] = repair_format(problems, gens, repaired, cfg.max_new_tokens)
    summary["sets"] = {
        "sft_data": sft_mode,
        "replay": cfg.replay,
        "anchor": cfg.anchor,
        "guard": cfg.guard,
        "sft_rows": len(sft),
        "dpo_pairs": len(pairs),
    }
    if sampler is not None:
        summary["sets"]["own"] = {
            "rows": sum(r["error_type"] == "own" for r in sft),  # the rest kept the reference's solution
            "samples_drawn": sampler.drawn,
            "max_samples": cfg.own_samples,
            "temperature": cfg.own_temperature,
        }
    summary["timings"] = {
        "train_seconds": train_info["train_seconds"],
        "remeasure_seconds": remeasure_seconds,
        "total_seconds": round(time.time() - t_start, 1),
    }
    if cfg.merge:
        summary["merged"] = _merged(quantized, adapter, out, problems, gens, gcfg, cfg, log, renderer)
    summary["eval_run"] = str(eval_run)
    (out / REPAIR_SUMMARY).write_text(json.dumps(summary, indent=1))
    if not cfg.from_run:
        pass
    elif Path(cfg.from_run).resolve() != out.resolve():  # let `report` on the eval run show the repaired bar
        (Path(cfg.from_run) / REPAIR_SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


class _OwnSampler:
    """`dataset.Sampler` for `--sft-data own`: solutions of the quantized model (the one being
    repaired, adapter off) at `own_temperature`, round r seeded from the run's seed and r so a re-run
    draws the same samples (and finds them in the generation cache). `drawn` counts the samples."""

    def __init__(self, quantized: str, cfg: RepairConfig, eval_cfg: dict) -> None:
        gcfg = DiagnoseConfig(backend=cfg.backend, vllm_options=cfg.vllm_options, load_in=eval_cfg.get("load_in"))
        self.gen = make_generator(quantized, "quantized", gcfg)
        self.cfg = cfg
        self.drawn = 0

    def __call__(self, prompts: list[str], round_: int) -> list[str]:
        cfg = self.cfg
        gen_cfg = GenerationConfig(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens,
                                   temperature=cfg.own_temperature, seed=1000 * cfg.seed + round_)  # fmt: skip
        self.drawn += len(prompts)
        return [o.text for o in self.gen.generate(prompts, gen_cfg)]

    def close(self) -> None:
        close_generator(self.gen)


def training_sets(out: Path, method: str) -> tuple[Path, Path | None]:
    """The set files `train_adapter` reads for `method`: GRPO's prompt set in place of SFT's."""
    sft_path, dpo_path = set_paths(out)
    return (grpo_path(out), None) if method == "grpo" else (sft_path, dpo_path)


def _train_config(cfg: RepairConfig, eval_cfg: dict) -> RepairTrainConfig:
    """The training config every rank uses (rank 0 and `_train_only` alike): the method, the
    evaluation run's bitsandbytes base, and GRPO's samples as long as the re-measure's."""
    method = _method(cfg)
    train_cfg = dataclasses.replace(cfg.train, method=method, load_in=eval_cfg.get("load_in"))
    if method == "grpo":
        from silverbullet.benchmarks import default_max_new_tokens

        length = cfg.max_new_tokens or default_max_new_tokens(eval_cfg["benchmark"])
        train_cfg = dataclasses.replace(train_cfg, max_completion_length=length)
    return train_cfg


def _method(cfg: RepairConfig) -> str:
    return "sft" if cfg.control else cfg.train.method


def _train_only(cfg: RepairConfig, out: Path, rank: int, log) -> dict:
    """A non-zero rank of a multi-process run: train on the sets rank 0 wrote, nothing else."""
    eval_run = Path(cfg.from_run) if cfg.from_run else out / EVAL_SPLIT
    eval_cfg, _, quantized = _models(cfg, eval_run)
    train_cfg = _train_config(cfg, eval_cfg)
    sft_path, dpo_path = training_sets(out, train_cfg.method)
    info, _ = train_or_reuse(quantized, sft_path, dpo_path, out / "adapter", train_cfg)
    leave_process_group()
    return {"rank": rank, "train": info}


def _merged(
    quantized: str, adapter: Path, out: Path, problems, gens: dict, gcfg, cfg: RepairConfig, log, renderer
) -> dict:
    """Merge the adapter into the base by `cfg.merge_method`, then measure the single low-bit
    checkpoint. Calibration text (GPTQ's Hessians, and output-space figures for `grid`) is the SFT
    set: repair-split problems, never evaluation ones."""
    from silverbullet.repair.merge import merge_adapter

    t0 = time.time()
    sft_path, _ = set_paths(out)
    texts = [r["prompt"] + r["completion"] for r in read_jsonl_rows(sft_path)] if sft_path.exists() else []
    distill = texts + _repair_split_solutions(out, renderer) if cfg.merge_method == "gptq-scales" else None
    path, info = merge_adapter(quantized, adapter, out / "merged", cfg.merge_method, texts, distill=distill)
    gen = make_generator(str(path), "merged", gcfg)
    gen_cfg = GenerationConfig(batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens)
    rows_path = generations_file(out, "merged")
    if rows_path.exists():
        rows_path.unlink()  # a new merge (method or adapter may differ): the cache key holds the files
    rows = measure(gen, problems, gen_cfg, rows_path, render=renderer)
    close_generator(gen)
    acc = round(sum(g.correct for g in rows) / len(rows), 4)
    log(f"merged ({cfg.merge_method}) -> {path}: {acc:.1%}")
    by_id = {g.problem_id: g.correct for g in rows}
    ref, q = ([gens[t][p.id]["correct"] for p in problems] for t in ("reference", "quantized"))
    return {
        "method": cfg.merge_method,
        "path": str(path),
        "accuracy": acc,
        **flip_stats(ref, q, [by_id[p.id] for p in problems]),
        "bytes": sum(f.stat().st_size for f in path.glob("*.safetensors")),
        "grid": info.get("grid"),
        **({"scales": info["scales"]} if info.get("scales") else {}),
        "seconds": round(time.time() - t0, 1),
    }


def _repair_split_solutions(out: Path, renderer) -> list[str]:
    """Prompt + the reference model's right solution for each repair-split problem: more text for
    `gptq-scales` to match base + adapter on (never evaluation problems)."""
    split = out / REPAIR_SPLIT
    probs, refs = split / PROBLEMS, generations_file(split, "reference")
    if not (probs.exists() and refs.exists()):
        return []
    questions = {r["id"]: r["question"] for r in read_jsonl_rows(probs)}
    return [renderer(questions[g["problem_id"]]) + g["text"]
            for g in read_jsonl_rows(refs) if g.get("correct") and g["problem_id"] in questions]  # fmt: skip


def summarise_repair(
    problems: list[Problem],
    gens: dict,
    repaired: list[Generation],
    examples: list[dict],
    train_info: dict,
    cfg: RepairConfig,
    checked: list[dict],
) -> dict:
    """The repair's outcome; `checked` (from checker_fallback) is what the checker fallback serves."""
    n = len(problems)
    ref = [gens["reference"][p.id]["correct"] for p in problems]
    q = [gens["quantized"][p.id]["correct"] for p in problems]
    r = [g.correct for g in repaired]
    acc = {"reference": round(sum(ref) / n, 4), "quantized": round(sum(q) / n, 4), "repaired": round(sum(r) / n, 4)}
    r_checked = [row["correct"] for row in checked]
    types: Counter = Counter()
    positions: Counter = Counter()
    by_id = {p.id: p for p in problems}
    for g in repaired:
        if not g.correct:
            row = attribute(by_id[g.problem_id], g, _gen(gens["reference"][g.problem_id]))
            types[row["error_type"] or "none"] += 1
            positions[str(row["first_faulty_step"])] += 1
    return {
        "schema": 1,
        "command": "repair",
        "n": n,
        "method": "control-sft" if cfg.control else cfg.train.method,
        "sft_data": "full" if cfg.control else cfg.sft_data,
        "accuracy": acc,
        **flip_stats(ref, q, r),
        "checked": {
            "accuracy": round(sum(r_checked) / n, 4),
            "fallbacks": sum(row["model"] != "repaired" for row in checked),
            **flip_stats(ref, q, r_checked),
        },
        "examples": len(examples),
        "examples_by_error_type": dict(Counter(e["error_type"] for e in examples)),
        "after_repair": {"error_types": dict(types), "first_fault_position": dict(sorted(positions.items()))},
        "adapter_bytes": train_info["adapter_bytes"],
        "base_bytes": train_info["base_bytes"],
        "train": {
            **{k: v for k, v in train_info.items() if k not in ("adapter_bytes", "base_bytes")},
            "config": asdict(cfg.train),
        },
    }


def repair_format(problems: list[Problem], gens: dict, repaired: list[Generation], max_new_tokens: int) -> dict:
    """Format compliance of the three models on the evaluation problems (summary.json's `format`):
    for reasoning models it says whether the repair taught the quantized model to close its trace."""
    from silverbullet.prompting.formats import compliance
    from silverbullet.records import to_dict

    rows = {tag: [gens[tag][p.id] for p in problems] for tag in ("reference", "quantized")}
    rows["repaired"] = [to_dict(g) for g in repaired]
    return {tag: compliance(r, max_new_tokens) for tag, r in rows.items()}


def flip_stats(ref: list[bool], q: list[bool], r: list[bool]) -> dict:
    """Recovery and flips of repaired outcomes `r` against the quantized `q` (reference `ref`)."""
    n = len(r)
    introduced = sum(a and not b for a, b in zip(q, r))
    return {
        "recovery": recovery(*(round(sum(x) / n, 4) for x in (ref, q, r))),
        "flips_fixed": sum(not a and b for a, b in zip(q, r)),
        "flips_introduced": introduced,
        "flips_introduced_rate": round(introduced / n, 4),
        # Of those, the ones the reference solves: what the repair broke beyond the reference's own
        # mistakes (a repair that reproduced the reference exactly would still lose the problems only
        # the quantized model got right).
        "flips_introduced_reference_solves": sum(a and not b and c for a, b, c in zip(q, r, ref)),
    }


def _gen(row: dict) -> Generation:
    return Generation(**{k: row.get(k) for k in Generation.__dataclass_fields__})


def _no_examples(repair_dir: Path, s: dict) -> str:
    """Why the repair split (summary `s`) gave no examples, and what would help: more problems only
    help when the reference model solves some and the quantized model fails some of those."""
    head = f"no usable repair examples in {repair_dir}"
    try:
        n, k_ref, flips = s["n"], s["correct"]["reference"], s["flips"]["ref_right_quant_wrong"]
    except (KeyError, TypeError):
        return f"{head}; diagnose more problems (--repair-limit)"
    if k_ref == 0:
        return (
            f"{head}: the reference model solves none of the {n} problems of {s.get('benchmark')}/"
            f"{s.get('split')}, and the examples are its right steps; bring a reference model that solves "
            "the task (--reference)"
        )
    return f"{head}: {flips} of {n} problems flipped (reference right, quantized wrong); diagnose more (--repair-limit)"
