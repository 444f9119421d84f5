"""Signed versions: what `cas sign` and `cas verify --public-key` cost on top of `cas verify`.

Run: `make bench-signing` (or `python benches/bench_signing.py [--quick]`). Target from
issue 26: signing and checking the signature of a pinned 4 GiB version cost milliseconds on
top of `cas verify` (no second hash).

The version is 4 files of 1 GiB (a sharded checkpoint). Every row is a real process started
as a user starts it (interpreter start-up and imports included), best of 3, from the page
cache. The peer is model_signing's own CLI on a folder holding the same files: it hashes
every byte (sha256) to sign and again to verify, which is what pinning the digests saves.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _bench import DATA, GiB, MiB, Table, machine, make_file, run_cmd, warm
from modelcas.lockfile import Lockfile
from modelcas.store import Store


def cas(*args: str | Path) -> object:
    """The real CLI, against the benchmark's store and lockfile."""
    return run_cmd(sys.executable, "-m", "modelcas", *args)


def key_pair(folder: Path) -> tuple[Path, Path]:
    """An EC P-256 key pair made with openssl, once."""
    key, pub = folder / "release.pem", folder / "release.pub"
    if not pub.exists():
        folder.mkdir(parents=True, exist_ok=True)
        openssl = shutil.which("openssl") or sys.exit("benchmark peer 'openssl' is not installed")
        subprocess.run(
            [openssl, "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key],
            check=True,
        )
        subprocess.run(
            [openssl, "ec", "-in", key, "-pubout", "-out", pub], check=True, capture_output=True
        )
    return key, pub


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="4 x 64 MiB, one run each")
    args = ap.parse_args()
    part = 64 * MiB if args.quick else GiB
    repeat = 1 if args.quick else 3
    os.environ["CAS_NO_PROGRESS"] = "1"
    print(f"machine: {machine()}")

    root = DATA / f"signing-{part // MiB}MiB"
    folder = root / "model"  # the version's files under their pinned names (model_signing's view)
    files = [make_file(folder / f"model-{i:05d}-of-00004.safetensors", part, seed=260 + i)
             for i in range(4)]  # fmt: skip
    store_dir, lock = root / "store", root / "cas.lock"
    key, pub = key_pair(root)
    os.environ["MODELCAS_HOME"] = str(store_dir)
    if not lock.exists():
        subprocess.run(
            [sys.executable, "-m", "modelcas", "--lock", lock, "add", *files,
             "--name", "big", "--version", "v1"],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    subprocess.run([sys.executable, "-m", "modelcas", "--lock", lock, "sign", "big@v1",
                    "--key", key, "-q"], check=True)  # fmt: skip
    objects = [o.path for o in Store(store_dir).objects()]
    warm(*objects, *files)
    label = f"4 x {part / GiB:g} GiB" if part >= GiB else f"4 x {part // MiB} MiB"

    t = Table(f"signing, a pinned version of {label}")
    base = t.time("cas verify --lock (bytes: blake3)", cas("verify", "--lock", lock), repeat)
    signed = t.time(
        "cas verify big@v1 --public-key (bytes + signature)",
        cas("--lock", lock, "verify", "big@v1", "--public-key", pub),
        repeat,
    )
    sign = t.time(
        "cas sign big@v1 --key (no byte read)",
        cas("--lock", lock, "sign", "big@v1", "--key", key, "-q"),
        repeat,
    )
    start = t.time("cas --version (interpreter start-up)", cas("--version"), repeat)
    ms_sign = t.time(
        "peer: model_signing sign key (hashes every byte)",
        run_cmd(sys.executable, "-m", "model_signing", "sign", "key", "--private_key", key,
                "--signature", root / "peer.sig", folder),
        repeat,
    )  # fmt: skip
    ms_verify = t.time(
        "peer: model_signing verify key (hashes every byte)",
        run_cmd(sys.executable, "-m", "model_signing", "verify", "key", "--signature",
                root / "peer.sig", "--public_key", pub, folder),
        repeat,
    )  # fmt: skip

    # In one process, once the library is imported: what the check itself costs.
    from modelcas.signing import load_public_key, sign_files, verify_signature
    from modelcas.signing._lib import load
    from modelcas.signing.sign import KeySpec

    t0 = time.perf_counter()
    load()
    imported = time.perf_counter() - t0
    entry = Lockfile.load(lock).models["big"].versions["v1"]
    trusted = [load_public_key(pub)]
    t0 = time.perf_counter()
    made = sign_files(entry.files, "big@v1", KeySpec(key))
    made_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    verify_signature(made.data, entry.files, trusted, "big@v1")
    checked_s = time.perf_counter() - t0

    print(
        f"\nin process: import model_signing {imported * 1e3:.0f} ms (once per process), "
        f"sign_files {made_s * 1e3:.1f} ms, verify_signature {checked_s * 1e3:.1f} ms"
    )
    print(
        f"on top of cas verify --lock: verify --public-key +{(signed - base) * 1e3:.0f} ms; "
        f"cas sign {sign * 1e3:.0f} ms in all ({(sign - start) * 1e3:.0f} ms past start-up)"
    )
    print(
        f"model_signing's own sign/verify of the same folder: {ms_sign:.2f} s / {ms_verify:.2f} s"
    )
    t.ratio("cas verify --public-key vs cas verify --lock", signed, base, 1.5, "cas verify --lock")
    t.ratio("cas sign vs model_signing sign key", sign, ms_sign, 0.5, "model_signing sign key")
    return 0 if t.report() else 1


if __name__ == "__main__":
    sys.exit(main())
