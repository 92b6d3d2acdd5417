"""`--config FILE`: a command's settings from a file, in the config dataclasses' own field names.

A file is TOML (`silverbullet.toml`-style, one table per command: `[diagnose]`, `[repair]` with its
`[repair.train]`, `[check]`) or JSON: a run's stored config (`config.json`, `repair_config.json`),
so passing a run's config back reproduces the run. Flags given on the command line win over the file;
the file wins over the defaults. Values are checked against the field types here, so a typo is one
line naming the file and the key, before anything loads.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from silverbullet.errors import UserError
from silverbullet.settings import read_toml

COMMAND_TABLES = ("diagnose", "repair", "check", "locate", "quantize")


def read_settings(path: Path, command: str) -> dict[str, Any]:
    """The settings for `command` in `path`: its table when the file has one, else the whole file
    (a run's JSON config is one flat object). Other commands' tables are left for them."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--config {path} does not exist; pass a TOML file or a run's config.json")
    if path.suffix == ".toml":
        data = read_toml(path)
    else:
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise UserError(f"--config {path}: cannot read it ({e.strerror or e})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise UserError(
                f"--config {path} is not valid JSON ({e}); pass a TOML file or a run's config.json"
            ) from None
    if not isinstance(data, dict):
        raise UserError(f"--config {path}: expected a table of settings, got {type(data).__name__}")
    if isinstance(data.get(command), dict):
        return dict(data[command])
    return {k: v for k, v in data.items() if k not in COMMAND_TABLES}


def _types(annotation: Any) -> tuple[type, ...]:
    """The runtime types a field annotation admits (None included for optional fields)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return tuple(t for a in typing.get_args(annotation) for t in _types(a))
    if annotation is type(None) or annotation is None:
        return (type(None),)
    if origin is not None:
        return (origin,)
    if annotation is float:
        return (float, int)
    return (annotation,) if isinstance(annotation, type) else (object,)


def check_values(cls: type, values: dict[str, Any], path: Path, table: str, ignore: tuple[str, ...] = ()) -> dict:
    """`values` with dashes read as underscores, each a field of the dataclass `cls` of the right type
    (nested dataclasses are tables, checked in turn); `ignore`: keys a stored config carries that are
    derived, not settings. Anything else is one line naming the file, the table and the key."""
    assert is_dataclass(cls)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if not f.name.startswith("_")}
    out: dict[str, Any] = {}
    for raw, value in values.items():
        key = raw.replace("-", "_")
        if key in ignore:
            continue
        where = f"--config {path}: [{table}] {raw}"
        if key not in known:
            raise UserError(f"{where} is not a setting of {table}; known: {', '.join(known)}")
        hint = hints[key]
        if is_dataclass(hint):
            if not isinstance(value, dict):
                raise UserError(f"{where} must be a table of {key} settings")
            out[key] = check_values(hint, value, path, f"{table}.{key}")  # type: ignore[arg-type]
            continue
        allowed = _types(hint)
        if isinstance(value, bool) and bool not in allowed:
            allowed = ()  # True is an int to Python; not to a config
        if value is None and type(None) not in allowed:
            continue  # a stored config's null for a setting that does not apply (fewshot outside fewshot)
        if value is not None and not isinstance(value, allowed):
            names = " or ".join(sorted({t.__name__ for t in allowed if t is not type(None)}))
            raise UserError(f"{where} must be {names}, got {value!r}")
        out[key] = value
    return out
