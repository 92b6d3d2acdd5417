"""Reference-dataflow matching: does a candidate step's quantity belong to the gold computation?

A wrong final answer has a first step where the solution leaves the gold solution's dataflow. Value
matching alone ("is this number one the gold computes?") misses the commonest semantic faults on
GSM8K: right arithmetic on the wrong quantities, and wrong steps whose number happens to equal a
gold number (`1 + 6 = 7` where the gold's 7 is `56 / 8`). So the gold is read as expression trees
(chains of steps merged, sub-expressions kept), each computed value with the given numbers under
it (its *leaves*), and each candidate step gets a `support`:

- `gold`: its value is one the gold computes (a step result, an equation side, a sub-expression such
  as `12*2` in `12+3+12*2`, the answer) and the step draws on the same given numbers as the gold
  does for it, both ways (`GoldFlow.same_sources`); a value the gold states in prose only counts too;
- `derived`: a gold value reached from other numbers by one operation on a gold intermediate and a
  given (`5 * 3` per week where the gold's 15 is `10 + 5` per night): a different route, supported;
- `coincidence`: a gold value from foreign numbers and no such route: *not* support;
- `restated`: no operation (or `x * 1`) on a number given, stated by the gold, or computed earlier;
- `off`: none of these.

locate.py blames the earliest step that is not supported and does not feed a later `gold` step; a
coincidence never feeds (its downstream matches inherit it), nor does a value equal to a given
number (the later step may be using the given). Rules and tie rules: docs/dataflow.md.
Tried and dropped on the tune split: any one-operation derivation from gold and question numbers,
and sub-sums / sub-products of one gold computation, as support (both let wrong-quantity steps
through: tune acc_err 0.77 -> 0.66-0.69). Only expr.parse reads text; nothing is evaluated by
Python itself.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from silverbullet.attribution.expr import parse
from silverbullet.attribution.steps import StepInfo

GOLD, DERIVED, RESTATED, COINCIDENCE, OFF, NO_VALUE = (
    "gold", "derived", "restated", "coincidence", "off", "no_value"
)  # fmt: skip
SUPPORTED = frozenset({GOLD, DERIVED, RESTATED, NO_VALUE})
_HUNDRED = Fraction(100)
_NEUTRAL = frozenset({Fraction(1), _HUNDRED, Fraction(1, 100)})

# A flattened expression: ("v", value, leaves) for a quantity taken as given, or
# ("add" | "mul", value, leaves, ((sign_or_exponent, child), ...)) with nested sums (products) merged.
Node = tuple


def _leaf(v: Fraction) -> Node:
    return ("v", v, (v,))


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
    leaves = tuple(sorted(x for _, c in kids for x in c[2]))
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
    return None  # powers, roots, names: the step's own value still counts, its tree does not


def _walk(node: Node) -> Iterable[Node]:
    stack = [node]
    while stack:
        nd = stack.pop()
        yield nd
        if nd[0] != "v":
            stack.extend(c for _, c in nd[3])


@dataclass(frozen=True)
class GoldFlow:
    """What the gold solution computes, and from what."""

    question: frozenset[Fraction]
    written: frozenset[Fraction]  # numbers the question writes (no unit conversions): never expanded
    stated: frozenset[Fraction]  # every value the gold states, its answer, the question's numbers
    computed: frozenset[Fraction]  # values the gold computes (results, sides, sub-expressions, answer)
    leaves: dict[Fraction, tuple[tuple[Fraction, ...], ...]]  # computed value -> the given numbers
    # under it (a sorted multiset), one per place the gold computes it

    def same_sources(self, cand: Counter, gold: tuple[Fraction, ...], divides: bool) -> bool:
        """Is a candidate computation drawn from the same given numbers as one gold computation of
        the same value, both ways? Equal as sets up to: 1 and 100 (identity, percent); a number
        written as a percent or inverted (`20` for `.2`, `4` for `.25`); in a step that divides, a
        written fraction (`1/4` read as 1 and 4); a count spelled out as a repeated term (`2000 +
        2000 + 500` for `2 * 2000 + 500`, either side); gold intermediates the candidate used
        without deriving them (read as the numbers under them)."""
        c: list[Fraction] = []
        for x, n in cand.items():
            ways = self.leaves.get(x) if x not in self.written else None
            c.extend((ways[0] if ways else (x,)) * n)
        c = [x for x in c if x not in _NEUTRAL]
        g = [x for x in gold if x not in _NEUTRAL]
        most_c, most_g = max(Counter(c).values(), default=0), max(Counter(g).values(), default=0)
        g_set, c_set = set(g), set(c)
        g_set = {y for y in g_set if not (y.denominator == 1 and 2 <= y <= most_c and y not in c_set)}
        c_set = {x for x in c_set if not (x.denominator == 1 and 2 <= x <= most_g and x not in g_set)}
        rest = [x for x in c_set if not any(_alike(x, y) for y in g_set)]
        if rest and divides:  # a written fraction: a/b stands for one gold number
            for a_ in list(rest):
                for b_ in list(rest):
                    if a_ != b_ and b_ != 0 and (a_ / b_).denominator != 1:
                        if any(_alike(a_ / b_, y) for y in g_set):
                            rest = [x for x in rest if x not in (a_, b_)]
                            break
        if rest:
            return False
        return all(any(_alike(x, y) for x in c_set) for y in g_set)


def _alike(x: Fraction, y: Fraction) -> bool:
    """The same quantity written another way: a percent (20 / .2) or inverted (4 / .25)."""
    return x == y or x * 100 == y or y * 100 == x or (x != 0 and x * y == 1)


def gold_flow(
    ref_steps: Sequence[StepInfo],
    question: frozenset[Fraction],
    answer: Fraction | None,
    written: frozenset[Fraction] | None = None,
) -> GoldFlow:
    """Build the gold's dataflow from its parsed steps. `question`: the question's numbers with unit
    conversions; `written`: without them (steps.question_numbers(q, units=False)), default all."""
    written = question if written is None else written
    producer: dict[Fraction, Node] = {}
    computed: set[Fraction] = set()
    stated: set[Fraction] = set(question)
    leaves: dict[Fraction, tuple[tuple[Fraction, ...], ...]] = {}
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
            if tree is not None and s.result not in producer:
                # a result equal to a given number stays a leaf: a later use may mean the given
                # (candidate_leaves reads the candidate the same way)
                if s.result not in written:
                    producer[s.result] = tree
    if answer is not None:
        computed.add(answer)
        stated.add(answer)
    return GoldFlow(frozenset(question), written, frozenset(stated), frozenset(computed), leaves)


@lru_cache(maxsize=4_096)
def flow_for(question: str, reference_text: str, answer: Fraction | None) -> GoldFlow:
    """`gold_flow` for a question and reference text, cached: one gold serves many candidates."""
    from silverbullet.attribution.steps import parse_steps, question_numbers

    return gold_flow(
        parse_steps(reference_text).steps, question_numbers(question), answer, question_numbers(question, False)
    )


def expand_leaves(steps: Sequence[StepInfo], atoms: frozenset[Fraction] | set[Fraction] = frozenset()) -> list[Counter]:
    """Each step's operands with earlier results expanded into the numbers they came from; a value
    in `atoms` is never expanded."""
    out: list[Counter] = []
    producer: dict[Fraction, int] = {}
    for i, s in enumerate(steps):
        c: Counter = Counter()
        for o in s.operands:
            j = producer.get(o)  # only earlier steps are producers here
            if j is not None and o not in atoms and out[j]:
                c.update(out[j])
            else:
                c[o] += 1
        out.append(c)
        if s.result is not None and s.equations:
            producer.setdefault(s.result, i)
    return out


def candidate_leaves(steps: Sequence[StepInfo], flow: GoldFlow) -> list[Counter]:
    """`expand_leaves` read as the gold is read (`gold_flow`): a value equal to a given number is not
    expanded, since the step may be using the given (`2/3` after computing 2 elsewhere), nor is one
    the gold states without computing it (the gold's own leaf)."""
    return expand_leaves(steps, flow.written | (flow.stated - flow.computed))


def support(
    step: StepInfo,
    leaves: Counter,
    flow: GoldFlow,
    known: set[Fraction],
) -> str:
    """How the gold's dataflow supports one candidate step (module docstring). `leaves`: the given
    numbers under the step's operands (earlier results expanded); `known`: the question's numbers
    and every value stated before this step."""
    v = step.result
    if v is None:
        return NO_VALUE
    if not step.operands or (v in flow.question and set(leaves) <= _NEUTRAL | {v, Fraction(0)}):
        # no operation, or a given number times 1 (`4 * 1 = 4`)
        return RESTATED if (v in known or v in flow.stated) else OFF
    if v in flow.stated and v not in flow.computed and v not in flow.question:
        return GOLD  # a gold intermediate stated in prose: nothing to compare its sources with
    if v in flow.computed:
        ways = flow.leaves.get(v)
        divides = any("/" in side.ops for e in step.equations for side in (e.lhs_eval, e.rhs_eval))
        if ways is None or any(flow.same_sources(leaves, under, divides) for under in ways):
            return GOLD
        if _one_op_from_gold(step, flow):
            return DERIVED
        return COINCIDENCE
    return OFF


def _one_op_from_gold(step: StepInfo, flow: GoldFlow) -> bool:
    """One operation on a quantity the gold computes (not a given) and given numbers or constants:
    a different route that happens to meet a gold value (`1 * 3` reading hours per week where the
    gold's 3 is hours per night) rather than a coincidence."""
    ops = step.operands
    if len(ops) != 2:
        return False
    gold_side = [o for o in ops if o in flow.computed and o not in flow.question]
    return bool(gold_side) and all(o in flow.computed or o in flow.question or o in (1, 2, 100) for o in ops)
