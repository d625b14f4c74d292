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

.PHONY: install run test test-fast test-browser browser-deps lint twin bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/saekin serve

test: $(STAMP) browser-deps
	$(BIN)/python -m pytest

# The console's browser tests (tests/e2e/test_console.py) drive Debian's Chromium through Playwright,
# with Korean fonts; no browser build is downloaded. Installed here when missing and we are root
# with apt-get; otherwise those tests skip and say how to install them.
browser-deps:
	@if [ -x /usr/bin/chromium ] && fc-list :lang=ko 2>/dev/null | grep -q .; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null) \
	  || echo "could not install chromium and fonts-noto-cjk: the browser tests will be skipped"; \
	else echo "browser tests will be skipped: install Debian's chromium and fonts-noto-cjk (apt-get install chromium fonts-noto-cjk)"; fi

test-browser: $(STAMP) browser-deps
	$(BIN)/python -m pytest tests/e2e/test_console.py

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
