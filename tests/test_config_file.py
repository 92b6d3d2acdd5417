"""`--config FILE`: a run's stored config passed back gives the same config; flags win over the file;
TOML tables per command; a bad key or value is one line, exit 2. And the commands' option budget."""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import typer
from conftest import cli_in_process

from silverbullet.diagnose import DiagnoseConfig
from silverbullet.repair.pipeline import RepairConfig
from silverbullet.repair.train import RepairTrainConfig


@pytest.fixture
def captured(monkeypatch):
    """The config each command would run with (the run itself replaced)."""
    seen: dict = {}

    def grab(name):
        def run(cfg, *a, **k):
            seen[name] = cfg
            return {"rank": 1}

        return run

    monkeypatch.setattr("silverbullet.diagnose.run_diagnose", grab("diagnose"))
    monkeypatch.setattr("silverbullet.diagnose_samples.run_from_samples", grab("samples"))
    monkeypatch.setattr("silverbullet.repair.pipeline.run_repair", grab("repair"))
    monkeypatch.setattr("silverbullet.cli.print_summary", lambda s: None)
    return seen


def _stored(tmp_path: Path, cfg: DiagnoseConfig) -> Path:
    """config.json as a diagnose run writes it (the run's own writer)."""
    from silverbullet.diagnose import _check_run_dir

    _check_run_dir(tmp_path / "run", cfg)
    return tmp_path / "run" / "config.json"


def test_a_stored_diagnose_config_round_trips(tmp_path, captured):
    cfg = replace(
        DiagnoseConfig(),
        quantized=str(tmp_path / "q"),
        load_in="4bit",
        benchmark="gsm8k",
        split="train",
        limit=7,
        seed=3,
        backend="vllm",
        vllm_options={"tensor_parallel_size": 2, "data_parallel_size": 3},
        out=str(tmp_path / "run"),
        batch_size=5,
        max_new_tokens=99,
        confirm=False,
        margins=False,
        cache=False,
        prompt_format="fewshot",
        fewshot=2,
        system_prompt="be brief",
    )
    code, err = cli_in_process("diagnose", "--config", _stored(tmp_path, cfg))
    assert code == 0, err
    assert asdict(captured["diagnose"]) == asdict(cfg)
    # the defaults stored beside them come back as defaults: no fewshot format where none was asked
    plain = replace(DiagnoseConfig(), out=str(tmp_path / "run2"), limit=None, devices=["cpu", "cpu"])
    (tmp_path / "run").rename(tmp_path / "old")
    code, err = cli_in_process("diagnose", "--config", _stored(tmp_path, replace(plain, out=str(tmp_path / "run"))))
    assert code == 0, err
    got = captured["diagnose"]
    assert (got.prompt_format, got.limit, got.devices, got.identity()) == ("auto", None, ["cpu", "cpu"],
                                                                          plain.identity())  # fmt: skip
    # a samples run's config back through diagnose-samples: settings it has no flag for reach the config
    (tmp_path / "run").rename(tmp_path / "older")
    samples = replace(cfg, reference_samples="a.jsonl", quantized_samples="b.jsonl", samples_fields={"text": "out"},
                      out=str(tmp_path / "run"))  # fmt: skip
    code, err = cli_in_process("diagnose-samples", "--config", _stored(tmp_path, samples))
    assert code == 0, err
    got = captured["samples"]
    assert (got.samples_fields, got.backend, got.cache, got.load_in) == ({"text": "out"}, "vllm", False, "4bit")


def test_flags_win_over_the_file_and_toml_tables_are_per_command(tmp_path, captured):
    f = tmp_path / "silverbullet.toml"
    f.write_text('[diagnose]\nbenchmark = "gsm8k"\nmax-new-tokens = 64\nlimit = 9\n\n[check]\nmax_flip_rate = 0.1\n'
                 '[repair]\nmax_examples = 12\n[repair.train]\nlora_r = 4\nreward = "outcome"\n')  # fmt: skip
    code, err = cli_in_process("diagnose", "--config", f, "--limit", "3", "--out", tmp_path / "d")
    assert code == 0, err
    d = captured["diagnose"]
    assert (d.benchmark, d.split, d.max_new_tokens, d.limit) == ("gsm8k", "test", 64, 3)  # split: gsm8k's own
    code, err = cli_in_process("repair", "--config", f, "--epochs", "2", "--out", tmp_path / "r")
    assert code == 0, err
    r = captured["repair"]
    assert (r.max_examples, r.train.epochs, r.train.lora_r, r.train.reward) == (12, 2.0, 4, "outcome")


def test_a_stored_repair_config_round_trips(tmp_path, captured):
    cfg = replace(
        RepairConfig(),
        quantized=str(tmp_path / "q"),
        out=str(tmp_path / "r"),
        benchmark="gsm8k",
        eval_limit=None,
        repair_limit=40,
        max_examples=20,
        sft_data="own",
        anchor=0.25,
        guard=0.1,
        own_samples=3,
        balance=True,
        merge=True,
        merge_method="gptq",
        seed=4,
        train=replace(
            RepairTrainConfig(),
            method="sft+dpo",
            lora_r=8,
            epochs=2.0,
            dpo_epochs=1.0,
            batch_size=8,
            grad_accum=2,
            reward="outcome",
            target_modules=["q_proj"],
        ),  # fmt: skip
    )
    f = tmp_path / "repair_config.json"
    f.write_text(json.dumps(asdict(cfg)))
    code, err = cli_in_process("repair", "--config", f)
    assert code == 0, err
    assert asdict(captured["repair"]) == asdict(cfg)


@pytest.mark.parametrize(
    "text, says",
    [
        ('[diagnose]\nbatchsize = 3\n', "[diagnose] batchsize is not a setting of diagnose"),
        ('[diagnose]\nlimit = "ten"\n', "[diagnose] limit must be int, got 'ten'"),
        ('[diagnose]\nconfirm = 1\n', "[diagnose] confirm must be bool, got 1"),
        ('[repair.train]\nlora_rank = 4\n', "[repair.train] lora_rank is not a setting of repair.train"),
        ('[diagnose\n', "is not valid TOML"),
    ],
)  # fmt: skip
def test_a_bad_config_is_one_line(tmp_path, captured, text, says):
    f = tmp_path / "c.toml"
    f.write_text(text)
    command = "repair" if "repair" in text else "diagnose"
    code, err = cli_in_process(command, "--config", f)
    assert code == 2 and says in err and "Traceback" not in err, err
    assert not captured


def test_older_spellings_still_work(tmp_path, captured):
    code, err = cli_in_process("diagnose", "--load-in-4bit", "--backend", "vllm", "--tensor-parallel-size", "2",
                               "--devices", "cpu,cpu", "--out", tmp_path / "a")  # fmt: skip
    assert code == 0, err
    d = captured["diagnose"]
    assert (d.load_in, d.vllm_options, d.devices) == ("4bit", {"tensor_parallel_size": 2}, ["cpu", "cpu"])
    code, err = cli_in_process("diagnose", "--load-in", "8bit", "--backend", "vllm", "--parallel", "tp=2,dp=2",
                               "--device", "cpu,cpu", "--out", tmp_path / "b")  # fmt: skip
    assert code == 0, err
    d = captured["diagnose"]
    assert (d.load_in, d.vllm_options, d.devices) == ("8bit", {"tensor_parallel_size": 2, "data_parallel_size": 2},
                                                      ["cpu", "cpu"])  # fmt: skip
    for bad, says in ((["--load-in", "3bit"], "--load-in '3bit' is not known"),
                      (["--load-in", "4bit", "--load-in-8bit"], "exclude each other"),
                      (["--parallel", "tp=2"], "--parallel needs --backend vllm"),
                      (["--tensor-parallel-size", "2"], "--tensor-parallel-size needs --backend vllm"),
                      (["--backend", "vllm", "--parallel", "ep=2"], "--parallel: 'ep=2'")):  # fmt: skip
        code, err = cli_in_process("diagnose", *bad, "--out", tmp_path / "c")
        assert code == 2 and says in err, err
    code, err = cli_in_process("repair", "--reward", "outcome", "--grad-accum", "2", "--replay", "0.1",
                               "--out", tmp_path / "r")  # fmt: skip
    assert code == 0, err
    r = captured["repair"]
    assert (r.train.reward, r.train.grad_accum, r.replay) == ("outcome", 2, 0.1)
    samples = tmp_path / "s.jsonl"
    samples.write_text("{}\n")
    code, err = cli_in_process("diagnose-samples", "--reference-samples", samples, "--quantized-samples", samples,
                               "--out", tmp_path / "s")  # fmt: skip
    assert code == 0, err
    assert (captured["samples"].reference_samples, captured["samples"].limit) == (str(samples), None)


def _visible(command: str) -> dict:
    from silverbullet.cli import app

    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return {p.name: p for p in cmd.params if not getattr(p, "hidden", False)}


def test_the_main_commands_carry_about_twenty_options_with_the_configs_defaults():
    """#38: at most about 20 options each; a flag named as a config field defaults to the field's
    default (the CLI and the config cannot drift apart unseen)."""
    for command, cls, nested in (("diagnose", DiagnoseConfig, None), ("diagnose-samples", DiagnoseConfig, None),
                                 ("repair", RepairConfig, RepairTrainConfig)):  # fmt: skip
        params = _visible(command)
        assert len(params) <= 23, (command, sorted(params))
        defaults = asdict(cls())
        if nested is not None:
            defaults.update({k: v for k, v in asdict(nested()).items() if k in ("method", "epochs", "learning_rate")})
        # where the CLI's None stands for a default the command works out (limit 500, the benchmark's split)
        derived = {"limit", "split", "benchmark", "reference", "fewshot", "eval_limit", "samples_fields"}  # text forms
        checked = [n for n in params if n in defaults and n not in derived]
        assert len(checked) >= 10
        for name in checked:
            assert params[name].default == defaults[name], (command, name, params[name].default, defaults[name])
