# The two quick-start commands: `make search` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv search test lint typecheck check bench clean mutate

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

# mypy --strict over the whole package (pyproject.toml).
typecheck: $(STAMP)
	$(VENV)/bin/mypy tune_mtl

# What .ci/run runs: lint, types, then the whole suite.
check: lint typecheck test

bench: $(STAMP)
	$(PY) bench/step_cost.py

# Mutation testing of the strategies' core computations (files and tests: [tool.mutmut] in pyproject.toml);
# the score and the survivors judged harmless are in TESTING.md. Long: about an hour on 2 cores.
mutate: $(STAMP)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[mutation]'
	$(VENV)/bin/mutmut run --max-children $${MUTATE_JOBS:-2}
	$(VENV)/bin/mutmut results --all true > mutation-results.txt; tail -n 40 mutation-results.txt

clean:
	rm -rf $(VENV) runs .pytest_cache mutants mutation-results.txt
