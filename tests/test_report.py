"""`silverbullet report`: self-contained HTML with the plots, highlighted first faulty step, escaped text."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest

from silverbullet.errors import UserError
from silverbullet.report import frontier_token, load_run, write_report

RELEASE = Path(__file__).parent / "fixtures" / "runs" / "release"
HOSTILE = "<script>alert('pwned')</script><img src=x onerror=alert(1)> | `tick`"


@pytest.fixture()
def run(tmp_path) -> Path:
    return Path(shutil.copytree(RELEASE, tmp_path / "release"))


@pytest.fixture()
def written(run) -> tuple[str, str]:
    html_path, md_path = write_report(run)
    assert html_path == run / "report.html" and md_path == run / "report.md"
    return html_path.read_text(), md_path.read_text()


def _rewrite(path: Path, fn) -> None:
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(fn(r)) + "\n" for r in rows))


def test_html_is_self_contained_with_four_plots(written):
    html, _ = written
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == 4
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in imgs)
    for alt in ("accuracy", "error types", "first fault position", "margin curve"):
        assert f'alt="{alt}"' in html
    # nothing fetched from elsewhere: no external scripts, stylesheets, images or fonts
    assert not re.search(r'(src|href)="(https?:)?//', html) and "<link" not in html and "@import" not in html
    assert html.count("<script>") == 1  # the inline filter, nothing else


def test_flips_are_listed_with_the_faulty_step_highlighted(written):
    html, _ = written
    assert html.count('<details class="flip"') == 7
    assert '<mark class="fault">Step 2: Ann gives 15, so 36 - 15 = 31.</mark>' in html
    assert '<mark class="aligned">Step 2: Ann gives 15, so 36 - 15 = 21.</mark>' in html
    assert html.count('<mark class="fault">') == 7
    assert 'data-type="execution"' in html and 'data-type="method"' in html
    assert "<td>check</td><td>arithmetic</td>" in html  # evidence table
    assert "accuracy (repaired)" in html  # repair_summary.json present
    assert "<th>recovery</th><td class='num'>85.7%</td>" in html


def test_model_text_is_escaped(run):
    def poison_generation(r):
        if r["problem_id"] == "synthetic-eval-0":
            r["text"] += HOSTILE
        return r

    def poison_attribution(r):
        if r["problem_id"] == "synthetic-eval-0":
            r["question"] = HOSTILE
            r["evidence"]["claimed"] = HOSTILE
            r["reference_line"] = HOSTILE
            r["error_type"] = '"><script>x()</script>'
        return r

    _rewrite(run / "generations" / "quantized.jsonl", poison_generation)
    _rewrite(run / "attribution.jsonl", poison_attribution)
    html_path, md_path = write_report(run)
    html, md = html_path.read_text(), md_path.read_text()
    assert "<script>alert" not in html and "<img src=x" not in html and "<script>x()" not in html
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in html
    assert html.count("<script>") == 1
    # the highlight still lands on the faulty line
    assert '<mark class="fault">Step 2: Ann gives 15, so 36 - 15 = 31.</mark>' in html
    assert "<script>alert" not in md and "&lt;script&gt;alert" in md
    table_line = next(line for line in md.splitlines() if "synthetic-eval-0" in line)
    assert table_line.count(" | ") == 5  # the pipe in model text did not add a column


def test_report_shows_the_checker_fallback_when_the_repair_has_it(run):
    path = run / "repair_summary.json"
    s = json.loads(path.read_text())
    s["checked"] = {"accuracy": 0.85, "recovery": 0.7143, "flips_introduced": 1, "fallbacks": 2}
    path.write_text(json.dumps(s))
    html_path, md_path = write_report(run)
    md, html = md_path.read_text(), html_path.read_text()
    assert "With the checker fallback: 85.0%, recovery 71.4%, flips introduced 1 (2 fallbacks)." in md
    assert "<th>flips introduced (+ checker fallback)</th><td class='num'>1</td>" in html


def test_markdown_report(written):
    _, md = written
    assert md.startswith("# silverbullet report: release")
    assert "| quantized | 60.0% | [38.7%, 78.1%] |" in md
    assert "| repaired | 90.0% |" in md
    assert "Repair: recovery 85.7%, flips fixed 5, flips introduced 0." in md
    assert "checker fallback" not in md  # a summary without the block shows no such line
    assert "Flips: **7** right -> wrong (35.0% of problems)" in md
    assert "| execution | 0 | 3 |" in md or "| execution | 3 | 0 |" in md
    assert md.count("<code>synthetic-eval-") == 7
    assert "<code>Step 2: Ann gives 15, so 36 - 15 = 31.</code>" in md


def test_margin_curve_is_aligned_on_the_frontier(run):
    data = load_run(run)
    c = data.curve
    assert c["n"] == 8  # every located quantized fault with margins (7 flips + 1 both-wrong)
    assert c["offsets"][len(c["offsets"]) // 2] == 0 and all(k > 0 for k in c["count"][:5] + c["count"][-5:])
    # The fixture's quantized model hesitates on the slipped tokens, after the frontier, not before it.
    before = [m for o, m in zip(c["offsets"], c["mean"]) if -20 <= o < 0]
    after = [m for o, m in zip(c["offsets"], c["mean"]) if 12 <= o <= 24]
    assert min(after) < 0.8 * min(before) and c["correct_mean"] > 14


def test_frontier_token():
    ends = [4, 5, 6, 7, 12]
    assert frontier_token(ends, 0) == 0 and frontier_token(ends, 6) == 6 - 3 and frontier_token(ends, 7) == 4
    assert frontier_token(ends, 12) is None


def test_repair_bar_only_after_repair(run):
    assert [b[0] for b in load_run(run).accuracy_bars()] == ["reference", "quantized", "repaired"]
    (run / "repair_summary.json").unlink()
    assert [b[0] for b in load_run(run).accuracy_bars()] == ["reference", "quantized"]
    html_path, _ = write_report(run)
    assert "accuracy (repaired)" not in html_path.read_text()


def test_run_without_flips_or_margins(run):
    (run / "attribution.jsonl").write_text("")
    for f in ("quantized", "reference"):
        _rewrite(run / "generations" / f"{f}.jsonl", lambda r: {**r, "margins": None, "token_ends": None})
    html_path, _ = write_report(run)
    html = html_path.read_text()
    assert "No flips" in html and html.count("data:image/png;base64,") == 4


def test_bad_runs_are_user_errors(run, tmp_path):
    (run / "summary.json").unlink()
    with pytest.raises(UserError, match="still running"):
        write_report(run)
    with pytest.raises(UserError, match="does not exist"):
        write_report(tmp_path / "nope")
    other = Path(shutil.copytree(RELEASE, tmp_path / "other"))
    with (other / "attribution.jsonl").open("a") as f:
        f.write("{not json\n")
        f.write('{"problem_id": "x"}\n')
    with pytest.raises(UserError, match=r"attribution.jsonl:\d+: malformed JSON"):
        write_report(other)


def test_sensitivity_heat_map_only_after_sensitivity(run):
    html_path, _ = write_report(run)
    assert 'alt="sensitivity heat map"' not in html_path.read_text()
    (run / "sensitivity").mkdir()
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "lm_head"]
    sens = {"flips": 3, "modules": [{"name": n, "restored": i, "pref_gain": 0.1} for i, n in enumerate(names)]}
    (run / "sensitivity" / "sensitivity.json").write_text(json.dumps(sens))
    html_path, _ = write_report(run)
    html = html_path.read_text()
    assert 'alt="sensitivity heat map"' in html and html.count("data:image/png;base64,") == 5
    (run / "sensitivity" / "sensitivity.json").write_text("{torn")
    with pytest.raises(UserError, match="re-run `silverbullet sensitivity`"):
        write_report(run)
