"""Reading reasoning traces for faults (attribution/trace.py), on errors injected into right traces.

    python bench/trace_faults.py [--run runs/bench-thinking/diagnose] [--seed 0]
                                 [--out bench/results/trace_faults.json]

Takes the thinking reference model's right solutions from a diagnose run (made with
`bench/thinking_model.py`, or run here if absent) and, in each trace, one line with a true equation:
- `clean`: the trace as written (expected: no fault);
- `slip`: that line's result changed (expected: a fault at that line);
- `slip_carried`: the changed result also written everywhere later in the trace, as a model that
  believed it would (expected: that line, not a later one);
- `corrected`: the slip followed by a line that takes it back ("Wait, 6 * 7 = 42."; expected: none);
- `loop`: the line written three more times after itself (expected: a loop at that line);
- `unclosed_slip` / `unclosed_answered`: `locate` on the trace cut off before `</think>`, after the
  slip (expected rule `trace_arithmetic`, execution) or after a right answer line (`answered_in_trace`).
What this cannot show: the traces are the shipped model's step-format drafts; a real reasoning model's
traces are longer, looser prose (hand-written cases of that are in tests/test_trace.py).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.attribution.check import OK, check_step  # noqa: E402
from silverbullet.attribution.locate import locate  # noqa: E402
from silverbullet.attribution.steps import analyse_step  # noqa: E402
from silverbullet.attribution.trace import read_trace  # noqa: E402
from silverbullet.segmentation import STEP_PREFIX_RE, thinking_split  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EQ_RE = re.compile(r"(\d+(?:\s*[-+*/]\s*\d+)+)\s*=\s*(\d+)")
KINDS = ("clean", "slip", "slip_carried", "corrected", "loop", "unclosed_slip", "unclosed_answered")


def _rows(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _cases(text: str, rng: random.Random) -> dict[str, tuple[str, object]] | None:
    """The injected variants of one right solution: kind -> (text, expected)."""
    span, start = thinking_split(text)
    if span is None or start is None:
        return None
    head, trace, tail = text[: span[0]], text[span[0] : span[1]], text[span[1] :]
    lines = trace.split("\n")
    nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
    usable = []
    for k, i in enumerate(nonblank):
        m = EQ_RE.search(lines[i])
        if m and check_step(analyse_step(STEP_PREFIX_RE.sub("", lines[i]))).status == OK:
            usable.append((k, i, m))
    if not usable:
        return None
    k, i, m = rng.choice(usable)
    true = m.group(2)
    wrong = str(int(true) + rng.choice((-10, -2, -1, 1, 2, 10, 100)))
    if wrong == true or wrong.startswith("-"):
        wrong = str(int(true) + 1)

    def with_lines(new: list[str]) -> str:
        return head + "\n".join(new) + tail

    slipped = lines[:i] + [lines[i][: m.start(2)] + wrong + lines[i][m.end(2) :]] + lines[i + 1 :]
    carried = slipped[: i + 1] + [re.sub(rf"(?<!\d){true}(?!\d)", wrong, ln) for ln in slipped[i + 1 :]]
    fix = f"Wait, {m.group(1)} = {true}."
    answer_line = next((j for j in nonblank if lines[j].lower().startswith("the answer is")), None)
    cases: dict[str, tuple[str, object]] = {
        "clean": (text, None),
        "slip": (with_lines(slipped), k),
        "slip_carried": (with_lines(carried), k),
        "corrected": (with_lines(slipped[: i + 1] + [fix] + slipped[i + 1 :]), None),
        "unclosed_slip": (head + "\n".join(slipped[: i + 1]) + "\nLet me", "trace_arithmetic"),
    }
    if len(STEP_PREFIX_RE.sub("", lines[i]).strip()) >= 8:
        cases["loop"] = (with_lines(lines[: i + 1] + [lines[i]] * 3 + lines[i + 1 :]), k)
    if answer_line is not None:
        cases["unclosed_answered"] = (head + "\n".join(lines[: answer_line + 1]) + "\nLet me", "answered_in_trace")
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default="runs/bench-thinking/diagnose")
    ap.add_argument("--limit", type=int, default=100, help="problems, when the run has to be made")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="bench/results/trace_faults.json")
    a = ap.parse_args()
    run = ROOT / a.run
    if not (run / "summary.json").exists():
        cmd = [sys.executable, "-m", "silverbullet.cli", "diagnose", "--reference", "data/reference-thinking-model",
               "--limit", str(a.limit), "--max-new-tokens", "700", "--out", str(run)]  # fmt: skip
        print("$ " + " ".join(cmd[2:]), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    problems = {p["id"]: p for p in _rows(run / "problems.jsonl")}
    refs = [r for r in _rows(run / "generations" / "reference.jsonl") if r["correct"]]
    rng = random.Random(a.seed)
    hits: Counter = Counter()
    totals: Counter = Counter()
    misses: dict[str, list] = {k: [] for k in KINDS}
    t0 = time.perf_counter()
    for r in refs:
        p = problems[r["problem_id"]]
        cases = _cases(r["text"], rng)
        if cases is None:
            continue
        for kind, (text, expected) in cases.items():
            totals[kind] += 1
            if kind.startswith("unclosed"):
                got = locate(p["question"], text, None, str(p["answer"])).evidence.get("rule")
            else:
                fault = read_trace(text).fault  # type: ignore[union-attr]
                got = None if fault is None else fault["line"]
                if kind == "loop" and fault is not None and fault["check"] != "repetition":
                    got = ("arithmetic", got)
            if got == expected:
                hits[kind] += 1
            elif len(misses[kind]) < 3:
                misses[kind].append({"problem_id": r["problem_id"], "expected": expected, "got": got})
    seconds = round(time.perf_counter() - t0, 2)
    res = {
        "meta": run_meta(),
        "run": a.run,
        "seed": a.seed,
        "traces": sum(1 for r in refs),
        "kinds": {
            k: {"n": totals[k], "right": hits[k], "accuracy": round(hits[k] / totals[k], 4) if totals[k] else None}
            for k in KINDS
        },
        "misses": {k: v for k, v in misses.items() if v},
        "seconds": seconds,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"\ntrace faults on {res['traces']} right traces of the thinking model ({a.run}), seed {a.seed}")
    print("| case | expected | n | right |\n|---|---|---|---|")
    want = {"clean": "no fault", "slip": "the slip's line", "slip_carried": "the slip's line", "corrected": "no fault",
            "loop": "the loop's first line", "unclosed_slip": "trace_arithmetic",
            "unclosed_answered": "answered_in_trace"}  # fmt: skip
    for k in KINDS:
        v = res["kinds"][k]
        acc = "-" if v["accuracy"] is None else f"{v['right']} ({v['accuracy']:.1%})"
        print(f"| {k} | {want[k]} | {v['n']} | {acc} |")
    print(f"{seconds}s  ({a.out})")


if __name__ == "__main__":
    main()
