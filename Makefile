# slipstream's developer commands. `make help` lists them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := $(abspath .venv)
BIN := $(VENV)/bin
export VIRTUAL_ENV := $(VENV)

.PHONY: help install build-dev demo test test-rust test-python test-interpreters wheels lint format bench bench-quick \
	bench-install bench-micro

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# The benchmark harness's needs come too: tests/test_bench.py runs the harness in `make test`.
$(BIN)/.installed: requirements-dev.txt requirements-bench.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -r requirements-bench.txt
	# cargo-lambda's emulator for the drift check: a binary wheel whose Python dependencies are not needed here.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps cargo-lambda==1.9.2
	touch $@

install: $(BIN)/.installed ## create .venv with the pinned tools

build-dev: install ## build the Rust core (release profile) into .venv
	$(BIN)/maturin develop --release -q

demo: build-dev ## run the example handler on the built-in emulator
	$(BIN)/python -m slipstream demo

test: build-dev lint test-rust test-python test-interpreters ## everything CI runs

test-rust: ## Rust unit tests
	cargo test --quiet --lib

test-python: build-dev ## the Python suite (unit, e2e, differential)
	$(BIN)/python -m pytest -q

# Every other CPython 3.10+ that pyenv has: one abi3 wheel, installed into a venv per interpreter.
OTHER_PYTHONS := $(sort $(wildcard $(HOME)/.pyenv/versions/3.1[0-9].*/bin/python3))
INTERPRETER_DEPS := pytest==9.2.0 pytest-timeout==2.4.0 awslambdaric==4.2.2 snapshot-restore-py==1.0.0 uvloop==0.22.1

test-interpreters: install ## the suite, but the benchmark and differential tests, on each other CPython 3.10+ present
	rm -rf target/wheels && $(BIN)/maturin build --release -q --compatibility linux -o target/wheels
	@set -e; for py in $(OTHER_PYTHONS); do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  [ "$$v" = "$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ] && continue; \
	  echo "== CPython $$v ($$py)"; \
	  [ -x .venv-$$v/bin/python ] || $$py -m venv .venv-$$v; \
	  .venv-$$v/bin/pip install -q --disable-pip-version-check $(INTERPRETER_DEPS); \
	  .venv-$$v/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels/slipstream-*.whl; \
	  .venv-$$v/bin/python -m pytest -q -p no:cacheprovider --ignore=tests/test_bench.py --ignore=tests/differential; \
	done

# Release wheels for both Lambda architectures, manylinux2014 (glibc 2.17) so one wheel serves every Lambda base
# image. Cross-building for aarch64 needs the Rust target and zig (`rustup target add aarch64-unknown-linux-gnu`,
# `pip install ziglang`), which this repository's CI machine cannot fetch: there it builds and tests x86_64 only.
wheels: install ## release wheels for x86_64 and aarch64 Linux into target/dist
	$(BIN)/maturin build --release --target x86_64-unknown-linux-gnu --zig -o target/dist
	$(BIN)/maturin build --release --target aarch64-unknown-linux-gnu --zig -o target/dist

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

bench-install: install ## install the benchmark harness's needs (requirements-bench.txt) into .venv
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-bench.txt

bench: build-dev bench-install ## the full benchmark against awslambdaric and the floor: bench/results/
	$(BIN)/python bench/run.py

bench-quick: build-dev bench-install ## every benchmark scenario briefly: bench/results/quick/
	$(BIN)/python bench/run.py --quick

bench-micro: build-dev bench-install ## micro-benchmarks of the boundary code (pytest-benchmark): bench/results/micro/
	mkdir -p bench/results/micro
	$(BIN)/python -m pytest bench/micro -q -p no:logging -p no:cacheprovider --benchmark-disable-gc \
	  --benchmark-min-time=0.0001 --benchmark-max-time=1.0 --benchmark-min-rounds=5 \
	  --benchmark-storage=file://bench/results/micro --benchmark-save=micro
