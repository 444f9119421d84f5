"""One process of the no-flock torture test (tests/test_store_torture.py).

Run as ``python -m tests.torture_worker ROLE INDEX WORK STORE SECONDS``. Every outcome it
claims (a pin written, a file moved) is appended to ``WORK/log-ROLE-INDEX.jsonl`` only after
the operation reported success; every unexpected failure goes to the same log as an error.
The test then checks each claim against the lockfiles and the store.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from modelcas.ops.add import PinRequest, add
from modelcas.ops.gc import collect
from modelcas.store import Store


def _cas(store: Path, *args: str | Path) -> list[str]:
    return [sys.executable, "-m", "modelcas", "--store", str(store), *map(str, args)]


class Log:
    """Claims and errors, one JSON line each, flushed at once (a worker may be killed)."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the whole run)

    def write(self, **record: object) -> None:
        self.f.write(json.dumps(record) + "\n")
        self.f.flush()


def _old(path: Path) -> None:
    t = time.time() - 2 * 86400
    os.utime(path, (t, t))


def pinner(index: int, work: Path, store: Store, until: float, log: Log) -> None:
    """Pin new and already-stored content into its own lockfile and the shared one."""
    own, shared = work / f"own-{index}" / "cas.lock", work / "shared" / "cas.lock"
    own.parent.mkdir(exist_ok=True)
    files = work / f"pin-{index}"
    files.mkdir()
    i = 0
    while time.time() < until:
        lock = shared if i % 2 else own
        src = files / f"f{i}.bin"
        # Every third pin re-pins earlier content: the add finds it stored (freshen, no copy).
        seed = i - 3 if i % 3 == 2 else i
        src.write_bytes(f"pinner {index} content {seed} ".encode() * (200 + seed % 50))
        try:
            out = add([src], store, pin=PinRequest(f"p{index}", f"v{i}", lock=lock))
        except Exception as e:  # every failure counts: none is expected
            log.write(error=f"pin {lock} p{index}@v{i}: {type(e).__name__}: {e}")
        else:
            d = out.files[0].digest
            log.write(pin=str(lock), name=f"p{index}", version=f"v{i}", file=src.name, sha=d.sha256)
        i += 1


def mover(index: int, work: Path, store: Store, until: float, log: Log) -> None:
    """``add --move`` into the shared lockfile: through the API, or the CLI (odd index)."""
    shared = work / "shared" / "cas.lock"
    files = work / f"move-{index}"
    files.mkdir()
    i = 0
    while time.time() < until:
        src = files / f"m{i}.bin"
        data = os.urandom(64 << 10) + f"mover {index} file {i}".encode()
        src.write_bytes(data)
        _old(src)
        sha = hashlib.sha256(data).hexdigest()
        name, version = f"m{index}", f"v{i}"
        if index % 2:
            argv = _cas(store.root, "--lock", shared, "add", "--move", src)
            argv += ["--name", name, "--version", version]
            r = subprocess.run(argv, cwd=work, capture_output=True, check=False)
            ok, why = r.returncode == 0, r.stderr.decode(errors="replace").strip()
        else:
            try:
                add([src], store, move=True, pin=PinRequest(name, version, lock=shared))
                ok, why = True, ""
            except Exception as e:
                ok, why = False, f"{type(e).__name__}: {e}"
        if ok:
            log.write(moved=str(src), pin=str(shared), name=name, version=version, sha=sha)
        else:
            log.write(error=f"move {src}: {why}", kept=str(src), sha=sha)
        i += 1


def collector(index: int, work: Path, store: Store, until: float, log: Log) -> None:
    """``gc --grace 0`` in a loop: through the API, or the CLI (odd index)."""
    runs = 0
    while time.time() < until:
        if index % 2:
            r = subprocess.run(
                _cas(store.root, "gc", "--grace", "0"), capture_output=True, check=False
            )
            if r.returncode != 0:
                log.write(error=f"gc: {r.stderr.decode(errors='replace').strip()}")
        else:
            try:
                collect(store, grace=0)
            except Exception as e:
                log.write(error=f"gc: {type(e).__name__}: {e}")
        runs += 1
    log.write(gc_runs=runs)


def verifier(index: int, work: Path, store: Store, until: float, log: Log) -> None:
    """``cas verify --lock`` of the shared lockfile in a loop: it must never fail."""
    shared = work / "shared" / "cas.lock"
    runs = 0
    while time.time() < until:
        if shared.exists():
            argv = _cas(store.root, "verify", "--lock", shared)
            r = subprocess.run(argv, capture_output=True, check=False)
            if r.returncode != 0:
                log.write(error=f"verify: {(r.stdout + r.stderr).decode(errors='replace')}")
            runs += 1
    log.write(verify_runs=runs)


ROLES = {"pinner": pinner, "mover": mover, "gc": collector, "verify": verifier}


def main() -> None:
    role, index, work, store, seconds = sys.argv[1:]
    # The point of the test: every lock that relies on flock locks nothing.
    assert getattr(fcntl.flock, "__name__", "") == "noop", "sitecustomize is not loaded"
    assert os.environ.get("MODELCAS_LOCKS") == "off"
    log = Log(Path(work) / f"log-{role}-{index}.jsonl")
    until = time.time() + float(seconds)
    ROLES[role](int(index), Path(work), Store(store), until, log)


if __name__ == "__main__":
    main()
