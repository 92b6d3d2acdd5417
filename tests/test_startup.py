"""Start-up of silverbullet's processes: transformers must not import scikit-learn (1.3 s a command)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

PROBE = """
import sys
{hook}
from transformers import LlamaForCausalLM  # noqa: F401
import transformers.generation.candidate_generator  # the module that imports sklearn.metrics
import transformers.utils as tu
print(int("sklearn" in sys.modules), int(tu.is_sklearn_available()))
"""


def _probe(hook: str) -> str:
    res = subprocess.run([sys.executable, "-c", PROBE.format(hook=hook)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-1500:]
    return res.stdout.split()[-2:]


@pytest.mark.skipif(importlib.util.find_spec("sklearn") is None, reason="scikit-learn not installed")
def test_commands_start_without_scikit_learn():
    hook = "from silverbullet.startup import skip_sklearn_in_transformers; skip_sklearn_in_transformers()"
    assert _probe(hook) == ["0", "0"]


def test_the_hook_is_installed_once_and_leaves_other_imports_alone():
    from silverbullet.startup import _NoSklearnForTransformers, skip_sklearn_in_transformers

    before = list(sys.meta_path)
    try:
        skip_sklearn_in_transformers()
        skip_sklearn_in_transformers()
        ours = [f for f in sys.meta_path if isinstance(f, _NoSklearnForTransformers)]
        assert len(ours) <= 1
        if ours:  # (not installed where transformers was imported already, as in this test process)
            assert ours[0].find_spec("json", None) is None
    finally:
        sys.meta_path[:] = before
