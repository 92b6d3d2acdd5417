"""Bad input and bad checkpoints, through the CLI: one `error:` line naming the file or field and what
to do, exit code 2, no traceback, and no checkpoint code ever run.

Most cases call `silverbullet.cli.main()` in-process (the real entry point, fast); a few run the
installed `silverbullet` script as a subprocess to prove the same holds end to end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import run_main

from silverbullet.benchmarks.jsonl import data_root
from silverbullet.cli import app
from silverbullet.quantize import QuantizeConfig, quantize

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "data" / "reference-model"
EXE = ROOT / ".venv" / "bin" / "silverbullet"
_GSM8K_SPLIT_NEEDLE = "nope" if (data_root() / "gsm8k").is_dir() else "SILVERBULLET_DATA"


def cli(*args) -> tuple[int | None, str]:
    """Run main() in-process with these arguments; returns (exit code, stderr)."""
    code, _, err = run_main(*args)
    return code, err


def assert_one_error(code, stderr: str, *needles: str) -> None:
    assert code == 2, stderr[-1500:]
    assert "Traceback" not in stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, stderr[-1500:]
    for n in needles:
        assert n in errors[0], (n, errors[0])


@pytest.fixture(scope="module")
def quantized(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hcli") / "rtn-w2g32"
    return quantize(
        QuantizeConfig(model=str(REF), method="rtn", bits=2, group_size=32, out=str(out)), log=lambda m: None
    )


@pytest.fixture(scope="module")
def bad(tmp_path_factory, quantized) -> Path:
    """A folder of broken checkpoints and inputs."""
    d = tmp_path_factory.mktemp("bad")

    def copy(name: str) -> Path:
        return Path(shutil.copytree(quantized, d / name))

    w = (quantized / "model.safetensors").read_bytes()
    (copy("truncated") / "model.safetensors").write_bytes(w[: len(w) // 2])
    (copy("garbage") / "model.safetensors").write_bytes(b"\x00" * 100)
    (copy("tiny") / "model.safetensors").write_bytes(w[:4])
    for name, patch in {
        "bert": {"architectures": ["BertModel"], "model_type": "bert"},
        "remote": {"auto_map": {"AutoModelForCausalLM": "evil.EvilLM"}, "model_type": "evil"},
        "unknown_quant": {"quantization_config": {"quant_method": "made_up_q"}},
        "awq": {"quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128, "version": "gemm"}},
    }.items():
        p = copy(name)
        cfg = json.loads((p / "config.json").read_text())
        (p / "config.json").write_text(json.dumps({**cfg, **patch}))
    (d / "remote" / "evil.py").write_text(f"open({str(d / 'PWNED')!r}, 'w')\n")
    (copy("badjson") / "config.json").write_text("{nope")
    p = copy("pickle")
    (p / "model.safetensors").unlink()
    (p / "pytorch_model.bin").write_bytes(b"not really a pickle")
    p = copy("notokenizer")
    (p / "tokenizer.json").unlink()
    (p / "tokenizer_config.json").unlink()
    (copy("badtokenizer") / "tokenizer.json").write_text("{garbage")
    p = copy("bigtokenizer")
    tj = json.loads((p / "tokenizer.json").read_text())
    n = len(tj["model"]["vocab"])
    tj["model"]["vocab"].update({f"zz{i}": n + i for i in range(1000)})
    (p / "tokenizer.json").write_text(json.dumps(tj))
    (d / "afile").write_text("x")
    # inputs
    (d / "malformed.jsonl").write_text('{"question": "a", "answer": "1"}\n{oops\n')
    (d / "empty.jsonl").write_text("")
    (d / "blank.jsonl").write_text("\n\n")
    (d / "nofield.jsonl").write_text('{"foo": "a"}\n')
    (d / "notobject.jsonl").write_text('{"question": "a", "answer": "1"}\n[1, 2]\n')
    return d


# ------------------------------------------------------------------------------ checkpoints

CHECKPOINTS = [
    ("truncated", ["model.safetensors", "truncated"]),
    ("garbage", ["model.safetensors", "corrupt"]),
    ("tiny", ["model.safetensors", "corrupt"]),
    ("bert", ["not a causal language model"]),
    ("remote", ["config.json", "auto_map", "trust_remote_code"]),
    ("unknown_quant", ["config.json", "quant_method", "made_up_q"]),
    ("awq", ["awq", "gptqmodel"]),
    ("badjson", ["config.json", "malformed JSON"]),
    ("pickle", ["pytorch_model.bin", "safetensors"]),
    ("notokenizer", ["no tokenizer files"]),
    ("badtokenizer", ["tokenizer"]),
    ("bigtokenizer", ["tokenizer has", "embedding"]),
    ("afile", ["not a directory"]),
    ("missing", ["does not exist"]),
]


@pytest.mark.parametrize("name, needles", CHECKPOINTS, ids=[c[0] for c in CHECKPOINTS])
def test_bad_checkpoint_via_evaluate(bad, name, needles):
    code, err = cli("evaluate", "--model", bad / name, "--limit", "1")
    assert_one_error(code, err, *needles)
    assert not (bad / "PWNED").exists()


@pytest.mark.parametrize("name", ["truncated", "bert", "remote", "pickle"])
def test_bad_checkpoint_via_diagnose_fails_before_generating(bad, name, tmp_path):
    """Both checkpoints are checked before the first model generates (no wasted reference run)."""
    out = tmp_path / "run"
    code, err = cli("diagnose", "--reference", REF, "--quantized", bad / name, "--limit", "2", "--out", out)
    assert_one_error(code, err, name)
    assert not (out / "generations").exists()
    assert not (bad / "PWNED").exists()


def test_bad_checkpoint_via_quantize(bad, tmp_path):
    code, err = cli("quantize", "--model", bad / "truncated", "--method", "rtn", "--out", tmp_path / "q")
    assert_one_error(code, err, "model.safetensors")


def test_trust_remote_code_is_off_and_safetensors_only():
    """Every from_pretrained call in the package sits behind the loader, which pins both."""
    import inspect

    from silverbullet.generation import loading

    src = inspect.getsource(loading.load_causal_lm)
    assert '"use_safetensors": True' in src
    assert inspect.signature(loading.load_causal_lm).parameters["trust_remote_code"].default is False
    assert inspect.signature(loading.load_tokenizer).parameters["trust_remote_code"].default is False
    for py in (ROOT / "silverbullet").rglob("*.py"):
        text = py.read_text()
        assert "trust_remote_code=True" not in text, py
        assert "torch.load(" not in text or "weights_only=True" in text, py


def test_vllm_backend_unavailable_is_clear(quantized, tmp_path):
    pytest.importorskip  # noqa: B018 - documentation: this test is for machines *without* vllm
    try:
        import vllm  # noqa: F401

        pytest.skip("vllm is installed here")
    except ImportError:
        pass
    code, err = cli("diagnose", "--reference", REF, "--quantized", quantized, "--backend", "vllm", "--limit", "2")
    assert_one_error(code, err, "vllm" if "vllm" in err.split("error:")[-1] else "vLLM")


# ------------------------------------------------------------------------------ bad input, every command


def _cases(bad: Path, q: Path, tmp: Path) -> list[tuple[tuple, list[str]]]:
    R = str(REF)
    d = ("diagnose", "--reference", R, "--quantized", q)
    loc = ("locate", "--question-field", "question", "--candidate-field", "answer", "--out", tmp / "o.jsonl")
    return [
        # diagnose
        ((*d, "--benchmark", "no-such-benchmark", "--out", tmp / "r"), ["no-such-benchmark", "known:"]),
        ((*d, "--benchmark", bad / "malformed.jsonl", "--out", tmp / "r"), ["malformed.jsonl:2:"]),
        ((*d, "--benchmark", bad / "notobject.jsonl", "--out", tmp / "r"), ["notobject.jsonl:2"]),
        ((*d, "--benchmark", bad / "nofield.jsonl", "--out", tmp / "r"), ["nofield.jsonl:1", "question"]),
        ((*d, "--benchmark", bad / "empty.jsonl", "--out", tmp / "r"), ["empty.jsonl", "no problems"]),
        ((*d, "--benchmark", bad / "blank.jsonl", "--out", tmp / "r"), ["blank.jsonl", "no problems"]),
        ((*d, "--benchmark", tmp / "nothere.jsonl", "--out", tmp / "r"), ["nothere.jsonl", "not found"]),
        ((*d, "--split", "nope", "--out", tmp / "r"), ["split", "nope"]),
        ((*d, "--limit", "-3", "--out", tmp / "r"), ["--limit", "-3"]),
        ((*d, "--batch-size", "0", "--out", tmp / "r"), ["--batch-size", "0"]),
        ((*d, "--backend", "foo", "--limit", "2", "--out", tmp / "r"), ["--backend", "foo"]),
        ((*d, "--device", "cuda:7", "--limit", "2", "--out", tmp / "r"), ["cuda"]),
        # evaluate / reference eval
        (("evaluate", "--limit", "0"), ["--limit", "0"]),
        (("evaluate", "--limit", "-3"), ["--limit"]),
        (("evaluate", "--benchmark", "nope", "--limit", "1"), ["nope", "known:"]),
        (("evaluate", "--benchmark", bad / "malformed.jsonl", "--limit", "1"), ["malformed.jsonl:2:"]),
        (("evaluate", "--benchmark", bad / "empty.jsonl"), ["empty.jsonl"]),
        # without the shared data folder (a clone elsewhere), the error names where to point instead
        (("evaluate", "--benchmark", "gsm8k", "--split", "nope", "--limit", "1"), [_GSM8K_SPLIT_NEEDLE]),
        (("evaluate", "--model", REF, "--adapter", tmp, "--limit", "1"), ["adapter_config.json"]),
        (("evaluate", "--fallback", "--limit", "1"), ["--fallback needs --adapter"]),
        (("reference", "eval", "--n", "0"), ["--n", "0"]),
        (("reference", "eval", "--n", "-1"), ["--n"]),
        (("reference", "train", "--steps", "0"), ["--steps"]),
        (("reference", "train", "--combine-weight", "0"), ["--combine-weight"]),
        (("reference", "train", "--n-problems", "-5"), ["--n-problems"]),
        # quantize
        (("quantize", "--bits", "1", "--out", tmp / "q"), ["--bits", "1"]),
        (("quantize", "--bits", "9", "--out", tmp / "q"), ["--bits", "9"]),
        (("quantize", "--method", "foo", "--out", tmp / "q"), ["--method", "foo"]),
        (("quantize", "--group-size", "-1", "--out", tmp / "q"), ["--group-size", "-1"]),
        (("quantize", "--samples", "0", "--out", tmp / "q"), ["--samples"]),
        (("quantize", "--model", tmp / "nomodel", "--method", "rtn", "--out", tmp / "q"), ["nomodel"]),
        (("quantize", "--calibration", "nope", "--out", tmp / "q"), ["nope"]),
        (("quantize", "--calibration", bad / "malformed.jsonl", "--out", tmp / "q"), ["malformed.jsonl:2:"]),
        # locate
        ((*loc, "--input", tmp / "missing.jsonl"), ["missing.jsonl"]),
        ((*loc, "--input", bad / "malformed.jsonl"), ["malformed.jsonl:2:"]),
        ((*loc, "--input", bad / "empty.jsonl"), ["empty.jsonl"]),
        ((*loc, "--input", bad / "nofield.jsonl"), ["nofield.jsonl:1", "question"]),
        ((*loc, "--input", bad / "notobject.jsonl"), ["notobject.jsonl:2"]),
    ]


def test_bad_input_every_command(bad, quantized, tmp_path):
    failures = []
    for args, needles in _cases(bad, quantized, tmp_path):
        code, err = cli(*args)
        try:
            assert_one_error(code, err, *needles)
        except AssertionError as e:
            failures.append((" ".join(map(str, args[:1] + args[-4:])), str(e)[:400]))
    assert not failures, "\n".join(map(str, failures))


def _wired(name: str) -> bool:
    return any(c.name == name or (c.callback and c.callback.__name__ == name) for c in app.registered_commands)


@pytest.mark.parametrize("command", ["check", "report", "repair"])
def test_later_stage_commands_on_bad_run_dirs(command, bad, tmp_path):
    if not _wired(command):
        pytest.skip(f"`{command}` is not wired into cli.py yet")
    base = {"check": ("check",), "report": ("report",), "repair": ("repair", "--out", tmp_path / "rep", "--from")}[
        command
    ]
    code, err = cli(*base, tmp_path / "nothing-here")
    assert_one_error(code, err, "nothing-here")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    code, err = cli(*base, broken)
    assert_one_error(code, err, "summary.json")


def test_run_dir_from_another_config_is_refused(quantized, tmp_path):
    """Refused before any model loads, naming the differing field and what to do."""
    out = tmp_path / "run"
    (out / "generations").mkdir(parents=True)
    cfg = {"reference": str(REF), "quantized": str(quantized), "benchmark": "synthetic", "split": "eval", "seed": 1}
    (out / "config.json").write_text(json.dumps(cfg))
    (out / "generations" / "reference.jsonl").write_text('{"problem_id": "x"}\n')
    code, err = cli("diagnose", "--reference", REF, "--quantized", quantized, "--seed", "0", "--out", out)
    assert_one_error(code, err, str(out), "seed", "--out")
    (out / "config.json").write_text("{torn")
    code, err = cli("diagnose", "--reference", REF, "--quantized", quantized, "--out", out)
    assert_one_error(code, err, "config.json")


def test_failed_attempt_leaves_a_reusable_run_dir(bad, quantized, tmp_path):
    """A typo'd first attempt (no rows written) does not lock the directory to the typo."""
    out = tmp_path / "run"
    code, err = cli(
        "diagnose", "--reference", REF, "--quantized", quantized, "--benchmark", bad / "empty.jsonl", "--out", out
    )
    assert code == 2
    from silverbullet.diagnose import DiagnoseConfig, _check_run_dir

    _check_run_dir(out, DiagnoseConfig(reference=str(REF), quantized=str(quantized), out=str(out)))  # no error


def test_malformed_row_in_the_middle_of_a_run_file_names_the_line(tmp_path):
    from silverbullet.errors import UserError
    from silverbullet.run.jsonl import read_jsonl_rows

    p = tmp_path / "reference.jsonl"
    p.write_text('{"problem_id": "a"}\n{garbage\n{"problem_id": "c"}\n')
    with pytest.raises(UserError, match="reference.jsonl:2:"):
        read_jsonl_rows(p)
    p.write_text('{"problem_id": "a"}\n{"problem_id": "b", "te')  # torn tail from a kill: dropped
    assert read_jsonl_rows(p) == [{"problem_id": "a"}]


@pytest.mark.parametrize(
    "args, needle",
    [
        (("evaluate", "--model", "{bad}/truncated", "--limit", "1"), "model.safetensors"),
        (("diagnose", "--benchmark", "{bad}/malformed.jsonl", "--quantized", "{bad}/bert", "--out", "{tmp}/r"), "bert"),
        (("quantize", "--bits", "1", "--out", "{tmp}/q"), "--bits"),
    ],
)
def test_installed_script_end_to_end(bad, tmp_path, args, needle):
    r = subprocess.run(
        [str(EXE), *[a.replace("{bad}", str(bad)).replace("{tmp}", str(tmp_path)) for a in args]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert_one_error(r.returncode, r.stderr, needle)


def test_evaluate_from_another_directory_uses_the_shipped_reference(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli("evaluate", "--limit", "1")
    assert code in (0, None), err[-1500:]
    assert "hub" not in err
