# One target per habit; README, CI and people all run these.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export CAS_NO_PROGRESS ?=

.PHONY: setup build demo test test-rust test-python lint bench bench-hash bench-store bench-hub bench-bundle bench-load bench-oci bench-hfcache bench-signing bench-cli clean

# pip and maturin write their output to this log; a target prints it only when it fails.
LOG    := $(VENV)/make.log
QUIET   = > $(LOG) 2>&1 || { tail -n 40 $(LOG); echo "make: failed; the whole log is $(LOG)"; exit 1; }
export PIP_QUIET := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

$(BIN)/python:
	@echo "setup: creating $(VENV) (first time: downloads torch and its CUDA libraries, ~3 GB)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --upgrade pip maturin $(QUIET)

# Install the package (editable, release build of the Rust core) and the dev tools.
setup: $(BIN)/python
	@$(BIN)/pip install --group dev $(QUIET)
	@$(BIN)/maturin develop --release --extras torch $(QUIET)
	@echo "setup: $(VENV) is ready; run cas as $(BIN)/cas, or after: source $(BIN)/activate"

# Rebuild the Rust extension after editing rust/.
build: $(BIN)/python
	@$(BIN)/maturin develop --release --extras torch $(QUIET)
	@echo "build: the Rust core is rebuilt and installed in $(VENV)"

# The tour on the shipped example data (no network).
demo: setup
	@PATH="$(abspath $(BIN)):$$PATH" bash examples/tour.sh

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

bench: bench-hash bench-store bench-hub bench-bundle bench-load bench-oci bench-hfcache bench-signing bench-cli

bench-hash: setup
	$(BIN)/python benches/bench_hash.py

bench-store: setup
	$(BIN)/python benches/bench_store.py

bench-signing: setup
	$(BIN)/python benches/bench_signing.py

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

bench-cli: setup
	$(BIN)/python benches/bench_cli.py

clean:
	rm -rf $(VENV) target benches/data
