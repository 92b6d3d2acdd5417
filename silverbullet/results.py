"""Results as data: a run directory's files as tidy pandas DataFrames, for notebooks and dashboards.

`open_run(path)` reads what `diagnose` and `repair` wrote (docs/run-format.md) and joins nothing
by hand: one frame per kind of row, keyed on `problem_id`, with dtypes set (nullable integers and
booleans, categoricals for model and error type). `compare_runs(paths)` lines several runs up on
problem id, with the paired differences `silverbullet check` computes (check.py's own functions).
`export_run` writes the frames as Parquet or CSV (`silverbullet export`). docs/python-api.md has a
worked example. This module only reads run files: it never repairs or rewrites them.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from silverbullet.check import SCHEMA, _paired_counts, compare_baseline, load_summary, newcombe_paired, summary_path
from silverbullet.errors import UserError
from silverbullet.prompting import STEP_PREFIX_RE
from silverbullet.run.files import (
    ATTRIBUTION,
    CONFIG,
    EVAL_SPLIT,
    GENERATIONS,
    PROBLEMS,
    REPAIR_SUMMARY,
    SFT_SET,
    SUMMARY,
    generations_file,
)
from silverbullet.run.jsonl import read_jsonl_rows
from silverbullet.segmentation import segment

ERROR_TYPES = ("execution", "method", "conceptual", "reasoning")
# Provenance kinds of whole-solution rows in the repair sets (repair/dataset.py), after the fault types.
SET_KINDS = (*ERROR_TYPES, "none", "full-solution", "control", "replay", "anchor", "guard")
MODELS = ("reference", "quantized", "repaired", "checked", "merged")
REPAIR_TAGS = ("repaired", "checked", "merged")  # generation files a repair writes: the `repaired` frame
FLIP_DIRECTIONS = ("ref_right_quant_wrong", "ref_wrong_quant_right")
FORMATS = ("parquet", "csv")
EXPORT_DIR = "export"  # default `silverbullet export` folder inside the run; the report links it


# ------------------------------------------------------------------------------------ reading files


class TornLineWarning(UserWarning):
    """A run file's last line was half-written (the run was killed mid-write) and was skipped."""


def _rows(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Rows of a JSONL run file (measure.read_jsonl_rows: a torn last line is dropped, a bad line in
    the middle is a UserError), with a warning for the dropped line and every required key checked.
    The file is not touched (measure.repair_torn_tail would cut it: a reader must not write)."""
    if not path.is_file():
        return []
    rows = read_jsonl_rows(path)
    lines = [x for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]
    if len(lines) > len(rows):
        warnings.warn(
            f"{path}: skipped a torn last line (the run was stopped mid-write; re-running it completes the file)",
            TornLineWarning,
            stacklevel=3,
        )
    for i, r in enumerate(rows):
        for key in required:
            if key not in r:
                raise UserError(
                    f"{path}:{i + 1}: row has no '{key}' field; it is not a silverbullet run file "
                    "(docs/run-format.md), or was edited by hand"
                )
    return rows


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); re-run the command that wrote it") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; is it really a silverbullet file?")
    return data


def _check_schema(path: Path, data: dict[str, Any]) -> None:
    schema = data.get("schema")
    if schema != SCHEMA:
        newer = isinstance(schema, int) and schema > SCHEMA
        raise UserError(
            f"{path} has schema {schema!r} but this silverbullet reads schema {SCHEMA}; "
            + ("upgrade silverbullet to read it" if newer else "it is not a silverbullet run file (docs/run-format.md)")
        )


# ------------------------------------------------------------------------------------ typed columns


def _col(values: list[Any], kind: str, path: Path, name: str) -> Any:
    """One column with its dtype; a value of the wrong type is a UserError naming file and field."""
    try:
        if kind == "string":
            return pd.array([None if v is None else str(v) for v in values], dtype="string")
        if kind == "json":
            return pd.array([None if v is None else json.dumps(v, sort_keys=True) for v in values], dtype="string")
        if kind == "Int64":
            for v in values:
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                    raise TypeError(v)
            return pd.array(values, dtype="Int64")
        if kind == "Float64":
            for v in values:
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise TypeError(v)
            return pd.array([None if v is None else float(v) for v in values], dtype="Float64")
        if kind == "boolean":
            for v in values:
                if v is not None and not isinstance(v, bool):
                    raise TypeError(v)
            return pd.array(values, dtype="boolean")
    except (TypeError, ValueError) as e:
        raise UserError(
            f"{path}: field '{name}' holds {e.args[0]!r}, not a {kind} value; the file was edited or is not a "
            "silverbullet run file (docs/run-format.md)"
        ) from None
    raise AssertionError(kind)


def _categorical(values: list[Any], known: tuple[str, ...]) -> pd.Categorical:
    """Categories: the known ones in their order, then any others seen (sorted), so frames of
    several runs share one dtype and an unexpected value is kept rather than turned into NaN."""
    extra = sorted({str(v) for v in values if v is not None} - set(known))
    return pd.Categorical([None if v is None else str(v) for v in values], categories=[*known, *extra])


def _frame(columns: dict[str, Any], n: int) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.RangeIndex(n))


def _margin_stats(margins: Any) -> tuple[float | None, float | None]:
    if not isinstance(margins, list):
        return None, None
    xs = [float(m) for m in margins if isinstance(m, (int, float)) and not isinstance(m, bool)]
    return (sum(xs) / len(xs), min(xs)) if xs else (None, None)


def format_compliance(text: str) -> dict[str, Any]:
    """How well a solution follows the step format (prompting.py), from its text alone: steps
    counted as `parse_solution` counts them, whether every reasoning line has a "Step k:" prefix,
    whether those are numbered 1, 2, 3, ..., whether there is an answer line, and the reasoning trace's
    length (None: no trace) and whether it never closed. One segmentation per row."""
    p = segment(text or "")
    nums = [STEP_PREFIX_RE.match(s) for s in p.raw_steps]
    prefixed = bool(p.raw_steps) and all(nums)
    in_order = prefixed and [int(m.group(1)) for m in nums if m] == list(range(1, len(nums) + 1))
    return {
        "n_steps": len(p.steps),
        "has_step_prefixes": prefixed,
        "steps_in_order": in_order,
        "has_answer_line": p.has_answer_line,
        "format_ok": prefixed and in_order and p.has_answer_line,
        "thinking_chars": p.thinking_span[1] - p.thinking_span[0] if p.thinking_span else None,
        "thinking_unfinished": p.thinking_unfinished,
    }


GENERATION_FIELDS = {"answer": "string", "correct": "boolean", "n_tokens": "Int64", "seconds": "Float64"}


def _generations(rows: list[tuple[str, Path, dict[str, Any]]], order: dict[str, int]) -> pd.DataFrame:
    """(tag, file, row) triples -> one row per problem x model; checked rows keep who served them."""

    def rank(t: tuple[str, Path, dict[str, Any]]) -> tuple:
        tag = t[0]
        return order.get(str(t[2]["problem_id"]), len(order)), MODELS.index(tag) if tag in MODELS else 99, tag

    rows = sorted(rows, key=rank)
    fmt = [format_compliance(r.get("text") or "") for _, _, r in rows]
    stats = [_margin_stats(r.get("margins")) for _, _, r in rows]
    path = rows[0][1].parent if rows else Path(GENERATIONS)
    cols: dict[str, Any] = {
        "problem_id": _col([r["problem_id"] for _, _, r in rows], "string", path, "problem_id"),
        "model": _categorical([t for t, _, _ in rows], MODELS),
        "served_by": _categorical([r.get("model", t) for t, _, r in rows], MODELS),
        "answer": _col([r.get("answer") for _, _, r in rows], "string", path, "answer"),
        "correct": _col([r.get("correct") for _, _, r in rows], "boolean", path, "correct"),
        "n_tokens": _col([r.get("n_tokens") for _, _, r in rows], "Int64", path, "n_tokens"),
        "seconds": _col([r.get("seconds") for _, _, r in rows], "Float64", path, "seconds"),
    }
    for k in format_compliance(""):
        cols[k] = _col([f[k] for f in fmt], "Int64" if k in ("n_steps", "thinking_chars") else "boolean", path, k)
    cols["has_margins"] = pd.array([s[0] is not None for s in stats], dtype="boolean")
    cols["mean_margin"] = _col([s[0] for s in stats], "Float64", path, "margins")
    cols["min_margin"] = _col([s[1] for s in stats], "Float64", path, "margins")
    cols["text"] = _col([r.get("text") for _, _, r in rows], "string", path, "text")
    return _frame(cols, len(rows))


ATTRIBUTION_FIELDS = {  # column -> dtype, as in attribution.jsonl (docs/run-format.md)
    "flip": "boolean",
    "first_faulty_step": "Int64",
    "error_type": "error_type",
    "evidence_check": "string",
    "evidence_rule": "string",
    "trace_line": "Int64",
    "aligned_reference_step": "Int64",
    "n_steps": "Int64",
    "final_answer_correct": "boolean",
    "fault_in_answer_line": "boolean",
    "reference_source": "string",
    "margin_at_frontier": "Float64",
    "margin_elsewhere": "Float64",
    "min_margin_at_frontier": "Float64",
    "min_margin_elsewhere": "Float64",
    "reference_margin_at_frontier": "Float64",
    "confirmed": "boolean",
    "frontier_start": "Int64",
    "frontier_end": "Int64",
    "prefix": "string",
    "faulty_line": "string",
    "reference_line": "string",
    "confirmation_text": "string",
    "evidence": "json",
}


def _attributions(rows: list[dict[str, Any]], path: Path, order: dict[str, int]) -> pd.DataFrame:
    rows = sorted(rows, key=lambda r: (order.get(str(r["problem_id"]), len(order)), str(r["model"])))
    flat = []
    for r in rows:
        ev = r.get("evidence")
        chars = r.get("frontier_chars") if isinstance(r.get("frontier_chars"), list) else [None, None]
        flat.append(
            {
                **r,
                "evidence_check": ev.get("check") if isinstance(ev, dict) else None,
                "evidence_rule": ev.get("rule") if isinstance(ev, dict) else None,
                "frontier_start": chars[0] if len(chars) == 2 else None,
                "frontier_end": chars[1] if len(chars) == 2 else None,
            }
        )
    cols: dict[str, Any] = {
        "problem_id": _col([r["problem_id"] for r in flat], "string", path, "problem_id"),
        "model": _categorical([r["model"] for r in flat], MODELS),
    }
    for name, kind in ATTRIBUTION_FIELDS.items():
        values = [r.get(name) for r in flat]
        cols[name] = _categorical(values, ERROR_TYPES) if kind == "error_type" else _col(values, kind, path, name)
    return _frame(cols, len(flat))


# ------------------------------------------------------------------------------------ the run


def _locate(path: Path) -> tuple[Path, Path | None]:
    """(diagnose dir, repair dir or None) of a run path: a diagnose run, a repair run (its
    evaluation diagnose is `eval-split/` inside it or the `eval_run` it names), or either's summary."""
    path = Path(path)
    if path.is_file() and path.name in (SUMMARY, REPAIR_SUMMARY):
        path = path.parent
    if not path.exists():
        raise UserError(f"{path} does not exist; pass a run directory (the --out of `silverbullet diagnose` or repair)")
    if not path.is_dir():
        raise UserError(f"{path} is not a run directory; pass the --out of `silverbullet diagnose` or `repair`")
    repair = path if (path / REPAIR_SUMMARY).is_file() and _has_repair_files(path) else None
    if (path / SUMMARY).is_file():
        return path, repair
    if (path / REPAIR_SUMMARY).is_file():
        rs_path = path / REPAIR_SUMMARY
        rs = _json(rs_path)
        _check_schema(rs_path, rs)
        tries = [path / EVAL_SPLIT]
        if isinstance(rs.get("eval_run"), str):
            named = Path(rs["eval_run"])
            tries += [named] if named.is_absolute() else [named, path.parent / named, path / named]
        for t in tries:
            if (t / SUMMARY).is_file():
                return t, path
        raise UserError(
            f"{path} is a repair run but its evaluation diagnose ({rs.get('eval_run', path / 'eval-split')}) "
            "is not found; open it from the directory it was run in, or pass the diagnose run itself"
        )
    if (path / EVAL_SPLIT / SUMMARY).is_file():
        raise UserError(
            f"{path} is a repair run that has not finished (no repair_summary.json); re-run `silverbullet repair "
            f"--out {path}` (it resumes), or open {path / 'eval-split'} for its evaluation diagnose"
        )
    if (path / GENERATIONS).is_dir() or (path / PROBLEMS).is_file():
        summary_path(path)  # check.py's message for a diagnosis still running or stopped
    raise UserError(
        f"{path} is not a silverbullet run (no summary.json or repair_summary.json); "
        "pass the --out directory of `silverbullet diagnose` or `silverbullet repair`"
    )


def _has_repair_files(path: Path) -> bool:
    return any((generations_file(path, t)).is_file() for t in REPAIR_TAGS) or any(
        (path / f"silverbullet_{k}.jsonl").is_file() for k in ("sft", "dpo")
    )


@dataclass
class Run:
    """One run directory as DataFrames (each read on first use, then kept).

    problems      one row per problem: problem_id, question, answer (gold), solution, source, meta_* columns
    generations   one row per problem x model (reference, quantized): answer, correct, n_steps, n_tokens,
                  format compliance (has_step_prefixes, steps_in_order, has_answer_line, format_ok), margins
    attributions  one row per wrong answer: first faulty step, error type, evidence, margins, confirmed
    flips         one row per problem the two models disagree on, with the quantized first fault
    repaired      after repair: one row per problem x (repaired, checked, merged), as generations
    sets          after repair: the SFT rows and DPO pairs with their provenance
    summary       summary.json as a dict; repair_summary: repair_summary.json (or None)
    """

    path: Path
    diagnose_dir: Path
    repair_dir: Path | None
    summary: dict[str, Any] = field(repr=False)
    repair_summary: dict[str, Any] | None = field(default=None, repr=False)
    config: dict[str, Any] | None = field(default=None, repr=False)

    @cached_property
    def _problem_rows(self) -> list[dict[str, Any]]:
        return _rows(self.diagnose_dir / PROBLEMS, ("id",))

    @cached_property
    def _order(self) -> dict[str, int]:
        return {str(p["id"]): i for i, p in enumerate(self._problem_rows)}

    @cached_property
    def problems(self) -> pd.DataFrame:
        rows, path = self._problem_rows, self.diagnose_dir / PROBLEMS
        cols: dict[str, Any] = {"problem_id": _col([p["id"] for p in rows], "string", path, "id")}
        for name in ("question", "answer", "solution", "source"):
            cols[name] = _col([p.get(name) for p in rows], "string", path, name)
        metas = [p.get("meta") if isinstance(p.get("meta"), dict) else {} for p in rows]
        for key in sorted({k for m in metas for k in m}):
            values = [m.get(key) for m in metas]
            cols[f"meta_{key}"] = _col(values, _infer_kind(values), path, f"meta.{key}")
        return _frame(cols, len(rows))

    @cached_property
    def generations(self) -> pd.DataFrame:
        return _generations(self._generation_rows(self.diagnose_dir, exclude=REPAIR_TAGS), self._order)

    @cached_property
    def attributions(self) -> pd.DataFrame:
        path = self.diagnose_dir / ATTRIBUTION
        return _attributions(_rows(path, ("problem_id", "model")), path, self._order)

    @cached_property
    def flips(self) -> pd.DataFrame:
        """Problems where reference and quantized disagree (from the generations), with the quantized
        answer's first fault (from attribution.jsonl; NA until attribution reached that problem)."""
        g = self.generations
        by = {
            m: {pid: (c, a) for pid, c, a in zip(sub["problem_id"], sub["correct"], sub["answer"])}
            for m, sub in ((m, g[g["model"] == m]) for m in ("reference", "quantized"))
        }
        ref, quant = by["reference"], by["quantized"]
        ids = [
            pid
            for pid in dict.fromkeys(g["problem_id"])
            if pid in ref
            and pid in quant
            and ref[pid][0] is not pd.NA
            and quant[pid][0] is not pd.NA
            and bool(ref[pid][0]) != bool(quant[pid][0])
        ]
        att = self.attributions
        att = att[att["model"] == "quantized"].drop(columns=["model", "flip"]).set_index("problem_id")
        out = pd.DataFrame({"problem_id": pd.array(ids, dtype="string")})
        out["direction"] = pd.Categorical(
            [FLIP_DIRECTIONS[0] if ref[i][0] else FLIP_DIRECTIONS[1] for i in ids], categories=FLIP_DIRECTIONS
        )
        out["reference_answer"] = pd.array([ref[i][1] for i in ids], dtype="string")
        out["quantized_answer"] = pd.array([quant[i][1] for i in ids], dtype="string")
        joined = att.reindex(pd.Index(ids, dtype="string"))
        for c in joined.columns:
            out[c] = joined[c].array
        return out

    @cached_property
    def repaired(self) -> pd.DataFrame | None:
        """The repaired model's generations (and the checker fallback's and the merged model's where
        present); `served_by` says whose solution the checker fallback served. None without repair."""
        if self.repair_dir is None:
            return None
        rows = self._generation_rows(self.repair_dir, only=REPAIR_TAGS)
        return _generations(rows, self._order)

    @cached_property
    def sets(self) -> pd.DataFrame | None:
        """The Silver Bullet SFT rows and DPO pairs with provenance (problem, step, error type or kind)."""
        if self.repair_dir is None:
            return None
        flat = []
        for kind in ("sft", "dpo"):
            path = self.repair_dir / f"silverbullet_{kind}.jsonl"
            for i, r in enumerate(_rows(path, ("prompt", "problem_id"))):
                flat.append({**r, "set": kind, "row": i})
        path = self.repair_dir / SFT_SET
        cols: dict[str, Any] = {
            "set": pd.Categorical([r["set"] for r in flat], categories=["sft", "dpo"]),
            "row": pd.array([r["row"] for r in flat], dtype="Int64"),
            "problem_id": _col([r["problem_id"] for r in flat], "string", path, "problem_id"),
            "step_index": _col([r.get("step_index") for r in flat], "Int64", path, "step_index"),
            "trace_line": _col([r.get("trace_line") for r in flat], "Int64", path, "trace_line"),
            "error_type": _categorical([r.get("error_type") for r in flat], SET_KINDS),
        }
        for name in ("prompt", "completion", "chosen", "rejected"):
            cols[name] = _col([r.get(name) for r in flat], "string", path, name)
        return _frame(cols, len(flat))

    def frames(self) -> dict[str, pd.DataFrame]:
        """Every frame of the run by name (what `silverbullet export` writes)."""
        out = {n: getattr(self, n) for n in ("problems", "generations", "attributions", "flips")}
        for n in ("repaired", "sets"):
            if getattr(self, n) is not None:
                out[n] = getattr(self, n)
        return out

    def _generation_rows(self, run: Path, only=(), exclude=()) -> list[tuple[str, Path, dict[str, Any]]]:
        out = []
        for f in sorted((run / GENERATIONS).glob("*.jsonl")):
            if (only and f.stem not in only) or f.stem in exclude:
                continue
            rows = _rows(f, ("problem_id",))
            for name, kind in GENERATION_FIELDS.items():  # here, so a wrong value's error names its file
                _col([r.get(name) for r in rows], kind, f, name)
            out += [(f.stem, f, r) for r in rows]
        return out


def _infer_kind(values: list[Any]) -> str:
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "boolean"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "Int64"
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "Float64"
    if all(isinstance(v, str) for v in present):
        return "string"
    return "json"  # lists, dicts, mixed: kept as JSON text (Parquet and CSV both hold it)


def open_run(path: str | Path) -> Run:
    """Open a run directory written by `silverbullet diagnose` or `silverbullet repair` (or its
    summary.json). Frames are read on first use; a bad file is a one-line UserError."""
    diagnose_dir, repair_dir = _locate(Path(path))
    summary = load_summary(diagnose_dir / SUMMARY, required=("schema", "n"))
    repair_summary = None
    for d in (repair_dir, diagnose_dir):  # `repair --from RUN` also copies its summary into RUN
        if d is not None and (d / REPAIR_SUMMARY).is_file():
            repair_summary = _json(d / REPAIR_SUMMARY)
            _check_schema(d / REPAIR_SUMMARY, repair_summary)
            break
    config = _json(diagnose_dir / CONFIG) if (diagnose_dir / CONFIG).is_file() else None
    return Run(Path(path), diagnose_dir, repair_dir, summary, repair_summary, config)


# ------------------------------------------------------------------------------------ comparing runs


@dataclass
class Comparison:
    """Several runs on one benchmark, side by side.

    frame        one row per problem id (the union; NA where a run lacks it), per run `<label>.correct`,
                 `.answer`, `.error_type`, `.first_faulty_step`, `.reference_correct`, and for every run
                 after the first `<label>.change` against the first: fixed | broken | same
    differences  one row per run: reference vs quantized (the paired drop `check` gates on) and the
                 quantized model against the first run (what `check --baseline FIRST` computes)
    """

    frame: pd.DataFrame
    differences: pd.DataFrame
    runs: dict[str, Run]


def compare_runs(paths: list[str | Path], labels: list[str] | None = None) -> Comparison:
    """Line several runs up on problem id: several quantized checkpoints of one reference, or one
    checkpoint over releases. The first run is the baseline of the paired comparisons."""
    paths = list(paths)
    if len(paths) < 2:
        raise UserError(f"compare_runs needs at least two run directories, got {len(paths)}")
    if labels is not None and len(labels) != len(paths):
        raise UserError(f"compare_runs got {len(paths)} runs but {len(labels)} labels; give one label per run")
    runs = [open_run(p) for p in paths]
    names = list(labels) if labels else [str(r.summary.get("run") or r.diagnose_dir.name) for r in runs]
    seen: dict[str, int] = {}
    for i, n in enumerate(names):  # two runs called "diagnose": diagnose, diagnose-2
        seen[n] = seen.get(n, 0) + 1
        if seen[n] > 1:
            names[i] = f"{n}-{seen[n]}"
    ids: list[str] = []
    for r in runs:
        ids += [i for i in r.generations["problem_id"].drop_duplicates() if i not in set(ids)]
    frame = pd.DataFrame(index=pd.Index(ids, dtype="string", name="problem_id"))
    base_correct = None
    for name, r in zip(names, runs):
        g = r.generations.set_index("problem_id")
        q, ref = g[g["model"] == "quantized"], g[g["model"] == "reference"]
        a = r.attributions
        a = a[a["model"] == "quantized"].set_index("problem_id")
        correct = q["correct"].reindex(frame.index)
        frame[f"{name}.correct"] = correct.array
        frame[f"{name}.answer"] = q["answer"].reindex(frame.index).array
        frame[f"{name}.reference_correct"] = ref["correct"].reindex(frame.index).array
        frame[f"{name}.error_type"] = pd.Categorical(
            a["error_type"].reindex(frame.index).to_numpy(), dtype=a["error_type"].dtype
        )
        frame[f"{name}.first_faulty_step"] = a["first_faulty_step"].reindex(frame.index).array
        if base_correct is None:
            base_correct = correct
        else:
            frame[f"{name}.change"] = pd.Categorical(
                [_change(b, c) for b, c in zip(base_correct, correct)], categories=["fixed", "broken", "same"]
            )
    rows = [_differences(name, r, runs[0], i == 0) for i, (name, r) in enumerate(zip(names, runs))]
    differences = pd.DataFrame(
        {k: pd.array([r[k] for r in rows], dtype=DIFFERENCE_DTYPES[k]) for k in DIFFERENCE_DTYPES}
    )
    return Comparison(frame=frame, differences=differences, runs=dict(zip(names, runs)))


DIFFERENCE_DTYPES = {
    "run": "string",
    "path": "string",
    "n": "Int64",
    "accuracy_reference": "Float64",
    "accuracy_quantized": "Float64",
    "drop_points": "Float64",
    "drop_ci_low": "Float64",
    "drop_ci_high": "Float64",
    "vs_first_paired": "boolean",
    "vs_first_n": "Int64",
    "vs_first_drop_points": "Float64",
    "vs_first_ci_low": "Float64",
    "vs_first_ci_high": "Float64",
}


def _change(before: Any, after: Any) -> str | None:
    if before is pd.NA or after is pd.NA:
        return None
    return "fixed" if after and not before else "broken" if before and not after else "same"


def _differences(name: str, run: Run, first: Run, is_first: bool) -> dict[str, Any]:
    """check.py's statistics for one run: the paired reference-vs-quantized drop, and (after the
    first run) `check --baseline FIRST`'s paired comparison of the quantized models."""
    s = load_summary(run.diagnose_dir / SUMMARY)  # every key check needs, with check's errors
    a, b, c, d = _paired_counts(s, run.diagnose_dir / SUMMARY)
    lo, hi = newcombe_paired(a, b, c, d)
    row: dict[str, Any] = {
        "run": name,
        "path": str(run.diagnose_dir),
        "n": s["n"],
        "accuracy_reference": s["accuracy"]["reference"],
        "accuracy_quantized": s["accuracy"]["quantized"],
        "drop_points": round((s["accuracy"]["reference"] - s["accuracy"]["quantized"]) * 100, 4),
        "drop_ci_low": lo * 100,
        "drop_ci_high": hi * 100,
        "vs_first_paired": None,
        "vs_first_n": None,
        "vs_first_drop_points": None,
        "vs_first_ci_low": None,
        "vs_first_ci_high": None,
    }
    if not is_first:
        cmp = compare_baseline(run.diagnose_dir, s, first.diagnose_dir)
        row.update(
            vs_first_paired=cmp.paired,
            vs_first_n=cmp.n_compared,
            vs_first_drop_points=cmp.drop_points,
            vs_first_ci_low=cmp.ci_points[0],
            vs_first_ci_high=cmp.ci_points[1],
        )
    return row


# ------------------------------------------------------------------------------------ export


def export_run(path: str | Path, fmt: str = "parquet", out: str | Path | None = None) -> list[Path]:
    """Write every frame of a run as `<name>.parquet` or `<name>.csv` into `out` (default:
    RUN_DIR/export, which the report links). Returns the files written."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not known; use parquet or csv")
    run = open_run(path)
    frames = run.frames()
    folder = Path(out) if out is not None else (run.repair_dir or run.diagnose_dir) / EXPORT_DIR
    written = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for name, df in frames.items():
            target = folder / f"{name}.{fmt}"
            if fmt == "parquet":
                df.to_parquet(target, index=False)
            else:
                df.to_csv(target, index=False)
            written.append(target)
    except OSError as e:
        raise UserError(f"cannot write into {folder}: {e.strerror or e}") from None
    return written
