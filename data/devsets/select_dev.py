"""Reproducible selection of rows for the GSM8K first-fault dev set.

Usage:  python3 data/devsets/select_dev.py [--print START END]

Selection: shuffle row indices of example_model_solutions.jsonl with
random.Random(20261122); walk the shuffled rows and, for each row, try the four
model keys in a rotating order, taking at most one solution per row, until each
model has WRONG_PER_MODEL is_correct=false and RIGHT_PER_MODEL is_correct=true
solutions.  Solutions whose last line is not an answer line ("A: ...") are
truncated generations and are skipped.

--print START END shows the selected items [START, END) with numbered lines
(0-based over non-empty lines before the answer line), the question and the
gold solution, for hand labelling.
"""
import hashlib
import json
import random
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parents[3] / "shared/data/gsm8k/example_model_solutions.jsonl"
if not DATA.exists():
    DATA = Path("/work/shared/data/gsm8k/example_model_solutions.jsonl")
SEED = 20261122
KEYS = ["6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification"]
WRONG_PER_MODEL = 25
RIGHT_PER_MODEL = 13


def load_rows():
    with open(DATA) as f:
        return [json.loads(line) for line in f]


def steps_and_answer(solution):
    lines = [ln for ln in solution.split("\n") if ln.strip()]
    return lines[:-1], lines[-1]


def sha1(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def select(rows):
    order = list(range(len(rows)))
    random.Random(SEED).shuffle(order)
    quota = {(k, c): (RIGHT_PER_MODEL if c else WRONG_PER_MODEL) for k in KEYS for c in (False, True)}
    picked = []
    for pos, i in enumerate(order):
        for j in range(len(KEYS)):
            k = KEYS[(pos + j) % len(KEYS)]
            sol = rows[i][k]
            if not sol["solution"].split("\n")[-1].startswith("A: "):
                continue
            if quota[(k, sol["is_correct"])] > 0:
                quota[(k, sol["is_correct"])] -= 1
                picked.append((i, k))
                break
        if not any(quota.values()):
            break
    return picked


def main():
    rows = load_rows()
    picked = select(rows)
    if len(sys.argv) >= 4 and sys.argv[1] == "--print":
        a, b = int(sys.argv[2]), int(sys.argv[3])
        for n, (i, k) in enumerate(picked[a:b], start=a):
            r = rows[i]
            sol = r[k]
            steps, ans = steps_and_answer(sol["solution"])
            print(
                f"=== item {n}  row {i}  {k}  is_correct={sol['is_correct']}"
                f"  n_steps={len(steps)}  sha1={sha1(sol['solution'])}"
            )
            print("Q:", r["question"])
            print("GOLD:", r["ground_truth"].replace("\n", " | "))
            for s_i, s in enumerate(steps):
                print(f"  [{s_i}] {s}")
            print(f"  [ANS] {ans}")
            print()
    else:
        for i, k in picked:
            print(i, k, rows[i][k]["is_correct"])


if __name__ == "__main__":
    main()
