#!/usr/bin/env bash
# The modelcas tour on the shipped example data: no network, a throwaway store and project.
# Needs `cas` and the package on PATH (`make demo` does that).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/modelcas-tour.XXXXXX")"
trap 'rm -rf "$work"' EXIT
export MODELCAS_HOME="$work/store" CAS_NO_PROGRESS=1 SOURCE_DATE_EPOCH=1766071842
mkdir -p "$work/project" && cd "$work/project"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
expect_fail() { printf '\n\033[1m$ %s\033[0m   (expected to fail)\n' "$*"; if "$@"; then
  echo "tour: expected a failure"; exit 1; fi; }
python=$(command -v python3)
[ -x "$(dirname "$(command -v cas)")/python" ] && python="$(dirname "$(command -v cas)")/python"

echo "== 1. Hash: sha256sum-compatible, both digests in one pass"
step cas hash --check "$here/weights/SHA256SUMS"
step cas hash --algo both "$here/weights/cser-detector-v1.1.safetensors"

echo; echo "== 2. Pin weights in a lockfile (the package's registry of its weights)"
# The package's pyproject.toml names the distribution whose version `requires` is checked,
# and structflo-cser 0.2.0 is installed (a stand-in: just its metadata).
printf '[project]\nname = "structflo-cser"\nversion = "0.2.0"\n' > pyproject.toml
mkdir -p "$work/site/structflo_cser-0.2.0.dist-info"
printf 'Metadata-Version: 2.1\nName: structflo-cser\nVersion: 0.2.0\n' \
  > "$work/site/structflo_cser-0.2.0.dist-info/METADATA"
export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
step cas add "$here/weights/cser-detector-v1.0.safetensors" --name cser-detector --version v1.0 \
  --requires '>=0.1,<1'
step cas add "$here/weights/cser-detector-v1.1.safetensors" --name cser-detector --version v1.1 \
  --requires '>=0.1,<1'
step cas lock ls
step cat cas.lock

echo; echo "== 3. Share through a lab directory remote; a colleague syncs into an empty store"
step cas push "$work/lab-share"
step env MODELCAS_HOME="$work/colleague-store" cas pull "$work/lab-share"

echo; echo "== 4. Bundle the pipeline's models (seed: model-bundles.md)"
step cas bundle -i "$here/bundle/config_model_bundle.yml" -o "$work/bundles/model_collection.zip"
bundle="$work/bundles/model_collection_20251218.zip"
step cas bundle ls "$bundle"
step cas bundle verify "$bundle"
(cd "$work/bundles" && step sha256sum -c model_collection_20251218.zip.sha256)

echo; echo "== 5. Before a GPU run: are the pinned bytes exactly the ones on disk?"
step cas verify --lock

echo; echo "== 6. Corrupt one stored object on purpose"
obj="$(cas path cser-detector@v1.1)"
chmod u+w "$obj"
printf '\x00' | dd of="$obj" bs=1 seek=100 conv=notrunc status=none
expect_fail cas verify --lock
expect_fail cas verify --repair
step cas pull "$work/lab-share"
step cas verify --lock

echo; echo "== 7. Load verified weights onto the best device"
sed "s#./model_collection.zip#$bundle#" "$here/bundle/pipeline.yml" > pipeline.yml
step "$python" "$here/load_weights.py" pipeline.yml

echo; echo "Tour complete: hashed, pinned, shared, bundled, verified, caught corruption, loaded."
