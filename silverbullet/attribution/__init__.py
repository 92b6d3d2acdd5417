"""Attribution: where a solution first goes wrong, and what kind of error it is.

expr (safe exact arithmetic) -> steps (equations and values per line) -> check (each step's own
arithmetic) -> align (candidate vs reference steps) -> locate (first faulty step + taxonomy type)
-> batch (a JSONL file at a time).
"""

from silverbullet.attribution.locate import locate

__all__ = ["locate"]
