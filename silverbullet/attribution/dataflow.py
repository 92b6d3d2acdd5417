"""Reference-dataflow matching: does a candidate step's quantity belong to the gold computation?

A wrong final answer has a first step where the solution leaves the gold solution's dataflow. Value
matching alone ("is this number one the gold computes?") misses the commonest semantic faults on
GSM8K: right arithmetic on the wrong quantities (`3 * 5` where the gold has `3 * 2`), and wrong
steps whose number coincides with a gold number (`1 + 6 = 7` where the gold's 7 is `56 / 8`). So
the gold solution is read as one expression tree per computed quantity, and each candidate step is
given a `Support`:

- `gold`: its value is one the gold computes (a step result, an equation side, a sub-expression such
  as `12*2` in `12+3+12*2`, the answer) and it is computed from quantities that value depends on in
  the gold (its *leaves*: the given numbers under it, percent forms and 100 allowed). A value match
  from foreign leaves is a `coincidence`, not support;
- `partial`: its value is a partial result of one gold computation: a sub-sum of one gold sum or a
  sub-product of one gold product, with the associative chains of consecutive gold steps merged
  (`400 - 80` of `600 - 200 - 50 - 80 - 150`). This is the "one operation from gold quantities"
  rule made strict: the operation must be one the gold performs on those quantities, so `3 * 5` is
  not supported when the gold multiplies 3 by 2 and 4 by 5;
- `restated`: no operation, a number given, stated by the gold, or computed earlier;
- `off`: none of these.

The locator (locate.py) then blames the earliest step that is neither supported nor feeding a
later `gold` step (a different route that gets back to the gold); see docs/dataflow.md for the tie
rules. Only the restricted parser of expr.py reads text; nothing is evaluated by Python itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from itertools import combinations

from silverbullet.attribution.expr import parse
from silverbullet.attribution.steps import StepInfo

GOLD, PARTIAL, DERIVED, RESTATED, COINCIDENCE, OFF, NO_VALUE = (
    "gold", "partial", "derived", "restated", "coincidence", "off", "no_value"
)  # fmt: skip
SUPPORTED = frozenset({GOLD, PARTIAL, DERIVED, RESTATED, NO_VALUE})
MAX_CHILDREN = 8  # sub-sums / sub-products enumerated per node: at most 2**8 subsets
_HUNDRED = Fraction(100)
import os  # noqa: E402

_PARTIAL_MODE = os.environ.get("SB_PARTIAL", "off")
_SIGN_FLIP = os.environ.get("SB_SIGN_FLIP", "1") == "1"
_EXPAND_Q = os.environ.get("SB_EXPAND_Q", "0") == "1"
_DERIVE_OFF = os.environ.get("SB_DERIVE_OFF", "0") == "1"
_RESCUE = os.environ.get("SB_RESCUE", "1") == "1"

# A flattened expression: ("v", value, leaves) for a quantity taken as given, or
# ("add" | "mul", value, leaves, ((sign_or_exponent, child), ...)) with nested sums (products) merged.
Node = tuple


def _leaf(v: Fraction) -> Node:
    return ("v", v, frozenset({v}))


def _combine(kind: str, parts: Iterable[tuple[int, Node]]) -> Node | None:
    kids: list[tuple[int, Node]] = []
    for k, child in parts:
        if child[0] == kind:  # (a - b) - c: one sum of three terms
            kids.extend((k * kk, cc) for kk, cc in child[3])
        else:
            kids.append((k, child))
    value = Fraction(0) if kind == "add" else Fraction(1)
    for k, child in kids:
        if kind == "add":
            value += k * child[1]
        elif child[1] == 0 and k < 0:
            return None
        else:
            value *= child[1] if k > 0 else 1 / child[1]
    leaves = frozenset().union(*(c[2] for _, c in kids))
    return (kind, value, leaves, tuple(kids))


def _flatten(ast: tuple, producer: dict[Fraction, Node]) -> Node | None:
    """AST of expr.parse -> flattened node; numbers an earlier gold step computed are expanded into
    that step's tree, so a chain of steps reads as one computation. None: not plain arithmetic."""
    kind = ast[0]
    if kind == "num":
        return producer.get(ast[1]) or _leaf(ast[1])
    if kind == "neg":
        inner = _flatten(ast[1], producer)
        return None if inner is None else _combine("add", [(-1, inner)])
    if kind == "pct":
        inner = _flatten(ast[1], producer)
        return None if inner is None else _combine("mul", [(1, inner), (-1, _leaf(_HUNDRED))])
    if kind == "bin" and ast[1] in "+-*/" and ast[1] != "//":
        a, b = _flatten(ast[2], producer), _flatten(ast[3], producer)
        if a is None or b is None:
            return None
        sign = 1 if ast[1] in "+*" else -1
        return _combine("add" if ast[1] in "+-" else "mul", [(1, a), (sign, b)])
    return None  # powers, roots, names: no partial results to offer


def _walk(node: Node) -> Iterable[Node]:
    stack = [node]
    while stack:
        nd = stack.pop()
        yield nd
        if nd[0] != "v":
            stack.extend(c for _, c in nd[3])


def _partials(node: Node, computed: set[Fraction] | frozenset[Fraction]) -> dict[Fraction, frozenset[Fraction]]:
    """One operation inside one gold sum (product): two of its terms combined, or a gold quantity
    that is a sub-sum (sub-product) of it combined with one more of its terms. Each partial comes
    with the given numbers under it. A sub-sum of terms that are all subtracted is also offered
    positive: `6 + 13` of `30 - 6 - 13`."""
    out: dict[Fraction, frozenset[Fraction]] = {}
    kids = node[3][:MAX_CHILDREN]
    n = len(kids)

    def value(sub: Sequence[tuple[int, Node]]) -> Fraction | None:
        if node[0] == "add":
            return sum((k * c[1] for k, c in sub), Fraction(0))
        p = Fraction(1)
        for k, c in sub:
            if c[1] == 0 and k < 0:
                return None
            p *= c[1] if k > 0 else 1 / c[1]
        return p

    subsets: list[tuple[int, ...]] = []
    if _PARTIAL_MODE == "all":
        subsets = [c for r in range(2, n) for c in combinations(range(n), r)]
    elif _PARTIAL_MODE == "pairs":
        subsets = list(combinations(range(n), 2)) if n > 2 else []
        for r in range(2, n - 1):
            for base in combinations(range(n), r):
                bv = value([kids[i] for i in base])
                if bv is not None and bv in computed:
                    subsets.extend(base + (j,) for j in range(n) if j not in base)
    for sub_ix in subsets:
        sub = [kids[i] for i in sub_ix]
        v = value(sub)
        if v is None:
            continue
        under = frozenset().union(*(c[2] for _, c in sub))
        vals = [v]
        if node[0] == "add" and _SIGN_FLIP and all(k < 0 for k, _ in sub):
            vals.append(-v)
        for x in vals:
            out[x] = out.get(x, frozenset()) | under
    return out


@dataclass(frozen=True)
class GoldFlow:
    """What the gold solution computes, and from what."""

    question: frozenset[Fraction]
    stated: frozenset[Fraction]  # every value the gold states, its answer, the question's numbers
    computed: frozenset[Fraction]  # values the gold computes (results, sides, sub-expressions, answer)
    partials: dict[Fraction, frozenset[Fraction]]  # partial result of one gold sum or product -> leaves
    leaves: dict[Fraction, tuple[frozenset[Fraction], ...]]  # computed value -> the given numbers
    # under it, one set per place the gold computes it

    def covered(self, leaf: Fraction, under: frozenset[Fraction]) -> bool:
        """Can a candidate computation of a gold value use `leaf`? Yes when the gold's value depends
        on it (as is, as a percent, or inverted), when it is 100 (percent), or when it is a gold
        intermediate the candidate took without deriving it (not a given number)."""
        if leaf in under or leaf == _HUNDRED or leaf * 100 in under or leaf / 100 in under:
            return True
        if leaf != 0 and 1 / leaf in under:
            return True
        return leaf in self.computed and leaf not in self.question

    def covers(self, leaves: frozenset[Fraction], under: frozenset[Fraction]) -> bool:
        """Every candidate leaf covered; a written fraction (`1/4` read as leaves 1 and 4) counts
        as its value."""
        for x in leaves:
            if self.covered(x, under):
                continue
            if x != 0 and any(_fraction_of(x, y, under) or _fraction_of(y, x, under) for y in leaves if y):
                continue
            return False
        return True


def _fraction_of(a: Fraction, b: Fraction, under: frozenset[Fraction]) -> bool:
    """`a/b` written as a fraction (`1/4`, `3/2`) for a non-integer quantity the gold uses."""
    q = a / b
    return q.denominator != 1 and (q in under or q * 100 in under)


def gold_flow(ref_steps: Sequence[StepInfo], question: frozenset[Fraction], answer: Fraction | None) -> GoldFlow:
    """Build the gold's dataflow from its parsed steps (see `flow_for` for the cached entry)."""
    producer: dict[Fraction, Node] = {}
    computed: set[Fraction] = set()
    stated: set[Fraction] = set(question)
    leaves: dict[Fraction, tuple[frozenset[Fraction], ...]] = {}
    trees: list[Node] = []
    for s in ref_steps:
        stated.update(s.values)
        for e in s.equations:
            for side in (e.lhs_eval, e.rhs_eval):
                if side.ok and side.value is not None and side.ops:
                    computed.add(side.value)
        tree: Node | None = None
        for e in s.equations:
            for side_text, ev in ((e.lhs, e.lhs_eval), (e.rhs, e.rhs_eval)):
                if ev.ok and ev.ops:
                    ast, _, _ = parse(side_text)
                    t = _flatten(ast, producer) if ast is not None else None
                    if t is not None and t[0] != "v":
                        tree = t
                        trees.append(t)
                        for nd in _walk(t):
                            if nd[0] != "v":
                                computed.add(nd[1])
                                if nd[2] not in leaves.get(nd[1], ()):
                                    leaves[nd[1]] = (*leaves.get(nd[1], ()), nd[2])
                    break
        if s.result is not None and s.equations:
            computed.add(s.result)
            if tree is not None and s.result not in producer and (_EXPAND_Q or s.result not in question):
                producer[s.result] = tree
    partials: dict[Fraction, frozenset[Fraction]] = {}
    if _PARTIAL_MODE != "off":
        for t in trees:
            for nd in _walk(t):
                if nd[0] != "v":
                    for pv, pl in _partials(nd, computed).items():
                        partials[pv] = partials.get(pv, frozenset()) | pl
    if answer is not None:
        computed.add(answer)
        stated.add(answer)
    return GoldFlow(frozenset(question), frozenset(stated), frozenset(computed), partials, leaves)


@lru_cache(maxsize=4_096)
def flow_for(reference_text: str, question: frozenset[Fraction], answer: Fraction | None) -> GoldFlow:
    """`gold_flow` for a reference text, cached: one gold solution serves many candidates."""
    from silverbullet.attribution.steps import parse_steps

    return gold_flow(parse_steps(reference_text).steps, question, answer)


def support(
    step: StepInfo,
    leaves: frozenset[Fraction],
    flow: GoldFlow,
    known: set[Fraction],
) -> str:
    """How the gold's dataflow supports one candidate step (module docstring). `leaves`: the given
    numbers under the step's operands (earlier results expanded); `known`: the question's numbers
    and every value stated before this step."""
    v = step.result
    if v is None:
        return NO_VALUE
    if not step.operands:
        return RESTATED if (v in known or v in flow.stated) else OFF
    if v in flow.computed:
        ways = flow.leaves.get(v)
        if ways is None or any(flow.covers(leaves, under) for under in ways):
            return GOLD
    if v in flow.partials and flow.covers(leaves, flow.partials[v]):
        return PARTIAL
    if (v in flow.computed or _DERIVE_OFF) and _RESCUE and _one_op_from_gold(step, flow):
        return DERIVED
    return COINCIDENCE if v in flow.computed or v in flow.partials else OFF


def _one_op_from_gold(step: StepInfo, flow: GoldFlow) -> bool:
    """One operation on a quantity the gold computes (not a given) and given numbers or constants:
    a different route that happens to meet a gold value (`1 * 3` reading hours per week where the
    gold's 3 is hours per night) rather than a coincidence."""
    ops = step.operands
    if len(ops) != 2:
        return False
    gold_side = [o for o in ops if o in flow.computed and o not in flow.question]
    return bool(gold_side) and all(o in flow.computed or o in flow.question or o in (1, 2, 100) for o in ops)
