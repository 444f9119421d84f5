# One target per habit; README, CI and people all run these.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export CAS_NO_PROGRESS ?=

.PHONY: setup build demo test test-rust test-python lint bench bench-hash bench-store bench-hub bench-bundle bench-load bench-oci bench-hfcache clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip maturin

# Install the package (editable, release build of the Rust core) and the dev tools.
setup: $(BIN)/python
	$(BIN)/pip install -q --group dev
	$(BIN)/maturin develop --release -q --extras torch

# Rebuild the Rust extension after editing rust/.
build: $(BIN)/python
	$(BIN)/maturin develop --release -q --extras torch

# The tour on the shipped example data (no network).
demo: setup
	PATH="$(abspath $(BIN)):$$PATH" bash examples/tour.sh

test: setup test-rust test-python

test-rust:
	cargo test --locked

test-python:
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check python tests benches examples
	$(BIN)/ruff format --check python tests benches examples
	$(BIN)/mypy
	$(BIN)/python -m mypy.stubtest modelcas._core
	cargo fmt --check
	cargo clippy --locked --all-targets --features python -- -D warnings
	cargo clippy --locked --all-targets -- -D warnings

bench: bench-hash bench-store bench-hub bench-bundle bench-load bench-oci bench-hfcache

bench-hash: setup
	$(BIN)/python benches/bench_hash.py

bench-store: setup
	$(BIN)/python benches/bench_store.py

bench-hub: setup
	$(BIN)/python benches/bench_hub.py

bench-load: setup
	$(BIN)/python benches/bench_load.py

bench-oci: setup
	$(BIN)/python benches/bench_oci.py

bench-hfcache: setup
	$(BIN)/python benches/bench_hfcache.py

bench-bundle: setup
	$(BIN)/python benches/bench_bundle.py

clean:
	rm -rf $(VENV) target benches/data
