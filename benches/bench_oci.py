"""OCI registry push and pull: `cas` against `curl` on the same local registry.

Run: `make bench-oci` (or `python benches/bench_oci.py [--quick] [--rounds N]`). Targets from
issue 17, on 1 GiB of weights:

- pull <= 1.1 x (`curl` of each blob, then `sha256sum` of each), although the pull also
  computes blake3 and fsyncs the object;
- push <= 1.1 x (`curl -X POST` + `curl -T` of each blob, then `curl -X PUT` of the manifest).

The registry is Debian's `docker-registry` (CNCF distribution 2.8), started by
`tests/ociregistry.py` on 127.0.0.1 with its storage under benches/data. Every push goes to a
fresh repository, so every contender uploads every blob (none is skipped as present). Before
each timed run the last output is deleted, writeback is flushed and the inputs are re-read
(untimed). Contenders alternate in rounds and the table reports the median of the rounds; the
machine may be shared, so run it more than once.

Rows:
- `cas publish --to` is the whole command as a user runs it: start-up, a hash of the file to
  learn its digest (it is in the store already, so no copy), HEADs, the upload, the manifest.
- `oci.push (library)` is the push alone (plan + upload + manifest) in one process, the
  fair counterpart of the curl script, which is handed the digests.
- `cas pull` is the whole command into an empty store.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _bench import DATA, GiB, MiB, Table, machine, make_file, remove, warm

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN = DATA / "oci-run"
CAS = [sys.executable, "-m", "modelcas"]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MiB):
            h.update(chunk)
    return h.hexdigest()


def curl_push_script(host: str, blobs: list[tuple[Path, str]], manifest: Path, repo: str) -> str:
    """A bash script pushing blobs (POST + PUT -T each) and the manifest with curl."""
    lines = ["set -euo pipefail"]
    for path, digest in blobs:
        lines += [
            f"loc=$(curl -sS -X POST -D - -o /dev/null http://{host}/v2/{repo}/blobs/uploads/ "
            "| tr -d '\\r' | sed -n 's/^[Ll]ocation: //p')",
            '[[ $loc == http* ]] || loc="http://' + host + '$loc"',
            'sep="?"; [[ $loc == *\\?* ]] && sep="&"',
            f'curl -sS -f -o /dev/null -T {path} -H "Content-Type: application/octet-stream" '
            f'"$loc${{sep}}digest=sha256:{digest}"',
        ]
    lines.append(
        "curl -sS -f -o /dev/null -X PUT "
        "-H 'Content-Type: application/vnd.oci.image.manifest.v1+json' "
        f"--data-binary @{manifest} http://{host}/v2/{repo}/manifests/v1.0"
    )
    return "\n".join(lines) + "\n"


def curl_pull_script(host: str, repo: str, digests: list[str], out: Path) -> str:
    lines = ["set -euo pipefail", f"mkdir -p {out}"]
    lines += [f"curl -sS -f -o {out}/{d} http://{host}/v2/{repo}/blobs/sha256:{d}" for d in digests]
    lines.append(f"cd {out} && sha256sum {' '.join(digests)} >/dev/null")
    return "\n".join(lines) + "\n"


def median_rounds(
    contenders: dict[str, tuple[Callable[[int], object], Callable[[], object]]], rounds: int
) -> dict[str, list[float]]:
    """Run every contender once per round (setup untimed); all times per contender."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for i in range(rounds):
        for name, (fn, setup) in contenders.items():
            setup()
            t = time.perf_counter()
            fn(i)
            times[name].append(time.perf_counter() - t)
            print(f"  round {i + 1}: {name:<40} {times[name][-1]:7.3f} s", flush=True)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB, 2 rounds")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    size = 256 * MiB if args.quick else GiB
    rounds = 2 if args.quick else args.rounds
    for tool in ("curl", "sha256sum", "docker-registry"):
        if shutil.which(tool) is None:
            sys.exit(f"benchmark peer {tool!r} is not installed")

    sys.path.insert(0, str(REPO_ROOT))
    from modelcas import Store, oci
    from modelcas.oci import modelpack
    from tests.ociregistry import Registry

    weights = make_file(DATA / f"oci-weights-{size >> 20}m.bin", size, seed=17)
    remove(RUN)
    RUN.mkdir(parents=True)
    print(f"bench_oci: {size >> 20} MiB, {rounds} rounds, {machine()}")
    env = {**os.environ, "CAS_NO_PROGRESS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    with Registry(RUN / "registry") as reg:
        src_store = RUN / "store-src"
        lock = RUN / "cas.lock"
        subprocess.run(
            [*CAS, "--store", src_store, "add", weights, "--name", "bench", "--version", "v1.0",
             "--lock", lock],
            check=True, stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        store = Store(src_store)
        digest = sha256_of(weights)
        d = store.info(digest).digest
        artifact = modelpack.build("bench", "v1.0", {weights.name: d}, None)
        config = RUN / "config.json"
        config.write_bytes(artifact.config.data or b"")
        manifest = RUN / "manifest.json"
        manifest.write_bytes(artifact.manifest)
        blobs = [(weights, digest), (config, artifact.config.digest.sha256)]

        # The artifact every pull contender fetches, pushed once by cas.
        subprocess.run(
            [*CAS, "--store", src_store, "publish", "bench", "--version", "v1.0", "--file",
             weights, "--to", reg.url("bench/src"), "--lock", RUN / "pull.lock"],
            check=True, stdout=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        data = reg.blob_data(f"sha256:{digest}")

        def flush(*inputs: Path) -> Callable[[], object]:
            def setup() -> None:
                for p in (RUN / "pull-store", RUN / "curl-out"):
                    remove(p)
                os.sync()
                warm(*inputs)

            return setup

        def script(text: str) -> None:
            subprocess.run(["bash", "-c", text], check=True, env=env)

        def cas_publish(i: int) -> None:
            subprocess.run(
                [*CAS, "--store", src_store, "publish", "bench", "--version", "v1.0", "--file",
                 weights, "--to", reg.url(f"bench/cli{i}"), "--lock", RUN / f"cli{i}.lock"],
                check=True, stdout=subprocess.DEVNULL, env=env,
            )  # fmt: skip

        def lib_push(i: int) -> None:
            ref = oci.parse(reg.url(f"bench/lib{i}:v1.0"))
            oci.push(oci.plan_push(ref, artifact), store)

        def curl_push(i: int) -> None:
            script(curl_push_script(reg.host, blobs, manifest, f"bench/curl{i}"))

        def cas_pull(_: int) -> None:
            subprocess.run(
                [*CAS, "--store", RUN / "pull-store", "pull", reg.url("bench/src:v1.0"),
                 "--no-pin"],
                check=True, stdout=subprocess.DEVNULL, env=env,
            )  # fmt: skip

        def curl_pull(_: int) -> None:
            digests = [digest, artifact.config.digest.sha256]
            script(curl_pull_script(reg.host, "bench/src", digests, RUN / "curl-out"))

        print("push (a fresh repository each time)")
        # cas sends the store's object, curl the original file: both are warm for everyone.
        inputs = flush(weights, store.object_path(digest))
        push = median_rounds(
            {
                "cas publish --to (CLI, hashes the file)": (cas_publish, inputs),
                "oci.push (library)": (lib_push, inputs),
                "curl POST + curl -T + manifest PUT": (curl_push, inputs),
            },
            rounds,
        )
        print("pull (into an empty destination)")
        pull = median_rounds(
            {
                "cas pull --no-pin (CLI)": (cas_pull, flush(data)),
                "curl each blob, then sha256sum": (curl_pull, flush(data)),
            },
            rounds,
        )
    remove(RUN)

    table = Table(f"bench_oci ({size >> 20} MiB, median of {rounds} rounds)")
    every = {**push, **pull}
    med = {k: statistics.median(v) for k, v in every.items()}
    print("\nmedians")
    for name, t in med.items():
        print(f"  {name:<44} {t:8.3f} s  (rounds: {', '.join(f'{x:.3f}' for x in every[name])})")
    curl_push_t = med["curl POST + curl -T + manifest PUT"]
    peer = "curl -T + manifest PUT"
    table.ratio("push: oci.push (library)", med["oci.push (library)"], curl_push_t, 1.1, peer)
    table.ratio(
        "push: cas publish --to (CLI, with hashing)",
        med["cas publish --to (CLI, hashes the file)"],
        curl_push_t,
        1.1,
        peer,
    )
    table.ratio(
        "pull: cas pull (CLI)",
        med["cas pull --no-pin (CLI)"],
        med["curl each blob, then sha256sum"],
        1.1,
        "curl + sha256sum",
    )
    return 0 if table.report() else 1


if __name__ == "__main__":
    sys.exit(main())
