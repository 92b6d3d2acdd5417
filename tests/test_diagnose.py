"""End to end on the shipped reference model: quantize -> reload -> diagnose -> resume -> errors."""

import json
from pathlib import Path

import pytest

from silverbullet.diagnose import DiagnoseConfig, run_diagnose, wilson
from silverbullet.errors import UserError
from silverbullet.frontier import span_margins
from silverbullet.quantize import QuantizeConfig, quantize

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "data" / "reference-model")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """The demo damaged quantized reference model (RTN 2-bit per channel, no calibration: fast)."""
    out = tmp_path_factory.mktemp("q") / "rtn-w2"
    return str(
        quantize(QuantizeConfig(model=MODEL, method="rtn", bits=2, group_size=0, out=str(out)), log=lambda m: None)
    )


def test_quantized_checkpoint_is_compressed_tensors_and_reloads(quantized):
    cfg = json.loads((Path(quantized) / "config.json").read_text())
    assert cfg["quantization_config"]["quant_method"] == "compressed-tensors"
    assert (Path(quantized) / "silverbullet_quantization.json").exists()
    from silverbullet.generation.hf import HFGenerator

    out = HFGenerator(quantized, device="cpu").generate(
        ["Question: Ann has 12 apples. How many apples does Ann have?\n"]
    )
    assert out[0].text  # generates something from the compressed checkpoint


def _cfg(tmp_path, quantized, **kw):
    base = dict(
        reference=MODEL,
        quantized=quantized,
        limit=24,
        out=str(tmp_path / "run"),
        cache=False,
        progress=False,
        batch_size=24,
    )
    base.update(kw)
    return DiagnoseConfig(**base)


def test_diagnose_end_to_end(tmp_path, quantized):
    """Every file and figure of a run. Resume (torn lines, killed runs) is tests/test_hardening_resume.py."""
    cfg = _cfg(tmp_path, quantized)
    s = run_diagnose(cfg)
    run = Path(cfg.out)
    for f in (
        "config.json",
        "problems.jsonl",
        "generations/reference.jsonl",
        "generations/quantized.jsonl",
        "attribution.jsonl",
        "summary.json",
    ):
        assert (run / f).exists(), f
    assert s["n"] == 24 and s["schema"] == 1
    assert s["accuracy"]["reference"] > s["accuracy"]["quantized"]
    q_rows = [json.loads(x) for x in (run / "generations/quantized.jsonl").read_text().splitlines()]
    assert len(q_rows) == 24 and {"problem_id", "text", "answer", "correct"} <= q_rows[0].keys()
    atts = [json.loads(x) for x in (run / "attribution.jsonl").read_text().splitlines()]
    n_wrong = sum(not r["correct"] for r in q_rows)
    assert len([a for a in atts if a["model"] == "quantized"]) == n_wrong
    flips = [a for a in atts if a["model"] == "quantized" and a["flip"]]
    assert len(flips) == s["flips"]["ref_right_quant_wrong"] > 0
    located = [a for a in flips if a["first_faulty_step"] is not None]
    assert located and all(a["faulty_line"] and a["faulty_line"] in _text(q_rows, a) for a in located)
    assert all(_text(q_rows, a).startswith(a["prefix"]) for a in located)
    assert s["margins"]["n"] > 0 and s["confirmation"]["n"] > 0
    assert sum(s["first_fault_position"]["absolute"].values()) == len(flips)
    # the full-precision judge ran on every flip, and only there (one reference pass per flip gives
    # the judge and the reference's margin on the faulty line); its steps index the same steps
    assert all(("judge_step" in a) == a["flip"] for a in atts if a["model"] == "quantized")
    assert s["judge"]["n"] == len(flips)
    assert all(a["reference_margin_at_frontier"] is not None for a in located)
    assert s["margins"]["reference_at_frontier_mean"] is not None
    assert all(a["judge_step"] is None or 0 <= a["judge_step"] < a["n_steps"] for a in flips)
    assert s["judge"]["flagged"] > 0


def _text(rows, att):
    return next(r["text"] for r in rows if r["problem_id"] == att["problem_id"])


def test_run_dir_from_another_config_is_refused(tmp_path, quantized):
    run_diagnose(_cfg(tmp_path, quantized, limit=4, confirm=False))
    with pytest.raises(UserError, match="another config"):
        run_diagnose(_cfg(tmp_path, quantized, limit=5, confirm=False))


def test_span_margins_reads_the_tokens_whose_middle_is_in_the_span():
    # tokens "ab" [0,2) "cd" [2,4) "e" [4,5) "fgh" [5,8)
    margins, ends = [1.0, 2.0, 3.0, 4.0], [2, 4, 5, 8]
    assert span_margins(margins, ends, [2, 5]) == [2.0, 3.0]
    assert span_margins(margins, ends, [3, 8]) == [2.0, 3.0, 4.0]  # "cd"'s middle, 3.0, is in [3, 8)
    assert span_margins(margins, ends, [4, 8]) == [3.0, 4.0]
    assert span_margins(margins, ends, [8, 9]) == []


def test_wilson_interval():
    lo, hi = wilson(95, 100)
    assert 0.88 < lo < 0.9 and 0.97 < hi < 0.99
    assert wilson(0, 0) == [0.0, 1.0]
