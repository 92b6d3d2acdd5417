"""load_causal_lm: local checkpoints load; every broken checkpoint gives a one-line UserError."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import build_char_tokenizer, build_tiny_llama

from silverbullet.errors import UserError
from silverbullet.generation.loading import fingerprint_dir, is_local, load_causal_lm


def test_loads_local_dir(tiny_model_dir):
    model, tok = load_causal_lm(tiny_model_dir, device="cpu", dtype="float32")
    assert not model.training
    assert tok.pad_token_id is not None
    assert model.get_input_embeddings().num_embeddings >= len(tok)


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_causal_lm(tmp_path / "nope", device="cpu")


def test_dir_without_config(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        load_causal_lm(tmp_path, device="cpu")


def test_pickle_only_weights(tmp_path, tiny_model_dir):
    d = tmp_path / "bin_only"
    shutil.copytree(tiny_model_dir, d)
    for f in d.glob("*.safetensors"):
        f.unlink()
    (d / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with pytest.raises(UserError, match="safetensors are required"):
        load_causal_lm(d, device="cpu")


def test_not_a_causal_lm(tmp_path, tiny_model_dir):
    d = tmp_path / "bert"
    shutil.copytree(tiny_model_dir, d)
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(UserError, match="not a causal language model"):
        load_causal_lm(d, device="cpu")


def test_missing_tokenizer(tmp_path, tiny_model_dir):
    d = tmp_path / "no_tok"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_model_dir / f, d / f)
    with pytest.raises(UserError, match="no tokenizer files"):
        load_causal_lm(d, device="cpu")


def test_tokenizer_larger_than_embedding(tmp_path):
    d = tmp_path / "small_vocab"
    build_tiny_llama(d, vocab_size=50)  # the char tokenizer has ~100 tokens
    with pytest.raises(UserError, match="tokenizer has .* tokens but the model's embedding has only 50"):
        load_causal_lm(d, device="cpu")


def test_adapter_errors(tmp_path, tiny_model_dir):
    with pytest.raises(UserError, match="adapter_config.json"):
        load_causal_lm(tiny_model_dir, device="cpu", adapter=tmp_path)


def test_adapter_applies(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model, _ = load_causal_lm(tiny_model_dir, device="cpu")
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    import torch

    torch.manual_seed(0)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # LoRA starts as a no-op; make it do something
            torch.nn.init.normal_(p, std=0.5)
    peft_model.save_pretrained(tmp_path / "adapter")
    x = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        want = peft_model(input_ids=x).logits
    loaded, _ = load_causal_lm(tiny_model_dir, device="cpu", adapter=tmp_path / "adapter")
    # For inference the adapter is merged (W + BA): a plain model with the adapted function.
    assert type(loaded).__name__ != "PeftModelForCausalLM"
    base, _ = load_causal_lm(tiny_model_dir, device="cpu")
    with torch.no_grad():
        got, plain = loaded(input_ids=x).logits, base(input_ids=x).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, plain, atol=1e-3)
    trainable, _ = load_causal_lm(tiny_model_dir, device="cpu", adapter=tmp_path / "adapter", for_training=True)
    assert any(p.requires_grad for p in trainable.parameters())


def test_unknown_dtype(tiny_model_dir):
    with pytest.raises(UserError, match="unknown dtype"):
        load_causal_lm(tiny_model_dir, device="cpu", dtype="float8")


def test_is_local():
    assert is_local("./model") and is_local("/abs/path") and is_local("~/m")
    assert not is_local("Qwen/Qwen2.5-0.5B") and not is_local("gpt2")


def test_fingerprint_dir_changes_with_weights(tmp_path):
    build_tiny_llama(tmp_path / "a", seed=0)
    build_tiny_llama(tmp_path / "b", seed=0)
    build_tiny_llama(tmp_path / "c", seed=1)
    assert fingerprint_dir(tmp_path / "a") == fingerprint_dir(tmp_path / "b")
    assert fingerprint_dir(tmp_path / "a") != fingerprint_dir(tmp_path / "c")


def test_char_tokenizer_roundtrip(tmp_path):
    tok = build_char_tokenizer(tmp_path)
    ids = tok("Step 1: 2 + 3 = 5.\n")["input_ids"]
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids, skip_special_tokens=True) == "Step 1: 2 + 3 = 5.\n"


def test_embedded_defaults_resolve_from_any_directory(tmp_path, monkeypatch):
    # run from another directory, `data/reference-model` used to go to the hub as a repo id
    from silverbullet.paths import embedded, project_root

    monkeypatch.chdir(tmp_path)
    shipped = project_root() / "data" / "reference-model"
    assert embedded("data/reference-model") == str(shipped)
    assert (shipped / "config.json").is_file()
    assert embedded("someorg/some-model") == "someorg/some-model"  # not a default: untouched
    assert embedded("data/other-model") == "data/other-model"
    (tmp_path / "data" / "reference-model").mkdir(parents=True)  # the user's own copy wins
    assert embedded("data/reference-model") == "data/reference-model"


def test_offline_hub_id_fails_fast_with_one_line(monkeypatch):
    import time

    from silverbullet.generation import loading

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "_hub_state", {"offline": True})
    t0 = time.perf_counter()
    with pytest.raises(UserError, match="not in the local hub cache, and the hub cannot be reached"):
        load_causal_lm("someorg/some-model", device="cpu")
    assert time.perf_counter() - t0 < 10  # huggingface_hub's own retries take 23 s


def test_hub_probe(monkeypatch):
    import socket

    from silverbullet.generation import loading

    for v in loading._PROXY_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    calls = []

    def refuse(addr, timeout):
        calls.append((addr, timeout))
        raise OSError("no route")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(loading, "_hub_state", {})
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example:8443")
    assert loading.hub_offline() and calls == [(("hub.example", 8443), 3)]
    assert loading.hub_offline() and len(calls) == 1  # probed once per process
    monkeypatch.setattr(loading, "_hub_state", {})
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy:3128")
    assert not loading.hub_offline() and len(calls) == 1  # behind a proxy: no probe, not offline
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading.hub_offline()


def test_auto_dtype_on_cpu_is_bf16_only_for_large_models_on_bf16_cpus(tmp_path, monkeypatch):
    import torch

    from silverbullet.generation import loading

    big, small = tmp_path / "big", tmp_path / "small"
    for d, size in ((big, loading.CPU_BF16_MIN_WEIGHT_BYTES), (small, 17_000_000)):
        d.mkdir()
        with (d / "model.safetensors").open("wb") as f:
            f.truncate(size)  # sparse: only the size is read
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert loading.resolve_dtype("auto", "cpu", big) == torch.bfloat16
    assert loading.resolve_dtype("auto", "cpu", small) == torch.float32
    assert loading.resolve_dtype("auto", "cpu") == torch.float32
    assert loading.resolve_dtype("fp32", "cpu", big) == torch.float32  # an explicit dtype wins
    assert loading.resolve_dtype("auto", "cuda", small) == torch.bfloat16
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert loading.resolve_dtype("auto", "cpu", big) == torch.float32
    # the cache key follows the dtype the model will run in
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    with_bf16 = loading.fingerprint_model_source(big, device="cpu")
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert loading.fingerprint_model_source(big, device="cpu") != with_bf16


def test_the_output_head_gets_a_contiguous_input(tiny_model_dir):
    """A slice of the last positions (`logits_to_keep`) reaches the head contiguous: torch.matmul
    cannot fold the slice and would copy the head's weight once per batch row (22 GB at batch 48 for
    a 1.5B model). Same logits either way."""
    import torch

    model, _ = load_causal_lm(str(tiny_model_dir), device="cpu")
    seen = []
    model.get_output_embeddings().register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous()))
    ids = torch.randint(3, 20, (3, 7))
    with torch.inference_mode():
        kept = model(input_ids=ids, logits_to_keep=2).logits
        full = model(input_ids=ids).logits
        # the fold itself: no batched product over copies of the weight
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(input_ids=ids, logits_to_keep=1)
    assert seen[0] is True
    assert torch.allclose(kept, full[:, -2:], atol=1e-5)
    def under_linear(e) -> bool:
        while e is not None and e.name != "aten::linear":
            e = e.cpu_parent
        return e is not None

    assert not [e for e in prof.events() if e.name == "aten::bmm" and under_linear(e)]
