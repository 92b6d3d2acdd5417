"""`silverbullet report`: one self-contained report.html and a report.md from a run directory.

Reads only the run's files (docs/run-format.md): summary.json, attribution.jsonl, problems.jsonl,
generations/*.jsonl, after repair repair_summary.json and after sensitivity sensitivity/sensitivity.json.
Everything model-written is untrusted text and is escaped where it is rendered.
"""

from __future__ import annotations

from pathlib import Path

from silverbullet.errors import UserError
from silverbullet.report.data import EXPORT_DIR, RunData, frontier_token, load_run, margin_curve, repaired_accuracy
from silverbullet.run.files import SENSITIVITY

__all__ = [
    "EXPORT_DIR",
    "RunData",
    "frontier_token",
    "load_run",
    "margin_curve",
    "repaired_accuracy",
    "write_check_files",
    "write_report",
    "write_sensitivity_heatmap",
]

HEATMAP = "heatmap.png"  # beside sensitivity.json; `silverbullet report` draws the same plot inline


def write_report(run_dir: Path) -> tuple[Path, Path]:
    """Write report.html (self-contained) and report.md into the run directory; return both paths."""
    from silverbullet.report.html import render_html
    from silverbullet.report.markdown import report_markdown

    data = load_run(Path(run_dir))
    html_path, md_path = data.run_dir / "report.html", data.run_dir / "report.md"
    try:
        html_path.write_text(render_html(data), encoding="utf-8")
        md_path.write_text(report_markdown(data), encoding="utf-8")
    except OSError as e:
        raise UserError(f"cannot write the report into {data.run_dir}: {e.strerror or e}") from None
    return html_path, md_path


def write_check_files(result, junit: Path | None = None, markdown: Path | None = None) -> None:
    """Write a `check` result as JUnit XML and/or Markdown (paths recorded on the result)."""
    from silverbullet.report.junit import write_junit
    from silverbullet.report.markdown import check_markdown

    if junit is not None:
        result.junit_path = write_junit(result, Path(junit))
    if markdown is not None:
        path = Path(markdown)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(check_markdown(result), encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write {path}: {e.strerror or e}") from None
        result.markdown_path = path


def write_sensitivity_heatmap(sensitivity_dir: Path) -> Path:
    """heatmap.png beside a `silverbullet sensitivity` output's sensitivity.json (module type x block)."""
    import json

    from silverbullet.report.plots import sensitivity_heatmap

    d = Path(sensitivity_dir)
    path = d / HEATMAP
    path.write_bytes(sensitivity_heatmap(json.loads((d / SENSITIVITY).read_text(encoding="utf-8"))))
    return path
