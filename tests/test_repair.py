"""Repair: dataset building and curation, TRL formats, a real LoRA pass that leaves the base on its grid."""

import json
from pathlib import Path

import pytest
from conftest import MEMORIZED
from safetensors import safe_open

from silverbullet.errors import UserError
from silverbullet.repair.dataset import (
    DatasetConfig,
    assert_disjoint,
    candidates,
    continuation_from,
    curate,
    sft_rows,
    write_sets,
)
from silverbullet.repair.pipeline import recovery
from silverbullet.repair.train import RepairTrainConfig, train_adapter

MODEL = str(Path(__file__).resolve().parents[1] / "data" / "reference-model")


def test_continuation_is_renumbered_and_ends_at_the_answer():
    text = "Step 1: a, so 1 + 1 = 2.\nStep 2: b, so 2 * 3 = 6.\nStep 3: c, so 6 - 1 = 5.\nThe answer is: 5\n"
    assert continuation_from(text, 1, 4) == "Step 4: b, so 2 * 3 = 6.\nStep 5: c, so 6 - 1 = 5.\nThe answer is: 5\n"
    assert continuation_from(text, 7, 1) is None
    assert continuation_from("Step 1: no answer line", 0, 1) is None


def _row(i, et, prompt=None):
    return {
        "prompt": prompt or f"Question: q{i}\n",
        "chosen": f"Step 1: x{i}\n",
        "rejected": "Step 1: y\n",
        "problem_id": f"p{i}",
        "question": f"q{i}",
        "step_index": 0,
        "error_type": et,
    }


def test_curate_dedups_balances_and_caps():
    rows = [_row(i, "execution") for i in range(20)] + [_row(100 + i, "method") for i in range(3)]
    rows.append(_row(0, "execution"))  # duplicate prefix + step
    out = curate(rows, DatasetConfig(max_examples=8))
    assert len(out) == 8
    assert sum(r["error_type"] == "method" for r in out) == 3  # the rare type is not crowded out
    assert len({r["problem_id"] for r in out}) == 8
    assert curate(rows, DatasetConfig(max_examples=8)) == out  # deterministic


def test_disjointness_is_enforced():
    with pytest.raises(UserError, match="evaluation problems"):
        assert_disjoint([_row(1, "execution")], {"q1"})
    assert_disjoint([_row(1, "execution")], {"q2"})  # no leak: no error


def test_recovery_arithmetic():
    assert recovery(0.9, 0.7, 0.88) == 0.9
    assert recovery(0.9, 0.9, 0.95) is None  # nothing to recover
    assert recovery(0.9, 0.7, 0.6) == -0.5


@pytest.fixture(scope="module")
def repair_run(repaired_slice, tmp_path_factory):
    """A real diagnose run on the repair split of the demo setting (32 problems, RTN W2 per channel):
    the one `silverbullet repair` wrote for its repair data in `repaired_slice` (generating the same
    run again here took about 12 s), copied so the tests below write beside it; and its quantized model."""
    import shutil

    out = repaired_slice[0]
    root = tmp_path_factory.mktemp("repair")
    shutil.copytree(out / "repair-split", root / "run")
    cfg = json.loads((root / "run" / "config.json").read_text())
    assert cfg["split"] == "repair" and cfg["limit"] == 32
    q = Path(MODEL).parents[1] / cfg["quantized"]  # the command ran in the repository root
    recipe = json.loads((q / "silverbullet_quantization.json").read_text())["config"]
    assert (recipe["method"], recipe["bits"], recipe["group_size"]) == ("rtn", 2, 0)
    return root, str(q)


def test_sets_from_a_real_diagnose_run_load_with_datasets(repair_run):
    root, _ = repair_run
    rows = candidates(root / "run")
    assert rows, "the demo quantization flips some repair-split problems"
    for r in rows:
        assert r["prompt"].startswith("Question: ") and r["chosen"] != r["rejected"]
        assert r["chosen"].rstrip().splitlines()[-1].startswith("The answer is:")
    pairs = curate(rows, DatasetConfig())
    sft, dpo = write_sets(sft_rows("step", pairs, root / "run", 332), pairs, root / "sets")
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(dpo), split="train")
    assert {"prompt", "chosen", "rejected", "problem_id", "step_index", "error_type"} <= set(ds.column_names)
    assert set(load_dataset("json", data_files=str(sft), split="train").column_names) >= {"prompt", "completion"}


@pytest.mark.parametrize("method", ["sft", "dpo"])
def test_lora_pass_trains_only_the_adapter(repair_run, method):
    root, q = repair_run
    pairs = curate(candidates(root / "run"), DatasetConfig(max_examples=6))
    sft, dpo = write_sets(sft_rows("step", pairs, root / "run", 6), pairs, root / f"s-{method}")
    base_before = {f: f.read_bytes() for f in Path(q).glob("*.safetensors")}
    info = train_adapter(
        q, sft, dpo, root / f"adapter-{method}", RepairTrainConfig(method=method, epochs=1, batch_size=4, device="cpu")
    )
    assert info[method]["steps"] >= 1
    files = list((root / f"adapter-{method}").glob("*.safetensors"))
    with safe_open(str(files[0]), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)  # nothing but LoRA matrices was saved
    assert {f: f.read_bytes() for f in Path(q).glob("*.safetensors")} == base_before  # base untouched
    assert json.loads((root / f"adapter-{method}" / "adapter_config.json").read_text())["r"] == 16


def test_a_large_model_on_a_bf16_cpu_trains_in_bf16_with_float32_adapters(repair_run, monkeypatch):
    """Training follows generation's dtype policy: bf16 for a model over CPU_BF16_MIN_WEIGHT_BYTES on
    a CPU with native bf16 (3x faster for a 1.5B model on 2 cores), fp32 otherwise and on CUDA."""
    import torch

    from silverbullet.generation import loading
    from silverbullet.repair import train as train_mod

    root, q = repair_run
    assert train_mod.train_dtype("cpu", q) == "float32"  # the demo model is small
    monkeypatch.setattr(loading, "CPU_BF16_MIN_WEIGHT_BYTES", 1)
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert train_mod.train_dtype("cpu", q) == "bfloat16"
    assert train_mod.train_dtype("cuda", q) == "float32" and train_mod.train_dtype("cpu", q, "4bit") == "float32"
    seen = {}
    real = loading.load_causal_lm

    def spy(*a, **kw):
        model, tok = real(*a, **kw)
        seen["base"] = {p.dtype for n, p in model.named_parameters() if "lora_" not in n and p.is_floating_point()}
        return model, tok

    monkeypatch.setattr(loading, "load_causal_lm", spy)
    pairs = curate(candidates(root / "run"), DatasetConfig(max_examples=6))
    sft, dpo = write_sets(sft_rows("step", pairs, root / "run", 6), pairs, root / "s-bf16")
    out = root / "adapter-bf16"
    info = train_adapter(q, sft, dpo, out, RepairTrainConfig(epochs=2, batch_size=4, device="cpu"))
    assert info["sft"]["steps"] >= 1 and seen["base"] == {torch.bfloat16}
    with safe_open(str(next(out.glob("*.safetensors"))), "pt") as f:
        lora = {k: f.get_tensor(k) for k in f.keys()}
    assert {t.dtype for t in lora.values()} == {torch.float32}
    assert any(t.abs().sum() > 0 for k, t in lora.items() if "lora_B" in k)  # it trained


def test_gradient_checkpointing_off_by_default_and_same_adapter_either_way(repair_run):
    """TRL turns checkpointing on by default; we turn it off (a third less compute per step on CPU).
    It only recomputes activations, so the trained adapter must be the same either way."""
    import torch

    from silverbullet.repair.train import _common_args

    assert _common_args(RepairTrainConfig(), Path("x"), 1e-3, 1)["gradient_checkpointing"] is False
    root, q = repair_run
    pairs = curate(candidates(root / "run"), DatasetConfig(max_examples=6))
    sft, dpo = write_sets(sft_rows("step", pairs, root / "run", 6), pairs, root / "s-ckpt")
    tensors = []
    for ckpt in (False, True):
        cfg = RepairTrainConfig(epochs=2, batch_size=4, device="cpu", gradient_checkpointing=ckpt)
        out = root / f"adapter-ckpt-{ckpt}"
        train_adapter(q, sft, dpo, out, cfg)
        with safe_open(str(next(out.glob("*.safetensors"))), "pt") as f:
            tensors.append({k: f.get_tensor(k) for k in f.keys()})
    assert tensors[0].keys() == tensors[1].keys()
    assert any(t.abs().sum() > 0 for k, t in tensors[0].items() if "lora_B" in k)  # it trained
    for k in tensors[0]:
        torch.testing.assert_close(tensors[0][k], tensors[1][k], rtol=1e-4, atol=1e-6)


def test_base_weights_stay_on_the_quantized_grid_after_training(repair_run):
    import torch

    from silverbullet.generation.loading import load_causal_lm

    root, q = repair_run
    adapter = root / "adapter-sft"
    if not adapter.exists():
        pytest.skip("needs the sft adapter from the previous test")
    model, _ = load_causal_lm(q, device="cpu", adapter=str(adapter), for_training=True)
    fresh, _ = load_causal_lm(q, device="cpu", for_training=True)
    base = dict(model.named_parameters())
    for name, p in fresh.named_parameters():
        if name.endswith("q_proj.weight"):
            peft_name = next(k for k in base if k.endswith(name.replace(".weight", ".base_layer.weight")))
            assert torch.equal(base[peft_name], p)  # bit-identical base
            assert torch.unique(p[0]).numel() <= 4  # 2-bit grid: at most 4 levels per output channel


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


SLICE = ["--eval-limit", "16", "--repair-limit", "32", "--max-examples", "8", "--epochs", "1"]


def _repair_cli(out: Path, *extra: str, launcher: tuple[str, ...] = ()):
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, *launcher, "-m", "silverbullet.cli", "repair", "--out", str(out), *SLICE, *extra],
        capture_output=True,
        text=True,
        cwd=Path(MODEL).parents[1],
        timeout=600,
    )


@pytest.fixture(scope="module")
def repaired_slice(tmp_path_factory):
    """`silverbullet repair` as a user runs it, once, on a small slice of the demo setting."""
    out = tmp_path_factory.mktemp("slice") / "rep"
    r = _repair_cli(out, "--merge")
    assert r.returncode == 0, r.stderr[-3000:]
    (out.parent / "cli_stderr.txt").write_text(r.stderr)  # for the quiet-output test
    return out, r.stdout, json.loads((out / "repair_summary.json").read_text())


@pytest.mark.slow
def test_repair_command_end_to_end_on_a_small_slice(repaired_slice):
    """Evaluation diagnose, repair-split diagnose, the sets, a LoRA pass, the re-measure and
    `--merge`, in one command."""
    out, stdout, s = repaired_slice
    assert "recovery" in stdout and "merged (grid)" in stdout
    assert s["n"] == 16 and 1 <= s["examples"] <= 8
    assert {"recovery", "flips_introduced_rate", "flips_fixed", "after_repair"} <= set(s)
    a = s["accuracy"]
    assert a["reference"] > a["quantized"]  # the demo setting really costs accuracy on this slice
    fixed, introduced = s["flips_fixed"], s["flips_introduced"]
    assert round(a["repaired"] - a["quantized"], 4) == round((fixed - introduced) / 16, 4)
    ref = {x["problem_id"]: x["correct"] for x in _rows(out / "eval-split" / "generations" / "reference.jsonl")}
    q = {x["problem_id"]: x["correct"] for x in _rows(out / "eval-split" / "generations" / "quantized.jsonl")}
    rep = {x["problem_id"]: x["correct"] for x in _rows(out / "generations" / "repaired.jsonl")}
    broken = [p for p in q if q[p] and not rep[p]]
    assert len(broken) == introduced and s["flips_introduced_reference_solves"] == sum(ref[p] for p in broken)
    sft_rows = [json.loads(x) for x in (out / "silverbullet_sft.jsonl").read_text().splitlines()]
    assert len(sft_rows) == s["examples"] and all(r["problem_id"].startswith("synthetic-repair-") for r in sft_rows)
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert s["train"]["processes"] == 1
    assert s["sets"] == {"sft_data": "flipped-full", "replay": 0.0, "anchor": 0.0, "guard": 0.0,
                         "sft_rows": len(sft_rows), "dpo_pairs": s["sets"]["dpo_pairs"]}  # fmt: skip
    m = s["merged"]
    assert Path(m["path"], "config.json").is_file() and 0.0 <= m["accuracy"] <= 1.0
    merged_cfg = json.loads(Path(m["path"], "config.json").read_text())["quantization_config"]
    assert merged_cfg["config_groups"]["group_0"]["weights"]["num_bits"] == 2  # still 2-bit after merging
    assert len((out / "generations" / "merged.jsonl").read_text().splitlines()) == 16
    stored = json.loads((out / "repair_config.json").read_text())  # `repair --config` takes it back
    assert (stored["eval_limit"], stored["repair_limit"], stored["max_examples"], stored["merge"]) == (16, 32, 8, True)
    assert stored["train"]["epochs"] == 1.0 and stored["out"] == str(out)


@pytest.mark.slow
def test_repair_is_quiet_and_logs_training(repaired_slice):
    """Without -v the terminal gets our stage lines and tables only: TRL's, datasets' and
    llm-compressor's bars and the loss dicts go to log.txt; the loss goes to train_log.jsonl."""
    out, stdout, s = repaired_slice
    terminal = stdout + (out.parent / "cli_stderr.txt").read_text()
    for noise in ("it/s]", "examples/s]", "Warning", "warn(", "{'loss'", "Tokenizing"):
        assert noise not in terminal, noise
    assert "training LoRA (SFT)" in terminal and "✓" in terminal
    log = (out / "log.txt").read_text()
    assert "Tokenizing train dataset" in log and "it/s]" in log
    rows = _rows(out / "train_log.jsonl")
    assert rows and all(r["stage"] == "training LoRA (SFT)" for r in rows)
    assert any("loss" in r for r in rows) and rows[-1]["step"] == s["train"]["sft"]["steps"]


@pytest.mark.slow
def test_repair_reports_the_checker_fallback(repaired_slice):
    """checked.jsonl serves the quantized model's own solution exactly where the repaired one has a
    refuted step and it has none; the summary's `checked` block is computed from those rows."""
    from silverbullet.repair.fallback import failed_step

    out, stdout, s = repaired_slice
    reps = {x["problem_id"]: x for x in _rows(out / "generations" / "repaired.jsonl")}
    qs = {x["problem_id"]: x for x in _rows(out / "eval-split" / "generations" / "quantized.jsonl")}
    checked = _rows(out / "generations" / "checked.jsonl")
    assert [r["problem_id"] for r in checked] == list(reps)
    for row in checked:
        pid = row["problem_id"]
        swap = failed_step(reps[pid]["text"]) is not None and failed_step(qs[pid]["text"]) is None
        assert row == (qs[pid] if swap else reps[pid])
    c = s["checked"]
    assert c["fallbacks"] == sum(r["model"] == "quantized" for r in checked)
    assert c["accuracy"] == round(sum(r["correct"] for r in checked) / 16, 4)
    assert c["flips_introduced"] == sum(qs[p]["correct"] and not r["correct"] for p, r in zip(reps, checked))
    assert "checker fallback" in stdout


@pytest.mark.slow
def test_evaluate_with_the_checker_fallback(repaired_slice, tmp_path):
    """`silverbullet evaluate --adapter A --fallback` as a user runs it on the repaired slice's adapter."""
    import subprocess
    import sys

    out, _, s = repaired_slice
    quantized = json.loads((out / "eval-split" / "config.json").read_text())["quantized"]
    res = tmp_path / "eval.json"
    args = ["--model", quantized, "--adapter", str(out / "adapter"), "--limit", "6", "--json", str(res)]
    r = subprocess.run(
        [sys.executable, "-m", "silverbullet.cli", "evaluate", *args, "--fallback"],
        capture_output=True, text=True, cwd=Path(MODEL).parents[1], timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(res.read_text())
    assert got["n"] == 6 and 0 <= got["fallbacks"] <= got["flagged"] <= 6 and 0.0 <= got["accuracy"] <= 1.0
    assert got["adapter"] == str(out / "adapter")


@pytest.mark.slow
def test_repair_rerun_reuses_the_adapter_and_grpo_trains_anew(repaired_slice, tmp_path):
    """An interrupted or repeated repair resumes: same sets and config -> the adapter is reused,
    not retrained; a changed config (`--method grpo`, checked end to end) trains anew."""
    import shutil

    src, _, before = repaired_slice
    out = tmp_path / "rep"
    shutil.copytree(src, out)
    weights = (out / "adapter" / "adapter_model.safetensors").read_bytes()
    (out / "generations" / "repaired.jsonl").write_text("")  # as if killed before the re-measure wrote a row
    r = _repair_cli(out)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "reused the sft adapter" in r.stdout + r.stderr  # progress lines go to stderr
    assert (out / "adapter" / "adapter_model.safetensors").read_bytes() == weights
    after = json.loads((out / "repair_summary.json").read_text())
    assert after["accuracy"] == before["accuracy"]
    assert after["train"]["train_seconds"] == before["train"]["train_seconds"]
    # A changed config trains anew: here another method, `--method grpo`, end to end on the slice
    # (one run serves both tests: make test stays within its 15 minutes).
    key = json.loads((out / "adapter" / "train_info.json").read_text())["key"]
    _check_grpo_run(out)
    trained = json.loads((out / "adapter" / "train_info.json").read_text())
    assert trained["key"] != key and "grpo" in trained["info"]  # (the slice's one step is all warm-up:
    # lr 0, so the weights themselves may equal the untrained SFT adapter's)


@pytest.mark.slow
def test_repair_under_torchrun_trains_data_parallel(repaired_slice, tmp_path):
    """What `accelerate launch --multi_gpu` does on GPUs, on 2 CPU processes (gloo): rank 0
    diagnoses (resumed here) and re-measures, both ranks train, one adapter and one table."""
    import shutil

    src, _, _ = repaired_slice
    out = tmp_path / "rep"
    shutil.copytree(src, out)
    shutil.rmtree(out / "adapter")
    torchrun = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    r = _repair_cli(out, "--epochs", "3", launcher=torchrun)  # 3 steps: past the warm-up's zero rate
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("quantized base; training") == 1  # rank 0 alone reports (one closing line)
    s = json.loads((out / "repair_summary.json").read_text())
    assert s["train"]["processes"] == 2 and s["n"] == 16
    assert s["train"]["config"]["batch_size"] == 16  # the global batch: 8 rows on each of 2 processes
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as f:
        b = [f.get_tensor(k) for k in f.keys() if "lora_B" in k]
    assert b and any(t.abs().sum() > 0 for t in b)  # trained: LoRA B starts at zero


def test_sft_rows_for_each_data_mode(repair_run):
    """What each --sft-data mode puts in the SFT set, with provenance and within the budget."""
    from silverbullet.prompting import build_prompt
    from silverbullet.repair.dataset import sft_rows

    root, _ = repair_run
    run = root / "run"
    pairs = curate(candidates(run), DatasetConfig())
    flipped = {p["problem_id"] for p in pairs}
    assert pairs

    step = sft_rows("step", pairs, run, 332)
    assert [r["prompt"] for r in step] == [p["prompt"] for p in pairs]  # question + quantized prefix
    assert [r["completion"] for r in step] == [p["chosen"] for p in pairs]

    ff = sft_rows("flipped-full", pairs, run, 332)
    # every flip of the run, those without an aligned reference step too (a free-prose reference
    # rarely aligns; its whole right solution still teaches the problem)
    from silverbullet.repair.dataset import all_flips

    flips = all_flips(run)
    assert ff and flipped <= {r["problem_id"] for r in ff} == flips
    for r in ff:  # whole solutions from the question on, never a quantized prefix
        assert r["prompt"] == build_prompt(r["question"]) and r["completion"].startswith("Step 1:")
        assert r["error_type"] == "full-solution"

    full = sft_rows("full", pairs, run, 5)
    assert len(full) == 5 and all(r["error_type"] == "control" for r in full)

    mixed = sft_rows("flipped-full", pairs, run, 6, replay=0.5)
    main, extra = [r for r in mixed if r["error_type"] != "replay"], [r for r in mixed if r["error_type"] == "replay"]
    assert len(main) <= 3 and len(mixed) <= 6 and extra
    assert not {r["problem_id"] for r in extra} & {r["problem_id"] for r in main}
    with pytest.raises(UserError, match="--sft-data"):
        sft_rows("everything", pairs, run, 4)
    with pytest.raises(UserError, match="--replay"):
        sft_rows("step", pairs, run, 4, replay=1.5)


def test_merge_needs_the_recorded_recipe(tmp_path):
    from silverbullet.repair.merge import recorded_quantization

    with pytest.raises(UserError, match="silverbullet_quantization.json"):
        recorded_quantization(str(tmp_path))
    (tmp_path / "silverbullet_quantization.json").write_text("{not json")
    with pytest.raises(UserError, match="re-run `silverbullet quantize`"):
        recorded_quantization(str(tmp_path))


def _tiny_run(root: Path) -> Path:
    """A hand-made diagnose run: five problems, what each model got right, quantized margins."""
    run = root / "run"
    (run / "generations").mkdir(parents=True)
    ref_ok = {"p1": True, "p2": False, "p3": False, "p4": True, "p5": True}
    q = {"p1": (True, [2.0, 0.5]), "p2": (True, [0.1, 3.0]), "p3": (False, [1.0]), "p4": (True, [3.0, 1.5]),
         "p5": (False, [0.2])}  # fmt: skip
    probs, refs, quants = [], [], []
    for pid in ref_ok:
        gold = f"Step 1: gold {pid}, so 1 + 1 = 2.\nThe answer is: 2\n"
        probs.append({"id": pid, "question": f"question {pid}?", "answer": "2", "solution": gold})
        ref_text = f"Step 1: ref {pid}\nThe answer is: 2\n"
        refs.append({"problem_id": pid, "text": ref_text, "correct": ref_ok[pid]})
        ok, m = q[pid]
        own = f"Step 1: own {pid}\nThe answer is: 2\n"
        quants.append({"problem_id": pid, "text": own, "correct": ok, "margins": m})
    for name, rows in (("problems.jsonl", probs), ("generations/reference.jsonl", refs),
                       ("generations/quantized.jsonl", quants)):  # fmt: skip
        (run / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_anchor_and_guard_rows(tmp_path):
    """Anchors: the quantized model's own correct solutions, least confident first. Guards: problems
    the reference fails, the quantized model's own correct solution first, else the gold one."""
    from silverbullet.repair.dataset import anchor_set, guard_set

    run = _tiny_run(tmp_path)
    anchors = anchor_set(run, 3, exclude={"p5"})
    assert [a["problem_id"] for a in anchors] == ["p2", "p1", "p4"]  # min margins 0.1, 0.5, 1.5
    assert anchors[0]["completion"].startswith("Step 1: own p2") and anchors[0]["error_type"] == "anchor"
    guards = guard_set(run, 5)
    assert [(g["problem_id"], g["completion"].split(",")[0]) for g in guards] == [
        ("p2", "Step 1: own p2\nThe answer is: 2\n"),  # the quantized model solved it: its own words
        ("p3", "Step 1: gold p3"),  # nobody solved it: the gold solution
    ]
    pairs = [{"problem_id": "p5", "question": "question p5?", "step_index": 0, "error_type": "execution",
              "prompt": "x", "chosen": "y", "rejected": "z"}]  # fmt: skip
    rows = sft_rows("flipped-full", pairs, run, 4, guard=0.25, anchor=0.5)
    assert [(r["problem_id"], r["error_type"]) for r in rows] == [
        ("p5", "full-solution"),
        ("p2", "guard"),
        ("p1", "anchor"),
        ("p4", "anchor"),
    ]
    with pytest.raises(UserError, match="anchor must be a fraction"):
        sft_rows("flipped-full", pairs, run, 4, anchor=1.2)
    with pytest.raises(UserError, match="guard must be a fraction"):
        sft_rows("flipped-full", pairs, run, 4, guard=-0.1)
    with pytest.raises(UserError, match="keep their sum"):
        sft_rows("flipped-full", pairs, run, 4, replay=0.6, anchor=0.6)
    with pytest.raises(UserError, match="anchor 0.5, guard 0.6 add up"):
        sft_rows("flipped-full", pairs, run, 4, anchor=0.5, guard=0.6)


def test_rslora_and_dora_reach_peft_and_the_training_key(tmp_path, tiny_model_dir):
    """The LoRA flavour flags reach PEFT's config, and change the adapter's training key only when on
    (an adapter trained before the flags existed is still reused)."""
    import hashlib
    from dataclasses import asdict

    from transformers import AutoModelForCausalLM

    from silverbullet.repair.train import _lora, training_key

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = _lora(RepairTrainConfig(use_rslora=True, use_dora=True), model)
    assert (lora.use_rslora, lora.use_dora) == (True, True)
    plain = _lora(RepairTrainConfig(), model)
    assert (plain.use_rslora, plain.use_dora) == (False, False)
    sft = tmp_path / "sft.jsonl"
    sft.write_text('{"prompt": "a", "completion": "b"}\n')
    later = ("use_rslora", "use_dora", "sft_loss", "grad_accum")
    old = {k: v for k, v in asdict(RepairTrainConfig()).items() if k not in later}
    h = hashlib.sha256(json.dumps({"base": "q", "config": old}, sort_keys=True).encode())
    h.update(sft.read_bytes() + b"-")
    assert training_key("q", sft, None, RepairTrainConfig()) == h.hexdigest()[:16]
    flavours = ({}, {"use_rslora": True}, {"use_dora": True}, {"sft_loss": "dft"})
    keys = {training_key("q", sft, None, RepairTrainConfig(**f)) for f in flavours}
    assert len(keys) == 4


def test_dft_loss_reaches_the_trainer(repair_run):
    """sft_loss "dft" weights each token's loss by the model's probability of it: from the same seed
    and rows it trains another adapter than nll does; an unknown loss is one line."""
    root, q = repair_run
    pairs = curate(candidates(root / "run"), DatasetConfig(max_examples=6))
    sft, _ = write_sets(sft_rows("flipped-full", pairs, root / "run", 6), pairs, root / "s-dft")
    adapters = {}
    for loss in ("nll", "dft"):
        cfg = RepairTrainConfig(epochs=1, batch_size=4, device="cpu", sft_loss=loss)
        info = train_adapter(q, sft, None, root / f"adapter-{loss}", cfg)
        assert info["sft"]["steps"] >= 1
        with safe_open(str(root / f"adapter-{loss}" / "adapter_model.safetensors"), "pt") as f:
            adapters[loss] = {k: f.get_tensor(k) for k in f.keys()}
    assert adapters["nll"].keys() == adapters["dft"].keys()
    assert any(not adapters["nll"][k].equal(adapters["dft"][k]) for k in adapters["nll"])
    with pytest.raises(UserError, match="sft_loss 'focal'"):
        train_adapter(q, sft, None, root / "adapter-x", RepairTrainConfig(sft_loss="focal"))


def test_own_rows_take_the_first_right_unrefuted_sample(tmp_path):
    """`--sft-data own`: per flipped problem the first sampled solution that is right and has no refuted
    step replaces the reference's; a right answer through a wrong step is refused; a problem with no
    such sample keeps the reference's solution; each round samples only the problems still unsolved."""
    run = _tiny_run(tmp_path)
    pairs = [{"problem_id": pid, "question": f"question {pid}?", "step_index": 0, "error_type": "execution",
              "prompt": "x", "chosen": "y", "rejected": "z"} for pid in ("p1", "p4", "p5")]  # fmt: skip
    clean, slip = "Step 1: 1 + 1 = 2.\nThe answer is: 2\n", "Step 1: 1 + 1 = 3.\nThe answer is: 2\n"
    wrong = "The answer is: 3\n"
    plan = {"p1": [clean], "p4": [slip, clean], "p5": [wrong, wrong, wrong]}  # what each round samples
    calls = []

    def sample(prompts: list[str], round_: int) -> list[str]:
        pids = [next(pid for pid in plan if f"question {pid}?" in p) for p in prompts]
        calls.append((round_, sorted(pids)))
        return [plan[pid][round_] for pid in pids]

    rows = {r["problem_id"]: r for r in sft_rows("own", pairs, run, 5, sample=sample, own_samples=3)}
    assert calls == [(0, ["p1", "p4", "p5"]), (1, ["p4", "p5"]), (2, ["p5"])]
    assert (rows["p1"]["completion"], rows["p1"]["error_type"]) == (clean, "own")
    assert (rows["p4"]["completion"], rows["p4"]["error_type"]) == (clean, "own")  # round 0's slip refused
    assert (rows["p5"]["completion"], rows["p5"]["error_type"]) == ("Step 1: ref p5\nThe answer is: 2\n",
                                                                   "full-solution")  # fmt: skip
    with pytest.raises(ValueError, match="pass `sample`"):
        sft_rows("own", pairs, run, 5)


def test_own_sampler_samples_the_quantized_model(memorizer_dir, tmp_path, monkeypatch):
    """The pipeline's sampler for `own`: the model's sampled solutions (cut after the answer line),
    the same ones again for the same seed and round, counted in `drawn`."""
    from silverbullet.repair.pipeline import RepairConfig, _OwnSampler

    monkeypatch.setenv("SILVERBULLET_CACHE", str(tmp_path / "cache.sqlite"))
    cfg = RepairConfig(max_new_tokens=40, own_temperature=0.7, batch_size=4)
    prompts = list(MEMORIZED)
    sampler = _OwnSampler(str(memorizer_dir), cfg, {})
    first = sampler(prompts, 0)
    assert sampler(prompts, 0) == first and sampler.drawn == 4
    sampler.close()
    assert first[0] == "Step 1: 2 + 3 = 5.\nThe answer is: 5\n"  # the memorized text, sampled at 0.7
    assert first[1].startswith("Step 1: 4 * 2 = 8.\nThe answer is: 8") and "chatter" not in first[1]


@pytest.mark.slow
def test_open_run_reads_the_repair_command_output(repaired_slice):
    """silverbullet.open_run on what `silverbullet repair --merge` wrote: the evaluation diagnose's
    frames, and the repaired / checked / merged generations and the sets, row for row."""
    from silverbullet.results import export_run, open_run

    out, _, s = repaired_slice
    run = open_run(out)
    assert run.diagnose_dir == out / "eval-split" and run.repair_summary == s
    assert len(run.generations) == 32 and set(run.generations["model"]) == {"reference", "quantized"}
    rep = run.repaired
    for tag in ("repaired", "checked", "merged"):
        rows = _rows(out / "generations" / f"{tag}.jsonl")
        part = rep[rep["model"] == tag]
        assert list(part["problem_id"]) == [r["problem_id"] for r in rows]
        assert list(part["correct"]) == [r["correct"] for r in rows]
        assert list(part["served_by"]) == [r["model"] for r in rows]
    assert round(rep[rep["model"] == "repaired"]["correct"].mean(), 4) == s["accuracy"]["repaired"]
    assert (rep[rep["model"] == "checked"]["served_by"] == "quantized").sum() == s["checked"]["fallbacks"]
    sft = run.sets[run.sets["set"] == "sft"]
    assert len(sft) == s["sets"]["sft_rows"] and len(run.sets) - len(sft) == s["sets"]["dpo_pairs"]
    assert list(sft["error_type"]) == [r["error_type"] for r in _rows(out / "silverbullet_sft.jsonl")]
    import pandas as pd

    for p in export_run(out, "parquet", out / "pq"):
        pd.testing.assert_frame_equal(pd.read_parquet(p), run.frames()[p.stem])


def test_process_reward_orders_solutions_by_the_checker():
    from silverbullet.repair.reward import outcome_reward, process_reward, reward_function

    q = "Tom has 3 boxes of 4 apples and eats 2. How many apples are left?"
    right = "Step 1: 3 * 4 = 12.\nStep 2: 12 - 2 = 10.\nThe answer is: 10"
    late = "Step 1: 3 * 4 = 12.\nStep 2: 12 - 2 = 9.\nThe answer is: 9"  # fails in its last step
    early = "Step 1: 3 * 4 = 13.\nStep 2: 13 - 2 = 11.\nThe answer is: 11"  # fails in its first step
    slipped = "Step 1: 3 * 4 = 13.\nStep 2: 12 - 2 = 10.\nThe answer is: 10"  # right answer, refuted step
    p = {name: process_reward(q, t, "10") for name, t in
         (("right", right), ("late", late), ("early", early), ("slipped", slipped))}  # fmt: skip
    assert p["right"] == 1.0 and p["early"] == 0.0
    assert p["right"] > p["slipped"] > p["late"] > p["early"]  # the earlier the fault, the less
    assert [outcome_reward(q, t, "10") for t in (right, slipped, late, early)] == [1.0, 1.0, 0.0, 0.0]
    fn = reward_function("process")  # TRL's call: completions plus the set's columns, one per completion
    assert fn(completions=[right, early], question=[q, q], answer=["10", "10"], trainer_state=None) == [1.0, 0.0]


def _check_grpo_run(out: Path) -> None:
    """`repair --method grpo` as a user runs it, on a copy of the slice's run: the GRPO prompt set
    from the same flipped problems, TRL's GRPOTrainer with LoRA on the quantized base and the
    checker's reward, the re-measure. The slice's diagnoses are reused, so this costs the training
    and the re-measure."""
    # one GRPO step: 2 prompts x 2 samples in a batch of 4 (each step samples whole solutions)
    grpo = ("--method", "grpo", "--max-examples", "2", "--num-generations", "2", "--train-batch-size", "4")
    r = _repair_cli(out, *grpo)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "training LoRA (GRPO, process reward)" in r.stdout + r.stderr
    s = json.loads((out / "repair_summary.json").read_text())
    assert s["method"] == "grpo" and s["n"] == 16
    g = s["train"]["grpo"]
    assert g["reward"] == "process" and g["steps"] >= 1 and g["prompts"] == s["examples"]
    rows = _rows(out / "silverbullet_grpo.jsonl")
    assert {"prompt", "question", "answer", "problem_id"} <= set(rows[0]) and len(rows) == s["examples"]
    with safe_open(str(out / "adapter" / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all("lora_" in k for k in keys)  # the base stays untouched: an adapter only
    # the checker's reward graded the sampled solutions (one step is all warm-up: no update is asserted)
    logged = [x for x in _rows(out / "train_log.jsonl") if "GRPO" in x["stage"]]
    assert logged and all(0.0 <= x["rewards/process_reward/mean"] <= 1.0 for x in logged if "reward" in x)
    assert len(_rows(out / "generations" / "repaired.jsonl")) == 16


def test_training_options_are_checked_before_any_diagnosis(tmp_path):
    from silverbullet.errors import UserError
    from silverbullet.repair.pipeline import RepairConfig, run_repair
    from silverbullet.repair.train import RepairTrainConfig

    for train, says in ((RepairTrainConfig(method="grpo", reward="vibes"), "--reward 'vibes' is not known"),
                        (RepairTrainConfig(method="grpo", num_generations=3), "a multiple of it"),
                        (RepairTrainConfig(batch_size=16, grad_accum=3), "--grad-accum 3 must divide")):  # fmt: skip
        with pytest.raises(UserError, match=says):
            run_repair(RepairConfig(out=str(tmp_path / "r"), train=train), log=lambda m: None)
    assert not (tmp_path / "r").exists()  # nothing ran


def test_grad_accum_keeps_the_batch_in_smaller_steps(repair_run):
    """--grad-accum k: batch_size / k examples a forward pass, k passes an optimizer step: the same
    number of optimizer steps as without; a k that does not divide the batch is one line."""
    from silverbullet.repair.train import training_key

    root, q = repair_run
    pairs = curate(candidates(root / "run"), DatasetConfig(max_examples=8))
    sft, _ = write_sets(sft_rows("flipped-full", pairs, root / "run", 8), pairs, root / "s-accum")
    steps = {}
    for k in (1, 2):
        cfg = RepairTrainConfig(epochs=1, batch_size=4, grad_accum=k, device="cpu")
        steps[k] = train_adapter(q, sft, None, root / f"adapter-accum{k}", cfg)["sft"]["steps"]
    assert steps[1] == steps[2] >= 1
    keys = {training_key("q", sft, None, RepairTrainConfig(grad_accum=k)) for k in (1, 2)}
    assert len(keys) == 2
    with pytest.raises(UserError, match="--grad-accum 3 must divide the training batch"):
        cfg = RepairTrainConfig(batch_size=4, grad_accum=3, device="cpu")
        train_adapter(q, sft, None, root / "adapter-accum3", cfg)


@pytest.mark.parametrize(
    "fits_up_to,line", [(2, "2 per step fit .* rerun with --grad-accum 4"), (0, "not even 1 example")]
)
def test_out_of_memory_in_training_names_a_setting_that_fits(repair_run, monkeypatch, fits_up_to, line):
    """CUDA out of memory in the training step (simulated: no GPU here) stops with one line naming the
    largest per-step batch whose forward and backward pass fits, as a --grad-accum for the same batch."""
    import torch
    import trl

    from silverbullet.repair import train as train_mod

    root, q = repair_run
    pairs = curate(candidates(root / "run"), DatasetConfig(max_examples=8))
    sft, _ = write_sets(sft_rows("flipped-full", pairs, root / "run", 8), pairs, root / "s-oom")
    tried = []

    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    def fits(model, rows, length):
        tried.append((rows, length))
        return rows <= fits_up_to

    monkeypatch.setattr(trl.SFTTrainer, "train", oom)
    monkeypatch.setattr(train_mod, "_step_fits", fits)
    with pytest.raises(UserError, match=line) as e:
        train_adapter(q, sft, None, root / "adapter-oom", RepairTrainConfig(epochs=1, batch_size=8, device="cpu"))
    assert "\n" not in str(e.value) and "8 examples per step" in str(e.value)
    assert [r for r, _ in tried] == ([4, 2] if fits_up_to else [4, 2, 1])
    assert all(0 < n <= 512 for _, n in tried)  # the longest tokenized example, capped at max_length


def test_no_examples_says_why(tmp_path):
    """More problems help only where the reference solves some: a reference at 0% is named instead."""
    from silverbullet.repair.pipeline import _no_examples

    def summary(k_ref: int, flips: int) -> dict:
        return {"n": 40, "benchmark": "gsm8k", "split": "train", "correct": {"reference": k_ref, "quantized": 0},
                "flips": {"ref_right_quant_wrong": flips}}  # fmt: skip

    msg = _no_examples(tmp_path, summary(0, 0))
    assert "reference model solves none of the 40 problems of gsm8k/train" in msg and "--reference" in msg
    msg = _no_examples(tmp_path, summary(30, 0))
    assert "0 of 40 problems flipped" in msg and "--repair-limit" in msg
    assert "--repair-limit" in _no_examples(tmp_path, {})
