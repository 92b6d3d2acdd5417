"""`silverbullet diagnose --reference-samples A --quantized-samples B`: the diagnosis of solutions that
were generated elsewhere (lm-evaluation-harness `--log_samples`, OpenAI-style or vLLM dumps, any JSONL).

The files are one more source of `Generation`s (silverbullet/generation/samples.py reads and pairs
them); from there the run is the generated one's: the same run directory, attribution and summary,
so `report`, `check` and `repair --from` read it unchanged. What needs a model runs only when one is
given: causal confirmation with `--quantized`, the reference's margin on the same prefix with
`--reference`. Margins come from the files' own top-k logprobs, or are marked unavailable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

from silverbullet.benchmarks import default_max_new_tokens
from silverbullet.diagnose import (
    DiagnoseConfig,
    _check_run_dir,
    close_generator,
    locate_wrong,
    make_generator,
    summarise,
)
from silverbullet.errors import UserError
from silverbullet.generation.samples import Pairing, SampleRow, SampleSet, pair_samples, question_hash, read_samples
from silverbullet.grading import is_correct
from silverbullet.prompting import extract_answer
from silverbullet.records import Generation, Problem, to_dict
from silverbullet.run.files import ATTRIBUTION, PROBLEMS, SUMMARY, generations_file
from silverbullet.run.jsonl import read_jsonl_rows, write_rows, write_text_atomic
from silverbullet.segmentation import with_opener

TAGS = ("reference", "quantized")


def _problems(pairing: Pairing, ref: SampleSet, quant: SampleSet, cfg: DiagnoseConfig) -> list[Problem]:
    """One Problem per pair. Gold answers come from `--benchmark` where given (its problem found by
    id or question), else from the files, which must then agree with each other."""
    from silverbullet.benchmarks import load_benchmark
    from silverbullet.benchmarks.jsonl import infer_grading

    bench_by_q: dict[str, Problem] = {}
    bench_by_id: dict[str, Problem] = {}
    if cfg.benchmark:
        for p in load_benchmark(cfg.benchmark, split=cfg.split, limit=None, seed=cfg.seed):
            bench_by_q.setdefault(question_hash(p.question), p)
            bench_by_id[p.id] = p
    source = ref.task or ref.path.stem
    out: list[Problem] = []
    for a, b in pairing.pairs:
        question = a.question or b.question or ""
        if a.answer is not None and b.answer is not None and a.answer.strip() != b.answer.strip():
            raise UserError(
                f"{quant.path}:{b.line}: gold answer {b.answer!r}, but {ref.path}:{a.line} has {a.answer!r} for "
                "the same problem: the files are of different tasks"
            )
        bp = None
        if cfg.benchmark:
            bp = bench_by_q.get(question_hash(question)) if question else None
            bp = bp or bench_by_id.get(a.id or "")
            if bp is None:
                raise UserError(
                    f"{ref.path}:{a.line}: problem not in benchmark {cfg.benchmark!r} split {cfg.split!r} "
                    "(matched by question and id); pass the benchmark the samples were made on, or leave "
                    "--benchmark out to grade against the files' own gold answers"
                )
        gold = bp.answer if bp else (a.answer if a.answer is not None else b.answer)
        if gold is None or not str(gold).strip():
            raise UserError(
                f"{ref.path}:{a.line}: no gold answer in the file for this problem; pass --benchmark NAME "
                "(or map one with --samples-fields answer=FIELD)"
            )
        pid = bp.id if bp else f"{source}-{a.id}" if pairing.by == "id" else f"{source}-q{question_hash(question)}"
        meta = dict(bp.meta) if bp else {}
        meta.update(lines={"reference": a.line, "quantized": b.line})
        if a.prompt:  # as the generations store it: a trace's opening tag goes with the text
            meta["prompt"] = with_opener(a.prompt, "", None)[0]
        out.append(
            Problem(
                id=pid,
                question=bp.question if bp else question,
                answer=str(gold),
                solution=bp.solution if bp else (a.solution or b.solution),
                source=bp.source if bp else source,
                meta=meta,
            )
        )
    kind = None if cfg.benchmark else infer_grading(p.answer for p in out)
    for p in out:
        p.meta.setdefault("grading", kind or "numeric")
    return out


def _generation(p: Problem, row: SampleRow, tag: str) -> Generation:
    _, text, ends = with_opener(row.prompt, row.text, row.token_ends)
    answer = extract_answer(text)
    return Generation(
        problem_id=p.id,
        model=tag,
        text=text,
        answer=answer,
        correct=is_correct(answer, p.answer, p.meta.get("grading", "numeric")),
        n_tokens=row.n_tokens,
        seconds=0.0,
        margins=row.margins,
        token_ends=ends,
    )


def own_score_agreement(rows: list[SampleRow], gens: list[Generation]) -> dict:
    """Per metric the file itself states (lm-eval `exact_match,<filter>`...): its accuracy and on how
    many samples it disagrees with our grader. Only 0/1 metrics are comparable with a right/wrong."""
    out: dict[str, dict] = {}
    for row, g in zip(rows, gens):
        for name, v in row.scores.items():
            if v not in (0.0, 1.0):
                continue
            d = out.setdefault(name, {"n": 0, "file_correct": 0, "disagree": 0, "examples": []})
            d["n"] += 1
            d["file_correct"] += int(v)
            if bool(v) != g.correct:
                d["disagree"] += 1
                if len(d["examples"]) < 5:
                    d["examples"].append(g.problem_id)
    for d in out.values():
        d["file_accuracy"] = round(d["file_correct"] / d["n"], 4)
    return out


def run_from_samples(cfg: DiagnoseConfig) -> dict:
    """Read, pair and grade both files, then attribute and summarise as `run_diagnose` does."""
    t_start = time.time()
    if not (cfg.reference_samples and cfg.quantized_samples):
        raise UserError("--reference-samples and --quantized-samples go together: pass both files")
    if cfg.backend not in ("hf", "vllm"):
        raise UserError(f"--backend {cfg.backend!r} is not known; use hf or vllm")
    fields = dict(cfg.samples_fields or {})
    sets = {
        "reference": read_samples(cfg.reference_samples, cfg.samples_format, fields),
        "quantized": read_samples(cfg.quantized_samples, cfg.samples_format, fields),
    }
    ref, quant = sets["reference"], sets["quantized"]
    pairing = pair_samples(ref, quant)
    problems = _problems(pairing, ref, quant, cfg)
    pairs = pairing.pairs
    if cfg.limit:
        problems, pairs = problems[: cfg.limit], pairs[: cfg.limit]
    read_seconds = round(time.time() - t_start, 1)
    if cfg.backend == "hf":  # a model given for confirmation must load before any work
        from silverbullet.generation.loading import preflight

        for path in (cfg.reference, cfg.quantized):
            if path:
                preflight(path)

    out = Path(cfg.out)
    _check_run_dir(out, cfg)
    write_text_atomic(out / PROBLEMS, "".join(json.dumps(to_dict(p)) + "\n" for p in problems))
    gens: dict[str, dict[str, Generation]] = {}
    stale = False
    for i, tag in enumerate(TAGS):
        made = [_generation(p, pair[i], tag) for p, pair in zip(problems, pairs)]
        path = generations_file(out, tag)
        new = [to_dict(g) for g in made]
        stale |= read_jsonl_rows(path) != new
        write_rows(path, new)
        gens[tag] = {g.problem_id: g for g in made}
    att_path = out / ATTRIBUTION
    if stale:  # other files than the run was made from: its attribution rows are not theirs
        att_path.unlink(missing_ok=True)

    generators = {
        "reference": make_generator(cfg.reference, "reference", cfg) if cfg.reference else None,
        "quantized": make_generator(cfg.quantized, "quantized", cfg) if cfg.quantized else None,
    }
    run_cfg = dataclasses.replace(
        cfg,
        margins=cfg.margins and generators["reference"] is not None,
        confirm=cfg.confirm and generators["quantized"] is not None,
        # confirmation continues the quantized model; its budget is the benchmark's default
        max_new_tokens=cfg.max_new_tokens or default_max_new_tokens(cfg.benchmark or "synthetic"),
    )
    prompts = {p.id: p.meta["prompt"] for p in problems if p.meta.get("prompt")}
    t0 = time.time()
    rows = locate_wrong(att_path, problems, gens, generators, run_cfg, prompts)
    for g in generators.values():
        if g is not None:
            close_generator(g)
    timings = {
        "generation_seconds": {"reference": 0.0, "quantized": 0.0},
        "reading_seconds": read_seconds,
        "attribution_seconds": round(time.time() - t0, 1),
        "total_seconds": round(time.time() - t_start, 1),
    }
    fps = {tag: f"sha256:{s.sha256[:16]}" for tag, s in sets.items()}
    shown = dataclasses.replace(cfg, benchmark=cfg.benchmark or ref.task or ref.path.stem)
    # The prompts are the files' own: runs pair (check --baseline) when their files asked the same.
    asked = json.dumps([p.meta.get("prompt") for p in problems])
    prompt = {"format": "samples", "id": hashlib.sha256(asked.encode()).hexdigest()[:16]}
    summary = summarise(shown, problems, gens, rows, timings, fps, prompt=prompt)
    _samples_summary(summary, cfg, sets, pairing, problems, pairs, gens, run_cfg)
    write_text_atomic(out / SUMMARY, json.dumps(summary, indent=1))
    return summary


def _samples_summary(summary, cfg, sets, pairing, problems, pairs, gens, run_cfg) -> None:
    """What a samples run adds to summary.json: where the solutions came from and what was not done."""
    summary["backend"] = "samples"
    summary["source"] = "samples"
    for tag, s in sets.items():
        summary["models"][tag]["samples"] = str(s.path)
    margins_have = {tag: sum(gens[tag][p.id].margins is not None for p in problems) for tag in TAGS}
    own = {
        tag: own_score_agreement([pr[i] for pr in pairs], [gens[tag][p.id] for p in problems])
        for i, tag in enumerate(TAGS)
    }
    summary["samples"] = {
        "format": {tag: s.format for tag, s in sets.items()},
        "task": sets["reference"].task,
        "files": {tag: str(s.path) for tag, s in sets.items()},
        "rows": {tag: len(s.rows) for tag, s in sets.items()},
        "paired_by": pairing.by,
        "pairs": len(pairing.pairs),
        "unmatched": pairing.unmatched,
        "duplicates": pairing.duplicates,
        "margins_available": margins_have,
        "own_scores": own,
        "disagreements": {tag: sum(d["disagree"] for d in own[tag].values()) for tag in TAGS},
    }
    m = summary["margins"]
    if not margins_have["quantized"]:
        m["status"] = "unavailable: the quantized samples carry no per-token top-2 logprobs"
    elif not run_cfg.margins:
        m["status"] = "from the files; the reference's margin on the same prefix needs --reference MODEL"
    else:
        m["status"] = "from the files and the reference model"
    c = summary["confirmation"]
    c["status"] = (
        "run"
        if run_cfg.confirm
        else (
            "not run: causal confirmation needs the quantized model; pass --quantized MODEL"
            if cfg.confirm
            else "not run: --no-confirm"
        )
    )
