"""Start-up of silverbullet's own processes (the CLI and its workers), not of `import silverbullet`.

transformers imports scikit-learn whenever it is installed (lm-eval pulls it in, and many
environments have it), for one feature silverbullet never uses: the adaptive confidence threshold
of assisted decoding. On a 2-core machine that is 1.3 s of every command's start (4.9 s instead of
6.2 s to import torch and a transformers model class). `skip_sklearn_in_transformers` makes
transformers see scikit-learn as absent, in this process only, before transformers is imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from typing import Any

_TARGET = "transformers.utils.import_utils"


def _absent() -> bool:
    return False


class _NoSklearnForTransformers(importlib.abc.MetaPathFinder):
    """Finds transformers' import_utils as usual and, once it has run, answers its sklearn probe."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            if callable(getattr(module, "is_sklearn_available", None)):
                module.is_sklearn_available = _absent

        loader.exec_module = exec_module
        return spec


def skip_sklearn_in_transformers() -> None:
    """Install the finder (once). Without effect where transformers is already imported."""
    if _TARGET in sys.modules or any(isinstance(f, _NoSklearnForTransformers) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _NoSklearnForTransformers())
