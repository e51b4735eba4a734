# PipeScope — every target creates .venv with what it needs when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DEVSTAMP := $(VENV)/.dev-$(shell cksum pyproject.toml | cut -d' ' -f1)
CHROMIUM := /usr/bin/chromium
# -v lists every test, so a CI log shows the browser and container tests ran; the 25
# slowest are listed at the end, so a test that grows slow is seen before it times out
PYTEST_ARGS ?= -v --durations=25

.PHONY: run install test lint typecheck pytest browser bench bench-quick docker clean

$(BIN)/python:
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed: installing Debian's python3-venv"; \
	  apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

# The C record writer is built in place: a changed source rebuilds it.
$(STAMP): $(BIN)/python pyproject.toml pipecore/_fastring.h $(wildcard pipecore/_fastring_*.c)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(DEVSTAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

install: $(STAMP)

run: $(STAMP)
	$(BIN)/pipescope serve --host $(HOST) --port $(PORT)

# Debian's chromium drives the browser tests; never a downloaded browser.
browser:
	@test -x $(CHROMIUM) || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk; }

lint: $(DEVSTAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEVSTAMP)
	$(BIN)/mypy

pytest: $(DEVSTAMP) browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(DEVSTAMP)
	$(BIN)/python -m bench

bench-quick: $(DEVSTAMP)
	$(BIN)/python -m bench --quick

docker:
	docker build -t pipescope .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info build dist
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
