# Two commands (see README): `make test` and `make demo`. Both create .venv when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; pinned first so that pip never pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: test demo venv lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $@

$(VENV)/.installed-demo: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e .
	touch $@

venv: $(VENV)/.installed-test

test: $(VENV)/.installed-test
	$(BIN)/python -m ruff check rs3l_coffea processors tests benchmarks analysis_examples
	$(BIN)/python -m pytest -q tests

demo: $(VENV)/.installed-demo
	$(BIN)/rs3l demo --out demo-output

lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check .

# Benchmarks are scripts that print markdown tables (never timed asserts); each takes --help.
BENCHMARKS := features generation inference training processor memory bench_augment bench_evaluation
bench: $(VENV)/.installed-test
	@for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; $(BIN)/python benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) demo-output build *.egg-info
