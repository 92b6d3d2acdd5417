#!/usr/bin/env bash
# `make test`: ruff, the main suite, and the vLLM backend's suite in its own venv.
#
# Why a pipeline: the suites leave about a third of two cores idle (model loads, subprocess starts,
# file writes), so the vLLM venv installs while the main venv does, and the vLLM suite runs beside
# the main suite as soon as both venvs exist (its W4A16 fixture quantizes with the main venv). Its
# output is held back and printed after the main suite's, so the two do not interleave.
# Exit status: non-zero if the setup, ruff or either suite failed.
set -uo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
VLLM_VENV="${VLLM_VENV:-.venv-vllm}"
MAKE="${MAKE:-make}"
log="$(mktemp -t silverbullet-vllm-suite.XXXXXX)"
trap 'rm -f "$log" "$log".*' EXIT

(
    "$MAKE" -s "$VLLM_VENV/.installed" VLLM_VENV="$VLLM_VENV" 2>&1 | grep -v "is ignored: it is neither"
    test -f "$VLLM_VENV/.installed" || { echo "the vLLM venv did not install (above)"; exit 1; }
    while [ ! -e "$log.go" ] && [ ! -e "$log.stop" ]; do sleep 1; done
    [ -e "$log.go" ] || exit 1
    SILVERBULLET_MAIN_VENV="$VENV" "$VLLM_VENV/bin/python" -m pytest -q -m vllm --durations=10
) >"$log" 2>&1 &
vllm_pid=$!

stop() { touch "$log.stop"; wait "$vllm_pid"; cat "$log"; exit 1; }
"$MAKE" -s "$VENV/.installed-dev" VENV="$VENV" || stop
"$VENV/bin/ruff" check silverbullet tests bench || stop
touch "$log.go"

"$VENV/bin/python" -m pytest -q -m "not vllm" --durations=15
main_rc=$?
wait "$vllm_pid"
vllm_rc=$?
echo "--- vLLM backend suite ($VLLM_VENV): its setup and tests, run beside the main suite ---"
cat "$log"
[ "$main_rc" -eq 0 ] && [ "$vllm_rc" -eq 0 ]
