"""Reading and writing a run's files: JSONL appended chunk by chunk with an fsync (a killed run loses
at most the chunk in flight and resumes), whole files replaced atomically (never half a file), and a
torn last line, the mark of a kill mid-write, dropped on reading."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from silverbullet.errors import UserError


def read_jsonl_rows(path: Path) -> list[dict]:
    """Rows of a run file; a torn (half-written) last line from a killed run is dropped."""
    if not path.exists():
        return []
    rows = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i >= len(lines) - 2:  # the last line: a write interrupted by a kill
                break
            raise UserError(
                f"{path}:{i + 1}: malformed JSON ({e.msg}) in the middle of a run file (edited by hand?); "
                "fix or delete that line (its problem is then regenerated), or start a new --out"
            ) from None
        if not isinstance(rows[-1], dict):
            raise UserError(f"{path}:{i + 1}: not a JSON object; fix or delete that line, or start a new --out")
    return rows


def repair_torn_tail(path: Path) -> None:
    """Cut a half-written last line so appends start on a clean line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as f:
            f.truncate(cut)


def write_rows(path: Path, rows: list[dict]) -> None:
    """Write a whole JSONL file atomically (a temporary file renamed over it): never half a file."""
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows and fsync: what is on disk when this returns survives a kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    """Replace a file with `text` through a synced temporary file beside it: readers see the old file
    or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
