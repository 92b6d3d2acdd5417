"""Peer references: right-answer solutions of the same problem, and the consensus of their verdicts."""

from __future__ import annotations

import importlib

import pytest

from silverbullet.attribution.peers import MAX_PEERS, locate_with_peers, right_peers
from silverbullet.records import Attribution

peers_mod = importlib.import_module("silverbullet.attribution.peers")


def test_right_peers_keeps_right_answers_in_order_and_caps() -> None:
    texts = ["x\nA: 5", "y\nA: 6", "z\nThe answer is 5"] + ["w\nA: 5"] * (MAX_PEERS + 3)
    got = right_peers(texts, "5")
    assert got[:2] == ["x\nA: 5", "z\nThe answer is 5"] and len(got) == MAX_PEERS
    assert right_peers(texts, None) == []


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        ({"a": 2, "b": 2, "c": 0}, 2),  # the majority, although a peer says earlier
        ({"a": 3, "b": 1}, 1),  # a tie goes to the earliest
        ({"a": None, "b": None, "c": 4}, None),  # the answer line wins a majority
        ({"a": None, "b": 4}, 4),  # in a tie the answer line counts as after every step
    ],
)
def test_consensus(monkeypatch: pytest.MonkeyPatch, votes: dict, expected) -> None:
    def fake_locate(question, cand, ref, gold, problem_id=""):
        if ref is None:
            return Attribution(first_faulty_step=0, final_answer_correct=False)
        return Attribution(first_faulty_step=votes[ref], final_answer_correct=False, evidence={"ref": ref})

    monkeypatch.setattr(peers_mod, "locate", fake_locate)
    att = locate_with_peers("q", "cand", list(votes), "1")
    assert att.first_faulty_step == expected
    assert att.evidence["peer_references"] == len(votes)
    assert att.evidence["peers_agreeing"] == sum(v == expected for v in votes.values())


def test_right_answer_or_no_peer_is_plain_locate() -> None:
    q = "Sam has 4 boxes of 6 pens and buys 5 more pens. How many pens does he have?"
    right = "The boxes hold 4 * 6 = <<4*6=24>>24 pens.\nHe then has 24 + 5 = <<24+5=29>>29 pens.\nA: 29"
    assert "peer_references" not in locate_with_peers(q, right, [right], "29").evidence
    wrong = "He has 4 + 6 = <<4+6=10>>10 pens.\nThen 10 + 5 = <<10+5=15>>15 pens.\nA: 15"
    assert "peer_references" not in locate_with_peers(q, wrong, [], "29").evidence
    assert locate_with_peers(q, wrong, [right], "29").evidence["peer_references"] == 1
