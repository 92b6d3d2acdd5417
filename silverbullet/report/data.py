"""What a report shows, loaded once from a run directory (docs/run-format.md); the renderers
(html, markdown) read these records and never the files."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from silverbullet.check import get_key, load_summary, summary_path
from silverbullet.errors import UserError
from silverbullet.run.files import ATTRIBUTION, GENERATIONS, PROBLEMS, REPAIR_SUMMARY
from silverbullet.run.jsonl import read_jsonl_rows
from silverbullet.stats import wilson

REPORT_KEYS = (
    "schema",
    "n",
    "accuracy.reference",
    "accuracy.quantized",
    "flips.ref_right_quant_wrong",
    "flips.rate",
    "error_types.quantized",
    "error_types.reference",
    "first_fault_position.absolute",
    "first_fault_position.relative",
    "margins",
)
WINDOW = 32  # tokens either side of the frontier in the margin curve
SENSITIVITY = "sensitivity/sensitivity.json"  # `silverbullet sensitivity`'s default output (no --out)
EXPORT_DIR = "export"  # where `silverbullet export` writes by default (results.EXPORT_DIR; not imported: pandas)


@dataclass
class RunData:
    """Everything the report shows, loaded once."""

    run_dir: Path
    summary: dict[str, Any]
    repair: dict[str, Any] | None
    problems: dict[str, dict[str, Any]]
    generations: dict[str, dict[str, dict[str, Any]]]  # tag -> problem id -> row
    attribution: list[dict[str, Any]]
    curve: dict[str, Any] = field(default_factory=dict)
    data_files: list[str] = field(default_factory=list)  # exported Parquet tables, relative to run_dir
    sensitivity: dict[str, Any] | None = None  # sensitivity/sensitivity.json, after `silverbullet sensitivity`

    @property
    def flips(self) -> list[dict[str, Any]]:
        return [r for r in self.attribution if r.get("model") == "quantized" and r.get("flip")]

    def accuracy_bars(self) -> list[tuple[str, float, tuple[float, float] | None]]:
        s, n = self.summary, self.summary["n"]
        ci = s.get("accuracy_ci", {})
        bars = []
        for tag in ("reference", "quantized"):
            acc = float(s["accuracy"][tag])
            bars.append((tag, acc, tuple(ci[tag]) if tag in ci else wilson(round(acc * n), n)))
        rep = repaired_accuracy(self.repair) if self.repair else None
        if rep is not None:
            rn = int(self.repair.get("n", n))
            bars.append(("repaired", rep, wilson(round(rep * rn), rn)))
        return bars


def repaired_accuracy(repair: dict[str, Any]) -> float | None:
    """repair_summary.json's repaired accuracy (nested `accuracy.repaired`, or flat `repaired_accuracy`)."""
    for key in ("accuracy.repaired", "repaired_accuracy", "repaired"):
        try:
            value = get_key(repair, key)
        except KeyError:
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def trace_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) rows on reasoning traces for both reports: each model's mean trace length and
    unclosed traces, and where the flips' traces went wrong. [] for a model without traces."""
    rows = []
    for tag, v in (summary.get("format") or {}).items():
        th = v.get("thinking") if isinstance(v, dict) else None
        if th:
            size = (
                f"{th['mean_tokens']:,.1f} tokens"
                if th.get("mean_tokens") is not None
                else f"{th['mean_chars']:,.1f} chars"
            )
            rows.append((f"reasoning traces ({tag})", f"mean {size}; {th['unfinished']} of {v['n']} never closed"))
    flips = trace_fault_text(summary)
    if flips:
        rows.append(("where the flips' traces went wrong", flips))
    return rows


def trace_fault_text(summary: dict[str, Any]) -> str | None:
    """summary.json `trace_faults` in one sentence (the reports and the diagnose command's lines)."""
    tf = summary.get("trace_faults")
    if not tf:
        return None
    return (
        f"{tf['fault_in_trace']} of {tf['flips_with_trace']} flips first go wrong inside the trace; "
        f"{tf['unfinished']} never close ({tf['unfinished_answered']} had stated the right answer, "
        f"{tf['unfinished_fault']} went wrong in the trace)"
    )


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a run file (run/jsonl.py: a torn last line, from a run killed mid-write, is skipped);
    the report never writes to the run, so the torn line stays."""
    return read_jsonl_rows(path) if path.is_file() else []


def load_run(run_dir: Path) -> RunData:
    path = summary_path(Path(run_dir))
    run = path.parent
    summary = load_summary(path, REPORT_KEYS)
    repair = None
    if (run / REPAIR_SUMMARY).is_file():
        try:
            repair = json.loads((run / REPAIR_SUMMARY).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(
                f"{run / 'repair_summary.json'} is not valid JSON ({e}); re-run `silverbullet repair`"
            ) from None
    sensitivity = None
    if (run / SENSITIVITY).is_file():
        try:
            sensitivity = json.loads((run / SENSITIVITY).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise UserError(f"{run / SENSITIVITY} is not valid JSON ({e}); re-run `silverbullet sensitivity`") from None
    gens = {}
    for f in sorted((run / GENERATIONS).glob("*.jsonl")):
        gens[f.stem] = {str(r["problem_id"]): r for r in _jsonl(f) if "problem_id" in r}
    data = RunData(
        run_dir=run,
        summary=summary,
        repair=repair,
        problems={str(p["id"]): p for p in _jsonl(run / PROBLEMS) if "id" in p},
        generations=gens,
        attribution=_jsonl(run / ATTRIBUTION),
        sensitivity=sensitivity if isinstance(sensitivity, dict) else None,
    )
    data.curve = margin_curve(data)
    data.data_files = sorted(f"{EXPORT_DIR}/{p.name}" for p in (run / EXPORT_DIR).glob("*.parquet"))
    return data


def frontier_token(token_ends: list[int], char: int) -> int | None:
    """Index of the token holding character `char` (the first token of the faulty line)."""
    for j, end in enumerate(token_ends):
        if end > char:
            return j
    return None


def margin_curve(data: RunData, window: int = WINDOW) -> dict[str, Any]:
    """Mean quantized margin at each token offset from the frontier (frontier char = len(prefix))."""
    quant = data.generations.get("quantized", {})
    sums = [0.0] * (2 * window + 1)
    counts = [0] * (2 * window + 1)
    n = 0
    for r in data.attribution:
        if r.get("model") != "quantized" or not r.get("faulty_line") or r.get("first_faulty_step") is None:
            continue
        g = quant.get(str(r["problem_id"]))
        if not g or not g.get("margins") or not g.get("token_ends"):
            continue
        f = frontier_token(g["token_ends"], len(r.get("prefix") or ""))
        if f is None:
            continue
        n += 1
        for o in range(-window, window + 1):
            j = f + o
            if 0 <= j < len(g["margins"]) and g["margins"][j] is not None:
                sums[o + window] += float(g["margins"][j])
                counts[o + window] += 1
    correct = [float(m) for g in quant.values() if g.get("correct") for m in (g.get("margins") or []) if m is not None]
    return {
        "offsets": list(range(-window, window + 1)),
        "mean": [s / c if c else None for s, c in zip(sums, counts)],
        "count": counts,
        "n": n,
        "correct_mean": sum(correct) / len(correct) if correct else None,
    }
