"""A safe parser for the LaTeX and algebra of MATH/AIME-style solutions, into our own AST.

Model text is never handed to `sympify`, `parse_latex` or `eval`, and TeX is never run: macro
programming (`\\def`, `\\input`, ...) is refused outright. This module tokenizes a restricted grammar
with the same kind of hard caps as `expr.py` (length, tokens, nesting, exponent and result size,
time) and builds tuples; `symbolic.py` evaluates them exactly (Fractions), numerically (mpmath) or
turns them into sympy objects node by node.

Grammar (precedence low to high; `^` right-associative, implicit products bind like `*`):

    expr    := term (('+' | '-') term)*
    term    := unary (('*' | '/' | \\cdot | \\times | \\div | implicit) unary)*
    unary   := ('-' | '+') unary | power
    power   := postfix ('^' unary)?
    postfix := atom ('!' | '%')*
    atom    := NUMBER | NAME[_sub] | \\pi | '(' expr ')' | '[' expr ']' | '{' expr '}'
             | \\frac{expr}{expr} | \\sqrt[n]{expr} | \\binom{expr}{expr} | FUNC atom

Handled with care: `\\left`/`\\right` and spacing are dropped; `\\text{}`, `\\mathrm{}` and
`\\operatorname{}` groups are units or words and are dropped; `50{,}000` and `50,000` are thousands;
`3\\frac{1}{2}` is a mixed number; `x^23` is `x^2 * 3` as TeX reads it; `2x` and `x(x+2)` are
products; `f(x)` (a function letter before a bracket) is refused rather than read as a product.
AST nodes: ("num", Fraction, decimals) ("name", str) ("pi",) ("neg", a) ("pct", a) ("fact", a)
("root", n, a) ("binom", a, b) ("func", name, a) ("bin", op, a, b) with op in + - * / ^.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from fractions import Fraction

MAX_CHARS = 4_000
MAX_TOKENS = 600
MAX_DEPTH = 64
MAX_DIGITS = 40
TIME_LIMIT_S = 0.05

OK, UNPARSEABLE, REJECTED = "ok", "unparseable", "rejected"

# TeX programming: never expanded, never run; a formula that mentions one is refused.
_HOSTILE_RE = re.compile(
    r"\\(?:def|edef|gdef|xdef|let|input|include|includeonly|newcommand|renewcommand|providecommand|"
    r"catcode|csname|endcsname|write|read|openin|openout|immediate|expandafter|usepackage|"
    r"documentclass|special|directlua|loop|repeat|newenvironment|makeatletter)(?![A-Za-z])"
)
_TEXT_CMDS = {"text", "mathrm", "textrm", "textbf", "mbox", "operatorname", "textit", "mathit", "unit", "hbox"}
_FORMAT_CMDS = {"mathbf", "boldsymbol", "mathbb", "mathcal", "boxed", "fbox", "framebox", "bm", "mathsf", "mathtt"}
_SKIP_CMDS = {
    "left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr", "biggl", "biggr",
    "displaystyle", "textstyle", "quad", "qquad", "cdotp", "limits", "nolimits", "mathstrut", "strut",
}  # fmt: skip
_TIMES_CMDS = {"cdot", "times", "ast", "cross"}
_FRAC_CMDS = {"frac", "dfrac", "tfrac", "cfrac"}
FUNCS = {"sin", "cos", "tan", "ln", "log", "exp", "sec", "csc", "cot", "arcsin", "arccos", "arctan"}
_FUNC_LETTERS = set("fghpqFGHPQ")
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
    "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
    "ell", "odot", "hbar",
}  # fmt: skip
_NUM_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d])|\d+(?:\.\d+)?(?:[eE][-+]?\d{1,4}(?![A-Za-z]))?|\.\d+")
_CMD_RE = re.compile(r"\\([A-Za-z]+)")
_SINGLE = {"+": "+", "-": "-", "\u2212": "-", "*": "*", "\u00d7": "*", "\u00b7": "*", "\u22c5": "*",
           "/": "/", "\u00f7": "/", "^": "^", "!": "!", "%": "%"}  # fmt: skip
_OPEN = {"(": ")", "[": "]", "{": "}"}

# Linear-time rewrites of TeX shorthand: \frac12, \sqrt2, x^23 (one character after ^ or _).
_PRE = [
    (re.compile(r"\{,\}"), ""),
    (re.compile(r"\\[,;:! ]"), " "),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"(\\(?:[dt]?frac|[dt]?binom))(?![A-Za-z])\s*([A-Za-z0-9])\s*([A-Za-z0-9])"), r"\1{\2}{\3}"),
    (re.compile(r"\{\s*~\s*([A-Za-z]+)\s*\}"), r" ~\1"),  # '{~m}': a unit in its own group
    (re.compile(r"\\AA(?![A-Za-z])"), " ~AA"),  # the angstrom sign: a unit
    # '{r}_{1}', '\\mathcal{F}_{1}': a braced letter before its subscript or power is that letter (not
    # after '}' or a command: '\\frac{a}{b}^2' keeps its group)
    (re.compile(r"(?<![}\]A-Za-z^_\\])\{\s*([A-Za-z])\s*\}(?=\s*[_^])"), r"\1"),
    (re.compile(r"\\(?:mathcal|mathbf|boldsymbol|bm|mathsf)\s*\{\s*([A-Za-z])\s*\}"), r"\1"),
    (re.compile(r"(\\[dt]?frac)\s*(\{[^{}]*\})\s*(\d)"), r"\1\2{\3}"),
    (re.compile(r"\\sqrt\s*(\d)"), r"\\sqrt{\1}"),
    (re.compile(r"\^\s*(\d)"), r"^{\1}"),
    (re.compile(r"\^\s*\\circ|\^\s*\{\s*\\circ\s*\}|\\degree|°"), " "),
]


class _Reject(Exception):
    pass


class _Unparseable(Exception):
    pass


@dataclass(frozen=True)
class Parsed:
    """One parsed side of a relation; `node` is set only when status == 'ok'."""

    status: str
    node: tuple | None = None
    reason: str = ""
    text: str = ""
    units: tuple[str, ...] = ()  # \\text/\\mathrm groups dropped (units or words), sorted


def _brace_group(text: str, i: int) -> int:
    """Index just past the balanced {...} starting at text[i] == '{' (or -1 if unbalanced)."""
    depth = 0
    for j in range(i, min(len(text), i + MAX_CHARS)):
        c = text[j]
        if c == "{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _Reject(f"nesting deeper than {MAX_DEPTH}")
        elif c == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return -1


def _subscript(text: str, i: int) -> tuple[str, int]:
    """The raw subscript after '_' at text[i]; returns (suffix, new index)."""
    j = i + 1
    while j < len(text) and text[j] == " ":
        j += 1
    if j < len(text) and text[j] == "{":
        end = _brace_group(text, j)
        if end < 0:
            raise _Unparseable("unbalanced subscript")
        return "_" + re.sub(r"\s+", "", text[j:end]), end
    m = _CMD_RE.match(text, j)
    if m:
        return "_" + m.group(0), m.end()
    if j < len(text) and (text[j].isascii() and text[j].isalnum()):
        return "_" + text[j], j + 1
    raise _Unparseable("empty subscript")


def tokenize(text: str, flags: dict | None = None) -> list[tuple]:
    """Tokens (kind, payload[, extra]); raises _Reject / _Unparseable. flags['units'] is set when a
    text group was dropped."""
    flags = {} if flags is None else flags
    if len(text) > MAX_CHARS:
        raise _Reject(f"longer than {MAX_CHARS} characters")
    if _HOSTILE_RE.search(text):
        raise _Reject("TeX macro programming is never expanded")
    for rx, rep in _PRE:
        text = rx.sub(rep, text)
    toks: list[tuple] = []
    i, n, depth = 0, len(text), 0
    while i < n:
        c = text[i]
        if c == "~" and (m := re.match(r"~\s*([A-Za-z]+)", text[i:])):  # '{~J}', '~cm': a unit word
            i += m.end()
            unit = [m.group(1)]
            while i < n and text[i] in "_^":
                mark = text[i]
                suffix, i = _subscript(text, i)
                unit.append(mark + suffix[1:])
            flags.setdefault("units", []).append("".join(unit))
            continue
        if c in " \t\n\r~&$":
            i += 1
            continue
        if c.isdigit() or (c == "." and i + 1 < n and text[i + 1].isdigit()):
            m = _NUM_RE.match(text, i)
            if m is None:
                raise _Unparseable("bad number")
            lit = m.group(0)
            if sum(ch.isdigit() for ch in lit) > MAX_DIGITS:
                raise _Reject(f"number with more than {MAX_DIGITS} digits")
            lit = lit.replace(",", "")
            mant = re.split(r"[eE]", lit)[0]
            dec = len(mant.split(".")[1]) if "." in mant else 0
            if "e" in lit.lower():
                base, ex = re.split(r"[eE]", lit)
                dec -= int(ex)
                val = Fraction(base) * Fraction(10) ** int(ex)
            else:
                val = Fraction(lit)
            toks.append(("num", val, dec))
            i = m.end()
        elif c in _SINGLE:
            toks.append(("op", _SINGLE[c]))
            i += 1
        elif c in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                raise _Reject(f"nesting deeper than {MAX_DEPTH}")
            toks.append(("lp", c))
            i += 1
        elif c in ")]}":
            depth -= 1
            toks.append(("rp", c))
            i += 1
        elif c == "\\":
            m = _CMD_RE.match(text, i)
            if not m:
                if text.startswith("\\{", i) or text.startswith("\\}", i):
                    raise _Unparseable("set braces")
                raise _Unparseable("stray backslash")
            cmd, i = m.group(1), m.end()
            if cmd == "operatorname":
                raise _Unparseable("\\operatorname (an unknown function)")
            if cmd in _TEXT_CMDS or cmd in ("begin", "end"):
                while i < n and text[i] == " ":
                    i += 1
                if i < n and text[i] == "{":
                    end = _brace_group(text, i)
                    if end < 0:
                        raise _Unparseable("unbalanced group")
                    body = text[i + 1 : end - 1]
                    i = end
                    if cmd in ("mathrm", "textrm", "mathit") and re.fullmatch(r"[A-Za-z]", body):
                        name = body  # \mathrm{a}: a variable set upright, not a unit
                        if i < n and text[i] == "_":
                            sub, i = _subscript(text, i)
                            name += sub
                        toks.append(("name", name))
                        continue
                    unit = [re.sub(r"[\s~]+", "", body)]
                    while i < n and text[i] in "_^ ":  # the unit's own subscript or power: m^{-2}
                        if text[i] == " ":
                            i += 1
                            continue
                        mark = text[i]
                        suffix, i = _subscript(text, i)
                        unit.append(mark + suffix[1:])
                    if cmd != "begin" and cmd != "end":
                        flags.setdefault("units", []).append("".join(unit))
                continue
            if cmd in _SKIP_CMDS or cmd in _FORMAT_CMDS:
                continue
            if cmd in _TIMES_CMDS:
                toks.append(("op", "*"))
            elif cmd == "div":
                toks.append(("op", "/"))
            elif cmd in _FRAC_CMDS:
                toks.append(("frac",))
            elif cmd == "sqrt":
                toks.append(("sqrt",))
            elif cmd in ("binom", "dbinom", "tbinom", "choose"):
                if cmd == "choose":
                    raise _Unparseable("\\choose")
                toks.append(("binom",))
            elif cmd == "pi":
                toks.append(("pi",))
            elif cmd in FUNCS:
                toks.append(("func", cmd))
            elif cmd in _GREEK:
                name = "\\" + cmd
                if i < n and text[i] == "_":
                    sub, i = _subscript(text, i)
                    name += sub
                toks.append(("name", name))
            else:
                raise _Unparseable(f"\\{cmd} outside the grammar")
        elif c.isascii() and c.isalpha():
            name = c  # TeX reads letters one at a time: 'xy' is x times y
            i += 1
            if i < n and text[i] == "_":
                sub, i = _subscript(text, i)
                name += sub
            toks.append(("name", name))
        elif c == "_":
            raise _Unparseable("subscript without a base")
        else:
            raise _Unparseable(f"character {c!r} outside the grammar")
        if len(toks) > MAX_TOKENS:
            raise _Reject(f"more than {MAX_TOKENS} tokens")
    if depth != 0:
        raise _Unparseable("unbalanced brackets")
    return toks


_ATOM_START = ("name", "lp", "frac", "sqrt", "binom", "pi", "func")


class _Parser:
    def __init__(self, toks: list[tuple], deadline: float) -> None:
        self.toks, self.i, self.depth, self.deadline = toks, 0, 0, deadline

    def peek(self) -> tuple | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple:
        t = self.peek()
        if t is None:
            raise _Unparseable("unexpected end")
        self.i += 1
        return t

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Reject(f"nesting deeper than {MAX_DEPTH}")
        if time.perf_counter() > self.deadline:
            raise _Reject("time limit")

    def expr(self) -> tuple:
        self.enter()
        node = self.term()
        while (t := self.peek()) in (("op", "+"), ("op", "-")):
            self.i += 1
            node = ("bin", t[1], _unmix(node), _unmix(self.term()))  # type: ignore[index]
        self.depth -= 1
        return node

    def term(self) -> tuple:
        node = self.unary()
        while (t := self.peek()) is not None:
            if t[0] == "op" and t[1] in ("*", "/"):
                self.i += 1
                node = ("bin", t[1], _unmix(node), _unmix(self.unary()))
            elif t[0] in _ATOM_START or (t[0] == "num" and node[0] != "num"):  # x^23 = x^2 * 3; 2 3 is refused
                rhs = self.unary()
                if node[0] == "num" and node[2] == 0 and rhs[0] == "mixed":  # 3\frac{1}{2}
                    node = ("num", node[1] + rhs[1], 0)
                else:
                    node = ("bin", "*", _unmix(node), _unmix(rhs))
            else:
                break
        return _unmix(node)

    def unary(self) -> tuple:
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in "+-":
            self.i += 1
            self.enter()
            inner = _unmix(self.unary())
            self.depth -= 1
            return ("neg", inner) if t[1] == "-" else inner
        return self.power()

    def power(self) -> tuple:
        base = self.postfix()
        if self.peek() == ("op", "^"):
            self.i += 1
            self.enter()
            exp = _unmix(self.unary())
            self.depth -= 1
            return ("bin", "^", _unmix(base), exp)
        return base

    def postfix(self) -> tuple:
        node = self.atom()
        while (t := self.peek()) in (("op", "!"), ("op", "%")):
            self.i += 1
            node = ("fact" if t[1] == "!" else "pct", _unmix(node))  # type: ignore[index]
        return node

    def group(self, opener: str = "") -> tuple:
        t = self.take()
        if t[0] != "lp" or (opener and t[1] != opener):
            raise _Unparseable("expected a group")
        node = self.expr()
        close = self.take()
        if close[0] != "rp" or close[1] != _OPEN[t[1]]:
            raise _Unparseable("unbalanced brackets")
        return node

    def atom(self) -> tuple:
        t = self.peek()
        if t is None:
            raise _Unparseable("unexpected end")
        kind = t[0]
        if kind == "num":
            self.i += 1
            return t
        if kind == "name":
            self.i += 1
            nxt = self.peek()
            if t[1] in _FUNC_LETTERS and nxt is not None and nxt[0] == "lp" and nxt[1] == "(":
                raise _Unparseable(f"function application {t[1]}(...)")
            return ("name", t[1])
        if kind == "pi":
            self.i += 1
            return ("pi",)
        if kind == "lp":
            return self.group()
        if kind == "frac":
            self.i += 1
            a, b = self.group("{"), self.group("{")
            if a[0] == "num" and b[0] == "num" and a[2] == 0 and b[2] == 0 and 0 < a[1] < b[1]:
                return ("mixed", a[1] / b[1], a, b)  # a proper fraction of integers: maybe 3\frac{1}{2}
            return ("bin", "/", a, b)
        if kind == "sqrt":
            self.i += 1
            nxt = self.peek()
            index: tuple = ("num", Fraction(2), 0)
            if nxt == ("lp", "["):
                index = self.group("[")
            return ("root", index, self.group("{"))
        if kind == "binom":
            self.i += 1
            return ("binom", self.group("{"), self.group("{"))
        if kind == "func":
            self.i += 1
            nxt = self.peek()
            if nxt is not None and nxt[0] == "op" and nxt[1] == "^":
                raise _Unparseable("power of a function name")
            self.enter()
            arg = _unmix(self.power())
            self.depth -= 1
            return ("func", t[1], arg)
        raise _Unparseable(f"unexpected {t[1] if len(t) > 1 else kind!r}")


def _unmix(node: tuple) -> tuple:
    return ("bin", "/", node[2], node[3]) if node[0] == "mixed" else node


def parse(text: str, time_limit_s: float = TIME_LIMIT_S) -> Parsed:
    """Parse one side of a relation. Never raises on any input string."""
    try:
        if not isinstance(text, str):
            return Parsed(UNPARSEABLE, reason="not a string")
        flags: dict = {}
        # a sentence's full stop inside the formula ('= (81a - 108b) + (125a + 69b)i.'), not a decimal
        toks = tokenize(re.sub(r"(?<![\d.])\.\s*$", "", text), flags)
        if len(toks) > 1 and toks[-1] == ("op", "%"):  # '= 12.5\\%' claims a percentage: a unit here
            toks.pop()
            flags.setdefault("units", []).append("%")
        if not toks:
            return Parsed(UNPARSEABLE, reason="empty", text=text)
        p = _Parser(toks, time.perf_counter() + time_limit_s)
        node = _unmix(p.expr())
        if p.i != len(toks):
            return Parsed(UNPARSEABLE, reason=f"trailing {toks[p.i][1] if len(toks[p.i]) > 1 else toks[p.i][0]!r}",
                          text=text)  # fmt: skip
        return Parsed(OK, node, text=text, units=tuple(sorted(flags.get("units", []))))
    except _Reject as e:
        return Parsed(REJECTED, reason=str(e), text=text[:200])
    except (_Unparseable, ValueError, ZeroDivisionError) as e:
        return Parsed(UNPARSEABLE, reason=str(e) or "unparseable", text=text[:200])
    except RecursionError:  # pragma: no cover - depth caps make this unreachable
        return Parsed(REJECTED, reason="nesting too deep", text=text[:200])
    except Exception as e:  # pragma: no cover - untrusted text must never crash a run
        return Parsed(UNPARSEABLE, reason=f"internal: {type(e).__name__}", text=text[:200])


def names(node: tuple) -> frozenset[str]:
    """Free variable names of an AST."""
    out: set[str] = set()
    stack = [node]
    while stack:
        nd = stack.pop()
        k = nd[0]
        if k == "name":
            out.add(nd[1])
        elif k == "bin":
            stack += [nd[2], nd[3]]
        elif k in ("neg", "pct", "fact"):
            stack.append(nd[1])
        elif k in ("root", "binom"):
            stack += [nd[1], nd[2]]
        elif k == "func":
            stack.append(nd[2])
    return frozenset(out)


# --------------------------------------------------------------------------- relations in a step

REL_EQ, REL_APPROX, REL_OTHER, REL_ROW = "=", "~", "other", "row"
_APPROX = ("\\approx", "\\simeq", "\\sim", "\u2248", "\\cong")
_MATH_RE = re.compile(
    r"\$\$(.+?)\$\$|\$(.+?)\$|\\\[(.+?)\\\]|\\\((.+?)\\\)"
    r"|\\begin\{(?:equation|align|aligned|eqnarray|gather|split|multline)\*?\}(.+?)"
    r"\\end\{(?:equation|align|aligned|eqnarray|gather|split|multline)\*?\}",
    re.S,
)
_OPEN_DISPLAY_RE = re.compile(r"\\\[|\\begin\{[a-z]+\*?\}|\\\]|\\end\{[a-z]+\*?\}")
_REL_RE = re.compile(
    r"(\\Rightarrow|\\Longrightarrow|\\implies|\\iff|\\Leftrightarrow|\\therefore|\\to(?![A-Za-z])|"
    r"\\rightarrow|\\quad\s*\\text\s*\{\s*(?:and|or|so)\s*\}|\\text\s*\{\s*(?:and|or|so|i\.e\.)\s*\}|\\qquad|\\quad|"
    r"\\\\|;|\\approx|\\simeq|\\sim(?![A-Za-z])|\\cong|\u2248|\\neq?(?![A-Za-z])|\\le(?:q|qslant)?(?![A-Za-z])|"
    r"\\ge(?:q|qslant)?(?![A-Za-z])|\\lt|\\gt|<|>|:=|=)"
)
_POISON_RE = re.compile(
    r"\\(?:pm|mp|cdots|ldots|dots|pmod|bmod|mod|equiv|in|sum|prod|int|lim|cup|cap|setminus|"
    r"ne|neq|vec|overline|angle|triangle|circ|perp|parallel|cdots|vdots|lfloor|lceil|"
    r"mid|nmid|cases|matrix|pmatrix|bmatrix)(?![A-Za-z])|\.\.\.|[|]"
)
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{3,}")
_PROTECT_RE = re.compile(r"(\d),(\d{3})(?!\d)")


def _whole_line_formula(text: str) -> str | None:
    """A step without delimited math that reads as one formula (no prose words): its text with
    stray display delimiters removed (a display block split across steps), else None."""
    rest = _OPEN_DISPLAY_RE.sub(" ", text)
    if "$" in rest:
        return None
    bare = re.sub(r"\\[A-Za-z]+|\{[^{}]*\}", " ", rest)
    return rest if "=" in rest and not _WORD_RE.search(bare) else None


def math_regions(text: str) -> list[str]:
    """The formulas of a step: delimited math, or the whole line when it reads as a formula."""
    if _HOSTILE_RE.search(text):
        return [text[:MAX_CHARS]]  # parsed (and refused) so the step gets its 'rejected' row
    regions = [body for _span, body in _delimited(text)]
    if regions:
        return regions
    whole = _whole_line_formula(text)
    return [] if whole is None else [whole]


_OPENER_RE = re.compile(r"\$\$|\\\[|\\begin\{(?:equation|align|aligned|eqnarray|gather|gathered|split|multline)\*?\}")


def _delimited(text: str) -> list[tuple[tuple[int, int], str]]:
    """(span, body) of each delimited formula. A display opened in the step and closed only in a
    later one (a segmenter joins 'which corresponds to:' to the first row of the block after it)
    runs to the end of the step."""
    out = [(m.span(), next(g for g in m.groups() if g is not None)) for m in _MATH_RE.finditer(text)]
    start = out[-1][0][1] if out else 0
    tail = text[start:]
    if tail.count("$") - 2 * tail.count("$$") == 0:  # not inside an open inline $..$
        m = _OPENER_RE.search(tail)
        if m and tail[m.end() :].strip():
            out.append(((start + m.start(), len(text)), tail[m.end() :]))
    return out


def formula_spans(text: str) -> list[tuple[int, int]]:
    """Where the formulas that `math_regions` reads are in `text`, delimiters included: what the
    symbolic checker owns. The rest of the step is prose (for the plain-text arithmetic lexer)."""
    if _HOSTILE_RE.search(text):
        return [(0, len(text))]
    spans = [span for span, _body in _delimited(text)]
    if spans:
        return spans
    return [] if _whole_line_formula(text) is None else [(0, len(text))]


def outside_formulas(text: str) -> str:
    """`text` with each formula of `formula_spans` replaced by ' ; ' (a claim boundary)."""
    spans = formula_spans(text)
    if not spans:
        return text
    out, pos = [], 0
    for a, b in spans:
        out.append(text[pos:a])
        out.append(" ; ")
        pos = b
    out.append(text[pos:])
    return "".join(out)


@dataclass(frozen=True)
class Relation:
    """A chain `p0 = p1 ~ p2 ...` from one formula; rels[i] links parts[i] and parts[i+1]."""

    parts: tuple[str, ...]
    rels: tuple[str, ...]


def _top_level_split(s: str, seps: str) -> list[str]:
    out, cur, depth = [], [], 0
    for ch in s:
        if ch in "({[":
            depth += 1
        elif ch in ")}]":
            depth -= 1
        if ch in seps and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def relations(text: str) -> list[Relation]:
    """Equality chains of a step's formulas. Implications and separators start a new chain;
    inequalities and `\\pm` break a chain (their links are not equalities)."""
    out: list[Relation] = []
    for region in math_regions(text[: 4 * MAX_CHARS]):
        region = _PROTECT_RE.sub("\\1\u2009\\2", region)  # thousands separators survive the comma split
        for piece in _top_level_split(region, ","):
            piece = piece.replace("\u2009", ",")
            if _POISON_RE.search(piece):
                continue  # sums, moduli, +-, sets, ellipses: not plain equalities of values
            parts: list[str] = []
            rels: list[str] = []
            pos = 0
            for m in _REL_RE.finditer(piece):
                parts.append(piece[pos : m.start()])
                tok = m.group(1)
                rels.append(REL_EQ if tok in ("=", ":=") else REL_APPROX if tok in _APPROX else
                            REL_ROW if tok == "\\\\" else REL_OTHER)  # fmt: skip
                pos = m.end()
            parts.append(piece[pos:])
            chain_p: list[str] = [parts[0]]
            chain_r: list[str] = []
            k = 0
            while k < len(rels):
                r, p = rels[k], parts[k + 1]
                if r == REL_ROW and not p.strip(" \t\n&") and k + 1 < len(rels) and rels[k + 1] in (REL_EQ, REL_APPROX):
                    k += 1  # an aligned row '& = ...' continues the chain of the row above
                    chain_p.append(parts[k + 1])
                    chain_r.append(rels[k])
                elif r in (REL_OTHER, REL_ROW):
                    if chain_r:
                        out.append(Relation(tuple(chain_p), tuple(chain_r)))
                    chain_p, chain_r = [p], []
                else:
                    chain_p.append(p)
                    chain_r.append(r)
                k += 1
            if chain_r:
                out.append(Relation(tuple(chain_p), tuple(chain_r)))
    return out
