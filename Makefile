# Two commands (see README): `make test` and `make demo`. Both create .venv when needed.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; pinned first so that pip never pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: test demo venv lint bench clean gpu-check gpu-check-prepare

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

# Static checks: ruff, then mypy on the package and processors/ ([tool.mypy] in pyproject.toml).
# mypy stays out of `make test`, which is what CI runs: CI is kept to ruff and the tests.
lint: $(VENV)/.installed-test
	$(BIN)/python -m ruff check .
	$(BIN)/python -m mypy

# Benchmarks are scripts that print markdown tables (never timed asserts); each takes --help.
BENCHMARKS := features generation inference training processor memory bench_augment bench_evaluation
bench: $(VENV)/.installed-test
	@for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; $(BIN)/python benchmarks/$$b.py || exit 1; done

# GPU validation (docs/gpu.md): CUDA rows run where torch sees a GPU, CPU rows everywhere.
GPU_DATA := scratch/gpu-check
GPU_WHEELS := scratch/gpu-wheels
$(GPU_DATA)/ntuple: | $(VENV)/.installed-test
	$(BIN)/python benchmarks/gpu_check.py --prepare $(GPU_DATA)

gpu-check: $(GPU_DATA)/ntuple
	$(BIN)/python benchmarks/gpu_check.py --data $(GPU_DATA)

# Data plus cp312 wheels of what the device image lacks (docs/gpu.md), to carry to a lent device.
gpu-check-prepare: $(GPU_DATA)/ntuple
	$(BIN)/python -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  -d $(GPU_WHEELS) -r benchmarks/gpu_requirements.txt
	@du -sh $(GPU_DATA) $(GPU_WHEELS)

clean:
	rm -rf $(VENV) demo-output build *.egg-info
