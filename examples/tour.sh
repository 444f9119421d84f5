#!/usr/bin/env bash
# The modelcas tour on the shipped example weights. Needs `cas` on PATH (`make demo` does that).
set -euo pipefail
cd "$(dirname "$0")/weights"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step cas hash --algo both ./*.safetensors
step cas hash --check SHA256SUMS
echo
echo "All example weights match their shipped checksums."
