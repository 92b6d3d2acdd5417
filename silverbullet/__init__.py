"""silverbullet: find where a quantized LLM's math reasoning first breaks, and repair it."""

__version__ = "0.1.0"
