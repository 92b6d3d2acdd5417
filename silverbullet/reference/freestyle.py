"""Free-style renderings of a reference problem's solution: how chat models write when not asked for steps.

Why: a real instruct model, asked a question with no format instruction, answers in its own style
(prose with the computation inline, LaTeX, markdown lists, `\\boxed{}`), and silverbullet must then
segment that text itself. The chat reference model is trained on these renderings so that the
project has such a model to run end to end.

Each renderer keeps every canonical step one segmentable unit (one sentence, list item, line or
display block carrying that step's computation and its value, as its last number), and ends with
an answer the parser reads (`The answer is`, `\\boxed{}`, `####`). Filler never stands alone: an
introduction ends in ':' (it joins the next line) or shares the first step's paragraph.

The style is chosen by the question's first name (every question starts with one), not by a hash:
a model can learn a choice it can see, and so greedy decoding still varies from problem to problem.
"""

from __future__ import annotations

import re

from silverbullet.benchmarks.synthetic_task import NAMES, TaskProblem

_STEP_RE = re.compile(r"^(?P<words>.*), so (?P<expr>[^=]*) = (?P<value>-?\d+)\.$")
STYLES = ("prose", "latex_inline", "markdown_list", "display", "gsm8k")


def split_step(step: str) -> tuple[str, str, str]:
    """(words, expression, value) of a canonical step `<words>, so <expr> = <value>.`."""
    m = _STEP_RE.match(step.strip())
    if m is None:
        raise ValueError(f"not a canonical step: {step!r}")
    return m.group("words"), m.group("expr"), m.group("value")


def latex_expr(expr: str) -> str:
    """`a * b` -> `a \\times b`, `a / b` -> `\\frac{a}{b}`, `a * p / 100` -> `a \\times \\frac{p}{100}`."""
    m = re.fullmatch(r"(\d+) \* (\d+) / (\d+)", expr)
    if m:
        return f"{m.group(1)} \\times \\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    m = re.fullmatch(r"(\d+) / (\d+)", expr)
    if m:
        return f"\\frac{{{m.group(1)}}}{{{m.group(2)}}}"
    return expr.replace(" * ", " \\times ")


def _latex_words(words: str) -> str:
    """Prose around LaTeX: a dollar amount is `\\$3` (a bare `$` would open inline maths)."""
    return words.replace("$", "\\$")


def style_of(question: str) -> str:
    """The free style of a problem: by its first word (a name), else by its length."""
    first = question.split(" ", 1)[0]
    k = NAMES.index(first) if first in NAMES else len(question)
    return STYLES[k % len(STYLES)]


def _prose(steps: list[tuple[str, str, str]], answer: str) -> str:
    out = []
    for i, (w, e, v) in enumerate(steps):
        lead = "" if len(steps) == 1 else ("First, " if i == 0 else ("Finally, " if i == len(steps) - 1 else "Then "))
        out.append(f"{lead}{w}, so {e} = {v}.")
    return " ".join(out) + f" So the answer is {answer}."


def _latex_inline(steps: list[tuple[str, str, str]], answer: str) -> str:
    out = [f"{_latex_words(w)}, which gives ${latex_expr(e)} = {v}$." for w, e, v in steps]
    return "Let's solve this step by step. " + " ".join(out) + f"\n\nTherefore, the answer is $\\boxed{{{answer}}}$."


def _markdown_list(steps: list[tuple[str, str, str]], answer: str) -> str:
    items = [f"{i + 1}. {w}: {e} = {v}" for i, (w, e, v) in enumerate(steps)]
    return "Here is the calculation:\n\n" + "\n".join(items) + f"\n\nThe final answer is \\boxed{{{answer}}}."


def _display(steps: list[tuple[str, str, str]], answer: str) -> str:
    blocks = [f"{_latex_words(w)}:\n\\[\n{latex_expr(e)} = {v}\n\\]" for w, e, v in steps]
    return "\n".join(blocks) + f"\nThe answer is $\\boxed{{{answer}}}$."


def _gsm8k(steps: list[tuple[str, str, str]], answer: str) -> str:
    return "\n".join(f"- {w}: {e} = {v}" for w, e, v in steps) + f"\n#### {answer}"


_RENDERERS = {
    "prose": _prose,
    "latex_inline": _latex_inline,
    "markdown_list": _markdown_list,
    "display": _display,
    "gsm8k": _gsm8k,
}


def render_free(problem: TaskProblem, style: str | None = None) -> str:
    """The problem's solution in a free style (its own, by `style_of`, unless `style` is given)."""
    style = style or style_of(problem.question)
    steps = [split_step(s) for s in problem.steps]
    return _RENDERERS[style](steps, str(problem.answer))
