"""Thresholds for `silverbullet check`, from flags, `silverbullet.toml` or `[tool.silverbullet.check]`.

Precedence (highest first): CLI flags > `--config PATH` or `./silverbullet.toml` (its `[check]`
table) > `[tool.silverbullet.check]` in `./pyproject.toml` > defaults. Each resolved value remembers
where it came from, so the check table can say why a threshold applies.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 only
    import tomli as tomllib

# Fractions (0..1) vs points (0..100): validated differently so "5" for a rate is caught, not ignored.
FRACTION_KEYS = ("max_flip_rate", "max_execution_share", "max_method_share", "max_unfinished_thinking")
RATIO_KEYS = ("max_thinking_ratio",)
POINT_KEYS = ("max_accuracy_drop", "baseline_tolerance")


@dataclass
class CheckThresholds:
    """What a release must satisfy. None means "not checked" (the row is reported as skip).

    Only `baseline_tolerance` has a default: a drop vs the baseline fails only when the whole 95%
    interval of the drop lies above 1 point, i.e. it is both real (beyond sampling noise) and big
    enough to matter. Absolute limits (accuracy drop, flip rate, shares, margin) depend on the model
    and benchmark, so we do not guess them.
    """

    max_accuracy_drop: float | None = None  # points: (reference - quantized accuracy) * 100
    max_flip_rate: float | None = None  # fraction of problems the reference solves and the quantized fails
    max_execution_share: float | None = None  # share of typed quantized faults that are execution errors
    max_method_share: float | None = None  # share of typed quantized faults that are method errors
    min_frontier_margin: float | None = None  # mean top-1 minus top-2 log-prob on the faulty lines
    max_unfinished_thinking: float | None = None  # share of problems whose quantized trace never closed
    max_thinking_ratio: float | None = None  # quantized mean trace length / the reference's
    baseline_tolerance: float = 1.0  # points of quantized accuracy we accept losing vs the baseline
    sources: dict[str, str] = field(default_factory=dict, compare=False)  # key -> where it came from

    def source(self, key: str) -> str:
        return self.sources.get(key, "default")


KEYS = tuple(f.name for f in fields(CheckThresholds) if f.name != "sources")


def _validate(key: str, value: Any, origin: str) -> float:
    """`origin` prefixes the message: "FILE [table]: key" for files, the flag name for the CLI."""
    where = f"{origin}: {key}" if origin else "--" + key.replace("_", "-")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{where} must be a number, got {value!r}")
    value = float(value)
    if key in FRACTION_KEYS and not 0.0 <= value <= 1.0:
        hint = f"; did you mean {value / 100:g}?" if 1.0 < value <= 100.0 else ""
        raise UserError(f"{where} is a fraction between 0 and 1, got {value:g}{hint}")
    if key in RATIO_KEYS and value <= 0:
        raise UserError(f"{where} is a ratio of mean trace lengths (1.5: half as long again), got {value:g}")
    if key in POINT_KEYS and value < 0:
        raise UserError(f"{where} is in accuracy points and cannot be negative, got {value:g}")
    return value


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise UserError(f"cannot read config {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{path} is not valid TOML ({e}); fix the file or pass --config with another one") from None


def _table(path: Path, data: dict[str, Any], keys: tuple[str, ...]) -> dict[str, float]:
    """The check table at `keys` (e.g. tool.silverbullet.check), validated; {} when absent."""
    where = ".".join(keys)
    node: Any = data
    for k in keys:
        if not isinstance(node, dict) or k not in node:
            return {}
        node = node[k]
    if not isinstance(node, dict):
        raise UserError(f"{path}: [{where}] must be a table of thresholds")
    out = {}
    for raw_key, value in node.items():
        key = raw_key.replace("-", "_")
        if key not in KEYS:
            raise UserError(f"{path}: unknown key {raw_key!r} in [{where}]; known keys: {', '.join(KEYS)}")
        out[key] = _validate(key, value, f"{path} [{where}]")
    return out


def load_file_thresholds(config: Path | None = None, cwd: Path | None = None) -> list[tuple[str, dict[str, float]]]:
    """Config layers, lowest precedence first: (source name, values)."""
    cwd = cwd or Path.cwd()
    layers: list[tuple[str, dict[str, float]]] = []
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        layers.append(("pyproject.toml", _table(pyproject, read_toml(pyproject), ("tool", "silverbullet", "check"))))
    if config is not None:
        if not Path(config).is_file():
            raise UserError(f"config file {config} does not exist; check the --config path")
        path = Path(config)
    else:
        path = cwd / "silverbullet.toml"
    if path.is_file():
        data = read_toml(path)
        # silverbullet.toml uses [check]; a pyproject-style [tool.silverbullet.check] is accepted too.
        values = _table(path, data, ("check",)) or _table(path, data, ("tool", "silverbullet", "check"))
        layers.append((path.name if config is None else str(path), values))
    return layers


def resolve_thresholds(
    overrides: dict[str, float | None] | None = None, config: Path | None = None, cwd: Path | None = None
) -> CheckThresholds:
    """Merge defaults < pyproject.toml < silverbullet.toml/--config < CLI flags (None = flag not given)."""
    t = CheckThresholds()
    for source, values in load_file_thresholds(config, cwd):
        for key, value in values.items():
            setattr(t, key, value)
            t.sources[key] = source
    for key, value in (overrides or {}).items():
        if key not in KEYS:
            raise UserError(f"unknown threshold {key!r}; known: {', '.join(KEYS)}")
        if value is None:
            continue
        setattr(t, key, _validate(key, value, ""))
        t.sources[key] = "cli"
    return t
