"""Turn solution lines into analysable steps: equations, mentioned numbers and a result value.

Real model text mixes words, units, currency and maths ("5 apples * $2 = $10", "0.2 x 50 = $10",
GSM8K calculator annotations "16 - 3 - 4 = <<16-3-4=9>>9"). A line is lexed once; runs of maths
tokens (numbers, operators, brackets, unit words sandwiched between a number and an operator) form
segments, and each segment with '=' gives an equation chain. Annotations are preferred over the
visible text they repeat, so nothing is counted twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from functools import lru_cache

from silverbullet.attribution.expr import ExprResult, evaluate
from silverbullet.segmentation import segment

MAX_LINE_CHARS = 4_000
MAX_STEPS = 200


@dataclass(frozen=True)
class Equation:
    """One `lhs = rhs` claim found in a step (a chain a = b = c gives a=b and b=c)."""

    lhs: str
    rhs: str
    lhs_eval: ExprResult
    rhs_eval: ExprResult
    source: str  # "annotation" | "text" | "written" (annotation result vs the number written after it)
    # | "prose" (bare arithmetic written against an annotation that computes something else)
    approx: bool = False  # written with '≈' / '~'

    @property
    def checkable(self) -> bool:
        return self.lhs_eval.ok and self.rhs_eval.ok

    @property
    def operands(self) -> tuple[Fraction, ...]:
        return self.lhs_eval.leaves


@dataclass(frozen=True)
class StepInfo:
    """A reasoning step, analysed. Values are exact rationals."""

    index: int
    text: str
    equations: tuple[Equation, ...] = ()
    numbers: tuple[Fraction, ...] = ()  # every number mentioned (annotations excluded)
    result: Fraction | None = None  # RHS of the last equation, else the last number mentioned
    operands: tuple[Fraction, ...] = ()  # number literals on the LHS of the step's equations
    symbolic: bool = False  # has equations that could not be valued (variables, roots)
    words: frozenset[str] = field(default_factory=frozenset)

    @property
    def values(self) -> tuple[Fraction, ...]:
        """Every value the step states: mentions plus equation sides."""
        out = list(self.numbers)
        for eq in self.equations:
            for side in (eq.lhs_eval, eq.rhs_eval):
                if side.ok and side.value is not None:
                    out.append(side.value)
        return tuple(out)


@dataclass(frozen=True)
class ParsedSteps:
    """Steps i of `steps` is the segmenter's step i: `spans[i]` is where it is in the text."""

    steps: tuple[StepInfo, ...]
    answer: str | None
    answer_value: Fraction | None
    has_answer_line: bool
    spans: tuple[tuple[int, int], ...] = ()
    style: str = "steps"  # "steps" (Step k: lines) | "free" (segmented free-form text)
    thinking_unfinished: bool = False  # a reasoning trace that never closed (segmentation)


# --------------------------------------------------------------------------- lexing a line

_ANN_RE = re.compile(r"<<([^<>]{0,500})>>", re.ASCII)
_LEX_RE = re.compile(
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?|\.\d+)"
    r"|(?P<cmd>\\[A-Za-z]+|\\%)"
    r"|(?P<word>[A-Za-z]+(?:['\u2019][a-z]+)?)"
    r"|(?P<op>\*\*|//|[-+*/^\u00d7\u00b7\u00f7\u2212\u2013\u22c5%])"
    r"|(?P<eq>=|\u2248|~=)"
    r"|(?P<lp>[(\[{])|(?P<rp>[)\]}])"
    r"|(?P<dollar>\$)"
    r"|(?P<ws>\s+)"
    r"|(?P<other>.)",
    re.ASCII,
)
_UNIT_LOOKAHEAD = 3


def _lex(line: str) -> list[tuple[str, str, int]]:
    return [(m.lastgroup or "other", m.group(0), m.start()) for m in _LEX_RE.finditer(line)]


def _is_times(toks: list[tuple[str, str, int]], j: int) -> bool:
    """A word token 'x' used as a multiplication sign ('60 students x 2/3')."""
    return toks[j][1] in ("x", "X") and j + 1 < len(toks) and toks[j + 1][0] in ("num", "dollar", "lp")


def _segments(line: str) -> list[str]:
    """Maximal runs of maths in a line, as expression text with unit words removed."""
    raw = _lex(line)
    toks: list[tuple[str, str, int]] = []
    spaced: list[bool] = []
    for idx, t in enumerate(raw):
        if t[0] != "ws":
            toks.append(t)
            spaced.append(idx > 0 and raw[idx - 1][0] == "ws")
    segs: list[list[str]] = []
    cur: list[str] = []

    def close() -> None:
        if cur:
            segs.append(cur.copy())
            cur.clear()

    n = len(toks)
    for k, (kind, text, pos) in enumerate(toks):
        prev = toks[k - 1] if k else None
        nxt = toks[k + 1] if k + 1 < n else None
        sp = " " if spaced[k] else ""  # spacing matters: "1 1/2" is a mixed number
        if kind in ("num", "lp", "rp", "eq", "dollar"):
            cur.append(sp + text)
        elif kind == "op":
            # '3-year-old': a hyphen glued to a word is not a minus
            if text == "-" and nxt is not None and nxt[0] == "word" and nxt[2] == pos + 1:
                close()
                continue
            cur.append(sp + text)
        elif kind == "cmd":
            cur.append(sp + text)  # a LaTeX name (not in _MATH_CMDS) keeps the equation, symbolic
        elif kind == "word":
            low = text.lower()
            after_value = prev is not None and prev[0] in ("num", "rp", "word", "op") and bool(cur)
            if low == "x" and cur and nxt is not None and nxt[0] in ("num", "dollar", "lp"):
                cur.append(" *")
                continue
            # single letters touching maths are variables (2x + 3 = 7, \frac{9}{s})
            if (
                len(text) == 1
                and text not in ("a", "I")
                and (
                    (prev is not None and prev[0] in ("op", "eq", "lp", "cmd") and cur)
                    or (nxt is not None and nxt[0] in ("op", "eq", "rp"))
                )
            ):
                cur.append(sp + text)
                continue
            # a rate unit: "$5/glass * 16 glasses" -> "5 * 16"
            if cur and cur[-1].strip() == "/" and len(cur) >= 2:
                j = k
                while j < n and j - k < _UNIT_LOOKAHEAD and toks[j][0] == "word":
                    j += 1
                if j >= n or toks[j][0] in ("op", "eq", "other", "rp"):
                    cur.pop()
                    continue
            # unit words between a value and an operator: "5 apples * $2", "20 sheep + 160 sheep"
            if after_value and cur and cur[-1].strip() != "=":
                j = k
                while j < n and j - k < _UNIT_LOOKAHEAD and toks[j][0] == "word" and not _is_times(toks, j):
                    j += 1
                if j < n and (toks[j][0] in ("op", "eq") and toks[j][1] != "%" or _is_times(toks, j)):
                    continue  # drop the unit word, stay in the segment
                if j < n and toks[j][0] == "rp":
                    continue
            close()
        elif kind == "other" and text in "\u2019'" and cur:
            continue
        else:
            close()
    close()
    return ["".join(s).strip() for s in segs]


def _split_chain(seg: str) -> tuple[list[str], bool]:
    approx = "\u2248" in seg or "~=" in seg
    parts = re.split(r"\u2248|~=|=", seg)
    return [p.strip() for p in parts], approx


def _text_equations(line: str, source: str = "text") -> tuple[list[Equation], list[Fraction]]:
    eqs: list[Equation] = []
    nums: list[Fraction] = []
    for kind, text, _ in _lex(line):
        if kind == "num":
            nums.append(Fraction(text.replace(",", "")))
    for seg in _segments(line):
        parts, approx = _split_chain(seg)
        if len(parts) < 2:
            continue
        for a, b in zip(parts, parts[1:], strict=False):
            if not a or not b:
                continue
            eqs.append(Equation(a, b, evaluate(a), evaluate(b), source, approx))
    return eqs, nums


_WRITTEN_AFTER_RE = re.compile(r"\s*(?:\$\s*)?(-?\d[\d,]*(?:\.\d+)?)", re.ASCII)  # one way to skip spaces: linear
# "17 500": thousands grouped with spaces (the French / SI style), read as one number only where the
# annotation just computed that number: "3 500 ml" elsewhere may well be two numbers
_SPACED_AFTER_RE = re.compile(r"\s*(?:\$\s*)?(-?\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:\.\d+)?)(?!\d)")


def _annotation_equations(line: str) -> tuple[list[Equation], str]:
    """Equations from <<expr=value>> annotations, and the line with annotations removed."""
    eqs: list[Equation] = []
    for m in _ANN_RE.finditer(line):
        body = m.group(1)
        if "=" not in body:
            continue
        lhs, rhs = body.rsplit("=", 1)
        lhs, rhs = lhs.strip(), rhs.strip()
        ev_l, ev_r = evaluate(lhs), evaluate(rhs)
        eqs.append(Equation(lhs, rhs, ev_l, ev_r, "annotation"))
        w = _WRITTEN_AFTER_RE.match(line, m.end())
        if w and ev_r.ok:
            written = evaluate(w.group(1))
            if written.ok and written.value != ev_r.value:
                spaced = _SPACED_AFTER_RE.match(line, m.end())
                if spaced and evaluate(re.sub(r"\s", "", spaced.group(1))).value == ev_r.value:
                    continue  # "<<350000*5/100=17500>>17 500"
                eqs.append(Equation(rhs, w.group(1), ev_r, written, "written"))
    return eqs, _ANN_RE.sub(" ", line)


_SQUASH_RE = re.compile(r"[\s$,]+")


def _squash(text: str) -> str:
    return _SQUASH_RE.sub("", text).replace("x", "*").replace("\u00d7", "*")


def _prose_against_annotation(text_eqs: list[Equation], ann_eqs: list[Equation], visible: str) -> list[Equation]:
    """Prose equations of an annotated line kept as claims ("prose" source): bare arithmetic written
    right before '=' (only numbers and operators, no unit words, no percent) whose value is none the
    annotation computes or writes. "11 < 30 / 11 = <<11=11>>11" claims 30/11 = 11; "2*1 = <<3*2=6>>6"
    writes one computation and does another. On the GSM8K solutions corpus: 46 lines in wrong
    answers, 2 in right ones (both false claims too)."""
    computed = {ev.value for e in ann_eqs for ev in (e.lhs_eval, e.rhs_eval) if ev.ok and ev.value is not None}
    flat = _squash(visible)
    kept = []
    for e in text_eqs:
        lv, rv = e.lhs_eval, e.rhs_eval
        if not (lv.ok and rv.ok and lv.ops) or lv.value is None or rv.value is None:
            continue
        lhs = e.lhs.strip()
        if lhs[:1] in "+-*/" or "%" in lhs or _squash(lhs) + "=" not in flat:
            continue  # a bullet's dash, a percent's reading, unit words between the numbers
        if any(abs(lv.value - c) <= Fraction(1, 100) * max(1, abs(c)) for c in computed):
            continue
        kept.append(Equation(e.lhs, e.rhs, lv, rv, "prose", e.approx))
    return kept


# --------------------------------------------------------------------------- LaTeX layout

_LAYOUT_RE = re.compile(
    r"(?P<row>\\\\|\r\n|\r|\n)(?P<cont>[ \t]*(?:\r?\n)?[ \t]*&?[ \t]*(?:=|\\approx|\u2248))?"
    r"|(?P<env>\\(?:begin|end)\{[A-Za-z]{1,20}\*?\})"
    r"|\\(?:text|mathrm|textbf|mbox)[ \t]*\{(?P<words>[^{}\\]{0,200})\}"
    r"|(?P<delim>\\[\[\]()]|\$\$|&|\\[,;:! ]|\\boxed\b)"
)


def _layout(m: re.Match) -> str:
    if m.group("row") is not None:  # a new row or line is a new claim, unless it continues with '='
        return " " + m.group("cont").replace("&", " ").replace("\n", " ") if m.group("cont") else " ; "
    if m.group("env") is not None:
        return " ; "
    if m.group("words") is not None:
        return f" {m.group('words')} "
    return " "


def _math_view(line: str) -> str:
    """The step with LaTeX layout removed, for lexing: display delimiters and environments go,
    `&=` rows continue the row before, other rows and lines become separate claims ("; "), and
    `\\boxed{9}` reads as `{9}`. Plain text is returned as is."""
    if "\\" not in line and "&" not in line and "\n" not in line and "$$" not in line and "\r" not in line:
        return line
    return _LAYOUT_RE.sub(_layout, line)


# --------------------------------------------------------------------------- public API

_WORD_RE = re.compile(r"[a-z]+", re.ASCII)
_STOP = frozenset("a an the of to and so is are was were in for on at it he she they his her this that".split())


@lru_cache(maxsize=32_768)
def analyse_step(text: str, index: int = 0) -> StepInfo:
    """Analyse one step line (its "Step k:" prefix already removed)."""
    line = _math_view(text[:MAX_LINE_CHARS])
    ann_eqs, visible = _annotation_equations(line) if "<<" in line else ([], line)
    text_eqs, nums = _text_equations(visible)
    if ann_eqs:
        # the annotation is what was computed; the visible text around it repeats it in prose
        # fragments ("7 adults + Shonda (1) + 2 kids = <<7+1+2=10>>10") that are not claims, except
        # bare arithmetic written against another computation ("60 + 2 = <<2*60=120>>120")
        text_eqs = _prose_against_annotation(text_eqs, ann_eqs, visible)
    eqs = ann_eqs + text_eqs
    result: Fraction | None = None
    if ann_eqs:
        last = [e for e in ann_eqs if e.source == "annotation"][-1]
        written = [e for e in ann_eqs if e.source == "written" and e.lhs == last.rhs]
        if written and written[-1].rhs_eval.ok:
            result = written[-1].rhs_eval.value
        elif last.rhs_eval.ok:
            result = last.rhs_eval.value
    if result is None:
        for e in reversed(eqs):
            if e.rhs_eval.ok:
                result = e.rhs_eval.value
                break
    if result is None and nums:
        result = nums[-1]
    operands: list[Fraction] = []
    seen_sides: set[str] = set()
    for e in eqs:
        if e.source in ("written", "prose"):
            continue
        for side, ev in ((e.lhs, e.lhs_eval), (e.rhs, e.rhs_eval)):
            if ev.ops and side.replace(" ", "") not in seen_sides:  # the side with operators
                seen_sides.add(side.replace(" ", ""))
                operands.extend(ev.leaves)
                break
    symbolic = any(not (e.lhs_eval.ok and e.rhs_eval.ok) for e in eqs)
    words = frozenset(w for w in _WORD_RE.findall(visible.lower()) if w not in _STOP and len(w) > 2)
    return StepInfo(index, text, tuple(eqs), tuple(nums), result, tuple(operands), symbolic, words)


def parse_steps(text: str) -> ParsedSteps:
    """Parse a whole solution: reasoning steps (answer line excluded) and the final answer."""
    from silverbullet.grading import parse_number

    seg = segment(text if isinstance(text, str) else "")
    steps = tuple(analyse_step(s, i) for i, s in enumerate(seg.steps[:MAX_STEPS]))
    return ParsedSteps(
        steps,
        seg.answer,
        parse_number(seg.answer),
        seg.has_answer_line,
        seg.spans[:MAX_STEPS],
        seg.style,
        seg.thinking_unfinished,
    )


def prose_numbers(text: str) -> tuple[Fraction, ...]:
    """Numbers written in plain text, calculator annotations removed (for checks on the prose)."""
    visible = _ANN_RE.sub(" ", text[:MAX_LINE_CHARS])
    return tuple(Fraction(t.replace(",", "")) for kind, t, _ in _lex(visible) if kind == "num")


# --------------------------------------------------------------------------- question numbers

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30,
    "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100,
    "thousand": 1000, "million": 1_000_000, "twice": 2, "double": 2, "doubles": 2, "triple": 3,
    "thrice": 3, "triples": 3, "dozen": 12, "dozens": 12, "pair": 2, "pairs": 2, "half": 2,
    "halves": 2, "third": 3, "thirds": 3, "quarter": 4, "quarters": 4, "fourth": 4, "fifth": 5,
    "sixth": 6, "tenth": 10, "week": 7, "weeks": 7, "weekly": 7, "hour": 60, "hours": 60,
    "minute": 60, "minutes": 60, "day": 24, "days": 24, "year": 12, "years": 12, "month": 30,
    "months": 12, "percent": 100, "cents": 100, "cent": 100, "feet": 12, "foot": 12, "yard": 3,
    "yards": 3, "gallon": 4, "quart": 4, "pound": 16, "pounds": 16, "ounces": 16, "score": 20,
    "decade": 10, "weekday": 5, "weekdays": 5,
    "century": 100, "weekend": 2, "twins": 2, "triplets": 3, "both": 2, "square": 2,
}  # fmt: skip
# number words that name a unit, not a count in the text: "3 weeks" gives 7 only by convention
_UNIT_WORDS = frozenset(
    "week weeks weekly hour hours minute minutes day days year years month months percent cents cent "
    "feet foot yard yards gallon quart pound pounds ounces score decade weekday weekdays century "
    "weekend square".split()
)
_FRACTION_WORDS = {"half": Fraction(1, 2), "third": Fraction(1, 3), "quarter": Fraction(1, 4),
                   "fourth": Fraction(1, 4), "fifth": Fraction(1, 5), "tenth": Fraction(1, 10)}  # fmt: skip


_FRACTION_RE = re.compile(r"(?<!\d)(\d+)\s*/\s*(\d+)")  # from a digit run's start only: linear


@lru_cache(maxsize=8_192)
def question_numbers(question: str, units: bool = True) -> frozenset[Fraction]:
    """Quantities a problem gives: digits, percentages, number words ('three', 'half', 'dozen'),
    and with `units` the conversion factors unit words imply ('weeks' -> 7, 'hours' -> 60)."""
    q = (question or "")[:MAX_LINE_CHARS]
    out: set[Fraction] = set()
    for kind, text, _ in _lex(q):
        if kind == "num":
            v = Fraction(text.replace(",", ""))
            out.add(v)
        elif kind == "word":
            low = text.lower()
            if low in _NUMBER_WORDS and (units or low not in _UNIT_WORDS):
                out.add(Fraction(_NUMBER_WORDS[low]))
            if low.rstrip("s") in _FRACTION_WORDS:
                out.add(_FRACTION_WORDS[low.rstrip("s")])
    for m in _FRACTION_RE.finditer(q):
        if int(m.group(2)):
            out.add(Fraction(int(m.group(1)), int(m.group(2))))
    out.update(_compound_numbers(q, units))
    return frozenset(out)


_SCALE = {"hundred": 100, "thousand": 1000, "million": 1_000_000}  # "two hundred" 200 (not number words alone)
_COMPOUND_RE = re.compile(
    r"\b(?P<a>\d+(?:\.\d+)?|[a-z]+)(?:\s+(?:a|an))?\s+(?P<b>dozens?|hours?|score|hundred|thousand|million)\b",
    re.IGNORECASE,
)


def _compound_numbers(q: str, units: bool) -> set[Fraction]:
    """A count times a unit the question spells out: "half a dozen" is 6, "twenty dozen" 240, "half an
    hour" 30 (minutes, with `units`), "two hundred" 200, "1.5 million" 1,500,000. Only these units:
    a multiple of one is itself a number the problem gives."""
    out: set[Fraction] = set()
    for m in _COMPOUND_RE.finditer(q):
        a, b = m.group("a").lower(), m.group("b").lower().rstrip("s")
        if b == "hour" and not units:
            continue
        if a[0].isdigit():
            k = Fraction(a)
        elif a.rstrip("s") in _FRACTION_WORDS:
            k = _FRACTION_WORDS[a.rstrip("s")]
        elif a in _NUMBER_WORDS and a not in _UNIT_WORDS and a not in ("twice", "double", "both", "pair", "pairs"):
            k = Fraction(_NUMBER_WORDS[a])
        else:
            continue
        if b == "hour" and k.denominator == 1:
            continue  # "3 hours" already gives 3 and 60; only a fraction of an hour is new
        out.add(k * _SCALE.get(b) if b in _SCALE else k * _NUMBER_WORDS[b])
    return out
