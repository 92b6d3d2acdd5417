"""report.html: one file, no external assets (plots are base64 PNG, CSS and a few lines of JS inline).

Model text is untrusted: every piece of it goes through `html.escape`, including attribute values.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from silverbullet.prompting import step_spans
from silverbullet.report import plots
from silverbullet.report.data import RunData, repaired_accuracy, trace_rows

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{margin-bottom:4px} .sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}
th{background:#f5f5f5} td.num{text-align:right;font-variant-numeric:tabular-nums}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:12px} figure{margin:0} figure img{max-width:100%}
figure.wide{grid-column:1/3} figcaption{color:#555;font-size:90%}
details.flip{border:1px solid #ddd;border-radius:6px;margin:8px 0;padding:6px 10px}
details.flip summary{cursor:pointer} .tag{display:inline-block;border-radius:4px;padding:0 6px;
font-size:85%;background:#eee;margin-left:6px}
.tag.execution{background:#fde2cf}.tag.method{background:#e1d5f5}.tag.conceptual{background:#d3e9f8}
.tag.reasoning{background:#f8d3dc}
.sbs{display:grid;grid-template-columns:1fr 1fr;gap:10px}
pre.sol{white-space:pre-wrap;background:#fafafa;border:1px solid #eee;padding:8px;margin:4px 0;font-size:90%}
mark.fault{background:#ffb3b3;outline:2px solid #d62728;border-radius:2px}
mark.aligned{background:#c9f2c7;outline:2px solid #2ca02c;border-radius:2px}
.kv td:first-child{color:#555;white-space:nowrap} .muted{color:#777}
.warn{background:#fff4d6;border-left:4px solid #e0a800;padding:6px 10px}
"""

JS = """
function sbFilter(){
  var t=document.getElementById('f-type').value, q=document.getElementById('f-text').value.toLowerCase();
  document.querySelectorAll('details.flip').forEach(function(d){
    var ok=(!t||d.getAttribute('data-type')===t)&&(!q||d.textContent.toLowerCase().indexOf(q)>=0);
    d.style.display=ok?'':'none';});
}
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def highlight(text: str, span: tuple[int, int] | None, cls: str) -> str:
    """Escaped text with text[span] wrapped in <mark class=cls>."""
    if not span or not (0 <= span[0] < span[1] <= len(text)):
        return esc(text)
    a, b = span
    return f'{esc(text[:a])}<mark class="{cls}">{esc(text[a:b])}</mark>{esc(text[b:])}'


def fault_span(text: str, row: dict[str, Any]) -> tuple[int, int] | None:
    """Where the faulty line sits in the quantized text: frontier_chars, else len(prefix), else a search."""
    line = row.get("faulty_line") or ""
    if not line:
        return None
    fc = row.get("frontier_chars")
    if isinstance(fc, list) and len(fc) == 2 and text[fc[0] : fc[1]] == line:
        return fc[0], fc[1]
    start = len(row.get("prefix") or "")
    if text[start : start + len(line)] == line:
        return start, start + len(line)
    i = text.find(line)
    return (i, i + len(line)) if i >= 0 else None


def _reference_side(data: RunData, row: dict[str, Any]) -> tuple[str, str, tuple[int, int] | None]:
    pid = str(row["problem_id"])
    if row.get("reference_source") == "gold":
        text, label = (data.problems.get(pid) or {}).get("solution") or "", "gold solution"
    else:
        text, label = (data.generations.get("reference", {}).get(pid) or {}).get("text") or "", "reference model"
    j = row.get("aligned_reference_step")
    spans = step_spans(text) if text else []
    span = spans[j] if isinstance(j, int) and 0 <= j < len(spans) else None
    return text, label, span


def _evidence(ev: Any) -> str:
    if not isinstance(ev, dict) or not ev:
        return '<p class="muted">no evidence recorded</p>'
    rows = "".join(
        f"<tr><td>{esc(k)}</td><td>{esc(v if isinstance(v, str) else json.dumps(v))}</td></tr>" for k, v in ev.items()
    )
    return f'<table class="kv">{rows}</table>'


def _fmt(x: Any, spec: str = ".2f") -> str:
    return format(x, spec) if isinstance(x, (int, float)) and not isinstance(x, bool) else "-"


def flip_details(data: RunData, row: dict[str, Any], open_: bool = False) -> str:
    pid = str(row["problem_id"])
    q_text = (data.generations.get("quantized", {}).get(pid) or {}).get("text") or ""
    r_text, r_label, r_span = _reference_side(data, row)
    k = row.get("first_faulty_step")
    etype = row.get("error_type") or "none"
    where = f"step {k + 1}" if isinstance(k, int) else ("answer line" if row.get("fault_in_answer_line") else "no step")
    confirmed = {True: "yes", False: "no"}.get(row.get("confirmed"), "not tested")
    return f"""
<details class="flip" data-type="{esc(etype)}"{" open" if open_ else ""}>
<summary><b>{esc(pid)}</b> first fault: {esc(where)} <span class="tag {esc(etype)}">{esc(etype)}</span>
 <span class="muted">confirmed: {esc(confirmed)}; margin at frontier {_fmt(row.get("margin_at_frontier"))}
 vs elsewhere {_fmt(row.get("margin_elsewhere"))}</span></summary>
<p><b>Question.</b> {esc(row.get("question"))}<br><b>Gold answer.</b> {esc(row.get("gold_answer"))}</p>
<div class="sbs">
<div><b>{esc(r_label)}</b> <span class="muted">(aligned step in green)</span>
<pre class="sol">{highlight(r_text, r_span, "aligned")}</pre></div>
<div><b>quantized</b> <span class="muted">(first faulty step in red)</span>
<pre class="sol">{highlight(q_text, fault_span(q_text, row), "fault")}</pre></div>
</div>
<p><b>Faulty line:</b> <code>{esc(row.get("faulty_line"))}</code><br>
<b>Reference line:</b> <code>{esc(row.get("reference_line"))}</code></p>
<b>Evidence</b>{_evidence(row.get("evidence"))}
</details>"""


def _key_numbers(data: RunData) -> str:
    s = data.summary
    f, m, c = s["flips"], s.get("margins", {}), s.get("confirmation", {})
    ci = s.get("accuracy_ci", {})
    rows = []
    for tag in ("reference", "quantized"):
        iv = ci.get(tag)
        ivs = f" [{iv[0]:.1%}, {iv[1]:.1%}]" if iv else ""
        rows.append((f"accuracy ({tag})", f"{s['accuracy'][tag]:.1%}{ivs}"))
    if data.repair:
        rep = repaired_accuracy(data.repair)
        if rep is not None:
            rows.append(("accuracy (repaired)", f"{rep:.1%}"))
        rec = data.repair.get("recovery")
        if isinstance(rec, (int, float)):
            rows.append(("recovery", f"{rec:.1%}"))
        for key in ("flips_fixed", "flips_introduced"):
            if key in data.repair:
                rows.append((key.replace("_", " "), str(data.repair[key])))
        fb = data.repair.get("checked")
        if isinstance(fb, dict) and isinstance(fb.get("accuracy"), (int, float)):
            rows.append(("accuracy (+ checker fallback)", f"{fb['accuracy']:.1%}"))
            rows.append(("flips introduced (+ checker fallback)", str(fb.get("flips_introduced", "-"))))
    rows += [
        ("flips (right -> wrong)", f"{f['ref_right_quant_wrong']} ({f['rate']:.1%} of n)"),
        ("flips (wrong -> right)", str(f.get("ref_wrong_quant_right", "-"))),
        (
            "margin at frontier / elsewhere",
            f"{_fmt(m.get('frontier_mean'))} / {_fmt(m.get('elsewhere_mean'))} (collapse: {m.get('collapse')})",
        ),
        ("causal confirmation", f"{c.get('confirmed', '-')}/{c.get('n', '-')}"),
    ]
    fmt = s.get("format") or {}
    for tag in ("reference", "quantized"):
        v = fmt.get(tag)
        if isinstance(v, dict):
            rows.append(
                (
                    f"format ({tag}): Step k lines / answer line / answer stated / cut at limit",
                    f"{v['step_prefix_share']:.1%} / {v['answer_line_share']:.1%} / "
                    f"{v.get('answer_stated_share', float('nan')):.1%} / {v['truncated']}",
                )
            )
    for lost in s.get("format_drop") or []:
        rows.append(("the quantized model loses the step format", lost))
    rows += trace_rows(s)
    if isinstance(s.get("prompt"), dict):
        rows.append(("prompt format", f"{s['prompt'].get('format')} (id {s['prompt'].get('id')})"))
    return "<table>" + "".join(f"<tr><th>{esc(a)}</th><td class='num'>{esc(b)}</td></tr>" for a, b in rows) + "</table>"


def _data_links(data: RunData) -> str:
    """Links to the run's tables as Parquet (`silverbullet export`), when they were exported."""
    if not data.data_files:
        return ""
    links = ", ".join(f'<a href="{esc(f)}">{esc(Path(f).stem)}</a>' for f in data.data_files)
    return f'<p class="muted">Data as Parquet (docs/python-api.md): {links}</p>'


def render_html(data: RunData) -> str:
    s = data.summary
    models = s.get("models", {})
    model_line = "; ".join(
        f"{esc(tag)}: <code>{esc(v.get('path'))}</code> ({esc(v.get('fingerprint'))})"
        for tag, v in models.items()
        if isinstance(v, dict)
    )
    figs = [
        (plots.accuracy_bars(data.accuracy_bars()), "accuracy", "Accuracy of each model on the same problems.", ""),
        (
            plots.error_types(s["error_types"]),
            "error types",
            "Error type of each wrong answer's first faulty step (none: no step located).",
            "",
        ),
        (
            plots.first_fault_histogram(s["first_fault_position"]),
            "first fault position",
            "Where the quantized model's flipped solutions first go wrong.",
            "wide",
        ),
        (
            plots.margin_curve(data.curve),
            "margin curve",
            "Quantized per-token margins aligned on the first token of the faulty step, averaged over located faults.",
            "wide",
        ),
    ]
    if data.sensitivity:
        figs.append(
            (
                plots.sensitivity_heatmap(data.sensitivity),
                "sensitivity heat map",
                "Where in the model (`silverbullet sensitivity`, docs/sensitivity.md): what restoring one quantized "
                "module to the reference weights does to the flips' first faulty steps, by module and decoder block.",
                "wide",
            )
        )
    fig_html = "".join(
        f'<figure class="{cls}">{_img(png, alt)}<figcaption>{esc(cap)}</figcaption></figure>'
        for png, alt, cap, cls in figs
    )
    flips = data.flips
    types = sorted({r.get("error_type") or "none" for r in flips})
    options = "".join(f'<option value="{esc(t)}">{esc(t)}</option>' for t in types)
    details = "".join(flip_details(data, r, open_=(i == 0)) for i, r in enumerate(flips))
    if not flips:
        details = '<p class="muted">No flips: the quantized model solves every problem the reference solves.</p>'
    title = f"silverbullet report: {s.get('run', data.run_dir.name)}"
    warn_html = "".join(f'<p class="warn"><b>warning:</b> {esc(w)}</p>' for w in s.get("warnings") or [])
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{CSS}</style><script>{JS}</script></head>
<body>
<h1>{esc(title)}</h1>
<p class="sub">{esc(s.get("benchmark"))}/{esc(s.get("split"))}, n={esc(s["n"])}, seed {esc(s.get("seed"))},
created {esc(s.get("created"))}<br>{model_line}</p>
{warn_html}{_key_numbers(data)}
{_data_links(data)}
<h2>Plots</h2>
<div class="plots">{fig_html}</div>
<h2>Flipped problems ({len(flips)})</h2>
<p class="muted">Right in the reference model, wrong in the quantized one. Filter:
<select id="f-type" onchange="sbFilter()"><option value="">all error types</option>{options}</select>
<input id="f-text" placeholder="search text" oninput="sbFilter()"></p>
{details}
</body></html>
"""
