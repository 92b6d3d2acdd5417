"""Split a solution into reasoning steps with character spans, and find its final answer.

One place for "what is a step", used by `prompting` (parse_solution, step_spans) and by
`attribution.steps` (parse_steps), so first-fault indices, prefixes and per-token margins all refer
to the same steps. It is pure text work and imports nothing from the project.

Two styles:
- **steps**: some line before the answer carries a `Step k:` prefix. Every non-empty line is a step
  (the format the project trains and prompts for; this path must never change).
- **free**: anything else (GSM8K lines, chat-model prose, markdown, LaTeX). Lines, list items and
  paragraphs are steps; within a line each sentence that carries a computation ends a step, and
  sentences without one join it; LaTeX display blocks (`\\[..\\]`, `$$..$$`, `align`, `equation`,
  ...) are steps of their own, an `align`-like block one per row (`&=` rows continue the row
  before). A line with no computation that ends in ':' or ',' or is a heading introduces the next
  line and joins it.

Answers: the first answer line (`The answer is`, `####`, `A:`, `Final answer:`, Minerva's
`Final Answer: The final answer is $X$. I hope it is correct.`) ends the steps; without one, the last
`\\boxed{}`, else the last "the answer is X". A last free-form step with no computation that states
the answer ("Therefore, the answer is $\\boxed{9}$.") is the answer statement, not a step.

Reasoning models (DeepSeek-R1 distills, QwQ, Qwen3) think first: `<think> ... </think>`, then the
response. The trace explores and corrects itself ("48 + 24 = 73? No, 72"), so it is not a solution:
steps and answer come from the response after the last `</think>`, and the trace is only located
(`thinking_span`). A bare `</think>` (the chat template opened the block in the prompt) closes a trace
that starts at the text's beginning; a block that never closes is an unfinished trace: no steps and no
answer, as a grader that reads the response sees it. Where the prompt opened the block and the model
never closed it, the text carries no tag at all; the generation layer then puts the prompt's opening
tag at the head of the text (`thinking_opener`), so the text alone always says where the trace is.

Spans never lose text: between consecutive step spans there is only whitespace. Everything is one
linear scan with bounded regexes, so hostile input is answered fast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

MAX_SOLUTION_CHARS = 100_000
ANSWER_PREFIX = "The answer is:"
STEP_PREFIX_RE = re.compile(r"^\s*(?:\*\*)?Step\s*(\d+)\s*[:.)]\s*(?:\*\*)?\s*", re.IGNORECASE)
# Answer lines, most specific first; group 1 is the answer text (strip it). Greedy `.*` to the end
# of the line (no lazy group before `\s*$`): linear on long lines.
ANSWER_LINE_RES = [
    re.compile(r"^\s*(?:\*\*)?The (?:final )?answer is\s*[:：]?\s*(?:\*\*)?\s*(.*)", re.IGNORECASE),
    re.compile(r"^\s*####\s*(.*)"),
    re.compile(r"^\s*A\s*:\s*(.*)"),
    re.compile(r"^\s*Final Answer\s*:\s*The final answer is\s*(.*)", re.IGNORECASE),  # Minerva
    re.compile(r"^\s*(?:\*\*)?Final answer\s*[:：]\s*(?:\*\*)?\s*(.*)", re.IGNORECASE),
]
_MINERVA_TAIL_RE = re.compile(r"\.?\s*I hope it is correct\.?$", re.IGNORECASE)
_MINERVA_TAIL_WINDOW = 200
_INLINE_ANSWER_RE = re.compile(r"\banswer is\s*[:：]?\s*([^\n]{0,200})", re.IGNORECASE)
_LIST_MARKER_RE = re.compile(r"^\s*(?:[-*\u2022+]|\d{1,3}[.)]|[a-z][.)])\s+")

STEPS, FREE = "steps", "free"
# (opening, closing) tags of a reasoning trace: DeepSeek-R1 / QwQ / Qwen3 / Phi-4-reasoning, Magistral.
THINK_TAGS = (("<think>", "</think>"), ("[THINK]", "[/THINK]"))
_MAX_OPENER_CHARS = 64  # a prompt's opening tag and the whitespace after it, nothing longer


@dataclass(frozen=True)
class Segmentation:
    """A solution cut into steps. `spans[i]` is step i's (start, end) in the text as given;
    `steps[i]` its text for analysis (`Step k:` prefix / list marker removed, stripped)."""

    spans: tuple[tuple[int, int], ...]
    steps: tuple[str, ...]
    raw_steps: tuple[str, ...]  # the step text as written (stripped)
    answer: str | None  # final answer text, None when none was found
    answer_span: tuple[int, int] | None  # where the answer statement is (line, sentence or \boxed)
    has_answer_line: bool  # an explicit answer statement: answer line, or a closing answer sentence
    style: str  # "steps" | "free"
    thinking_span: tuple[int, int] | None = None  # the reasoning trace's text, tags excluded
    thinking_unfinished: bool = False  # a trace that never closed: no response, so no steps or answer


# --------------------------------------------------------------------------- reasoning traces


def thinking_split(text: str) -> tuple[tuple[int, int] | None, int | None]:
    """(trace span, where the response starts). No trace: (None, 0). A trace that never closed:
    (its span, None). The last closing tag ends the trace; an opening tag before it starts it."""
    for open_tag, close_tag in THINK_TAGS:
        c = text.rfind(close_tag)
        if c >= 0:
            o = text.find(open_tag, 0, c)
            return ((o + len(open_tag)) if o >= 0 else 0, c), c + len(close_tag)
        o = text.find(open_tag)
        if o >= 0:
            return (o + len(open_tag), len(text)), None
    return None, 0


def open_thinking_tag(prompt: str) -> str:
    """The opening tag of a reasoning trace that `prompt` ends inside (the completion continues the
    trace), else "". Generation must not stop at an answer line before the trace closes."""
    if not isinstance(prompt, str):
        return ""
    for open_tag, close_tag in THINK_TAGS:
        o = prompt.rfind(open_tag)
        if o >= 0 and prompt.find(close_tag, o) < 0:
            return open_tag
    return ""


def thinking_opener(prompt: str) -> str:
    """The opening tag a prompt ends inside ("<think>\n", from R1-style chat templates), else "".
    The generation layer moves it to the head of the completion (see the module docstring)."""
    tail = prompt[-_MAX_OPENER_CHARS:] if isinstance(prompt, str) else ""
    for open_tag, close_tag in THINK_TAGS:
        o = tail.rfind(open_tag)
        if o >= 0 and close_tag not in tail[o:] and not tail[o + len(open_tag) :].strip():
            return tail[o:]
    return ""


def with_opener(prompt: str | None, text: str, ends: list[int] | None) -> tuple[str | None, str, list[int] | None]:
    """(prompt, text, token ends) with a reasoning trace's opening tag moved from the prompt's end to
    the text's head (token ends shift with it): R1-style chat templates open `<think>` in the prompt,
    and a trace the model never closed would otherwise read as a solution (the module docstring).
    prompt + text is unchanged, so a prefix of the text still continues the stored prompt."""
    opener = thinking_opener(prompt) if prompt else ""
    if not opener:
        return prompt, text, ends
    shifted = [e + len(opener) for e in ends] if ends is not None else None
    return prompt[: len(prompt) - len(opener)], opener + text, shifted


# --------------------------------------------------------------------------- answers


def boxed_span(text: str, lo: int = 0) -> tuple[int, int] | None:
    """Span of the content of the last \\boxed{...} (balanced braces) at or after `lo`, or None."""
    start = text.rfind("\\boxed", lo)
    if start < 0:
        return None
    i = text.find("{", start, start + 12)
    if i < 0:
        return None
    depth = 0
    for j in range(i, min(len(text), i + 2000)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return i + 1, j
    return None


def boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with balanced braces."""
    sp = boxed_span(text)
    return None if sp is None else text[sp[0] : sp[1]].strip()


def clean_answer(ans: str) -> str:
    ans = ans.strip()
    # searched in the tail only: from every start, `\.?\s*` ran over a whole run of spaces (quadratic)
    tail = _MINERVA_TAIL_RE.search(ans, max(0, len(ans) - _MINERVA_TAIL_WINDOW))
    ans = (ans[: tail.start()] if tail else ans).strip()
    b = boxed(ans)
    if b is not None:
        return b
    ans = re.sub(r"^\$+|\$+$", "", ans).strip() if ans.count("$") >= 2 else ans
    return ans.rstrip(".").strip()


def match_answer_line(line: str) -> str | None:
    """The answer text when `line` is an answer line, else None."""
    for rx in ANSWER_LINE_RES:
        m = rx.match(line)
        if m:
            return clean_answer(m.group(1))
    return None


# --------------------------------------------------------------------------- lines

_NL_RE = re.compile(r"\r\n|\r|\n")


def _lines(text: str, lo: int = 0) -> list[tuple[int, int]]:
    """(start, end) of every line from `lo`, newline excluded ('\\r\\n', '\\r' and '\\n' all end a
    line)."""
    out, pos = [], lo
    for m in _NL_RE.finditer(text, lo):
        out.append((pos, m.start()))
        pos = m.end()
    out.append((pos, len(text)))
    return out


def segment(text: str) -> Segmentation:
    """Cut `text` into steps (see the module docstring); never raises on odd text."""
    text = text[:MAX_SOLUTION_CHARS] if isinstance(text, str) else ""
    trace, lo = thinking_split(text)
    if lo is None:  # still thinking when the text ends: nothing to grade or check
        return Segmentation((), (), (), None, None, False, FREE, trace, True)
    seg = _segment(text, lo)
    return seg if trace is None else replace(seg, thinking_span=trace)


def _segment(text: str, lo: int) -> Segmentation:
    lines: list[tuple[int, int]] = []
    answer: str | None = None
    answer_at: tuple[int, int] | None = None
    stepped = False
    for a, b in _lines(text, lo):
        line = text[a:b]
        if not line.strip():
            continue
        if not lines and line.lstrip().startswith("Question:"):
            continue
        found = match_answer_line(line)
        if found is not None:
            answer, answer_at = found, (a, b)
            break
        lines.append((a, b))
        stepped = stepped or bool(STEP_PREFIX_RE.match(line))
    if stepped:
        spans = tuple(lines)
        raw = tuple(text[a:b].strip() for a, b in spans)
        steps = tuple(STEP_PREFIX_RE.sub("", r, count=1).strip() for r in raw)
        has_line = answer_at is not None
        if answer_at is None:
            answer_at = boxed_span(text, lo)
            answer = None if answer_at is None else text[answer_at[0] : answer_at[1]].strip()
        return Segmentation(spans, steps, raw, answer, answer_at, has_line, STEPS)
    # free style: the region before the answer line (after a leading "Question:" line)
    if not lines:
        return _finish(text, [], answer, answer_at, lo=lo)
    spans, stated = _free_spans(text, lines[0][0], lines[-1][1])
    return _finish(text, spans, answer, answer_at, stated, lo)


def _finish(
    text: str,
    spans: list[tuple[int, int]],
    answer: str | None,
    answer_at: tuple[int, int] | None,
    stated: tuple[int, int] | None = None,
    lo: int = 0,
) -> Segmentation:
    has_line = answer_at is not None
    if answer_at is None:
        if stated is None and spans and _states_answer(text[spans[-1][0] : spans[-1][1]]):
            stated, spans = spans[-1], spans[:-1]  # "**Final Answer**\n\\[\\boxed{9}\\]"
        if stated is not None:  # the closing answer statement is not a step
            answer_at, has_line = stated, True
        bx = boxed_span(text, lo)
        if bx is not None:
            answer = text[bx[0] : bx[1]].strip()
            answer_at = answer_at or bx
        else:
            m = _last(_INLINE_ANSWER_RE.finditer(text, lo))
            if m is not None:
                answer = clean_answer(re.split(r"(?<=[^\d\s])\.(?:\s|$)|\.\s", m.group(1), maxsplit=1)[0])
                answer_at = answer_at or (m.start(1), m.end(1))
                has_line = True
        if answer == "":
            answer = None
    raw = tuple(text[a:b].strip() for a, b in spans)
    steps = tuple(_LIST_MARKER_RE.sub("", r, count=1).strip() for r in raw)
    return Segmentation(tuple(spans), steps, raw, answer, answer_at, has_line and answer is not None, FREE)


def _last(it):  # noqa: ANN001, ANN202
    last = None
    for last in it:  # noqa: B007
        pass
    return last


# --------------------------------------------------------------------------- free style

_DISPLAY_ENVS = frozenset(
    "equation equation* align align* gather gather* eqnarray eqnarray* multline multline* "
    "displaymath flalign flalign* alignat alignat*".split()
)
_ROW_ENVS = frozenset(
    "align align* aligned eqnarray eqnarray* gather gather* gathered alignat alignat* alignedat "
    "flalign flalign* split".split()
)
_EVENT_RE = re.compile(
    r"(?P<row>\\\\)"
    r"|(?P<open>\\\[)|(?P<close>\\\])"
    r"|\\begin\{(?P<begin>[A-Za-z]{1,20}\*?)\}|\\end\{(?P<end>[A-Za-z]{1,20}\*?)\}"
    r"|(?P<dd>\$\$)"
    r"|(?P<nl>\r\n|\r|\n)"
    r"|(?P<sent>[.!?])(?=[ \t]+[^\sa-z])"
)
_ABBREV = frozenset("mr mrs ms dr st vs etc jr sr no approx eg ie".split())
_COMPUTE_RE = re.compile(r"=|\u2248|\\approx|<<")
_DIGIT_RE = re.compile(r"\d")
_CONT_RE = re.compile(r"\s*(?:&\s*)?(?:=|\\approx|\\simeq|\u2248|<|>|\\le|\\ge|\\equiv)")


def _computes(s: str) -> bool:
    """A computation: an equation (or calculator annotation) with a number in it."""
    return bool(_COMPUTE_RE.search(s)) and bool(_DIGIT_RE.search(s))


@dataclass
class _Piece:
    start: int
    end: int
    line: int
    display: int  # 0: prose; else the id of the display block it belongs to
    comp: bool = False


def _free_spans(text: str, lo: int, hi: int) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """Step spans of text[lo:hi], and the span of a closing answer sentence cut off them."""
    steps: list[list[int]] = []  # [start, end, line, computes]
    pieces = _pieces(text, lo, hi)
    stated = None
    if pieces and not pieces[-1].display and _states_answer(text[pieces[-1].start : pieces[-1].end]):
        last = pieces.pop()
        stated = (last.start, last.end)
    i = 0
    while i < len(pieces):  # one line at a time
        j = i
        while j < len(pieces) and pieces[j].line == pieces[i].line:
            j += 1
        _group_line(text, pieces[i:j], steps)
        i = j
    # a line that only introduces the next one ("We get:", "Thus,", "**Totals**") joins it
    out: list[tuple[int, int]] = []
    carry: int | None = None
    for k, (a, b, line, comp) in enumerate(steps):
        start = a if carry is None else carry
        carry = None
        if not comp and k + 1 < len(steps) and steps[k + 1][2] != line and _introduces(text[a:b]):
            carry = start
            continue
        out.append((start, b))
    return out, stated


def _states_answer(s: str) -> bool:
    """A sentence with no computation that gives the final answer."""
    return not _computes(s) and ("\\boxed" in s or bool(_INLINE_ANSWER_RE.search(s)))


def _group_line(text: str, pieces: list[_Piece], steps: list[list[int]]) -> None:
    """Steps of one line: each sentence or display row with a computation ends a step; pieces
    without one join the next such piece, or the step before when none follows; a display block
    is always a step of its own; an '&= ...' row continues the row before."""
    first = len(steps)
    pending: list[_Piece] = []

    def emit(ps: list[_Piece]) -> None:
        steps.append([ps[0].start, ps[-1].end, ps[0].line, int(any(p.comp for p in ps))])

    def attach(ps: list[_Piece]) -> None:
        steps[-1][1] = ps[-1].end
        steps[-1][3] |= int(any(p.comp for p in ps))

    k = 0
    while k < len(pieces):
        block = pieces[k].display
        block_steps = len(steps)
        while k < len(pieces) and pieces[k].display == block:
            p = pieces[k]
            k += 1
            if block and not pending and len(steps) > block_steps and _CONT_RE.match(text, p.start):
                attach([p])
            elif p.comp:
                emit(pending + [p])
                pending = []
            else:
                pending.append(p)
        if block and pending:  # the end of a display block
            if len(steps) > block_steps:
                attach(pending)
            else:
                emit(pending)
            pending = []
    if pending:
        if len(steps) > first:
            attach(pending)
        else:
            emit(pending)


def _introduces(s: str) -> bool:
    s = s.strip()
    if not s:
        return False
    if s[-1] in ":,":
        return True
    if s.startswith("#") or (s.startswith("**") and s.rstrip(":").endswith("**")):
        return True
    return not any(c.isalnum() for c in s)


def _pieces(text: str, lo: int, hi: int) -> list[_Piece]:
    """Cut text[lo:hi] at sentence ends, line ends, display blocks and align rows."""
    out: list[_Piece] = []
    line = 0
    start = lo
    display = 0  # id of the open display block, 0 when none
    closer = ""  # what closes it: '\\]', '$$' or an environment name
    envs: list[str] = []  # environments open inside the display block
    blocks = 0
    line_start = lo

    def cut(pos: int) -> None:
        nonlocal start
        a, b = start, pos
        while a < b and text[a].isspace():
            a += 1
        while b > a and text[b - 1].isspace():
            b -= 1
        if a < b:
            seg = text[a:b]
            out.append(_Piece(a, b, line, display, _computes(seg)))
        start = pos

    def close_display(pos: int) -> None:
        nonlocal display, closer, envs
        cut(pos)
        display, closer, envs = 0, "", []

    for m in _EVENT_RE.finditer(text, lo, hi):
        kind = m.lastgroup
        if kind == "nl":
            blank = not text[line_start : m.start()].strip()
            line_start = m.end()
            if display and blank:
                close_display(m.start())  # no blank line inside display maths: a stray opener
            if not display:
                cut(m.start())
                line += 1
        elif kind == "sent":
            if not display and not _abbrev(text, m.start()):
                cut(m.end())
        elif kind in ("open", "dd") and not display:
            cut(m.start())
            blocks += 1
            display, closer = blocks, ("\\]" if kind == "open" else "$$")
        elif kind in ("close", "dd") and display and closer == m.group(0):
            close_display(m.end())
        elif kind == "begin":
            name = m.group("begin")
            if not display and name in _DISPLAY_ENVS:
                cut(m.start())
                blocks += 1
                display, closer = blocks, name
            if display:
                envs.append(name)
        elif kind == "end" and display:
            name = m.group("end")
            if name in envs:
                while envs and envs.pop() != name:
                    pass
            if closer == name and not envs:
                close_display(m.end())
        elif kind == "row" and display and envs and envs[-1] in _ROW_ENVS:
            cut(m.end())
    if display:
        close_display(hi)
    else:
        cut(hi)
    return out


def _abbrev(text: str, pos: int) -> bool:
    """'Mr.', 'e.g.', 'approx.': a full stop that does not end a sentence."""
    a = pos
    while a > 0 and pos - a < 7 and (text[a - 1].isalpha() or text[a - 1] == "."):
        a -= 1
    return text[a:pos].replace(".", "").lower() in _ABBREV
