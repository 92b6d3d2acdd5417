"""silverbullet: find where a quantized LLM's math reasoning first breaks, and repair it."""

__version__ = "0.1.0"

_RESULTS = ("open_run", "compare_runs", "export_run")


def __getattr__(name: str):
    """`silverbullet.open_run` etc. import pandas only when first used, so `import silverbullet` stays cheap."""
    if name in _RESULTS:
        from silverbullet import results

        return getattr(results, name)
    raise AttributeError(f"module 'silverbullet' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_RESULTS])
