"""The on-disk cache: hits skip the model, survive a reopen, and never return half-written rows."""

from __future__ import annotations

import sqlite3

import pytest

from silverbullet.generation import CachedGenerator, GenerationCache, GenerationConfig, GenOutput, ScoreOutput


class CountingGenerator:
    """A fake backend that records what it was asked to generate."""

    tag = "counting"

    def __init__(self, fingerprint: str = "fp1") -> None:
        self.calls: list[list[str]] = []
        self._fp = fingerprint

    @property
    def fingerprint(self) -> str:
        return self._fp

    def generate(self, prompts, config=None):
        config = config or GenerationConfig()
        self.calls.append(list(prompts))
        return [
            GenOutput(
                text=f"echo {p}",
                n_tokens=3,
                margins=[1.0, 2.0, 3.0] if config.margins else None,
                token_ends=[1, 2, len(f"echo {p}")] if config.margins else None,
            )
            for p in prompts
        ]

    continue_from = generate

    def score(self, prompt, continuation):
        return ScoreOutput([1], [-0.1], [2.0], [len(continuation)])


def test_hit_avoids_regeneration_and_survives_reopen(tmp_path):
    path = tmp_path / "gen.sqlite"
    inner = CountingGenerator()
    cg = CachedGenerator(inner, path)
    cfg = GenerationConfig(max_new_tokens=10, batch_size=2)
    first = cg.generate(["a", "b", "c"], cfg)
    assert [o.text for o in first] == ["echo a", "echo b", "echo c"]
    assert sorted(p for call in inner.calls for p in call) == ["a", "b", "c"]
    assert not any(o.cached for o in first)

    again = cg.generate(["c", "a", "d"], cfg)
    assert [o.text for o in again] == ["echo c", "echo a", "echo d"]
    assert inner.calls[-1] == ["d"]
    assert [o.cached for o in again] == [True, True, False]
    cg.cache.close()

    inner2 = CountingGenerator()
    reopened = CachedGenerator(inner2, path)
    out = reopened.generate(["a", "b", "c", "d"], cfg)
    assert inner2.calls == []
    assert [o.text for o in out] == ["echo a", "echo b", "echo c", "echo d"]
    assert len(reopened.cache) == 4


def test_key_includes_model_and_settings(tmp_path):
    cache = GenerationCache(tmp_path / "c.sqlite")
    a, b = CountingGenerator("fpA"), CountingGenerator("fpB")
    CachedGenerator(a, cache).generate(["x"], GenerationConfig(max_new_tokens=5))
    CachedGenerator(b, cache).generate(["x"], GenerationConfig(max_new_tokens=5))
    assert b.calls == [["x"]]  # another model: a miss
    CachedGenerator(a, cache).generate(["x"], GenerationConfig(max_new_tokens=6))
    assert len(a.calls) == 2  # other settings: a miss
    CachedGenerator(a, cache).generate(["x"], GenerationConfig(max_new_tokens=5, batch_size=1))
    assert len(a.calls) == 2  # batch size does not change the output: a hit


def test_margins_requested_after_plain_run_regenerates(tmp_path):
    inner = CountingGenerator()
    cg = CachedGenerator(inner, tmp_path / "c.sqlite")
    cg.generate(["x"], GenerationConfig())
    out = cg.generate(["x"], GenerationConfig(margins=True))
    assert len(inner.calls) == 2 and out[0].margins == [1.0, 2.0, 3.0]
    plain = cg.generate(["x"], GenerationConfig())  # a margin row also serves plain requests
    assert len(inner.calls) == 2 and plain[0].margins is None and plain[0].token_ends is None


def test_duplicate_prompts_generated_once(tmp_path):
    inner = CountingGenerator()
    out = CachedGenerator(inner, tmp_path / "c.sqlite").generate(["x", "x", "y"], GenerationConfig())
    assert sorted(p for call in inner.calls for p in call) == ["x", "y"]
    assert [o.text for o in out] == ["echo x", "echo x", "echo y"]
    assert out[0] is not out[1]


def test_interrupted_run_keeps_finished_chunks(tmp_path):
    class Crashing(CountingGenerator):
        def generate(self, prompts, config=None):
            if len(self.calls) == 1:
                raise KeyboardInterrupt
            return super().generate(prompts, config)

    path = tmp_path / "c.sqlite"
    with pytest.raises(KeyboardInterrupt):
        CachedGenerator(Crashing(), path).generate(["a", "b", "c", "d"], GenerationConfig(batch_size=2))
    inner = CountingGenerator()
    CachedGenerator(inner, path).generate(["a", "b", "c", "d"], GenerationConfig(batch_size=2))
    assert len([p for call in inner.calls for p in call]) == 2  # the first chunk was kept


def test_corrupt_row_is_a_miss(tmp_path):
    path = tmp_path / "c.sqlite"
    inner = CountingGenerator()
    CachedGenerator(inner, path).generate(["x"], GenerationConfig())
    db = sqlite3.connect(path)
    db.execute("UPDATE generations SET output = '{not json'")
    db.commit()
    db.close()
    out = CachedGenerator(inner, path).generate(["x"], GenerationConfig())
    assert out[0].text == "echo x" and len(inner.calls) == 2


def test_score_passes_through(tmp_path):
    cg = CachedGenerator(CountingGenerator(), tmp_path / "c.sqlite")
    assert cg.score("p", "abc").token_ends == [3]
    assert cg.tag == "counting" and cg.fingerprint == "fp1"


def test_real_model_through_cache(tiny_model_dir, tmp_path):
    from silverbullet.generation import HFGenerator

    g = HFGenerator(tiny_model_dir, tag="tiny", device="cpu")
    cfg = GenerationConfig(max_new_tokens=12, margins=True)
    cg = CachedGenerator(g, tmp_path / "c.sqlite")
    first = cg.generate(["Question: 1\n", "Question: 22\n"], cfg)
    second = CachedGenerator(HFGenerator(tiny_model_dir, tag="tiny", device="cpu"), tmp_path / "c.sqlite")
    again = second.generate(["Question: 1\n", "Question: 22\n"], cfg)
    assert [(o.text, o.margins, o.token_ends) for o in again] == [
        (o.text, o.margins, o.token_ends) for o in first
    ]
    assert second.inner._model is None  # everything was cached: the model was never loaded


def test_cache_env_may_name_a_folder_and_a_bad_path_is_one_clear_error(tmp_path, monkeypatch):
    from silverbullet.errors import UserError
    from silverbullet.generation.cache import GenerationCache, default_cache_path

    monkeypatch.setenv("SILVERBULLET_CACHE", str(tmp_path))
    assert default_cache_path() == tmp_path / "generations.sqlite"
    GenerationCache(default_cache_path())  # opens (and creates) the file inside the folder
    assert (tmp_path / "generations.sqlite").is_file()
    monkeypatch.setenv("SILVERBULLET_CACHE", str(tmp_path / "new") + "/")
    assert default_cache_path() == tmp_path / "new" / "generations.sqlite"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(UserError, match="SILVERBULLET_CACHE"):
        GenerationCache(tmp_path / "afile" / "db.sqlite")  # its parent is a file
    with pytest.raises(UserError, match="cannot open"):
        GenerationCache(tmp_path)  # a folder passed as the file itself
