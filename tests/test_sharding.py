"""`diagnose --devices`: HF generation in one worker process per device, merged into one run; a dead
worker loses nothing finished, and the same command resumes without generating anything twice.
Two CPU processes stand in for two GPUs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from silverbullet.diagnose import DiagnoseConfig, demo_quantized_path, run_diagnose
from silverbullet.errors import UserError
from silverbullet.sharding import FAIL_AFTER_ENV

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "data" / "reference-model")

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _cfg(out: Path, **kw) -> DiagnoseConfig:
    return DiagnoseConfig(reference=MODEL, quantized=demo_quantized_path(MODEL), limit=4, out=str(out),
                          cache=False, confirm=False, progress=False, device="cpu", batch_size=1, **kw)  # fmt: skip


def test_sharded_run_equals_one_process_and_resumes_after_a_worker_dies(tmp_path, monkeypatch):
    one = run_diagnose(_cfg(tmp_path / "one"))
    run = tmp_path / "two"
    monkeypatch.setenv(FAIL_AFTER_ENV, "1:1")  # worker 1 dies after its first row
    with pytest.raises(UserError, match="worker 1 on cpu failed") as e:
        run_diagnose(_cfg(run, devices=["cpu", "cpu"]))
    assert "run the same command again" in str(e.value)
    kept = {r["problem_id"]: r for r in _rows(run / "generations" / "reference.jsonl")}
    assert 1 <= len(kept) < 4  # worker 0's share and worker 1's first rows: finished work is merged
    monkeypatch.delenv(FAIL_AFTER_ENV)
    two = run_diagnose(_cfg(run, devices=["cpu", "cpu"]))
    for tag in ("reference", "quantized"):
        a = {r["problem_id"]: r for r in _rows(tmp_path / "one" / "generations" / f"{tag}.jsonl")}
        b = _rows(run / "generations" / f"{tag}.jsonl")
        assert len(b) == len({r["problem_id"] for r in b}) == 4  # nothing twice
        assert all(r["text"] == a[r["problem_id"]]["text"] and r["prompt"] == a[r["problem_id"]]["prompt"] for r in b)
    again = {r["problem_id"]: r for r in _rows(run / "generations" / "reference.jsonl")}
    assert all(again[i]["seconds"] == r["seconds"] for i, r in kept.items())  # kept rows were not regenerated
    assert not (run / "generations" / "reference.parts").exists()
    assert two["accuracy"] == one["accuracy"] and two["flips"] == one["flips"]


def test_devices_need_the_hf_backend(tmp_path):
    with pytest.raises(UserError, match="--devices shards the HF backend"):
        run_diagnose(_cfg(tmp_path / "v", devices=["cpu", "cpu"], backend="vllm"))
