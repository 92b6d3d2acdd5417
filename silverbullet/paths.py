"""Where the project's shipped files are, so the embedded defaults work from any directory.

The CLI's model defaults (`data/reference-model`, `data/reference-chat-model`) are paths relative
to the project. Run from another directory, they used to fall through to the hub as repo ids: a
23 s retry loop offline, then an error about the hub. `embedded` maps them to the project's copy
when the working directory has none of its own.
"""

from __future__ import annotations

from pathlib import Path

EMBEDDED_MODELS = ("data/reference-model", "data/reference-chat-model")


def project_root() -> Path:
    """The checkout (or editable install) this package runs from."""
    return Path(__file__).resolve().parents[1]


def embedded(path: str) -> str:
    """`path` itself, unless it is one of the embedded model defaults, absent from the working
    directory and present in the project: then the project's copy (absolute)."""
    if path not in EMBEDDED_MODELS or Path(path).exists():
        return path
    shipped = project_root() / path
    return str(shipped) if shipped.exists() else path
