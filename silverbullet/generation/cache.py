"""On-disk generation cache, so a re-run (or a resumed, killed run) never regenerates a solution.

SQLite in WAL mode: every chunk of new outputs is committed as one transaction, so a killed process
loses at most the chunk in flight and never leaves a half-written row. Keys hash (model fingerprint,
prompt, the settings that change the output, cache format version).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path

from silverbullet.errors import UserError
from silverbullet.generation.base import GenerationConfig, Generator, GenOutput, ScoreOutput, progress

# Bump when stopping/cutting logic changes what a generation looks like, to invalidate old rows.
CACHE_FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    settings TEXT NOT NULL,
    prompt TEXT NOT NULL,
    output TEXT NOT NULL,
    has_margins INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


def default_cache_path() -> Path:
    """$SILVERBULLET_CACHE (a file, or a folder to hold generations.sqlite), else
    ~/.cache/silverbullet/generations.sqlite."""
    env = os.environ.get("SILVERBULLET_CACHE")
    if env:
        path = Path(env).expanduser()
        return path / "generations.sqlite" if path.is_dir() or env.endswith(("/", os.sep)) else path
    return Path.home() / ".cache" / "silverbullet" / "generations.sqlite"


def cache_key(fingerprint: str, prompt: str, config: GenerationConfig) -> str:
    payload = json.dumps([CACHE_FORMAT, fingerprint, config.cache_settings(), prompt], sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


class GenerationCache:
    """A key -> GenOutput store in one SQLite file (safe for several readers and writers)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
        except (OSError, sqlite3.Error) as e:
            raise UserError(
                f"generation cache {self.path}: cannot open it as an SQLite file ({e}); point "
                "SILVERBULLET_CACHE at a writable file or folder (diagnose: or --no-cache)"
            ) from None
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.commit()

    def get_many(self, keys: list[str], need_margins: bool) -> dict[str, GenOutput]:
        """Cached outputs for those keys that have one (with margins, when they are needed)."""
        found: dict[str, GenOutput] = {}
        uniq = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(uniq), 500):
                part = uniq[i : i + 500]
                marks = ",".join("?" * len(part))
                q = f"SELECT key, output, has_margins FROM generations WHERE key IN ({marks})"
                for key, output, has_margins in self._db.execute(q, part):
                    if need_margins and not has_margins:
                        continue
                    try:
                        found[key] = GenOutput(**json.loads(output))
                    except (json.JSONDecodeError, TypeError):
                        continue  # an unreadable row is a miss; it gets regenerated and replaced
        for out in found.values():
            out.cached = True
        return found

    def put_many(self, rows: list[tuple[str, str, str, GenOutput]], settings: dict) -> None:
        """Store (key, fingerprint, prompt, output) rows in one transaction."""
        now = time.time()
        s = json.dumps(settings, sort_keys=True)
        data = []
        for key, fp, prompt, out in rows:
            d = {k: v for k, v in vars(out).items() if k != "cached"}
            data.append((key, fp, s, prompt, json.dumps(d), int(out.margins is not None), now))
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO generations VALUES (?, ?, ?, ?, ?, ?, ?)", data)

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM generations").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedGenerator:
    """Wraps a Generator: prompts already in the cache are answered from it, the misses are sent to
    the inner generator in chunks (longest prompts first, so batches hold similar lengths) and stored as
    each chunk finishes. Margins are dropped from hits when not asked for."""

    def __init__(
        self,
        inner: Generator,
        cache: GenerationCache | str | os.PathLike | None = None,
        chunk_batches: int = 1,
    ) -> None:
        self.inner = inner
        self.cache = (
            cache
            if isinstance(cache, GenerationCache)
            else GenerationCache(cache if cache is not None else default_cache_path())
        )
        self.chunk_batches = chunk_batches
        self.tag = inner.tag
        self.hits = 0
        self.misses = 0

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def generate(self, prompts: list[str], config: GenerationConfig | None = None) -> list[GenOutput]:
        config = config or GenerationConfig()
        fp = self.fingerprint
        keys = [cache_key(fp, p, config) for p in prompts]
        found = self.cache.get_many(keys, need_margins=config.margins)
        todo = list(dict.fromkeys(k for k in keys if k not in found))  # dedupe repeated prompts
        self.hits += len(prompts) - sum(1 for k in keys if k not in found)
        self.misses += len(todo)
        if todo:
            prompt_of = dict(zip(keys, prompts, strict=True))
            todo.sort(key=lambda k: -len(prompt_of[k]))
            step = config.batch_size * self.chunk_batches
            inner_cfg = config.replace(progress=False)
            chunks = [todo[i : i + step] for i in range(0, len(todo), step)]
            for chunk in progress(chunks, f"generating ({self.tag})", config.progress):
                outs = self.inner.generate([prompt_of[k] for k in chunk], inner_cfg)
                self.cache.put_many(
                    [(k, fp, prompt_of[k], o) for k, o in zip(chunk, outs, strict=True)],
                    config.cache_settings(),
                )
                for k, o in zip(chunk, outs, strict=True):
                    found[k] = o
        results = []
        for k in keys:
            o = found[k]
            if not config.margins and o.margins is not None:
                o = GenOutput(text=o.text, n_tokens=o.n_tokens, seconds=o.seconds, cached=o.cached)
            else:
                o = GenOutput(**vars(o))  # a copy: repeated prompts must not share one object
            results.append(o)
        return results

    continue_from = generate

    def score(self, prompt: str, continuation: str) -> ScoreOutput:
        return self.inner.score(prompt, continuation)

    def __getattr__(self, name: str):  # score_batch, model, tokenizer, ... of the inner generator
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)
