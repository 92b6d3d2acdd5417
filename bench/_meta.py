"""What every benchmark records with its figures: hardware, commit, command, time, load."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time


def run_meta() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
            ).stdout.strip()
        )
    except OSError:
        commit, dirty = "unknown", None
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
            "gpu": gpu,
            "loadavg_at_start": os.getloadavg(),
        },
        "python": platform.python_version(),
        "torch": torch_v,
    }
