"""Quiet by default: a user's terminal shows silverbullet's own stage lines and tables; library
progress bars, warnings and log lines go to RUN_DIR/log.txt, and `-v` shows them live."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from silverbullet.cli import _verbose_first

ROOT = Path(__file__).resolve().parents[1]
# What third-party output looks like: tqdm bars (transformers' weight loading, compressed-tensors'
# (de)compression), Python warnings, loguru lines.
NOISE = ("it/s]", "%|", "Warning", "warn(", "| INFO", "| WARNING")


def _diagnose(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "silverbullet.cli", *extra, "diagnose", "--limit", "4", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_verbose_flag_may_come_anywhere():
    assert _verbose_first(["sb", "diagnose", "--limit", "4", "-v"]) == ["sb", "-v", "diagnose", "--limit", "4"]
    assert _verbose_first(["sb", "report", "--verbose", "x"]) == ["sb", "--verbose", "report", "x"]
    assert _verbose_first(["sb", "diagnose", "--", "-v"]) == ["sb", "diagnose", "--", "-v"]


@pytest.mark.slow
def test_library_output_goes_to_the_log_unless_verbose(tmp_path):
    quiet = _diagnose(tmp_path / "quiet")
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    terminal = quiet.stdout + quiet.stderr
    for noise in NOISE:
        assert noise not in terminal, f"{noise!r} reached the terminal:\n{terminal}"
    assert "✓ generating (reference)" in quiet.stderr and "accuracy" in quiet.stdout
    log = (tmp_path / "quiet" / "log.txt").read_text()
    assert "Loading weights" in log and "it/s]" in log  # transformers' bar, kept for whoever needs it

    loud = _diagnose(tmp_path / "loud", "-v")  # generations come from the cache; loading still talks
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "Loading weights" in loud.stderr and "it/s]" in loud.stderr
    assert not (tmp_path / "loud" / "log.txt").exists()

    again = _diagnose(tmp_path / "quiet")  # the finished run again: its stage lines count what it has
    assert again.returncode == 0, again.stderr[-2000:]
    first = re.search(r"locating first faulty steps · (\d+) wrong solutions", quiet.stderr)
    second = re.search(r"locating first faulty steps · (\d+) wrong solutions( \(done earlier\))?", again.stderr)
    assert first and second and first.group(1) == second.group(1)
    assert bool(second.group(2)) == (int(first.group(1)) > 0)
