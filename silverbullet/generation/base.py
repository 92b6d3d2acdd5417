"""What every generation backend offers: configs, outputs and the `Generator` protocol.

Backends (HF transformers, vLLM, the cache wrapper) all speak these plain records, so the rest of
the pipeline never knows which one produced a solution.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass
class GenerationConfig:
    """Decoding settings. Greedy (temperature 0) by default so runs are reproducible."""

    max_new_tokens: int = 320
    batch_size: int = 64
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0  # only used when sampling
    seed: int = 0  # only matters when sampling
    margins: bool = False  # return per-token top-1 minus top-2 log-prob margins and token ends
    progress: bool = False  # show a progress bar over batches
    # HF backend on CUDA: decode with a static KV cache and a torch.compile'd (CUDA-graph) forward
    # (docs/formats.md, "Scale on one GPU"). Ignored, with one line, elsewhere.
    compile: bool = False

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if self.batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def cache_settings(self) -> dict:
        """The settings that change what is generated (a cache-key part). Batch size, margins, the
        progress bar and `compile` do not (compiled kernels, like another batch size's padding, can
        move a float's last bits: docs/formats.md gives the identity measured on the reference model);
        the seed and top_p only matter when sampling."""
        out: dict = {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature}
        if not self.greedy:
            out.update(top_p=self.top_p, seed=self.seed)
        return out

    def replace(self, **changes) -> GenerationConfig:
        return dataclasses.replace(self, **changes)


@dataclass
class GenOutput:
    """One completion (without the prompt), cut after its answer line."""

    text: str
    n_tokens: int
    margins: list[float] | None = None  # per generated token: top-1 minus top-2 log-prob
    token_ends: list[int] | None = None  # char offset in `text` where each token ends (aligned)
    seconds: float = 0.0  # this completion's share of its batch's wall time
    cached: bool = False  # served from the on-disk cache


@dataclass
class ScoreOutput:
    """A teacher-forced continuation: how sure the model is of each token it is forced to read."""

    token_ids: list[int]
    logprobs: list[float]  # log p(token | prefix) of each continuation token
    margins: list[float]  # top-1 minus top-2 log-prob of the model's distribution at each token
    token_ends: list[int]  # char offset in the continuation where each token ends
    # log p of the model's own top-1 token at each position (None where a backend does not report it):
    # with `logprobs`, how far the forced token falls below what the model would have written
    top_logprobs: list[float] | None = None
    # the model's hidden state after reading each continuation token (float32, len x hidden), from
    # the layer `score_batch(hidden_layer=...)` asked for; None unless asked (attribution/reader.py)
    hidden: Any = None


@runtime_checkable
class Generator(Protocol):
    """A model that writes completions. `fingerprint` is a stable hash of everything that changes
    its outputs (weights, config, adapter, dtype) and keys the on-disk cache."""

    tag: str

    @property
    def fingerprint(self) -> str: ...

    def generate(self, prompts: list[str], config: GenerationConfig | None = None) -> list[GenOutput]: ...

    def continue_from(
        self, prompts: list[str], config: GenerationConfig | None = None
    ) -> list[GenOutput]: ...

    def score(self, prompt: str, continuation: str) -> ScoreOutput: ...


def progress(items: list, description: str, show: bool) -> Iterator:
    """Iterate with a transient rich progress bar (stderr) when asked and there are several items."""
    if not show or len(items) < 2:
        yield from items
        return
    from rich.progress import track

    yield from track(items, description=description, transient=True)


def close_generator(gen: Generator) -> None:
    """Stop a backend's engine now (a vLLM engine holds GPU memory and, on CPU, busy-polls); a
    wrapper (cache, fallback) is closed through what it wraps."""
    inner = getattr(gen, "inner", gen)
    close = getattr(inner, "close", None)
    if callable(close):
        close()
