"""The hashing core through the public Python API, against hashlib and the blake3 package."""

from __future__ import annotations

import array
import mmap
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import modelcas
from modelcas import _core
from tests.refs import ref_blake3, ref_file, ref_sha256

MiB = 1 << 20
# Sizes around every internal boundary: the sequential read buffer (1 MiB), the pipeline piece
# (4 MiB) and the parallel/mmap threshold (16 MiB).
SIZES = [
    0,
    1,
    63,
    64,
    1023,
    1024,
    1025,
    4096,
    MiB - 1,
    MiB,
    MiB + 1,
    4 * MiB - 1,
    4 * MiB + 1,
    16 * MiB - 1,
    16 * MiB,
    16 * MiB + 7,
    21 * MiB + 12345,
]


@pytest.fixture(scope="module")
def blob() -> bytes:
    return random.Random(7).randbytes(max(SIZES))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("use_mmap", [None, True, False])
def test_file_digests_match_references(
    tmp_path: Path, blob: bytes, size: int, use_mmap: bool | None
) -> None:
    data = blob[:size]
    p = tmp_path / "w.bin"
    p.write_bytes(data)
    h = modelcas.hash_file(p, ("sha256", "blake3", "crc32"), mmap=use_mmap)
    assert h.size == size
    assert h.sha256 == ref_sha256(data)
    assert h.blake3 == ref_blake3(data)
    import zlib

    assert h.crc32 == zlib.crc32(data)


@pytest.mark.parametrize("algos", [("sha256",), ("blake3",), ("crc32",), ("blake3", "sha256")])
def test_only_requested_digests_are_computed(
    tmp_path: Path, blob: bytes, algos: tuple[str, ...]
) -> None:
    p = tmp_path / "w.bin"
    p.write_bytes(blob[: 17 * MiB])
    for use_mmap in (True, False):
        h = modelcas.hash_file(p, algos, mmap=use_mmap)  # type: ignore[arg-type]
        assert (h.sha256 is not None) == ("sha256" in algos)
        assert (h.blake3 is not None) == ("blake3" in algos)
        assert (h.crc32 is not None) == ("crc32" in algos)
        if h.blake3:
            assert h.blake3 == ref_blake3(blob[: 17 * MiB])


def test_unknown_algorithm_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="md5"):
        modelcas.hash_bytes(b"x", ("md5",))  # type: ignore[arg-type]


def test_multi_gib_sparse_file(tmp_path: Path) -> None:
    p = tmp_path / "sparse.bin"
    with open(p, "wb") as f:
        f.truncate(3 << 30)
        f.seek((3 << 30) - 5)
        f.write(b"tail!")
    sha, b3, size = ref_file(p)
    for use_mmap in (None, False):
        h = modelcas.hash_file(p, mmap=use_mmap)
        assert (h.sha256, h.blake3, h.size) == (sha, b3, size)


def _buffers(data: bytes) -> list[object]:
    arr = np.frombuffer(data[: len(data) // 8 * 8], dtype=np.float64).copy()
    return [
        data,
        bytearray(data),
        memoryview(data),
        array.array("B", data),
        np.frombuffer(data, dtype=np.uint8),
        arr,
        arr.reshape(-1, 2) if arr.size % 2 == 0 else arr,
    ]


@pytest.mark.parametrize("size", [0, 5, 2048, 70_000, 17 * MiB + 3])
def test_every_buffer_type(blob: bytes, size: int) -> None:
    data = blob[:size]
    for buf in _buffers(data):
        raw = bytes(memoryview(buf))  # type: ignore[arg-type]
        h = modelcas.hash_bytes(buf)  # type: ignore[arg-type]
        assert (h.sha256, h.blake3, h.size) == (ref_sha256(raw), ref_blake3(raw), len(raw))


def test_mmap_object_and_float_array(tmp_path: Path, blob: bytes) -> None:
    p = tmp_path / "m.bin"
    p.write_bytes(blob[: 3 * MiB])
    with open(p, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert modelcas.hash_bytes(m).sha256 == ref_sha256(blob[: 3 * MiB])  # type: ignore[arg-type]
    floats = array.array("f", [1.5, -2.0, 3.25])
    assert modelcas.hash_bytes(floats).blake3 == ref_blake3(floats.tobytes())  # type: ignore[arg-type]


def test_non_contiguous_buffer_is_refused(blob: bytes) -> None:
    strided = np.frombuffer(blob[:1000], dtype=np.uint8)[::2]
    with pytest.raises(BufferError, match="contiguous"):
        modelcas.hash_bytes(strided)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", range(5))
def test_incremental_hasher_any_chunking(blob: bytes, seed: int) -> None:
    rng = random.Random(seed)
    data = blob[: rng.randrange(1, 20 * MiB)]
    h = modelcas.Hasher()
    pos = 0
    snapshot = None
    while pos < len(data):
        step = rng.choice([1, 7, 4096, 65_535, 65_536, MiB, 17 * MiB])
        h.update(data[pos : pos + step])
        pos += step
        if snapshot is None and pos > len(data) // 2:
            snapshot = (h.copy(), pos)
    got = h.hashes()
    assert (got.sha256, got.blake3, got.size) == (ref_sha256(data), ref_blake3(data), len(data))
    assert snapshot is not None
    twin, at = snapshot
    assert twin.hashes().sha256 == ref_sha256(data[:at])
    twin.update(data[at:])
    assert twin.hashes() == got
    assert h.hashes() == got, "reading the digest does not end the stream"


def test_many_files_keep_order_and_report_failures(tmp_path: Path, blob: bytes) -> None:
    paths: list[Path] = []
    for i in range(300):
        p = tmp_path / f"f{i:03d}"
        p.write_bytes(blob[i * 1000 : i * 1000 + i * 37])
        paths.append(p)
    missing = tmp_path / "gone.pt"
    a_dir = tmp_path / "adir"
    a_dir.mkdir()
    mixed = [*paths[:100], missing, *paths[100:200], a_dir, *paths[200:]]
    results = modelcas.hash_files(mixed)
    assert len(results) == len(mixed)
    for p, r in zip(mixed, results, strict=True):
        if p == missing:
            assert isinstance(r, FileNotFoundError)
            assert r.filename == str(missing)
            assert str(missing) in str(r)
        elif p == a_dir:
            assert isinstance(r, IsADirectoryError)
            assert r.filename == str(a_dir)
        else:
            assert isinstance(r, modelcas.Hashes)
            assert r.sha256 == ref_sha256(p.read_bytes())


def test_single_file_errors_are_typed(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        modelcas.hash_file(tmp_path / "nope.pt")
    assert "nope.pt" in str(e.value)
    with pytest.raises(IsADirectoryError):
        modelcas.hash_file(tmp_path)


def test_copy_while_hashing(tmp_path: Path, blob: bytes) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(blob[: 18 * MiB + 5])
    dst = tmp_path / "dst.bin"
    seen: list[int] = []
    h = modelcas.copy_file(src, dst, progress=seen.append)
    assert dst.read_bytes() == src.read_bytes()
    assert h.sha256 == ref_sha256(src.read_bytes())
    assert h.blake3 == ref_blake3(src.read_bytes())
    assert sum(seen) <= h.size
    with pytest.raises(FileExistsError):
        modelcas.copy_file(src, dst)
    with pytest.raises(FileNotFoundError):
        modelcas.copy_file(tmp_path / "missing", tmp_path / "x")


# Durable copies write aligned pieces with O_DIRECT and the rest through the page cache.
@pytest.mark.parametrize("size", [0, 1, 4096, 4 * MiB, 8 * MiB + 4096, 9 * MiB + 5])
@pytest.mark.parametrize("fsync", [True, False])
def test_copy_file_every_write_path(tmp_path: Path, blob: bytes, size: int, fsync: bool) -> None:
    data = blob[:size]
    src, dst = tmp_path / "src.bin", tmp_path / "dst.bin"
    src.write_bytes(data)
    h = modelcas.copy_file(src, dst, fsync=fsync)
    assert dst.read_bytes() == data
    assert (h.size, h.sha256, h.blake3) == (size, ref_sha256(data), ref_blake3(data))


def test_progress_reports_all_bytes(tmp_path: Path) -> None:
    p = tmp_path / "big.bin"
    with open(p, "wb") as f:
        f.truncate(600 * MiB)
    seen: list[int] = []
    modelcas.hash_file(p, mmap=False, progress=seen.append)
    assert sum(seen) <= 600 * MiB
    assert len(seen) >= 1


def test_gil_is_released(tmp_path: Path) -> None:
    p = tmp_path / "big.bin"
    with open(p, "wb") as f:
        f.truncate(1024 * MiB)
    done = threading.Event()
    ticks = 0

    def work() -> None:
        modelcas.hash_file(p, mmap=False)
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert ticks > 20, "the main thread should run while hashing"


def _run_child(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_ctrl_c_interrupts_within_a_fraction_of_a_second() -> None:
    # /dev/zero never ends, so only cancellation can stop the hash.
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent("""
            import sys, time, modelcas
            print("ready", flush=True)
            t = time.monotonic()
            try:
                modelcas.hash_file("/dev/zero")
            except KeyboardInterrupt:
                print("interrupted", time.monotonic(), flush=True)
                sys.exit(42)
        """),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=10)
    line = proc.stdout.read()
    assert rc == 42, line
    stopped = float(line.split()[1])
    assert stopped - sent < 0.5


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_works_after_fork(tmp_path: Path, blob: bytes) -> None:
    p = tmp_path / "w.bin"
    p.write_bytes(blob[: 20 * MiB])
    want = ref_sha256(blob[: 20 * MiB])
    result = _run_child(
        f"""
        import os, sys, modelcas
        p = {str(p)!r}
        assert modelcas.hash_file(p).sha256 == {want!r}          # parent's pool is running
        pid = os.fork()
        if pid == 0:
            ok = modelcas.hash_file(p).sha256 == {want!r}
            ok &= modelcas.hash_files([p, p])[1].sha256 == {want!r}
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))
    """,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def test_core_version_matches_package() -> None:
    assert _core.__version__ == modelcas.__version__
