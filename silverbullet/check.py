"""`silverbullet check`: gate a quantized release on its diagnose run (exit 0 pass, 1 regression).

Reads only `summary.json` (and, for a paired baseline comparison, the `generations/quantized.jsonl`
files of both runs). Every threshold becomes one row (pass / fail / skip with a note), so the
terminal table, the JUnit XML and the Markdown summary all say the same thing.

Sampling noise: a release is never failed on a baseline difference its own sample cannot tell from
chance. Differences get a 95% interval (Newcombe's hybrid score method over Wilson intervals; the
paired form when both runs scored the same problem ids), and the row says "within noise" when the
interval reaches below the tolerance.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError
from silverbullet.prompting.formats import same_prompts_or_refuse
from silverbullet.run.files import GENERATIONS, SUMMARY, generations_file
from silverbullet.settings import CheckThresholds
from silverbullet.stats import newcombe_paired, newcombe_unpaired, wilson

SCHEMA = 1
ERROR_TYPES = ("execution", "method", "conceptual", "reasoning")
# Keys `check` needs; `report` asks for a few more (see report.load_run).
CHECK_KEYS = (
    "schema",
    "n",
    "accuracy.reference",
    "accuracy.quantized",
    "correct.reference",
    "correct.quantized",
    "flips.ref_right_quant_wrong",
    "flips.ref_wrong_quant_right",
    "flips.rate",
    "error_types.quantized",
    "error_type_shares.quantized",
    "margins.frontier_mean",
)


# ------------------------------------------------------------------------------------ loading


def summary_path(run: Path) -> Path:
    """The summary.json of a run dir (or the file itself), with a clear error for each way it is absent."""
    run = Path(run)
    if run.is_file():
        if run.suffix == ".json":
            return run
        raise UserError(f"{run} is a file; pass a run directory (the --out of `silverbullet diagnose`)")
    if not run.exists():
        raise UserError(f"run directory {run} does not exist; pass the --out directory of `silverbullet diagnose`")
    path = run / SUMMARY
    if path.is_file():
        return path
    gens = run / GENERATIONS
    if gens.is_dir() and any(gens.glob("*.jsonl")):
        raise UserError(
            f"{run} has generations but no summary.json: the diagnosis is still running or was stopped. "
            f"Wait for it to finish, or re-run `silverbullet diagnose --out {run}` (it resumes) to complete it"
        )
    raise UserError(f"{run} has no summary.json; run `silverbullet diagnose --out {run}` first")


def get_key(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(dotted)
        node = node[part]
    return node


def load_summary(path: Path, required: tuple[str, ...] = CHECK_KEYS) -> dict[str, Any]:
    """Parse and validate a schema-1 summary.json; every problem is a UserError naming file and key."""
    path = summary_path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(
            f"{path} is not valid JSON ({e}); it may have been cut off: re-run `silverbullet diagnose` on that run"
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"{path} is not a JSON object; is it really a silverbullet summary.json?")
    if "schema" not in data:
        raise UserError(f"{path} has no 'schema' key; it is not a silverbullet summary.json (see docs/run-format.md)")
    if data["schema"] != SCHEMA:
        raise UserError(
            f"{path} has schema {data['schema']!r} but this silverbullet reads schema {SCHEMA}; "
            "use the silverbullet version that wrote it, or re-run `silverbullet diagnose` with this one"
        )
    for key in required:
        try:
            get_key(data, key)
        except KeyError:
            raise UserError(
                f"{path} is missing key '{key}'; it was written by an incomplete or older diagnose: "
                "re-run `silverbullet diagnose` on that run directory"
            ) from None
    n = data["n"]
    if not isinstance(n, int) or n <= 0:
        raise UserError(f"{path}: 'n' must be a positive integer, got {n!r}; the run evaluated no problems")
    return data


def read_correctness(run: Path, tag: str = "quantized") -> dict[str, bool]:
    """problem_id -> correct from generations/<tag>.jsonl ({} when absent). Torn lines are skipped."""
    path = generations_file(run, tag)
    out: dict[str, bool] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            out[str(row["problem_id"])] = bool(row["correct"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return out


# ------------------------------------------------------------------------------------ statistics


# ------------------------------------------------------------------------------------ results


@dataclass
class CheckRow:
    """One gate: JUnit testcase, table row, Markdown row."""

    name: str
    value: float | None
    threshold: float | None
    status: str  # pass | fail | skip
    note: str
    unit: str = ""  # "pts", "%", "" (formatting only)
    source: str = "default"  # where the threshold came from

    def fmt(self, x: float | None) -> str:
        if x is None:
            return "-"
        if self.unit == "%":
            return f"{x:.1%}"
        if self.unit == "pts":
            return f"{x:.1f} pts"
        return f"{x:.3g}"

    @property
    def value_text(self) -> str:
        return self.fmt(self.value)

    @property
    def threshold_text(self) -> str:
        if self.threshold is None:
            return "-"
        op = ">=" if self.name.startswith("min_") else "<="
        return f"{op} {self.fmt(self.threshold)}"


@dataclass
class BaselineComparison:
    """Quantized accuracy now vs a previous release's run."""

    path: Path
    baseline_accuracy: float
    current_accuracy: float
    drop_points: float  # (baseline - current) * 100; positive = worse now
    ci_points: tuple[float, float]
    paired: bool
    n_compared: int
    within_noise: bool


@dataclass
class CheckResult:
    run_dir: Path
    summary: dict[str, Any]
    thresholds: CheckThresholds
    rows: list[CheckRow]
    baseline: BaselineComparison | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    junit_path: Path | None = None
    markdown_path: Path | None = None

    @property
    def failures(self) -> list[CheckRow]:
        return [r for r in self.rows if r.status == "fail"]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """0: every gate passes; 1: a regression. Usage errors never get here (UserError -> 2)."""
        return 0 if self.passed else 1


# ------------------------------------------------------------------------------------ the gates


def _limit_row(name: str, value: float | None, t: CheckThresholds, unit: str, note: str, missing: str) -> CheckRow:
    """Compare one measured value with its (optional) threshold."""
    threshold = getattr(t, name)
    source = t.source(name)
    flag = "--" + name.replace("_", "-")
    if value is None:
        return CheckRow(name, None, threshold, "skip", missing, unit, source)
    if threshold is None:
        return CheckRow(name, value, None, "skip", f"not gated (set {flag}); {note}", unit, source)
    ok = value >= threshold if name.startswith("min_") else value <= threshold
    return CheckRow(name, value, threshold, "pass" if ok else "fail", note, unit, source)


def _paired_counts(s: dict[str, Any], path: Path) -> tuple[int, int, int, int]:
    """(both right, only reference right, only quantized right, both wrong) from the summary."""
    n, kr, kq = s["n"], s["correct"]["reference"], s["correct"]["quantized"]
    b, c = s["flips"]["ref_right_quant_wrong"], s["flips"]["ref_wrong_quant_right"]
    a = kr - b
    d = n - a - b - c
    if min(a, d) < 0 or a + c != kq:
        raise UserError(
            f"{path}: correct and flips counts do not add up (n={n}, correct={s['correct']}, flips={s['flips']}); "
            "the file was edited or truncated: re-run `silverbullet diagnose`"
        )
    return a, b, c, d


def accuracy_rows(s: dict[str, Any], t: CheckThresholds, path: Path) -> list[CheckRow]:
    a, b, c, d = _paired_counts(s, path)
    n = s["n"]
    drop = (s["accuracy"]["reference"] - s["accuracy"]["quantized"]) * 100
    lo, hi = newcombe_paired(a, b, c, d)
    note = (
        f"reference {s['accuracy']['reference']:.1%} vs quantized {s['accuracy']['quantized']:.1%} on n={n}; "
        f"paired 95% CI of the drop [{lo * 100:.1f}, {hi * 100:.1f}] pts"
    )
    rows = [_limit_row("max_accuracy_drop", drop, t, "pts", note, "")]
    f_lo, f_hi = wilson(b, n)
    note = f"{b} of {n} problems right in reference, wrong in quantized; 95% CI [{f_lo:.1%}, {f_hi:.1%}]"
    if c:
        note += f" ({c} flipped the other way)"
    rows.append(_limit_row("max_flip_rate", float(s["flips"]["rate"]), t, "%", note, ""))
    return rows


def error_type_rows(s: dict[str, Any], t: CheckThresholds) -> list[CheckRow]:
    counts = s["error_types"]["quantized"]
    typed = sum(int(counts.get(k, 0)) for k in ERROR_TYPES)
    rows = []
    for kind in ("execution", "method"):
        share = s["error_type_shares"]["quantized"].get(kind)
        k = int(counts.get(kind, 0))
        if typed:
            lo, hi = wilson(k, typed)
            note = f"{k} of {typed} typed quantized faults; 95% CI [{lo:.0%}, {hi:.0%}]"
        else:
            note = ""
        missing = "no typed faults among the quantized model's errors: nothing to share out"
        rows.append(
            _limit_row(
                f"max_{kind}_share", float(share) if typed and share is not None else None, t, "%", note, missing
            )
        )
    return rows


def margin_row(s: dict[str, Any], t: CheckThresholds) -> CheckRow:
    m = s["margins"]
    value = m.get("frontier_mean")
    note = (
        f"mean over {m.get('n', '?')} faulty lines; elsewhere {m.get('elsewhere_mean')}, "
        f"reference on the same prefix {m.get('reference_at_frontier_mean')}; collapse: {m.get('collapse')}"
    )
    missing = "no margins in this run (diagnose ran without margins, or no faulty step was located)"
    return _limit_row("min_frontier_margin", None if value is None else float(value), t, "", note, missing)


def thinking_rows(s: dict[str, Any], t: CheckThresholds) -> list[CheckRow]:
    """Reasoning traces (format.<model>.thinking): quantized reasoning models think longer and run
    out of budget inside the trace more often, a regression accuracy alone may hide on easy problems."""
    fmt = s.get("format") or {}
    ref, quant = ((fmt.get(m) or {}).get("thinking") for m in ("reference", "quantized"))
    none = "no reasoning traces in this run (the quantized model wrote no <think> trace)"
    if not quant:  # rows only where a trace gate was asked for: a plain model's table stays as it was
        return [_limit_row(name, None, t, unit, "", none)
                for name, unit in (("max_unfinished_thinking", "%"), ("max_thinking_ratio", ""))
                if getattr(t, name) is not None]  # fmt: skip
    n, k = s["n"], int(quant["unfinished"])
    lo, hi = wilson(k, n)
    note = f"{k} of {n} quantized traces never closed (no answer); 95% CI [{lo:.1%}, {hi:.1%}]"
    if ref:
        note += f"; reference {ref['unfinished']}"
    rows = [_limit_row("max_unfinished_thinking", k / n, t, "%", note, "")]
    unit = "mean_tokens" if quant.get("mean_tokens") is not None and (ref or {}).get("mean_tokens") else "mean_chars"
    if not ref or not ref.get(unit):
        rows.append(_limit_row("max_thinking_ratio", None, t, "", "", "the reference wrote no reasoning traces"))
        return rows
    what = unit.removeprefix("mean_")
    note = f"mean trace {quant[unit]:,.1f} {what} (quantized) vs {ref[unit]:,.1f} (reference)"
    rows.append(_limit_row("max_thinking_ratio", quant[unit] / ref[unit], t, "", note, ""))
    return rows


def compare_baseline(run: Path, s: dict[str, Any], baseline: Path) -> BaselineComparison:
    """Quantized accuracy vs the baseline run: paired on shared problem ids when both have generations."""
    bpath = summary_path(baseline)
    b = load_summary(bpath)
    for key in ("benchmark", "split"):
        if key in s and key in b and s[key] != b[key]:
            raise UserError(
                f"baseline {bpath} is on {key} {b[key]!r} but this run is on {s[key]!r}; "
                f"compare runs of the same benchmark and split"
            )
    same_prompts_or_refuse(s, b, "this run", f"baseline {bpath}")
    now = read_correctness(run)
    before = read_correctness(bpath.parent)
    shared = sorted(set(now) & set(before))
    if shared:
        a = sum(before[i] and now[i] for i in shared)
        bb = sum(before[i] and not now[i] for i in shared)
        c = sum(not before[i] and now[i] for i in shared)
        d = len(shared) - a - bb - c
        lo, hi = newcombe_paired(a, bb, c, d)
        base_acc, cur_acc = (a + bb) / len(shared), (a + c) / len(shared)
        paired, n = True, len(shared)
    else:
        kb, nb = b["correct"]["quantized"], b["n"]
        kc, nc = s["correct"]["quantized"], s["n"]
        lo, hi = newcombe_unpaired(kb, nb, kc, nc)
        base_acc, cur_acc = kb / nb, kc / nc
        paired, n = False, min(nb, nc)
    return BaselineComparison(
        path=bpath,
        baseline_accuracy=base_acc,
        current_accuracy=cur_acc,
        drop_points=(base_acc - cur_acc) * 100,
        ci_points=(lo * 100, hi * 100),
        paired=paired,
        n_compared=n,
        within_noise=False,
    )


def baseline_row(cmp: BaselineComparison, t: CheckThresholds) -> CheckRow:
    """Fail only when the whole 95% interval of the drop lies above the tolerance."""
    tol = t.baseline_tolerance
    lo, hi = cmp.ci_points
    how = f"paired on {cmp.n_compared} shared problems" if cmp.paired else "unpaired (no shared problem ids)"
    base = (
        f"baseline {cmp.baseline_accuracy:.1%} -> now {cmp.current_accuracy:.1%}; "
        f"95% CI of the drop [{lo:.1f}, {hi:.1f}] pts, {how}"
    )
    if lo > tol:
        status, note = "fail", f"regression beyond sampling noise and the {tol:g}-pt tolerance: {base}"
    elif cmp.drop_points > tol:
        cmp.within_noise = True
        status, note = "pass", f"within noise, not a failure (more problems would tell): {base}"
    else:
        status, note = "pass", f"no regression: {base}"
    return CheckRow("baseline_regression", cmp.drop_points, tol, status, note, "pts", t.source("baseline_tolerance"))


def evaluate(run: Path, s: dict[str, Any], t: CheckThresholds, baseline: Path | None = None) -> CheckResult:
    """All gates over an already-loaded summary (pure: no files written)."""
    path = summary_path(run)
    rows = accuracy_rows(s, t, path) + error_type_rows(s, t) + [margin_row(s, t)] + thinking_rows(s, t)
    cmp = None
    if baseline is not None:
        cmp = compare_baseline(path.parent, s, baseline)
        rows.append(baseline_row(cmp, t))
    result = CheckResult(run_dir=path.parent, summary=s, thresholds=t, rows=rows, baseline=cmp)
    if all(r.status == "skip" for r in rows):
        result.warnings.append(
            "no thresholds set and no --baseline: nothing was gated (see docs/check.md for flags and silverbullet.toml)"
        )
    return result


def run_check(run_dir: Path, thresholds: CheckThresholds, baseline: Path | None = None) -> CheckResult:
    """Gate one diagnose run. Exit code: `result.exit_code`; `report.write_check_files` writes its
    JUnit XML and Markdown (the gate computes, the report renders)."""
    t0 = time.perf_counter()
    s = load_summary(Path(run_dir))
    result = evaluate(Path(run_dir), s, thresholds, baseline)
    result.seconds = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------------------------ terminal


STYLE = {"pass": "green", "fail": "bold red", "skip": "dim"}


def check_table(result: CheckResult):
    """The rich table the CLI prints."""
    from rich.table import Table

    s = result.summary
    title = f"check: {s.get('run', result.run_dir.name)} ({s.get('benchmark', '?')}/{s.get('split', '?')}, n={s['n']})"
    table = Table(title=title, show_lines=False)
    for col, kw in (
        ("check", {}),
        ("value", {"justify": "right"}),
        ("threshold", {"justify": "right"}),
        ("status", {}),
        ("note", {"overflow": "fold"}),
    ):
        table.add_column(col, **kw)
    for r in result.rows:
        src = f" ({r.source})" if r.threshold is not None and r.source != "default" else ""
        table.add_row(r.name, r.value_text, r.threshold_text + src, f"[{STYLE[r.status]}]{r.status}[/]", r.note)
    return table


def print_check(result: CheckResult, console) -> None:
    """Table, warnings, and a one-line verdict (what the CLI shows before exiting with exit_code)."""
    console.print(check_table(result))
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)
    if result.passed:
        console.print("[green]PASS[/]: every gated check passes", highlight=False)
    else:
        names = ", ".join(r.name for r in result.failures)
        console.print(f"[bold red]FAIL[/]: {len(result.failures)} check(s) failed: {names}", highlight=False)
    for p in (result.junit_path, result.markdown_path):
        if p is not None:
            console.print(f"wrote {p}", highlight=False)
