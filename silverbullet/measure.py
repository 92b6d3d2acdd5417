"""Generate solutions for problems and grade them: the "measure" stage, resumable.

Rows are appended to `generations/<tag>.jsonl` chunk by chunk as they are produced, with an fsync,
so a killed run loses at most the chunk in flight; a re-run reads the file, skips the problem ids
already there (ignoring a torn last line) and continues. Everything that evaluates a model
(diagnose, repair's re-measure, the quantization table, the model card) goes through here.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

from silverbullet.generation.base import GenerationConfig, Generator
from silverbullet.grading import is_correct
from silverbullet.prompting import build_prompt, extract_answer
from silverbullet.prompting.formats import compliance
from silverbullet.records import Generation, Problem, to_dict
from silverbullet.run.jsonl import append_rows, read_jsonl_rows, repair_torn_tail, write_rows
from silverbullet.segmentation import with_opener

CHUNK = 64  # problems per generate call: results are appended (and resumable) per chunk


def measure(
    generator: Generator,
    problems: list[Problem],
    config: GenerationConfig,
    out_path: Path | None = None,
    chunk: int = CHUNK,
    on_progress: Callable[[int, int], None] | None = None,
    render: Callable[[str], str] = build_prompt,
) -> list[Generation]:
    """Generate and grade every problem; with `out_path`, resume from and append to that file.
    `render` turns a question into the prompt (prompting.formats; each row keeps its prompt)."""
    done: dict[str, dict] = {}
    if out_path is not None:
        repair_torn_tail(out_path)
        done = {r["problem_id"]: r for r in read_jsonl_rows(out_path)}
    # Longest prompts first across the whole run, not per chunk: a batch decodes until its longest
    # solution ends, and prompt length predicts solution length, so similar rows share a batch
    # (200 reference-task problems: 27 s in problem order, 18 s sorted, on 2 CPU cores).
    todo = sorted(((p, render(p.question)) for p in problems if p.id not in done), key=lambda pp: -len(pp[1]))
    total = len(problems)
    if on_progress:
        on_progress(total - len(todo), total)
    for start in range(0, len(todo), chunk):
        batch = [p for p, _ in todo[start : start + chunk]]
        prompts = [prompt for _, prompt in todo[start : start + chunk]]
        outs = generator.generate(prompts, config)
        rows = []
        for p, o, prompt in zip(batch, outs, prompts):
            prompt, text, ends = with_opener(prompt, o.text, o.token_ends)
            answer = extract_answer(text)
            g = Generation(
                problem_id=p.id,
                model=generator.tag,
                text=text,
                answer=answer,
                correct=is_correct(answer, p.answer, p.meta.get("grading", "numeric")),
                n_tokens=o.n_tokens,
                seconds=round(o.seconds, 4),
                margins=[round(m, 4) for m in o.margins] if o.margins is not None else None,
                token_ends=ends,
                prompt=prompt,
            )
            rows.append(to_dict(g))
            done[p.id] = rows[-1]
        if out_path is not None:
            append_rows(out_path, rows)
        if on_progress:
            on_progress(total - len(todo) + start + len(batch), total)
    if out_path is not None:  # the finished file lists problems in their order again
        ours = {p.id for p in problems}
        want = [p.id for p in problems] + [i for i in done if i not in ours]
        # `done` is in file order; also a run killed after its last append, before this rewrite,
        # finds every row written but in generation order, and puts them in order now
        if list(done) != want:
            write_rows(out_path, [done[i] for i in want])
    return [Generation(**{k: done[p.id].get(k) for k in Generation.__dataclass_fields__}) for p in problems]


def accuracy_by(problems: list[Problem], gens: list[Generation], key: str = "n_steps") -> dict[str, float]:
    """Accuracy grouped by a problem meta field (e.g. number of steps)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for p, g in zip(problems, gens):
        groups[str(p.meta.get(key))].append(g.correct)
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(groups.items())}


def evaluate_model(
    path: str,
    problems: list[Problem],
    tag: str = "model",
    batch_size: int = 64,
    device: str = "auto",
    adapter: str | None = None,
    progress: bool = False,
    generator: Generator | None = None,
    chunk: int = CHUNK,
    load_in: str | None = None,
    render: Callable[[str], str] = build_prompt,
    max_new_tokens: int = 320,
    compile: bool = False,
) -> dict:
    """Accuracy of a checkpoint on problems, with timing: the building block of the tables.
    `generator` replaces the plain HF one (the checker fallback passes its wrapper); `render` is the
    prompt format (prompting.formats); `compile` the HF backend's compiled decode on CUDA."""
    if generator is None:
        from silverbullet.generation.hf import HFGenerator

        generator = HFGenerator(path, tag=tag, device=device, adapter=adapter, load_in=load_in)
    t0 = time.time()
    gcfg = GenerationConfig(batch_size=batch_size, progress=progress, max_new_tokens=max_new_tokens, compile=compile)
    gens = measure(generator, problems, gcfg, chunk=chunk, render=render)
    secs = time.time() - t0
    return {
        "model": str(path),
        "n": len(problems),
        "accuracy": round(sum(g.correct for g in gens) / max(1, len(gens)), 4),
        "accuracy_by_steps": accuracy_by(problems, gens),
        "seconds": round(secs, 1),
        "tokens": sum(g.n_tokens for g in gens),
        "max_new_tokens": max_new_tokens,
        "format": compliance([to_dict(g) for g in gens], max_new_tokens),
    }
