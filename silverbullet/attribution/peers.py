"""Peer references: right-answer solutions of the same problem stand in for a missing reference.

Files of generations often hold several solutions per problem (sampling repeats, several models or
checkpoints in one lm-eval dump), with the gold answer but no gold solution text. Without a reference
the locator has only local checks and a prior for a wrong answer (docs/taxonomy.md). A solution of
the same problem that reaches the gold answer is a reference: its dataflow is a route to the answer.
Each right-answer peer is used in turn and the position most of them give wins (ties to the earliest):
one peer may take a route the candidate's valid steps leave, the others rarely all do.
On the GSM8K dev set this is the `dev_set_peers` setting of bench/real_errors.py.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from silverbullet.attribution.locate import locate
from silverbullet.grading import is_correct
from silverbullet.records import Attribution
from silverbullet.segmentation import segment

MAX_PEERS = 8  # a consensus of 8 is as good as of more; each peer costs one locate


def right_peers(candidates: Sequence[str], gold_answer: str | None) -> list[str]:
    """The solutions among `candidates` whose final answer is the gold answer (at most MAX_PEERS, in
    the given order)."""
    if gold_answer is None:
        return []
    out: list[str] = []
    for text in candidates:
        if is_correct(segment(text).answer, gold_answer):
            out.append(text)
            if len(out) == MAX_PEERS:
                break
    return out


def locate_with_peers(
    question: str,
    candidate_text: str,
    peers: Sequence[str],
    gold_answer: str | None,
    problem_id: str = "",
) -> Attribution:
    """`locate` against each right-answer peer (`right_peers`), the consensus position kept.
    With no peers, or a right answer (only local checks fire then), it is plain `locate`."""
    plain = locate(question, candidate_text, None, gold_answer, problem_id=problem_id)
    if not peers or plain.final_answer_correct is not False:
        return plain
    runs = [locate(question, candidate_text, p, gold_answer, problem_id=problem_id) for p in peers[:MAX_PEERS]]
    votes = Counter(a.first_faulty_step for a in runs)
    top = max(votes.values())
    # the earliest of the most-voted positions; None (the answer line) counts as after every step
    best = min((pos for pos, n in votes.items() if n == top), key=lambda p: (p is None, p or 0))
    chosen = next(a for a in runs if a.first_faulty_step == best)
    chosen.evidence["peer_references"] = len(runs)
    chosen.evidence["peers_agreeing"] = top
    return chosen
