"""Build and curate the Silver Bullet SFT and DPO sets from first faulty steps.

An example teaches the quantized model the step where it first went wrong, in the exact context it
went wrong in: prompt = the prompt it was given (the run's format: chat template, exemplars, ...;
stored with each generation) + its own (correct) steps before the fault; chosen / completion =
the reference model's step there and the rest of its solution; rejected = the quantized model's
faulty step and what followed. TRL appends an end-of-sequence token to every completion, so
completions run to the answer line (where the model really stops), never a lone step.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from silverbullet.attribution.check import check_step
from silverbullet.attribution.steps import analyse_step
from silverbullet.errors import UserError
from silverbullet.grading import is_correct
from silverbullet.prompting import (
    ANSWER_LINE_RES,
    STEP_PREFIX_RE,
    build_prompt,
    extract_answer,
    renumber_step,
    segment,
    step_spans,
)
from silverbullet.repair.fallback import failed_step
from silverbullet.run.files import ATTRIBUTION, DPO_SET, GRPO_SET, PROBLEMS, SFT_SET, generations_file
from silverbullet.run.jsonl import read_jsonl_rows, write_rows

PAPER_SIZE = 332  # the paper's Silver Bullet set size


@dataclass
class DatasetConfig:
    max_examples: int = PAPER_SIZE
    balance: bool = True  # round-robin over error types so no type crowds out the others
    seed: int = 0


def continuation_from(text: str, step_index: int, first_number: int) -> str | None:
    """The solution from reasoning step `step_index` to its answer line, steps renumbered from
    `first_number` (so a reference continuation fits after the quantized prefix). Free-form text
    (no `Step k:` lines) is cut as written, from the step to the end of its answer statement."""
    seg = segment(text)
    spans = seg.spans
    if step_index >= len(spans):
        return None
    if seg.style != "steps":
        if seg.answer is None or seg.answer_span is None:
            return None
        return text[spans[step_index][0] : max(spans[-1][1], seg.answer_span[1])].rstrip() + "\n"
    lines = []
    for n, (a, b) in enumerate(spans[step_index:], start=first_number):
        lines.append(renumber_step(text[a:b], n))
    tail = text[spans[-1][1] :].split("\n")
    answer = next((ln for ln in tail if any(rx.match(ln) for rx in ANSWER_LINE_RES)), None)
    if answer is None:
        return None
    return "\n".join(lines + [answer.strip()]) + "\n"


def _normalise(s: str) -> str:
    return re.sub(r"\s+", " ", STEP_PREFIX_RE.sub("", s)).strip().lower()


def candidates(run_dir: Path) -> list[dict]:
    """Every usable (prompt, chosen, rejected) triple of a diagnose run, with provenance."""
    att_path = run_dir / ATTRIBUTION
    if not att_path.exists():
        raise UserError(f"{att_path} not found; run `silverbullet diagnose --out {run_dir}` first")
    ref = {r["problem_id"]: r for r in read_jsonl_rows(generations_file(run_dir, "reference"))}
    quant = {r["problem_id"]: r for r in read_jsonl_rows(generations_file(run_dir, "quantized"))}
    out = []
    for a in read_jsonl_rows(att_path):
        if a["model"] != "quantized" or not a.get("flip"):
            continue
        if a.get("first_faulty_step") is None:
            pair = trace_pair(a, ref.get(a["problem_id"]), quant.get(a["problem_id"]))
            if pair is not None:
                out.append(pair)
            continue
        j, k = a.get("aligned_reference_step"), a["first_faulty_step"]
        r, q = ref.get(a["problem_id"]), quant.get(a["problem_id"])
        if j is None or r is None or q is None or not r["correct"]:
            continue
        chosen = continuation_from(r["text"], j, k + 1)
        rejected = continuation_from(q["text"], k, k + 1)
        if not chosen or not rejected or chosen == rejected:
            continue
        first = segment(r["text"]).steps[j]  # the reference step the chosen continuation starts with
        if check_step(analyse_step(first, k)).status == "faulty":
            continue  # the chosen step must pass the step checker
        out.append(
            {
                "prompt": _prompt(q, a["question"]) + a["prefix"],
                "chosen": chosen,
                "rejected": rejected,
                "problem_id": a["problem_id"],
                "question": a["question"],
                "step_index": k,
                "error_type": a.get("error_type") or "none",
            }
        )
    return out


def trace_pair(a: dict, r: dict | None, q: dict | None) -> dict | None:
    """A first-fault pair inside a reasoning trace that never closed, cut where diagnose put its
    frontier (`trace_line`, trace.trace_frontier): before the trace's first slip, or after the line
    that had stated the right answer. Chosen = the reference's text from its line for that place (the
    aligned line, or the line after its own right answer: closing the trace and answering), rejected =
    the quantized model's from its frontier line on. None without a frontier or a reference line."""
    if r is None or q is None or not r.get("correct") or a.get("trace_line") is None:
        return None
    if not a.get("frontier_chars") or not a.get("reference_chars"):
        return None
    cut_q, cut_r = a["frontier_chars"][0], a["reference_chars"][0]
    chosen, rejected = r["text"][cut_r:], q["text"][cut_q:]
    if not chosen.strip() or not rejected.strip() or chosen == rejected:
        return None
    return {
        "prompt": _prompt(q, a["question"]) + q["text"][:cut_q],
        "chosen": chosen,
        "rejected": rejected,
        "problem_id": a["problem_id"],
        "question": a["question"],
        "step_index": None,
        "trace_line": a["trace_line"],
        "error_type": a.get("error_type") or "none",
    }


def _prompt(gen_row: dict | None, question: str) -> str:
    """The prompt a generation was made from, so training sees what inference sees (rows of runs made
    before prompts were stored used the completion format)."""
    p = (gen_row or {}).get("prompt")
    return p if isinstance(p, str) else build_prompt(question)


def curate(rows: list[dict], cfg: DatasetConfig) -> list[dict]:
    """Drop duplicate prefixes, balance by error type, cap the size (deterministic)."""
    seen, unique = set(), []
    for r in rows:
        key = _normalise(r["prompt"]) + "|" + _normalise(r["chosen"].split("\n", 1)[0])
        if key not in seen:
            seen.add(key)
            unique.append(r)
    rng = random.Random(cfg.seed)
    if not cfg.balance:
        rng.shuffle(unique)
        return unique[: cfg.max_examples]
    by_type: dict[str, list[dict]] = defaultdict(list)
    for r in unique:
        by_type[r["error_type"]].append(r)
    for v in by_type.values():
        rng.shuffle(v)
    out: list[dict] = []
    queues = [by_type[t] for t in sorted(by_type)]
    while len(out) < cfg.max_examples and any(queues):
        for q in queues:
            if q and len(out) < cfg.max_examples:
                out.append(q.pop())
    return out


def assert_disjoint(examples: list[dict], eval_questions: set[str]) -> None:
    """Repair data must never contain an evaluation problem (that would measure memory, not repair)."""
    leaked = [e["problem_id"] for e in examples if e["question"] in eval_questions]
    if leaked:
        raise UserError(
            f"{len(leaked)} repair examples are evaluation problems (e.g. {leaked[0]}); "
            "build the repair set from another split"
        )


# What the SFT set teaches (the DPO set is always the first-fault pairs):
#   step          the Silver Bullet rows: prompt = question + the quantized model's steps before its
#                 first fault, completion = the reference's continuation from there (the paper's set)
#   flipped-full  whole reference solutions of the problems that flipped (targeted by problem): those
#                 behind the first-fault pairs and every other flip of the run (all_flips)
#   full          the untargeted control: whole reference solutions of random repair-split problems
#   own           flipped-full's problems, each taught with the quantized model's *own* sampled solution
#                 when one of `own_samples` samples is right and the step checker refutes none of its
#                 steps (rejection sampling: on-policy text, closer to what the model already writes),
#                 else the reference's; rows taught an own solution have error_type "own"
# `replay` (a fraction) swaps that share of the budget for whole reference solutions of random other
# problems, which mostly the quantized model already solves: a guard against breaking them.
# `anchor` (a fraction) gives that share to the quantized model's *own* correct solutions, the least
# confident first: rows it already ranks first, so training them sharpens what it gets right
# instead of pulling it toward another model's wording.
SFT_DATA = ("step", "flipped-full", "full", "own")

# `own` draws its samples through this: (prompts, round) -> one sampled solution per prompt. Round r
# of `own_samples` asks only for the problems still without a right solution (pipeline.py samples the
# quantized model at a temperature, seeded from the run's seed and the round; tests pass a function).
Sampler = Callable[[list[str], int], list[str]]


def check_sft_options(mode: str, replay: float, anchor: float = 0.0, guard: float = 0.0) -> None:
    """One-line errors for an unknown SFT mode, or budget shares outside [0, 1] or adding up past it."""
    if mode not in SFT_DATA:
        raise UserError(f"--sft-data {mode!r} is not known; use one of {', '.join(SFT_DATA)}")
    shares = (("--replay", replay), ("anchor", anchor), ("guard", guard))
    for name, share in shares:
        if not 0.0 <= share <= 1.0:
            raise UserError(f"{name} must be a fraction in [0, 1], got {share}")
    if replay + anchor + guard > 1.0:
        given = ", ".join(f"{name} {share}" for name, share in shares if share)
        raise UserError(f"{given} add up to more than the whole budget; keep their sum <= 1")


def sft_rows(
    mode: str,
    pairs: list[dict],
    run_dir: Path,
    n: int,
    seed: int = 0,
    replay: float = 0.0,
    anchor: float = 0.0,
    guard: float = 0.0,
    sample: Sampler | None = None,
    own_samples: int = 8,
) -> list[dict]:
    """The SFT set for `mode` (see SFT_DATA), at most `n` rows, each with its provenance. `own`
    needs `sample`, the quantized model's sampler."""
    check_sft_options(mode, replay, anchor, guard)
    if mode == "own" and sample is None:
        raise ValueError("sft_data 'own' samples the quantized model: pass `sample`")
    if mode == "full":
        return control_set(run_dir, n, seed)
    n_anchor = round(n * anchor)
    n_main = n - round(n * replay) - n_anchor - round(n * guard)
    if mode == "step":
        main = [{**{k: e[k] for k in _PROV if k in e}, "prompt": e["prompt"], "completion": e["chosen"]} for e in pairs]
        main = main[:n_main]
    else:
        # every flip: the reference's whole right solution teaches it whether or not a step of it
        # aligned with the faulty one (free-prose references rarely align: 31 of 110 flips on Qwen2.5)
        # the pairs' problems too: a pair set built elsewhere (curated, hand-made) may name problems
        # the attribution file of this run does not mark
        targeted = {e["problem_id"] for e in pairs} | all_flips(run_dir)
        main = control_set(run_dir, n_main, seed, only=targeted)
        if mode == "own":
            main = own_solutions(main, run_dir, sample, own_samples)  # type: ignore[arg-type]
    flipped = {e["problem_id"] for e in pairs}
    guards = guard_set(run_dir, round(n * guard), exclude=flipped) if guard else []
    guarded = flipped | {e["problem_id"] for e in guards}
    anchors = guards + (anchor_set(run_dir, n_anchor, seed, exclude=guarded) if n_anchor else [])
    taken = {e["problem_id"] for e in main + anchors}
    extra = control_set(run_dir, n - len(main) - len(anchors), seed, exclude=taken) if replay else []
    for e in extra:
        e["error_type"] = "replay"
    return main + anchors + extra


def all_flips(run_dir: Path) -> set[str]:
    """Every flipped problem of the run (the attribution's flips: reference right, quantized wrong)."""
    att_path = run_dir / ATTRIBUTION
    if not att_path.exists():
        return set()
    return {a["problem_id"] for a in read_jsonl_rows(att_path) if a["model"] == "quantized" and a.get("flip")}


def unlocated_flips(run_dir: Path) -> set[str]:
    """Flipped problems whose fault has no response step: a reasoning model's trace that never closed,
    a solution with no steps. A pair inside the trace exists only where the trace shows its fault
    (trace_pair); the reference's whole solution teaches every one of them, so whole-solution modes
    take them all."""
    att_path = run_dir / ATTRIBUTION
    if not att_path.exists():
        return set()
    return {
        a["problem_id"]
        for a in read_jsonl_rows(att_path)
        if a["model"] == "quantized" and a.get("flip") and a.get("first_faulty_step") is None
    }


def own_solutions(rows: list[dict], run_dir: Path, sample: Sampler, k: int = 8) -> list[dict]:
    """`rows` (whole solutions of repair-split problems) with each completion swapped for the first of
    up to `k` sampled solutions that is right and has no step the checker refutes (a right answer
    reached through a wrong step would teach the slip); rows with none keep theirs. Each round
    samples only the problems still unsolved, so solved problems cost no more samples."""
    problems = {p["id"]: p for p in read_jsonl_rows(run_dir / PROBLEMS)}
    found: dict[str, str] = {}
    for round_ in range(k):
        todo = [r for r in rows if r["problem_id"] not in found]
        if not todo:
            break
        texts = sample([r["prompt"] for r in todo], round_)
        if len(texts) != len(todo):
            raise ValueError(f"the sampler returned {len(texts)} solutions for {len(todo)} prompts")
        for r, text in zip(todo, texts):
            p = problems[r["problem_id"]]
            grading = (p.get("meta") or {}).get("grading", "numeric")
            if is_correct(extract_answer(text), str(p["answer"]), grading) and failed_step(text) is None:
                found[r["problem_id"]] = text
    return [{**r, "completion": found[r["problem_id"]], "error_type": "own"} if r["problem_id"] in found else r
            for r in rows]  # fmt: skip


def guard_set(run_dir: Path, n: int, exclude: set[str] | None = None) -> list[dict]:
    """Problems the *reference* fails, where pulling the model toward the reference would break it:
    the quantized model's own correct solution when it has one, else the gold step solution."""
    problems = {p["id"]: p for p in read_jsonl_rows(run_dir / PROBLEMS)}
    quant = {r["problem_id"]: r for r in read_jsonl_rows(generations_file(run_dir, "quantized"))}
    own, gold = [], []
    for r in read_jsonl_rows(generations_file(run_dir, "reference")):
        pid = r["problem_id"]
        if r["correct"] or pid in (exclude or ()):
            continue
        q, sol = quant.get(pid), problems[pid].get("solution")
        if q and q["correct"]:
            own.append((pid, q["text"], r))
        elif sol and step_spans(sol) and any(rx.match(ln) for ln in sol.split("\n") for rx in ANSWER_LINE_RES):
            gold.append((pid, sol, r))
    return [_whole_solution(problems[pid], text, "guard", row) for pid, text, row in (own + gold)[:n]]


def anchor_set(run_dir: Path, n: int, seed: int = 0, exclude: set[str] | None = None) -> list[dict]:
    """The quantized model's own correct solutions, least confident first (smallest top-1 minus
    top-2 log-prob over the solution, when the diagnosis recorded margins; else in random order)."""
    problems = {p["id"]: p for p in read_jsonl_rows(run_dir / PROBLEMS)}
    own = [
        r
        for r in read_jsonl_rows(generations_file(run_dir, "quantized"))
        if r["correct"] and r["problem_id"] not in (exclude or ())
    ]
    random.Random(seed).shuffle(own)
    if own and all(r.get("margins") for r in own):
        own.sort(key=lambda r: min(r["margins"]))  # stable: ties keep the shuffled order
    return [_whole_solution(problems[r["problem_id"]], r["text"], "anchor", r) for r in own[:n]]


_PROV = ("problem_id", "question", "step_index", "error_type", "trace_line")  # trace_line: trace pairs only


def set_paths(out_dir: Path) -> tuple[Path, Path]:
    """Where a repair run keeps its SFT and DPO sets."""
    return out_dir / SFT_SET, out_dir / DPO_SET


def grpo_path(out_dir: Path) -> Path:
    """Where a repair run keeps its GRPO prompt set."""
    return out_dir / GRPO_SET


def grpo_rows(sft: list[dict], run_dir: Path) -> list[dict]:
    """The SFT rows' problems as GRPO prompts with their gold answers: the same problems SFT would
    teach, but the model samples its own solutions and the checker's reward (repair/reward.py)
    grades them, so no solution text is given."""
    problems = {p["id"]: p for p in read_jsonl_rows(run_dir / PROBLEMS)}
    return [
        {"prompt": r["prompt"], "question": problems[r["problem_id"]]["question"],
         "answer": str(problems[r["problem_id"]]["answer"]), "problem_id": r["problem_id"]}
        for r in sft
        if r.get("problem_id") in problems
    ]  # fmt: skip


def write_sets(sft: list[dict], pairs: list[dict], out_dir: Path) -> tuple[Path, Path]:
    """TRL's standard formats: prompt/completion (SFT) and prompt/chosen/rejected (DPO)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prov = ("problem_id", "step_index", "error_type", "trace_line")
    sft_path, dpo_path = set_paths(out_dir)
    write_rows(
        sft_path,
        [{"prompt": e["prompt"], "completion": e["completion"], **{k: e[k] for k in prov if k in e}} for e in sft],
    )
    write_rows(
        dpo_path,
        [
            {
                "prompt": e["prompt"],
                "chosen": e["chosen"],
                "rejected": e["rejected"],
                **{k: e[k] for k in prov if k in e},
            }
            for e in pairs
        ],  # fmt: skip
    )
    return sft_path, dpo_path


def control_set(
    run_dir: Path, n: int, seed: int = 0, only: set[str] | None = None, exclude: set[str] | None = None
) -> list[dict]:
    """Whole reference solutions (correct ones) of repair-split problems: the untargeted control,
    or with `only`, the flipped problems' solutions."""
    problems = {p["id"]: p for p in read_jsonl_rows(run_dir / PROBLEMS)}
    ref = [
        r
        for r in read_jsonl_rows(generations_file(run_dir, "reference"))
        if r["correct"] and (only is None or r["problem_id"] in only) and r["problem_id"] not in (exclude or ())
    ]
    random.Random(seed).shuffle(ref)
    kind = "control" if only is None else "full-solution"
    return [_whole_solution(problems[r["problem_id"]], r["text"], kind, r) for r in ref[:n]]


def _whole_solution(problem: dict, text: str, kind: str, gen_row: dict | None = None) -> dict:
    """An SFT row that teaches a whole solution from the question on (step_index 0), after the prompt
    `gen_row` (a generation of the same run) was made from."""
    return {
        "prompt": _prompt(gen_row, problem["question"]),
        "completion": text,
        "problem_id": problem["id"],
        "question": problem["question"],
        "step_index": 0,
        "error_type": kind,
    }
