"""The step format, both ways: build prompts, and parse a solution back into steps + final answer.

Format used everywhere (training data, prompts, generations):

    Question: <text>
    Step 1: <words> <expression> = <value>.
    Step 2: ...
    The answer is: <value>

Parsing is tolerant of real model output: GSM8K-style solutions (no "Step k:" prefix, `#### 42`
or `A: 42` answer lines), `\\boxed{}` answers, blank lines, and trailing chatter after the answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from silverbullet.segmentation import (  # noqa: F401  (re-exported: the step format's names live here)
    ANSWER_LINE_RES,
    ANSWER_PREFIX,
    MAX_SOLUTION_CHARS,
    STEP_PREFIX_RE,
    boxed,
    clean_answer,
    segment,
)


def build_prompt(question: str) -> str:
    """The prompt a model continues: the question line; the model writes steps and the answer."""
    return f"Question: {question.strip()}\n"


def format_solution(steps: list[str], answer: str) -> str:
    """Render steps (without prefixes) and an answer in the canonical step format."""
    lines = [f"Step {i + 1}: {s.strip()}" for i, s in enumerate(steps)]
    lines.append(f"{ANSWER_PREFIX} {answer}")
    return "\n".join(lines) + "\n"


@dataclass
class ParsedSolution:
    """A solution split into reasoning steps (prefix removed) and its final answer."""

    steps: list[str]  # reasoning lines before the answer line, "Step k:" prefix removed
    raw_steps: list[str]  # the same lines as written
    answer: str | None  # final answer text, None when no answer line was found
    has_answer_line: bool


def parse_solution(text: str) -> ParsedSolution:
    """Split a solution into reasoning steps and the final answer (`segmentation.segment`).

    The answer line is the first line matching an answer pattern; text after it is ignored (models
    often keep talking). Step-format text gives one step per line; free-form text (no `Step k:`
    lines) is cut at lines, list items, sentences that compute and display blocks.
    """
    seg = segment(text if isinstance(text, str) else "")
    return ParsedSolution(
        steps=list(seg.steps), raw_steps=list(seg.raw_steps), answer=seg.answer, has_answer_line=seg.has_answer_line
    )


def extract_answer(text: str) -> str | None:
    return parse_solution(text).answer


def truncate_after_answer(text: str) -> str:
    """Cut a generation after its answer line (what a stop sequence would have done)."""
    out = []
    for line in text.split("\n"):
        out.append(line)
        if any(rx.match(line) for rx in ANSWER_LINE_RES[:1]):
            break
    return "\n".join(out).rstrip() + ("\n" if out else "")


def step_spans(text: str) -> list[tuple[int, int]]:
    """Character spans of the steps that `parse_solution` returns, in order.

    Lets later stages cut a generation at a step boundary (the prefix before a faulty step) and map
    per-token margins onto steps, with exactly the same notion of "step" as the parser.
    """
    return list(segment(text if isinstance(text, str) else "").spans)


def renumber_step(line: str, number: int) -> str:
    """Give a step line the number `number` ("Step 3: x" -> "Step 2: x"); add a prefix if absent."""
    m = STEP_PREFIX_RE.match(line)
    body = line[m.end():] if m else line.strip()
    return f"Step {number}: {body}"
