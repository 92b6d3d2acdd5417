"""Check the algebra of LaTeX solution steps: valid / faulty / unknown, with evidence.

A step's formulas (`latex.relations`) give equality links. Each link is checked in order:
- no variables: exact rational arithmetic, or 30-digit mpmath when roots, pi or functions appear;
  a claim written with d decimals may differ by half a unit of its last place (a rounding);
- every variable solved earlier in the solution: substitute the earlier solutions; the link must hold
  for at least one of them (a derived equation keeps a solution of the earlier ones; a wrong root
  fails), else it is faulty;
- otherwise the link may be an identity: random rational points, evaluated exactly, are the fast
  test; `sympy` (expand, cancel, then simplify) confirms in a worker process, and the numeric verdict
  stands when sympy runs out of time. A link that is *meant* to be an identity (a middle link of a
  chain `a = b = c` whose sides depend on the same variables, names that cancel not counted, none
  pinned by earlier premises) and fails is faulty;
- any other link is a premise: with one unknown left it is solved (exact when linear, sympy's real
  roots otherwise) and its solutions feed later substitution checks. Premises are 'unknown'.
'unknown' never counts as faulty. Everything sympy does runs in a killable worker under a deadline;
everything done here is bounded by the parser's caps and `_MAX_*` below.
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing as mp
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import mpmath

from silverbullet.attribution import latex

VALID, FAULTY, UNKNOWN = "valid", "faulty", "unknown"
SYMPY_TIMEOUT_S = 0.5
STARTUP_TIMEOUT_S = 60.0
_MAX_EXPONENT = 200
_MAX_BITS = 20_000
_MAX_FACT = 300
_MAX_COMBOS = 16
_RECENT_STEPS = 2  # a bare 'x = value' contradicting a solution solved or used this recently is an error
_CONSTANT_LETTERS = frozenset({"i", "e"})  # the imaginary unit and Euler's number read as letters
_MAX_ROOTS = 8
_DPS = 30
_F = Fraction
_POINTS = (
    (_F(13, 7), _F(-5, 3), _F(11, 4), _F(3, 11), _F(17, 5), _F(-7, 9)),
    (_F(-19, 6), _F(23, 8), _F(2, 13), _F(-31, 10), _F(9, 14), _F(29, 3)),
    (_F(37, 12), _F(7, 17), _F(-41, 15), _F(5, 19), _F(43, 16), _F(-3, 23)),
)

_CTX = mpmath.MPContext()
_CTX.dps = _DPS


class _Irrational(Exception):
    """The exact value is not rational: evaluate numerically instead."""


class _Undefined(Exception):
    """Division by zero, a root of a negative number, a function outside its domain."""


class _TooBig(Exception):
    """A value past the size caps."""


Value = Any  # Fraction or mpmath mpf


# --------------------------------------------------------------------------- evaluation


def _bits(q: Fraction) -> int:
    return q.numerator.bit_length() + q.denominator.bit_length()


def _iroot(q: Fraction, n: int) -> Fraction:
    if q < 0 and n % 2 == 0:
        raise _Undefined("even root of a negative number")
    sign = -1 if q < 0 else 1
    out = []
    for part in (abs(q.numerator), q.denominator):
        r = round(part ** (1.0 / n)) if part.bit_length() < 1000 else None
        if r is None:
            raise _Irrational("root of a large number")
        hit = next((c for c in (r - 1, r, r + 1) if c >= 0 and c**n == part), None)
        if hit is None:
            raise _Irrational("irrational root")
        out.append(hit)
    return sign * Fraction(out[0], out[1])


def evaluate(node: tuple, env: dict[str, Value], exact: bool) -> Value:
    """Value of an AST at `env`: a Fraction when `exact` (raises _Irrational when it is not
    rational), else a 30-digit mpmath number. Raises _Undefined / _TooBig / KeyError (free name)."""
    k = node[0]
    if k == "num":
        return node[1] if exact else _CTX.mpf(node[1].numerator) / node[1].denominator
    if k == "name":
        v = env[node[1]]
        if exact and not isinstance(v, Fraction):
            raise _Irrational("inexact value")
        return v if (exact or not isinstance(v, Fraction)) else _CTX.mpf(v.numerator) / v.denominator
    if k == "pi":
        if exact:
            raise _Irrational("pi")
        return _CTX.pi
    if k == "neg":
        return -evaluate(node[1], env, exact)
    if k == "pct":
        return evaluate(node[1], env, exact) / 100
    if k == "fact":
        v = evaluate(node[1], env, exact)
        iv = int(v) if v == int(v) else None
        if iv is None or iv < 0:
            raise _Undefined("factorial of a non-natural number")
        if iv > _MAX_FACT:
            raise _TooBig("factorial too large")
        import math

        f = math.factorial(iv)
        return Fraction(f) if exact else _CTX.mpf(f)
    if k == "binom":
        a, b = evaluate(node[1], env, exact), evaluate(node[2], env, exact)
        if a != int(a) or b != int(b) or abs(a) > 10_000:
            raise _Undefined("binomial of non-integers")
        import math

        c = math.comb(int(a), int(b)) if 0 <= int(b) and int(a) >= 0 else 0
        return Fraction(c) if exact else _CTX.mpf(c)
    if k == "root":
        n = evaluate(node[1], env, True) if exact else evaluate(node[1], env, False)
        if n != int(n) or not 2 <= int(n) <= 64:
            raise _Undefined("root index")
        x = evaluate(node[2], env, exact)
        if exact:
            return _iroot(x, int(n))
        if x < 0:
            if int(n) % 2 == 0:
                raise _Undefined("even root of a negative number")
            return -_CTX.root(-x, int(n))
        return _CTX.root(x, int(n))
    if k == "func":
        if exact:
            raise _Irrational("function")
        x = evaluate(node[2], env, False)
        name = node[1]
        try:
            if name in ("ln", "log"):
                if x <= 0:
                    raise _Undefined("log of a non-positive number")
                return _CTX.log(x) if name == "ln" else _CTX.log10(x)
            fn = {"sin": _CTX.sin, "cos": _CTX.cos, "tan": _CTX.tan, "exp": _CTX.exp, "sec": _CTX.sec,
                  "csc": _CTX.csc, "cot": _CTX.cot, "arcsin": _CTX.asin, "arccos": _CTX.acos,
                  "arctan": _CTX.atan}[name]  # fmt: skip
            if name == "exp" and abs(x) > 10_000:
                raise _TooBig("exp too large")
            out = fn(x)
        except (ValueError, ZeroDivisionError) as e:
            raise _Undefined(str(e)) from None
        if isinstance(out, mpmath.mpc) or not _CTX.isfinite(out):
            raise _Undefined("outside the real domain")
        return out
    op = node[1]
    a = evaluate(node[2], env, exact)
    b = evaluate(node[3], env, exact)
    if op == "+":
        out = a + b
    elif op == "-":
        out = a - b
    elif op == "*":
        out = a * b
    elif op == "/":
        if b == 0:
            raise _Undefined("division by zero")
        out = a / b
    else:
        out = _power(a, b, exact)
    if exact and _bits(out) > _MAX_BITS:
        raise _TooBig("result too large")
    return out


def _power(a: Value, b: Value, exact: bool) -> Value:
    if exact:
        if b.denominator != 1:
            return _iroot(_power(a, Fraction(b.numerator), True), b.denominator) if b.denominator <= 64 else \
                _irr()  # fmt: skip
        e = b.numerator
        if abs(e) > _MAX_EXPONENT or _bits(a) * abs(e) > _MAX_BITS:
            raise _TooBig("exponent too large")
        if a == 0 and e < 0:
            raise _Undefined("division by zero")
        return a**e
    if abs(b) > 100_000:
        raise _TooBig("exponent too large")
    if a < 0 and b != int(b):
        raise _Undefined("fractional power of a negative number")
    if a == 0 and b < 0:
        raise _Undefined("division by zero")
    return a**b


def _irr() -> Fraction:
    raise _Irrational("irrational power")


def value(node: tuple, env: dict[str, Value]) -> Value:
    """Exact when possible, else numeric."""
    try:
        return evaluate(node, env, True)
    except _Irrational:
        return evaluate(node, env, False)


def _mp(v: Value) -> Any:
    return _CTX.mpf(v.numerator) / v.denominator if isinstance(v, Fraction) else v


def _diff(a: Value, b: Value) -> Value:
    """a - b, exact when both are rationals."""
    if isinstance(a, Fraction) and isinstance(b, Fraction):
        return a - b
    return _mp(a) - _mp(b)


def _is_zero(d: Value, scale: Value) -> bool:
    if isinstance(d, Fraction):
        return d == 0
    return abs(d) <= _CTX.mpf(10) ** (-(_DPS - 8)) * max(1, abs(scale))


# --------------------------------------------------------------------------- sympy worker


def _to_sympy(node: tuple, imaginary: bool = False) -> Any:
    """Our AST as a sympy expression; with `imaginary` the letters i and e are the imaginary unit and
    Euler's number."""
    import sympy

    k = node[0]
    if k == "num":
        return sympy.Rational(node[1].numerator, node[1].denominator)
    if k == "name":
        if imaginary and node[1] in ("i", "e"):
            return sympy.I if node[1] == "i" else sympy.E
        return sympy.Symbol(node[1])
    if k == "pi":
        return sympy.pi
    if k == "neg":
        return -_to_sympy(node[1], imaginary)
    if k == "pct":
        return _to_sympy(node[1], imaginary) / 100
    if k == "fact":
        a = _to_sympy(node[1], imaginary)
        if a.is_Integer and not 0 <= int(a) <= _MAX_FACT:
            raise _TooBig("factorial")
        return sympy.factorial(a)
    if k == "binom":
        return sympy.binomial(_to_sympy(node[1], imaginary), _to_sympy(node[2], imaginary))
    if k == "root":
        n = _to_sympy(node[1], imaginary)
        return sympy.root(_to_sympy(node[2], imaginary), n)
    if k == "func":
        fn = {"sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "ln": sympy.log, "exp": sympy.exp,
              "sec": sympy.sec, "csc": sympy.csc, "cot": sympy.cot, "arcsin": sympy.asin, "arccos": sympy.acos,
              "arctan": sympy.atan, "log": lambda x: sympy.log(x, 10)}[node[1]]  # fmt: skip
        return fn(_to_sympy(node[2], imaginary))
    op, a, b = node[1], _to_sympy(node[2], imaginary), _to_sympy(node[3], imaginary)
    if op == "^":
        if imaginary and a == sympy.E:  # e^{i\theta}: evaluated at points, never expanded
            return sympy.exp(b)
        if not (b.is_Rational and abs(b) <= _MAX_EXPONENT):
            raise _TooBig("symbolic exponent")
        return a**b
    return a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b


def _task(kind: str, args: tuple) -> Any:
    """Runs in the worker. 'identity': is a - b zero? 'roots': real roots of a - b in one name."""
    import sympy

    if kind == "ping":
        return "pong"
    if kind == "sleep":  # used by the tests of the deadline (idle: no CPU time)
        time.sleep(args[0])
        return "slept"
    if kind == "spin":  # used by the tests of the deadline (busy: CPU time)
        end = time.perf_counter() + args[0]
        while time.perf_counter() < end:
            pass
        return "spun"
    if kind == "complex_points":
        return _complex_points(args[0], args[1])
    if kind == "on_premise":
        return _on_premise(*args)
    a, b = _to_sympy(args[0]), _to_sympy(args[1])
    d = a - b
    if kind == "identity":
        for how, fn in (("expand", sympy.expand), ("cancel", sympy.cancel), ("simplify", sympy.simplify)):
            if fn(d) == 0:
                return how
        return "not_zero"
    if kind == "roots":
        x = sympy.Symbol(args[2])
        num = sympy.numer(sympy.together(d))
        poly = sympy.Poly(num, x)
        if poly.degree() < 1 or poly.degree() > _MAX_ROOTS or not all(c.is_number for c in poly.coeffs()):
            return None
        out = []
        for r in sympy.real_roots(poly):
            if r.is_Rational:
                out.append(("q", int(r.p), int(r.q)))
            else:
                out.append(("f", str(sympy.N(r, _DPS))))
        return out
    raise ValueError(kind)


def _complex_points(a: tuple, b: tuple) -> str | None:
    """With i the imaginary unit, is a - b zero at the fixed random points of the other names?
    'zero' (at two points or more), 'nonzero', or None (undefined everywhere)."""
    import sympy

    d = _to_sympy(a, True) - _to_sympy(b, True)
    names = sorted(str(s) for s in d.free_symbols)
    if len(names) > len(_POINTS[0]):
        return None
    seen = 0
    for pts in _POINTS:
        env = {sympy.Symbol(n): sympy.Rational(p.numerator, p.denominator) for n, p in zip(names, pts, strict=False)}
        v = sympy.N(d.subs(env), _DPS)
        if not v.is_finite:
            continue
        seen += 1
        scale = max(1, abs(sympy.N(_to_sympy(a, True).subs(env), _DPS)))
        if abs(v) > sympy.Float(10) ** -20 * scale:
            return "nonzero"
    return "zero" if seen >= 2 else None


def _on_premise(a: tuple, b: tuple, pa: tuple, pb: tuple) -> str | None:
    """Is a - b zero on the premise pa = pb (a relation of several names, 'a^2 + b^2 = 16')? The
    other names take the fixed random points and the premise is solved for its last name (real
    roots). 'nonzero': at some point no root makes it zero; 'zero': some root does at two points or
    more; None: could not tell. i is the imaginary unit."""
    import sympy

    d = _to_sympy(a, True) - _to_sympy(b, True)
    prem = _to_sympy(pa, True) - _to_sympy(pb, True)
    pnames = sorted(str(s) for s in prem.free_symbols)
    names = sorted({str(s) for s in d.free_symbols} | set(pnames))
    if not pnames or prem.has(sympy.I) or len(names) > len(_POINTS[0]) + 1:
        return None
    u = sympy.Symbol(pnames[-1])
    others = [n for n in names if n != pnames[-1]]
    zero = 0
    for pts in _POINTS:
        env = {sympy.Symbol(n): sympy.Rational(p.numerator, p.denominator) for n, p in zip(others, pts, strict=False)}
        num = sympy.numer(sympy.together(prem.subs(env)))
        try:
            poly = sympy.Poly(num, u)
        except sympy.PolynomialError:
            return None
        if poly.degree() < 1 or poly.degree() > _MAX_ROOTS or not all(c.is_number for c in poly.coeffs()):
            return None
        roots = sympy.real_roots(poly)
        if not roots:
            continue
        vals = []
        for r in roots:
            v = sympy.N(d.subs({**env, u: r}), _DPS)
            if not v.is_finite:
                break
            scale = max(1, abs(sympy.N(_to_sympy(a, True).subs({**env, u: r}), _DPS)))
            vals.append(abs(v) <= sympy.Float(10) ** -20 * scale)
        else:
            if not any(vals):
                return "nonzero"
            zero += 1
    return "zero" if zero >= 2 else None


def _warm_up() -> None:
    """Run each kind of sympy work once on a tiny input before the worker says it is ready: sympy
    builds caches and imports submodules on first use (0.3 s on a quiet 2-core machine), which
    would otherwise be charged to the first real call's deadline and turn it into 'unknown'."""
    import sympy

    a, b = sympy.symbols("a b")
    d = (3 + 2 * sympy.I) * (a + b * sympy.I) - (3 * a - 2 * b) - (2 * a + 3 * b) * sympy.I
    for fn in (sympy.expand, sympy.cancel, sympy.simplify):
        fn(d)
    sympy.N(sympy.sqrt(2) * sympy.E, _DPS)
    sympy.real_roots(sympy.Poly(sympy.numer(sympy.together(a**2 - 2 + 1 / a)), a))


def _worker(conn: Any, parent_end: Any = None) -> None:  # pragma: no cover - runs in the child process
    # A forked worker inherits the parent's end of the pipe: closed here, so that when the parent
    # dies (a diagnose killed by a signal, where atexit never runs) recv() sees EOF and the worker
    # exits instead of living on as an orphan holding the parent's memory.
    if parent_end is not None:
        parent_end.close()
    try:
        _warm_up()
    except Exception:  # a failed warm-up only costs the first call its head start
        pass
    conn.send(("ready", None))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        try:
            conn.send(("ok", _task(*msg)))
        except Exception as e:
            conn.send(("error", f"{type(e).__name__}"))


_WALL_FACTOR = 4  # a call waits at most this many times its deadline in wall time


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process, from /proc (None where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


class WorkerPool:
    """One persistent sympy worker process (per pool) with a per-call deadline. A worker past its
    deadline is killed and replaced; the call answers ('timeout', None). Thread-safe."""

    def __init__(self) -> None:
        methods = mp.get_all_start_methods()
        self._ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        self._lock = threading.Lock()
        self._proc: Any = None
        self._conn: Any = None
        self.kills = 0

    def _start(self) -> None:
        """Start a worker and wait for it to be ready: its start-up (importing sympy, slow on a busy
        machine) is not charged to the first call's deadline."""
        import sympy  # noqa: F401  (imported once here, a forked worker starts with it)

        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker, args=(child, parent), daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn = proc, parent
        if not parent.poll(STARTUP_TIMEOUT_S):
            self._kill()
            raise RuntimeError("sympy worker did not start")
        parent.recv()

    def call(self, kind: str, args: tuple = (), timeout_s: float = SYMPY_TIMEOUT_S) -> tuple[str, Any]:
        with self._lock:
            if self._proc is None or not self._proc.is_alive():
                try:
                    self._start()
                except (RuntimeError, OSError, EOFError):
                    return "error", "worker did not start"
            try:
                self._conn.send((kind, args))
                if self._wait(timeout_s):
                    return self._conn.recv()
            except (EOFError, OSError, BrokenPipeError):
                self._kill()
                return "error", "worker died"
            self._kill()
            self.kills += 1
            return "timeout", None

    def _wait(self, timeout_s: float) -> bool:
        """Wait for the answer until the worker has spent `timeout_s` of CPU time on it (Linux), or
        `_WALL_FACTOR` times that in wall time. The deadline bounds the work, not the scheduler: on
        a machine busy with other processes a quick call must not come back 'unknown'. Elsewhere
        (no /proc), the deadline is wall time."""
        cpu0 = _cpu_seconds(self._proc.pid)
        if self._conn.poll(timeout_s) or cpu0 is None:
            return self._conn.poll(0)
        waited = timeout_s
        while waited < _WALL_FACTOR * timeout_s:
            cpu = _cpu_seconds(self._proc.pid)
            if cpu is None or cpu - cpu0 >= timeout_s:
                return self._conn.poll(0)
            step = min(timeout_s - (cpu - cpu0) + 0.01, _WALL_FACTOR * timeout_s - waited)
            if self._conn.poll(step):
                return True
            waited += step
        return self._conn.poll(0)

    def _kill(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.join(5)
            self._conn.close()
        self._proc = self._conn = None

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.is_alive():
                try:
                    self._conn.send(None)
                except OSError:
                    pass
            self._kill()


_POOL: WorkerPool | None = None


def get_pool() -> WorkerPool:
    """The process-wide pool, started on first use and closed at exit."""
    global _POOL
    if _POOL is None:
        _POOL = WorkerPool()
        atexit.register(_POOL.close)
    return _POOL


# --------------------------------------------------------------------------- checks


@dataclass(frozen=True)
class LinkCheck:
    status: str  # valid | faulty | unknown
    kind: str  # numeric | identity | substitution | premise | parse
    equation: str
    detail: str = ""

    def evidence(self) -> dict:
        return {"check": "symbolic", "kind": self.kind, "equation": self.equation, "detail": self.detail,
                "status": self.status}  # fmt: skip


@dataclass(frozen=True)
class SymbolicStep:
    """valid: some link holds and none fails; faulty: one fails; unknown: nothing decided."""

    index: int
    status: str
    links: tuple[LinkCheck, ...] = ()

    @property
    def first_fault(self) -> LinkCheck | None:
        return next((c for c in self.links if c.status == FAULTY), None)


def _fmt(v: Value) -> str:
    if isinstance(v, Fraction):
        return str(v)
    return _CTX.nstr(v, 8)


def _unit(node: tuple) -> Fraction | None:
    """One unit of the last written place of a claimed number (4.5 -> 1/10, 4.5 \\times 10^{33} -> 10^32)."""
    if node[0] == "neg":
        return _unit(node[1])
    if node[0] == "num":
        return Fraction(10) ** -node[2] if abs(node[2]) < 400 else None
    if node[0] == "bin" and node[1] == "*" and node[2][0] == "num":
        p = node[3]
        if p[0] == "bin" and p[1] == "^" and p[2][0] == "num" and p[2][1] == 10:
            e = p[3][1] if p[3][0] == "num" else -p[3][1][1] if p[3][0] == "neg" and p[3][1][0] == "num" else None
            if e is not None and e.denominator == 1 and abs(e) < 400:
                return Fraction(10) ** (int(e) - node[2][2])
    return None


def _bare(node: tuple) -> bool:
    return node[0] == "num" or (node[0] == "neg" and node[1][0] == "num")


def _close(a: Value, b: Value, na: tuple, nb: tuple, approx: bool) -> bool | None:
    """True: equal, or equal up to the rounding the written claim allows; None: only approximately."""
    exact = isinstance(a, Fraction) and isinstance(b, Fraction)
    if exact and a == b:
        return True
    fa, fb = _mp(a), _mp(b)
    diff = abs(fa - fb)
    if not exact and diff <= _CTX.mpf(10) ** -20 * max(1, abs(fa)):
        return True
    # a side written as a number may be rounded to its last written place (0.53 for 0.533...);
    # an integer result written as another integer is an error (3 * 24 = 73), not a rounding
    for u in (_unit(nb), _unit(na)):
        if u is None or (u == 1 and exact and a.denominator == 1 and b.denominator == 1):
            continue
        if diff <= _CTX.mpf(u.numerator) / u.denominator * _CTX.mpf("0.5000001"):
            return True
    if approx and fa != 0 and diff / abs(fa) <= _CTX.mpf("0.05"):
        return True
    return None if approx else False


class SolutionChecker:
    """Checks one solution's steps in order, carrying the values that earlier steps solved for.

    Step-level API: `check(text)` for each step, in order (a segmenter can feed it directly).
    """

    def __init__(self, pool: WorkerPool | None = None, timeout_s: float = SYMPY_TIMEOUT_S) -> None:
        self.pool = pool
        self.timeout_s = timeout_s
        self.known: dict[str, list[Value]] = {}
        self.solved_at: dict[str, int] = {}  # step where each known name was solved
        self.used_at: dict[str, int] = {}  # last step where a link held with a known name's value
        self.assigned: set[str] = set()  # names whose value was written directly ('n = 1'), not derived
        self.premised: set[str] = set()  # names tied by an unsolved premise of several unknowns
        self.premises: list[frozenset[str]] = []  # the names of each such premise
        self.premise_eqs: list[tuple[tuple, tuple]] = []  # and its two sides
        self.n = 0

    def _sympy(self, kind: str, args: tuple) -> tuple[str, Any]:
        pool = self.pool or get_pool()
        return pool.call(kind, args, self.timeout_s)

    def check(self, text: str) -> SymbolicStep:
        index = self.n
        self.n += 1
        links: list[LinkCheck] = []
        try:
            for rel in latex.relations(text if isinstance(text, str) else ""):
                parsed = [latex.parse(p) for p in rel.parts]
                first = len(links)
                for j, r in enumerate(rel.rels):
                    pa, pb = parsed[j], parsed[j + 1]
                    eq = f"{rel.parts[j].strip()} = {rel.parts[j + 1].strip()}"[:300]
                    if pa.node is None or pb.node is None:
                        bad = pa if pa.node is None else pb
                        links.append(LinkCheck(UNKNOWN, "parse", eq, f"{bad.status}: {bad.reason}"))
                        continue
                    middle = len(rel.parts) >= 3
                    na_, nb_ = pa.node, pb.node
                    if ("%" in pb.units) != ("%" in pa.units):  # '= 19.2\\%': compare as a percentage
                        hundred = ("num", Fraction(100), 0)
                        if "%" in pb.units:
                            na_ = ("bin", "*", na_, hundred)
                        else:
                            nb_ = ("bin", "*", nb_, hundred)
                    got = self._link(na_, nb_, r == latex.REL_APPROX, middle, eq)
                    if got.status == FAULTY and (na_ is not pa.node or nb_ is not pb.node):
                        # '1/8 \\times 100 = 12.5\\%' is already in percent
                        plain = self._link(pa.node, pb.node, r == latex.REL_APPROX, middle, eq)
                        # '0.74 = 73\\%': a fraction of at most 1 against a percentage is read only one way
                        got = got if plain.status == UNKNOWN and _fraction_side(pa, pb) else \
                            plain if plain.status != FAULTY else got  # fmt: skip
                    ua, ub = _dimensioned(pa.units), _dimensioned(pb.units)
                    units_differ = bool(ua and ub and ua != ub)
                    if got.status == FAULTY and (units_differ or got.kind != "numeric" and (ua or ub)):
                        # a dropped unit may have been a factor ('d/10 pc'): not trusted for a fault
                        got = LinkCheck(UNKNOWN, got.kind, eq, "units dropped; " + got.detail)
                    links.append(got)
                _bracketed(rel, parsed, links, first)
        except Exception as e:  # pragma: no cover - untrusted text never crashes a run
            links.append(LinkCheck(UNKNOWN, "parse", "", f"internal: {type(e).__name__}"))
        if any(c.status == FAULTY for c in links):
            status = FAULTY
        elif any(c.status == VALID for c in links):
            status = VALID
        else:
            status = UNKNOWN
        return SymbolicStep(index, status, tuple(links))

    # one link ----------------------------------------------------------------------------
    def _link(self, a: tuple, b: tuple, approx: bool, middle: bool, eq: str) -> LinkCheck:
        try:
            return self._link_inner(a, b, approx, middle, eq)
        except _TooBig as e:
            return LinkCheck(UNKNOWN, "numeric", eq, f"too large: {e}")
        except (_Undefined, ZeroDivisionError, ValueError, OverflowError) as e:
            return LinkCheck(UNKNOWN, "numeric", eq, f"undefined: {e}")

    def _link_inner(self, a: tuple, b: tuple, approx: bool, middle: bool, eq: str) -> LinkCheck:
        na, nb = latex.names(a), latex.names(b)
        free = na | nb
        if not free:
            if _bare(a) and _bare(b):
                return LinkCheck(UNKNOWN, "numeric", eq, "two bare numbers (a unit statement)")
            va, vb = value(a, {}), value(b, {})
            ok = _close(va, vb, a, b, approx)
            if ok:
                return LinkCheck(VALID, "numeric", eq, f"{_fmt(va)} = {_fmt(vb)}")
            if ok is None:
                return LinkCheck(UNKNOWN, "numeric", eq, f"{_fmt(va)} ~ {_fmt(vb)} (approximate claim)")
            return LinkCheck(FAULTY, "numeric", eq, f"left side is {_fmt(va)}, right side is {_fmt(vb)}")
        ident = None if approx else _random_identity(a, b, free)
        if ident is True:
            status, how = self._sympy("identity", (a, b))
            how = how if status == "ok" and how != "not_zero" else f"random points (sympy: {how or status})"
            return LinkCheck(VALID, "identity", eq, f"identity, confirmed by {how}")
        if free <= self.known.keys():
            got = self._substitute(a, b, free, approx, eq)
            lone = (a[0] == "name" and a[1] not in nb) or (b[0] == "name" and b[1] not in na)
            if got.status == FAULTY and lone:
                u = a[1] if a[0] == "name" and a[1] not in nb else b[1]
                other = b if u == a[1] and a[0] == "name" else a
                age = self.n - 1 - self.solved_at.get(u, -99)
                used = self.n - 1 - max(self.solved_at.get(u, -99), self.used_at.get(u, -99))
                if age == 0 and not latex.names(other) and u in self.assigned:
                    # 'from n=1 to n=2', 'x = 2 or x = 3': alternatives in one step
                    self.known[u].append(value(other, {}))
                    return LinkCheck(UNKNOWN, "premise", eq, f"another value of {u} in the same step")
                if used > _RECENT_STEPS:
                    # 'n = 5' long after 'n = 1' was last used: the letter is reused, not derived
                    try:
                        self.known[u] = [value(other, {n: vs[0] for n, vs in self.known.items()})]
                    except (_Undefined, _TooBig, _Irrational, ZeroDivisionError):
                        self.known.pop(u, None)
                    self.solved_at[u] = self.n - 1
                    return LinkCheck(UNKNOWN, "premise", eq, f"{u} reassigned (last solved more than "
                                     f"{_RECENT_STEPS} steps earlier)")  # fmt: skip
            return got
        imaginary = None
        if ident is False and free & _CONSTANT_LETTERS and not _has_decimals(a) and not _has_decimals(b):
            # i and e read as plain letters: the link may still hold with i^2 = -1 and e = 2.718...
            # ((75+117i)(a+bi) = ..., 4e^{i\theta} = ...); a link that fails both ways is not an identity
            status, imaginary = self._sympy("complex_points", (a, b))
            imaginary = imaginary if status == "ok" else None
            if imaginary == "zero":
                return LinkCheck(VALID, "identity", eq, "identity with i, e the imaginary unit and Euler's number "
                                 "(random points)")  # fmt: skip
        chain_link = ident is False and middle and a[0] != "name" and b[0] != "name" and na and \
            not _has_decimals(a) and not _has_decimals(b) and \
            (not (free & _CONSTANT_LETTERS) or imaginary == "nonzero") and _live(a, na) == _live(b, nb)  # fmt: skip
        if chain_link and self._free_under_premises(free):
            return LinkCheck(FAULTY, "identity", eq, "a link of an equality chain is not an identity "
                             f"(differs at {_point_text(free)})")  # fmt: skip
        touching = [k for k, ns in enumerate(self.premises) if ns & free]
        if ident is False and len(touching) == 1 and "e" not in free and not _has_decimals(a) and \
                not _has_decimals(b) and not free - self.premises[touching[0]] - {"i"}:  # fmt: skip
            # 'a^2 + b^2 = 16' ties the names: test the link on points of that premise instead
            pa, pb = self.premise_eqs[touching[0]]
            status, on = self._sympy("on_premise", (a, b, pa, pb))
            premise = ", ".join(sorted(self.premises[touching[0]]))
            if status == "ok" and on == "zero":
                return LinkCheck(VALID, "substitution", eq, f"holds on the earlier premise in {premise}")
            if status == "ok" and on == "nonzero" and chain_link:
                return LinkCheck(FAULTY, "substitution", eq, f"a link of an equality chain fails on the earlier "
                                 f"premise in {premise} (random points on it)")  # fmt: skip
        unknown = free - self.known.keys()
        if len(unknown) == 1 and not approx:
            (u,) = unknown
            roots = self._solve(a, b, u)
            if roots:
                self.known[u] = roots[:_MAX_ROOTS]
                self.solved_at[u] = self.n - 1
                lone = (a[0] == "name" and not nb) or (b[0] == "name" and not na)
                (self.assigned.add if lone else self.assigned.discard)(u)
                return LinkCheck(UNKNOWN, "premise", eq, f"{u} = " + ", ".join(_fmt(r) for r in roots[:4]))
        if len(unknown) > 1 and not (na and nb):  # 'a + b + c = 300': later links may use it
            self.premised |= free
            self.premises.append(frozenset(free))
            self.premise_eqs.append((a, b))
        return LinkCheck(UNKNOWN, "premise", eq, "a premise in " + ", ".join(sorted(free))[:80])

    def _free_under_premises(self, names: frozenset[str]) -> bool:
        """Can `names` still take any values? Each earlier premise of several unknowns that mentions
        them ('a + b + c = 300') removes one degree of freedom; it is absorbed when the premises
        bring in at least as many other names ('a^2 + b^2 = 16' leaves a free when b is not here)."""
        touching = [p for p in self.premises if p & names]
        if not touching:
            return True
        others = frozenset().union(*touching) - names
        return len(others) >= len(touching)

    def _substitute(self, a: tuple, b: tuple, free: Iterable[str], approx: bool, eq: str) -> LinkCheck:
        names = sorted(free)
        tried = 0
        keep: dict[str, set[int]] = {n: set() for n in names}
        shown = ""
        any_defined = False
        for combo in itertools.product(*(range(len(self.known[n])) for n in names)):
            tried += 1
            if tried > _MAX_COMBOS:
                break
            env = {n: self.known[n][i] for n, i in zip(names, combo, strict=True)}
            try:
                va, vb = value(a, env), value(b, env)
            except (_Undefined, _TooBig, ZeroDivisionError):
                continue
            any_defined = True
            if _close(va, vb, a, b, approx):
                for n, i in zip(names, combo, strict=True):
                    keep[n].add(i)
            elif not shown:
                shown = ", ".join(f"{n}={_fmt(env[n])}" for n in names)[:120] + f": {_fmt(va)} vs {_fmt(vb)}"
        if any(keep[n] for n in names):  # holds for one earlier solution (a root chosen among several)
            for n in names:
                self.used_at[n] = self.n - 1
            return LinkCheck(VALID, "substitution", eq, "holds for the earlier solution")
        if not any_defined or approx:
            return LinkCheck(UNKNOWN, "substitution", eq, "could not be evaluated at the earlier solutions")
        return LinkCheck(FAULTY, "substitution", eq, f"does not follow from the earlier equations ({shown})")

    def _solve(self, a: tuple, b: tuple, u: str) -> list[Value]:
        """Real solutions for the one unknown `u` (earlier solutions substituted, first choice)."""
        env: dict[str, Value] = {n: vs[0] for n, vs in self.known.items() if vs}

        def f(t: Value) -> Value:
            env[u] = t
            return _diff(value(a, env), value(b, env))

        try:
            ys = [f(Fraction(t)) for t in (0, 1, 2, 3)]
            probe = Fraction(17, 7)
            slope = _diff(ys[1], ys[0])
            linear = all(_is_zero(_diff(_diff(ys[i + 1], ys[i]), slope), _mp(slope)) for i in range(3))
            if linear and _is_zero(_diff(f(probe), ys[0] + slope * probe), _mp(slope)) and not _is_zero(slope, 1):
                return [-ys[0] / slope]
        except (_Undefined, _TooBig, ZeroDivisionError):
            pass
        if any(not isinstance(v, Fraction) for k, v in env.items() if k != u):
            return []
        sub_a, sub_b = _substitute_ast(a, env, u), _substitute_ast(b, env, u)
        status, out = self._sympy("roots", (sub_a, sub_b, u))
        if status != "ok" or not out:
            return []
        return [Fraction(r[1], r[2]) if r[0] == "q" else _CTX.mpf(r[1]) for r in out]


def _substitute_ast(node: tuple, env: dict[str, Value], keep: str) -> tuple:
    k = node[0]
    if k == "name":
        if node[1] != keep and node[1] in env:
            return ("num", env[node[1]], 0)
        return node
    if k == "bin":
        return ("bin", node[1], _substitute_ast(node[2], env, keep), _substitute_ast(node[3], env, keep))
    if k in ("neg", "pct", "fact"):
        return (k, _substitute_ast(node[1], env, keep))
    if k in ("root", "binom"):
        return (k, _substitute_ast(node[1], env, keep), _substitute_ast(node[2], env, keep))
    if k == "func":
        return (k, node[1], _substitute_ast(node[2], env, keep))
    return node


_DIMENSIONLESS = frozenset({"rad", "radian", "radians", "sr"})
_UNIT_NAMES = {"joule": "J", "joules": "J", "erg": "erg", "ergs": "erg", "sec": "s", "secs": "s", "second": "s",
               "seconds": "s", "meter": "m", "meters": "m", "metre": "m", "metres": "m", "gram": "g", "grams": "g",
               "kelvin": "K", "watt": "W", "watts": "W", "volt": "V", "volts": "V", "hertz": "Hz", "hz": "Hz",
               "ev": "eV", "mev": "MeV", "kev": "keV", "atm": "atm", "mole": "mol", "moles": "mol"}  # fmt: skip


def _dimensioned(units: tuple[str, ...]) -> frozenset[str]:
    """The units a side is written in, as a set of spellings made one ('Joules' and '~J'), without
    dimensionless ones (radians: '1000 cm \\times 5 \\times 10^{-6} radians = 0.005 cm'). A set:
    '6.20 eV - 4.40 eV = 1.80 eV' names eV twice on the left. Products of different powers stay
    apart ('m' vs 'm^{2}'), so a conversion between units is never assumed."""
    out = set()
    for u in units:
        w = re.sub(r"[{}~\s]", "", u)
        if w.lower() in _DIMENSIONLESS or not w:
            continue
        out.add(_UNIT_NAMES.get(w.lower(), w))
    return frozenset(out)


def _fraction_side(pa: Any, pb: Any) -> bool:
    """The side without a percent sign is a plain number in (0, 1]: '0.74 = 74\\%' compares as percent."""
    other = pa if "%" in pb.units else pb
    if other.node is None or latex.names(other.node):
        return False
    try:
        v = value(other.node, {})
    except (_Undefined, _TooBig, ZeroDivisionError, ValueError, OverflowError):
        return False
    return 0 < _mp(v) <= 1


def _bracketed(rel: Any, parsed: list, links: list, first: int) -> None:
    """A chain `e_p = ... = e_m = ... = e_q` whose ends e_p and e_q are the same expression (an
    identity at the random points) claims an identity, so every side between them must equal e_p
    too: the first one that does not is a slip ('(2m c^2 + E)^2 - E^2 = 4m^2c^4 = 4mc^2(mc^2 + E)'
    drops a term in the middle), whatever names its two neighbours share. The link into it becomes
    faulty when it was unknown. Skipped with approximate links, written decimals, units, or i / e
    (read as plain letters, an identity in them says nothing under i^2 = -1)."""
    nodes = [p.node for p in parsed]
    n = len(nodes)
    if n < 3 or any(x is None for x in nodes) or any(r != latex.REL_EQ for r in rel.rels):
        return
    if any(p.units for p in parsed) or any(_has_decimals(x) for x in nodes):
        return
    names = [latex.names(x) for x in nodes]
    for p in range(n - 2):
        for q in range(n - 1, p + 1, -1):
            free = names[p] | names[q]
            if not free or free & _CONSTANT_LETTERS or _safe_identity(nodes[p], nodes[q], free) is not True:
                continue
            if not _live(nodes[p], names[p]) or not _live(nodes[q], names[q]):
                continue  # 'x(0) = c_1 + c_2 = 0' read as x*0 = ... = 0: constant ends claim nothing
            for m in range(p + 1, q):
                k = first + m - 1  # the link (m-1, m)
                if links[k].status != UNKNOWN:
                    if links[k].status == FAULTY:
                        return
                    continue
                fm = names[p] | names[m]
                if fm & _CONSTANT_LETTERS or _safe_identity(nodes[p], nodes[m], fm) is not False:
                    return
                why = f"the chain's ends agree (an identity) but this side differs from them (at {_point_text(fm)})"
                links[k] = LinkCheck(FAULTY, "identity", links[k].equation, why)
                return
            return


def _safe_identity(a: tuple, b: tuple, free: frozenset[str]) -> bool | None:
    try:
        return _random_identity(a, b, free)
    except (_Irrational, OverflowError, ValueError, KeyError):
        return None


def _has_decimals(node: tuple) -> bool:
    """A written decimal (a rounded value): an identity can then only hold approximately."""
    stack = [node]
    while stack:
        nd = stack.pop()
        if nd[0] == "num":
            if nd[2] != 0:
                return True
        else:
            stack.extend(x for x in nd[1:] if isinstance(x, tuple))
    return False


def _live(node: tuple, free: frozenset[str]) -> frozenset[str]:
    """The names a side's value depends on: a name that cancels (`AI \\cdot r / AI`) is dropped.
    Tested by moving one name at a time between two fixed points; a side that cannot be evaluated
    keeps all its names."""
    names = sorted(free)
    if len(names) > len(_POINTS[0]):
        return free
    base = dict(zip(names, _POINTS[0], strict=False))
    try:
        v0 = value(node, base)
        out = set()
        for k, n in enumerate(names):
            env = dict(base)
            env[n] = _POINTS[1][k]
            v1 = value(node, env)
            if not _is_zero(_diff(v1, v0), max(abs(_mp(v0)), abs(_mp(v1)))):
                out.add(n)
    except (_Undefined, _TooBig, _Irrational, ZeroDivisionError, KeyError):
        return free
    return frozenset(out)


def _point_text(free: Iterable[str]) -> str:
    return ", ".join(f"{n}={p}" for n, p in zip(sorted(free), _POINTS[0], strict=False))[:120]


def _random_identity(a: tuple, b: tuple, free: frozenset[str]) -> bool | None:
    """Is a - b zero at fixed pseudo-random rational points? None: could not tell."""
    names = sorted(free)
    if len(names) > len(_POINTS[0]):
        return None
    seen = 0
    for pts in _POINTS:
        env: dict[str, Value] = dict(zip(names, pts, strict=False))
        try:
            va, vb = value(a, env), value(b, env)
        except (_Undefined, ZeroDivisionError):
            continue
        except _TooBig:
            return None
        seen += 1
        if not _is_zero(_diff(va, vb), max(abs(_mp(va)), abs(_mp(vb)))):
            return False
    return True if seen >= 2 else None


def check_steps(texts: Sequence[str], pool: WorkerPool | None = None) -> list[SymbolicStep]:
    """Check a solution's steps in order (see SolutionChecker)."""
    checker = SolutionChecker(pool)
    return [checker.check(t) for t in texts]
