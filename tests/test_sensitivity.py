"""Weight-space locate: which quantized modules flip the first faulty steps, and the recipe that
keeps them, on a small slice of the demo setting."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_in_process

from silverbullet.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "data" / "reference-model")


@pytest.fixture(scope="module")
def slice_run(tmp_path_factory):
    from silverbullet.diagnose import DiagnoseConfig, demo_quantized_path, run_diagnose

    out = tmp_path_factory.mktemp("sens") / "diag"
    run_diagnose(
        DiagnoseConfig(
            reference=MODEL, quantized=demo_quantized_path(MODEL), limit=32, out=str(out), confirm=False, progress=False
        )
    )
    return out


@pytest.fixture(scope="module")
def sensitivity(slice_run):
    from silverbullet.report import write_sensitivity_heatmap
    from silverbullet.sensitivity import SensitivityConfig, run_sensitivity

    cfg = SensitivityConfig(run=str(slice_run), max_flips=6, max_single=0, top_blocks=1, answer_sample=2, device="cpu")
    s = run_sensitivity(cfg)
    write_sensitivity_heatmap(cfg.out_dir())  # as the CLI does after the run
    return s


@pytest.mark.slow
def test_sensitivity_scores_blocks_types_and_modules(sensitivity, slice_run):
    s = sensitivity
    assert s["flips"] == 6 and s["bits"] == {"quantized": 2, "kept": 8}
    assert len(s["blocks"]) == 8 and len(s["types"]) == 7  # the reference model: 8 layers x 7 projections
    top_block = max(s["blocks"], key=lambda r: (r["restored"], r["pref_gain"]))["name"]
    assert {r["name"] for r in s["modules"]} == {n for n in _linear_names() if f".layers.{top_block}." in n}
    # every config scores 2 kinds x 1 batch; the greedy recipe adds one config per module it keeps
    configs = 2 + 8 + 7 + len(s["modules"]) + len(s["recipe"]["modules"])
    assert s["cost"]["forward_passes"] == 2 * configs
    assert s["all_restored"]["n_restored"] >= s["baseline"]["n_restored"]
    assert s["recipe"]["restored"] >= s["recipe"]["target_restored"] or len(s["recipe"]["modules"]) == len(s["modules"])
    bpw = s["recipe"]["bits_per_weight"]
    assert 2 < bpw < 8 and s["recipe"]["trace"][-1]["bits_per_weight"] == bpw
    ranked = [r["restored_per_mb"] for r in s["modules"]]
    assert ranked == sorted(ranked, reverse=True)
    assert (slice_run / "sensitivity" / "sensitivity.json").is_file()
    assert (slice_run / "sensitivity" / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _linear_names() -> list[str]:
    parts = [("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")), ("mlp", ("gate_proj", "up_proj", "down_proj"))]
    return [f"model.layers.{i}.{part}.{p}" for i in range(8) for part, ps in parts for p in ps]


@pytest.mark.slow
def test_restoring_a_module_changes_the_scores_and_is_undone(slice_run):
    """The scorer really sees the swapped weights, and the swap leaves the model as it was."""
    import torch

    from silverbullet.generation.loading import load_causal_lm
    from silverbullet.sensitivity import Scorer, linear_modules, read_flips, restored

    cfg, flips = read_flips(slice_run, 4)
    q, tok = load_causal_lm(cfg["quantized"], device="cpu", dtype="float32", for_training=True)
    r, _ = load_causal_lm(cfg["reference"], device="cpu", dtype="float32")
    mods, ref = linear_modules(q), linear_modules(r)
    scorer = Scorer(tok, flips, 8, "cpu")
    before = scorer.score(q)
    w = mods["model.layers.0.mlp.down_proj"].weight.clone()
    with restored(mods, ref, list(mods)):
        everything = scorer.score(q)
    assert everything["pref_mean"] != before["pref_mean"]
    assert torch.equal(mods["model.layers.0.mlp.down_proj"].weight, w)
    assert scorer.score(q) == before


@pytest.mark.slow
def test_recipe_round_trips_through_quantize(sensitivity, slice_run, tmp_path):
    """recipe.yaml -> `silverbullet quantize --recipe` -> a checkpoint transformers loads, with the kept
    modules at 8 bits and the rest at the base's 2."""
    recipe = slice_run / "sensitivity" / "recipe.yaml"
    out = tmp_path / "mixed"
    r = subprocess.run(
        [sys.executable, "-m", "silverbullet.cli", "quantize", "--model", MODEL, "--recipe", str(recipe),
         "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    q = json.loads((out / "config.json").read_text())["quantization_config"]
    bits = sorted(g["weights"]["num_bits"] for g in q["config_groups"].values())
    assert bits == [2, 8]
    from silverbullet.generation.loading import load_causal_lm

    model, _ = load_causal_lm(str(out), device="cpu")
    assert model is not None


def test_recipe_keeps_what_vllm_fuses_together(sensitivity, slice_run):
    """vLLM serves q/k/v and gate/up as fused layers with one scheme each: the recipe keeps a chosen
    module's siblings too (tests/test_vllm.py serves such a checkpoint)."""
    from silverbullet.quantize import recipe_targets, with_fused_siblings

    s = sensitivity
    kept = {t.removeprefix("re:^").removesuffix("$").replace("\\", "") for t in
            recipe_targets(slice_run / "sensitivity" / "recipe.yaml") if t.startswith("re:")}  # fmt: skip
    assert set(s["recipe"]["modules"]) <= kept == set(s["recipe"]["servable_modules"])
    assert s["recipe"]["servable_bits_per_weight"] >= s["recipe"]["bits_per_weight"]
    for name in kept:
        parent, _, leaf = name.rpartition(".")
        for group in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")):
            if leaf in group:
                assert {f"{parent}.{x}" for x in group} <= kept
    names = ["m.layers.0.self_attn.q_proj", "m.layers.0.self_attn.k_proj", "m.layers.0.mlp.up_proj"]
    assert with_fused_siblings(["m.layers.0.self_attn.q_proj"], names) == names[:2]  # only what exists
    assert with_fused_siblings(["m.layers.0.mlp.down_proj"]) == ["m.layers.0.mlp.down_proj"]  # not fused


def test_recipe_naming_a_missing_module_is_refused(tmp_path):
    from silverbullet.quantize import check_recipe_targets

    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      ignore: [lm_head]\n"
        "      config_groups:\n        group_0:\n          targets: ['re:^model.layers.99.mlp.down_proj$']\n"
    )
    names = ["model.layers.0.mlp.down_proj", "lm_head"]
    with pytest.raises(UserError, match="matches no module"):
        check_recipe_targets(recipe, names, {"Linear"})
    recipe.write_text(recipe.read_text().replace("99", "0"))
    check_recipe_targets(recipe, names, {"Linear"})


def test_bad_inputs_are_one_line_and_exit_2(tmp_path):
    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "silverbullet.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
        )

    empty = tmp_path / "run"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"reference": MODEL, "quantized": MODEL}))
    (empty / "attribution.jsonl").write_text("")
    (empty / "problems.jsonl").write_text("")
    r = cli("sensitivity", str(empty))
    assert r.returncode == 2 and "no located flips" in r.stderr and "Traceback" not in r.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n      ignore: ['re:^nothing$']\n")
    # in-process through main() (the model is read: a subprocess spends ~4 s importing torch); the
    # recipe's way through the command in a subprocess is test_recipe_round_trips_through_quantize
    code, stderr = cli_in_process("quantize", "--model", MODEL, "--recipe", bad, "--out", tmp_path / "q", cwd=ROOT)
    assert code == 2 and "matches no module" in stderr and "Traceback" not in stderr


def test_a_full_precision_quantized_model_is_refused(tmp_path):
    from silverbullet.sensitivity import quantized_bits

    with pytest.raises(UserError, match="not a quantized compressed-tensors checkpoint"):
        quantized_bits(MODEL)
