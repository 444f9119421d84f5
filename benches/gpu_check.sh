#!/usr/bin/env bash
# The GPU check of issue 18 (verified loading), as one command for a machine with a CUDA GPU and
# its own Python with torch, but no Rust toolchain, no b3sum and no network. About 2 minutes;
# each step has its own time limit, 6 minutes in all.
#
# 1. Here (where Rust is), build the abi3 wheel (it loads on any CPython >= 3.11) into dist/,
#    which git ignores:
#        .venv/bin/maturin build --release -o dist
# 2. On the GPU machine, from the repository root, with dist/ carried along:
#        bash benches/gpu_check.sh
#    (with the device tool: run(command="bash benches/gpu_check.sh", carry=["dist"]))
#
# It installs the wheel into a temporary folder (nothing else is installed), runs the CUDA tests
# of tests/test_torch.py, then benches/bench_load.py --quick (128 MiB) and the 1 GiB rows, and
# writes every row and ratio to $OUT/gpu_check.txt ($OUT if set, else benches/data/).
# PYTHON picks the interpreter (default python3). GPU_CHECK_ALLOW_CPU=1 runs it without a GPU,
# to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

shopt -s nullglob
wheels=(dist/modelcas-*-abi3-*.whl)
if [ ${#wheels[@]} -ne 1 ]; then
    echo "gpu_check: expected one modelcas wheel in dist/, found ${#wheels[@]}." >&2
    echo "  build it where Rust is: .venv/bin/maturin build --release -o dist" >&2
    echo "  and carry dist/ to this machine (it is ignored by git)" >&2
    exit 2
fi
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$site" "${wheels[0]}"; then
    echo "gpu_check: cannot install ${wheels[0]} with $PY" >&2
    exit 2
fi
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"

out_dir=${OUT:-benches/data}
mkdir -p "$out_dir"
report="$out_dir/gpu_check.txt"
: >"$report"

if ! "$PY" - <<'EOF' 2>&1 | tee -a "$report"; then
import os, sys
import torch, safetensors, modelcas
print(f"modelcas {modelcas.__version__} from {modelcas.__file__}")
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, safetensors {safetensors.__version__}")
if not torch.cuda.is_available():
    if os.environ.get("GPU_CHECK_ALLOW_CPU") != "1":
        sys.exit("gpu_check: torch sees no CUDA device")
    print("no CUDA device: running the CPU rows only (GPU_CHECK_ALLOW_CPU=1)")
else:
    print(f"gpu: {torch.cuda.get_device_name()}")
EOF
    exit 2
fi

status=0
echo "== tests/test_torch.py -m cuda" | tee -a "$report"
timeout 120 "$PY" -m pytest -q -p no:cacheprovider tests/test_torch.py -m cuda 2>&1 | tee -a "$report"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
echo "== benches/bench_load.py --quick" | tee -a "$report"
timeout 90 "$PY" benches/bench_load.py --quick --out "$report" || true
echo "== benches/bench_load.py (1 GiB)" | tee -a "$report"
timeout 150 "$PY" benches/bench_load.py --out "$report" || true
echo "gpu_check: report in $report"
exit $status
