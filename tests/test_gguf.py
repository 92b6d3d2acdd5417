"""GGUF files in: the header check (truncated, corrupt, foreign files refused in one line), the
conversion to a safetensors folder (weights, tokenizer, provenance), and the CLI taking a .gguf path.

The GGUF files are the shipped reference model written by tests/gguf_build.py (F32 and Q8_0).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import run_main
from gguf_build import build_gguf

from silverbullet.errors import UserError
from silverbullet.generation.gguf import (
    SOURCE_FILE,
    check_architecture,
    gguf_file_in,
    gguf_source,
    read_gguf_info,
    resolve_gguf,
    sha256_file,
)

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "data" / "reference-model"


@pytest.fixture(scope="session")
def gguf_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("gguf")
    return {q: build_gguf(REFERENCE, d / f"reference-{q.lower()}.gguf", qtype=q) for q in ("F32", "Q8_0")}


@pytest.fixture(scope="session")
def converted(gguf_files, tmp_path_factory) -> dict[str, Path]:
    cache = tmp_path_factory.mktemp("models")
    return {q: Path(resolve_gguf(f, cache_dir=cache)) for q, f in gguf_files.items()}


def _truncate(src: Path, dst: Path, size: int) -> Path:
    with src.open("rb") as f:
        dst.write_bytes(f.read(size))
    return dst


def test_header_reads_type_architecture_and_needed_size(gguf_files):
    info = read_gguf_info(gguf_files["Q8_0"])
    assert (info.architecture, info.file_type, info.version) == ("llama", "Q8_0", 3)
    assert info.needed_size == info.size == gguf_files["Q8_0"].stat().st_size
    assert info.tensor_types == {"F32": 17, "Q8_0": 57}  # norms stay F32; 8 layers x 7 matrices + embedding
    assert info.tensor_count == 74
    assert read_gguf_info(gguf_files["F32"]).file_type == "ALL_F32"


@pytest.mark.parametrize("cut", ["data", "header"])
def test_truncated_file_is_one_line(gguf_files, tmp_path, cut):
    src = gguf_files["Q8_0"]
    size = src.stat().st_size - 1000 if cut == "data" else 2000
    bad = _truncate(src, tmp_path / "cut.gguf", size)
    with pytest.raises(UserError, match=r"cut\.gguf: truncated GGUF file") as e:
        read_gguf_info(bad)
    assert "\n" not in str(e.value)
    if cut == "data":
        assert f"{size:,} bytes; its tensor table needs {src.stat().st_size:,}" in str(e.value)


def test_bad_magic_and_corrupt_counts_are_refused(gguf_files, tmp_path):
    notgguf = tmp_path / "model.gguf"
    notgguf.write_bytes(b"PK\x03\x04" + b"\0" * 100)
    with pytest.raises(UserError, match=r"not a GGUF file \(it starts with b'PK"):
        read_gguf_info(notgguf)
    data = bytearray(gguf_files["F32"].read_bytes()[:4096])
    data[8:16] = (10**12).to_bytes(8, "little")  # tensor count past any real file's
    (tmp_path / "huge.gguf").write_bytes(bytes(data))
    with pytest.raises(UserError, match="corrupt GGUF header"):
        read_gguf_info(tmp_path / "huge.gguf")
    data = bytearray(gguf_files["F32"].read_bytes()[:64])
    data[4:8] = (99).to_bytes(4, "little")
    (tmp_path / "v99.gguf").write_bytes(bytes(data))
    with pytest.raises(UserError, match="GGUF version 99 is not supported"):
        read_gguf_info(tmp_path / "v99.gguf")


def test_unknown_architecture_is_refused_before_loading(tmp_path):
    f = build_gguf(REFERENCE, tmp_path / "alien.gguf", architecture="alienlm")
    info = read_gguf_info(f)
    assert info.architecture == "alienlm"
    with pytest.raises(UserError, match="GGUF architecture 'alienlm' is one transformers cannot load"):
        check_architecture(info)


def test_f32_conversion_keeps_every_weight(converted):
    """The reference model's bf16 weights, through an F32 GGUF and back, are bit-identical."""
    from safetensors.torch import load_file

    original: dict = {}
    for f in REFERENCE.glob("*.safetensors"):
        original.update(load_file(str(f)))
    back = load_file(str(next(converted["F32"].glob("*.safetensors"))))
    back.pop("lm_head.weight", None)  # tied to the embedding in the original
    assert set(back) == set(original)
    for k, v in original.items():
        assert back[k].dtype == v.dtype and back[k].equal(v), k


def test_q8_conversion_stays_within_q8_error_and_predicts_alike(converted):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    original: dict = {}
    for f in REFERENCE.glob("*.safetensors"):
        original.update(load_file(str(f)))
    back = load_file(str(next(converted["Q8_0"].glob("*.safetensors"))))
    w, q = original["model.layers.0.mlp.up_proj.weight"].float(), back["model.layers.0.mlp.up_proj.weight"].float()
    blocks = w.reshape(-1, 32)
    step = blocks.abs().amax(1, keepdim=True) / 127  # Q8_0: one scale per 32 values
    assert ((q.reshape(-1, 32) - blocks).abs() <= step * 0.51 + blocks.abs() * 2**-8 + 1e-6).all()
    assert not q.equal(w)  # it really went through Q8_0
    a = AutoModelForCausalLM.from_pretrained(str(REFERENCE), dtype=torch.float32)
    b = AutoModelForCausalLM.from_pretrained(str(converted["Q8_0"]), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(converted["Q8_0"]))
    ids = torch.tensor([tok("Problem: Tom has 3 apples and buys 4 more. How many apples does he have?").input_ids])
    with torch.no_grad():
        agree = (a(ids).logits.argmax(-1) == b(ids).logits.argmax(-1)).float().mean().item()
    assert agree >= 0.9


def test_converted_folder_has_tokenizer_eos_and_provenance(converted, gguf_files):
    from transformers import AutoTokenizer

    src = gguf_source(converted["Q8_0"])
    assert src["gguf"]["file_type"] == "Q8_0" and src["sha256"] == sha256_file(gguf_files["Q8_0"])
    assert src["dtype"] == "bfloat16"
    cfg = json.loads((converted["Q8_0"] / "config.json").read_text())
    assert "quantization_config" not in cfg  # an ordinary folder: every backend and `quantize` load it
    original = AutoTokenizer.from_pretrained(str(REFERENCE))
    tok = AutoTokenizer.from_pretrained(str(converted["Q8_0"]))
    assert tok.eos_token == original.eos_token  # the GGUF's eos id, not transformers' bos-for-eos
    text = "Step 1: 12 * 7 = 84.\nThe answer is: 84\n"
    assert tok(text).input_ids == original(text, add_special_tokens=False).input_ids


def test_resolve_reuses_the_conversion_and_hashes_once(gguf_files, tmp_path, monkeypatch):
    import silverbullet.generation.gguf as g

    notes: list[str] = []
    first = resolve_gguf(gguf_files["F32"], cache_dir=tmp_path, log=notes.append)
    assert len(notes) == 1 and "converting reference-f32.gguf" in notes[0]
    calls = []
    monkeypatch.setattr(g, "convert_gguf", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(g.hashlib, "sha256", lambda: pytest.fail("hashed again"))
    assert resolve_gguf(gguf_files["F32"], cache_dir=tmp_path, log=notes.append) == first
    assert calls == [] and len(notes) == 1
    assert (Path(first) / SOURCE_FILE).is_file()
    assert resolve_gguf(str(REFERENCE)) == str(REFERENCE)  # not a GGUF source: unchanged


def test_folder_and_gguf_file_arguments(gguf_files, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(gguf_files["F32"], one / "m.gguf")
    assert gguf_file_in(one) == one / "m.gguf"
    shutil.copy(gguf_files["Q8_0"], one / "n.gguf")
    with pytest.raises(UserError, match=r"holds several GGUF files \(m.gguf, n.gguf\)"):
        gguf_file_in(one)
    assert gguf_file_in(one, "n.gguf") == one / "n.gguf"
    with pytest.raises(UserError, match="has no file x.gguf"):
        gguf_file_in(one, "x.gguf")
    with pytest.raises(UserError, match="does not exist"):
        gguf_file_in(tmp_path / "missing.gguf")
    assert gguf_file_in(REFERENCE) is None  # a saved model folder (config.json)


def test_cli_refuses_a_truncated_gguf_in_one_line(gguf_files, tmp_path, monkeypatch):
    monkeypatch.setenv("SILVERBULLET_MODELS", str(tmp_path / "models"))
    bad = _truncate(gguf_files["Q8_0"], tmp_path / "release-Q8_0.gguf", 50_000)
    code, out, err = run_main("diagnose", "--reference", bad, "--limit", "2", "--out", tmp_path / "run")
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "release-Q8_0.gguf: truncated GGUF file" in lines[0], err
    assert not (tmp_path / "models").exists()  # refused before any conversion
    missing = tmp_path / "missing.gguf"
    code, _, err = run_main("quantize", "--model", missing, "--method", "rtn", "--out", tmp_path / "q")
    assert code == 2 and "does not exist" in err


@pytest.mark.slow
def test_diagnose_takes_gguf_files_and_records_their_types(gguf_files, tmp_path, monkeypatch):
    """`diagnose --reference F32.gguf --quantized Q8_0.gguf` as a user types it: both converted once,
    the run made, summary.json naming each file's llama.cpp type and hash."""
    monkeypatch.setenv("SILVERBULLET_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("SILVERBULLET_CACHE", str(tmp_path / "gen.sqlite"))
    out = tmp_path / "run"
    args = ["diagnose", "--reference", gguf_files["F32"], "--quantized", gguf_files["Q8_0"], "--limit", "6"]
    code, stdout, err = run_main(*args, "--out", out, "--no-confirm")
    assert code in (0, None), err
    s = json.loads((out / "summary.json").read_text())
    assert s["models"]["reference"]["gguf"]["type"] == "ALL_F32"
    assert s["models"]["quantized"]["gguf"] == {
        "file": "reference-q8_0.gguf",
        "sha256": sha256_file(gguf_files["Q8_0"]),
        "type": "Q8_0",
    }
    assert s["n"] == 6 and s["accuracy"]["reference"] > 0.5  # the reference model's own skill survived
    assert len(list((tmp_path / "models").glob("gguf-*-bfloat16"))) == 2
