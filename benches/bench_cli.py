"""CLI start-up: short `cas` commands beside the interpreter's own start-up (issue 27).

Run: `make bench-cli` (or `python benches/bench_cli.py [--quick] [--repeat N]`). Targets:
`cas --version` and `cas hash` of a small file <= 0.06 s each. `python -c pass` is the floor
any Python CLI pays; `python -c "import modelcas"` and `sha256sum` of the same file are printed
for scale. The rows run in turns (one run of each, then again), so a burst of load from the
machine's other users falls on every row alike; each row reports the median and the fastest.
`tests/test_startup.py` guards the cause (which modules the commands import).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _bench import machine, need

TARGET = 0.06


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="5 runs of each row")
    ap.add_argument("--repeat", type=int, default=30, help="runs per row (the median is kept)")
    args = ap.parse_args()
    repeat = 5 if args.quick else args.repeat
    py = sys.executable
    cas = [py, "-m", "modelcas"]
    sha256sum = need("sha256sum")
    with tempfile.TemporaryDirectory() as tmp:
        small = Path(tmp) / "small.txt"
        small.write_text("hello\n")
        env = {**os.environ, "MODELCAS_HOME": str(Path(tmp) / "store"), "CAS_NO_PROGRESS": "1"}
        rows: list[tuple[str, Sequence[str], float | None]] = [
            ("python -c pass (the floor)", [py, "-c", "pass"], None),
            ('python -c "import modelcas"', [py, "-c", "import modelcas"], None),
            ("cas --version", [*cas, "--version"], TARGET),
            ("cas hash (small file)", [*cas, "hash", str(small)], TARGET),
            (
                "cas hash --algo both --json (small file)",
                [*cas, "hash", "-a", "both", "--json", str(small)],
                None,
            ),
            ("sha256sum (small file)", [sha256sum, str(small)], None),
        ]
        times: list[list[float]] = [[] for _ in rows]
        for _ in range(repeat + 1):  # the first round warms the caches and is not counted
            for i, (_, argv, _) in enumerate(rows):
                t = time.perf_counter()
                subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
                times[i].append(time.perf_counter() - t)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(f"\nCLI start-up (median of {repeat} runs taken in turns):")
    ok = True
    floor = statistics.median(times[0][1:])
    for (name, _, target), t in zip(rows, times, strict=True):
        med = statistics.median(t[1:])
        verdict = ""
        if target is not None:
            verdict = f"target <= {target} s  " + ("ok" if med <= target else "LOSE")
            ok &= med <= target
        print(
            f"  {name:<44} {med:7.3f} s  (min {min(t[1:]):.3f}, "
            f"+{med - floor:.3f} over the floor)  {verdict}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
