"""Restore: Silver Bullet datasets, a short LoRA pass on the quantized model, re-measurement."""
