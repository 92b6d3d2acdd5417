"""Benchmarks by name or path: `load_benchmark("gsm8k")`, `load_benchmark("data/my.jsonl", fields=...)`.

Registered names load the shared data folder ($SILVERBULLET_DATA or ../shared/data); anything that is
a local path is read as JSONL with a field mapping; an `owner/name` that is neither goes to
`datasets.load_dataset` (which needs network access).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from silverbullet.benchmarks import gsm8k, math, wordproblems
from silverbullet.benchmarks.jsonl import data_root, load_jsonl, rows_to_problems, subsample
from silverbullet.errors import UserError
from silverbullet.records import Problem

# name -> loader(split) returning every problem of that split; `synthetic` is handled apart.
REGISTRY: dict[str, Callable[[str], list[Problem]]] = {
    "gsm8k": gsm8k.load,
    "math": math.load_math,
    "aime24": lambda split: math.load_folder("aime24", split),
    "amc23": lambda split: math.load_folder("amc23", split),
    "minerva_math": lambda split: math.load_folder("minerva_math", split),
    "svamp": wordproblems.load_svamp,
    "asdiv": wordproblems.load_asdiv,
}
GENERATED = ("synthetic",)  # made on the fly by a module of that name: load(split, limit, seed)
# Generation budget per benchmark (--max-new-tokens overrides): room for a full solution of that
# difficulty, so a cut at the limit means a model that rambles, not a budget too small.
MAX_NEW_TOKENS = {
    "synthetic": 320,
    "gsm8k": 512,
    "svamp": 512,
    "asdiv": 512,
    "math": 1024,
    "minerva_math": 1024,
    "aime24": 2048,
    "amc23": 2048,
}
DEFAULT_MAX_NEW_TOKENS = 1024  # a JSONL file or hub dataset of unknown difficulty
# A reasoning model thinks before it answers: its trace is several times a solution's length, and a
# budget sized for the solution alone would cut most traces (no answer, graded wrong).
THINKING_BUDGET_FACTOR = 8


def default_max_new_tokens(name_or_path: str | Path, thinking: bool = False) -> int:
    """The benchmark's budget; `thinking`: the prompt opens a reasoning trace (x THINKING_BUDGET_FACTOR)."""
    base = MAX_NEW_TOKENS.get(str(name_or_path), DEFAULT_MAX_NEW_TOKENS)
    return base * THINKING_BUDGET_FACTOR if thinking else base


def known_benchmarks() -> list[str]:
    return sorted([*REGISTRY, *GENERATED])


def default_split(name: str) -> str:
    """The split a benchmark is evaluated on when none is named: the reference task's `eval`, every
    other benchmark's `test` (GSM8K, MATH, AIME, ...; a JSONL path ignores the split)."""
    return "eval" if str(name) in GENERATED else "test"


def repair_split(name: str) -> str:
    """The split repair data is drawn from: never the evaluation split (the reference task's
    `repair`, otherwise `train`)."""
    return "repair" if str(name) in GENERATED else "train"


def load_benchmark(
    name_or_path: str | Path,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    fields: dict[str, str] | None = None,
) -> list[Problem]:
    """Problems of a benchmark. `limit` keeps a seeded random subset (in file order), so ids and the
    chosen problems are the same on every run with the same seed. `fields` (JSONL paths and hub
    datasets only) maps question / answer / solution / id to row fields, dotted paths allowed, plus
    an optional "grading": "numeric" | "latex" (default: inferred from the answers)."""
    name = str(name_or_path)
    if limit is not None and limit < 1:
        raise UserError(f"limit must be >= 1, got {limit}")
    if name in GENERATED:
        return _load_generated(name, split, limit, seed)
    if name in REGISTRY:
        if fields:
            raise UserError(f"fields= applies to JSONL paths, not to the registered benchmark {name!r}")
        return subsample(REGISTRY[name](split), limit, seed)
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / f"{split}.jsonl"
    if path.is_file():
        return subsample(load_jsonl(path, fields=fields), limit, seed)
    if "/" in name and not name.startswith((".", "/", "~")) and name.count("/") == 1 and path.suffix == "":
        return subsample(_load_hub(name, split, fields), limit, seed)
    if path.suffix in (".jsonl", ".json") or "/" in name:
        raise UserError(f"benchmark file {path} not found")
    raise UserError(f"unknown benchmark {name!r}; known: {', '.join(known_benchmarks())}, or a JSONL path")


def _load_generated(name: str, split: str, limit: int | None, seed: int) -> list[Problem]:
    try:
        module = importlib.import_module(f"silverbullet.benchmarks.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"silverbullet.benchmarks.{name}":
            raise
        raise UserError(
            f"benchmark {name!r} is not available in this build (silverbullet.benchmarks.{name} is missing)"
        ) from None
    problems = module.load(split, limit, seed)
    if not problems:
        raise UserError(f"benchmark {name!r} produced no problems for split {split!r}")
    for p in problems:
        p.meta.setdefault("grading", "numeric")
    return problems


def _load_hub(name: str, split: str, fields: dict[str, str] | None) -> list[Problem]:
    """A hub dataset through `datasets` (only reached for names that are not local paths)."""
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # network errors, missing datasets, bad splits all end here
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"could not load hub dataset {name!r} split {split!r} ({msg}); there may be no network: "
            "pass a local JSONL path with fields= instead"
        ) from None
    rows = ((i + 1, dict(row)) for i, row in enumerate(ds))
    return rows_to_problems(
        rows, where=f"hub:{name}[{split}] row", source=name.split("/")[-1], split=split, fields=fields
    )


__all__ = [
    "REGISTRY",
    "data_root",
    "default_max_new_tokens",
    "default_split",
    "known_benchmarks",
    "load_benchmark",
    "repair_split",
]
