"""Symbolic checker on real LaTeX solutions (minerva_math 272, aime24 30) with injected errors.

    python bench/symbolic_injected.py [--variants 6] [--per-solution 30] [--out bench/results/symbolic_injected.json]

Steps: each solution is split here, simply: display blocks (\\[..\\], $$..$$, \\begin..\\end) are one
step each; prose between them is split at line breaks and at sentence ends outside inline math. An
AIME24 row joins several authors' solutions; each (cut at author signature lines and 'Solution N'
headings) is a solution of its own, since later ones reuse the same letters.

The headline ('verified_sites') enumerates every verified site and every type that applies there,
with up to `--variants` distinct mutations each, so every site weighs the same; it also reports
the distinct sites and the mean exact rate per site. 'verified_sites_draws' and 'any_site' keep the
earlier sampling: `--per-solution` random draws per solution, types in rotation.

Injections go into an equality link of one step, in the part
after '=' (the claimed side): wrong coefficient (a number before a variable or bracket changes),
sign flip (a binary +/- flips), dropped term (one top-level term removed), wrong root (`name =
number` gets another number), arithmetic slip (the number of a numeric claim changes). Later steps
are left as they were: the first fault is the injected step. Sites are links that the checker
verified valid in the gold text (a derivation, not a definition that any value satisfies); the
'any site' figure injects into any parseable link instead and is shown beside it.

Scored through `locate` (our lines joined one per line; gold answer given): exact first-fault
position in the project segmenter's steps (what `locate` indexes): the located step must be the one
holding the first changed character. An injection into the `\\boxed{}` answer makes the final answer
wrong, and then locate also runs its wrong-answer checks (unsupported operand, end of solution), as
on a model's solution. False alarms: untouched gold solutions through the same path, share of our
lines flagged. Coverage (share of our lines, and of those with an equality, that the checker calls
valid or faulty rather than unknown) and speed (CPU time per `SolutionChecker.check` call) are
measured on our lines.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _meta import run_meta  # noqa: E402

from silverbullet.attribution import latex  # noqa: E402
from silverbullet.attribution.locate import locate  # noqa: E402
from silverbullet.attribution.symbolic import FAULTY, UNKNOWN, VALID, SolutionChecker, get_pool  # noqa: E402
from silverbullet.prompting import parse_solution, step_spans  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
TYPES = ("wrong_coefficient", "sign_flip", "dropped_term", "wrong_root", "arithmetic_slip")
_DISPLAY_RE = re.compile(r"\$\$.+?\$\$|\\\[.+?\\\]|\\begin\{([a-z]+\*?)\}.+?\\end\{\1\}", re.S)
_SENT_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\])")
_AIME_CUT_RE = re.compile(r"\n\s*(?:~|-)\s*[A-Za-z][\w .]*(?:\n|$)|\n\s*=*\s*Solution\s*\d", re.S)


def split_steps(text: str) -> list[str]:
    """Display blocks are one step each; prose splits at line breaks and sentence ends."""
    out: list[str] = []
    pos = 0

    def prose(s: str) -> None:
        for line in s.split("\n"):
            buf = []
            for piece in _SENT_RE.split(line):
                buf.append(piece)
                if piece.count("$") % 2 == 0 and "".join(buf).count("$") % 2 == 0:
                    if "".join(buf).strip():
                        out.append(" ".join(b.strip() for b in buf))
                    buf = []
            if buf and "".join(buf).strip():
                out.append(" ".join(b.strip() for b in buf))

    for m in _DISPLAY_RE.finditer(text):
        prose(text[pos : m.start()])
        out.append(re.sub(r"\s*\n\s*", " ", m.group(0)))
        pos = m.end()
    prose(text[pos:])
    return [s for s in out if s.strip()]


def load(all_aime: bool = True) -> list[dict]:
    rows = []
    for line in (DATA / "minerva_math" / "test.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.append(
            {
                "id": f"minerva-{r['idx']}",
                "question": r["problem"],
                "solution": r["solution"],
                "answer": parse_solution(r["solution"]).answer,
            }
        )  # the \\boxed{} answer
    for line in (DATA / "aime24" / "test.jsonl").read_text().splitlines():
        r = json.loads(line)
        parts = [p for p in _AIME_CUT_RE.split(r["solution"]) if p and len(p.strip()) >= 80]
        for k, sol in enumerate(parts if all_aime else parts[:1]):
            rows.append({"id": f"aime24-{r['id']}" + (f".{k}" if k else ""), "question": r["problem"],
                         "solution": sol, "answer": str(r["answer"])})  # fmt: skip
    for r in rows:
        r["steps"] = split_steps(r["solution"])
    return rows


# --------------------------------------------------------------------------- injections

_NUM_RE = re.compile(r"(?<![\d.^_{])(\d+(?:\.\d+)?)(?![\d.])")


def _bump(num: str, rng: random.Random) -> str:
    v = Fraction(num)
    d = rng.choice([1, 2, 3]) if "." not in num else Fraction(1, 10 ** len(num.split(".")[1])) * rng.choice([3, 7])
    new = v + d if rng.random() < 0.5 or v - d <= 0 else v - d
    if "." in num:
        return f"{float(new):.{len(num.split('.')[1])}f}"
    return str(new)


def _mutate(part: str, etype: str, rng: random.Random) -> str | None:
    """A changed copy of one side of an equality, or None when the type does not apply."""
    if etype == "wrong_coefficient":
        sites = [m for m in _NUM_RE.finditer(part) if re.match(r"\s*(?:[A-Za-z(]|\\(?:frac|sqrt|pi|left))",
                                                              part[m.end():])]  # fmt: skip
    elif etype in ("arithmetic_slip", "wrong_root"):
        sites = list(_NUM_RE.finditer(part))
    elif etype == "sign_flip":
        depth, sites_i = 0, []
        for i, ch in enumerate(part):
            depth += ch in "({[" and 1 or 0
            depth -= ch in ")}]" and 1 or 0
            if ch in "+-" and depth == 0 and part[:i].strip() and part[:i].rstrip()[-1] not in "^_(=+-{":
                sites_i.append(i)
        if not sites_i:
            return None
        i = rng.choice(sites_i)
        return part[:i] + ("-" if part[i] == "+" else "+") + part[i + 1 :]
    elif etype == "dropped_term":
        depth, cuts = 0, []
        for i, ch in enumerate(part):
            depth += ch in "({[" and 1 or 0
            depth -= ch in ")}]" and 1 or 0
            if ch in "+-" and depth == 0 and part[:i].strip() and part[:i].rstrip()[-1] not in "^_(=+-{":
                cuts.append(i)
        if not cuts:
            return None
        k = rng.randrange(len(cuts))
        end = cuts[k + 1] if k + 1 < len(cuts) else len(part)
        return part[: cuts[k]] + part[end:]
    else:
        return None
    if not sites:
        return None
    m = rng.choice(sites)
    return part[: m.start()] + _bump(m.group(1), rng) + part[m.end() :]


def _applies(etype: str, lhs: tuple, rhs: tuple) -> bool:
    if etype == "wrong_root":
        return lhs[0] == "name" and rhs[0] in ("num", "neg")
    if etype == "arithmetic_slip":
        return not latex.names(lhs) and not latex.names(rhs)
    return True


def sites(steps: list[str], verified_only: bool) -> list[tuple[int, str, str]]:
    """(step, original formula text of the claimed side, its relation) for each checkable link."""
    checker = SolutionChecker()
    out = []
    for i, s in enumerate(steps):
        res = checker.check(s)
        valid_eqs = {c.equation for c in res.links if c.status == VALID}
        for rel in latex.relations(s):
            for j, r in enumerate(rel.rels):
                if r != latex.REL_EQ:
                    continue
                a, b = rel.parts[j], rel.parts[j + 1]
                eq = f"{a.strip()} = {b.strip()}"[:300]
                if verified_only and eq not in valid_eqs:
                    continue
                pa, pb = latex.parse(a), latex.parse(b)
                if pa.node is not None and pb.node is not None and b.strip() and s.count(b) == 1:
                    out.append((i, a, b))
    return out


def inject(row: dict, etype: str, rng: random.Random, verified_only: bool) -> tuple[list[str], int] | None:
    cands = []
    for i, a, b in sites(row["steps"], verified_only):
        pa, pb = latex.parse(a), latex.parse(b)
        if not _applies(etype, pa.node, pb.node):  # type: ignore[arg-type]
            continue
        cands.append((i, b))
    rng.shuffle(cands)
    for i, b in cands:
        new = _mutate(b, etype, rng)
        if new is None or new.strip() == b.strip():
            continue
        pn = latex.parse(new)
        if pn.node is None:
            continue
        steps = list(row["steps"])
        steps[i] = steps[i].replace(b, new, 1)
        return steps, i
    return None


def enumerate_injections(row: dict, variants: int, seed: int) -> list[tuple[str, int, list[str], int]]:
    """Every (verified site, type) with up to `variants` distinct mutations each: (type, site number,
    steps, step). Each site then weighs the same whatever its solution holds; random draws per solution
    put all of a solution's draws into its one site when it has one."""
    out = []
    for k, (i, a, b) in enumerate(sites(row["steps"], True)):
        pa, pb = latex.parse(a), latex.parse(b)
        for etype in TYPES:
            if not _applies(etype, pa.node, pb.node):  # type: ignore[arg-type]
                continue
            rng = random.Random(f"{seed}:{row['id']}:{k}:{etype}")
            seen: set[str] = set()
            for _ in range(8 * variants):
                new = _mutate(b, etype, rng)
                if new is None or new.strip() == b.strip() or new in seen or latex.parse(new).node is None:
                    continue
                seen.add(new)
                steps = list(row["steps"])
                steps[i] = steps[i].replace(b, new, 1)
                out.append((etype, k, steps, i))
                if len(seen) >= variants:
                    break
    return out


# --------------------------------------------------------------------------- scoring


def _joined(steps: list[str]) -> str:
    return "\n".join(s.replace("\n", " ") for s in steps)


def first_fault(row: dict, steps: list[str]) -> tuple[int | None, int | None]:
    """(located step, injected step), both as indices of the project segmenter's steps (what
    `locate` indexes): the injected step is the one holding the first character the injection
    changed (None for the gold text). The segmenter may cut one of our lines into sentences or
    rows, or join an introducing line ('... is given by:') to the display block after it; scoring
    by our line instead (where the located step starts) counts such a join as an early fault."""
    text, gold_text = _joined(steps), _joined(row["steps"])
    # the gold answer as parse_solution reads it from the same lines: the bench scores step checks,
    # not answer extraction (an injection into the \boxed{} answer makes the answer wrong, and then
    # locate runs its wrong-answer checks too, as it would on a model's solution)
    gold = parse_solution(gold_text).answer
    att = locate(row["question"], text, gold_answer=gold)
    spans = step_spans(text)
    at = next((i for i, (a, b) in enumerate(zip(text, gold_text, strict=False)) if a != b), None)
    if at is None and len(text) != len(gold_text):
        at = min(len(text), len(gold_text))
    true_k = None if at is None else next((i for i, (a, b) in enumerate(spans) if a <= at < b), None)
    return att.first_faulty_step, true_k


def _tally(per_type: dict[str, Counter]) -> dict:
    tot: Counter = Counter()
    for c in per_type.values():
        tot.update(c)
    return {
        "injections": tot["n"],
        "exact": tot["exact"],
        "exact_rate": round(tot["exact"] / max(1, tot["n"]), 4),
        "missed": tot["missed"],
        "early": tot["early"],
        "late": tot["late"],
        "by_type": {t: {**dict(c), "exact_rate": round(c["exact"] / max(1, c["n"]), 4)} for t, c in per_type.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-solution", type=int, default=30)
    ap.add_argument("--variants", type=int, default=6, help="distinct mutations per verified site and type")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "symbolic_injected.json"))
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.time()
    get_pool().call("ping")
    rows = load()
    # gold: false alarms, coverage, speed
    step_times: list[float] = []
    n_steps = n_eq_steps = covered = flagged_steps = flagged_solutions = 0
    status_counts: Counter = Counter()
    for row in rows:
        checker = SolutionChecker()
        for s in row["steps"]:
            c0 = time.process_time()
            res = checker.check(s)
            step_times.append(time.process_time() - c0)
            n_steps += 1
            status_counts[res.status] += 1
            if res.links:
                n_eq_steps += 1
                covered += res.status in (VALID, FAULTY)
        ff, _ = first_fault(row, row["steps"])
        if ff is not None:
            flagged_solutions += 1
            flagged_steps += 1
            row["gold_flag"] = ff
    # injections
    results: dict[str, dict] = {}
    per_type = {t: Counter() for t in TYPES}
    distinct: set = set()
    per_site: dict = {}  # (solution, site) -> [exact, injections]
    for row in rows:
        if row.get("gold_flag") is not None:
            continue
        for etype, k, steps, _line in enumerate_injections(row, args.variants, args.seed):
            ff, pos = first_fault(row, steps)
            if pos is None:
                per_type[etype]["outside_steps"] += 1
                continue
            distinct.add((row["id"], k))
            site = per_site.setdefault((row["id"], k), [0, 0])
            site[0] += ff == pos
            site[1] += 1
            per_type[etype]["n"] += 1
            per_type[etype]["exact"] += ff == pos
            per_type[etype]["missed"] += ff is None
            per_type[etype]["early"] += ff is not None and ff < pos
            per_type[etype]["late"] += ff is not None and ff > pos
    results["verified_sites"] = _tally(per_type)
    results["verified_sites"]["distinct_sites"] = len(distinct)
    # site-level: each site once, whatever its number of mutations (sites repeat; injections are not independent)
    results["verified_sites"]["site_mean_exact_rate"] = round(
        sum(e / n for e, n in per_site.values()) / max(1, len(per_site)), 4
    )
    results["verified_sites"]["sites_all_exact"] = sum(e == n for e, n in per_site.values())
    results["verified_sites"]["sampling"] = f"every verified site x applicable type, up to {args.variants} " \
        "distinct mutations each"  # fmt: skip
    for mode, verified in (("verified_sites_draws", True), ("any_site", False)):
        per_type: dict[str, Counter] = {t: Counter() for t in TYPES}
        for row in rows:
            if row.get("gold_flag") is not None:
                continue  # a gold false alarm would be scored as a miss for a reason that is not the injection
            for k in range(args.per_solution):
                etype = TYPES[k % len(TYPES)]
                got = inject(row, etype, rng, verified)
                if got is None:
                    per_type[etype]["no_site"] += 1
                    continue
                steps, _line = got
                ff, pos = first_fault(row, steps)
                if pos is None:  # the change is in text the segmenter gives no step (answer line)
                    per_type[etype]["outside_steps"] += 1
                    continue
                per_type[etype]["n"] += 1
                per_type[etype]["exact"] += ff == pos
                per_type[etype]["missed"] += ff is None
                per_type[etype]["early"] += ff is not None and ff < pos
                per_type[etype]["late"] += ff is not None and ff > pos
        results[mode] = _tally(per_type)
        results[mode]["sampling"] = f"{args.per_solution} random draws per solution, types in rotation"
    step_times.sort()
    p = lambda q: round(step_times[min(len(step_times) - 1, int(q * len(step_times)))] * 1000, 3)  # noqa: E731
    summary = {
        "solutions": len(rows),
        "steps": n_steps,
        "steps_with_equalities": n_eq_steps,
        "gold_step_status": dict(status_counts),
        "coverage_all_steps": round((status_counts[VALID] + status_counts[FAULTY]) / max(1, n_steps), 4),
        "coverage_steps_with_equalities": round(covered / max(1, n_eq_steps), 4),
        "gold_false_alarm_steps": flagged_steps,
        "gold_false_alarm_rate_steps": round(flagged_steps / max(1, n_steps), 4),
        "gold_solutions_flagged": flagged_solutions,
        "injected": results,
        "step_ms": {"p50": p(0.5), "p90": p(0.9), "p99": p(0.99), "max": round(step_times[-1] * 1000, 3)},
        "worker_kills": get_pool().kills,
        "unknown_steps": status_counts[UNKNOWN],
        "wall_s": round(time.time() - t0, 1),
        "step_split": "display blocks one step each; prose at line breaks and sentence ends; AIME: first solution",
        "scoring": "located vs injected step, both in the project segmenter's steps (locate's index)",
        "meta": run_meta(),
    }
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{'':22} {'n':>5} {'exact':>7} {'missed':>7} {'early':>6} {'late':>5}")
    v = results["verified_sites"]
    print(f"verified sites: {v['distinct_sites']} distinct, {v['sites_all_exact']} with every injection exact, "
          f"mean exact rate per site {v['site_mean_exact_rate']:.1%}")  # fmt: skip
    for mode, r in results.items():
        print(f"{mode:22} {r['injections']:5d} {r['exact_rate']:7.1%} {r['missed']:7d} {r['early']:6d} {r['late']:5d}")
        for t, c in r["by_type"].items():
            print(f"  {t:20} {c.get('n', 0):5d} {c['exact_rate']:7.1%} {c.get('missed', 0):7d} "
                  f"{c.get('early', 0):6d} {c.get('late', 0):5d}")  # fmt: skip
    print(f"gold: {n_steps} steps, false alarms {flagged_steps} ({summary['gold_false_alarm_rate_steps']:.2%} of "
          f"steps), coverage {summary['coverage_all_steps']:.1%} of all steps, "
          f"{summary['coverage_steps_with_equalities']:.1%} of steps with equalities")  # fmt: skip
    print(f"per step ms: {summary['step_ms']}, worker kills {summary['worker_kills']}, wall {summary['wall_s']} s")


if __name__ == "__main__":
    main()
