"""Generation backends behind one protocol: HF transformers (default), plus an on-disk cache.

Heavy imports (torch, transformers) happen only when a model is actually loaded.
"""

from silverbullet.generation.base import GenerationConfig, Generator, GenOutput, ScoreOutput
from silverbullet.generation.cache import CachedGenerator, GenerationCache, default_cache_path
from silverbullet.generation.hf import HFGenerator
from silverbullet.generation.loading import load_causal_lm

__all__ = [
    "CachedGenerator",
    "GenOutput",
    "GenerationCache",
    "GenerationConfig",
    "Generator",
    "HFGenerator",
    "ScoreOutput",
    "default_cache_path",
    "load_causal_lm",
]
