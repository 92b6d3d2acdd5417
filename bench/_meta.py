"""What every benchmark records with its figures: hardware, commit, command, time, load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cpu_facts() -> dict:
    """CPU model and the vector extensions that change CPU timings (AVX2 vs AVX-512 doubled some)."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    vec = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    return {"model": model, "avx512": any(f.startswith("avx512") for f in flags), "vector_flags": vec}


def run_meta() -> dict:
    try:
        git = dict(capture_output=True, text=True, cwd=ROOT)
        commit = subprocess.run(["git", "rev-parse", "HEAD"], **git).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], **git).stdout.strip())
    except OSError:
        commit, dirty = "unknown", None
    if os.environ.get("BENCH_COMMIT"):  # a device machine's copy of the tree has no .git
        commit, dirty = os.environ["BENCH_COMMIT"], None
    try:
        import torch

        torch_v = torch.__version__
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    except ImportError:
        torch_v, gpu = None, None
    return {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "commit": commit,
        "dirty": dirty,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "hardware": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "cpu": cpu_facts(),
            "gpu": gpu,
            "loadavg_at_start": os.getloadavg(),
        },
        "python": platform.python_version(),
        "torch": torch_v,
    }
