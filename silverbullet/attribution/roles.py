"""Which of the question's contrasted entities a step names: a gold value under another entity's name.

A semantic first error often computes a value the gold also computes, but names it as another entity's
("a dwarf with a steel pickaxe mines 12 x 2 = 24" where the gold's 24 is the iron-pickaxe rate; "the
carrot costs 6 / 2 = 3" where the gold's 3 is the yogurt). The dataflow check sees nothing wrong there
and blames the later step that uses the value where the gold uses another one.

Word sets alone cannot tell a misnamed quantity from a reworded one: paraphrase is the norm (docs/
dataflow.md, "role agreement by words"). What this module compares is narrower: only the members of a
*contrast set* the question writes, entities the question itself sets against each other, which a
paraphrase does not swap:
- modifiers of one head noun ("iron pickaxe" / "steel pickaxe", "cheddar cheese" / "gruyere cheese");
- the items of a list ("two carrots, a salad, and a yogurt"; "good, neutral, and good").
A step names a member when the word is in its prose (`StepInfo.words`: annotations removed), stemmed.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

from silverbullet.attribution.steps import StepInfo

_WORD_RE = re.compile(r"[a-z]+", re.ASCII)
# A list of up to 2-word items, comma-separated, closed by "and"/"or" and 1-3 words. Bounded, and anchored at
# word starts and ends, so a long run of letters is read in linear time (questions are untrusted input too).
_LIST_RE = re.compile(r"\b((?:[a-z]+ )?[a-z]+)((?:, (?:[a-z]+ ){0,2}[a-z]+){1,8}),? (?:and|or) ((?:[a-z]+\b ?){1,3})")
# Function words, quantity and time words, and the verbs of buying and having: none names an entity.
_STOP = frozenset(
    """the a an of and or to in on for with each per more than as is are was were his her their its one two
    three four five six seven eight nine ten twelve many much how what total all some every day week time
    dollar cent hour minute money cost price year month first second third half twice other same new old so
    that this then there they he she it be has have had will would can could find need figure out we do
    does did at by from if which who after before left remaining number amount altogether together also now
    into up over still just only get got make made take took spend spent pay paid buy bought sell sold
    """.split()
)


def _stem(w: str) -> str:
    if len(w) > 4 and w.endswith("ies"):
        return w[:-3] + "y"
    if len(w) > 3 and w.endswith("es") and w[-3] in "sxz":
        return w[:-2]
    if len(w) > 3 and w.endswith("s") and not w.endswith("ss"):
        return w[:-1]
    return w


def _content(text: str) -> list[str]:
    return [_stem(w) for w in _WORD_RE.findall(text.lower()) if len(w) > 2 and w not in _STOP]


def named(step: StepInfo) -> frozenset[str]:
    """The stemmed content words of a step's prose (its calculator annotations removed)."""
    return _named(step.words)


@lru_cache(maxsize=4096)
def _named(words: frozenset[str]) -> frozenset[str]:
    return frozenset(_stem(w) for w in words if w not in _STOP)


@lru_cache(maxsize=4096)
def contrast_sets(question: str) -> tuple[frozenset[str], ...]:
    """Sets of entities the question contrasts: modifiers sharing a head noun, and list items (each
    item's first content word)."""
    q = question.lower()
    words = [_stem(w) for w in _WORD_RE.findall(q)]
    by_head: dict[str, set[str]] = defaultdict(set)
    for m, h in zip(words, words[1:]):
        if len(m) > 2 and len(h) > 2 and m not in _STOP and h not in _STOP:
            by_head[h].add(m)
    sets = [frozenset(ms) for ms in by_head.values() if len(ms) >= 2]
    for m in _LIST_RE.finditer(q):
        items = [m.group(1), *m.group(2).split(", "), m.group(3)]
        heads = {c[0] for c in (_content(it) for it in items if it) if c}
        if len(heads) >= 2:
            sets.append(frozenset(heads))
    return tuple(dict.fromkeys(sets))


def misnamed_producer(
    i: int, steps: Sequence[StepInfo], ref_steps: Sequence[StepInfo], question: str, written: frozenset[Fraction]
) -> tuple[int, str, tuple[str, ...], int] | None:
    """The earlier step whose value step `i` uses and which names that value as another entity's.

    Step k (before i, computing, its value used by step i, not a number the question writes) computes
    a value v of the gold. It names exactly one member of a contrast set; every gold step computing v
    names other members of that set and not this one; and a gold step with another value names this
    one. Returns (k, the member named, the members the gold names, the gold step) or None.
    """
    sets = contrast_sets(question)
    if not sets:
        return None
    used = set(steps[i].operands)
    for k in range(i):
        s = steps[k]
        v = s.result
        if v is None or not s.operands or v not in used or v in written:
            continue
        hits = [_conflict(named(s), j, v, ref_steps, sets) for j, r in enumerate(ref_steps) if r.result == v]
        if hits and all(hits):
            w, theirs, j = hits[0]
            return k, w, theirs, j
    return None


def _conflict(
    mine_all: frozenset[str], j: int, v: Fraction, ref_steps: Sequence[StepInfo], sets: tuple[frozenset[str], ...]
) -> tuple[str, tuple[str, ...], int] | None:
    """Gold step j computes v under other members of a contrast set than the one member the candidate
    names, and some gold step with another value names that member: (member, gold's members, j)."""
    theirs_all = named(ref_steps[j])
    for c in sets:
        mine, theirs = mine_all & c, theirs_all & c
        if len(mine) != 1 or not theirs or mine & theirs:
            continue
        (w,) = mine
        if any(r.result is not None and r.result != v and w in named(r) for r in ref_steps):
            return w, tuple(sorted(theirs)), j
    return None
