"""Find the first faulty step of a solution and classify it.

Checks, each giving a candidate position (the earliest wins; on a tie the first listed wins):
1. arithmetic: the step's own equation is false, or its prose claims another number than the
   computation it gives as the reason ("7 hours because 8 - 2 = 6", check.claim_mismatch), or a
   relation between written numbers is false ("48 < 3", check.false_relation) (execution);
2. unsupported operand: the step computes with a number that is neither given, nor computed
   earlier, nor a common constant (conceptual misread, or reasoning when it is a slip for an
   earlier result);
3. negative result: a count, price or time below zero in a problem whose question and reference have
   no negatives (method); repetition: the step repeats an earlier step word for word (reasoning: a loop);
4. reference divergence (when the final answer is wrong and a reference solution exists): the
   first step the reference's dataflow does not support (dataflow.py: a gold value drawn from the
   same given numbers, a one-operation route to one, a restatement) and that does not feed a later
   supported gold step; partial sums of a reference step are allowed when the rest of its operands
   are used later. This prefers the earliest unsupported step over later arithmetic evidence; on
   the same step the arithmetic check wins (docs/dataflow.md). When an earlier step computed the
   value that unsupported step uses but named it as another entity the question contrasts ("steel"
   for the gold's iron-pickaxe rate; roles.py), that earlier step is the fault instead.
When the final answer is right only check 1 fires: a different route is not an error. When it is
wrong and nothing fired, the answer line or the last step is blamed (see `evidence["check"]`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from silverbullet.attribution import dataflow as df
from silverbullet.attribution import latex, roles
from silverbullet.attribution import taxonomy as tx
from silverbullet.attribution.align import align
from silverbullet.attribution.check import (
    FAULTY,
    StepCheck,
    average_without_division,
    check_step,
    claim_mismatch,
    false_relation,
)
from silverbullet.attribution.steps import ParsedSteps, StepInfo, analyse_step, parse_steps, question_numbers
from silverbullet.attribution.symbolic import FAULTY as SYM_FAULTY
from silverbullet.attribution.symbolic import UNKNOWN as SYM_UNKNOWN
from silverbullet.attribution.symbolic import SymbolicStep, check_steps
from silverbullet.attribution.trace import read_trace
from silverbullet.grading import is_correct, parse_number
from silverbullet.prompting.formats import is_placeholder_answer
from silverbullet.records import Attribution

_NORM_RE = re.compile(r"\W+")
_LATEX_RE = re.compile(r"\\[A-Za-z\[(]")  # a TeX command: the symbolic checker runs too
_NEGATIVE_WORDS_RE = re.compile(
    r"\b(?:below|negative|minus|loss|lose|lost|debt|owe[sd]?|deficit|temperature|degrees?|elevation|depth|"
    r"change|difference|net)\b|-\s?\d",
    re.IGNORECASE,
)


def _f(v: Fraction | None) -> str | None:
    if v is None:
        return None
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


class _Found:
    """The earliest fault found so far."""

    def __init__(self) -> None:
        self.index: int | None = None
        self.type: str | None = None
        self.evidence: dict[str, Any] = {}

    def offer(self, index: int, etype: str, evidence: dict[str, Any]) -> None:
        if self.index is None or index < self.index:
            self.index, self.type, self.evidence = index, etype, evidence


def _missing_in_reference(i: int, steps: Sequence[StepInfo], ref: ParsedSteps | None) -> Fraction | None:
    """The operand of the aligned reference step that this step's unsupported operand replaces."""
    if ref is None or not ref.steps:
        return None
    j = align(steps, ref.steps).mapping[i]
    if j is None:
        return None
    missing = Counter(ref.steps[j].operands) - Counter(steps[i].operands)
    return next(iter(missing)) if len(missing) == 1 else None


def _local_checks(
    steps: Sequence[StepInfo],
    checks: Sequence[StepCheck],
    qnums: frozenset[Fraction],
    found: _Found,
    full: bool,
    ref: ParsedSteps | None = None,
    symbolic: Sequence[SymbolicStep] | None = None,
    prose: Sequence[StepInfo] | None = None,
    written: frozenset[Fraction] | None = None,
    question_text: str = "",
) -> None:
    """`written`: the numbers the question writes (no unit conversions). `prose[i]`: step i as the
    plain-text lexer should read it for the arithmetic and operand checks (on LaTeX text, the step
    outside its formulas); by default the step itself."""
    known: set[Fraction] = set(qnums)
    stated: set[Fraction] = set(written if written is not None else qnums)  # without unit conversions
    results: list[Fraction] = []
    seen_text: dict[str, int] = {}
    ref_values = {v for r in ref.steps for v in r.values} if ref is not None else set()
    # A count, price or time below zero: impossible unless the problem or its reference has negatives.
    negatives_impossible = (
        bool(question_text)  # no question: nothing says what the numbers count
        and not _NEGATIVE_WORDS_RE.search(question_text)
        and not any(v < 0 for v in ref_values)
    )
    for i, (s, c) in enumerate(zip(steps, checks, strict=False)):
        if found.index is not None and i >= found.index:
            break
        sym = symbolic[i] if symbolic is not None and i < len(symbolic) else None
        if sym is not None and sym.status == SYM_FAULTY:
            bad_link = sym.first_fault
            assert bad_link is not None
            found.offer(i, tx.EXECUTION, bad_link.evidence())
            break
        # On LaTeX the symbolic checker owns the formulas; the arithmetic check reads the prose
        # around them (`checks` were made from `prose`) and counts where the symbolic one is silent.
        if c.status == FAULTY and (sym is None or sym.status == SYM_UNKNOWN):
            bad = c.first_fault
            assert bad is not None
            found.offer(i, tx.EXECUTION, {"check": "arithmetic", **bad.evidence()})
            break
        claim = claim_mismatch(s, stated, ref_values) if prose is None else None
        if claim is not None:  # "7 hours because 8 - 2 = 6": false whatever the answer
            found.offer(i, tx.EXECUTION, claim)
            break
        summed = average_without_division(s) if prose is None else None
        if summed is not None:  # "the average of 25 and 75 is 25 + 75 = 100"
            found.offer(i, tx.METHOD, summed)
            break
        relation = false_relation(s) if prose is None else None
        if relation is not None:  # "because 48 < 3", "$1980 is 110% of $2000"
            found.offer(i, tx.EXECUTION, relation)
            break
        if full:
            for o in (prose[i] if prose is not None else s).operands:
                if not tx.supported(o, known):
                    etype, near = tx.classify_unsupported(o, qnums, results)
                    m = _missing_in_reference(i, steps, ref)
                    if m is not None:  # the reference uses a given here (misread) or a result (carry-over)
                        ref_results = {r.result for r in ref.steps if r.result is not None} if ref else set()
                        if m in qnums and m not in ref_results:
                            etype, near = tx.CONCEPTUAL, m
                        elif m in ref_results and m not in qnums:
                            etype, near = tx.REASONING, m
                    found.offer(
                        i,
                        etype,
                        {"check": "unsupported_operand", "operand": _f(o), "looks_like": _f(near),
                         "from": "earlier result" if etype == tx.REASONING else "question"},
                    )  # fmt: skip
                    break
            if negatives_impossible and s.result is not None and s.result < 0 and s.operands:
                found.offer(i, tx.METHOD, {"check": "negative_result", "value": _f(s.result)})
                break
            norm = _NORM_RE.sub(" ", s.text.lower()).strip()
            if len(norm) > 12 and norm in seen_text:
                found.offer(i, tx.REASONING, {"check": "repetition", "repeats_step": seen_text[norm]})
            seen_text.setdefault(norm, i)
        known.update(s.values)
        stated.update(s.values)
        if s.result is not None:
            results.append(s.result)


def _divergence(
    steps: Sequence[StepInfo],
    ref: ParsedSteps,
    qnums: frozenset[Fraction],
    gold: Fraction | None,
    found: _Found,
    flow: df.GoldFlow | None = None,
    question: str = "",
    written: frozenset[Fraction] = frozenset(),
) -> None:
    n = len(steps)
    if n == 0:
        return
    cand_leaves, ref_leaves = df.expand_leaves(steps), df.expand_leaves(ref.steps)
    good = _dataflow_good(steps, flow or df.gold_flow(ref.steps, qnums, gold), qnums)
    known: set[Fraction] = set(qnums)
    mapping = None
    # Steps word for word the reference's, from the first on, have not left its dataflow yet.
    same = 0
    while same < min(n, len(ref.steps)) and _norm(steps[same].text) == _norm(ref.steps[same].text):
        same += 1
    for i, s in enumerate(steps):
        if found.index is not None and i >= found.index:
            return
        if i < same:
            known.update(s.values)
            continue
        restated = s.result in known and not s.operands
        if not good[i] and not restated and (s.equations or s.result is not None):
            partial = _partial_of_reference(i, steps, cand_leaves, ref.steps, ref_leaves)
            if partial is None:
                misnamed = roles.misnamed_producer(i, steps, ref.steps, question, written)
                if misnamed is not None:
                    k, name, gold_names, j = misnamed
                    found.offer(
                        k,
                        tx.CONCEPTUAL,
                        {
                            "check": "reference_divergence",
                            "rule": "misnamed_quantity",
                            "value": _f(steps[k].result),
                            "named": name,
                            "reference_names": list(gold_names),
                            "reference_step": j,
                            "reference_text": ref.steps[j].text,
                            "used_by_step": i,
                        },
                    )
                    return
                if mapping is None:
                    mapping = align(steps, ref.steps).mapping
                j = mapping[i]
                if j is None:
                    j = _best_by_leaves(cand_leaves[i], ref_leaves)
                ref_step = ref.steps[j] if j is not None else None
                # values this solution computed (an operation, not a restated given) before step i
                own = {x.result for x in steps[:i] if x.result is not None and x.operands}
                etype, rule = tx.classify_divergence(
                    s.operands,
                    ref_step.operands if ref_step else None,
                    own,
                    qnums,
                    same_quantities=j is not None and bool(cand_leaves[i]) and cand_leaves[i] == ref_leaves[j],
                )
                found.offer(
                    i,
                    etype,
                    {
                        "check": "reference_divergence",
                        "rule": rule,
                        "value": _f(s.result),
                        "operands": [_f(o) for o in s.operands],
                        "reference_step": j,
                        "reference_text": ref_step.text if ref_step else None,
                        "reference_value": _f(ref_step.result) if ref_step else None,
                    },
                )
                return
        known.update(s.values)


def _used_later(i: int, steps: Sequence[StepInfo], answer: Fraction | None) -> bool:
    """Does step i's value go on: is it the last step, the answer, or a value a later step states or
    computes with?"""
    v = steps[i].result
    if i == len(steps) - 1 or v is None or v == answer:
        return True
    return any(v in s.values or v in s.operands for s in steps[i + 1 :])


def _norm(text: str) -> str:
    return _NORM_RE.sub(" ", text.lower()).strip()


def _dataflow_good(steps: Sequence[StepInfo], flow: df.GoldFlow, qnums: frozenset[Fraction]) -> list[bool]:
    """good[i]: step i is supported by the gold's dataflow (dataflow.py), or its value feeds a later
    good step (a different route that gets back to the gold). A value equal to a given number does
    not feed: the later step may be using the given."""
    known: set[Fraction] = set(qnums)
    sup: list[str] = []
    leaves = df.candidate_leaves(steps, flow)
    for i, s in enumerate(steps):
        sup.append(df.support(s, leaves[i], flow, known))
        known.update(s.values)
    n = len(steps)
    good = [x in df.SUPPORTED for x in sup]
    anchored = [x == df.GOLD for x in sup]
    for i in range(n - 1, -1, -1):
        if good[i] or sup[i] == df.COINCIDENCE:  # a coincidence's later matches inherit it
            continue
        v = steps[i].result
        if v not in qnums and any(v in steps[j].operands and anchored[j] for j in range(i + 1, n)):
            good[i] = anchored[i] = True
    return good


def _partial_of_reference(
    i: int,
    steps: Sequence[StepInfo],
    cand_leaves: list[Counter],
    ref_steps: Sequence[StepInfo],
    ref_leaves: list[Counter],
) -> int | None:
    """A step computing part of one reference equation (3+4 of 16-3-4) whose other operands are
    used later is a different route, not an error. Returns that reference step's index."""
    mine = Counter(steps[i].operands)
    if sum(mine.values()) < 2 or any(cand_leaves[i] == rl for rl in ref_leaves):
        return None  # same quantities as a reference step but another value: not a partial
    later: Counter = Counter()
    for s in steps[i + 1 :]:
        later.update(s.operands)
        later.update(s.numbers)
    for j, r in enumerate(ref_steps):
        rl = Counter(r.operands)
        if mine != rl and not (mine - rl):
            rest = rl - mine
            if all(later[v] > 0 for v in rest):
                return j
    return None


def _best_by_leaves(mine: Counter, ref_leaves: list[Counter]) -> int | None:
    best, best_j = 0, None
    for j, rl in enumerate(ref_leaves):
        shared = sum((mine & rl).values())
        if shared > best:
            best, best_j = shared, j
    return best_j


def locate(
    question: str,
    candidate_text: str,
    reference_text: str | None = None,
    gold_answer: str | None = None,
    problem_id: str = "",
    without_evidence: str = "earliest_used",
) -> Attribution:
    """First faulty reasoning step of `candidate_text`, its error type and the evidence.

    `reference_text` is another solution of the same problem (full-precision model or gold); its
    final answer is the gold answer when `gold_answer` is not given. Never raises on odd text.
    `without_evidence`: where a wrong answer goes when no check fires and there is no reference:
    "earliest_used" (the earliest computing step the solution goes on to use: a prior, the better
    position estimate) or "last" (the last step, as a process reward wants: no refuted step).
    """
    if without_evidence not in ("earliest_used", "last"):
        raise ValueError(f"without_evidence: 'earliest_used' or 'last', not {without_evidence!r}")
    cand = parse_steps(candidate_text or "")
    ref = parse_steps(reference_text) if reference_text else None
    if gold_answer is None and ref is not None:
        gold_answer = ref.answer
    gold = parse_number(gold_answer) if gold_answer is not None else None
    final_ok: bool | None = is_correct(cand.answer, gold_answer) if gold_answer is not None else None
    steps = cand.steps
    qnums = question_numbers(question or "")
    # LaTeX solutions also get the symbolic checker (GSM8K-style text never matches _LATEX_RE). It owns
    # the formulas: the plain-text lexer misreads TeX (subscripts, units, `\frac`, rows of a display
    # block), so the arithmetic and unsupported-operand checks read only the prose outside them.
    symbolic, prose = None, None
    if _LATEX_RE.search(candidate_text or ""):
        symbolic = check_steps([s.text for s in steps])
        prose = [_prose_view(s) for s in steps]
    checks = [check_step(s) for s in (prose if prose is not None else steps)]
    found = _Found()
    # right answer: only a false equation is an error; unknown: local checks; wrong: everything
    written = question_numbers(question or "", units=False)
    _local_checks(
        steps, checks, qnums, found, full=final_ok is not True, ref=ref, symbolic=symbolic, prose=prose,
        written=written, question_text=question or "",
    )  # fmt: skip
    if final_ok is False and ref is not None:
        flow = df.flow_for(question or "", reference_text or "", gold)
        _divergence(steps, ref, qnums, gold, found, flow, question or "", written)
    answer_line = False
    if final_ok is False and found.index is None:
        placeholder = is_placeholder_answer(candidate_text or "")
        answer_line = _blame_end(cand, ref, gold, found, without_evidence == "earliest_used", qnums, placeholder)
    aligned = None
    if found.index is not None and ref is not None:
        aligned = found.evidence.get("reference_step")
        if aligned is None:
            aligned = align(steps, ref.steps).mapping[found.index]
            found.evidence["reference_step"] = aligned
            found.evidence["reference_text"] = ref.steps[aligned].text if aligned is not None else None
    if found.index is not None:
        found.evidence.setdefault("step_text", steps[found.index].text)
    if final_ok is not True:
        _read_trace(candidate_text or "", cand, gold_answer, found)
    prefix = "\n".join(s.text for s in steps[: found.index]) if found.index is not None else ""
    return Attribution(
        problem_id=problem_id,
        first_faulty_step=found.index,
        error_type=found.type,
        evidence=found.evidence,
        final_answer_correct=final_ok,
        n_steps=len(steps),
        aligned_reference_step=aligned,
        fault_in_answer_line=answer_line,
        prefix=prefix,
    )


def _read_trace(text: str, cand: ParsedSteps, gold_answer: str | None, found: _Found) -> None:
    """A reasoning trace's own fault beside the response's (`evidence["trace"]`, trace.py). Where the
    trace never closed there is no response step to blame: the trace's first fault types the error
    (an uncorrected false equation: execution; a loop: reasoning), unless the trace had already stated
    the right answer before it, which makes it a failure to finish (reasoning)."""
    reading = read_trace(text)
    if reading is None:
        return
    ev = reading.evidence(gold_answer)
    fault = reading.fault
    if fault is not None and fault.get("claimed") is not None:
        claimed = parse_number(fault["claimed"])
        ev["fault"]["in_response"] = claimed is not None and (
            claimed == cand.answer_value or any(claimed in s.numbers for s in cand.steps)
        )
    found.evidence["trace"] = ev
    if not cand.thinking_unfinished or not found.evidence.get("check") == "unfinished_thinking":
        return
    right = ev.get("right_answer_line")
    if right is not None and (fault is None or right < fault["line"]):
        found.evidence["rule"] = "answered_in_trace"
        found.type = tx.REASONING
    elif fault is not None:
        found.evidence["rule"] = f"trace_{fault['check']}"  # trace.TRACE_RULES
        found.type = tx.EXECUTION if fault["check"] == "arithmetic" else tx.REASONING


def _prose_view(s: StepInfo) -> StepInfo:
    """The step outside its TeX formulas (latex.formula_spans), as the plain-text lexer reads it."""
    text = latex.outside_formulas(s.text)
    return s if text == s.text else analyse_step(text, s.index)


def _computes(s: StepInfo, qnums: frozenset[Fraction]) -> bool:
    """The step works something out: an equation, or a number the question does not give."""
    return bool(s.equations) or any(v not in qnums for v in s.numbers)


def _blame_end(
    cand: ParsedSteps,
    ref: ParsedSteps | None,
    gold: Fraction | None,
    found: _Found,
    prior: bool = True,
    qnums: frozenset[Fraction] = frozenset(),
    placeholder: bool = False,
) -> bool:
    """Wrong answer, every step checks out: blame the answer line if it does not follow from the
    steps, else the last step (it stops early or answers another question). True: answer line.

    A solution with no number for an answer whose steps name calculations without doing them ("Step 1:
    Calculate the total cost.", then "The answer is: <answer>", the instruction's placeholder) was
    planned and never carried out: the first step of the non-computing tail is the fault, an execution
    error (the plan may be right; it was not executed). Only where nothing is computed at all, or the
    answer is the placeholder: a solution cut at the token limit mid-sentence is not a plan."""
    steps = cand.steps
    if cand.answer_value is None and steps:
        tail = len(steps)
        while tail > 0 and not _computes(steps[tail - 1], qnums):
            tail -= 1
        if tail < len(steps) and (tail == 0 or placeholder):
            found.offer(
                tail,
                tx.EXECUTION,
                {"check": "no_computation", "rule": "planned_not_computed", "computed_steps": tail},
            )
            return False
    stated: set[Fraction] = set()
    for s in steps:
        stated.update(s.values)
    # "A: 33" after 33.333...: a whole-number answer cut from a stated value follows from the steps
    cut = [Fraction(f(v)) for v in stated if v.denominator != 1 for f in (math.floor, math.ceil)]
    stated.update(cut)
    last = steps[-1].result if steps else None
    if cand.answer_value is not None and steps and cand.answer_value not in stated and last is not None:
        found.evidence = {
            "check": "final_answer_mismatch",
            "answer": _f(cand.answer_value),
            "last_value": _f(last),
        }
        found.type = tx.REASONING
        return True
    if not steps:
        # a reasoning trace that never closed has no response: the model ran out of tokens thinking
        found.evidence = {"check": "unfinished_thinking" if cand.thinking_unfinished else "no_steps"}
        found.type = tx.REASONING
        return True
    ref_values = {v for r in ref.steps for v in r.values} if ref else set()
    # Stopping at a reference intermediate, or arriving elsewhere, presents another quantity as the one
    # asked for: the guide's "answers a different question" / "drops a condition", conceptual both
    # ways. Reasoning is kept for what does not follow from the steps (the answer-line case above).
    early = last is not None and last in ref_values and last != gold
    pos, rule = len(steps) - 1, "stops_early" if early else "answers_other_question"
    if ref is None and prior:
        # No reference, so no evidence of where: every computing step whose value the solution goes
        # on to use is a suspect. Blame the earliest of them rather than the last step: a prior, not
        # evidence (docs/taxonomy.md: on the GSM8K dev set's tune split the labelled first fault is
        # step 0 nearly twice as often as the last step).
        pos = next((i for i, s in enumerate(steps) if s.operands and _used_later(i, steps, cand.answer_value)), pos)
        if pos < len(steps) - 1:
            rule = "earliest_used_step"
    found.offer(
        pos,
        tx.CONCEPTUAL,
        {"check": "wrong_final_value", "value": _f(last), "gold": _f(gold), "rule": rule},
    )  # fmt: skip
    return False
