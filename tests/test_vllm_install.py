"""Without vllm installed, asking for the vLLM backend is one readable line, not an ImportError.

Not marked `vllm`: it needs no vLLM (it hides it when present), so it runs in the main venv too.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from silverbullet.errors import UserError

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference-model"


def test_importing_the_module_does_not_import_vllm():
    code = "import sys, silverbullet.generation.vllm as m; assert 'vllm' not in sys.modules, 'eager import'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_missing_vllm_is_a_user_error(monkeypatch):
    from silverbullet.generation import vllm as mod

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    with pytest.raises(UserError) as e:
        mod.create(REFERENCE, tag="reference")
    msg = str(e.value)
    assert "\n" not in msg
    assert "pip install 'silverbullet[vllm]'" in msg and "make vllm-env" in msg
