"""The embedded default backend: batched generation with HF transformers, on CPU or GPU.

Prompts are sorted by length and left-padded into batches (so a batch wastes little compute),
decoded greedily with the KV cache, stopped at the answer line (eos or "The answer is: ...\\n"),
and cut right after it. On CPU, greedy batches drop each row once it has stopped (pruning_decode),
so a few long solutions no longer keep the rest computing; elsewhere `generate()` runs them, and
margins (top-1 minus top-2 log-prob) are recorded per step by a logits processor instead of
`output_logits`, which would keep steps x batch x vocab floats alive.

`GenerationConfig(compile=True)` (CLI `--compile`), on CUDA: transformers' static KV cache
(`cache_implementation="static"`), whose decode step `generate()` runs through `torch.compile`
(mode "reduce-overhead": CUDA graphs). Prefill stays eager, so prompt lengths need no buckets; the
decode step's shapes are the batch size and the cache length, so a batch is padded to the batch size
(copies of its last prompt, dropped after) and the cache length is rounded up to a bucket: later
batches reuse the compiled graph instead of recompiling. The margin recorder and the answer-line stop
run between compiled steps, outside the graph. A model with grouped KV heads decodes with
gqa_attention's SDPA, which reads the static cache without copying it per query head.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Sequence
from typing import Any

from silverbullet.generation import gqa_attention
from silverbullet.generation.base import GenerationConfig, GenOutput, ScoreOutput, progress
from silverbullet.generation.loading import (
    fingerprint_model_source,
    fingerprint_module,
    load_causal_lm,
    resolve_device,
)
from silverbullet.generation.pruning_decode import prune_decode
from silverbullet.generation.static_decode import RowStop, StaticDecoder, supports_static_decode
from silverbullet.prompting import ANSWER_LINE_RES
from silverbullet.segmentation import open_thinking_tag, thinking_split

# Static-cache lengths are rounded up to this many tokens (each new length compiles the decode again).
COMPILE_CACHE_BUCKET = 128

ANSWER_LINE_RE = ANSWER_LINE_RES[0]  # "The answer is: ..." (what truncate_after_answer cuts after)
# Special tokens that end a chat turn (or a document) in common templates: ChatML, Llama 3, Phi,
# Gemma, Command R, DeepSeek. A chat model writes one after its answer; generation stops there.
END_OF_TURN_TOKENS = frozenset(
    {
        "<|im_end|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|end|>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<end_of_turn>",
        "<|end_of_turn|>",
        "<|END_OF_TURN_TOKEN|>",
        "<\uff5cend\u2581of\u2581sentence\uff5c>",
    }
)


def stop_token_ids(tokenizer: Any, eos: Any = None) -> list[int]:
    """Token ids that end a generation: `eos` (the generation config's, an int or a list), the
    tokenizer's eos, and the special tokens of this vocabulary that end a chat turn."""
    ids: set[int] = set()
    for v in (eos, getattr(tokenizer, "eos_token_id", None)):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    for i, t in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(t, "content", str(t)) in END_OF_TURN_TOKENS:
            ids.add(int(i))
    return sorted(ids)


def add_special_tokens_for(tokenizer: Any, prompts: Sequence[str]) -> bool:
    """Whether tokenizing these prompts should add the tokenizer's special tokens: not when a chat
    template already wrote the bos token into them (it would be doubled)."""
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and prompts and all(p.startswith(bos) for p in prompts))


def answer_line_end(text: str, open_tag: str = "") -> int | None:
    """Char offset just past the first complete answer line (its newline included), else None.
    A reasoning trace's lines do not count ("The answer is: 7" while thinking is not the answer):
    only the response after it is searched. `open_tag`: the prompt left a trace open
    (`segmentation.open_thinking_tag`), so the text starts inside it."""
    _, start = thinking_split(open_tag + text)
    if start is None:
        return None
    start = max(start - len(open_tag), 0)
    while True:
        nl = text.find("\n", start)
        if nl < 0:
            return None
        if ANSWER_LINE_RE.match(text[start:nl]):
            return nl + 1
        start = nl + 1


def cut_after_answer(text: str, open_tag: str = "") -> str:
    """Drop what follows the answer line. Like `prompting.truncate_after_answer`, but it keeps the
    text a prefix of what was generated (no re-stripping), so token offsets stay valid. An answer
    line the model never ended (it hit max_new_tokens) is kept as written."""
    end = answer_line_end(text, open_tag)
    return text if end is None else text[:end]


def cpu_cores() -> int:
    """The cores this process may run on (containers often allow fewer than the host has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def set_cpu_threads() -> int:
    """Use the cores this process may run on, or OMP_NUM_THREADS where it is set (a number): processes
    that share the cores (`diagnose --devices cpu,cpu`) each get their part, not all of them."""
    import torch

    env = os.environ.get("OMP_NUM_THREADS", "")
    n = int(env) if env.isdigit() and int(env) > 0 else cpu_cores()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


def _newline_mask(tokenizer: Any, size: int) -> Any:
    """Bool tensor over the vocabulary: does this token's text contain a newline?"""
    import torch

    n = len(tokenizer)
    texts = tokenizer.batch_decode(
        [[i] for i in range(n)], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    mask = torch.zeros(max(size, n), dtype=torch.bool)
    mask[:n] = torch.tensor(["\n" in t for t in texts], dtype=torch.bool)
    return mask


def _make_answer_stop(tokenizer: Any, prompt_len: int, newline_mask: Any, open_tags: Sequence[str]) -> Any:
    from transformers import StoppingCriteria

    class AnswerLineStop(StoppingCriteria):
        """Stop a row once it has written a complete answer line. Only rows whose newest token holds
        a newline are decoded, so the check costs a decode every line, not every token."""

        def __init__(self) -> None:
            self.done: Any = None
            self.mask: Any = None

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            if self.done is None:
                self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
                self.mask = newline_mask.to(input_ids.device)  # once, not a host-to-device copy a step
            last = input_ids[:, -1]
            mask = self.mask
            cand = mask[last.clamp(max=mask.numel() - 1)] & ~self.done
            for row in torch.nonzero(cand).flatten().tolist():
                text = tokenizer.decode(
                    input_ids[row, prompt_len:], skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
                if answer_line_end(text, open_tags[row]) is not None:
                    self.done[row] = True
            return self.done.clone()

    return AnswerLineStop()


def row_stop(tokenizer: Any, stop_ids: set[int], newline_ids: frozenset[int], open_tags: Sequence[str] = ()) -> RowStop:
    """The plain path's stopping rule for one row, applied after the fact: keep the tokens before
    the first eos/pad, or up to and including the token that completes an answer line (checked, as
    `AnswerLineStop` does, only at tokens that hold a newline). `open_tags[row]`: that row's prompt
    left a reasoning trace open."""

    def stop(ids: Sequence[int], start: int, row: int = 0) -> int | None:
        open_tag = open_tags[row] if row < len(open_tags) else ""
        for k in range(start, len(ids)):
            t = ids[k]
            if t in stop_ids:
                return k
            if t in newline_ids:
                text = tokenizer.decode(ids[: k + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)
                if answer_line_end(text, open_tag) is not None:
                    return k + 1
        return None

    return stop


def _make_margin_recorder() -> Any:
    from transformers import LogitsProcessor

    class MarginRecorder(LogitsProcessor):
        """Records top-1 minus top-2 of the next-token distribution at each step. Log-prob
        differences equal logit differences, so no softmax is needed. It must run before any
        temperature or top-p warper (they would distort the distribution)."""

        def __init__(self) -> None:
            self.steps: list[Any] = []

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            top = scores.float().topk(2, dim=-1).values
            self.steps.append(top[:, 0] - top[:, 1])  # stays on the device: no sync a step
            return scores

    return MarginRecorder()


def token_ends(tokenizer: Any, ids: Sequence[int], limit: int | None = None) -> list[int]:
    """Char offset where each token ends in decode(ids): the length of each prefix's decoding,
    made monotone and capped at `limit` (byte-split characters can decode oddly mid-way)."""
    if not ids:
        return []
    prefixes = tokenizer.batch_decode(
        [list(ids[: i + 1]) for i in range(len(ids))],
        skip_special_tokens=True,
        clean_up_tokenization_spaces=False,
    )
    out, hi = [], 0
    for p in prefixes:
        hi = max(hi, len(p))
        out.append(hi if limit is None else min(hi, limit))
    return out


class HFGenerator:
    """Generator over a transformers causal LM. Loads lazily, so a fully cached run never loads
    the model; pass `model`/`tokenizer` to wrap one already in memory (after training, say)."""

    # Greedy CPU batches drop rows once they have stopped (pruning_decode); False: generate() as on GPU
    prune_on_cpu = True

    def __init__(
        self,
        path_or_id: str | os.PathLike | None = None,
        *,
        tag: str = "model",
        device: str = "auto",
        dtype: Any = "auto",
        adapter: str | os.PathLike | None = None,
        trust_remote_code: bool = False,
        model: Any = None,
        tokenizer: Any = None,
        fingerprint: str | None = None,
        load_in: str | None = None,
    ) -> None:
        if path_or_id is None and (model is None or tokenizer is None):
            raise ValueError("pass a model path/id, or both model and tokenizer")
        self.tag = tag
        self.path_or_id = path_or_id
        self.dtype = dtype
        self.adapter = adapter
        self.load_in = load_in  # bitsandbytes at load time: "4bit" | "8bit"
        self.trust_remote_code = trust_remote_code
        self.device = resolve_device(device) if model is None else str(next(model.parameters()).device)
        self._model, self._tokenizer = model, tokenizer
        self._fingerprint = fingerprint
        self._newlines: Any = None
        self._newline_id_set: frozenset[int] | None = None
        self._decoders: dict[tuple[int, bool], StaticDecoder] = {}  # (rows, compiled) -> its static cache
        self._compile_noted = False
        self._gqa_checked = False
        if self.device == "cpu":
            set_cpu_threads()

    # -- lazy state ------------------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            if self.path_or_id is not None:  # from files: the same before and after loading
                self._fingerprint = fingerprint_model_source(
                    self.path_or_id, dtype=self.dtype, device=self.device, adapter=self.adapter, load_in=self.load_in
                )
            else:
                self._fingerprint = fingerprint_module(self.model)
        return self._fingerprint

    def _load(self) -> None:
        self._model, self._tokenizer = load_causal_lm(
            self.path_or_id,
            device=self.device,
            dtype=self.dtype,
            trust_remote_code=self.trust_remote_code,
            adapter=self.adapter,
            load_in=self.load_in,
        )

    @property
    def model(self) -> Any:
        if self._model is None:
            self._load()
        return self._model

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._load()
        return self._tokenizer

    def _eos_ids(self) -> list[int]:
        gen_eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        return stop_token_ids(self.tokenizer, gen_eos)

    # -- generation ------------------------------------------------------------------------------
    def generate(self, prompts: list[str], config: GenerationConfig | None = None) -> list[GenOutput]:
        """Completions for `prompts`, in their order."""
        config = config or GenerationConfig()
        if not prompts:
            return []
        import torch

        tok = self.tokenizer
        special = add_special_tokens_for(tok, prompts)
        lengths = [len(ids) for ids in tok(list(prompts), add_special_tokens=special)["input_ids"]]
        order = sorted(range(len(prompts)), key=lambda i: -lengths[i])
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        results: list[GenOutput | None] = [None] * len(prompts)
        if not config.greedy:
            torch.manual_seed(config.seed)
        for batch in progress(batches, f"generating ({self.tag})", config.progress):
            outs = self._generate_fitting([prompts[i] for i in batch], config)
            for i, out in zip(batch, outs, strict=True):
                results[i] = out
        return results  # type: ignore[return-value]

    def _generate_fitting(self, prompts: list[str], config: GenerationConfig) -> list[GenOutput]:
        """One batch; on CUDA out-of-memory, the same prompts in halves (and halves of those), so a
        batch size too large for the GPU costs a retry, not the run. Later batches start at the size
        that fitted."""
        import torch

        cap = getattr(self, "_fits", None) or len(prompts)
        if len(prompts) > cap:
            chunks = [prompts[i : i + cap] for i in range(0, len(prompts), cap)]
            return [o for chunk in chunks for o in self._generate_fitting(chunk, config)]
        try:
            return self._generate_batch(prompts, config)
        except torch.OutOfMemoryError:
            pass  # retried below, outside the handler: its traceback holds the failed batch's tensors
        if len(prompts) == 1:
            from silverbullet.errors import UserError

            raise UserError(
                f"out of GPU memory generating one prompt with {self.tag}; lower max_new_tokens or use a "
                "GPU with more memory (or --backend vllm)"
            )
        self._decoders.clear()  # a static cache sized for the failed width would hold its memory
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        half = (len(prompts) + 1) // 2
        self._fits = half
        return self._generate_fitting(prompts[:half], config) + self._generate_fitting(prompts[half:], config)

    continue_from = generate

    def compiles(self, config: GenerationConfig) -> bool:
        """Whether this batch decodes through the static cache + compiled step: `config.compile` on
        a CUDA model. Elsewhere it is ignored, with one line (once per generator)."""
        if not config.compile:
            return False
        device = str(self._model.device) if self._model is not None else self.device
        quantizer = getattr(self._model, "hf_quantizer", None)
        if not device.startswith("cuda"):
            why = f"runs on a CUDA GPU, and this model is on {device}"
        elif quantizer is not None and not getattr(quantizer, "is_compileable", False):
            why = f"does not run {type(quantizer).__name__} models (transformers cannot compile them)"
        else:
            return True
        if not self._compile_noted:
            self._compile_noted = True
            from silverbullet import ui

            ui.note(f"--compile ignored for {self.tag}: the compiled decode (static KV cache + torch.compile) {why}.")
        return False

    def _generation_config(self, config: GenerationConfig, prompt_len: int = 0) -> Any:
        from transformers import GenerationConfig as HFGenerationConfig

        eos = self._eos_ids()
        return HFGenerationConfig(
            **(compile_settings(prompt_len, config.max_new_tokens) if self.compiles(config) else {}),
            max_new_tokens=config.max_new_tokens,
            do_sample=not config.greedy,
            # Neutral values, so nothing from the model's generation_config.json (repetition
            # penalty, top-k, ...) changes decoding or the logits the margin recorder sees.
            temperature=1.0,
            top_p=1.0,
            top_k=None if config.greedy else 0,
            typical_p=1.0,
            repetition_penalty=1.0,
            epsilon_cutoff=0.0,
            eta_cutoff=0.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            use_cache=True,
            eos_token_id=eos or None,
            pad_token_id=self.tokenizer.pad_token_id,
            return_dict_in_generate=True,
        )

    def _generate_batch(self, prompts: list[str], config: GenerationConfig) -> list[GenOutput]:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        tok, model = self.tokenizer, self.model
        n_real = len(prompts)
        compiled = self.compiles(config)
        # Grouped KV heads: decode attention without K/V copies, on CUDA with --compile and always on
        # CPU (a 1.5B GQA model decodes 1.9x faster there: docs/real-model.md)
        if (compiled or str(model.device) == "cpu") and not self._gqa_checked:
            self._gqa_checked = True
            gqa_attention.use_for(model)
        if compiled:  # one batch shape for every batch: no recompile for a short last batch
            width = min(config.batch_size, getattr(self, "_fits", None) or config.batch_size)
            prompts = list(prompts) + [prompts[-1]] * max(0, width - n_real)
        enc = tok(
            prompts,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=add_special_tokens_for(tok, prompts),
        ).to(model.device)
        prompt_len = enc["input_ids"].shape[1]
        tags = [open_thinking_tag(p) for p in prompts]
        if compiled and config.greedy and supports_static_decode(model):
            # the step is compiled where it pays (CUDA graphs); elsewhere, only in tests, it runs eager
            return self._generate_static(enc, n_real, config, tags, compile=str(model.device).startswith("cuda"))
        if self.prune_on_cpu and config.greedy and str(model.device) == "cpu" and not model.config.is_encoder_decoder:
            return self._generate_pruned(enc, n_real, config, tags)
        processors = LogitsProcessorList()
        recorder = None
        if config.margins:
            recorder = _make_margin_recorder()
            processors.append(recorder)
        if not config.greedy:
            from transformers import TemperatureLogitsWarper, TopPLogitsWarper

            # Ours, after the recorder, so margins come from the model's own distribution.
            processors.append(TemperatureLogitsWarper(config.temperature))
            if config.top_p < 1.0:
                processors.append(TopPLogitsWarper(config.top_p))
        stop = StoppingCriteriaList([_make_answer_stop(tok, prompt_len, self._newline_tensor(), tags)])
        t0 = time.perf_counter()
        # no_grad, not inference_mode, around the compiled step: transformers' own compile examples
        # (and bench/scale.py's measured runs) use it; the uncompiled path keeps inference_mode.
        with torch.no_grad() if compiled else torch.inference_mode():
            out = model.generate(
                **enc,
                generation_config=self._generation_config(config, prompt_len),
                logits_processor=processors,
                stopping_criteria=stop,
            )
        seqs = out.sequences[:n_real, prompt_len:].cpu().tolist()
        margins = torch.stack(recorder.steps, dim=1)[:n_real].tolist() if recorder and recorder.steps else None
        seconds = (time.perf_counter() - t0) / n_real
        stop_ids = set(self._eos_ids()) | {tok.pad_token_id}
        results = []
        for row, ids in enumerate(seqs):
            n = next((k for k, t in enumerate(ids) if t in stop_ids), len(ids))
            results.append(self._finish(ids[:n], margins[row][:n] if margins else None, seconds, config, tags[row]))
        return results

    def _generate_static(
        self, enc: Any, n_real: int, config: GenerationConfig, tags: Sequence[str], *, compile: bool
    ) -> list[GenOutput]:
        """Greedy decode through `StaticDecoder` (one compiled step per token, stops checked every
        few steps); the kept tokens are the plain path's (`row_stop` is its stopping rule)."""
        rows, prompt_len = enc["input_ids"].shape
        need = -(-(prompt_len + config.max_new_tokens) // COMPILE_CACHE_BUCKET) * COMPILE_CACHE_BUCKET
        decoders = self._decoders
        key = (rows, compile)
        if key not in decoders or decoders[key].cache_len < need:  # a longer prompt: a larger cache
            decoders.pop(key, None)
            decoders[key] = StaticDecoder(self.model, rows, need, compile=compile)
        t0 = time.perf_counter()
        stop = row_stop(self.tokenizer, set(self._eos_ids()) | {self.tokenizer.pad_token_id}, self._newline_ids(), tags)
        out = decoders[key].decode(
            enc["input_ids"], enc["attention_mask"], config.max_new_tokens, stop, margins=config.margins
        )
        seconds = (time.perf_counter() - t0) / n_real
        return [
            self._finish(out.tokens[r], out.margins[r] if out.margins is not None else None, seconds, config, tags[r])
            for r in range(n_real)
        ]

    def _generate_pruned(self, enc: Any, n_real: int, config: GenerationConfig, tags: Sequence[str]) -> list[GenOutput]:
        """Greedy decode on CPU through `prune_decode`: rows that stopped leave the batch, so a few long
        solutions no longer hold the rest (`row_stop` is the plain path's stopping rule)."""
        t0 = time.perf_counter()
        stop = row_stop(self.tokenizer, set(self._eos_ids()) | {self.tokenizer.pad_token_id}, self._newline_ids(), tags)
        out = prune_decode(
            self.model, enc["input_ids"], enc["attention_mask"], config.max_new_tokens, stop, margins=config.margins
        )
        seconds = (time.perf_counter() - t0) / n_real
        return [
            self._finish(out.tokens[r], out.margins[r] if out.margins is not None else None, seconds, config, tags[r])
            for r in range(n_real)
        ]

    def _newline_tensor(self) -> Any:
        """Which tokens hold a newline (once per generator): the answer-line stop looks only at them."""
        if self._newlines is None:
            self._newlines = _newline_mask(self.tokenizer, self.model.get_input_embeddings().num_embeddings)
        return self._newlines

    def _newline_ids(self) -> frozenset[int]:
        if self._newline_id_set is None:
            self._newline_id_set = frozenset(self._newline_tensor().nonzero().flatten().tolist())
        return self._newline_id_set

    def _finish(
        self, ids: list[int], margins: list[float] | None, seconds: float, config: GenerationConfig, open_tag: str = ""
    ) -> GenOutput:
        return finish_output(self.tokenizer, ids, margins, seconds, config, open_tag)

    # -- teacher forcing -------------------------------------------------------------------------
    def score(self, prompt: str, continuation: str) -> ScoreOutput:
        """How the model rates `continuation` after `prompt`, token by token (teacher-forced)."""
        return self.score_batch([(prompt, continuation)])[0]

    def score_batch(
        self, pairs: list[tuple[str, str]], batch_size: int = 16, hidden_layer: int | None = None
    ) -> list[ScoreOutput]:
        """`score` for many (prompt, continuation) pairs, right-padded into batches. Pairs are batched
        by length (less padding) and the vocabulary projection runs only from the batch's earliest
        continuation token on: on a 1.5B model on CPU the prompt's logits were a tenth of the work
        and most of the memory (batch x length x 152k floats). Results come back in input order.
        `hidden_layer`: also the hidden states of that layer (0 = embeddings, -1 = last) over the
        continuation's tokens, in `ScoreOutput.hidden`."""
        import torch

        tok, model = self.tokenizer, self.model
        rows = []
        for prompt, cont in pairs:
            p_ids = tok(prompt, add_special_tokens=add_special_tokens_for(tok, [prompt]))["input_ids"]
            if not p_ids and tok.bos_token_id is not None:
                p_ids = [tok.bos_token_id]
            if not p_ids:
                raise ValueError("score() needs a non-empty prompt (the first token needs a context)")
            c_ids = tok(cont, add_special_tokens=False)["input_ids"] if cont else []
            rows.append((p_ids, c_ids, cont))
        outs: list[ScoreOutput | None] = [None] * len(rows)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            chunk = [rows[i] for i in idx]
            width = max(len(p) + len(c) for p, c, _ in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            att = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (p, c, _) in enumerate(chunk):
                ids[r, : len(p) + len(c)] = torch.tensor(p + c)
                att[r, : len(p) + len(c)] = 1
            # logits for positions first..width-1, where `first` predicts the earliest continuation token
            first = min(len(p) for p, _, _ in chunk) - 1
            with torch.inference_mode():
                out = model(
                    input_ids=ids.to(model.device),
                    attention_mask=att.to(model.device),
                    logits_to_keep=width - first,
                    output_hidden_states=hidden_layer is not None,
                )
            logits = out.logits
            states = out.hidden_states[hidden_layer] if hidden_layer is not None else None
            for r, (i, (p, c, cont)) in enumerate(zip(idx, chunk)):
                if not c:
                    outs[i] = ScoreOutput([], [], [], [], hidden=None)
                    continue
                lg = logits[r, len(p) - 1 - first : len(p) + len(c) - 1 - first].float()
                logp = torch.log_softmax(lg, dim=-1)
                target = torch.tensor(c, device=lg.device)
                top = lg.topk(2, dim=-1).values
                outs[i] = ScoreOutput(
                    token_ids=list(c),
                    logprobs=logp.gather(1, target[:, None])[:, 0].cpu().tolist(),
                    margins=(top[:, 0] - top[:, 1]).cpu().tolist(),
                    token_ends=token_ends(tok, c, limit=len(cont)),
                    top_logprobs=logp.max(dim=-1).values.cpu().tolist(),
                    hidden=states[r, len(p) : len(p) + len(c)].float().cpu().numpy() if states is not None else None,
                )
        return [o for o in outs if o is not None]


def compile_settings(prompt_len: int, max_new_tokens: int) -> dict:
    """transformers generation-config fields for the compiled decode: a static KV cache, whose length
    is rounded up to COMPILE_CACHE_BUCKET (transformers keeps the largest length a model has seen, so
    a later, shorter batch reuses the graph), and the compile settings of the decode step. transformers
    compiles the forward itself (`_valid_auto_compile_criteria`: a compileable cache on CUDA)."""
    from transformers import CompileConfig

    need = prompt_len + max_new_tokens
    return {
        "cache_implementation": "static",
        "max_cache_len": -(-need // COMPILE_CACHE_BUCKET) * COMPILE_CACHE_BUCKET,
        # fullgraph False: a graph break (an attention backend's, say) falls back instead of failing;
        # dynamic False: each cache length / batch size gets its own specialised graph.
        "compile_config": CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead"),
    }


def finish_output(
    tok: Any,
    ids: list[int],
    margins: list[float] | None,
    seconds: float,
    config: GenerationConfig,
    open_tag: str = "",
) -> GenOutput:
    """Decode generated ids and cut after the answer line, keeping the tokens that start before the
    cut: one rule for every backend, so HF and vLLM outputs compare token for token. `open_tag`: the
    prompt left a reasoning trace open (an answer line inside it is not the end)."""
    full = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    text = cut_after_answer(full, open_tag)
    ends: list[int] | None = None
    n = len(ids)
    if config.margins or len(text) < len(full):
        ends = token_ends(tok, ids, limit=len(text))
        n = next((k + 1 for k, e in enumerate(ends) if e >= len(text)), len(ends))
        ends = ends[:n]
    return GenOutput(
        text=text,
        n_tokens=n,
        margins=[float(m) for m in margins[:n]] if margins is not None else None,
        token_ends=ends if config.margins else None,
        seconds=seconds,
    )
