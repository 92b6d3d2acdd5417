"""The names of a run directory's files, in one place (docs/run-format.md describes each)."""

from __future__ import annotations

from pathlib import Path

CONFIG = "config.json"  # the run's settings; its identity decides whether a rerun resumes
PROBLEMS = "problems.jsonl"
GENERATIONS = "generations"  # generations/<tag>.jsonl: reference, quantized, repaired, merged, checked
ATTRIBUTION = "attribution.jsonl"
SUMMARY = "summary.json"
REPAIR_SUMMARY = "repair_summary.json"
REPAIR_CONFIG = "repair_config.json"  # the repair's settings as given (`repair --config` takes it back)
SENSITIVITY = "sensitivity.json"
SFT_SET, DPO_SET, GRPO_SET = "silverbullet_sft.jsonl", "silverbullet_dpo.jsonl", "silverbullet_grpo.jsonl"
ADAPTER = "adapter"
TRAIN_LOG = "train_log.jsonl"
REPAIR_SPLIT = "repair-split"  # the repair's own diagnose run on the repair split
EVAL_SPLIT = "eval-split"  # the repair's diagnose run on the evaluation split (without --from)


def generations_file(run: Path, tag: str) -> Path:
    """generations/<tag>.jsonl of a run."""
    return Path(run) / GENERATIONS / f"{tag}.jsonl"


def has_results(run: Path) -> bool:
    """Whether a run directory holds any generated or attributed rows yet."""
    run = Path(run)
    files = [*run.glob(f"{GENERATIONS}/*.jsonl"), *run.glob(ATTRIBUTION)]
    return any(f.stat().st_size for f in files)
