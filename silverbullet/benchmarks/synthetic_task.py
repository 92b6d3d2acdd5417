"""The reference task: seeded, procedurally generated GSM8K-style word problems in the step format.

Why our own task: no model hub is reachable, so the project trains its own small reference model,
and that model needs problems whose failures look like real reasoning failures. The generator
therefore mixes explicit and *indirect* operations ("twice as many", "3 fewer than", "per",
"split equally", percentages, rates), several entities, distractor quantities that must be ignored,
and questions that are not always "how many now" (differences, totals, shares, money). A model can
then fail by execution (bad arithmetic), method (wrong operation for the phrase), conceptual
(using a distractor or misreading the goal) or reasoning (carrying over the wrong earlier value).

Splits are disjoint *by construction*: a problem belongs to the split that a hash of its question
text selects, and each split's stream keeps only problems that hash into it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from silverbullet.prompting import format_solution

SPLITS = {"train": (0, 90), "repair": (90, 95), "eval": (95, 100)}  # hash buckets out of 100
SPLIT_SEEDS = {"train": 1_000_003, "repair": 2_000_003, "eval": 3_000_017}
MAX_VALUE = 9_999

NAMES = [
    "Ann",
    "Tom",
    "Lee",
    "Mia",
    "Sam",
    "Ava",
    "Ben",
    "Zoe",
    "Max",
    "Ivy",
    "Leo",
    "Eva",
    "Jack",
    "Lily",
    "Noah",
    "Emma",
    "Owen",
    "Ruby",
    "Liam",
    "Nora",
    "Omar",
    "Rosa",
    "Hugo",
    "Jade",
]
# (plural item, container word) pairs: the container is used by "packs of" / "boxes of" phrasing.
ITEMS = [
    ("apples", "bags"),
    ("marbles", "jars"),
    ("stickers", "sheets"),
    ("pencils", "boxes"),
    ("cookies", "trays"),
    ("stamps", "albums"),
    ("cards", "decks"),
    ("books", "shelves"),
    ("eggs", "cartons"),
    ("shells", "buckets"),
    ("coins", "purses"),
    ("flowers", "vases"),
    ("beads", "strings"),
    ("candies", "bags"),
    ("toys", "boxes"),
    ("balloons", "packs"),
]
OTHER_THINGS = ["hats", "cats", "plants", "pens", "cups", "kites", "socks", "rings"]
UNITS_PER_DAY = [("pages", "reads", "book"), ("miles", "runs", "track"), ("laps", "swims", "pool")]


@dataclass
class Quantity:
    """A value the solution computes or the question gives, with how the text names it."""

    value: int
    owner: str  # who holds it ("Ann", "each friend", ...)
    item: str
    given: bool = False  # stated in the question as "<owner> has <value> <item>"


@dataclass
class TaskProblem:
    question: str
    steps: list[str]
    answer: int
    n_steps: int
    ops: list[str] = field(default_factory=list)
    has_distractor: bool = False

    @property
    def solution(self) -> str:
        return format_solution(self.steps, str(self.answer))

    @property
    def text(self) -> str:
        """The full training text: question line, steps, answer line."""
        return f"Question: {self.question}\n{self.solution}"


def question_hash(question: str) -> int:
    return int.from_bytes(hashlib.sha256(question.encode()).digest()[:8], "big") % 100


def split_of(question: str) -> str:
    h = question_hash(question)
    for name, (lo, hi) in SPLITS.items():
        if lo <= h < hi:
            return name
    raise AssertionError(h)


class _Builder:
    """Builds one problem: a chain of operations, each adding a question sentence and a step."""

    def __init__(self, rng: random.Random, n_steps: int):
        self.rng = rng
        self.n_steps = n_steps
        names = rng.sample(NAMES, 9)
        self.names = names
        self.item, self.container = rng.choice(ITEMS)
        self.sentences: list[str] = []
        self.steps: list[str] = []
        self.ops: list[str] = []
        self.used_names = {names[0]}
        self.next_name = 1

    # -- helpers -----------------------------------------------------------------------------
    def new_name(self) -> str:
        name = self.names[self.next_name]
        self.next_name += 1
        self.used_names.add(name)
        return name

    def step(self, words: str, expr: str, value: int, op: str) -> None:
        self.steps.append(f"{words}, so {expr} = {value}.")
        self.ops.append(op)

    def small(self) -> int:
        return self.rng.randint(2, 9)

    # -- operations: each takes the focus quantity and returns the new one, or None if the
    #    numbers don't work out (the caller then tries another operation) --------------------
    def op_times(self, q: Quantity) -> Quantity | None:
        k = self.small()
        r = q.value * k
        if r > MAX_VALUE:
            return None
        b = self.new_name()
        phrase = "twice" if k == 2 and self.rng.random() < 0.5 else f"{k} times"
        self.sentences.append(f"{b} has {phrase} as many {q.item} as {q.owner}.")
        self.step(f"{b} has {phrase} as many as {q.owner}", f"{k} * {q.value}", r, "times")
        return Quantity(r, b, q.item)

    def op_more(self, q: Quantity) -> Quantity | None:
        k = self.rng.randint(3, 250)
        r = q.value + k
        if r > MAX_VALUE:
            return None
        b = self.new_name()
        self.sentences.append(f"{b} has {k} more {q.item} than {q.owner}.")
        self.step(f"{b} has {k} more than {q.owner}", f"{q.value} + {k}", r, "more")
        return Quantity(r, b, q.item)

    def op_fewer(self, q: Quantity) -> Quantity | None:
        if q.value < 8:
            return None
        k = self.rng.randint(2, min(250, q.value - 1))
        r = q.value - k
        b = self.new_name()
        self.sentences.append(f"{b} has {k} fewer {q.item} than {q.owner}.")
        self.step(f"{b} has {k} fewer than {q.owner}", f"{q.value} - {k}", r, "fewer")
        return Quantity(r, b, q.item)

    def op_half(self, q: Quantity) -> Quantity | None:
        if q.value % 2 or q.value < 4:
            return None
        b = self.new_name()
        r = q.value // 2
        self.sentences.append(f"{b} has half as many {q.item} as {q.owner}.")
        self.step(f"{b} has half as many as {q.owner}", f"{q.value} / 2", r, "half")
        return Quantity(r, b, q.item)

    def op_gives(self, q: Quantity) -> Quantity | None:
        if q.value < 8 or not q.owner[0].isupper():
            return None
        k = self.rng.randint(2, min(300, q.value - 1))
        other = self.rng.choice([n for n in self.names if n != q.owner])
        verb = self.rng.choice(["gives", "gives away", "loses", "sells"])
        tail = f" to {other}" if verb == "gives" else ""
        self.sentences.append(f"{q.owner} {verb} {k} {q.item}{tail}.")
        self.step(f"{q.owner} {verb} {k}", f"{q.value} - {k}", q.value - k, "gives")
        return Quantity(q.value - k, q.owner, q.item)

    def op_buys(self, q: Quantity) -> Quantity | None:
        if not q.owner[0].isupper():
            return None
        if self.rng.random() < 0.5:
            k = self.rng.randint(2, 300)
            r = q.value + k
            if r > MAX_VALUE:
                return None
            verb = self.rng.choice(["buys", "finds", "gets"])
            self.sentences.append(f"Then {q.owner} {verb} {k} more {q.item}.")
            self.step(f"{q.owner} {verb} {k} more", f"{q.value} + {k}", r, "buys")
        else:  # packs: indirect multiplication ("each", "per")
            n, k = self.small(), self.rng.randint(2, 12)
            r = q.value + n * k
            if r > MAX_VALUE:
                return None
            self.sentences.append(f"Then {q.owner} buys {n} {self.container} with {k} {q.item} in each.")
            self.step(f"{n} {self.container} of {k} each", f"{n} * {k}", n * k, "packs")
            self.step(f"{q.owner} adds them", f"{q.value} + {n * k}", r, "buys")
        return Quantity(r, q.owner, q.item)

    def op_split(self, q: Quantity) -> Quantity | None:
        ks = [k for k in range(2, 10) if q.value % k == 0 and q.value // k >= 2]
        if not ks:
            return None
        k = self.rng.choice(ks)
        r = q.value // k
        self.sentences.append(f"{q.owner} shares them equally among {k} friends.")
        self.step(f"Each friend gets an equal share of {k}", f"{q.value} / {k}", r, "split")
        return Quantity(r, "each friend", q.item)

    def op_percent(self, q: Quantity) -> Quantity | None:
        ps = [p for p in (10, 20, 25, 50, 75) if (q.value * p) % 100 == 0]
        if not ps:
            return None
        p = self.rng.choice(ps)
        r = q.value * p // 100
        if r < 1:
            return None
        adj = self.rng.choice(["red", "old", "broken", "new", "small"])
        owner = q.owner if q.owner[0].isupper() else "the friend"
        self.sentences.append(f"{p}% of {owner}'s {q.item} are {adj}.")
        self.step(f"{p}% of {q.value} are {adj}", f"{q.value} * {p} / 100", r, "percent")
        return Quantity(r, f"{adj} {owner}", q.item)  # lower-case-first owner: a derived group

    # -- problem ---------------------------------------------------------------------------------
    def start(self) -> Quantity:
        a = self.names[0]
        if self.n_steps >= 2 and self.rng.random() < 0.35:
            n, k = self.small(), self.rng.randint(3, 40)
            self.sentences.append(f"{a} has {n} {self.container} with {k} {self.item} in each.")
            self.step(f"{a} has {n} {self.container} of {k}", f"{n} * {k}", n * k, "packs")
            return Quantity(n * k, a, self.item)
        v = self.rng.randint(10, 600)
        self.sentences.append(f"{a} has {v} {self.item}.")
        return Quantity(v, a, self.item, given=True)

    def finish(self, q: Quantity, history: list[Quantity]) -> tuple[str, int]:
        """The question sentence; may add one combining step (total / difference / money)."""
        # The other holder is the previous result or a count the question states outright, and
        # always the owner's current count (never a stale one).
        latest = {h.owner: h for h in history}
        people = [
            h for h in latest.values() if h.owner[0].isupper() and h.owner != q.owner and (h is history[-1] or h.given)
        ]
        rest = self.n_steps - len(self.steps)
        if rest >= 1 and people and q.owner[0].isupper():
            other = self.rng.choice(people)
            if self.rng.random() < 0.5 and q.value + other.value <= MAX_VALUE:
                r = q.value + other.value
                self.step(
                    f"{q.owner} has {q.value} and {other.owner} has {other.value}",
                    f"{q.value} + {other.value}",
                    r,
                    "together",
                )
                return f"How many {q.item} do {q.owner} and {other.owner} have together?", r
            if q.value != other.value:
                big, small_ = (q, other) if q.value > other.value else (other, q)
                r = big.value - small_.value
                self.step(
                    f"{big.owner} has {big.value} and {small_.owner} has {small_.value}",
                    f"{big.value} - {small_.value}",
                    r,
                    "difference",
                )
                return f"How many more {q.item} does {big.owner} have than {small_.owner}?", r
        if rest >= 1 and self.rng.random() < 0.6:
            k = self.rng.randint(2, 9)
            r = q.value * k
            if r <= MAX_VALUE:
                who = q.owner if q.owner[0].isupper() else "they"
                self.sentences.append(f"Each of the {q.item} is sold for ${k}.")
                self.step(f"Selling {q.value} at ${k} each", f"{q.value} * {k}", r, "money")
                if who == "they":
                    return f"How many dollars does {self._group_phrase(q)} make?", r
                return f"How many dollars does {who} make by selling all of them?", r
        return self._how_many(q), q.value

    def _group_phrase(self, q: Quantity) -> str:
        return "each friend" if q.owner == "each friend" else f"the owner of the {q.owner} {q.item}"

    def _how_many(self, q: Quantity) -> str:
        if q.owner == "each friend":
            return f"How many {q.item} does each friend get?"
        if not q.owner[0].isupper():
            adj = q.owner.split(" ")[0]
            return f"How many {adj} {q.item} are there?"
        return f"How many {q.item} does {q.owner} have{' now' if self.rng.random() < 0.5 else ''}?"

    def distractor(self) -> None:
        """An irrelevant given quantity: the model must not use it (conceptual errors if it does)."""
        who = self.rng.choice(self.names)
        kind = self.rng.random()
        if kind < 0.4:
            s = f"{who} also has {self.rng.randint(2, 90)} {self.rng.choice(OTHER_THINGS)}."
        elif kind < 0.7:
            s = f"{who} is {self.rng.randint(6, 70)} years old."
        else:
            s = f"{self.rng.choice(self.names)} has {self.rng.randint(2, 400)} {self.rng.choice(ITEMS)[0]}."
            if self.item in s:
                return
        pos = self.rng.randint(1, len(self.sentences))
        self.sentences.insert(pos, s)


OPS = {
    "times": _Builder.op_times,
    "more": _Builder.op_more,
    "fewer": _Builder.op_fewer,
    "half": _Builder.op_half,
    "gives": _Builder.op_gives,
    "buys": _Builder.op_buys,
    "split": _Builder.op_split,
    "percent": _Builder.op_percent,
}
OP_WEIGHTS = {"times": 3, "more": 3, "fewer": 3, "half": 2, "gives": 3, "buys": 2, "split": 2, "percent": 2}


def make_problem(rng: random.Random, n_steps: int | None = None) -> TaskProblem:
    """One problem with `n_steps` solution steps (1-6), built by chaining operations."""
    n_steps = n_steps or rng.randint(1, 6)
    for _ in range(100):
        b = _Builder(rng, n_steps)
        q = b.start()
        history = [q]
        terminal = False
        while len(b.steps) < n_steps - 1 or (len(b.steps) < n_steps and rng.random() < 0.5):
            if q.owner == "each friend" or not q.owner[0].isupper():
                terminal = True  # a share or a percentage group ends the chain
                break
            names, weights = zip(*OP_WEIGHTS.items())
            for _try in range(10):
                op = rng.choices(names, weights)[0]
                if op == "buys" and len(b.steps) + 2 > n_steps:
                    continue
                nq = OPS[op](b, q)
                if nq is not None:
                    q = nq
                    history.append(q)
                    break
            else:
                break
        if terminal and len(b.steps) < n_steps:
            question, answer = b._how_many(q), q.value
        else:
            question, answer = b.finish(q, history[:-1])
        if len(b.steps) != n_steps or not b.steps:
            continue
        has_distractor = rng.random() < 0.5
        if has_distractor:
            b.distractor()
        text = " ".join(b.sentences + [question])
        return TaskProblem(text, b.steps, answer, n_steps, b.ops, has_distractor)
    raise RuntimeError("could not build a problem")  # pragma: no cover - never seen


def generate(split: str, n: int, seed: int = 0, start: int = 0) -> Iterator[TaskProblem]:
    """The first `n` problems (after skipping `start`) of a split's deterministic stream."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {sorted(SPLITS)}")
    rng = random.Random(SPLIT_SEEDS[split] * 1_000_003 + seed)
    produced = 0
    seen: set[str] = set()
    while produced < start + n:
        p = make_problem(rng)
        if split_of(p.question) != split or p.question in seen:
            continue
        seen.add(p.question)
        if produced >= start:
            yield p
        produced += 1
