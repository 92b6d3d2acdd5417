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

import re
from dataclasses import dataclass

ANSWER_PREFIX = "The answer is:"
STEP_PREFIX_RE = re.compile(r"^\s*(?:\*\*)?Step\s*(\d+)\s*[:.)]\s*(?:\*\*)?\s*", re.IGNORECASE)
# Answer lines, most specific first. Group 1 is the answer text.
ANSWER_LINE_RES = [
    re.compile(r"^\s*(?:\*\*)?The (?:final )?answer is\s*[:：]?\s*(?:\*\*)?\s*(.*?)\s*$", re.IGNORECASE),
    re.compile(r"^\s*####\s*(.*?)\s*$"),
    re.compile(r"^\s*A\s*:\s*(.*?)\s*$"),
    re.compile(r"^\s*(?:\*\*)?Final answer\s*[:：]\s*(?:\*\*)?\s*(.*?)\s*$", re.IGNORECASE),
]
MAX_SOLUTION_CHARS = 100_000


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


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with balanced braces."""
    start = text.rfind("\\boxed")
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, min(len(text), i + 2000)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None


def clean_answer(ans: str) -> str:
    ans = ans.strip()
    boxed = _boxed(ans)
    if boxed is not None:
        return boxed
    ans = re.sub(r"^\$+|\$+$", "", ans).strip() if ans.count("$") >= 2 else ans
    return ans.rstrip(".").strip()


def parse_solution(text: str) -> ParsedSolution:
    """Split a solution into reasoning steps and the final answer.

    The answer line is the first line matching an answer pattern; text after it is ignored (models
    often keep talking). Without one, a `\\boxed{}` anywhere gives the answer and every non-empty
    line is a step.
    """
    text = text[:MAX_SOLUTION_CHARS].replace("\r\n", "\n").replace("\r", "\n")
    raw_steps: list[str] = []
    steps: list[str] = []
    answer: str | None = None
    found = False
    for line in text.split("\n"):
        if not line.strip():
            continue
        if line.lstrip().startswith("Question:") and not raw_steps:
            continue
        for rx in ANSWER_LINE_RES:
            m = rx.match(line)
            if m:
                answer = clean_answer(m.group(1))
                found = True
                break
        if found:
            break
        raw_steps.append(line.strip())
        steps.append(STEP_PREFIX_RE.sub("", line, count=1).strip())
    if not found:
        boxed = _boxed(text)
        if boxed is not None:
            answer = boxed
    return ParsedSolution(steps=steps, raw_steps=raw_steps, answer=answer, has_answer_line=found)


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
    """Character spans of the reasoning lines that `parse_solution` returns as steps, in order.

    Lets later stages cut a generation at a step boundary (the prefix before a faulty step) and map
    per-token margins onto steps, with exactly the same notion of "line" as the parser.
    """
    text = text[:MAX_SOLUTION_CHARS]
    spans: list[tuple[int, int]] = []
    pos = 0
    for line in text.split("\n"):
        start, end = pos, pos + len(line)
        pos = end + 1
        if not line.strip():
            continue
        if line.lstrip().startswith("Question:") and not spans:
            continue
        if any(rx.match(line) for rx in ANSWER_LINE_RES):
            break
        spans.append((start, end))
    return spans


def renumber_step(line: str, number: int) -> str:
    """Give a step line the number `number` ("Step 3: x" -> "Step 2: x"); add a prefix if absent."""
    m = STEP_PREFIX_RE.match(line)
    body = line[m.end():] if m else line.strip()
    return f"Step {number}: {body}"
