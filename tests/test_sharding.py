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


def test_workers_on_the_cpu_share_its_cores(tmp_path, monkeypatch):
    """CPU workers split the cores (OMP_NUM_THREADS, which set_cpu_threads honours): with all of them
    each, their threads outnumber the cores and the sharded run was about twice as slow on 2 cores.
    A user's own OMP_NUM_THREADS is left as it is."""
    import subprocess

    from silverbullet import sharding
    from silverbullet.generation.base import GenerationConfig
    from silverbullet.generation.hf import cpu_cores, set_cpu_threads
    from silverbullet.records import Problem

    envs: list[dict] = []

    class Worker:  # writes its share as finished rows, as a worker that ran would
        def __init__(self, cmd, env, **kw):
            envs.append(env)
            tasks, part = cmd[cmd.index("--tasks") + 1], cmd[cmd.index("--out") + 1]
            rows = [json.loads(x) for x in Path(tasks).read_text().splitlines()]
            Path(part).write_text("".join(json.dumps({"problem_id": r["id"], "text": "t"}) + "\n" for r in rows))
            self.returncode = 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Worker)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    problems = [Problem(id=f"p{i}", question=f"q{i}", answer="1") for i in range(4)]

    def run(name, devices):
        envs.clear()
        gens = sharding.generate_sharded(MODEL, "reference", problems, str, GenerationConfig(), tmp_path / name,
                                         devices)  # fmt: skip
        assert [g.problem_id for g in gens] == ["p0", "p1", "p2", "p3"]
        return [e.get("OMP_NUM_THREADS") for e in envs]

    assert run("two.jsonl", ["cpu", "cpu"]) == [str(max(1, cpu_cores() // 2))] * 2
    assert run("one.jsonl", ["cpu"]) == [None]  # alone, a worker takes every core
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert run("own.jsonl", ["cpu", "cpu"]) == ["3", "3"]
    import torch

    before = torch.get_num_threads()
    try:
        assert set_cpu_threads() == 3 and torch.get_num_threads() == 3
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert set_cpu_threads() == cpu_cores()
    finally:
        torch.set_num_threads(before)
