# Two commands do everything on a fresh machine:
#   make run    set up, then start the embedded service (SQLite + Qdrant Edge + in-process ingestion)
#   make test   set up, then run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TWIN   ?= .twins/bge-m3-ko-small
# The torch build to install first. 2.13.0's CPU build lies on our machines' disk (any other
# version downloads gigabytes); on a CUDA host e.g. TORCH='torch --index-url https://download.pytorch.org/whl/cu128'.
TORCH  ?= torch==2.13.0

.PHONY: install run test test-fast lint twin bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/saekin serve

test: $(STAMP)
	$(BIN)/python -m pytest

# Day-to-day loop: unit tests only (no database, server or model beyond a cached twin).
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit

# What CI checks before the tests: lint, formatting, types.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# A small architecture twin of the default profile, for trying the service without the real model.
twin: $(STAMP)
	$(BIN)/saekin make-twin --profile bge-m3-ko --small --out $(TWIN) --overwrite

bench: $(STAMP)
	$(BIN)/python bench/analyzer_throughput.py
	$(BIN)/python bench/embed_throughput.py --texts 48

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .twins
