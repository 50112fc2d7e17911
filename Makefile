# The two quick-start commands: `make search` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv search test bench clean

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

bench: $(STAMP)
	$(PY) bench/step_cost.py

clean:
	rm -rf $(VENV) runs .pytest_cache
