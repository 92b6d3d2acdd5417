"""Load a causal LM + tokenizer from a local directory (or a hub id), safely and with clear errors.

Safetensors only (pickled `.bin` weights can run code on load) and no remote code unless asked.
Checkpoints quantized by llm-compressor (compressed-tensors format) load through transformers;
for training they are dequantized to dense weights that still lie on the quantized grid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError
from silverbullet.prompting.formats import PromptRenderer, PromptSettings, make_renderer

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
# Files whose bytes change what a model generates (weights are handled separately).
_FINGERPRINT_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "adapter_config.json",
)
# quant_method in a checkpoint's config.json -> (modules transformers needs for it, pip extra that installs them).
# transformers knows more methods than these; the ones listed are those whose library we can name.
QUANT_LIBRARIES = {
    "compressed-tensors": (("compressed_tensors",), "quantize"),
    "bitsandbytes": (("bitsandbytes",), "bnb"),
    "gptq": (("gptqmodel", "optimum"), "gptq"),  # transformers' GPTQ quantizer needs both
    "awq": (("gptqmodel",), "gptq"),  # transformers 5 runs AWQ checkpoints through GPTQModel
    "auto-round": (("auto_round",), "autoround"),
    "torchao": (("torchao",), "torchao"),
}
# Formats whose weights stay packed when loaded: an adapter is served on top of them, not merged
# (PEFT cannot merge into GPTQ/AWQ/AutoRound layers, and merging into NF4 would re-round the update).
UNMERGED_FORMATS = ("bitsandbytes", "gptq", "awq", "auto-round")
LOAD_IN = ("4bit", "8bit")  # bitsandbytes quantization at load time (NF4 / LLM.int8)
_FULL_HASH_BYTES = 256 * 1024 * 1024  # weight files up to this size are hashed in full
_SAMPLE_CHUNKS, _CHUNK_BYTES = 64, 1 << 16


def resolve_device(device: str | None = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but no CUDA GPU is visible (use --device cpu)")
    return str(device)


# On a CPU with native bf16 (AVX512_BF16 or AMX), models whose weight files are larger than this run
# in bf16: a 1.5B model decodes 3-8x faster than in fp32 there (docs/real-model.md). Smaller models
# (the shipped 8.5M ones) stay in fp32, where their figures were measured and bf16 gains little.
CPU_BF16_MIN_WEIGHT_BYTES = 256 * 1024 * 1024


def cpu_has_native_bf16() -> bool:
    """Whether this x86 CPU computes bf16 dot products in hardware (AVX512_BF16 or AMX-BF16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[-1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def weight_bytes(path_or_id: str | os.PathLike) -> int:
    """Size of a local checkpoint's safetensors files (0 for a hub id)."""
    p = Path(str(path_or_id)).expanduser()
    return sum(f.stat().st_size for f in p.glob("*.safetensors")) if p.is_dir() else 0


def resolve_dtype(dtype: Any, device: str, model: str | os.PathLike | None = None) -> Any:
    """'auto' -> bfloat16 on GPU; on CPU float32, except a large `model` (CPU_BF16_MIN_WEIGHT_BYTES)
    on a CPU with native bf16, which runs in bfloat16."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.startswith("cuda"):
            return torch.bfloat16
        large = model is not None and weight_bytes(model) >= CPU_BF16_MIN_WEIGHT_BYTES
        return torch.bfloat16 if large and cpu_has_native_bf16() else torch.float32
    names = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if dtype not in names:
        raise UserError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
    return names[dtype]


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "HTTP_PROXY", "http_proxy")
_hub_state: dict[str, bool] = {}


def hub_offline() -> bool:
    """True when the hub cannot be reached, so hub ids load from the local cache only.

    Offline, huggingface_hub retries each request five times with backoff (23 s) before transformers
    gives up; one TCP connect (3 s at most) tells the same thing up front. HF_HUB_OFFLINE=1 is
    honoured as is; behind a proxy no probe is made (a direct connect says nothing there)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return False
    if "offline" not in _hub_state:
        import socket
        from urllib.parse import urlparse

        url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
        port = url.port or (80 if url.scheme == "http" else 443)
        try:
            socket.create_connection((url.hostname or "huggingface.co", port), timeout=3).close()
            _hub_state["offline"] = False
        except OSError:
            _hub_state["offline"] = True
    return _hub_state["offline"]


def _hub_error(src: str, e: BaseException) -> UserError:
    if hub_offline():
        return UserError(
            f"could not load {src!r}: it is not a local directory, not in the local hub cache, and the hub "
            "cannot be reached (no network?); pass a local model directory"
        )
    return UserError(
        f"could not load {src!r} from the hub ({str(e).splitlines()[0]}); pass a local model directory"
    )


def is_local(path_or_id: str | os.PathLike) -> bool:
    """A path that exists, or one written like a path (so a typo is not sent to the hub)."""
    s = str(path_or_id)
    if Path(s).expanduser().exists() or s.startswith(("/", "./", "../", "~", ".\\")):
        return True
    return not _HUB_ID_RE.match(s)


def check_model_dir(path: Path) -> dict:
    """Validate a local model directory before transformers sees it; returns its config.json."""
    if not path.exists():
        raise UserError(f"model path {path} does not exist")
    if not path.is_dir():
        if path.suffix.lower() == ".gguf":
            raise UserError(
                f"model path {path} is a GGUF file: the CLI converts it once; in Python, pass it through "
                "silverbullet.generation.gguf.resolve_gguf first"
            )
        raise UserError(f"model path {path} is not a directory (expected a saved model folder)")
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{path} has no config.json: not a saved transformers model")
    try:
        config = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{cfg_file}: malformed JSON (line {e.lineno}: {e.msg})") from None
    if not any(path.glob("*.safetensors")):
        pickled = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.pt"))
        if pickled:
            raise UserError(
                f"{path} has only pickle weights ({pickled[0]}); safetensors are required (pickle can run "
                "code on load): convert them once in a trusted environment with "
                "model.save_pretrained(dir, safe_serialization=True)"
            )
        raise UserError(f"{path} has no *.safetensors weight files")
    for f in sorted(path.glob("*.safetensors")):
        check_safetensors_file(f)
    method = quant_method(config)
    if method is not None:
        from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING

        # transformers files bitsandbytes under bitsandbytes_4bit / _8bit; config.json says "bitsandbytes"
        if method not in AUTO_QUANTIZATION_CONFIG_MAPPING and method != "bitsandbytes":
            raise UserError(
                f"{cfg_file}: quantization_config.quant_method {method!r} is not a format this "
                "backend can run (transformers would silently load the weights unquantized); re-quantize "
                "with `silverbullet quantize` (compressed-tensors) or try --backend vllm"
            )
        require_quant_library(method, str(cfg_file))
    return config


def quant_method(config: dict) -> str | None:
    """The checkpoint's quantization format as its config.json names it (None: not quantized)."""
    q = config.get("quantization_config") or config.get("compression_config")
    if isinstance(q, dict) and q.get("quant_method") is not None:
        return str(q["quant_method"])
    return None


def require_quant_library(method: str, where: str) -> None:
    """A format whose library is not installed is one line naming the extra, not an ImportError
    deep inside transformers."""
    import importlib.util

    def installed(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):  # a module hidden as None in sys.modules
            return False

    modules, extra = QUANT_LIBRARIES.get(method, ((), None))
    missing = [m for m in modules if not installed(m)]
    if missing:
        names = " and ".join(repr(m) for m in missing)
        what = f"the {names} package, which is" if len(missing) == 1 else f"the {names} packages, which are"
        raise UserError(
            f"{where}: the {method} format needs {what} not installed; "
            f'install it with: pip install "silverbullet[{extra}]"'
        )


def bnb_config(load_in: str, dtype: Any) -> Any:
    """transformers' BitsAndBytesConfig for `--load-in 4bit` (NF4, the QLoRA format) or
    `--load-in 8bit` (LLM.int8), computing in the run's dtype."""
    if load_in not in LOAD_IN:
        raise UserError(f"load_in {load_in!r} is not known; use one of {', '.join(LOAD_IN)}")
    require_quant_library("bitsandbytes", f"--load-in {load_in}")
    from transformers import BitsAndBytesConfig

    if load_in == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def check_safetensors_file(f: Path) -> None:
    """A truncated or corrupt weight file is named here, before transformers fails on it obscurely:
    the 8-byte header length, a JSON header, and data offsets that fit in the file."""
    size = f.stat().st_size
    what = f"{f}: corrupt safetensors file"
    with f.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise UserError(f"{what} ({size} bytes, no header); re-download or re-save the checkpoint")
        n = int.from_bytes(head, "little")
        if n > min(size - 8, 100_000_000):
            raise UserError(f"{what} (header longer than the file: truncated?); re-download or re-save it")
        try:
            header = json.loads(fh.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            raise UserError(f"{what} (unreadable header); re-download or re-save the checkpoint") from None
    if 8 + n + end > size:
        raise UserError(f"{what} (truncated: {size} bytes, the header needs {8 + n + end}); re-download or re-save it")


def is_compressed_tensors(config: dict) -> bool:
    q = config.get("quantization_config") or config.get("compression_config") or {}
    return isinstance(q, dict) and q.get("quant_method") == "compressed-tensors"


def _check_causal_lm(config: Any, where: str, trust_remote_code: bool) -> None:
    """The config must map to a causal-LM class, and so must its saved architecture (a BertModel
    checkpoint would otherwise load as BertLMHeadModel with a random head)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING,
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
    )

    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and "AutoModelForCausalLM" in auto_map:
        return
    archs = list(getattr(config, "architectures", None) or [])
    causal: set[str] = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        causal.update(v if isinstance(v, (list, tuple)) else [v])
    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING and (not archs or any(a in causal for a in archs)):
        return
    arch = ", ".join(archs) or "unknown architecture"
    raise UserError(
        f"{where}: model_type {config.model_type!r} ({arch}) is not a causal language model; "
        "silverbullet needs a decoder-only LM (AutoModelForCausalLM)"
    )


def preflight(path_or_id: str | os.PathLike, load_in: str | None = None) -> None:
    """The checks `load_causal_lm` makes before loading weights (files, safetensors headers, config,
    causal-LM architecture), without loading: a run can refuse a bad checkpoint before it starts."""
    if load_in is not None:
        bnb_config(load_in, None)
    if not is_local(path_or_id):
        return
    src = str(Path(str(path_or_id)).expanduser())
    raw_config = check_model_dir(Path(src))
    _check_load_in(raw_config, src, load_in)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(src, trust_remote_code=False)
    except ValueError as e:
        if raw_config.get("auto_map"):
            raise UserError(
                f"{src}/config.json: auto_map asks for the checkpoint's own Python code, and silverbullet "
                "runs no checkpoint code (trust_remote_code is off); use a model transformers supports natively"
            ) from None
        raise UserError(f"{src}: cannot read config ({str(e).splitlines()[0]})") from None
    _check_causal_lm(config, src, False)


def _check_load_in(raw_config: dict | None, src: str, load_in: str | None) -> None:
    if load_in is not None and raw_config is not None and quant_method(raw_config) is not None:
        raise UserError(
            f"{src} is already quantized ({quant_method(raw_config)}); --load-in {load_in} quantizes a "
            "full-precision model at load time: drop the flag, or pass the full-precision model"
        )


def load_tokenizer(path_or_id: str | os.PathLike, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer, with a pad token (eos when it has none) for batched generation."""
    from transformers import AutoTokenizer

    p = Path(str(path_or_id)).expanduser()
    if is_local(path_or_id) and not any((p / f).is_file() for f in _TOKENIZER_FILES):
        raise UserError(f"{p} has no tokenizer files (tokenizer.json / tokenizer_config.json)")
    local = is_local(path_or_id)
    offline = {} if local or not hub_offline() else {"local_files_only": True}
    try:
        tok = AutoTokenizer.from_pretrained(
            str(p) if local else str(path_or_id), trust_remote_code=trust_remote_code, **offline
        )
    except (OSError, ValueError) as e:
        if not local and isinstance(e, OSError):
            raise _hub_error(str(path_or_id), e) from None
        raise UserError(f"could not load the tokenizer from {path_or_id}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UserError(f"tokenizer at {path_or_id} has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    path_or_id: str | os.PathLike,
    *,
    device: str = "auto",
    dtype: Any = "auto",
    trust_remote_code: bool = False,
    adapter: str | os.PathLike | None = None,
    for_training: bool = False,
    load_in: str | None = None,
) -> tuple[Any, Any]:
    """Load (model, tokenizer). `adapter` is a PEFT adapter directory applied on top (trainable when
    `for_training`). Quantized compressed-tensors checkpoints are dequantized for training (their
    dense weights stay on the grid); bitsandbytes ones (`load_in` = 4bit/8bit, or saved that way)
    stay quantized and LoRA trains on top of them, as QLoRA does."""
    from transformers import AutoConfig, AutoModelForCausalLM

    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device, path_or_id)
    local = is_local(path_or_id)
    src = str(Path(str(path_or_id)).expanduser()) if local else str(path_or_id)
    quant_cfg = bnb_config(load_in, torch_dtype) if load_in is not None else None
    raw_config = check_model_dir(Path(src)) if local else None
    _check_load_in(raw_config, src, load_in)
    offline = {} if local or not hub_offline() else {"local_files_only": True}
    try:
        config = AutoConfig.from_pretrained(src, trust_remote_code=trust_remote_code, **offline)
    except ValueError as e:  # unknown model_type, remote code refused
        if raw_config is not None and raw_config.get("auto_map") and not trust_remote_code:
            raise UserError(
                f"{src}/config.json: auto_map asks for the checkpoint's own Python code, and silverbullet "
                "runs no checkpoint code (trust_remote_code is off); use a model transformers supports natively"
            ) from None
        raise UserError(f"{src}: cannot read config ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise _hub_error(src, e) from None
    _check_causal_lm(config, src, trust_remote_code)
    tokenizer = load_tokenizer(src, trust_remote_code=trust_remote_code)

    kwargs: dict[str, Any] = {
        "dtype": torch_dtype,
        "use_safetensors": True,
        "trust_remote_code": trust_remote_code,
        **offline,
    }
    quantized = (
        is_compressed_tensors(raw_config)
        if raw_config is not None
        else (
            is_compressed_tensors(getattr(config, "quantization_config", None) or {})
            if isinstance(getattr(config, "quantization_config", None), dict)
            else False
        )
    )
    if quantized and (for_training or adapter is not None):  # PEFT needs dense weights (still on the grid)
        kwargs["quantization_config"] = _dequantizing_config()
    if quant_cfg is not None:
        kwargs["quantization_config"] = quant_cfg
    method = quant_method(raw_config) if raw_config is not None else quant_method(config.to_dict())
    bnb = quant_cfg is not None or method == "bitsandbytes"
    if device.startswith("cuda") or bnb:  # bitsandbytes places weights as it loads them
        kwargs["device_map"] = {"": device}
    try:
        model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except (OSError, ValueError, ImportError) as e:
        raise UserError(f"could not load the model from {src}: {str(e).splitlines()[0]}") from None
    if not device.startswith("cuda") and not bnb:
        model = model.to(device)

    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise UserError(
            f"{src}: tokenizer has {len(tokenizer)} tokens but the model's embedding has only {n_embed} "
            "rows; "
            "tokenizer and weights do not belong together"
        )
    if for_training and method == "auto-round":
        _trainable_autoround(model, src)
    if adapter is not None:
        model = _apply_adapter(model, Path(str(adapter)).expanduser(), trainable=for_training)
        if not for_training and not bnb and method not in UNMERGED_FORMATS:
            model = model.merge_and_unload()  # W + BA in place: the same function, at plain-model speed
    if not for_training:
        model.eval()
    contiguous_head_input(model)
    return model, tokenizer


def contiguous_head_input(model: Any) -> None:
    """Hand the output head a contiguous input. Its input is a slice of the last positions
    (`logits_to_keep`), which torch.matmul cannot fold into one matrix product: it then copies the
    head's weight once per row of the batch (vocab x hidden each, 467 MB for Qwen2.5-1.5B in bf16),
    so a batch of 48 allocated 22 GB and was killed for memory. A copy of the slice costs batch x
    hidden values."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None or getattr(head, "_silverbullet_contiguous", False):
        return

    def pre_hook(module: Any, args: tuple) -> tuple | None:
        if args and hasattr(args[0], "is_contiguous") and not args[0].is_contiguous():
            return (args[0].contiguous(), *args[1:])
        return None

    head.register_forward_pre_hook(pre_hook)
    head._silverbullet_contiguous = True


def _dequantizing_config() -> Any:
    """compressed-tensors config that loads dense weights on the quantized grid (for training).
    transformers >= 5 calls this `dequantize=True`; older releases `run_compressed=False`."""
    from transformers import CompressedTensorsConfig

    try:
        return CompressedTensorsConfig(dequantize=True)
    except TypeError:  # transformers 4.x
        return CompressedTensorsConfig(run_compressed=False)


_AUTOROUND_TORCH_LAYERS = "auto_round_extension.torch."  # AutoRound's pure-torch kernels (its CPU backend)


def lora_custom_modules(model: Any) -> dict[type, type]:
    """PEFT LoRA layer classes for quantized linears PEFT does not dispatch itself: AutoRound's
    QuantLinear (auto_round / auto_round_extension). Their forward dequantizes in torch ops, so the
    gradient reaches the input, and they name their sizes `infeatures`/`outfeatures` as GPTQ layers do:
    PEFT's GPTQ LoRA wrapper (quantized base, adapter added to its output, no merge) serves them.
    Registered on each LoraConfig that trains or loads an adapter on such a model."""
    classes = {type(m) for m in model.modules() if type(m).__module__.startswith(_AUTOROUND_TORCH_LAYERS)}
    if not classes:
        return {}
    from peft.tuners.lora.gptq import GPTQLoraLinear

    return dict.fromkeys(classes, GPTQLoraLinear)


def _trainable_autoround(model: Any, src: str) -> None:
    """transformers marks AutoRound models untrainable (its GPU kernels have no backward pass). Where
    every AutoRound layer is one of its pure-torch kernels (the CPU backend), the backward pass is
    torch's own and LoRA trains on top (lora_custom_modules); say so to the Trainer's check. Otherwise
    one line, before minutes of loading data."""
    quantizer = getattr(model, "hf_quantizer", None)
    layers = {type(m) for m in model.modules() if type(m).__module__.startswith(("auto_round", "auto_round_extension"))}
    torch_only = bool(layers) and all(c.__module__.startswith(_AUTOROUND_TORCH_LAYERS) for c in layers)
    if not torch_only:
        names = ", ".join(sorted(f"{c.__module__}.{c.__name__}" for c in layers)) or "no AutoRound layers"
        raise UserError(
            f"LoRA cannot train on {src}: transformers marks AutoRound models untrainable, and silverbullet "
            f"allows it only on AutoRound's pure-torch kernels (found: {names}); repair it on CPU "
            "(--device cpu) or ship it unrepaired"
        )
    if quantizer is not None and not quantizer.is_trainable:
        base = type(quantizer)
        quantizer.__class__ = type(base.__name__, (base,), {"is_trainable": property(lambda self: True)})


def _apply_adapter(model: Any, adapter: Path, *, trainable: bool) -> Any:
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"adapter {adapter} has no adapter_config.json (expected a PEFT adapter folder)")
    if not any(adapter.glob("*.safetensors")):
        raise UserError(f"adapter {adapter} has no *.safetensors weights")
    from peft import PeftConfig, PeftModel

    try:
        config = PeftConfig.from_pretrained(str(adapter))
        custom = lora_custom_modules(model)
        if custom and hasattr(config, "_register_custom_module"):  # LoRA adapters (the ones repair writes)
            config._register_custom_module(custom)
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable, config=config)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"could not apply adapter {adapter}: {str(e).splitlines()[0]}") from None


def _hash_file(h: Any, path: Path) -> None:
    """Whole file when small; for large weight files the size plus evenly spaced chunks (a changed
    checkpoint changes nearly every chunk), so fingerprinting a 16 GB model takes milliseconds."""
    size = path.stat().st_size
    h.update(f"{path.name}:{size}\n".encode())
    with path.open("rb") as f:
        if size <= _FULL_HASH_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
            return
        for i in range(_SAMPLE_CHUNKS):
            f.seek(i * (size - _CHUNK_BYTES) // (_SAMPLE_CHUNKS - 1))
            h.update(f.read(_CHUNK_BYTES))


def fingerprint_dir(path: str | os.PathLike, h: Any = None) -> str:
    """Stable hash of a model (or adapter) folder's config, tokenizer and weight files."""
    h = h or hashlib.sha256()
    p = Path(path).expanduser()
    names = [n for n in _FINGERPRINT_FILES if (p / n).is_file()]
    names += sorted(q.name for q in p.glob("*.safetensors"))
    for name in names:
        _hash_file(h, p / name)
    return h.hexdigest()


def fingerprint_model_source(
    path_or_id: str | os.PathLike,
    *,
    dtype: Any = "auto",
    device: str = "auto",
    adapter: str | os.PathLike | None = None,
    load_in: str | None = None,
) -> str:
    """Cache key for a model as it will be loaded: files (or hub id), dtype, adapter and load-time
    quantization."""
    h = hashlib.sha256()
    h.update(f"dtype={resolve_dtype(dtype, resolve_device(device), path_or_id)}\n".encode())
    if load_in is not None:
        h.update(f"load_in={load_in}\n".encode())
    if is_local(path_or_id):
        fingerprint_dir(path_or_id, h)
    else:
        h.update(f"hub:{path_or_id}\n".encode())
    if adapter is not None:
        h.update(b"adapter\n")
        fingerprint_dir(adapter, h)
    return h.hexdigest()[:16]


def fingerprint_module(model: Any) -> str:
    """Fingerprint of an in-memory model (after training, say): config + strided samples of every
    parameter. Cheap even for large models; any real weight update changes the samples."""
    import torch

    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None:
        h.update(cfg.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step].to("cpu", torch.float32).contiguous()
            h.update(f"{name}:{tuple(p.shape)}:{p.dtype}\n".encode())
            h.update(sample.numpy().tobytes())
    return h.hexdigest()[:16]


def renderer_for_model(settings: PromptSettings, model_path: str, benchmark: str) -> PromptRenderer:
    """The prompt renderer for a checkpoint (prompting.formats); its tokenizer is loaded only when a
    chat template may be used."""
    if settings.template or settings.format in ("completion", "fewshot"):
        return make_renderer(settings, None, benchmark, model_path)
    return make_renderer(settings, load_tokenizer(model_path), benchmark, model_path)
