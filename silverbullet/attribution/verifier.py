"""A step verifier: a linear probe on a reader model's hidden state at the end of each step, trained
to say whether the solution has gone wrong by that step.

Why: step surprise (reader.py) sees only tokens the reader would not have written; a wrong step the
reader would have written too goes unseen. The hidden state after a step carries more of what the
reader makes of it, and a probe on it is cheap to train on labels the project makes itself: faults
injected into GSM8K train gold solutions (inject.py, semantic kinds included). The dev sets never
enter training.

Labels for a solution whose first fault is step k: steps before k are right (0), step k is wrong
(1), later steps are left out (they carry the error forward; whether they are "wrong" is not what the
probe is asked). Every step of a clean solution is right. The verifier's first faulty step is the
first whose probability is above the threshold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from silverbullet.errors import UserError

PROBE_FILE, META_FILE = "probe.safetensors", "probe.json"


def step_labels(n_steps: int, first_fault: int | None) -> list[int | None]:
    """0 before the first fault, 1 at it, None (left out) after it; all 0 for a clean solution."""
    if first_fault is None:
        return [0] * n_steps
    return [0 if i < first_fault else 1 if i == first_fault else None for i in range(n_steps)]


@dataclass
class StepProbe:
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray
    bias: float
    threshold: float = 0.5
    meta: dict[str, Any] = field(default_factory=dict)  # reader spec, fingerprint, layer, training figures

    def probs(self, states: np.ndarray) -> np.ndarray:
        """P(this step is the first wrong one | the steps before it were right), per step."""
        if len(states) == 0:
            return np.zeros(0, dtype=np.float32)
        z = ((states - self.mean) / self.scale) @ self.weight + self.bias
        return 1.0 / (1.0 + np.exp(-z))

    def first_faulty(self, states: np.ndarray, threshold: float | None = None) -> int | None:
        t = self.threshold if threshold is None else threshold
        hits = np.nonzero(self.probs(states) > t)[0]
        return int(hits[0]) if len(hits) else None

    def save(self, out: str | Path) -> Path:
        from safetensors.numpy import save_file

        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {
            "mean": self.mean.astype(np.float32),
            "scale": self.scale.astype(np.float32),
            "weight": self.weight.astype(np.float32),
            "bias": np.asarray([self.bias], dtype=np.float32),
        }
        save_file(arrays, str(d / PROBE_FILE))
        (d / META_FILE).write_text(json.dumps({"threshold": self.threshold, **self.meta}, indent=1))
        return d

    @classmethod
    def load(cls, path: str | Path) -> StepProbe:
        """A probe folder written by `save` (safetensors and JSON only: nothing is unpickled)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        d = Path(path)
        if not (d / PROBE_FILE).is_file() or not (d / META_FILE).is_file():
            raise UserError(f"{d}: not a step verifier (needs {PROBE_FILE} and {META_FILE}); train one with "
                            "`silverbullet train-verifier`")  # fmt: skip
        try:
            a = load_file(str(d / PROBE_FILE))
            meta = json.loads((d / META_FILE).read_text())
            probe = cls(a["mean"], a["scale"], a["weight"], float(a["bias"][0]), float(meta.pop("threshold")), meta)
        except (SafetensorError, OSError, ValueError, KeyError, TypeError) as e:
            raise UserError(f"{d}: unreadable step verifier ({type(e).__name__}: {e}); train it again") from None
        if not (probe.mean.shape == probe.scale.shape == probe.weight.shape and probe.weight.ndim == 1):
            raise UserError(f"{d}: step verifier arrays disagree in shape; train it again")
        return probe


def training_matrix(
    states: Sequence[np.ndarray], faults: Sequence[int | None]
) -> tuple[np.ndarray, np.ndarray]:
    """Rows (one per labelled step) and labels from per-solution step states and first faults."""
    xs, ys = [], []
    for st, k in zip(states, faults, strict=True):
        for i, y in enumerate(step_labels(len(st), k)):
            if y is not None:
                xs.append(st[i])
                ys.append(y)
    if not xs:
        raise UserError("no labelled steps to train the step verifier on")
    return np.asarray(xs, dtype=np.float32), np.asarray(ys, dtype=np.float32)


def train_probe(
    states: Sequence[np.ndarray], faults: Sequence[int | None], l2: float = 1e-2, max_iter: int = 200
) -> StepProbe:
    """Class-balanced L2 logistic regression (torch L-BFGS) on standardised step states."""
    import torch

    x, y = training_matrix(states, faults)
    if y.min() == y.max():
        raise UserError("the step verifier needs both right and wrong steps to train on")
    mean, scale = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mean) / scale).double()
    yt = torch.from_numpy(y).double()
    pos = float(yt.mean())
    weights = torch.where(yt > 0, 0.5 / pos, 0.5 / (1 - pos))  # each class counts half
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        z = xt @ w + b
        loss = (weights * torch.nn.functional.binary_cross_entropy_with_logits(z, yt, reduction="none")).mean()
        loss = loss + l2 * (w * w).sum() / 2
        loss.backward()
        return loss

    opt.step(closure)
    probe = StepProbe(mean, scale, w.detach().numpy().astype(np.float32), float(b.detach()[0]))
    pred = probe.probs(x) > 0.5
    probe.meta["training"] = {
        "steps": int(len(y)),
        "wrong_steps": int(y.sum()),
        "solutions": len(states),
        "step_accuracy": round(float((pred == (y > 0.5)).mean()), 4),
        "l2": l2,
    }
    return probe


def injected_examples(problems: Sequence[Any], seed: int = 0) -> list[tuple[str, str, int | None]]:
    """(question, solution as prose, first faulty step) for each problem with a gold solution: the
    clean solution (None), and one injected fault, the kinds in rotation. The fault's step is counted
    the way `locate` counts (segmentation's steps), not by line."""
    import random

    from silverbullet.attribution.inject import SEMANTIC, TYPES, inject, strip_annotations
    from silverbullet.segmentation import segment

    kinds = TYPES + SEMANTIC
    rng = random.Random(seed)
    out: list[tuple[str, str, int | None]] = []
    for i, p in enumerate(problems):
        if not p.solution:
            continue
        out.append((p.question, strip_annotations(p.solution), None))
        for j in range(len(kinds)):  # the problem's kind, or the next one that applies
            got = inject(p.question, p.solution, kinds[(i + j) % len(kinds)], rng)
            if got is not None:
                break
        if got is None:
            continue
        text, line = got
        lines = text.split("\n")
        offset = len(strip_annotations("\n".join(lines[:line]) + ("\n" if line else "")))
        prose = strip_annotations(text)
        spans = segment(prose).spans
        k = next((s for s, (_, b) in enumerate(spans) if b > offset), None)
        if k is not None:
            out.append((p.question, prose, k))
    return out


def first_fault_scores(predicted: Sequence[int | None], truth: Sequence[int | None]) -> dict[str, float]:
    """ProcessBench's figures: exact first step on erroneous solutions, clean ones passed, their F1."""
    err = [(p, t) for p, t in zip(predicted, truth, strict=True) if t is not None]
    clean = [p for p, t in zip(predicted, truth, strict=True) if t is None]
    acc_err = sum(p == t for p, t in err) / len(err) if err else 0.0
    acc_clean = sum(p is None for p in clean) / len(clean) if clean else 0.0
    f1 = 2 * acc_err * acc_clean / (acc_err + acc_clean) if acc_err + acc_clean else 0.0
    return {"exact_erroneous": round(acc_err, 4), "clean_passed": round(acc_clean, 4), "f1": round(f1, 4)}


def train_verifier(reader: Any, problems: Sequence[Any], seed: int = 0, holdout: float = 0.2,
                   progress: Any = None) -> StepProbe:  # fmt: skip
    """Read the injected examples of `problems` with `reader`, train the probe on most problems and
    pick its threshold on the held-out rest (best first-fault F1: training data, never a dev set)."""
    import random

    ids = [p.id for p in problems if p.solution]
    rng = random.Random(seed)
    held = set(rng.sample(ids, max(1, int(len(ids) * holdout)))) if len(ids) > 1 else set()
    train_p = [p for p in problems if p.id not in held]
    held_p = [p for p in problems if p.id in held]
    train_x, held_x = injected_examples(train_p, seed), injected_examples(held_p, seed + 1)
    readings = reader.read([(q, t, None) for q, t, _ in train_x + held_x], progress=progress)
    tr, he = readings[: len(train_x)], readings[len(train_x) :]
    probe = train_probe([r.states for r in tr], [k for _, _, k in train_x])
    best = (0.5, first_fault_scores([probe.first_faulty(r.states, 0.5) for r in he], [k for _, _, k in held_x]))
    if he:
        for t in np.linspace(0.05, 0.95, 19):
            s = first_fault_scores([probe.first_faulty(r.states, float(t)) for r in he], [k for _, _, k in held_x])
            if s["f1"] > best[1]["f1"]:
                best = (round(float(t), 2), s)
    probe.threshold = best[0]
    probe.meta.update(
        reader=reader.spec,
        reader_fingerprint=reader.gen.fingerprint,
        layer=reader.layer,
        gold_in_prompt=False,
        seed=seed,
        examples={"train": len(train_x), "held_out": len(held_x), "problems": len(ids)},
        held_out=best[1],
    )
    return probe
