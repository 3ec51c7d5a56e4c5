# slipstream's developer commands. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(abspath .venv)
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(VENV)

.PHONY: help install build-dev demo test test-rust test-python test-interpreters lint format bench bench-quick

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(BIN)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	# cargo-lambda's emulator for the drift check: a binary wheel whose Python dependencies are not needed here.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps cargo-lambda==1.9.2
	touch $@

install: $(BIN)/.installed ## create .venv with the pinned tools

build-dev: install ## build the Rust core (release profile) into .venv
	$(BIN)/maturin develop --release -q

demo: build-dev ## run the example handler on the built-in emulator
	$(BIN)/python -m slipstream demo

test: build-dev lint test-rust test-python ## everything CI runs

test-rust: ## Rust unit tests
	cargo test --quiet --lib

test-python: build-dev ## the Python suite (unit, e2e, differential)
	$(BIN)/python -m pytest -q

lint: install ## cargo fmt, clippy, ruff, mypy
	cargo fmt --check
	cargo clippy --quiet --all-targets -- -D warnings
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench
	$(BIN)/mypy

format: install ## apply cargo fmt and ruff format
	cargo fmt
	$(BIN)/ruff format python tests bench
	$(BIN)/ruff check --fix python tests bench
