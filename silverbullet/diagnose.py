"""`silverbullet diagnose`: measure both models, locate the quantized model's first faulty steps,
measure margins at the failure frontier, confirm causally, and summarise.

Stages (each writes its own file in the run directory, see docs/run-format.md, and resumes):
problems -> generations/{reference,quantized}.jsonl -> attribution.jsonl -> summary.json.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from silverbullet import stats, ui
from silverbullet.attribution import locate
from silverbullet.attribution.trace import trace_frontier
from silverbullet.errors import UserError
from silverbullet.frontier import add_margins_and_confirmation, rounded_mean
from silverbullet.generation.base import GenerationConfig, Generator, close_generator
from silverbullet.generation.loading import renderer_for_model
from silverbullet.measure import measure
from silverbullet.prompting import renumber_step, segment
from silverbullet.prompting.formats import PromptRenderer, PromptSettings, compliance, format_drop
from silverbullet.records import Generation, Problem, to_dict
from silverbullet.run.files import ATTRIBUTION, PROBLEMS, SUMMARY, generations_file
from silverbullet.run.identity import prepare_run_dir
from silverbullet.run.jsonl import append_rows, read_jsonl_rows, repair_torn_tail, write_text_atomic

ERROR_TYPES = ("execution", "method", "conceptual", "reasoning")
DEFAULT_REFERENCE = "data/reference-model"
# The demo's quantized setting: chosen from bench/results/quantization.json as the setting that
# costs the shipped reference model a real, repairable 10-40 points (see data/reference-model/README.md).
DEMO_QUANT = {"method": "rtn", "bits": 2, "group_size": 0}  # RTN W2 per-channel: -34 points (model card)


@dataclass
class DiagnoseConfig:
    reference: str = DEFAULT_REFERENCE
    quantized: str | None = None  # None: the demo quantized variant of the reference model
    # bitsandbytes at load time for the quantized model ("4bit" NF4 | "8bit" LLM.int8); with no
    # `quantized`, the reference model itself is loaded that way
    load_in: str | None = None
    benchmark: str = "synthetic"
    split: str = "eval"
    limit: int | None = 500
    seed: int = 0
    backend: str = "hf"  # hf | vllm
    # vLLM engine options (VLLMOptions fields or vllm.LLM keywords): parallelism and memory settings
    vllm_options: dict = field(default_factory=dict)
    out: str = "runs/diagnose"
    batch_size: int = 64
    compile: bool = False  # HF backend on CUDA: static KV cache + compiled decode (GenerationConfig.compile)
    max_new_tokens: int | None = None  # None: the benchmark's default (benchmarks.MAX_NEW_TOKENS)
    device: str = "auto"
    # HF backend across devices: one generation worker per device (sharding.py); empty = one process
    devices: list = field(default_factory=list)
    margins: bool = True
    confirm: bool = True
    cache: bool = True
    progress: bool = True
    # Generations read from files instead of generated (silverbullet/diagnose_samples.py)
    reference_samples: str | None = None
    quantized_samples: str | None = None
    samples_format: str = "auto"  # auto | lm-eval | openai | vllm | jsonl
    samples_fields: dict = field(default_factory=dict)  # jsonl: target -> dotted field
    # Prompts (docs/prompts.md): auto | completion | chat | fewshot, the chat system message (None:
    # the step-format instruction, "": none), a template file with {question}, few-shot exemplars.
    prompt_format: str = "auto"
    system_prompt: str | None = None
    prompt_template: str | None = None
    fewshot: int = 4

    # Fields that may change between a run and its resume without changing its results.
    _RESUMABLE = ("batch_size", "compile", "progress", "cache", "device", "devices", "out", "vllm_options")
    _PROMPT = ("prompt_format", "system_prompt", "prompt_template", "fewshot")

    def prompt_settings(self) -> PromptSettings:
        return PromptSettings(self.prompt_format, self.system_prompt, self.prompt_template, self.fewshot)

    def identity(self) -> dict:
        """What a run's results depend on: the template file by its text's hash, not its path."""
        d = {k: v for k, v in asdict(self).items() if k not in self._RESUMABLE + self._PROMPT}
        return {**d, **self.prompt_settings().identity()}


def budget_for(benchmark: str, renderer) -> int:
    """The default generation budget: the benchmark's, times THINKING_BUDGET_FACTOR where the prompt
    opens a reasoning trace (said once, so a long run is not a surprise)."""
    from silverbullet.benchmarks import THINKING_BUDGET_FACTOR, default_max_new_tokens
    from silverbullet.prompting.formats import renders_thinking

    thinking = renders_thinking(renderer)
    n = default_max_new_tokens(benchmark, thinking)
    if thinking:
        ui.note(
            f"the model thinks before it answers (its chat template has <think>): generation budget {n} tokens, "
            f"{THINKING_BUDGET_FACTOR}x the benchmark's; --max-new-tokens sets it"
        )
    return n


def demo_quantized_path(reference: str = DEFAULT_REFERENCE) -> str:
    """The demo quantized checkpoint, built on first use (about half a minute on CPU) and built again
    when the reference model's files changed since (a retrained or updated reference)."""
    from silverbullet.quantize import QuantizeConfig, ensure_quantized

    return str(ensure_quantized(QuantizeConfig(model=reference, **DEMO_QUANT), log=ui.note))


def make_generator(path: str, tag: str, cfg: DiagnoseConfig, adapter: str | None = None) -> Generator:
    """The backend named by the config, behind the on-disk generation cache."""
    if cfg.backend == "hf":
        from silverbullet.generation.hf import HFGenerator

        load_in = None if tag == "reference" else cfg.load_in
        gen: Generator = HFGenerator(path, tag=tag, device=cfg.device, adapter=adapter, load_in=load_in)
    elif cfg.backend == "vllm":
        try:
            from silverbullet.generation import vllm as vllm_backend
        except ImportError as e:  # pragma: no cover - the module itself has no hard import of vllm
            raise UserError(f"the vLLM backend is not available ({e}); see docs/vllm.md") from e
        opts = dict(cfg.vllm_options)
        from silverbullet.generation.loading import resolve_device

        if resolve_device(cfg.device).startswith("cuda"):  # diagnose holds two engines at once
            opts.setdefault("gpu_memory_utilization", 0.42)
        gen = vllm_backend.create(path, tag=tag, adapter=adapter, device=cfg.device, **opts)
    else:
        raise UserError(f"--backend {cfg.backend!r} is not known; use hf or vllm")
    if cfg.load_in is not None and cfg.backend != "hf":
        raise UserError(f"--load-in {cfg.load_in} needs --backend hf (bitsandbytes runs in transformers)")
    if cfg.cache:
        from silverbullet.generation.cache import CachedGenerator

        gen = CachedGenerator(gen)
    return gen


def _vllm_preflight(cfg: DiagnoseConfig) -> None:
    """Refuse, before any engine starts, a checkpoint that vLLM's kernels would refuse."""
    from silverbullet.generation.loading import resolve_device
    from silverbullet.generation.vllm import kernel_gap

    on_gpu = resolve_device(cfg.device).startswith("cuda")
    for path in (cfg.reference, cfg.quantized):
        gap = kernel_gap(path, on_gpu=on_gpu)
        if gap:
            raise UserError(gap)


def _check_run_dir(out: Path, cfg: DiagnoseConfig) -> None:
    """Create or resume the run directory for `cfg` (run/identity.py)."""
    prepare_run_dir(out, cfg.identity(), {**asdict(cfg), **cfg.identity()})


def _model_entry(path: str | None, fingerprint: str | None) -> dict:
    """A model as summary.json names it; a folder converted from a GGUF file also carries the file's
    name, sha256 and llama.cpp quantization type (Q4_K_M, ...): the release level the user passed."""
    from silverbullet.generation.gguf import gguf_source

    entry: dict = {"path": path, "fingerprint": fingerprint}
    src = gguf_source(path) if path else None
    if src:
        g = src.get("gguf", {})
        name = Path(str(g.get("path", ""))).name
        entry["gguf"] = {"file": name, "sha256": src.get("sha256"), "type": g.get("file_type")}
    return entry


def wilson(k: int, n: int) -> list[float]:
    """95% Wilson interval as summary.json stores it (rounded to 4 places)."""
    return [round(x, 4) for x in stats.wilson(k, n, z=1.96)]


# ---------------------------------------------------------------------------------- attribution


def attribute(problem: Problem, gen: Generation, ref_gen: Generation | None) -> dict:
    """Locate one wrong solution. The reference is the reference model's solution when it is right
    (the paper's setting: where do the two models part ways), else the gold solution if any."""
    if ref_gen is not None and ref_gen.correct:
        ref_text, ref_source = ref_gen.text, "reference_model"
    else:
        ref_text, ref_source = problem.solution, "gold" if problem.solution else None
    att = locate(problem.question, gen.text, reference_text=ref_text, gold_answer=problem.answer, problem_id=problem.id)
    row = to_dict(att)
    seg = segment(gen.text)
    spans = seg.spans  # the steps locate counted: first_faulty_step indexes these
    k = att.first_faulty_step
    row.update(
        model=gen.model,
        flip=bool(ref_gen is not None and ref_gen.correct and not gen.correct),
        question=problem.question,
        gold_answer=problem.answer,
        reference_source=ref_source,
        faulty_line=None,
        reference_line=None,
    )
    if k is not None and k < len(spans):
        row["prefix"] = gen.text[: spans[k][0]]
        row["faulty_line"] = gen.text[spans[k][0] : spans[k][1]]
        row["frontier_chars"] = list(spans[k])
        j = att.aligned_reference_step
        ref_seg = segment(ref_text or "")
        if j is not None and ref_text and j < len(ref_seg.spans):
            a, b = ref_seg.spans[j]
            # in the candidate's own style: "Step k+1: ..." after step lines, the bare step after free text
            row["reference_line"] = renumber_step(ref_text[a:b], k + 1) if seg.style == "steps" else ref_seg.steps[j]
    elif (fr := trace_frontier(gen.text, att.evidence, ref_text, problem.answer)) is not None:
        # a trace that never closed: its frontier is a trace line (trace.py), measured and swapped alike
        a, b = fr["chars"]
        row.update(prefix=gen.text[:a], faulty_line=gen.text[a:b], frontier_chars=[a, b], trace_line=fr["line"])
        if fr["reference_chars"] is not None:
            c, d = fr["reference_chars"]
            row.update(reference_line=(ref_text or "")[c:d], reference_chars=[c, d])
    else:
        row["prefix"] = gen.text[: spans[-1][1] + 1] if spans else ""
    return row


def judge_summary(flips: list[dict]) -> dict:
    """How the full-precision judge's first step compares with the checker's on the flips."""
    j = [r for r in flips if "judge_step" in r]
    same = sum(r["judge_step"] == r["first_faulty_step"] for r in j)
    placed = [r for r in j if r["judge_step"] is not None and r["first_faulty_step"] is not None]
    return {
        "n": len(j),
        "flagged": sum(r["judge_step"] is not None for r in j),
        "same_step_as_checker": same,
        "earlier_than_checker": sum(r["judge_step"] < r["first_faulty_step"] for r in placed),
        "later_than_checker": sum(r["judge_step"] > r["first_faulty_step"] for r in placed),
    }


# ---------------------------------------------------------------------------------- summary


def summarise(
    cfg: DiagnoseConfig,
    problems: list[Problem],
    gens: dict[str, dict[str, Generation]],
    rows: list[dict],
    timings: dict,
    fingerprints: dict,
    prompt: dict | None = None,
) -> dict:
    n = len(problems)
    ref, quant = gens["reference"], gens["quantized"]
    k_ref = sum(ref[p.id].correct for p in problems)
    k_q = sum(quant[p.id].correct for p in problems)
    r2w = sum(ref[p.id].correct and not quant[p.id].correct for p in problems)
    w2r = sum(not ref[p.id].correct and quant[p.id].correct for p in problems)
    types: dict[str, Counter] = {"quantized": Counter(), "reference": Counter()}
    for r in rows:
        types[r["model"]][r["error_type"] or "none"] += 1
    shares = {}
    for m, c in types.items():
        typed = sum(c[t] for t in ERROR_TYPES)
        shares[m] = {t: round(c[t] / typed, 4) if typed else 0.0 for t in ERROR_TYPES}
    flips = [r for r in rows if r["model"] == "quantized" and r["flip"]]
    absolute: Counter = Counter()
    relative: Counter = Counter()
    for r in flips:
        k = r["first_faulty_step"]
        if k is None:
            absolute["none"] += 1
            continue
        absolute[str(k)] += 1
        frac = k / max(1, r["n_steps"])
        b = min(4, int(frac * 5))
        relative[f"{b / 5:.1f}-{(b + 1) / 5:.1f}"] += 1
    at = [r["margin_at_frontier"] for r in flips if r.get("margin_at_frontier") is not None]
    el = [r["margin_elsewhere"] for r in flips if r.get("margin_elsewhere") is not None]
    at_min = [r["min_margin_at_frontier"] for r in flips if r.get("min_margin_at_frontier") is not None]
    el_min = [r["min_margin_elsewhere"] for r in flips if r.get("min_margin_elsewhere") is not None]
    rf = [r["reference_margin_at_frontier"] for r in flips if r.get("reference_margin_at_frontier") is not None]
    conf = [r["confirmed"] for r in flips if r.get("confirmed") is not None]
    max_new = cfg.max_new_tokens or 0
    fmt = {tag: compliance([to_dict(g[p.id]) for p in problems], max_new) for tag, g in gens.items()}
    import torch
    import transformers

    from silverbullet import __version__

    return {
        "schema": 1,
        "command": "diagnose",
        "run": Path(cfg.out).name,
        "benchmark": cfg.benchmark,
        "split": cfg.split,
        "n": n,
        "seed": cfg.seed,
        "backend": cfg.backend,
        "prompt": {**(prompt or PromptRenderer("completion").describe()), "max_new_tokens": cfg.max_new_tokens},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": {
            "reference": _model_entry(cfg.reference, fingerprints["reference"]),
            "quantized": _model_entry(cfg.quantized, fingerprints["quantized"]),
        },
        "accuracy": {"reference": round(k_ref / n, 4) if n else 0.0, "quantized": round(k_q / n, 4) if n else 0.0},
        "accuracy_ci": {"reference": wilson(k_ref, n), "quantized": wilson(k_q, n)},
        "correct": {"reference": k_ref, "quantized": k_q},
        "flips": {"ref_right_quant_wrong": r2w, "ref_wrong_quant_right": w2r, "rate": round(r2w / n, 4) if n else 0.0},
        "error_types": {m: {t: c[t] for t in (*ERROR_TYPES, "none")} for m, c in types.items()},
        "error_type_shares": shares,
        "first_fault_position": {
            "absolute": dict(sorted(absolute.items())),
            "relative": dict(sorted(relative.items())),
        },
        "margins": {
            "frontier_mean": rounded_mean(at),
            "elsewhere_mean": rounded_mean(el),
            "frontier_min_mean": rounded_mean(at_min),
            "elsewhere_min_mean": rounded_mean(el_min),
            "reference_at_frontier_mean": rounded_mean(rf),
            "n": len(at),
            # The paper's claim, operationally: the step that flips holds the model's least certain token.
            "collapse": bool(at_min and el_min and rounded_mean(at_min) < 0.5 * rounded_mean(el_min)),
        },
        "confirmation": {
            "n": len(conf),
            "confirmed": sum(conf),
            "rate": round(sum(conf) / len(conf), 4) if conf else None,
        },
        "judge": judge_summary(flips),
        **({"trace_faults": tf} if (tf := trace_fault_summary(flips)) else {}),
        "format": fmt,
        # What the quantized model lost of the step format (empty: nothing beyond sampling noise).
        "format_drop": format_drop(fmt, wilson),
        "timings": timings,
        "versions": {
            "silverbullet": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "python": platform.python_version(),
        },
    }


def trace_fault_summary(flips: list[dict]) -> dict | None:
    """Where the quantized reasoning traces of the flips went wrong (evidence["trace"], trace.py):
    how many never closed, of those how many had already stated the right answer (a failure to
    finish) or first went wrong inside the trace, and by which check. None without traces."""
    traced = [r for r in flips if "trace" in (r.get("evidence") or {})]
    if not traced:
        return None
    unfinished = [r for r in traced if r["evidence"].get("check") == "unfinished_thinking"]
    faults = Counter(r["evidence"]["trace"]["fault"]["check"] for r in traced if r["evidence"]["trace"].get("fault"))
    return {
        "flips_with_trace": len(traced),
        "fault_in_trace": sum(faults.values()),
        "by_check": dict(faults.most_common()),
        "unfinished": len(unfinished),
        "unfinished_answered": sum(r["evidence"].get("rule") == "answered_in_trace" for r in unfinished),
        "unfinished_fault": sum(str(r["evidence"].get("rule", "")).startswith("trace_") for r in unfinished),
    }


# ---------------------------------------------------------------------------------- the command


def locate_wrong(
    att_path: Path,
    problems: list[Problem],
    gens: dict[str, dict[str, Generation]],
    generators: dict[str, Generator | None],
    cfg: DiagnoseConfig,
    prompts: dict[str, str] | None = None,
) -> list[dict]:
    """Attribute every wrong solution not yet in `att_path` (appended chunk by chunk, so a killed
    run resumes), with margins and causal confirmation; all rows in problem order. One loop for
    generated runs and runs read from sample files."""
    repair_torn_tail(att_path)
    rows = read_jsonl_rows(att_path)
    done = {(r["problem_id"], r["model"]) for r in rows}
    wrong = [
        (p, tag)
        for p in problems
        for tag in ("quantized", "reference")
        if not gens[tag][p.id].correct and (p.id, tag) not in done
    ]
    by_id = {p.id: p for p in problems}
    chunk = 64
    with ui.stage("locating first faulty steps", cfg.progress) as st:
        st.update(0, len(wrong))
        earlier = sum(1 for p in problems for tag in ("quantized", "reference")
                      if not gens[tag][p.id].correct and (p.id, tag) in done)  # fmt: skip
        st.summary = f"{len(wrong) + earlier} wrong solutions"
        if earlier:  # a resumed or re-run diagnose: say so, not "0 wrong solutions"
            st.summary += " (done earlier)" if not wrong else f" ({earlier} done earlier)"
        for i in range(0, len(wrong), chunk):
            new = [
                attribute(p, gens[tag][p.id], gens["reference"][p.id] if tag == "quantized" else None)
                for p, tag in wrong[i : i + chunk]
            ]
            add_margins_and_confirmation(
                new, by_id, gens["quantized"], generators["reference"], generators["quantized"], cfg, prompts
            )
            append_rows(att_path, new)
            rows.extend(new)
            st.update(min(i + chunk, len(wrong)), len(wrong))
    order = {p.id: i for i, p in enumerate(problems)}
    rows.sort(key=lambda r: (order.get(r["problem_id"], 0), r["model"]))
    return rows


# Below this, the reference model fails too often for "where does the quantized model part from it"
# to mean much (the shipped 8.5M model scores 0% on GSM8K).
LOW_REFERENCE_ACCURACY = 0.5


def reference_warnings(cfg: DiagnoseConfig, ref: dict[str, Generation]) -> list[str]:
    """What the user must know before reading the first faults: a reference that cannot solve the task."""
    acc = sum(g.correct for g in ref.values()) / max(1, len(ref))
    if acc >= LOW_REFERENCE_ACCURACY:
        return []
    return [
        f"the reference model solves only {acc:.1%} of {cfg.benchmark}/{cfg.split}, so first faults located "
        "against it mean little; bring a reference model that solves the task (--reference)"
    ]


def run_diagnose(cfg: DiagnoseConfig) -> dict:
    """Run (or resume) a diagnosis and return its summary (also written to summary.json)."""
    from silverbullet.benchmarks import load_benchmark

    if cfg.reference_samples or cfg.quantized_samples:  # generations from files: another source
        raise UserError("a run from sample files goes through diagnose_samples.run_from_samples")
    t_start = time.time()
    if len(cfg.devices) > 1 and cfg.backend != "hf":
        raise UserError("--devices shards the HF backend; with --backend vllm use --data-parallel-size")
    if cfg.load_in is not None and cfg.backend != "hf":
        raise UserError(f"--load-in {cfg.load_in} needs --backend hf (bitsandbytes runs in transformers)")
    if cfg.quantized is None:
        quantized = cfg.reference if cfg.load_in is not None else demo_quantized_path(cfg.reference)
        cfg = dataclasses.replace(cfg, quantized=quantized)
    out = Path(cfg.out)
    if cfg.backend == "hf":  # fail on a bad checkpoint now, not after generating with the other model
        from silverbullet.generation.loading import preflight

        preflight(cfg.reference)
        preflight(cfg.quantized, load_in=cfg.load_in)
    elif cfg.backend == "vllm":  # likewise for a checkpoint vLLM's CPU kernels cannot run
        _vllm_preflight(cfg)
    # Both models get the same prompts, rendered with the reference model's tokenizer (the quantized
    # checkpoint carries a copy of it); a bad prompt setting fails here, before anything is written.
    renderer = renderer_for_model(cfg.prompt_settings(), cfg.reference, cfg.benchmark)
    if cfg.max_new_tokens is None:
        cfg = dataclasses.replace(cfg, max_new_tokens=budget_for(cfg.benchmark, renderer))
    _check_run_dir(out, cfg)
    problems = load_benchmark(cfg.benchmark, split=cfg.split, limit=cfg.limit, seed=cfg.seed)
    if not problems:
        raise UserError(f"benchmark {cfg.benchmark!r} split {cfg.split!r} has no problems; check --benchmark/--split")
    write_text_atomic(out / PROBLEMS, "".join(json.dumps(to_dict(p)) + "\n" for p in problems))
    if cfg.compile and cfg.backend != "hf":
        ui.note(f"--compile ignored: it is for --backend hf, and --backend {cfg.backend} compiles its own decode")
    gen_cfg = GenerationConfig(
        batch_size=cfg.batch_size, max_new_tokens=cfg.max_new_tokens, margins=cfg.margins, compile=cfg.compile
    )
    # with --devices, this process keeps the first device for margins and confirmation
    main_cfg = dataclasses.replace(cfg, device=cfg.devices[0]) if len(cfg.devices) > 1 else cfg
    generators = {
        "reference": make_generator(cfg.reference, "reference", main_cfg),
        "quantized": make_generator(cfg.quantized, "quantized", main_cfg),
    }
    gens: dict[str, dict[str, Generation]] = {}
    timings: dict = {"generation_seconds": {}}
    paths = {"reference": cfg.reference, "quantized": cfg.quantized}
    for tag, gen in generators.items():
        t0 = time.time()
        with ui.stage(f"generating ({tag})", cfg.progress) as st:
            if len(cfg.devices) > 1:
                from silverbullet.sharding import generate_sharded

                load_in = None if tag == "reference" else cfg.load_in
                out_gens = generate_sharded(
                    paths[tag], tag, problems, renderer, gen_cfg, generations_file(out, tag),
                    cfg.devices, load_in=load_in, on_progress=ui.progress_callback(st),
                )  # fmt: skip
            else:
                out_gens = measure(
                    gen,
                    problems,
                    gen_cfg,
                    generations_file(out, tag),
                    chunk=cfg.batch_size,
                    on_progress=ui.progress_callback(st),
                    render=renderer,
                )
            st.summary = f"{sum(g.correct for g in out_gens)}/{len(out_gens)} correct"
        gens[tag] = {g.problem_id: g for g in out_gens}
        timings["generation_seconds"][tag] = round(time.time() - t0, 1)

    warnings = reference_warnings(cfg, gens["reference"])
    for w in warnings:
        ui.warn(w)

    t0 = time.time()
    rows = locate_wrong(out / ATTRIBUTION, problems, gens, generators, cfg)
    timings["attribution_seconds"] = round(time.time() - t0, 1)
    timings["total_seconds"] = round(time.time() - t_start, 1)
    fps = {tag: g.fingerprint for tag, g in generators.items()}
    for g in generators.values():
        close_generator(g)
    summary = summarise(cfg, problems, gens, rows, timings, fps, prompt=renderer.describe())
    summary["warnings"] = warnings
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=1))
    return summary
