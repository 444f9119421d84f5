"""`cas hash` against the real sha256sum and b3sum."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.refs import ref_blake3, ref_sha256

Cas = Callable[..., subprocess.CompletedProcess[bytes]]
NAMES = [
    b"plain.pt",
    b"with space.pt",
    b"back\\slash",
    b"new\nline",
    b"car\rriage",
    b"\xff\xfe.bin",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "w"
    d.mkdir()
    for i, name in enumerate(NAMES):
        (d / name.decode("utf-8", "surrogateescape")).write_bytes(bytes([i]) * (i * 1000 + 1))
    return d


def _names(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def test_default_output_is_byte_identical_to_sha256sum(cas: Cas, tree: Path) -> None:
    names = _names(tree)
    ours = cas("hash", *names, cwd=tree)
    theirs = subprocess.run(["sha256sum", *names], cwd=tree, capture_output=True, check=True)
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout == theirs.stdout
    # And sha256sum itself accepts our output.
    check = subprocess.run(
        ["sha256sum", "-c", "-"], cwd=tree, input=ours.stdout, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_blake3_output_checks_with_b3sum(cas: Cas, tree: Path) -> None:
    utf8 = [n for n in _names(tree) if n.isprintable() or "\n" in n or "\r" in n]
    utf8 = [n for n in utf8 if "\udcff" not in n]
    ours = cas("hash", "--algo", "blake3", *utf8, cwd=tree)
    theirs = subprocess.run(["b3sum", *utf8], cwd=tree, capture_output=True, check=True)
    assert ours.stdout == theirs.stdout
    check = subprocess.run(
        ["b3sum", "-c", "-"], cwd=tree, input=ours.stdout, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_check_reads_files_written_by_sha256sum_and_b3sum(cas: Cas, tree: Path) -> None:
    names = _names(tree)
    sums = subprocess.run(["sha256sum", *names], cwd=tree, capture_output=True, check=True)
    (tree.parent / "all.sha256").write_bytes(sums.stdout)
    r = cas("hash", "--check", tree.parent / "all.sha256", cwd=tree)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(b": OK\n") == len(names)
    # Binary-mode and BSD-tag lines too.
    tagged = subprocess.run(
        ["sha256sum", "--tag", "-b", "plain.pt"], cwd=tree, capture_output=True, check=True
    )
    binary = subprocess.run(
        ["sha256sum", "-b", "plain.pt"], cwd=tree, capture_output=True, check=True
    )
    (tree / "x.sha256").write_bytes(tagged.stdout + binary.stdout)
    assert cas("hash", "-c", "x.sha256", cwd=tree).returncode == 0

    utf8 = ["plain.pt", "with space.pt", "back\\slash", "new\nline"]
    b3 = subprocess.run(["b3sum", *utf8], cwd=tree, capture_output=True, check=True)
    (tree / "sums.b3").write_bytes(b3.stdout)
    r = cas("hash", "--check", "sums.b3", cwd=tree)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count(b": OK\n") == 4


def test_check_reports_mismatch_and_missing(cas: Cas, tree: Path) -> None:
    sums = subprocess.run(
        ["sha256sum", "plain.pt", "with space.pt"], cwd=tree, capture_output=True, check=True
    )
    sumfile = tree / "s.sha256"
    sumfile.write_bytes(sums.stdout)
    (tree / "plain.pt").write_bytes(b"tampered")
    (tree / "with space.pt").unlink()
    r = cas("hash", "-c", sumfile, cwd=tree)
    assert r.returncode == 1
    assert b"plain.pt: FAILED\n" in r.stdout
    assert b"with space.pt: FAILED open or read\n" in r.stdout
    assert b"did NOT match" in r.stderr
    quiet = cas("hash", "-c", "--status", sumfile, cwd=tree)
    assert (quiet.returncode, quiet.stdout) == (1, b"")
    ignore = cas("hash", "-c", "--ignore-missing", "--quiet", sumfile, cwd=tree)
    assert ignore.returncode == 1
    assert ignore.stdout == b"plain.pt: FAILED\n"


def test_sidecar_checks_from_another_directory(cas: Cas, tmp_path: Path) -> None:
    d = tmp_path / "bundles"
    d.mkdir()
    (d / "model_collection_20251218.zip").write_bytes(b"PK fake bundle")
    sidecar = subprocess.run(
        ["sha256sum", "model_collection_20251218.zip"], cwd=d, capture_output=True, check=True
    ).stdout
    (d / "model_collection_20251218.zip.sha256").write_bytes(sidecar)
    r = cas("hash", "-c", "bundles/model_collection_20251218.zip.sha256", cwd=tmp_path)
    assert r.returncode == 0, r.stderr


def test_both_and_json(cas: Cas, tree: Path) -> None:
    data = (tree / "plain.pt").read_bytes()
    r = cas("hash", "--algo", "both", "plain.pt", cwd=tree)
    assert (
        r.stdout
        == (
            f"sha256:{ref_sha256(data)}  blake3:{ref_blake3(data)}  {len(data)}  plain.pt\n"
        ).encode()
    )
    j = cas("hash", "--json", "-r", ".", cwd=tree)
    assert j.returncode == 0
    doc = json.loads(j.stdout)
    assert doc["schema"] == "cas.hash/1"
    records = doc["files"]
    assert len(records) == len(NAMES)
    plain = next(x for x in records if x["path"].endswith("plain.pt"))
    assert plain == {
        "path": "./plain.pt",
        "size": len(data),
        "sha256": ref_sha256(data),
        "blake3": ref_blake3(data),
    }


def test_stdin_and_recursive_order(cas: Cas, tree: Path) -> None:
    r = cas("hash", "-", input=b"hello\n")
    digest = ref_sha256(b"hello\n")
    assert r.stdout == f"{digest}  -\n".encode()
    sub = tree / "sub"
    sub.mkdir()
    (sub / "z").write_bytes(b"z")
    rec = cas("hash", "-r", ".", cwd=tree)
    theirs = subprocess.run(
        "find . -type f -print0 | xargs -0 sha256sum",
        shell=True,
        cwd=tree,
        capture_output=True,
        check=True,
    )
    assert b"./sub/z" in rec.stdout
    assert sorted(rec.stdout.split(b"\n")) == sorted(theirs.stdout.split(b"\n"))
    # Directories are walked in sorted order, files before subdirectories.
    assert rec.stdout.index(b"with space.pt") < rec.stdout.index(b"./sub/z")


def test_exit_codes(cas: Cas, tree: Path) -> None:
    assert cas("hash", "plain.pt", cwd=tree).returncode == 0
    missing = cas("hash", "plain.pt", "nope.pt", cwd=tree)
    assert missing.returncode == 1
    assert b"nope.pt" in missing.stderr
    assert missing.stdout.endswith(b"  plain.pt\n"), "good files still print"
    assert cas("hash", ".", cwd=tree).returncode == 1
    assert cas("hash", "--algo", "md5", "plain.pt", cwd=tree).returncode == 2
    assert cas("hash", "--check", "--json", "x", cwd=tree).returncode == 2
    assert cas("hash", "--check", "--algo", "both", "x", cwd=tree).returncode == 2
    (tree / "junk.sha256").write_bytes(b"not a checksum line\n")
    assert cas("hash", "-c", "junk.sha256", cwd=tree).returncode == 1


def test_help_teaches(cas: Cas) -> None:
    r = cas("hash", "--help")
    assert r.returncode == 0
    for word in (b"sha256sum", b"--check", b"examples", b"exit status"):
        assert word in r.stdout
    top = cas("--help")
    assert b"hash" in top.stdout


def _deeper_than_path_max(top: Path) -> None:
    """A file under top/, at a path longer than PATH_MAX (made one directory fd at a time)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(300):  # 300 x 21 characters
            os.mkdir("d" * 20, dir_fd=fd)
            inner = os.open("d" * 20, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        leaf = os.open("w.bin", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep")
        os.close(leaf)
    finally:
        os.close(fd)


def test_recursive_names_a_directory_it_cannot_read_never_skips_it(
    cas: Cas, tmp_path: Path
) -> None:
    # os.walk drops what it cannot list; a checksum list missing a file without a word, and
    # exit 0, would say the tree was covered.
    top = tmp_path / "top"
    top.mkdir()
    (top / "a.bin").write_bytes(b"a")
    _deeper_than_path_max(top)
    # ... and what it finds that is not a regular file is named, never waited on or read.
    os.mkfifo(top / "fifo")
    (top / "zeros").symlink_to("/dev/zero")
    for extra in ((), ("--json",)):
        r = cas("hash", "-r", *extra, "top", cwd=tmp_path)
        assert r.returncode == 1, r.stdout
        assert b"File name too long" in r.stderr and b"Traceback" not in r.stderr
        assert b"top/fifo: " in r.stderr and b"top/zeros: " in r.stderr, r.stderr
        assert b"a.bin" in r.stdout, "what could be read is still listed"
    doc = json.loads(cas("hash", "-r", "--json", "top", cwd=tmp_path).stdout)
    assert any("File name too long" in e for e in doc["errors"]), doc
