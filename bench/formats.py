"""Which checkpoint formats run here, on the reference model: for each, does it load, does `diagnose`
run, does repair training (LoRA on the quantized base) run, and its accuracy on N problems.

A row that cannot run says why (the error's first line). CPU rows record the CPU's vector flags.
Writes bench/results/formats.json after every row (a cut-off run keeps what it measured) and prints
a Markdown table. Usage:
    python bench/formats.py [--n 100] [--only bnb-nf4,autoround] [--out bench/results/formats.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REF = str(ROOT / "data" / "reference-model")
PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "bitsandbytes",
    "compressed-tensors",
    "llmcompressor",
    "auto-round",
    "gptqmodel",
    "autoawq",
    "optimum",
)

# name -> how the checkpoint is made (a silverbullet quantize method, or load-time bitsandbytes)
FORMATS = {
    "fp32 (reference)": {},
    "compressed-tensors W4A16 (llm-compressor RTN)": {"method": "rtn", "bits": 4, "group_size": 128},
    "compressed-tensors W8A8 (SmoothQuant+GPTQ)": {"method": "smoothquant"},
    "compressed-tensors FP8": {"fp8": True},
    "bitsandbytes NF4 (--load-in-4bit)": {"load_in": "4bit"},
    "bitsandbytes INT8 (--load-in-8bit)": {"load_in": "8bit"},
    "bitsandbytes NF4 saved (quantize --method bnb-nf4)": {"method": "bnb-nf4"},
    "AutoRound W4G128 (quantize --method autoround)": {"method": "autoround", "bits": 4, "group_size": 128},
    "GPTQ W4G128 (quantize --method gptqmodel)": {"method": "gptqmodel", "bits": 4, "group_size": 128},
    "AWQ W4G128 GEMM (quantize --method gptqmodel-awq)": {"method": "gptqmodel-awq", "bits": 4, "group_size": 128},
}


def cpu_flags() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except OSError:
        return "unknown"
    flags = next((ln.split(":", 1)[1].split() for ln in out.splitlines() if ln.startswith("Flags")), [])
    model = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")
    keep = sorted(f for f in flags if f.startswith(("avx2", "avx512", "amx")))
    return f"{model}; {' '.join(keep) or 'no avx2/avx512'}"


def versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


def make_fp8(out: Path) -> Path:
    """llm-compressor's FP8 (dynamic activations) scheme, as the issue lists it."""
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier

    from silverbullet.generation.loading import load_causal_lm

    model, tok = load_causal_lm(REF, device="cpu", dtype="float32")
    model = oneshot(
        model=model, recipe=QuantizationModifier(targets="Linear", scheme="FP8_DYNAMIC", ignore=["lm_head"])
    )
    model.save_pretrained(out, save_compressed=True)
    tok.save_pretrained(out)
    return out


def bench_row(name: str, spec: dict, n: int, work: Path, diagnose_n: int) -> dict:
    import torch

    from silverbullet.benchmarks import load_benchmark
    from silverbullet.diagnose import DiagnoseConfig, run_diagnose
    from silverbullet.generation.loading import load_causal_lm
    from silverbullet.measure import evaluate_model
    from silverbullet.quantize import QuantizeConfig, quantize
    from silverbullet.repair.train import RepairTrainConfig, train_adapter

    row: dict = {"format": name, "device": "cuda" if torch.cuda.is_available() else "cpu"}
    load_in = spec.get("load_in")
    path = REF
    t0 = time.time()
    try:
        if "method" in spec:
            cfg = QuantizeConfig(
                model=REF,
                out=str(work / name.split()[0]),
                calibration_samples=64,
                **{k: v for k, v in spec.items() if k != "load_in"},
            )
            path = str(quantize(cfg, log=lambda m: None))
        elif spec.get("fp8"):
            path = str(make_fp8(work / "fp8"))
        row["quantize_seconds"] = round(time.time() - t0, 1)
    except Exception as e:
        row["loads"] = False
        row["reason"] = f"quantize: {_err(e)}"
        return row
    try:
        t0 = time.time()
        model, tok = load_causal_lm(path, device="cpu", load_in=load_in)
        row["loads"] = True
        row["load_seconds"] = round(time.time() - t0, 1)
        row["linear_class"] = type(model.model.layers[0].self_attn.q_proj).__name__
        del model
    except Exception as e:
        row["loads"] = False
        row["reason"] = f"load: {_err(e)}"
        return row
    problems = load_benchmark("synthetic", split="eval", limit=n)
    try:
        t0 = time.time()
        res = evaluate_model(path, problems, device="cpu", load_in=load_in)
        row["accuracy"] = res["accuracy"]
        row["accuracy_n"] = n
        row["eval_seconds"] = round(time.time() - t0, 1)
    except Exception as e:
        row["accuracy"] = None
        row["accuracy_error"] = _err(e)
    try:
        t0 = time.time()
        dcfg = DiagnoseConfig(
            reference=REF,
            quantized=path,
            load_in=load_in,
            limit=diagnose_n,
            device="cpu",
            out=str(work / f"diag-{abs(hash(name))}"),
            progress=False,
            cache=False,
        )
        s = run_diagnose(dcfg)
        row["diagnose"] = True
        row["diagnose_n"] = diagnose_n
        row["diagnose_flips"] = s["flips"]["ref_right_quant_wrong"]
        row["diagnose_seconds"] = round(time.time() - t0, 1)
    except Exception as e:
        row["diagnose"] = False
        row["diagnose_error"] = _err(e)
    try:
        t0 = time.time()
        sft = work / "sft.jsonl"
        sft.write_text(
            "".join(
                json.dumps(
                    {
                        "prompt": f"Question: What is {a} + {b}?\n",
                        "completion": f"{a}+{b}={a + b}\nThe answer is: {a + b}\n",
                    }
                )
                + "\n"
                for a, b in ((3, 4), (10, 7), (21, 5), (8, 8))
            )
        )
        info = train_adapter(
            path,
            sft,
            None,
            work / "adapter",
            RepairTrainConfig(method="sft", epochs=1, batch_size=4, device="cpu", load_in=load_in, max_length=64),
        )
        row["repair"] = True
        row["repair_note"] = f"LoRA slice: {info['sft']['steps']} step(s) on 4 rows, adapter {info['adapter_bytes']} B"
        row["repair_seconds"] = round(time.time() - t0, 1)
        try:  # the adapter as diagnose/evaluate serve it: merged into dense weights, or on top of packed ones
            from peft import PeftModel

            served, _ = load_causal_lm(path, device="cpu", load_in=load_in, adapter=work / "adapter")
            row["adapter_served"] = "unmerged" if isinstance(served, PeftModel) else "merged"
            del served
        except Exception as e:
            row["adapter_served"] = f"failed: {_err(e)}"
    except Exception as e:
        row["repair"] = False
        row["repair_error"] = _err(e)
    finally:
        shutil.rmtree(work / "adapter", ignore_errors=True)
    return row


def table(res: dict) -> str:
    lines = ["| format | loads | diagnose | repair | accuracy (n) | where / why not |", "|---|---|---|---|---|---|"]

    def yn(v):
        return "yes" if v is True else "no" if v is False else "-"

    for r in res["rows"]:
        acc = f"{r['accuracy']:.1%} ({r['accuracy_n']})" if r.get("accuracy") is not None else "-"
        why = r.get("reason") or r.get("repair_error") or r.get("diagnose_error") or r.get("accuracy_error") or ""
        lines.append(
            f"| {r['format']} | {yn(r.get('loads'))} | {yn(r.get('diagnose'))} | {yn(r.get('repair'))} "
            f"| {acc} | {r['device'] if not why else r['device'] + ': ' + why[:120]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="accuracy problems per format")
    ap.add_argument("--diagnose-n", type=int, default=10, help="problems in each format's diagnose run")
    ap.add_argument("--only", default=None, help="comma-separated format-name prefixes")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "formats.json"))
    args = ap.parse_args(argv)
    from silverbullet.generation.hf import set_cpu_threads

    threads = set_cpu_threads()
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() else {}
    here = {"cpu": cpu_flags(), "threads": threads, "versions": versions()}
    # --only re-measures some rows: the file's machine and versions stay those of the full run, and
    # each re-measured row carries its own
    res = {**here, **{k: old[k] for k in here if args.only and k in old}, "benchmark": "synthetic/eval",
           "rows": [r for r in old.get("rows", []) if args.only]}  # fmt: skip
    names = [k for k in FORMATS if not args.only or any(k.startswith(p) for p in args.only.split(","))]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            row = bench_row(name, FORMATS[name], args.n, Path(tmp), args.diagnose_n)
            if args.only:
                row["measured_on"] = here
            res["rows"] = [r for r in res["rows"] if r["format"] != name] + [row]
            res["table"] = table(res)
            out.write_text(json.dumps(res, indent=1))
            print(json.dumps(row), flush=True)
    print(res["table"])


if __name__ == "__main__":
    main()
