"""Reproducible selection of rows for the GSM8K first-fault dev set.

Usage:  python3 data/devsets/select_dev.py [--phase 1|2|all] [--print START END] [--second-pass]

Selection: shuffle row indices of example_model_solutions.jsonl with
random.Random(20261122); walk the shuffled rows and, for each row, try the four
model keys in a rotating order, taking at most one solution per row, until each
model has WRONG_PER_MODEL is_correct=false and RIGHT_PER_MODEL is_correct=true
solutions.  Solutions whose last line is not an answer line ("A: ...") are
truncated generations and are skipped.

Phase 2 (issue 21, grown to 400): the same walk over the rows phase 1 did not use,
shuffled with SEED_2, with quotas WRONG_2 / RIGHT_2 per model (248 more solutions).
`--phase all` lists phase 1 then phase 2 (items 0-151, 152-399).

--print START END shows the selected items [START, END) of the chosen phase with
numbered lines (0-based over non-empty lines before the answer line), the question
and the gold solution, for hand labelling.

--second-pass prints the 100 items of the independent second labelling pass: every
4th item of `--phase all` (items 0, 4, ..., 396), for measuring label agreement.
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
SEED_2 = 20261124
WRONG_2 = 41
RIGHT_2 = 21


def load_rows():
    with open(DATA) as f:
        return [json.loads(line) for line in f]


def steps_and_answer(solution):
    lines = [ln for ln in solution.split("\n") if ln.strip()]
    return lines[:-1], lines[-1]


def sha1(text):
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def select(rows, seed=SEED, wrong=WRONG_PER_MODEL, right=RIGHT_PER_MODEL, exclude=()):
    order = [i for i in range(len(rows))]
    random.Random(seed).shuffle(order)
    order = [i for i in order if i not in set(exclude)]
    quota = {(k, c): (right if c else wrong) for k in KEYS for c in (False, True)}
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


def selected(rows, phase="1"):
    first = select(rows)
    if phase == "1":
        return first
    second = select(rows, SEED_2, WRONG_2, RIGHT_2, exclude=[i for i, _ in first])
    return second if phase == "2" else first + second


def main():
    args = sys.argv[1:]
    phase = "1"
    if "--phase" in args:
        j = args.index("--phase")
        phase = args[j + 1]
        del args[j : j + 2]
    rows = load_rows()
    picked = selected(rows, phase)
    items = list(enumerate(picked))
    if args[:1] == ["--second-pass"]:
        picked = selected(rows, "all")
        items = [(n, picked[n]) for n in range(0, len(picked), 4)]
        args = ["--print", "0", str(len(picked))]
    if len(args) >= 3 and args[0] == "--print":
        a, b = int(args[1]), int(args[2])
        for n, (i, k) in [(n, ik) for n, ik in items if a <= n < b]:
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
