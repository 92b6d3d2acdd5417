"""A Generator over an OpenAI-compatible chat endpoint (vLLM's `vllm serve`, llama.cpp, TGI, a
hosted API).

Why our own few lines and not the `openai` package: one POST per prompt is all we need, and the
standard library keeps the dependency list short. Each prompt goes as one user message; replies are
cached by `CachedGenerator` like any backend's, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from silverbullet.errors import UserError
from silverbullet.generation.base import GenerationConfig, GenOutput, ScoreOutput

API_KEY_ENV = "OPENAI_API_KEY"  # sent as a bearer token when set


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def base_url(url: str) -> str:
    """`http://host:8000`, `.../v1` and `.../v1/` all mean the same API root (`.../v1`)."""
    u = url.rstrip("/")
    for tail in ("/chat/completions", "/completions"):
        if u.endswith(tail):
            u = u[: -len(tail)]
    return u if u.endswith("/v1") else u + "/v1"


def with_reasoning(message: dict, content: str) -> str:
    """A reasoning server's reply as the model wrote it: servers with a reasoning parser (vLLM's
    `--reasoning-parser`, DeepSeek's API) return the trace apart (`reasoning_content`, or `reasoning`);
    put it back in `<think>` tags before the response, unclosed when no response came (the model ran
    out of tokens thinking), so segmentation sees what a local model's text would show."""
    trace = message.get("reasoning_content") or message.get("reasoning")
    if not isinstance(trace, str) or not trace.strip():
        return content
    return f"<think>\n{trace}\n</think>\n\n{content}" if content.strip() else f"<think>\n{trace}"


class OpenAIChatGenerator:
    """Chat completions from an endpoint. `model=None` takes the first model the server lists."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        tag: str = "judge",
        timeout_s: float = 120.0,
        retries: int = 2,
        concurrency: int = 8,
        option: str = "--judge",
    ) -> None:
        self.url = base_url(url)
        self.tag = tag
        self.timeout_s = timeout_s
        self.retries = retries
        self.concurrency = max(1, concurrency)
        self.option = option
        self._model = model

    # -- HTTP --------------------------------------------------------------------------------------
    def _request(self, path: str, body: dict | None = None) -> dict:
        headers = {"Content-Type": "application/json"}
        if os.environ.get(API_KEY_ENV):
            headers["Authorization"] = f"Bearer {os.environ[API_KEY_ENV]}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, headers=headers)
        where = f"{self.option} {self.url}{path}"
        for attempt in range(self.retries + 1):
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    return json.loads(resp.read().decode("utf-8"))
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:200].replace("\n", " ")
                if e.code >= 500 and attempt < self.retries:
                    time.sleep(1.0 + attempt)
                    continue
                raise UserError(f"{where}: HTTP {e.code} {e.reason}: {detail}") from None
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                if attempt < self.retries:
                    time.sleep(1.0 + attempt)
                    continue
                reason = getattr(e, "reason", e)
                raise UserError(
                    f"{where}: cannot reach the server ({reason}); is it running at that address?"
                ) from None
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise UserError(f"{where}: the reply is not JSON; is this an OpenAI-compatible API?") from None
        raise AssertionError("unreachable")

    @property
    def model(self) -> str:
        if self._model is None:
            listed = self._request("/models").get("data") or []
            if not listed or not isinstance(listed[0], dict) or "id" not in listed[0]:
                raise UserError(f"{self.option} {self.url}/models lists no model; name one with --judge-model")
            self._model = str(listed[0]["id"])
        return self._model

    @property
    def fingerprint(self) -> str:
        """The endpoint and model name: the server's weights are not visible from here, so a model
        swapped behind the same name reuses cached replies (clear the cache or rename it)."""
        return hashlib.sha256(f"openai-chat|{self.url}|{self.model}".encode()).hexdigest()[:16]

    # -- Generator ---------------------------------------------------------------------------------
    def _one(self, prompt: str, config: GenerationConfig) -> GenOutput:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
        }
        if not config.greedy:
            body.update(top_p=config.top_p, seed=config.seed)
        t0 = time.perf_counter()
        reply = self._request("/chat/completions", body)
        try:
            message = reply["choices"][0]["message"]
            text = message["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise UserError(
                f"{self.option} {self.url}/chat/completions: the reply has no choices[0].message.content"
            ) from None
        text = with_reasoning(message, str(text))
        n = (reply.get("usage") or {}).get("completion_tokens") or 0
        return GenOutput(text=str(text), n_tokens=int(n), seconds=time.perf_counter() - t0)

    def generate(self, prompts: list[str], config: GenerationConfig | None = None) -> list[GenOutput]:
        config = config or GenerationConfig()
        _ = self.model  # resolve once, before the threads
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(prompts)))) as pool:
            return list(pool.map(lambda p: self._one(p, config), prompts))

    continue_from = generate

    def score(self, prompt: str, continuation: str) -> ScoreOutput:
        raise UserError(f"{self.option}: an endpoint judge cannot score text (teacher forcing needs local weights)")
