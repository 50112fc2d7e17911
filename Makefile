# The two quick-start commands: `make search` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv search test lint typecheck check bench clean

venv: $(STAMP)

# Every version comes from constraints.txt; torch/torchvision install from the machine's local wheels.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade-strategy only-if-needed -c constraints.txt -e '.[test]'
	@touch $(STAMP)

search: $(STAMP)
	$(PY) launch.py $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check tune_mtl tests bench docs launch.py

# Strict on the layers' contracts (core, training, storage: see pyproject.toml), standard elsewhere.
typecheck: $(STAMP)
	$(VENV)/bin/mypy tune_mtl

# What .ci/run runs: lint, types, then the whole suite.
check: lint typecheck test

bench: $(STAMP)
	$(PY) bench/step_cost.py

clean:
	rm -rf $(VENV) runs .pytest_cache
