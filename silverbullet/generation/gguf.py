"""GGUF files in: checked from their header, then converted once to a safetensors folder.

Most quantized models people download are GGUF files (llama.cpp's format). transformers reads them
through the `gguf` package, de-quantizing every tensor, which takes a minute for a 1.5B model; the
converted folder (bf16 safetensors, tokenizer and chat template from the file) is kept in the model
cache under the file's sha256, so every later run, backend and `quantize` loads an ordinary folder.

The header is read here, not by `gguf.GGUFReader`: a model file is untrusted input, and the reader
neither bounds what it reads nor says "truncated" (it fails on a numpy reshape), and it takes seconds
to build the tokenizer arrays a check does not need. This reader bounds every count and length, reads
no tensor data, and compares the file's size with what its tensor table needs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from silverbullet.errors import UserError

GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)
SOURCE_FILE = "gguf_source.json"  # written into each converted folder: where it came from
CONVERTED_DTYPE = "bfloat16"  # the de-quantized weights are stored in the dtype CPU runs compute in
# Bounds for an untrusted header (the largest real files have ~2,000 tensors and ~40 keys; a
# tokenizer array holds ~256k strings).
_MAX_TENSORS, _MAX_KEYS, _MAX_ARRAY, _MAX_STRING, _MAX_DIMS = 1_000_000, 100_000, 50_000_000, 64 << 20, 8
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class GgufInfo:
    """What a GGUF file's header says, and what its size must be."""

    path: str
    size: int
    version: int
    architecture: str | None
    name: str | None
    file_type: str | None  # llama.cpp's name for the release level: Q4_K_M, Q8_0, F16, ...
    tensor_count: int
    needed_size: int  # data start + the end of the last tensor's data
    tensor_types: dict = field(default_factory=dict)  # ggml type name -> how many tensors
    metadata: dict = field(default_factory=dict)  # scalar keys (strings shortened); arrays as their length


def is_gguf_path(src: str | os.PathLike) -> bool:
    """Written as a GGUF file (by its suffix), or a file that starts with the GGUF magic."""
    p = Path(str(src)).expanduser()
    if str(src).lower().endswith(".gguf"):
        return True
    if p.is_file():
        with p.open("rb") as f:
            return f.read(4) == GGUF_MAGIC
    return False


class _Header:
    """Bounded reads from the start of a file; running past its end is a truncated header."""

    def __init__(self, fh: BinaryIO, path: Path, size: int) -> None:
        self.fh, self.path, self.size = fh, path, size

    def take(self, n: int) -> bytes:
        b = self.fh.read(n)
        if len(b) < n:
            raise UserError(
                f"{self.path}: truncated GGUF file ({self.size} bytes; its header runs past the end); "
                "re-download or re-assemble it"
            )
        return b

    def skip(self, n: int) -> None:
        if self.fh.tell() + n > self.size:
            self.take(self.size)  # raises the truncated-header line
        self.fh.seek(n, os.SEEK_CUR)

    def unpack(self, fmt: str) -> Any:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def count(self, what: str, limit: int) -> int:
        n = self.unpack("<Q")
        if n > limit:
            raise UserError(f"{self.path}: corrupt GGUF header ({what} {n} is past any real file's); re-download it")
        return n

    def string(self, keep: bool = True) -> str:
        n = self.count("a string of length", _MAX_STRING)
        if not keep:
            self.skip(n)
            return ""
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth == 0:
            etype = self.unpack("<I")
            n = self.count("an array of length", _MAX_ARRAY)
            if etype in _SCALAR:
                self.skip(n * struct.calcsize(_SCALAR[etype]))
            elif etype == _STRING:
                for _ in range(n):
                    self.string(keep=False)
            else:
                raise UserError(f"{self.path}: corrupt GGUF header (array of value type {etype}); re-download it")
            return {"array_length": n}
        raise UserError(f"{self.path}: corrupt GGUF header (value type {vtype}); re-download it")


def read_gguf_info(path: str | os.PathLike) -> GgufInfo:
    """The header of a GGUF file, checked: magic, version, bounded counts, known tensor types, and a
    size no shorter than the tensor table needs. Any failure is one UserError naming the file."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, LlamaFileType

    p = Path(str(path)).expanduser()
    if not p.exists():
        raise UserError(f"GGUF file {p} does not exist")
    if not p.is_file():
        raise UserError(f"{p} is not a file (expected a .gguf model file)")
    size = p.stat().st_size
    with p.open("rb") as fh:
        h = _Header(fh, p, size)
        magic = fh.read(4)
        if magic != GGUF_MAGIC:
            raise UserError(f"{p}: not a GGUF file (it starts with {magic!r}, not b'GGUF'); pass a .gguf model file")
        version = h.unpack("<I")
        if version not in GGUF_VERSIONS:
            raise UserError(
                f"{p}: GGUF version {version} is not supported (2 or 3); re-convert it with a current llama.cpp"
            )
        n_tensors = h.count("tensor count", _MAX_TENSORS)
        n_keys = h.count("key count", _MAX_KEYS)
        meta: dict[str, Any] = {}
        for _ in range(n_keys):
            key = h.string()
            v = h.value(h.unpack("<I"))
            meta[key] = v[:200] if isinstance(v, str) and not key.endswith("chat_template") else v
        types: Counter = Counter()
        data_end = 0
        for _ in range(n_tensors):
            name = h.string()
            n_dims = h.unpack("<I")
            if not 0 < n_dims <= _MAX_DIMS:
                raise UserError(f"{p}: corrupt GGUF header (tensor {name!r} has {n_dims} dimensions); re-download it")
            dims = [h.unpack("<Q") for _ in range(n_dims)]
            ttype, offset = h.unpack("<I"), h.unpack("<Q")
            try:
                qtype = GGMLQuantizationType(ttype)
                block, type_size = GGML_QUANT_SIZES[qtype]
            except (ValueError, KeyError):
                raise UserError(
                    f"{p}: tensor {name!r} has ggml type {ttype}, which the installed gguf package does not "
                    "know (corrupt file, or a type newer than it: pip install -U gguf)"
                ) from None
            elems = 1
            for d in dims:
                elems *= d
            if elems % block:
                raise UserError(f"{p}: corrupt GGUF header (tensor {name!r}: {elems} values in blocks of {block})")
            types[qtype.name] += 1
            data_end = max(data_end, offset + elems // block * type_size)
        align = meta.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise UserError(f"{p}: corrupt GGUF header (general.alignment {align!r})")
        data_start = -(-fh.tell() // align) * align
    needed = data_start + data_end
    if needed > size:
        raise UserError(
            f"{p}: truncated GGUF file ({size:,} bytes; its tensor table needs {needed:,}); "
            "re-download or re-assemble it"
        )
    ftype = meta.get("general.file_type")
    try:
        file_type = LlamaFileType(ftype).name.removeprefix("MOSTLY_") if isinstance(ftype, int) else None
    except ValueError:
        file_type = f"type {ftype}"
    arch = meta.get("general.architecture")
    return GgufInfo(
        path=str(p),
        size=size,
        version=version,
        architecture=arch if isinstance(arch, str) else None,
        name=meta.get("general.name") if isinstance(meta.get("general.name"), str) else None,
        file_type=file_type,
        tensor_count=n_tensors,
        needed_size=needed,
        tensor_types=dict(sorted(types.items())),
        metadata=meta,
    )


def sha256_file(path: str | os.PathLike, memo_dir: Path | None = None) -> str:
    """The file's sha256; with `memo_dir`, remembered by (path, size, mtime) so a 1 GB file is hashed
    once, not at every run."""
    p = Path(str(path)).expanduser().resolve()
    st = p.stat()
    stamp = f"{p}|{st.st_size}|{st.st_mtime_ns}"
    memo = memo_dir / "sha256.json" if memo_dir is not None else None
    known: dict = {}
    if memo is not None and memo.is_file():
        try:
            known = json.loads(memo.read_text())
        except (OSError, json.JSONDecodeError):
            known = {}
        if isinstance(known.get(stamp), str):
            return known[stamp]
    h = hashlib.sha256()
    with p.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({**known, stamp: digest}, indent=0))
            tmp.replace(memo)
        except OSError:
            pass  # a read-only cache only costs the hash next time
    return digest


def models_cache_dir() -> Path:
    """$SILVERBULLET_MODELS, else ~/.cache/silverbullet/models: converted checkpoints live here."""
    env = os.environ.get("SILVERBULLET_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "silverbullet" / "models"


def gguf_file_in(src: str | os.PathLike, gguf_file: str | None = None) -> Path | None:
    """The GGUF file a model argument names: the file itself, a folder plus `gguf_file`, or a folder
    with no config.json and exactly one .gguf file. None: not a GGUF source."""
    p = Path(str(src)).expanduser()
    if gguf_file:
        if not p.is_dir():
            raise UserError(f"--gguf-file {gguf_file} needs a folder as the model path, and {p} is not one")
        f = p / gguf_file
        if not f.is_file():
            raise UserError(f"{p} has no file {gguf_file} (--gguf-file)")
        return f
    if p.is_file():
        return p if is_gguf_path(p) else None
    if str(src).lower().endswith(".gguf"):
        raise UserError(f"GGUF file {p} does not exist")
    if p.is_dir() and not (p / "config.json").exists():
        found = sorted(p.glob("*.gguf"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(f.name for f in found[:6])
            raise UserError(f"{p} holds several GGUF files ({names}); name one with --gguf-file, or pass its path")
    return None


def check_architecture(info: GgufInfo) -> None:
    """transformers de-quantizes only the architectures it maps; any other is one line, before loading."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    if info.architecture not in GGUF_CONFIG_MAPPING:
        known = ", ".join(sorted(GGUF_CONFIG_MAPPING)[:12])
        raise UserError(
            f"{info.path}: GGUF architecture {info.architecture!r} is one transformers cannot load "
            f"(it reads {known}, ...); convert the original checkpoint to safetensors instead"
        )


def convert_gguf(info: GgufInfo, out: Path, *, sha256: str, dtype: str = CONVERTED_DTYPE) -> Path:
    """De-quantize the file into a safetensors folder at `out` (written beside it, renamed into place,
    so a killed conversion leaves nothing half-made), with `gguf_source.json` saying where from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from silverbullet.generation.loading import resolve_dtype

    check_architecture(info)
    src = Path(info.path)
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(src.parent), gguf_file=src.name, dtype=resolve_dtype(dtype, "cpu"), device_map={"": "cpu"}
        )
    except (OSError, ValueError, KeyError, RuntimeError, NotImplementedError) as e:
        raise UserError(f"{src}: transformers could not load it ({str(e).splitlines()[0]})") from None
    # transformers 5.17 names the bos token as the eos (it reads the eos through bos_token_id): Qwen's
    # file would save <|endoftext|> as eos instead of <|im_end|>, and SFT would teach the wrong end.
    eos_id = info.metadata.get("tokenizer.ggml.eos_token_id")
    if isinstance(eos_id, int) and 0 <= eos_id < len(tokenizer):
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id)
    # The GGUF quantization config would make save_pretrained refuse ("not serializable"): the
    # weights are plain tensors now, so the folder is saved as an ordinary, unquantized model.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    model.is_quantized = False
    model.config.name_or_path = info.name or src.stem
    tmp = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with torch.no_grad():
        model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    record = {
        "gguf": {k: v for k, v in asdict(info).items() if k != "metadata"},
        "sha256": sha256,
        "dtype": dtype,
        "converted_seconds": round(time.perf_counter() - t0, 1),
        "transformers": __import__("transformers").__version__,
    }
    (tmp / SOURCE_FILE).write_text(json.dumps(record, indent=1))
    if out.exists():  # another process converted the same file meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(out)
    return out


def gguf_source(model_dir: str | os.PathLike) -> dict | None:
    """The GGUF provenance of a converted folder (None for any other model)."""
    f = Path(str(model_dir)).expanduser() / SOURCE_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def resolve_gguf(
    src: str | os.PathLike,
    gguf_file: str | None = None,
    *,
    cache_dir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> str:
    """A model argument as a loadable folder: a GGUF source becomes its converted folder (made on first
    use); anything else is returned unchanged."""
    f = gguf_file_in(src, gguf_file)
    if f is None:
        return str(src)
    info = read_gguf_info(f)
    cache = cache_dir or models_cache_dir()
    digest = sha256_file(f, cache)
    out = cache / f"gguf-{digest[:16]}-{CONVERTED_DTYPE}"
    if (out / SOURCE_FILE).is_file() and (out / "config.json").is_file():
        return str(out)
    if log:
        what = f"{info.file_type or 'GGUF'}, {info.size / 1e9:.2f} GB"
        log(f"converting {f.name} ({what}) to {out} (once; about a minute a GB)")
    convert_gguf(info, out, sha256=digest)
    return str(out)
