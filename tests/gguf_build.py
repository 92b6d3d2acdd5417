"""Write a small GGUF file from a saved Llama checkpoint, as llama.cpp's converter lays one out.

The tests need a GGUF file without the 1.1 GB real model: the project's own reference model
(8.5M parameters, byte-level BPE) written with the `gguf` package's writer, its matrices as F32 or
quantized to Q8_0 (`gguf.quants`). Tensor names, the q/k row permutation and the tokenizer keys
follow llama.cpp's convert_hf_to_gguf for Llama, which transformers' GGUF loader reverses.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp stores q/k rows in interleaved rotary order (transformers' loader undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensors(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file  # bf16 is not a numpy dtype: read through torch instead

    out: dict[str, np.ndarray] = {}
    for f in sorted(model_dir.glob("*.safetensors")):
        try:
            out.update({k: v.astype(np.float32) for k, v in load_file(str(f)).items()})
        except (TypeError, ValueError):
            from safetensors.torch import load_file as load_torch

            out.update({k: v.float().numpy() for k, v in load_torch(str(f)).items()})
    return out


def build_gguf(
    model_dir: Path,
    out: Path,
    *,
    qtype: str = "F32",
    architecture: str = "llama",
    chat_template: str | None = None,
) -> Path:
    """`model_dir` (a LlamaForCausalLM folder with a BPE tokenizer.json) as a GGUF file at `out`.
    `qtype`: F32, or Q8_0 for the 2-D weights (norms stay F32, as in real files)."""
    import gguf

    cfg = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    tensors = _tensors(model_dir)
    n_head, n_kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    q = gguf.GGMLQuantizationType.Q8_0 if qtype == "Q8_0" else gguf.GGMLQuantizationType.F32
    w = gguf.GGUFWriter(str(out), architecture)
    w.add_name(model_dir.name)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if qtype == "Q8_0" else gguf.LlamaFileType.ALL_F32)
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base((cfg.get("rope_parameters") or {}).get("rope_theta", cfg.get("rope_theta", 10000.0)))
    w.add_rope_dimension_count(cfg.get("head_dim", cfg["hidden_size"] // n_head))
    vocab = tok["model"]["vocab"]
    added = {t["content"]: t["id"] for t in tok.get("added_tokens", [])}
    by_id = {**{i: t for t, i in vocab.items()}, **{i: t for t, i in added.items()}}
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(cfg["vocab_size"])]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in added else 1 for t in tokens])
    merges = tok["model"].get("merges", [])
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    eos = cfg.get("eos_token_id")
    eos = eos[0] if isinstance(eos, list) else eos  # the chat model stops on [<|im_end|>, </s>]: GGUF has one
    if eos is not None:
        w.add_eos_token_id(eos)
        # transformers' GGUF tokenizer reader needs a bos id beside the eos (5.17 reads the eos through
        # it); one that differs from the eos, as in Qwen's files, so the tests see that mix-up
        bos = next((cfg[k] for k in ("bos_token_id", "pad_token_id") if cfg.get(k) is not None), eos)
        w.add_bos_token_id(bos)
    if cfg.get("pad_token_id") is not None:
        w.add_pad_token_id(cfg["pad_token_id"])
    if chat_template:
        w.add_chat_template(chat_template)

    def put(name: str, arr: np.ndarray) -> None:
        if arr.ndim == 2 and q != gguf.GGMLQuantizationType.F32:
            w.add_tensor(name, gguf.quants.quantize(arr, q), raw_dtype=q)
        else:
            w.add_tensor(name, np.ascontiguousarray(arr, dtype=np.float32))

    put("token_embd.weight", tensors["model.embed_tokens.weight"])
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        put(f"blk.{i}.attn_norm.weight", tensors[p + "input_layernorm.weight"])
        put(f"blk.{i}.attn_q.weight", _permute(tensors[p + "self_attn.q_proj.weight"], n_head))
        put(f"blk.{i}.attn_k.weight", _permute(tensors[p + "self_attn.k_proj.weight"], n_kv))
        put(f"blk.{i}.attn_v.weight", tensors[p + "self_attn.v_proj.weight"])
        put(f"blk.{i}.attn_output.weight", tensors[p + "self_attn.o_proj.weight"])
        put(f"blk.{i}.ffn_norm.weight", tensors[p + "post_attention_layernorm.weight"])
        put(f"blk.{i}.ffn_gate.weight", tensors[p + "mlp.gate_proj.weight"])
        put(f"blk.{i}.ffn_up.weight", tensors[p + "mlp.up_proj.weight"])
        put(f"blk.{i}.ffn_down.weight", tensors[p + "mlp.down_proj.weight"])
    put("output_norm.weight", tensors["model.norm.weight"])
    if "lm_head.weight" in tensors and not cfg.get("tie_word_embeddings"):
        put("output.weight", tensors["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
