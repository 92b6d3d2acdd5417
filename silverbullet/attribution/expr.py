"""A small, safe arithmetic parser for untrusted model text.

Model output is hostile input: it is never handed to `eval`, `sympify` or `parse_expr`. This module
tokenizes a restricted grammar and evaluates it to exact `Fraction`s, with hard caps on input length,
token count, nesting depth, number size, exponent size and time, so any string is answered quickly
with a result object instead of an exception.

Grammar (precedence low to high; `^` and `**` are right-associative):

    expr    := term (('+' | '-') term)*
    term    := unary (('*' | '/' | implicit) unary)*
    unary   := ('-' | '+') unary | power
    power   := postfix ('^' unary)?
    postfix := atom '%'*
    atom    := NUMBER | NAME | '(' expr ')' | '{' expr '}' | \\frac{expr}{expr} | \\sqrt{expr}

Names (variables, `\\pi`, ...) make an expression *symbolic*: it parses, but has no number.
Square roots that are not exact rationals are handed to sympy, built from our own AST (never text).
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

MAX_CHARS = 2_000
MAX_TOKENS = 400
MAX_DEPTH = 64
MAX_DIGITS = 40  # per number literal
MAX_EXPONENT = 200
MAX_RESULT_BITS = 20_000  # about 6,000 decimal digits
TIME_LIMIT_S = 0.05

OK, SYMBOLIC, UNPARSEABLE, REJECTED = "ok", "symbolic", "unparseable", "rejected"


@dataclass(frozen=True)
class ExprResult:
    """Outcome of evaluating one expression; `value` is set only when status == 'ok'."""

    status: str  # ok | symbolic | unparseable | rejected
    value: Fraction | None = None
    irrational: Any = None  # a sympy number when the exact value is not rational (e.g. sqrt(2))
    reason: str = ""
    leaves: tuple[Fraction, ...] = ()  # number literals in the expression, in order
    ops: str = ""  # binary operators used, in order ('+-*/^')

    @property
    def ok(self) -> bool:
        return self.status == OK


class _Reject(Exception):
    """Internal: input exceeds a hard limit."""


class _Unparseable(Exception):
    """Internal: input is outside the grammar."""


class _Symbolic(Exception):
    """Internal: a name or an irrational value with no rational meaning."""


# --------------------------------------------------------------------------- tokenizer

_MIXED_RE = re.compile(r"(\d{1,6})[ \t]+(\d{1,6})/(\d{1,6})(?![\d.])", re.ASCII)
_GLUED_FRAC_RE = re.compile(r"(\d{1,6})/(\d{1,6})(?![\d.])", re.ASCII)
_NUM_RE = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d*)?|\.\d+", re.ASCII)
_CMD_RE = re.compile(r"\\([A-Za-z]+)", re.ASCII)
_NAME_RE = re.compile(r"[A-Za-z]+", re.ASCII)
_TIMES_CMDS = {"times", "cdot", "ast"}
_DIV_CMDS = {"div"}
_FRAC_CMDS = {"frac", "dfrac", "tfrac", "cfrac"}
_SKIP_CMDS = {"left", "right", "displaystyle", "quad", "qquad", "text", "mathrm", "textbf"}
_DIGITS = frozenset("0123456789")
_OPEN = {"(": ")", "[": "]", "{": "}"}
_CLOSE = {")", "]", "}"}
_SINGLE = {
    "+": "+",
    "-": "-",
    "\u2212": "-",
    "\u2013": "-",
    "*": "*",
    "\u00d7": "*",
    "\u00b7": "*",
    "\u22c5": "*",
    "\u2217": "*",
    "/": "/",
    "\u00f7": "/",
    "^": "^",
    "%": "%",
}

Token = tuple[str, Any]  # (kind, payload); kinds: num op lp rp name frac sqrt


def tokenize(text: str) -> list[Token]:
    """Split an expression into tokens; raises _Reject / _Unparseable (internal)."""
    if len(text) > MAX_CHARS:
        raise _Reject(f"longer than {MAX_CHARS} characters")
    toks: list[Token] = []
    depth = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\n$,":  # '$' = currency or LaTeX delimiter; stray commas separate nothing
            if c == "," and toks and toks[-1][0] == "num" and i + 1 < n and text[i + 1] in _DIGITS:
                raise _Unparseable("comma between numbers")
            i += 1
            continue
        if c in _DIGITS and (not toks or toks[-1][0] == "op") and (mm := _MIXED_RE.match(text, i)):
            if int(mm.group(3)) and int(mm.group(2)) < int(mm.group(3)):  # "1 1/2" = 3/2
                whole, num, den = (int(g) for g in mm.groups())
                toks.append(("num", Fraction(whole) + Fraction(num, den)))
                i = mm.end()
                continue
        if (
            c in _DIGITS
            and toks
            and toks[-1] == ("op", "/")
            and text[i - 1] in " \t"
            and (mm := _GLUED_FRAC_RE.match(text, i))
        ):
            if int(mm.group(2)):  # "28 / 1/5": the glued fraction is one number
                toks.append(("num", Fraction(int(mm.group(1)), int(mm.group(2)))))
                i = mm.end()
                continue
        if c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            m = _NUM_RE.match(text, i)
            assert m is not None
            lit = m.group(0)
            if sum(ch.isdigit() for ch in lit) > MAX_DIGITS:
                raise _Reject(f"number with more than {MAX_DIGITS} digits")
            toks.append(("num", Fraction(lit.replace(",", "").rstrip(".") or "0")))
            i = m.end()
        elif c == "*" and text.startswith("**", i):
            toks.append(("op", "^"))
            i += 2
        elif c == "/" and text.startswith("//", i):
            toks.append(("op", "//"))
            i += 2
        elif c in _SINGLE:
            toks.append(("op", _SINGLE[c]))
            i += 1
        elif c in _OPEN:
            depth += 1
            if depth > MAX_DEPTH:
                raise _Reject(f"nesting deeper than {MAX_DEPTH}")
            toks.append(("lp", c))
            i += 1
        elif c in _CLOSE:
            depth -= 1
            toks.append(("rp", c))
            i += 1
        elif c == "\\":
            m = _CMD_RE.match(text, i)
            if not m:
                if text.startswith("\\%", i):
                    toks.append(("op", "%"))
                    i += 2
                    continue
                if text.startswith("\\,", i) or text.startswith("\\ ", i) or text.startswith("\\!", i):
                    i += 2
                    continue
                raise _Unparseable("stray backslash")
            cmd = m.group(1)
            i = m.end()
            if cmd in _TIMES_CMDS:
                toks.append(("op", "*"))
            elif cmd in _DIV_CMDS:
                toks.append(("op", "/"))
            elif cmd in _FRAC_CMDS:
                toks.append(("frac", cmd))
            elif cmd == "sqrt":
                toks.append(("sqrt", cmd))
            elif cmd in _SKIP_CMDS:
                continue
            else:
                toks.append(("name", "\\" + cmd))
        elif c.isascii() and c.isalpha():
            m = _NAME_RE.match(text, i)
            assert m is not None
            word = m.group(0)
            i = m.end()
            nxt = text[i:].lstrip()[:1]
            if (
                word in ("x", "X")
                and toks
                and toks[-1][0] in ("num", "rp")
                and nxt
                and nxt in "0123456789.($"
            ):
                toks.append(("op", "*"))  # "3 x 24", "0.2 x 50"
            else:
                toks.append(("name", word))
        else:
            raise _Unparseable(f"character {c!r} outside the grammar")
        if len(toks) > MAX_TOKENS:
            raise _Reject(f"more than {MAX_TOKENS} tokens")
    return toks


# --------------------------------------------------------------------------- parser -> AST
# AST nodes are tuples: ("num", Fraction) ("name", str) ("neg", a) ("pct", a) ("sqrt", a)
# ("bin", op, a, b)


class _Parser:
    def __init__(self, toks: list[Token]) -> None:
        self.toks = toks
        self.i = 0
        self.depth = 0

    def peek(self) -> Token | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> Token:
        tok = self.peek()
        if tok is None:
            raise _Unparseable("unexpected end")
        self.i += 1
        return tok

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise _Reject(f"nesting deeper than {MAX_DEPTH}")

    def expr(self) -> tuple:
        self.enter()
        node = self.term()
        while (t := self.peek()) in (("op", "+"), ("op", "-")):
            assert t is not None
            self.i += 1
            node = ("bin", t[1], node, self.term())
        self.depth -= 1
        return node

    def term(self) -> tuple:
        node = self.unary()
        while (t := self.peek()) is not None:
            if t[0] == "op" and t[1] in ("*", "/", "//"):
                self.i += 1
                node = ("bin", t[1], node, self.unary())
            elif t[0] in ("lp", "name", "frac", "sqrt"):  # implicit product: 2(3+4), 2x
                node = ("bin", "*", node, self.unary())
            else:
                break
        return node

    def unary(self) -> tuple:
        t = self.peek()
        if t is not None and t[0] == "op" and t[1] in "+-":
            self.i += 1
            self.enter()
            inner = self.unary()
            self.depth -= 1
            return ("neg", inner) if t[1] == "-" else inner
        return self.power()

    def power(self) -> tuple:
        base = self.postfix()
        if self.peek() == ("op", "^"):
            self.i += 1
            self.enter()
            exp = self.unary()
            self.depth -= 1
            return ("bin", "^", base, exp)
        return base

    def postfix(self) -> tuple:
        node = self.atom()
        while self.peek() == ("op", "%"):
            self.i += 1
            node = ("pct", node)
        return node

    def group(self) -> tuple:
        t = self.take()
        if t[0] != "lp":
            raise _Unparseable("expected a bracket")
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
            return ("num", t[1])
        if kind == "name":
            self.i += 1
            return ("name", t[1])
        if kind == "lp":
            return self.group()
        if kind == "frac":
            self.i += 1
            return ("bin", "/", self.group(), self.group())
        if kind == "sqrt":
            self.i += 1
            return ("sqrt", self.group())
        raise _Unparseable(f"unexpected {t[1]!r}")


# --------------------------------------------------------------------------- evaluator


def _bits(q: Fraction) -> int:
    return q.numerator.bit_length() + q.denominator.bit_length()


def _isqrt_exact(q: Fraction) -> Fraction | None:
    if q < 0:
        return None
    n, d = math.isqrt(q.numerator), math.isqrt(q.denominator)
    return Fraction(n, d) if n * n == q.numerator and d * d == q.denominator else None


class _Eval:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.steps = 0

    def tick(self) -> None:
        self.steps += 1
        if self.steps % 64 == 0 and time.perf_counter() > self.deadline:
            raise _Reject("time limit")

    def run(self, node: tuple) -> Fraction:
        self.tick()
        kind = node[0]
        if kind == "num":
            return node[1]
        if kind == "name":
            raise _Symbolic(f"name {node[1]}")
        if kind == "neg":
            return -self.run(node[1])
        if kind == "pct":
            return self.run(node[1]) / 100
        if kind == "sqrt":
            v = self.run(node[1])
            r = _isqrt_exact(v)
            if r is None:
                raise _Symbolic("irrational square root")
            return r
        op, a, b = node[1], self.run(node[2]), self.run(node[3])
        if op == "+":
            out = a + b
        elif op == "-":
            out = a - b
        elif op == "*":
            out = a * b
        elif op == "/" or op == "//":
            if b == 0:
                raise _Unparseable("division by zero")
            out = a / b if op == "/" else Fraction(a // b)
        else:
            out = self.power(a, b)
        if _bits(out) > MAX_RESULT_BITS:
            raise _Reject("result too large")
        return out

    @staticmethod
    def power(a: Fraction, b: Fraction) -> Fraction:
        if b.denominator == 2 and b > 0:  # a^(k/2) = sqrt(a)^k when exact
            r = _isqrt_exact(a)
            if r is None:
                raise _Symbolic("irrational power")
            a, b = r, Fraction(b.numerator)
        if b.denominator != 1:
            raise _Symbolic("non-integer exponent")
        e = b.numerator
        if abs(e) > MAX_EXPONENT or _bits(a) * abs(e) > MAX_RESULT_BITS:
            raise _Reject("exponent too large")
        if a == 0 and e < 0:
            raise _Unparseable("division by zero")
        return a**e


def _leaves(node: tuple, out: list[Fraction], ops: list[str]) -> None:
    stack = [node]
    while stack:
        nd = stack.pop()
        k = nd[0]
        if k == "num":
            out.append(nd[1])
        elif k == "bin":
            ops.append(nd[1])
            stack.append(nd[3])
            stack.append(nd[2])
        elif k in ("neg", "pct", "sqrt"):
            stack.append(nd[1])


def parse(text: str) -> tuple[tuple | None, str, str]:
    """(AST or None, status, reason). Never raises on any input string."""
    try:
        if not isinstance(text, str):
            return None, UNPARSEABLE, "not a string"
        toks = tokenize(text)
        if not toks:
            return None, UNPARSEABLE, "empty"
        p = _Parser(toks)
        node = p.expr()
        if p.i != len(toks):
            return None, UNPARSEABLE, f"trailing {toks[p.i][1]!r}"
        return node, OK, ""
    except _Reject as e:
        return None, REJECTED, str(e)
    except (_Unparseable, ValueError, ZeroDivisionError) as e:
        return None, UNPARSEABLE, str(e) or "unparseable"
    except RecursionError:  # pragma: no cover - depth caps make this unreachable
        return None, REJECTED, "nesting too deep"
    except Exception as e:  # pragma: no cover - a safety net: untrusted text must never crash a run
        return None, UNPARSEABLE, f"internal: {type(e).__name__}"


def evaluate_ast(node: tuple, time_limit_s: float = TIME_LIMIT_S) -> ExprResult:
    """Evaluate a parsed AST exactly; never raises."""
    leaves: list[Fraction] = []
    ops: list[str] = []
    _leaves(node, leaves, ops)
    meta = {"leaves": tuple(leaves), "ops": "".join(ops)}
    try:
        value = _Eval(time.perf_counter() + time_limit_s).run(node)
        return ExprResult(OK, value, **meta)
    except _Symbolic as e:
        irr = _sympy_value(node) if "irrational" in str(e) else None
        return ExprResult(SYMBOLIC, None, irrational=irr, reason=str(e), **meta)
    except _Reject as e:
        return ExprResult(REJECTED, reason=str(e), **meta)
    except (_Unparseable, ZeroDivisionError, OverflowError, ValueError) as e:
        return ExprResult(UNPARSEABLE, reason=str(e), **meta)


@lru_cache(maxsize=65_536)
def evaluate(text: str) -> ExprResult:
    """Parse and evaluate an untrusted expression to an exact rational. Never raises."""
    node, status, reason = parse(text)
    if node is None:
        return ExprResult(status, reason=reason)
    return evaluate_ast(node)


def _sympy_value(node: tuple) -> Any:
    """Exact value of a purely numeric AST with roots, via sympy objects built node by node."""
    try:
        import sympy

        def go(nd: tuple) -> Any:
            k = nd[0]
            if k == "num":
                return sympy.Rational(nd[1].numerator, nd[1].denominator)
            if k == "name":
                raise _Symbolic("name")
            if k == "neg":
                return -go(nd[1])
            if k == "pct":
                return go(nd[1]) / 100
            if k == "sqrt":
                return sympy.sqrt(go(nd[1]))
            a, b = go(nd[2]), go(nd[3])
            op = nd[1]
            if op == "^":
                if not (b.is_Rational and abs(b) <= MAX_EXPONENT):
                    raise _Reject("exponent")
                return a**b
            return a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b

        return go(node)
    except Exception:  # anything odd: no exact value, the caller treats it as symbolic
        return None
