"""Generations from files: lm-evaluation-harness samples, OpenAI-style responses, vLLM dumps, any JSONL.

One more *source* of solutions beside the HF and vLLM generators: each reader streams its file line
by line (a 2 GB file is never read whole; rows keep only what diagnosis needs, not the prompts or
the docs) and yields `SampleRow`s. `pair_samples` matches two files by document id or question hash,
never by position, and reports what did not match. Everything after this module sees plain
`Problem`s and `Generation`s and cannot tell where they came from.

Formats (`detect_format` picks one from the first row; `--samples-format` overrides):
- lm-eval: `samples_<task>_<timestamp>.jsonl` from `lm_eval --log_samples` (one row per document and
  filter: `doc_id`, `doc`, `target`, `arguments`, `resps`, `filtered_resps`, `filter`, metric fields);
- openai: chat.completion / text_completion objects, bare or batch-style (`custom_id`, `response.body`),
  optionally with the `request` beside them; per-token `logprobs` with `top_logprobs` give margins;
- vllm: `RequestOutput` as a dict (`request_id`, `prompt`, `outputs[0].text`, `token_ids`, `logprobs`);
- jsonl: any rows through a field mapping (question, answer, id, text, margins, token_ends).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError

FORMATS = ("lm-eval", "openai", "vllm", "jsonl")
_LMEVAL_NAME_RE = re.compile(r"^samples_(?P<task>.+?)_(?P<ts>\d{4}-\d{2}-\d{2}T[\d\-.:]+)\.jsonl$")
_QUESTION_PREFIX_RE = re.compile(r"^\s*Question:\s*(.*?)\s*(?:Answer:)?\s*$", re.DOTALL)
# Field names tried, in order, when a mapped JSONL row has no explicit mapping for a target.
JSONL_GUESSES = {
    "question": ("question", "problem", "Question", "input", "prompt"),
    "answer": ("answer", "gold_answer", "final_answer", "gold", "target", "ground_truth", "Answer"),
    "id": ("problem_id", "id", "unique_id", "doc_id", "idx", "custom_id"),
    "text": ("text", "completion", "response", "output", "generation", "model_output", "prediction"),
    "margins": ("margins",),
    "token_ends": ("token_ends",),
}
_MAX_QUESTION_CHARS = 20_000
MAX_PROMPT_CHARS = 20_000


@dataclass
class SampleRow:
    """One model solution read from a file: what pairing, grading and attribution need, no more."""

    line: int
    text: str
    id: str | None = None  # the file's document id (lm-eval doc_id, custom_id, a mapped id field)
    question: str | None = None
    answer: str | None = None  # the gold answer the file states, when it does
    solution: str | None = None  # a gold solution the file holds (lm-eval docs often do)
    prompt: str | None = None  # the prompt as sent, when the file has it as text
    margins: list[float] | None = None  # top-1 minus top-2 log-prob per token
    token_ends: list[int] | None = None
    n_tokens: int = 0
    scores: dict[str, float] = field(default_factory=dict)  # the file's own per-sample metrics
    doc_hash: str | None = None  # lm-eval's hash of the document: same id, other document = other data


@dataclass
class SampleSet:
    """The rows of one file, by pairing key, plus what the reader saw on the way."""

    path: Path
    format: str
    task: str | None = None
    rows: list[SampleRow] = field(default_factory=list)
    duplicates: list[tuple[str, int, int]] = field(default_factory=list)  # (id, line, first line)
    sha256: str = ""
    lines: int = 0


def question_hash(question: str) -> str:
    """Key for pairing rows without ids: whitespace-normalised, case-folded question text."""
    norm = " ".join(question.split()).casefold()
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()[:16]


def question_from_prompt(prompt: str) -> str:
    """'Question: <q>\\n' (our prompt, lm-eval's gsm8k zero-shot) -> '<q>'; other prompts as they are."""
    m = _QUESTION_PREFIX_RE.match(prompt[:_MAX_QUESTION_CHARS])
    return m.group(1) if m else prompt.strip()


# ---------------------------------------------------------------------------------- streaming


def iter_jsonl(path: Path, lines: Iterable[bytes] | None = None, digest: Any = None) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line, read one line at a time. A malformed line is a
    UserError naming the file and line, raised as soon as that line is reached."""
    own = lines is None
    f = path.open("rb") if own else None
    try:
        for lineno, raw in enumerate(f if own else lines, start=1):
            if digest is not None:
                digest.update(raw)
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                msg = getattr(e, "msg", None) or type(e).__name__
                raise UserError(f"{path}:{lineno}: malformed JSON ({msg}); fix or remove that line") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row
    finally:
        if f is not None:
            f.close()


def resolve_samples_path(path: str | Path) -> Path:
    """A samples file, or the one samples file in a folder (lm-eval writes them in a model folder)."""
    p = Path(path).expanduser()
    if p.is_file():
        return p
    if p.is_dir():
        found = sorted(p.rglob("samples_*.jsonl")) or sorted(p.rglob("*.jsonl"))
        if len(found) == 1:
            return found[0]
        if not found:
            raise UserError(f"{p}: no samples_*.jsonl or *.jsonl file in this folder")
        names = ", ".join(str(f.relative_to(p)) for f in found[:5])
        raise UserError(f"{p}: {len(found)} sample files in this folder ({names}...); pass one file")
    raise UserError(f"samples file {p} not found")


def detect_format(path: Path) -> str:
    """The format of a samples file, from its name and its first row."""
    if _LMEVAL_NAME_RE.match(path.name):
        return "lm-eval"
    for _, row in iter_jsonl(path):
        if "doc_id" in row and "resps" in row:
            return "lm-eval"
        body = _openai_body(row)
        if body is not None:
            return "openai"
        outs = row.get("outputs")
        if isinstance(outs, list) and outs and isinstance(outs[0], dict) and "text" in outs[0]:
            return "vllm"
        return "jsonl"
    raise UserError(f"{path}: the file is empty")


def read_samples(
    path: str | Path,
    fmt: str = "auto",
    fields: dict[str, str] | None = None,
    lines: Iterable[bytes] | None = None,
) -> SampleSet:
    """Read one samples file (streamed). `lines` replaces the file's content (tests stream from it)."""
    p = Path(path) if lines is not None else resolve_samples_path(path)
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt not in FORMATS:
        raise UserError(f"--samples-format {fmt!r} is not known; use auto, {', '.join(FORMATS)}")
    if fields and fmt != "jsonl":
        raise UserError(f"--samples-fields applies to --samples-format jsonl, not {fmt} ({p})")
    digest = hashlib.sha256()
    out = SampleSet(path=p, format=fmt)
    m = _LMEVAL_NAME_RE.match(p.name)
    out.task = m.group("task") if m and fmt == "lm-eval" else None
    rows = iter_jsonl(p, lines, digest)
    if fmt == "jsonl":
        produced = _mapped_rows(p, rows, fields or {})
    else:
        produced = {"lm-eval": _lmeval_rows, "openai": _openai_rows, "vllm": _vllm_rows}[fmt](p, rows)
    by_id: dict[str, SampleRow] = {}
    first_line: dict[str, int] = {}
    for key, row in produced:
        if key is None:
            out.rows.append(row)
            continue
        if key in first_line:
            out.duplicates.append((str(key), row.line, first_line[key]))
            continue
        first_line[key] = row.line
        if fmt == "lm-eval":
            if row.id in by_id:  # a new filter of a known document
                _merge_filter(by_id[row.id], row, p)
                continue
            by_id[row.id] = row
        out.rows.append(row)
    out.sha256 = digest.hexdigest()
    if not out.rows:
        raise UserError(f"{p}: no samples in this file")
    return out


def _merge_filter(first: SampleRow, other: SampleRow, path: Path) -> None:
    """lm-eval writes a row per (document, filter); the generations are the same, the metrics are not."""
    if other.text != first.text:
        raise UserError(
            f"{path}:{other.line}: doc_id {first.id} has another generation than on line {first.line}; "
            "a samples file holds one run of one task"
        )
    first.scores.update(other.scores)


# ---------------------------------------------------------------------------------- lm-eval


def _text_of(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _prompt_of(value: Any) -> str | None:
    """A prompt worth keeping: few-shot contexts of a few thousand characters are; a megabyte of
    context per row is not (confirmation then uses the step-format prompt)."""
    return value if isinstance(value, str) and len(value) <= MAX_PROMPT_CHARS else None


def _lmeval_rows(path: Path, rows: Iterable[tuple[int, dict]]) -> Iterator[tuple[Any, SampleRow]]:
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        for name in ("doc_id", "resps"):
            if name not in row:
                raise UserError(f"{where}: no {name!r} field; is this an lm-eval samples file (--log_samples)?")
        resps = row["resps"]
        if not isinstance(resps, list):
            raise UserError(
                f"{where}: 'resps' is {type(resps).__name__}, not a list (lm-eval writes [[generation, ...]])"
            )
        first = resps[0] if resps else None
        text = first[0] if isinstance(first, list) and first else first
        if not isinstance(text, str):
            raise UserError(f"{where}: 'resps' holds no generated text ({json.dumps(resps)[:60]}); "
                            "only generate_until tasks have solutions to diagnose")
        doc = row.get("doc") if isinstance(row.get("doc"), dict) else {}
        question, answer, solution = _doc_fields(doc)
        target = row.get("target")
        if answer is None and isinstance(target, (str, int, float)) and str(target).strip():
            answer = _gold_from_text(str(target))
            solution = solution or (str(target) if "####" in str(target) else None)
        prompt = None
        args = row.get("arguments")
        if isinstance(args, dict):
            prompt = _prompt_of((args.get("gen_args_0") or {}).get("arg_0"))
        elif isinstance(args, list) and args and isinstance(args[0], list) and args[0]:
            prompt = _prompt_of(args[0][0])
        if question is None and prompt is not None:
            question = question_from_prompt(prompt)
        filt = row.get("filter") or "none"
        scores = {}
        for metric in row.get("metrics") or []:
            v = row.get(metric)
            if isinstance(v, (int, float)):  # bools too
                scores[f"{metric},{filt}"] = float(v)
        doc_id = str(row["doc_id"])
        yield (doc_id, filt), SampleRow(
            line=lineno,
            text=text,
            id=doc_id,
            question=question,
            answer=answer,
            solution=solution,
            prompt=prompt,
            scores=scores,
            doc_hash=_text_of(row.get("doc_hash")),
        )


def _doc_fields(doc: dict) -> tuple[str | None, str | None, str | None]:
    """Question, gold answer and gold solution of an lm-eval document (gsm8k, MATH, AIME field names)."""
    from silverbullet.benchmarks.jsonl import GUESSES, answer_text, split_gsm8k_answer
    from silverbullet.segmentation import boxed as _boxed

    def first(names):
        for n in names:
            if n in doc and doc[n] is not None and str(doc[n]).strip():
                return doc[n]
        return None

    q = first(GUESSES["question"])
    sol = first(("solution", "rationale"))
    ans = first(("answer", "Answer", "final_answer", "target", "ground_truth"))
    solution = str(sol) if sol is not None else None
    answer = None
    if ans is not None:
        answer = answer_text(ans)
        if "####" in answer:
            solution = solution or answer
            answer = split_gsm8k_answer(answer)
    if answer is None and solution:
        answer = _boxed(solution) or split_gsm8k_answer(solution)
    return (str(q).strip() if q is not None else None), answer, solution


def _gold_from_text(target: str) -> str:
    from silverbullet.benchmarks.jsonl import split_gsm8k_answer
    from silverbullet.segmentation import boxed as _boxed

    return split_gsm8k_answer(target) or _boxed(target) or target.strip()


# ---------------------------------------------------------------------------------- OpenAI style


def _openai_body(row: dict) -> dict | None:
    """The completion object of a row: the row itself, or `response.body` / `response` (batch output)."""
    for cand in (row, (row.get("response") or {}).get("body") if isinstance(row.get("response"), dict) else None,
                 row.get("response")):
        if isinstance(cand, dict) and isinstance(cand.get("choices"), list):
            return cand
    return None


def _openai_rows(path: Path, rows: Iterable[tuple[int, dict]]) -> Iterator[tuple[Any, SampleRow]]:
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        body = _openai_body(row)
        if body is None:
            err = row.get("error")
            why = f" (the request failed: {json.dumps(err)[:80]})" if err else ""
            raise UserError(f"{where}: no completion object with 'choices'{why}")
        if not body["choices"] or not isinstance(body["choices"][0], dict):
            raise UserError(f"{where}: 'choices' is empty")
        choice = body["choices"][0]
        msg = choice.get("message")
        text = msg.get("content") if isinstance(msg, dict) else choice.get("text")
        if not isinstance(text, str):
            raise UserError(f"{where}: the first choice has no text (message.content or text)")
        request = row.get("request") if isinstance(row.get("request"), dict) else {}
        request = request.get("body", request) if isinstance(request.get("body"), dict) else request
        meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        prompt = _prompt_of(request.get("prompt")) or _prompt_of(row.get("prompt"))
        question = _text_of(row.get("question")) or _text_of(meta.get("question"))
        messages = request.get("messages") or row.get("messages")
        if question is None and isinstance(messages, list):
            users = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == "user"]
            if users and isinstance(users[-1], str):
                question = question_from_prompt(users[-1])
        if question is None and prompt is not None:
            question = question_from_prompt(prompt)
        answer = row.get("answer", meta.get("answer"))
        rid = row.get("custom_id", row.get("problem_id", meta.get("problem_id")))
        margins, ends, n = _openai_margins(choice.get("logprobs"), text)
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
        n_tokens = n or int(usage.get("completion_tokens") or 0)
        yield _id_key(rid), SampleRow(
            line=lineno,
            text=text,
            id=None if rid is None else str(rid),
            question=question,
            answer=None if answer is None else str(answer).strip(),
            prompt=prompt,
            margins=margins,
            token_ends=ends,
            n_tokens=n_tokens,
        )


def _id_key(rid: Any) -> str | None:
    return None if rid is None else str(rid)


def _top2(values: list[float]) -> float | None:
    vals = sorted(values, reverse=True)
    return round(vals[0] - vals[1], 4) if len(vals) >= 2 else None


def _finish_margins(tokens: list[str], margins: list[float | None], text: str):
    """Margins with token ends, or (None, None, n) when a top-2 is missing or the tokens do not spell
    the text (then no margin can be placed on a step)."""
    n = len(tokens)
    if not tokens or any(m is None for m in margins):
        return None, None, n
    ends, pos = [], 0
    for t in tokens:
        pos += len(t)
        ends.append(pos)
    if pos != len(text) and "".join(tokens)[: len(text)] != text:
        return None, None, n
    return margins, [min(e, len(text)) for e in ends], n


def _openai_margins(logprobs: Any, text: str):
    """Chat: logprobs.content[i].top_logprobs[j].logprob; completions: logprobs.tokens + top_logprobs dicts."""
    if not isinstance(logprobs, dict):
        return None, None, 0
    content = logprobs.get("content")
    if isinstance(content, list):
        tokens, margins = [], []
        for e in content:
            if not isinstance(e, dict):
                return None, None, 0
            tokens.append(str(e.get("token", "")))
            tops = [t.get("logprob") for t in e.get("top_logprobs") or [] if isinstance(t, dict)]
            margins.append(_top2([float(v) for v in tops if isinstance(v, (int, float))]))
        return _finish_margins(tokens, margins, text)
    toks, tops = logprobs.get("tokens"), logprobs.get("top_logprobs")
    if isinstance(toks, list):
        margins = []
        for i in range(len(toks)):
            d = tops[i] if isinstance(tops, list) and i < len(tops) and isinstance(tops[i], dict) else {}
            margins.append(_top2([float(v) for v in d.values() if isinstance(v, (int, float))]))
        return _finish_margins([str(t) for t in toks], margins, text)
    return None, None, 0


# ---------------------------------------------------------------------------------- vLLM


def _vllm_rows(path: Path, rows: Iterable[tuple[int, dict]]) -> Iterator[tuple[Any, SampleRow]]:
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        outs = row.get("outputs")
        if not isinstance(outs, list) or not outs or not isinstance(outs[0], dict):
            raise UserError(f"{where}: 'outputs' is not a list of completions (a vLLM RequestOutput dump)")
        o = outs[0]
        text = o.get("text")
        if not isinstance(text, str):
            raise UserError(f"{where}: outputs[0] has no 'text'")
        prompt = _prompt_of(row.get("prompt"))
        meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
        question = _text_of(row.get("question")) or _text_of(meta.get("question"))
        if question is None and prompt is not None:
            question = question_from_prompt(prompt)
        answer = row.get("answer", meta.get("answer"))
        rid = row.get("problem_id", row.get("request_id"))
        token_ids = o.get("token_ids") if isinstance(o.get("token_ids"), list) else []
        margins, ends, n = _vllm_margins(o.get("logprobs"), token_ids, text)
        yield _id_key(rid), SampleRow(
            line=lineno,
            text=text,
            id=None if rid is None else str(rid),
            question=question,
            answer=None if answer is None else str(answer).strip(),
            prompt=prompt,
            margins=margins,
            token_ends=ends,
            n_tokens=n or len(token_ids),
        )


def _vllm_margins(logprobs: Any, token_ids: list, text: str):
    """`logprobs` is one {token_id: {logprob, rank, decoded_token}} dict per generated token."""
    if not isinstance(logprobs, list) or len(logprobs) != len(token_ids) or not logprobs:
        return None, None, 0
    tokens, margins = [], []
    for tid, entry in zip(token_ids, logprobs):
        if not isinstance(entry, dict):
            return None, None, 0
        vals = {str(k): v for k, v in entry.items()}
        chosen = vals.get(str(tid))
        if not isinstance(chosen, dict) or not isinstance(chosen.get("decoded_token"), str):
            return None, None, 0
        tokens.append(chosen["decoded_token"])
        lps = [float(v["logprob"]) for v in vals.values() if isinstance(v, dict) and "logprob" in v]
        margins.append(_top2(lps))
    return _finish_margins(tokens, margins, text)


# ---------------------------------------------------------------------------------- mapped JSONL


def parse_fields(spec: str | None) -> dict[str, str]:
    """'question=problem,text=output.0' -> {'question': 'problem', 'text': 'output.0'}."""
    if not spec:
        return {}
    out = {}
    for part in spec.split(","):
        if "=" not in part:
            raise UserError(f"--samples-fields: {part!r} is not TARGET=FIELD (e.g. text=completion)")
        k, v = (s.strip() for s in part.split("=", 1))
        if k not in JSONL_GUESSES:
            raise UserError(f"--samples-fields: unknown target {k!r}; use {', '.join(JSONL_GUESSES)}")
        out[k] = v
    return out


def _mapped_rows(path: Path, rows: Iterable[tuple[int, dict]], fields: dict[str, str]):
    from silverbullet.benchmarks.jsonl import answer_text, get_field

    for lineno, row in rows:
        where = f"{path}:{lineno}"
        values: dict[str, Any] = {}
        for target, names in JSONL_GUESSES.items():
            if target in fields:
                try:
                    values[target] = get_field(row, fields[target])
                except KeyError:
                    raise UserError(
                        f"{where}: missing field {fields[target]!r} (for {target}); fields present: "
                        f"{', '.join(sorted(row))[:200]}"
                    ) from None
            else:
                name = next((n for n in names if n in row), None)
                if name is not None:
                    values[target] = row[name]
        text = values.get("text")
        if not isinstance(text, str):
            raise UserError(
                f"{where}: no generated text (looked for {', '.join(JSONL_GUESSES['text'])}); "
                "pass --samples-fields text=FIELD"
            )
        margins, ends = values.get("margins"), values.get("token_ends")
        ok = isinstance(margins, list) and isinstance(ends, list) and len(margins) == len(ends) and margins
        q = values.get("question")
        rid = values.get("id")
        yield _id_key(rid), SampleRow(
            line=lineno,
            text=text,
            id=None if rid is None else str(rid),
            question=question_from_prompt(q) if isinstance(q, str) else None,
            answer=None if values.get("answer") is None else answer_text(values["answer"]),
            margins=[float(m) for m in margins] if ok else None,
            token_ends=[int(e) for e in ends] if ok else None,
            n_tokens=len(margins) if ok else 0,
        )


# ---------------------------------------------------------------------------------- pairing


@dataclass
class Pairing:
    """Rows of the two files that are the same problem, and what was left over."""

    by: str  # "id" or "question"
    pairs: list[tuple[SampleRow, SampleRow]]
    unmatched: dict[str, int]
    duplicates: dict[str, int]


def pair_samples(ref: SampleSet, quant: SampleSet) -> Pairing:
    """Match the two files' rows by document id when both files give every row one, else by question
    hash. Files of two tasks, documents that differ under one id, or no overlap are errors."""
    if ref.task and quant.task and ref.task != quant.task:
        raise UserError(
            f"{quant.path}:1: task {quant.task!r}, but {ref.path} is task {ref.task!r}; "
            "pass samples of the same task for both models"
        )
    both_ids = all(r.id is not None for r in ref.rows) and all(r.id is not None for r in quant.rows)
    both_q = all(r.question for r in ref.rows) and all(r.question for r in quant.rows)
    by = None
    if both_ids:
        ref_ids = {r.id for r in ref.rows}
        if any(r.id in ref_ids for r in quant.rows):
            by = "id"
    if by is None and both_q:
        by = "question"
    if by is None:
        side = ref if not all(r.id is not None or r.question for r in ref.rows) else quant
        bad = next((r for r in side.rows if not r.question), side.rows[0])
        raise UserError(
            f"{side.path}:{bad.line}: rows have neither ids shared with the other file nor a question to "
            "pair on; map an id or a question field (--samples-fields)"
        )

    def key(r: SampleRow) -> str:
        return r.id if by == "id" else question_hash(r.question or "")

    dups = {"reference": len(ref.duplicates), "quantized": len(quant.duplicates)}
    index: dict[str, SampleRow] = {}
    for r in ref.rows:
        k = key(r)
        if k in index:
            dups["reference"] += 1
            continue
        index[k] = r
    pairs, seen, unmatched_q = [], set(), 0
    for r in quant.rows:
        k = key(r)
        if k in seen:
            dups["quantized"] += 1
            continue
        seen.add(k)
        a = index.get(k)
        if a is None:
            unmatched_q += 1
            continue
        if a.doc_hash and r.doc_hash and a.doc_hash != r.doc_hash or (
            by == "id" and a.question and r.question and question_hash(a.question) != question_hash(r.question)
        ):
            raise UserError(
                f"{quant.path}:{r.line}: document {k} differs from {ref.path}:{a.line} (another question "
                "under the same id): the files are of different tasks or datasets"
            )
        pairs.append((a, r))
    if not pairs:
        raise UserError(
            f"{quant.path}:1: no problem in this file matches one in {ref.path} (by {by}); "
            "pass samples of the same task and documents for both models"
        )
    order = {id(a): i for i, a in enumerate(ref.rows)}
    pairs.sort(key=lambda p: order[id(p[0])])
    return Pairing(
        by=by,
        pairs=pairs,
        unmatched={"reference": len(index) - len(pairs), "quantized": unmatched_q},
        duplicates=dups,
    )
