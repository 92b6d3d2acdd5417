"""A reader model reading a solution: one teacher-forced pass per solution gives each step's surprise
and the reader's hidden state at the end of each step.

Why: the checker cannot see a step whose arithmetic is right and whose reasoning is wrong; a model
that reads English can. Where the reader, given the question (and a gold solution when there is
one), is confident of another token than the one written, the solution has left the path the reader
would take: `judge.step_gaps`, the full-precision judge of `diagnose` generalised to any reader model
and any solution file. The hidden state at each step's last token is what a step verifier
(verifier.py) classifies. Both come from the same pass and are cached on disk, keyed by the reader's
fingerprint, the layer and the text, so tuning a threshold or training a probe never runs the model
twice over the same solution.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from silverbullet.attribution.judge import DEFAULT_THRESHOLD, JudgeVerdict, first_over, step_gaps
from silverbullet.segmentation import segment

READER_FORMAT = 1  # bump when what a cached reading holds changes
GOLD_HEADER = "A correct solution, for reference:"


@dataclass
class Reading:
    """One solution as the reader read it, step by step (the steps `locate` counts)."""

    gaps: list[float]  # per step: largest gap between the reader's top-1 log-prob and the written token's
    states: np.ndarray  # (n_steps, hidden) float32: the reader's hidden state at each step's last token


def reader_context(question: str, gold: str | None = None) -> str:
    """What the reader is told before the solution: the question, and a gold solution when given."""
    text = question.strip()
    if gold:
        text += f"\n\n{GOLD_HEADER}\n{gold.strip()}"
    return text


def step_end_tokens(token_ends: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Index of the token holding each step's last character (the first token ending at or after the
    step's end); -1 for a step no token reaches (cannot happen for a whole text)."""
    out, i = [], 0
    for _, b in spans:
        while i < len(token_ends) and token_ends[i] < b:
            i += 1
        out.append(i if i < len(token_ends) else -1)
    return out


def surprise_verdict(reading: Reading, threshold: float = DEFAULT_THRESHOLD) -> JudgeVerdict:
    """The first step whose surprise is above `threshold` (nats): the reader's candidate first error."""
    return first_over(reading.gaps, threshold)


class Reader:
    """A local causal LM (a path, hub id or converted GGUF folder) reading solutions. `layer`: which
    hidden layer the step states come from (None: three quarters of the way up, where probes of
    correctness tend to read best; negative counts from the top)."""

    def __init__(
        self,
        spec: str,
        device: str = "auto",
        layer: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 8,
    ) -> None:
        from silverbullet.generation.hf import HFGenerator

        self.spec = spec
        self.gen = HFGenerator(spec, tag="reader", device=device)
        self._layer = layer
        self.batch_size = batch_size
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _default_cache_dir()

    @property
    def layer(self) -> int:
        if self._layer is None:
            n = int(getattr(self.gen.model.config, "num_hidden_layers", 4))
            self._layer = max(1, (3 * n) // 4)
        return self._layer

    def prompt(self, question: str, gold: str | None) -> str:
        """The reader's prompt: its chat template around the context when it has one (the solution
        then reads as the assistant's reply), else a plain `Question: ... Answer:` frame."""
        tok = self.gen.tokenizer
        ctx = reader_context(question, gold)
        if getattr(tok, "chat_template", None):
            messages = [{"role": "user", "content": ctx}]
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return f"Question: {ctx}\nAnswer: "

    def read(self, items: Sequence[tuple[str, str, str | None]], progress: Any = None) -> list[Reading]:
        """One reading per (question, candidate, gold or None), from the cache where it is there."""
        prompts = [self.prompt(q, g) for q, _, g in items]
        keys = [self._key(p, c) for p, (_, c, _) in zip(prompts, items, strict=True)]
        out: list[Reading | None] = [self._load(k) for k in keys]
        todo = [i for i, r in enumerate(out) if r is None]
        for start in range(0, len(todo), self.batch_size):
            part = todo[start : start + self.batch_size]
            scored = self.gen.score_batch(
                [(prompts[i], items[i][1]) for i in part], batch_size=self.batch_size, hidden_layer=self.layer
            )
            for i, s in zip(part, scored, strict=True):
                spans = segment(items[i][1]).spans
                gaps = step_gaps(s.logprobs, s.top_logprobs or [0.0] * len(s.logprobs), s.token_ends, spans)
                ends = step_end_tokens(s.token_ends, spans)
                width = s.hidden.shape[1] if s.hidden is not None and s.hidden.ndim == 2 else 0
                states = np.zeros((len(spans), width), dtype=np.float32)
                for k, t in enumerate(ends):
                    if t >= 0 and s.hidden is not None:
                        states[k] = s.hidden[t]
                out[i] = Reading([float(g) for g in gaps], states)
                self._save(keys[i], out[i])
            if progress is not None:
                progress(min(start + self.batch_size, len(todo)), len(todo))
        return [r for r in out if r is not None]

    def _key(self, prompt: str, candidate: str) -> str:
        payload = json.dumps([READER_FORMAT, self.gen.fingerprint, self.layer, prompt, candidate])
        return hashlib.sha256(payload.encode()).hexdigest()

    def _load(self, key: str) -> Reading | None:
        path = self.cache_dir / f"{key}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:  # arrays only: a cache file is never unpickled
                return Reading([float(x) for x in z["gaps"]], z["states"].astype(np.float32))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            return None  # a torn or foreign file: read the solution again

    def _save(self, key: str, reading: Reading) -> None:
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{key}.{os.getpid()}.npz"
        np.savez(tmp, gaps=np.asarray(reading.gaps, dtype=np.float32), states=reading.states)
        os.replace(tmp, self.cache_dir / f"{key}.npz")


def _default_cache_dir() -> Path:
    """Beside the generation cache: $SILVERBULLET_CACHE's folder (or the file's), else ~/.cache."""
    from silverbullet.generation.cache import default_cache_path

    return default_cache_path().parent / "reader"
