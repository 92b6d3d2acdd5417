"""The sensitivity heat map and the mixed-precision curve: from small synthetic JSON, no model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from silverbullet.report.plots import base_accuracies, precision_curve, sensitivity_grid, sensitivity_heatmap
from silverbullet.sensitivity import module_position

PNG = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]


def _sens() -> dict:
    """Blocks 0-3 in the block rows, single modules scored only in blocks 1 and 3 (as on a large model),
    plus names no block can hold."""
    mods = [
        {"name": f"model.layers.{b}.{part}.{p}", "restored": b + i, "pref_gain": 0.5 * i}
        for b in (1, 3)
        for i, (part, p) in enumerate([("mlp", "down_proj"), ("self_attn", "q_proj"), ("self_attn", "o_proj")])
    ]
    mods[0]["restored"] = -1  # restoring can also lose a flip
    mods += [{"name": "lm_head", "restored": 9}, {"name": None}, {"name": "transformer.h.0.attn.c_attn"}, "junk"]
    return {
        "flips": 7,
        "blocks": [{"name": str(b)} for b in range(4)] + [{"name": "None"}],
        "types": [{"name": t} for t in ("q_proj", "o_proj", "down_proj", "up_proj")],
        "modules": mods,
    }


def test_module_position_parses_llama_style_names_and_nothing_else():
    assert module_position("model.layers.12.self_attn.q_proj") == (12, "self_attn.q_proj")
    assert module_position("layers.0.mlp.down_proj") == (0, "mlp.down_proj")
    for bad in ("lm_head", "model.layers.x.mlp.up_proj", "model.layers.3", "transformer.h.0.attn", None, 5):
        assert module_position(bad) is None


def test_heatmap_grid_marks_unscored_cells_and_skips_unparsable_names():
    labels, blocks, grid, metric, skipped = sensitivity_grid(_sens())
    assert metric == "restored" and skipped == 3  # lm_head, None, the GPT-2 name ("junk" is not a row)
    assert labels == ["q_proj", "o_proj", "up_proj", "down_proj"]  # canonical order; up_proj from the type rows
    assert blocks == [0, 1, 2, 3]  # blocks 0 and 2 from the block rows, though no module in them was scored
    assert grid.shape == (4, 4) and int(grid.count()) == 6
    assert grid.mask[:, 0].all() and grid.mask[:, 2].all() and grid.mask[2].all()
    assert grid[3, 1] == -1 and grid[0, 3] == 4
    assert sensitivity_grid(_sens(), "pref_gain")[2][1, 3] == 1.0
    with pytest.raises(ValueError, match="metric"):
        sensitivity_grid(_sens(), "nope")


def test_heatmap_falls_back_to_log_prob_gain_when_nothing_is_restored():
    s = _sens()
    for r in s["modules"]:
        if isinstance(r, dict):
            r["restored"] = 0
    assert sensitivity_grid(s)[3] == "pref_gain"


@pytest.mark.parametrize(
    "sens", [_sens(), {"modules": [{"name": "lm_head"}]}, {}], ids=["partial", "nothing-parses", "empty"]
)
def test_heatmap_is_a_png(sens):
    assert sensitivity_heatmap(sens)[:8] == PNG


def _result(with_accuracy: bool) -> dict:
    ref, q, n = 0.95, 0.6, 100
    rows = [
        {"rule": rule, "budget_bits_per_weight": b, "bits_per_weight": b - 0.01, "accuracy": a,
         "recovery": round((a - q) / (ref - q), 4)}
        for rule, accs in (("sensitivity", (0.8, 0.9)), ("weight error", (0.7, 0.75)))
        for b, a in zip((2.25, 2.5), accs)
    ]  # fmt: skip
    rows.append({"rule": "LoRA repair", "budget_bits_per_weight": None, "bits_per_weight": 2, "accuracy": 0.88,
                 "recovery": round((0.88 - q) / (ref - q), 4)})  # fmt: skip
    out = {"n": n, "rows": rows}
    if with_accuracy:
        out["accuracy"] = {"reference": ref, "quantized": q}
    return out


def test_curve_base_accuracies_recorded_or_solved_from_recovery():
    assert base_accuracies(_result(True)) == (0.95, 0.6)
    assert base_accuracies(_result(False)) == (0.95, 0.6)  # older results: solved from the rows
    assert base_accuracies({"rows": [{"accuracy": 0.7, "recovery": None}]}) == (None, None)


def test_curve_is_a_png_and_the_bench_redraws_it_from_json(tmp_path):
    assert precision_curve(_result(False))[:8] == PNG
    assert precision_curve({"rows": []})[:8] == PNG
    sys.path.insert(0, str(ROOT / "bench"))
    import mixed_precision

    path = tmp_path / "mp.json"
    path.write_text(json.dumps(_result(True)))
    png = mixed_precision.write_plot(path)
    assert png == tmp_path / "mp.png" and png.read_bytes()[:8] == PNG
