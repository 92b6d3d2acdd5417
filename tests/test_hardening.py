"""Interrupted and repeated runs: SIGKILL mid-run then resume equals an uninterrupted run; same
command, same seed, byte-identical outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from silverbullet.quantize import QuantizeConfig, quantize

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "data" / "reference-model")
FILES = ("generations/reference.jsonl", "generations/quantized.jsonl", "attribution.jsonl", "problems.jsonl")


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    out = tmp_path_factory.mktemp("hq") / "rtn-w2ch"
    return str(
        quantize(QuantizeConfig(model=MODEL, method="rtn", bits=2, group_size=0, out=str(out)), log=lambda m: None)
    )


def _cmd(quantized, out):
    return [
        sys.executable,
        "-m",
        "silverbullet.cli",
        "diagnose",
        "--reference",
        MODEL,
        "--quantized",
        quantized,
        "--limit",
        "16",
        "--batch-size",
        "4",
        "--no-cache",
        "--out",
        str(out),
    ]


def _outputs(run: Path) -> dict:
    """Every output row, less wall-clock fields (per-row `seconds`), plus the summary less timings."""
    res = {}
    for f in FILES:
        rows = [json.loads(x) for x in (run / f).read_text().splitlines()]
        res[f] = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
    s = json.loads((run / "summary.json").read_text())
    res["summary"] = {k: v for k, v in s.items() if k not in ("timings", "created", "run")}
    return res


@pytest.fixture(scope="module")
def clean_run(quantized, tmp_path_factory):
    out = tmp_path_factory.mktemp("clean") / "run"
    subprocess.run(_cmd(quantized, out), check=True, capture_output=True, timeout=600, cwd=ROOT)
    return out


def test_same_command_same_seed_is_byte_identical(quantized, clean_run, tmp_path):
    out = tmp_path / "again"
    subprocess.run(_cmd(quantized, out), check=True, capture_output=True, timeout=600, cwd=ROOT)
    assert _outputs(out) == _outputs(clean_run)


def test_sigkill_mid_generation_then_resume_equals_clean_run(quantized, clean_run, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(quantized, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    target = out / "generations" / "reference.jsonl"
    deadline = time.time() + 300
    killed_with = None
    while time.time() < deadline and proc.poll() is None:
        if target.exists():
            n = target.read_text().count("\n")
            if 0 < n < 16:
                os.kill(proc.pid, signal.SIGKILL)
                killed_with = n
                break
        time.sleep(0.05)
    proc.wait(timeout=60)
    assert killed_with is not None, "the run finished before it could be killed"
    assert not (out / "summary.json").exists()
    r = subprocess.run(_cmd(quantized, out), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    got = _outputs(out)
    ids = [r["problem_id"] for r in got["generations/reference.jsonl"]]
    assert len(ids) == len(set(ids)) == 16  # nothing lost, nothing duplicated
    assert got == _outputs(clean_run)


def test_torn_attribution_line_is_repaired_on_resume(quantized, clean_run, tmp_path):
    import shutil

    out = tmp_path / "torn"
    shutil.copytree(clean_run, out)
    att = (out / "attribution.jsonl").read_text().splitlines(keepends=True)
    (out / "attribution.jsonl").write_text("".join(att[: len(att) // 2]) + att[len(att) // 2][:25])
    (out / "summary.json").unlink()
    subprocess.run(_cmd(quantized, out), check=True, capture_output=True, timeout=600, cwd=ROOT)
    assert _outputs(out) == _outputs(clean_run)
