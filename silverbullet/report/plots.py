"""The report's plots, as PNG bytes (embedded base64 in report.html: no external files), and the
mixed-precision bench's accuracy-against-size curve.

Uses matplotlib's object API on the Agg canvas, never pyplot, so nothing depends on a display or on
global figure state (safe in CI and in tests that run in parallel).
"""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from silverbullet.sensitivity import module_position  # noqa: E402

COLORS = {"reference": "#4C72B0", "quantized": "#DD8452", "repaired": "#55A868"}
ERROR_KINDS = ("execution", "method", "conceptual", "reasoning", "none")
RELATIVE_BINS = ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")
TYPE_ORDER = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HEAT_METRICS = {"restored": "flips restored", "pref_gain": "log-prob gain (reference - faulty step)"}
UNSCORED = {"facecolor": "#eeeeee", "edgecolor": "#b0b0b0", "hatch": "///"}


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


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def sensitivity_grid(sens: dict[str, Any], metric: str = "auto") -> tuple[list[str], list[int], Any, str, int]:
    """What the heat map draws, apart from drawing it (so it can be checked without reading pixels):
    row labels (module types), column blocks, a masked array (masked = not scored alone), the metric
    used, and how many module names were left out for not being `...layers.N.<module>`.

    metric: "restored" (flips whose reference step is greedy again), "pref_gain" (log-prob gain), or
    "auto": restored, unless no single module restores a flip (small runs), then the log-prob gain."""
    import numpy as np

    rows = [r for r in sens.get("modules") or [] if isinstance(r, dict)]
    placed: dict[tuple[str, int], dict[str, Any]] = {}
    skipped = 0
    for r in rows:
        pos = module_position(r.get("name"))
        if pos is None:
            skipped += 1
        else:
            placed[(pos[1], pos[0])] = r
    if metric == "auto":
        metric = "restored" if any(_num(r.get("restored")) and r["restored"] for r in placed.values()) else "pref_gain"
    if metric not in HEAT_METRICS:
        raise ValueError(f"metric must be auto or one of {sorted(HEAT_METRICS)}, got {metric!r}")
    # Blocks and types the run has, scored alone or not: the block and type rows name them all.
    blocks = {b for _, b in placed}
    blocks |= {int(r["name"]) for r in sens.get("blocks") or [] if str(r.get("name", "")).isdigit()}
    keys = list(dict.fromkeys(k for k, _ in placed))
    for r in sens.get("types") or []:
        t = str(r.get("name", ""))
        if t and t != "None" and not any(k.rsplit(".", 1)[-1] == t for k in keys):
            keys.append(t)
    rank = {t: i for i, t in enumerate(TYPE_ORDER)}
    seen = {k: i for i, k in enumerate(keys)}
    keys.sort(key=lambda k: (rank.get(k.rsplit(".", 1)[-1], len(rank)), seen[k]))
    last = [k.rsplit(".", 1)[-1] for k in keys]
    labels = [t if last.count(t) == 1 else k for k, t in zip(keys, last)]
    cols = list(range(min(blocks), max(blocks) + 1)) if blocks else []
    grid = np.ma.masked_all((len(keys), len(cols)))
    for (k, b), r in placed.items():
        if _num(r.get(metric)):
            grid[keys.index(k), cols.index(b)] = r[metric]
    return labels, cols, grid, metric, skipped


def sensitivity_heatmap(sens: dict[str, Any], metric: str = "auto") -> bytes:
    """Module type (rows) x decoder block (columns), coloured by what restoring that one module to
    the reference weights does (sensitivity.json's `modules`). It shows at a glance whether the
    damage sits in a few blocks, in one kind of projection, or everywhere, which a ranked list hides.

    Cells with no single-module score (sensitivity scores single modules only inside the most
    sensitive blocks on large models) are hatched grey, not zero; names that are not
    `...layers.N.<module>` are skipped and counted in the title. metric: see `sensitivity_grid`."""
    keys, cols, grid, metric, skipped = sensitivity_grid(sens, metric)
    fig = Figure(figsize=(max(5.5, 0.42 * len(cols) + 2.8), max(2.6, 0.36 * len(keys) + 1.9)))
    ax = fig.add_subplot()
    unscored = int(grid.mask.sum()) if grid.size else 0
    note = [f"{unscored} of {grid.size} not scored alone (hatched)"] if unscored else []
    if skipped:
        note.append(f"{skipped} module name(s) not of the form layers.N.<module> left out")
    title = f"Restoring one module: {HEAT_METRICS[metric]}"
    if sens.get("flips"):
        title += f" ({sens['flips']} flips)"
    ax.set_title(title + ("\n" + "; ".join(note) if note else ""), fontsize=10)
    if grid.count() == 0:
        ax.text(0.5, 0.5, "no single-module scores to place", transform=ax.transAxes, ha="center", color="#777")
        ax.set_xticks([])
        ax.set_yticks([])
        return _png(fig)
    vals = grid.compressed()
    lo, hi = float(vals.min()), float(vals.max())
    if lo < 0:  # restoring can also hurt: a diverging scale centred on zero keeps the sign readable
        cmap, bound = "RdBu_r", max(abs(lo), abs(hi)) or 1.0
        vmin, vmax = -bound, bound
    else:
        cmap, vmin, vmax = "YlOrRd", 0.0, hi or 1.0
    ax.patch.set(**UNSCORED)  # masked cells are transparent: the hatched background shows through
    im = ax.imshow(grid, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    if len(cols) <= 16 and len(keys) <= 12:
        for i in range(len(keys)):
            for j in range(len(cols)):
                if grid.mask[i, j]:
                    continue
                v = float(grid[i, j])
                dark = abs(v - (vmin + vmax) / 2) > 0.3 * (vmax - vmin)
                text = f"{v:.0f}" if metric == "restored" else f"{v:.1f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "#222")
    step = max(1, len(cols) // 16)
    ax.set_xticks(range(0, len(cols), step), [str(cols[j]) for j in range(0, len(cols), step)])
    ax.set_yticks(range(len(keys)), keys)
    ax.set_xlabel("decoder block")
    ax.set_ylabel("module")
    bar = fig.colorbar(im, ax=ax, label=HEAT_METRICS[metric].split(" (")[0], fraction=0.04, pad=0.02)
    if metric == "restored":  # counts of flips: no 0.5 ticks
        bar.ax.yaxis.get_major_locator().set_params(integer=True)
    if unscored:
        from matplotlib.patches import Patch

        ax.legend(
            handles=[Patch(**UNSCORED, label="not scored alone")],
            loc="upper left",
            bbox_to_anchor=(0, -0.12 if len(cols) <= 40 else -0.16),
            frameon=False,
            fontsize=8,
        )
    return _png(fig)


RULE_COLORS = {"sensitivity": "#55A868", "first+last blocks": "#8172B3", "weight error": "#937860"}
RULE_LABELS = {
    "sensitivity": "sensitivity ranking",
    "first+last blocks": "first + last blocks",
    "weight error": "largest weight error",
}


def base_accuracies(result: dict[str, Any]) -> tuple[float | None, float | None]:
    """(reference, quantized) accuracy of a mixed_precision.json: its `accuracy` when recorded, else
    solved from the rows' recovery = (acc - quantized) / (reference - quantized) (results written
    before the bench recorded them), rounded to whole problems when `n` is known."""
    acc = result.get("accuracy")
    if isinstance(acc, dict) and _num(acc.get("reference")) and _num(acc.get("quantized")):
        return float(acc["reference"]), float(acc["quantized"])
    pts = [
        (r["accuracy"], r["recovery"])
        for r in result.get("rows") or []
        if _num(r.get("accuracy")) and _num(r.get("recovery"))
    ]
    if len({p[1] for p in pts}) < 2:
        return None, None
    # least squares of acc = q + recovery * gap over every row (each row's recovery is rounded)
    mr, ma = sum(p[1] for p in pts) / len(pts), sum(p[0] for p in pts) / len(pts)
    gap = sum((p[1] - mr) * (p[0] - ma) for p in pts) / sum((p[1] - mr) ** 2 for p in pts)
    q = ma - gap * mr
    n = result.get("n")
    snap = (lambda x: round(x * n) / n) if isinstance(n, int) and n > 0 else (lambda x: round(x, 4))
    return snap(q + gap), snap(q)


def precision_curve(result: dict[str, Any]) -> bytes:
    """bench/mixed_precision.py's result as accuracy against bits per weight: one line per rule that
    picks the modules kept at higher precision, the quantized base and the reference as horizontal
    lines, LoRA repair (and any other row without a budget) as single points. A table of the same
    numbers hides the shape: how fast each rule climbs towards the reference as bits are spent."""
    from silverbullet.stats import wilson

    fig = Figure(figsize=(8.6, 4.0))
    ax = fig.add_subplot()
    rows = [r for r in result.get("rows") or [] if _num(r.get("accuracy")) and _num(r.get("bits_per_weight"))]
    rules: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("budget_bits_per_weight") is not None:
            rules.setdefault(str(r.get("rule")), []).append(r)
    for i, (rule, rs) in enumerate(rules.items()):
        rs.sort(key=lambda r: r["bits_per_weight"])
        ax.plot(
            [r["bits_per_weight"] for r in rs],
            [r["accuracy"] * 100 for r in rs],
            marker="o",
            color=RULE_COLORS.get(rule, f"C{i}"),
            label=f"kept by {RULE_LABELS.get(rule, rule)}",
        )
    singles = [r for r in rows if r.get("budget_bits_per_weight") is None]
    for i, r in enumerate(singles):
        ax.plot(
            r["bits_per_weight"],
            r["accuracy"] * 100,
            marker="*" if i == 0 else "P",
            markersize=14 if i == 0 else 10,
            ls="none",
            color="#C44E52" if i == 0 else "#DA8BC3",
            label=f"{r.get('rule')}: {r['accuracy']:.1%}",
        )
    ref, quant = base_accuracies(result)
    for tag, acc in (("reference", ref), ("quantized", quant)):
        if acc is not None:
            ax.axhline(acc * 100, ls="--", lw=1, color=COLORS[tag], label=f"{tag} model: {acc:.1%}")
    ax.set_xlabel("bits per weight (linear weights; scales and adapters not counted)")
    ax.set_ylabel("accuracy (%)")
    n = result.get("n")
    title = "Accuracy against size: modules kept at higher precision, and LoRA"
    if isinstance(n, int) and n > 0:
        lo, hi = wilson(round(0.85 * n), n)
        title += f"\nn={n} problems; 95% interval about ±{(hi - lo) * 50:.0f} points at 85%"
    ax.set_title(title, fontsize=10)
    if not rows:
        ax.text(0.5, 0.5, "no rows in this result", transform=ax.transAxes, ha="center", color="#777")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False, fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)
