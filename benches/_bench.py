"""Shared helpers for the benchmarks: data, timing, peers, and the ratio table."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DATA = Path(os.environ.get("MODELCAS_BENCH_DATA", Path(__file__).parent / "data"))
GiB = 1 << 30
MiB = 1 << 20


def _generate(path: Path, size: int, seed: int, piece: Callable[[Any, int], bytes]) -> Path:
    """Write ``size`` bytes of ``piece(rng, n)`` pieces to ``path`` once; reuse it after."""
    if path.exists() and path.stat().st_size == size:
        return path
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        left = size
        while left:
            data = piece(rng, min(left, 64 * MiB))
            f.write(data)
            left -= len(data)
    tmp.rename(path)
    return path


def make_file(path: Path, size: int, *, seed: int = 0) -> Path:
    """A file of pseudo-random bytes (weights barely compress), made once and reused."""
    return _generate(path, size, seed, lambda rng, n: rng.bytes(n))


def warm(*paths: Path) -> None:
    """Read files once so every contender starts from the page cache."""
    for p in paths:
        with open(p, "rb") as f:
            while f.read(16 * MiB):
                pass


def remove(path: Path) -> None:
    """Delete a file or a directory tree, if it exists."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def clean_slate(outputs: tuple[Path, ...], inputs: tuple[Path, ...]) -> Callable[[], None]:
    """Untimed setup: delete the last run's output, flush all writeback, re-warm the inputs."""

    def setup() -> None:
        for p in outputs:
            remove(p)
        os.sync()
        warm(*inputs)

    return setup


def need(tool: str) -> str:
    """Path of a peer tool; the benchmark refuses to run without it rather than skip it."""
    found = shutil.which(tool)
    if not found:
        sys.exit(f"benchmark peer {tool!r} is not installed (see `make bench-deps`)")
    return found


def best_of(
    fn: Callable[[], object],
    repeat: int,
    setup: Callable[[], object] | None = None,
    stat: Callable[[list[float]], float] = min,
) -> float:
    """Fastest wall time of ``repeat`` runs (the least disturbed by other load), or another
    ``stat`` of them (``statistics.median`` on a shared machine).

    ``setup`` runs untimed before each run (clear the last run's output, flush writeback).
    """
    times = []
    for _ in range(repeat):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return stat(times)


def run_cmd(*args: str | Path) -> Callable[[], object]:
    """A callable that runs a command quietly and fails loudly."""
    argv = [str(a) for a in args]
    return lambda: subprocess.run(argv, stdout=subprocess.DEVNULL, check=True)


def child_peak_rss_mib(code: str) -> float:
    """Peak resident memory of a fresh Python running ``code``, in MiB.

    Read from VmHWM, which exec resets: getrusage's ru_maxrss survives exec and would report
    the benchmark process's own peak (it maps GiB-sized files).
    """
    probe = code + (
        "\nfrom pathlib import Path\n"
        "print(next(l.split()[1] for l in Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith('VmHWM')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    return int(out.stdout.split()[-1]) / 1024


@dataclass
class Table:
    title: str
    rows: list[tuple[str, float, str]] = field(default_factory=list)
    checks: list[tuple[str, float, float, str]] = field(default_factory=list)
    stat: Callable[[list[float]], float] = min  # of the repeated runs of each row

    def time(
        self,
        name: str,
        fn: Callable[[], object],
        repeat: int = 3,
        note: str = "",
        setup: Callable[[], object] | None = None,
    ) -> float:
        t = best_of(fn, repeat, setup, self.stat)
        self.rows.append((name, t, note))
        print(f"  {name:<58} {t:8.3f} s  {note}", flush=True)
        return t

    def ratio(self, what: str, ours: float, peer: float, target: float, peer_name: str) -> None:
        self.checks.append((what, ours / peer, target, peer_name))

    def report(self) -> bool:
        print(f"\n{self.title}: ratios (ours / peer; lower is better)")
        ok = True
        for what, r, target, peer in self.checks:
            verdict = "ok" if r <= target else "LOSE"
            ok &= r <= target
            print(f"  {what:<52} {r:6.2f} x {peer:<30} target <= {target:<5} {verdict}")
        return ok


def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def make_weights(path: Path, size: int, *, seed: int = 0, scale: float = 0.02) -> Path:
    """float32 weights drawn from N(0, scale), as a freshly initialised layer holds, made once.

    Unlike ``make_file``'s uniform bytes these compress a little (sign and exponent bits repeat),
    as real weights do, so compressors are measured on realistic input.
    """
    if size % 4:
        raise ValueError(f"{path}: {size} bytes is not a whole number of float32 values")
    import numpy as np

    def piece(rng: Any, n: int) -> bytes:
        values = rng.standard_normal(n // 4, dtype=np.float32) * np.float32(scale)
        data: bytes = values.tobytes()
        return data

    return _generate(path, size, seed, piece)
