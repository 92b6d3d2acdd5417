"""Markdown: the run report (report.md) and the check summary (for a CI job's $GITHUB_STEP_SUMMARY).

Model text goes into `<code>` with HTML escaped and table pipes neutralised, so it can neither break
the table nor inject markup when GitHub renders it.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from silverbullet.report.data import repaired_accuracy, trace_rows
from silverbullet.report.plots import ERROR_KINDS

if TYPE_CHECKING:
    from silverbullet.check import CheckResult
    from silverbullet.report.data import RunData

MAX_FLIPS = 30  # the Markdown lists at most this many flips (report.html has them all)
STATUS = {"pass": "✅ pass", "fail": "❌ fail", "skip": "➖ skip"}


def cell(x: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return html.escape("" if x is None else str(x), quote=False).replace("|", "&#124;").replace("\n", " ")


def code(x: Any) -> str:
    return f"<code>{cell(x)}</code>" if x not in (None, "") else "-"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def check_markdown(result: CheckResult) -> str:
    s = result.summary
    verdict = "✅ PASS" if result.passed else f"❌ FAIL ({len(result.failures)} check(s) failed)"
    lines = [
        f"## silverbullet check: {verdict}",
        "",
        f"Run `{cell(s.get('run', result.run_dir.name))}`: {cell(s.get('benchmark'))}/{cell(s.get('split'))}, "
        f"n={s['n']}; reference {s['accuracy']['reference']:.1%}, quantized {s['accuracy']['quantized']:.1%}.",
        "",
        _table(
            ["check", "value", "threshold", "status", "note"],
            [
                [f"`{r.name}`", cell(r.value_text), cell(r.threshold_text), STATUS[r.status], cell(r.note)]
                for r in result.rows
            ],
        ),
    ]
    if result.baseline is not None:
        b = result.baseline
        noise = " The drop is within sampling noise, so it is not a failure." if b.within_noise else ""
        lines += ["", f"Baseline: `{cell(b.path)}`.{noise}"]
    for w in result.warnings:
        lines += ["", f"> **warning:** {cell(w)}"]
    return "\n".join(lines) + "\n"


def format_markdown(s: dict) -> list[str]:
    """Prompt format and format compliance per model (runs made before they were recorded: none)."""
    fmt, p = s.get("format") or {}, s.get("prompt") or {}
    if not fmt:
        return []
    rows = [
        [
            cell(m),
            f"{v['step_prefix_share']:.1%}",
            f"{v['answer_line_share']:.1%}",
            f"{v['answer_stated_share']:.1%}" if "answer_stated_share" in v else "-",
            v["truncated"],
        ]
        for m, v in fmt.items()
        if isinstance(v, dict)
    ]
    out = [
        "",
        "## Format compliance",
        "",
        f"Prompt format {code(p.get('format'))} (id {code(p.get('id'))}), "
        f"max_new_tokens {cell(p.get('max_new_tokens'))}.",
        "",
        _table(
            [
                "model",
                "solutions in Step k lines",
                "with a `The answer is:` line",
                "stating an answer (any form)",
                "cut at the token limit",
            ],
            rows,
        ),
    ]
    for lost in s.get("format_drop") or []:
        out += ["", f"**The quantized model loses the step format** ({cell(lost)}): a failure beside accuracy."]
    traces = trace_rows(s)
    if traces:
        out += ["", *[f"- {label}: {cell(text)}" for label, text in traces]]
    return out


def report_markdown(data: RunData) -> str:
    s = data.summary
    acc_rows = []
    for tag, acc, ci in data.accuracy_bars():
        acc_rows.append([tag, f"{acc:.1%}", f"[{ci[0]:.1%}, {ci[1]:.1%}]" if ci else "-"])
    f, m, c = s["flips"], s.get("margins", {}), s.get("confirmation", {})
    types = s["error_types"]
    lines = [
        f"# silverbullet report: {cell(s.get('run', data.run_dir.name))}",
        "",
        f"{cell(s.get('benchmark'))}/{cell(s.get('split'))}, n={s['n']}, created {cell(s.get('created'))}. "
        "Plots and side-by-side solutions: `report.html` in the same directory.",
        *[f"\n> **warning:** {cell(w)}" for w in s.get("warnings") or []],
        "",
        "## Accuracy",
        "",
        _table(["model", "accuracy", "95% Wilson interval"], acc_rows),
        "",
        f"Flips: **{f['ref_right_quant_wrong']}** right -> wrong ({f['rate']:.1%} of problems), "
        f"{f.get('ref_wrong_quant_right', 0)} wrong -> right.",
    ]
    if data.repair and repaired_accuracy(data.repair) is not None:
        r = data.repair
        rec = r.get("recovery")
        lines.append(
            f"Repair: recovery {'-' if not isinstance(rec, (int, float)) else f'{rec:.1%}'}, "
            f"flips fixed {r.get('flips_fixed', '-')}, flips introduced {r.get('flips_introduced', '-')}."
        )
        fb = r.get("checked")
        if isinstance(fb, dict) and isinstance(fb.get("accuracy"), (int, float)):
            frec = fb.get("recovery")
            lines.append(
                f"With the checker fallback: {fb['accuracy']:.1%}, recovery "
                f"{'-' if not isinstance(frec, (int, float)) else f'{frec:.1%}'}, "
                f"flips introduced {fb.get('flips_introduced', '-')} ({fb.get('fallbacks', '-')} fallbacks)."
            )
    lines += format_markdown(s)
    lines += [
        "",
        "## Error types (first faulty step of each wrong answer)",
        "",
        _table(["type", *types.keys()], [[k, *(types[t].get(k, 0) for t in types)] for k in ERROR_KINDS]),
        "",
        "## First fault position (flips)",
        "",
        _table(
            ["first faulty step", "flips"],
            [
                [str(int(k) + 1) if k.isdigit() else cell(k), v]
                for k, v in s["first_fault_position"]["absolute"].items()
            ],
        ),
        "",
        _table(
            ["relative position", "flips"], [[cell(k), v] for k, v in s["first_fault_position"]["relative"].items()]
        ),
        "",
        "## Margins and confirmation",
        "",
        f"Mean margin at the frontier {m.get('frontier_mean')} vs elsewhere {m.get('elsewhere_mean')} "
        f"(reference model on the same prefix: {m.get('reference_at_frontier_mean')}; collapse: {m.get('collapse')}). "
        f"Causal confirmation: {c.get('confirmed', '-')}/{c.get('n', '-')} flips fixed by swapping in "
        "the reference step.",
        "",
        f"## Flipped problems ({len(data.flips)})",
        "",
    ]
    rows = []
    for r in data.flips[:MAX_FLIPS]:
        k = r.get("first_faulty_step")
        rows.append(
            [
                code(r["problem_id"]),
                k + 1 if isinstance(k, int) else "-",
                cell(r.get("error_type") or "none"),
                code(r.get("faulty_line")),
                code(r.get("reference_line")),
                {True: "yes", False: "no"}.get(r.get("confirmed"), "-"),
            ]
        )
    if rows:
        lines.append(_table(["problem", "step", "type", "quantized (faulty)", "reference", "confirmed"], rows))
        if len(data.flips) > MAX_FLIPS:
            lines += ["", f"... and {len(data.flips) - MAX_FLIPS} more in report.html."]
    else:
        lines.append("No flips.")
    if data.data_files:
        links = ", ".join(f"[{cell(f.rsplit('/', 1)[-1])}]({f})" for f in data.data_files)
        lines += ["", f"Data as Parquet (docs/python-api.md): {links}."]
    return "\n".join(lines) + "\n"
