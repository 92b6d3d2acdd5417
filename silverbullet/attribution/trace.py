"""What went wrong inside a reasoning trace (`<think>` ... `</think>`), read line by line.

The steps and the answer come from the response after the trace (segmentation.py); a quantized
reasoning model often goes wrong earlier, while thinking, and then carries the slip into its response
or never writes one. A trace is exploration, so a false equation is not a fault when the trace
corrects it ("48 + 24 = 73? No, 72"): the true value written after the claim on its line, or within
`CORRECTION_WINDOW` lines after it beside the same operands or a correction word, or the same operands
recomputed rightly. A line that just goes on from the true value has not noticed the slip. What the trace records:

- `fault`: the first false equation the trace does not correct (`arithmetic`; `used_later`: a later
  line writes its wrong result), or the line a loop starts at (`repetition`: one line written
  `LOOP_REPEATS` times, the way a model that cannot close its trace goes round), whichever is first;
- `answers`: each answer the trace states (answer lines, `\\boxed{}`), so a trace that found the right
  answer and then never closed reads as a failure to finish, not to reason;
- `corrected`: how many false equations the trace corrected itself.

Lines are the trace's non-blank lines, counted from 0 (`fault["line"]`, the answers' lines). Plain
arithmetic only (the step checker's grammar; never `eval`): TeX inside a trace is not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from silverbullet.attribution.align import align
from silverbullet.attribution.check import FAULTY, OK, check_step
from silverbullet.attribution.steps import StepInfo, analyse_step
from silverbullet.segmentation import STEP_PREFIX_RE, boxed_span, clean_answer, match_answer_line, thinking_split

CORRECTION_WINDOW = 3  # lines after a false equation in which the trace may correct it
LOOP_REPEATS = 3  # a line written this many times is a loop
_MIN_LOOP_CHARS = 8  # shorter lines ("Wait.", "Hmm.") repeat in healthy traces
MAX_TRACE_LINES = 2000  # bounded work on a runaway trace
MAX_ANSWERS = 50


@dataclass(frozen=True)
class TraceReading:
    lines: int
    fault: dict | None
    answers: tuple[tuple[int, str], ...]  # (line, answer) of each answer the trace states, in order
    corrected: int

    def evidence(self, gold_answer: str | None = None) -> dict:
        """The attribution's `evidence["trace"]`; with the gold answer, `right_answer_line`: the line
        where the trace first states it (None: never)."""
        from silverbullet.grading import is_correct

        out: dict = {"lines": self.lines, "corrected": self.corrected,
                     "answer": self.answers[-1][1] if self.answers else None}  # fmt: skip
        if gold_answer is not None:
            out["right_answer_line"] = next((k for k, a in self.answers if is_correct(a, gold_answer)), None)
        if self.fault is not None:
            out["fault"] = self.fault
        return out


def _norm(line: str) -> str:
    return re.sub(r"\s+", " ", STEP_PREFIX_RE.sub("", line)).strip().lower()


def _false_equation(info: StepInfo) -> tuple[Fraction, Fraction, dict] | None:
    """(true value, claimed value, evidence) of the step's first false equation."""
    for c in check_step(info).checks:
        if c.status == FAULTY and c.lhs_value is not None and c.rhs_value is not None:
            return c.lhs_value, c.rhs_value, c.evidence()
    return None


_CORRECTION_RE = re.compile(
    r"\b(?:no|wait|actually|mistake|wrong|oops|incorrect|correction|rather|I mean|recalculate|redo)\b", re.IGNORECASE
)


def _corrects(info: StepInfo, line: str, true: Fraction, claimed: Fraction, operands: tuple[Fraction, ...]) -> bool:
    """Whether a later line takes the slip back: it writes the true value beside the same operands
    (a recomputation) or beside a correction word ("no", "wait", "actually"), or recomputes the same
    operands rightly without the claimed result. A later line that merely goes on from the true value
    has not noticed the slip: the false equation stands. Written numbers only: an equation's evaluated
    side would hold the true value of the very slip repeated."""
    if true in info.numbers and (set(operands) <= set(info.numbers) or _CORRECTION_RE.search(line)):
        return True
    return (
        bool(operands) and set(operands) <= set(info.operands) and claimed not in info.numbers
        and check_step(info).status == OK
    )  # fmt: skip


def _corrected_in_line(line: str, ev: dict, true: Fraction) -> bool:
    """The true value written after the false claim, on its line ("48 + 24 = 73? No, it is 72")."""
    rhs = str(ev["equation"]).rsplit("=", 1)[-1].strip()
    eq = line.find("=")
    at = line.find(rhs, eq + 1) if rhs and eq >= 0 else -1
    return at >= 0 and true in analyse_step(line[at + len(rhs) :]).numbers


def _answers(lines: list[str]) -> tuple[tuple[int, str], ...]:
    """Each answer the trace states, in order: answer lines and `\\boxed{}` contents."""
    out = []
    for i, line in enumerate(lines):
        found = match_answer_line(line)
        box = boxed_span(line)
        if box is not None:
            found = clean_answer(line[box[0] : box[1]])
        if found:
            out.append((i, found))
    return tuple(out[:MAX_ANSWERS])


def trace_line_spans(text: str) -> list[tuple[int, int]] | None:
    """(start, end) in `text` of each non-blank line of its trace (the lines `read_trace` counts);
    None when the text has no trace. Repair cuts first-fault pairs at these offsets."""
    span, _ = thinking_split(text or "")
    if span is None:
        return None
    out, pos = [], span[0]
    for line in text[span[0] : span[1]].split("\n"):
        if line.strip():
            out.append((pos, pos + len(line)))
            if len(out) == MAX_TRACE_LINES:
                break
        pos += len(line) + 1
    return out


def _analysed(text: str, spans: list[tuple[int, int]]) -> list[StepInfo]:
    """The trace's lines as the step checker reads them (a `Step k:` prefix dropped)."""
    return [analyse_step(STEP_PREFIX_RE.sub("", text[a:b]), i) for i, (a, b) in enumerate(spans)]


def read_trace(text: str) -> TraceReading | None:
    """The trace of `text` read for faults; None when the text has no trace."""
    spans = trace_line_spans(text)
    if spans is None:
        return None
    lines = [text[a:b] for a, b in spans]
    infos = _analysed(text, spans)
    fault, corrected = None, 0
    for i, info in enumerate(infos):
        bad = _false_equation(info)
        if bad is None:
            continue
        true, claimed, ev = bad
        later = range(i + 1, min(len(infos), i + 1 + CORRECTION_WINDOW))
        if _corrected_in_line(lines[i], ev, true) or any(
            _corrects(infos[j], lines[j], true, claimed, info.operands) for j in later
        ):
            corrected += 1
            continue
        if fault is None:
            used = any(claimed in nxt.numbers for nxt in infos[i + 1 :])
            fault = {"line": i, "text": lines[i].strip()[:300], "check": "arithmetic", **ev, "used_later": used}
    loop = _loop_start(lines)
    if loop is not None and (fault is None or loop < fault["line"]):
        fault = {"line": loop, "text": lines[loop].strip()[:300], "check": "repetition"}
    return TraceReading(len(lines), fault, _answers(lines), corrected)


def _loop_start(lines: list[str]) -> int | None:
    """The first line of the trace that it writes `LOOP_REPEATS` times or more."""
    seen: dict[str, list[int]] = {}
    for i, ln in enumerate(lines):
        key = _norm(ln)
        if len(key) >= _MIN_LOOP_CHARS:
            seen.setdefault(key, []).append(i)
    starts = [at[0] for at in seen.values() if len(at) >= LOOP_REPEATS]
    return min(starts) if starts else None


def trace_frontier(text: str, evidence: dict, reference_text: str | None, gold_answer: str | None) -> dict | None:
    """Where the first fault of a trace that never closed sits, as a line to measure and swap: the
    trace's fault line (`trace_arithmetic`, `trace_repetition`), or the line after the one that had
    stated the right answer (`answered_in_trace`: where it should have closed). With a reference that
    has a trace, `reference_chars` is its line for the same place: the line aligned to the fault (when
    it checks out), or the line after its own right answer. None without such evidence.
    {"line": k, "chars": (start, end), "reference_chars": (start, end) | None}."""
    rule, tr = evidence.get("rule"), evidence.get("trace") or {}
    spans = trace_line_spans(text)
    if not spans or rule not in TRACE_RULES:
        return None
    ref_spans = trace_line_spans(reference_text or "")
    if rule == "answered_in_trace":
        k = (tr.get("right_answer_line") or 0) + 1
        ref = read_trace(reference_text or "")
        j = ref.evidence(gold_answer).get("right_answer_line") if ref is not None and gold_answer is not None else None
        j = None if j is None else j + 1
    else:
        k = (tr.get("fault") or {}).get("line")
        j = None
        if ref_spans and k is not None and k < len(spans):
            mine, theirs = _analysed(text, spans), _analysed(reference_text or "", ref_spans)
            j = align(mine, theirs).mapping[k]
            if j is not None and check_step(theirs[j]).status == FAULTY:
                j = None
    if k is None or k >= len(spans):
        return None
    ref_chars = ref_spans[j] if ref_spans and j is not None and j < len(ref_spans) else None
    return {"line": k, "chars": spans[k], "reference_chars": ref_chars}


# locate's rules for a trace that never closed (locate._read_trace), each with a frontier line
TRACE_RULES = ("answered_in_trace", "trace_arithmetic", "trace_repetition")
