"""The report's four plots, as PNG bytes (embedded base64 in report.html: no external files).

Uses matplotlib's object API on the Agg canvas, never pyplot, so nothing depends on a display or on
global figure state (safe in CI and in tests that run in parallel).
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

COLORS = {"reference": "#4C72B0", "quantized": "#DD8452", "repaired": "#55A868"}
ERROR_KINDS = ("execution", "method", "conceptual", "reasoning", "none")
RELATIVE_BINS = ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return buf.getvalue()


def accuracy_bars(bars: list[tuple[str, float, tuple[float, float] | None]]) -> bytes:
    """(label, accuracy, 95% interval) per model; error bars show the interval."""
    fig = Figure(figsize=(5.2, 3.4))
    ax = fig.add_subplot()
    labels = [b[0] for b in bars]
    vals = [b[1] * 100 for b in bars]
    lo = [(b[1] - b[2][0]) * 100 if b[2] else 0 for b in bars]
    hi = [(b[2][1] - b[1]) * 100 if b[2] else 0 for b in bars]
    ax.bar(labels, vals, color=[COLORS.get(x, "#888") for x in labels], yerr=[lo, hi], capsize=6)
    for i, v in enumerate(vals):
        ax.text(i, v / 2, f"{v:.1f}%", ha="center", va="center", color="white", fontweight="bold")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Accuracy (95% Wilson interval)")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def first_fault_histogram(position: dict[str, dict[str, int]]) -> bytes:
    """Where flips first go wrong: by step number, and relative to the solution's length."""
    fig = Figure(figsize=(9, 3.2))
    ax1, ax2 = fig.subplots(1, 2)
    absolute = position.get("absolute", {})
    steps = sorted((int(k) for k in absolute if k.lstrip("-").isdigit()), key=int)
    labels = [str(k + 1) for k in range(0, (max(steps) + 1) if steps else 1)]
    counts = [absolute.get(str(k), 0) for k in range(len(labels))]
    if "none" in absolute:
        labels.append("none")
        counts.append(absolute["none"])
    ax1.bar(labels, counts, color=COLORS["quantized"])
    ax1.set_xlabel("first faulty step (1 = first step)")
    ax1.set_ylabel("flipped problems")
    ax1.set_title("First fault: step number")
    rel = position.get("relative", {})
    keys = list(RELATIVE_BINS) + sorted(k for k in rel if k not in RELATIVE_BINS)
    ax2.bar(keys, [rel.get(k, 0) for k in keys], color=COLORS["quantized"])
    ax2.set_xlabel("position / number of steps")
    ax2.set_title("First fault: relative position")
    for ax in (ax1, ax2):
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def error_types(types: dict[str, dict[str, int]]) -> bytes:
    """Error-type counts of each model's wrong answers, side by side."""
    fig = Figure(figsize=(6.4, 3.4))
    ax = fig.add_subplot()
    models = [m for m in ("reference", "quantized", "repaired") if m in types]
    width = 0.8 / max(1, len(models))
    for i, m in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(ERROR_KINDS))]
        ax.bar(xs, [types[m].get(k, 0) for k in ERROR_KINDS], width, label=m, color=COLORS.get(m))
    ax.set_xticks(range(len(ERROR_KINDS)), ERROR_KINDS)
    ax.set_ylabel("wrong answers")
    ax.set_title("Error type of the first faulty step")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def margin_curve(curve: dict[str, Any]) -> bytes:
    """Mean top-1 minus top-2 log-prob by token offset from the failure frontier (0 = first token
    of the faulty line). A dip at 0 is the quantized model hesitating exactly where it goes wrong."""
    fig = Figure(figsize=(7.5, 3.4))
    ax = fig.add_subplot()
    xs, ys, ns = curve.get("offsets", []), curve.get("mean", []), curve.get("count", [])
    pts = [(x, y) for x, y, n in zip(xs, ys, ns) if n]
    if pts:
        ax.plot(
            [p[0] for p in pts],
            [p[1] for p in pts],
            marker=".",
            color=COLORS["quantized"],
            label=f"quantized, faulty solutions (n={curve.get('n', 0)})",
        )
    if curve.get("correct_mean") is not None:
        ax.axhline(curve["correct_mean"], ls="--", color="#777", lw=1, label="quantized, correct solutions (mean)")
    ax.axvline(0, color="#C44E52", lw=1, label="frontier: first token of the faulty step")
    ax.set_xlabel("token offset from the first token of the faulty step")
    ax.set_ylabel("margin (log-prob top-1 - top-2)")
    ax.set_title("Token margins around the failure frontier")
    if not pts:
        ax.text(0.5, 0.5, "no margins recorded in this run", transform=ax.transAxes, ha="center", color="#777")
    ax.set_ylim(bottom=0)
    ax.legend(frameon=False, loc="lower left")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)
