"""The vLLM backend: the same `Generator` protocol as `HFGenerator`, served by vLLM's engine.

Why: vLLM's continuous batching and paged KV cache make large diagnose runs (thousands of problems,
big models, several GPUs) practical. Behaviour matches `hf.py`, so records do not depend on the
backend:

- prompts are tokenized by the model's own HF tokenizer (special tokens added as in `hf.py`) and
  sent as token ids, so both backends read the very same ids;
- decoding stops on eos and right after the first complete answer line ("The answer is: ...\\n"):
  a vLLM logits processor (`AnswerLineStop`, enabled per request) forces eos once the row has
  written one, and the text is cut with `hf.cut_after_answer`;
- margins are top-1 minus top-2 log-prob per generated token from `SamplingParams(logprobs=2)`
  (vLLM's default `raw_logprobs`: the model's distribution before any sampling transform);
- `score()` reads teacher-forced margins from `prompt_logprobs`.

Parallelism is vLLM's own: `tensor_parallel_size`, `pipeline_parallel_size`,
`distributed_executor_backend="ray"` for multi-node, and data parallel as vLLM's offline example
does it (one engine process per rank with `VLLM_DP_*` set, each given a contiguous shard).

`vllm` is imported only when an engine starts; without it, constructing `VLLMGenerator` raises a
`UserError` that says how to install it. Scripts that build one need an
`if __name__ == "__main__":` guard (vLLM spawns worker processes).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError
from silverbullet.generation.base import GenerationConfig, GenOutput, ScoreOutput
from silverbullet.generation.hf import (
    add_special_tokens_for,
    answer_line_end,
    finish_output,
    stop_token_ids,
    token_ends,
)
from silverbullet.generation.loading import (
    fingerprint_model_source,
    is_compressed_tensors,
    is_local,
    load_tokenizer,
    preflight,
    resolve_device,
)
from silverbullet.segmentation import open_thinking_tag

INSTALL_HINT = (
    "the vLLM backend needs vllm: on a CUDA machine `pip install 'silverbullet[vllm]'`; on CPU build "
    "the separate environment with `make vllm-env` (scripts/setup-vllm-env.sh) and run from .venv-vllm"
)
_STOP_KEY = "silverbullet_answer_stop"  # SamplingParams.extra_args key that enables AnswerLineStop
_OPEN_KEY = "silverbullet_open_thinking"  # the trace tag the prompts left open (answer lines wait for its close)
_PROCESSOR_FQCN = "silverbullet.generation.vllm:AnswerLineStop"
_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # ranks vLLM accepts for max_lora_rank


@dataclass
class VLLMOptions:
    """Engine settings passed through to `vllm.LLM` (vLLM's own names). `extra` takes any other
    `vllm.LLM` keyword unchanged."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1  # > 1: one engine process per rank, prompts sharded contiguously
    distributed_executor_backend: str | None = None  # "ray" for multi-node, "mp" on one host
    gpu_memory_utilization: float | None = None  # None: 0.9 on GPU, 0.3 on CPU
    cpu_kv_cache_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE (whole GiB; CPU only) unless already set
    max_model_len: int | None = None
    # None: eager on CPU, compiled on GPU. On 2 CPU cores compiling the reference model costs ~31 s of
    # engine start (69 s vs 39 s) and saves ~3 s per 100 problems, so it pays only past ~1,000.
    enforce_eager: bool | None = None
    max_lora_rank: int | None = None  # None: the adapter's rank, rounded up to one vLLM accepts
    seed: int = 0
    quiet: bool = True  # VLLM_LOGGING_LEVEL=WARNING unless already set
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be >= 1")


def _require_vllm() -> None:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise UserError(INSTALL_HINT)


def _lora_rank(adapter: Path) -> int:
    try:
        r = int(json.loads((adapter / "adapter_config.json").read_text()).get("r", 8))
    except (OSError, ValueError, TypeError):
        raise UserError(f"adapter {adapter} has no readable adapter_config.json (expected a PEFT adapter)") from None
    return next((x for x in _LORA_RANKS if x >= r), r)


# -- the answer-line stop, as a vLLM logits processor ----------------------------------------------
_STOP_CLASS: Any = None


def _answer_stop_class() -> Any:
    """Build `AnswerLineStop` on first use, so importing this module never imports vllm. vLLM loads
    it by its qualified name in each engine process (module `__getattr__` below)."""
    global _STOP_CLASS
    if _STOP_CLASS is not None:
        return _STOP_CLASS
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class AnswerLineStop(AdapterLogitsProcessor):
        """Forces eos on a row once its output holds a complete answer line. Only rows whose newest
        token has a newline are decoded, so the check costs one decode per line, not per token.
        Enabled per request by `extra_args[silverbullet_answer_stop] = eos id`."""

        def __init__(self, vllm_config: Any, device: Any, is_pin_memory: bool) -> None:
            super().__init__(vllm_config, device, is_pin_memory)
            from transformers import AutoTokenizer

            mc = vllm_config.model_config
            self.tokenizer = AutoTokenizer.from_pretrained(mc.tokenizer, trust_remote_code=mc.trust_remote_code)
            texts = self.tokenizer.batch_decode(
                [[i] for i in range(len(self.tokenizer))],
                skip_special_tokens=False,
                clean_up_tokenization_spaces=False,
            )
            self.newline_ids = frozenset(i for i, t in enumerate(texts) if "\n" in t)

        def is_argmax_invariant(self) -> bool:
            return False  # it changes the argmax (to eos), so greedy decoding must apply it

        def new_req_logits_processor(self, params: Any) -> Any:
            eos = (params.extra_args or {}).get(_STOP_KEY)
            if eos is None:
                return None
            open_tag = (params.extra_args or {}).get(_OPEN_KEY, "")
            tok, newlines = self.tokenizer, self.newline_ids

            def stop(output_ids: list[int], logits: Any) -> Any:
                if output_ids and output_ids[-1] in newlines:
                    text = tok.decode(output_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
                    if answer_line_end(text, open_tag) is not None:
                        logits = logits.clone().fill_(-math.inf)
                        logits[eos] = 0.0
                return logits

            return stop

    AnswerLineStop.__module__ = __name__
    AnswerLineStop.__qualname__ = "AnswerLineStop"
    _STOP_CLASS = AnswerLineStop
    return AnswerLineStop


def __getattr__(name: str) -> Any:  # PEP 562: `AnswerLineStop` is built lazily
    if name == "AnswerLineStop":
        return _answer_stop_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- one engine (in this process) ------------------------------------------------------------------
def _top2_margin(entry: dict) -> float:
    """top-1 minus top-2 log-prob from one position's logprobs dict (it may also hold the sampled
    or forced token at a lower rank)."""
    by_rank = {lp.rank: lp.logprob for lp in entry.values()}
    if 1 not in by_rank or 2 not in by_rank:  # a one-token vocabulary, or ties reported oddly
        vals = sorted((lp.logprob for lp in entry.values()), reverse=True)
        return float(vals[0] - vals[1]) if len(vals) > 1 else math.inf
    return float(by_rank[1] - by_rank[2])


class _Engine:
    """A `vllm.LLM` that takes and returns plain token-id data (so it can also live in a data-parallel
    worker process and answer over a pipe)."""

    def __init__(self, llm_kwargs: dict, lora: tuple[str, str] | None) -> None:
        from vllm import LLM

        self.llm = LLM(**llm_kwargs)
        self.lora = None
        if lora is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest(lora[0], 1, lora[1])

    def generate(self, prompt_ids: list[list[int]], sp: dict, margins: bool, progress: bool) -> list[tuple]:
        from vllm import SamplingParams

        outs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids],
            SamplingParams(**sp),
            use_tqdm=progress,
            lora_request=self.lora,
        )
        rows = []
        for o in outs:
            c = o.outputs[0]
            m = [_top2_margin(e) for e in c.logprobs] if margins and c.logprobs is not None else None
            rows.append((list(c.token_ids), m))
        return rows

    def close(self) -> None:
        """Stop the engine core process now (on CPU its busy loop would compete with other work)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        self.llm = None  # an in-process engine's KV cache is freed with it

    def prompt_logprobs(self, seqs: list[list[int]]) -> list[list[tuple[float, float]]]:
        """(log p(token), top-1 minus top-2) for every token after the first of each sequence."""
        from vllm import SamplingParams

        sp = SamplingParams(temperature=0.0, max_tokens=1, prompt_logprobs=2, detokenize=False)
        outs = self.llm.generate([{"prompt_token_ids": s} for s in seqs], sp, use_tqdm=False, lora_request=self.lora)
        res = []
        for s, o in zip(seqs, outs, strict=True):
            plp = o.prompt_logprobs or []
            res.append([(float(plp[i][s[i]].logprob), _top2_margin(plp[i])) for i in range(1, len(s))])
        return res


def _shard(n: int, size: int, rank: int) -> tuple[int, int]:
    """Contiguous [start, end) of `n` items for `rank` of `size`, as vLLM's offline DP example."""
    floor, rem = divmod(n, size)
    start = rank * floor + min(rank, rem)
    return start, start + floor + (1 if rank < rem else 0)


def _dp_worker(rank: int, size: int, master: tuple[str, int], llm_kwargs: dict, lora: Any, conn: Any) -> None:
    """One data-parallel rank: vLLM's own DP variables, then serve calls from the parent."""
    os.environ.update(
        VLLM_DP_RANK=str(rank),
        VLLM_DP_RANK_LOCAL=str(rank),
        VLLM_DP_SIZE=str(size),
        VLLM_DP_MASTER_IP=master[0],
        VLLM_DP_MASTER_PORT=str(master[1]),
    )
    try:
        engine = _Engine(llm_kwargs, lora)
        conn.send(("ready", None))
    except Exception as e:  # noqa: BLE001 - reported to the parent as one line
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            engine.close()
            return
        method, args = msg
        try:
            conn.send(("ok", getattr(engine, method)(*args)))
        except Exception as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"))


class _DataParallelEngine:
    """`data_parallel_size` engine processes (vLLM's offline data-parallel recipe); each call is split
    into contiguous shards, one per rank, and the results joined in order. A rank with no items gets
    one placeholder item, since DP ranks step together."""

    def __init__(self, size: int, llm_kwargs: dict, lora: Any) -> None:
        import multiprocessing as mp

        from vllm.utils.network_utils import get_open_port

        ctx = mp.get_context("spawn")
        master = ("127.0.0.1", get_open_port())
        self.size = size
        self.conns, self.procs = [], []
        for rank in range(size):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_dp_worker, args=(rank, size, master, llm_kwargs, lora, child), daemon=True)
            p.start()
            self.conns.append(parent)
            self.procs.append(p)
        for c in self.conns:
            status, err = c.recv()
            if status != "ready":
                self.close()
                raise RuntimeError(f"vLLM data-parallel rank failed to start: {err}")

    def _call(self, method: str, items: list, *rest: Any) -> list:
        spans = [_shard(len(items), self.size, r) for r in range(self.size)]
        for c, (a, b) in zip(self.conns, spans, strict=True):
            c.send((method, (items[a:b] or items[:1], *rest)))
        out: list = []
        for c, (a, b) in zip(self.conns, spans, strict=True):
            status, res = c.recv()
            if status != "ok":
                raise RuntimeError(f"vLLM data-parallel rank failed: {res}")
            out.extend(res[: b - a])
        return out

    def generate(self, prompt_ids: list[list[int]], sp: dict, margins: bool, progress: bool) -> list[tuple]:
        return self._call("generate", prompt_ids, sp, margins, progress)

    def prompt_logprobs(self, seqs: list[list[int]]) -> list:
        return self._call("prompt_logprobs", seqs)

    def close(self) -> None:
        for c in self.conns:  # each rank closes its engine as it exits
            try:
                c.send(None)
            except (OSError, BrokenPipeError):
                pass
        for p in self.procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()


# -- the generator ---------------------------------------------------------------------------------


def weight_only_quantized(path_or_id: str | os.PathLike) -> bool:
    """A local compressed-tensors checkpoint with int weights and unquantized activations (W4A16, W8A16)."""
    cfg_path = Path(path_or_id) / "config.json"
    try:
        q = json.loads(cfg_path.read_text()).get("quantization_config") or {}
    except (OSError, ValueError):
        return False
    groups = q.get("config_groups") or {}
    return q.get("quant_method") == "compressed-tensors" and any(
        (g.get("weights") or {}).get("type", "int") == "int" and not g.get("input_activations")
        for g in groups.values()
        if isinstance(g, dict)
    )


# Weight bits vLLM's weight-only int kernels take (compressed-tensors WNA16): 4 and 8 on GPUs; the
# CPU build's kernel takes 4-bit weights only (uint4, uint4b8 in vllm-cpu 0.32). 2- and 3-bit
# checkpoints are refused at engine start on either, after half a minute and a wall of tracebacks.
GPU_WEIGHT_BITS = (4, 8)
CPU_WEIGHT_BITS = (4,)


def weight_only_bits(path_or_id: str | os.PathLike) -> set[int]:
    """The weight bit widths of a local compressed-tensors weight-only checkpoint (empty otherwise)."""
    if not weight_only_quantized(path_or_id):
        return set()
    q = json.loads((Path(path_or_id) / "config.json").read_text()).get("quantization_config") or {}
    bits = set()
    for g in (q.get("config_groups") or {}).values():
        w = (g or {}).get("weights") or {} if isinstance(g, dict) else {}
        if isinstance(w.get("num_bits"), int) and not g.get("input_activations"):
            bits.add(w["num_bits"])
    return bits


def kernel_gap(path_or_id: str | os.PathLike, on_gpu: bool) -> str | None:
    """Why vLLM cannot run this checkpoint here, or None; read from config.json, no engine started.

    Two known refusals: weight bits that vLLM's weight-only kernels do not take (any machine), and
    vllm-cpu's weight-only int GEMM (`cpu_gemm_wna16`), which ships in the AVX-512 build only (0.32):
    on an AVX2-only x86 CPU a W4A16 engine dies deep in a torch.compile trace."""
    bits = weight_only_bits(path_or_id)
    if not bits:
        return None
    ok = GPU_WEIGHT_BITS if on_gpu else CPU_WEIGHT_BITS
    bad = sorted(b for b in bits if b not in ok)
    if bad:
        where = "GPU" if on_gpu else "CPU"
        takes = " or ".join(f"{b}-bit" for b in ok)
        return (
            f"vLLM's {where} kernels take {takes} weights, and {path_or_id} has {bad[0]}-bit weights; "
            "use --backend hf, or quantize to 4 bits (silverbullet quantize --bits 4)"
        )
    if on_gpu:
        return None
    import torch

    try:
        from vllm.platforms import current_platform
    except ImportError:  # no vLLM here: starting an engine says how to install it
        return None
    if not current_platform.is_cpu():  # a GPU build has its own W4A16 kernels
        return None
    current_platform.import_kernels()
    if hasattr(torch.ops._C, "cpu_gemm_wna16"):
        return None
    return (
        f"vLLM's CPU build has no weight-only int kernel on this processor (AVX-512 builds only), so it "
        f"cannot run {path_or_id}; use --backend hf, or vLLM on a GPU"
    )


def cpu_kernel_gap(path_or_id: str | os.PathLike) -> str | None:
    """`kernel_gap` for vLLM's CPU build."""
    return kernel_gap(path_or_id, on_gpu=False)


class VLLMGenerator:
    """Generator over a vLLM engine. The engine starts lazily (a fully cached run never starts it).

    `fingerprint` keys the generation cache: the HF backend's fingerprint of the same files, dtype
    and adapter (`model_fingerprint`, what reports show) plus the backend, because vLLM's kernels and
    batching can change a near-tie greedy choice, so outputs can differ from HF's."""

    backend = "vllm"

    def __init__(
        self,
        path_or_id: str | os.PathLike,
        *,
        tag: str = "model",
        dtype: str = "auto",
        adapter: str | os.PathLike | None = None,
        device: str = "auto",
        trust_remote_code: bool = False,
        options: VLLMOptions | None = None,
    ) -> None:
        _require_vllm()
        self.tag = tag
        self.path_or_id = str(Path(str(path_or_id)).expanduser()) if is_local(path_or_id) else str(path_or_id)
        self.adapter = Path(str(adapter)).expanduser() if adapter is not None else None
        self.device = resolve_device(device)
        self.trust_remote_code = trust_remote_code
        self.options = options or VLLMOptions()
        if is_local(self.path_or_id):
            preflight(self.path_or_id)
        if self.adapter is not None and not (self.adapter / "adapter_config.json").is_file():
            raise UserError(f"adapter {self.adapter} has no adapter_config.json (expected a PEFT adapter folder)")
        self.dtype = self._resolve_dtype(dtype)
        self._engine: Any = None
        self._tokenizer: Any = None
        self._fingerprint: str | None = None

    def _quantized(self) -> bool:
        cfg = Path(self.path_or_id) / "config.json"
        return cfg.is_file() and is_compressed_tensors(json.loads(cfg.read_text()))

    def _resolve_dtype(self, dtype: str) -> str:
        """'auto' -> as HF (bfloat16 on GPU; on CPU float32, or bfloat16 for a large model on a CPU with
        native bf16); but vLLM's CPU kernels for
        compressed-tensors weight-only checkpoints (W4A16 ...) run in bfloat16 only."""
        if dtype not in (None, "auto"):
            return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)
        if self.device.startswith("cuda") or self._quantized():
            return "bfloat16"
        from silverbullet.generation.loading import resolve_dtype

        return str(resolve_dtype("auto", "cpu", self.path_or_id)).removeprefix("torch.")

    # -- identity ----------------------------------------------------------------------------------
    @property
    def model_fingerprint(self) -> str:
        """Identical to `HFGenerator(path, dtype=..., adapter=...).fingerprint` for the same inputs."""
        return fingerprint_model_source(self.path_or_id, dtype=self.dtype, device=self.device, adapter=self.adapter)

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            payload = f"{self.model_fingerprint}\nbackend=vllm".encode()
            self._fingerprint = hashlib.sha256(payload).hexdigest()[:16]
        return self._fingerprint

    # -- lazy state --------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.path_or_id, trust_remote_code=self.trust_remote_code)
        return self._tokenizer

    def llm_kwargs(self) -> dict[str, Any]:
        """The `vllm.LLM` keywords this generator starts its engine with."""
        o = self.options
        kw: dict[str, Any] = {
            "model": self.path_or_id,
            "dtype": self.dtype,
            "seed": o.seed,
            "trust_remote_code": self.trust_remote_code,
            "tensor_parallel_size": o.tensor_parallel_size,
            "pipeline_parallel_size": o.pipeline_parallel_size,
            "gpu_memory_utilization": o.gpu_memory_utilization
            if o.gpu_memory_utilization is not None
            else (0.9 if self.device.startswith("cuda") else 0.3),
            "enforce_eager": o.enforce_eager if o.enforce_eager is not None else not self.device.startswith("cuda"),
            "generation_config": "vllm",  # neutral defaults, like hf.py (no generation_config.json penalties)
            "logits_processors": [_PROCESSOR_FQCN],
        }
        if o.distributed_executor_backend is not None:
            kw["distributed_executor_backend"] = o.distributed_executor_backend
        if o.max_model_len is not None:
            kw["max_model_len"] = o.max_model_len
        if self.adapter is not None:
            kw["enable_lora"] = True
            kw["max_loras"] = 1
            kw["max_lora_rank"] = o.max_lora_rank or _lora_rank(self.adapter)
        kw.update(o.extra)
        return kw

    @property
    def engine(self) -> Any:
        if self._engine is None:
            self._engine = self._start()
        return self._engine

    def _start(self) -> Any:
        o = self.options
        if o.quiet:
            os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if not self.device.startswith("cuda"):
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(int(o.cpu_kv_cache_gib)))
        gap = kernel_gap(self.path_or_id, on_gpu=self.device.startswith("cuda"))
        if gap:
            raise UserError(gap)
        kw = self.llm_kwargs()
        lora = ("adapter", str(self.adapter)) if self.adapter is not None else None
        try:
            if o.data_parallel_size > 1:
                return _DataParallelEngine(o.data_parallel_size, kw, lora)
            return _Engine(kw, lora)
        except (ValueError, NotImplementedError, RuntimeError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            if self.adapter is not None and "lora" in msg.lower():
                raise UserError(
                    f"vLLM could not serve LoRA adapter {self.adapter} on this platform ({msg}); "
                    "use --backend hf, which merges the adapter"
                ) from None
            raise UserError(f"vLLM could not start on {self.path_or_id}: {msg}") from None

    def close(self) -> None:
        """Stop the engine (its worker processes) now instead of at interpreter exit."""
        if self._engine is not None:
            self._engine.close()
        self._engine = None

    def _eos_ids(self) -> list[int]:
        gen_cfg = Path(self.path_or_id) / "generation_config.json"
        eos = json.loads(gen_cfg.read_text()).get("eos_token_id") if gen_cfg.is_file() else None
        return stop_token_ids(self.tokenizer, eos)

    def _prompt_ids(self, prompt: str) -> list[int]:
        tok = self.tokenizer
        ids = tok(prompt, add_special_tokens=add_special_tokens_for(tok, [prompt]))["input_ids"]
        if not ids and tok.bos_token_id is not None:
            ids = [tok.bos_token_id]
        if not ids:
            raise ValueError("vLLM needs a non-empty prompt")
        return ids

    # -- generation --------------------------------------------------------------------------------
    def sampling_params(self, config: GenerationConfig, open_tag: str = "") -> dict[str, Any]:
        """SamplingParams keywords for a GenerationConfig (neutral except what the config sets).
        Sampling seeds each request with `config.seed`, so a prompt's random draws do not depend on its
        batch (batch-dependent kernel numerics can still, rarely, change a sampled token). `open_tag`:
        the prompts end inside a reasoning trace (`segmentation.open_thinking_tag`)."""
        eos = self._eos_ids()
        sp: dict[str, Any] = {
            "max_tokens": config.max_new_tokens,
            "temperature": 0.0 if config.greedy else config.temperature,
            "top_p": 1.0 if config.greedy else config.top_p,
            "stop_token_ids": eos,
            "logprobs": 2 if config.margins else None,
            "skip_special_tokens": True,
            "detokenize": False,  # we decode ourselves, exactly as hf.py does
            "extra_args": ({_STOP_KEY: eos[0]} | ({_OPEN_KEY: open_tag} if open_tag else {})) if eos else None,
        }
        if not config.greedy:
            sp["seed"] = config.seed
        return sp

    def generate(self, prompts: list[str], config: GenerationConfig | None = None) -> list[GenOutput]:
        """Completions for `prompts`, in their order (vLLM schedules them; `batch_size` is unused)."""
        config = config or GenerationConfig()
        if not prompts:
            return []
        prompt_ids = [self._prompt_ids(p) for p in prompts]
        tags = [open_thinking_tag(p) for p in prompts]
        rows: list[Any] = [None] * len(prompts)
        t0 = time.perf_counter()
        for tag in dict.fromkeys(tags):  # one engine call per kind of prompt (almost always one)
            idx = [i for i, t in enumerate(tags) if t == tag]
            sp = self.sampling_params(config, tag)
            got = self.engine.generate([prompt_ids[i] for i in idx], sp, config.margins, config.progress)
            for i, row in zip(idx, got, strict=True):
                rows[i] = row
        seconds = (time.perf_counter() - t0) / len(prompts)
        stop_ids = set(self._eos_ids()) | {self.tokenizer.pad_token_id}
        outs = []
        for (ids, margins), tag in zip(rows, tags, strict=True):
            n = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
            outs.append(self._finish(ids[:n], margins[:n] if margins is not None else None, seconds, config, tag))
        return outs

    continue_from = generate

    def _finish(
        self, ids: list[int], margins: list[float] | None, seconds: float, config: GenerationConfig, open_tag: str = ""
    ) -> GenOutput:
        return finish_output(self.tokenizer, ids, margins, seconds, config, open_tag)

    # -- teacher forcing ---------------------------------------------------------------------------
    def score(self, prompt: str, continuation: str) -> ScoreOutput:
        """How the model rates `continuation` after `prompt`, token by token (teacher-forced)."""
        return self.score_batch([(prompt, continuation)])[0]

    def score_batch(self, pairs: list[tuple[str, str]], batch_size: int = 0) -> list[ScoreOutput]:
        """`score` for many pairs in one engine call (`batch_size` is accepted for HF parity)."""
        tok = self.tokenizer
        rows = []
        for prompt, cont in pairs:
            if not tok(prompt, add_special_tokens=True)["input_ids"] and tok.bos_token_id is None:
                raise ValueError("score() needs a non-empty prompt (the first token needs a context)")
            p_ids = self._prompt_ids(prompt)
            c_ids = tok(cont, add_special_tokens=False)["input_ids"] if cont else []
            rows.append((p_ids, c_ids, cont))
        todo = [i for i, (_, c, _) in enumerate(rows) if c]
        scored = dict(zip(todo, self.engine.prompt_logprobs([rows[i][0] + rows[i][1] for i in todo]), strict=True))
        outs = []
        for i, (p, c, cont) in enumerate(rows):
            if not c:
                outs.append(ScoreOutput([], [], [], []))
                continue
            tail = scored[i][len(p) - 1 :]
            outs.append(
                ScoreOutput(
                    token_ids=list(c),
                    logprobs=[lp for lp, _ in tail],
                    margins=[m for _, m in tail],
                    token_ends=token_ends(tok, c, limit=len(cont)),
                )
            )
        return outs

    def describe(self) -> dict[str, Any]:
        """What a run summary records about this backend."""
        return {"backend": "vllm", "dtype": self.dtype, "options": asdict(self.options)}


def create(
    path: str | os.PathLike,
    *,
    tag: str,
    adapter: str | os.PathLike | None = None,
    dtype: str = "auto",
    device: str = "auto",
    trust_remote_code: bool = False,
    **vllm_kwargs: Any,
) -> VLLMGenerator:
    """Factory for diagnose/repair: `vllm_kwargs` are `VLLMOptions` fields (tensor_parallel_size,
    pipeline_parallel_size, data_parallel_size, distributed_executor_backend, ...); any other key is
    passed to `vllm.LLM` unchanged."""
    names = set(VLLMOptions.__dataclass_fields__) - {"extra"}
    opts = {k: v for k, v in vllm_kwargs.items() if k in names}
    extra = {**vllm_kwargs.get("extra", {}), **{k: v for k, v in vllm_kwargs.items() if k not in names | {"extra"}}}
    return VLLMGenerator(
        path,
        tag=tag,
        dtype=dtype,
        adapter=adapter,
        device=device,
        trust_remote_code=trust_remote_code,
        options=VLLMOptions(**opts, extra=extra),
    )
