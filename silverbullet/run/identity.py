"""A run directory's identity: the settings that decide its results. A resumed run must be the same
run; a directory holding results of other settings is refused in one line, before any work."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError
from silverbullet.run.files import CONFIG, has_results
from silverbullet.run.jsonl import write_text_atomic


def prepare_run_dir(out: Path, identity: dict[str, Any], record: dict[str, Any]) -> None:
    """Create or reuse `out`: refused if its config.json names other `identity` values and it already
    holds results (a directory with none, left by a run that failed on a typo, is reused); then
    `record` (the whole config, identity included) is written as config.json."""
    cfg_path = out / CONFIG
    if cfg_path.exists():
        try:
            old = json.loads(cfg_path.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{cfg_path} is not valid JSON ({e}); delete the run directory or use --out") from e
        diff = [k for k in identity if k in old and old[k] != identity[k]]
        if diff and has_results(out):
            k = diff[0]
            raise UserError(
                f"{out} holds a run made with another config ({k}: {old[k]!r} there, {identity[k]!r} now); "
                f"use --out with a new directory, or delete {out}"
            )
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(cfg_path, json.dumps(record, indent=1))
