"""Hostile bundles, through the public API and the real `cas` command.

Every hostile archive must be refused with an error that names the member (or the archive) and
the rule or limit it breaks; nothing may be written outside the destination, no partial output
may be left (no stray extracted file, no store object, an empty store tmp/), and the CLI must
exit 1 with `cas: error:` and no traceback.

Every archive is generated here: valid bundles with `create_model_bundle`, hostile ones byte by
byte with struct (and zlib, and the `zstd` command for real zstd frames), each breaking one
rule inside an otherwise well-formed modelcas bundle (with a config and a manifest that lists
the hostile member), so that a reader which skipped the check would go on to write it. The
Rust reader's own tests cover the same cases at its level; these cover the path a user takes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest

from modelcas import bundle as bundles
from modelcas.errors import ArchiveLimitError, BundleError, IntegrityError, UnsafeArchiveError
from modelcas.store import Store

MiB = 1 << 20
STORED, DEFLATE, ZSTD = 0, 8, 93
UTF8 = 0x800
MADE_BY_UNIX = 3 << 8 | 20
REGULAR = 0o100644
MAX32 = 0xFFFFFFFF
SIG_LOCAL, SIG_CENTRAL, SIG_END = 0x04034B50, 0x02014B50, 0x06054B50
LOCAL_LEN = 30

# -- building archives by hand -------------------------------------------------------------


@dataclass
class Raw:
    """One member, written record by record; every field a hostile archive may lie in."""

    name: str | bytes
    content: bytes = b"weights"  # what the member decompresses to
    data: bytes | None = None  # the bytes in the archive (default: content, stored)
    method: int = STORED
    mode: int = REGULAR
    size: int | None = None  # declared uncompressed size (default: len(content))
    local_name: bytes | None = None
    local_size: int | None = None  # the local header's size and compressed size
    central_sizes32: tuple[int, int] | None = None  # central (size, compressed) 32-bit fields
    local_sizes32: tuple[int, int] | None = None
    central_extra: bytes = b""
    local_extra: bytes = b""
    emit_local: bool = True  # False: only a central entry, pointing at `points_at`
    points_at: tuple[str, bool] | None = None  # (other member, at its data rather than header)
    in_manifest: bool = True

    @property
    def raw_name(self) -> bytes:
        return self.name if isinstance(self.name, bytes) else self.name.encode()

    @property
    def stored(self) -> bytes:
        return self.content if self.data is None else self.data

    @property
    def declared(self) -> int:
        return len(self.content) if self.size is None else self.size


def local_record(e: Raw) -> bytes:
    """Local header, name, extra field and data of one member."""
    name = e.raw_name if e.local_name is None else e.local_name
    size = csize = e.local_size
    if size is None:
        size, csize = e.local_sizes32 or (e.declared, len(e.stored))
    head = struct.pack(
        "<IHHHHHIIIHH",
        SIG_LOCAL,
        20,
        UTF8,
        e.method,
        0,
        0x21,
        zlib.crc32(e.content),
        csize,
        size,
        len(name),
        len(e.local_extra),
    )
    return head + name + e.local_extra + e.stored


def build(entries: Sequence[Raw], *, comment: bytes = b"", trailing: bytes = b"") -> bytes:
    """A zip archive of `entries`, byte by byte."""
    out = bytearray()
    own: dict[int, int] = {}  # entry index -> its local header's offset
    by_name: dict[str, tuple[int, int]] = {}  # first of that name -> (header, data) offsets
    for i, e in enumerate(entries):
        if e.emit_local:
            record = local_record(e)
            own[i] = len(out)
            data_at = len(out) + len(record) - len(e.stored)
            by_name.setdefault(os.fsdecode(e.raw_name), (len(out), data_at))
            out += record
    cd_offset = len(out)
    for i, e in enumerate(entries):
        if e.points_at is None:
            offset = own[i]
        else:
            other, inside = e.points_at
            offset = by_name[other][1 if inside else 0]
        csize32, size32 = len(e.stored), e.declared
        if e.central_sizes32 is not None:
            size32, csize32 = e.central_sizes32
        out += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            SIG_CENTRAL,
            MADE_BY_UNIX,
            20,
            UTF8,
            e.method,
            0,
            0x21,
            zlib.crc32(e.content),
            csize32,
            size32,
            len(e.raw_name),
            len(e.central_extra),
            0,
            0,
            0,
            e.mode << 16,
            offset,
        )
        out += e.raw_name + e.central_extra
    n = len(entries)
    out += struct.pack("<IHHHHIIH", SIG_END, 0, 0, n, n, len(out) - cd_offset, cd_offset, 0)
    if comment:
        out[-2:] = struct.pack("<H", len(comment))
        out += comment
    return bytes(out + trailing)


def zip64_extra(*values: int) -> bytes:
    return struct.pack("<HH", 1, 8 * len(values)) + b"".join(struct.pack("<Q", v) for v in values)


@functools.cache
def digest(content: bytes) -> dict[str, object]:
    return {
        "sha256": hashlib.sha256(content).hexdigest(),
        "blake3": blake3.blake3(content).hexdigest(),
        "size": len(content),
        "crc32": zlib.crc32(content),
    }


GOOD = "models/Unet-good.bin"
GOOD_CONTENT = b"good weights " * 100


CONFIG = (
    "_bundle_metadata:\n  format: 1\n  manifest: modelcas-manifest.json\n"
    f"good:\n  model_path: {GOOD}\n  model_type: Unet\n"
).encode()


def modelcas_bundle(
    hostile: Sequence[Raw],
    *,
    good_first: bool = False,
    config: bytes = CONFIG,
    manifest: bytes | None = None,
) -> list[Raw]:
    """`hostile` inside an otherwise valid modelcas bundle: a good model, config and manifest.

    The manifest lists the hostile members with the digests of their content, so a reader
    that skipped the archive checks would verify them and write them out.
    """
    good = Raw(GOOD, GOOD_CONTENT)
    members = [good, *hostile] if good_first else [*hostile, good]
    members.append(Raw("config.yml", config))
    if manifest is None:
        # The size the archive declares: a manifest that agrees with a lying header leaves the
        # lie for the reader's own bounds to catch.
        listed = {
            os.fsdecode(m.raw_name): {**digest(m.content), "size": m.declared}
            for m in members
            if m.in_manifest
        }
        manifest = json.dumps({"members": listed, "version": 1}, sort_keys=True).encode()
    return [*members, Raw(bundles.MANIFEST, manifest, in_manifest=False)]


@functools.cache
def deflated_zeros(n: int) -> tuple[bytes, bytes]:
    """`n` zero bytes and their raw deflate stream (level 9)."""
    zeros = bytes(n)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return zeros, c.compress(zeros) + c.flush()


@functools.cache
def zstd_cli(n: int, *args: str) -> bytes:
    """`n` zero bytes compressed by the `zstd` command, fed through a pipe (size unknown)."""
    if shutil.which("zstd") is None:
        pytest.skip("the zstd command is not installed")
    return subprocess.run(
        ["zstd", "-q", "-c", *args], input=bytes(n), capture_output=True, check=True
    ).stdout


# Fed through a pipe, so with no known size to shrink it to, the frame keeps its 2 GiB window
# (2^31, over the default 2^27 limit). Level 3 rather than --ultra -22: the same window header,
# in a tenth of the time.
BIG_WINDOW = ("-3", "--long=31")
BIG_WINDOW_N = 512 << 10


def zstd_member(name: str, n: int, *args: str) -> Raw:
    return Raw(name, bytes(n), data=zstd_cli(n, *args), method=ZSTD)


# -- the cases ------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    hostile: Callable[[Path], list[Raw]]  # tmp_path -> the hostile members
    error: type[BundleError]
    needles: tuple[str, ...]  # in the message; "{tmp}" and "{zip}" are filled in
    at_open: bool = True  # refused when the archive is opened (else when a member is read)
    comment: bytes = b""
    trailing: bytes = b""

    def make(self, tmp: Path, *, good_first: bool = False) -> bytes:
        members = modelcas_bundle(self.hostile(tmp), good_first=good_first)
        return build(members, comment=self.comment, trailing=self.trailing)


def _fifield(_: Path) -> list[Raw]:
    # The outer member's data is the whole local record of the inner one: two names, one
    # region of the file (David Fifield's overlapping-files construction).
    inner = Raw("models/inner.bin", b"inner weights")
    outer = Raw("models/outer.bin", local_record(inner))
    phantom = Raw(
        "models/inner.bin",
        b"inner weights",
        emit_local=False,
        points_at=("models/outer.bin", True),
    )
    return [outer, phantom]


def _shared_header(_: Path) -> list[Raw]:
    # Two central entries, one local header.
    twin = Raw("models/twin.bin", b"shared", emit_local=False, points_at=("models/a.bin", False))
    return [Raw("models/a.bin", b"shared"), twin]


def _zstd_second_frame(_: Path) -> list[Raw]:
    # A first frame with a small window, then one that asks for a 2 GiB window: only the
    # decoder's own window limit can catch it, while the member is read.
    data = zstd_cli(4096, "-3") + zstd_cli(BIG_WINDOW_N, *BIG_WINDOW)
    return [Raw("models/window2.bin", bytes(4096 + BIG_WINDOW_N), data, ZSTD)]


def one(*args: object, **kwargs: object) -> Callable[[Path], list[Raw]]:
    return lambda _: [Raw(*args, **kwargs)]  # type: ignore[arg-type]


HIDDEN_END_RECORD = build([Raw("models/other.bin")])[-22:]  # another archive's end record

CASES = [
    Case(
        "dotdot",
        one("models/../../evil.bin"),
        UnsafeArchiveError,
        ("member 'models/../../evil.bin': name escapes the bundle (contains '..')",),
    ),
    Case(
        "absolute",
        lambda tmp: [Raw(f"{tmp}/outside/abs.bin")],
        UnsafeArchiveError,
        ("member '{tmp}/outside/abs.bin': name is an absolute path",),
    ),
    Case(
        "drive-letter",
        one("C:/Windows/evil.bin"),
        UnsafeArchiveError,
        ("member 'C:/Windows/evil.bin': name contains a drive letter",),
    ),
    Case(
        "backslash",
        one("models\\..\\..\\evil.bin"),
        UnsafeArchiveError,
        (r"member 'models\\..\\..\\evil.bin': name contains a backslash",),
    ),
    Case(
        "nul",
        one("models/evil\0.bin"),
        UnsafeArchiveError,
        (r"member 'models/evil\0.bin': name contains a NUL byte",),
    ),
    Case(
        "symlink",
        one("models/link.bin", b"../../../../etc/passwd", mode=0o120777),
        UnsafeArchiveError,
        ("member 'models/link.bin': it is a symbolic link",),
    ),
    Case(
        "char-device",
        one("models/dev.bin", b"", mode=0o020644),
        UnsafeArchiveError,
        ("member 'models/dev.bin': it is a device or special file (mode 20000)",),
    ),
    Case(
        "fifo",
        one("models/fifo.bin", b"", mode=0o010644),
        UnsafeArchiveError,
        ("member 'models/fifo.bin': it is a device or special file (mode 10000)",),
    ),
    Case(
        "setuid",
        one("models/run.sh", b"#!/bin/sh\n", mode=0o104755),
        UnsafeArchiveError,
        ("member 'models/run.sh': it has the setuid or setgid bit (mode 4755)",),
    ),
    Case(
        "duplicate",
        lambda _: [Raw("models/a.bin", b"first"), Raw("models/a.bin", b"second")],
        UnsafeArchiveError,
        ("member 'models/a.bin': duplicate name",),
    ),
    Case(
        "duplicate-casefold",
        lambda _: [Raw("models/Model.bin", b"one"), Raw("models/model.BIN", b"two")],
        UnsafeArchiveError,
        (
            "member 'models/model.BIN': name collides with 'models/Model.bin' "
            "(they differ only in case",
        ),
    ),
    Case(
        "overlap-fifield",
        _fifield,
        UnsafeArchiveError,
        (
            "member 'models/inner.bin': it starts at offset",
            "inside member 'models/outer.bin'",
            "overlapping entries",
        ),
    ),
    Case(
        "overlap-shared-header",
        _shared_header,
        UnsafeArchiveError,
        (
            "member 'models/twin.bin': its local header names it 'models/a.bin' "
            "(local and central headers disagree)",
        ),
    ),
    Case(
        "local-name-mismatch",
        one("models/a.bin", local_name=b"models/b.bin"),
        UnsafeArchiveError,
        (
            "member 'models/a.bin': its local header names it 'models/b.bin' "
            "(local and central headers disagree)",
        ),
    ),
    Case(
        "local-size-mismatch",
        one("models/a.bin", b"AAAA", local_size=999),
        UnsafeArchiveError,
        (
            "member 'models/a.bin': local header says crc32",
            "size 999, compressed size 999",
            "(local and central headers disagree)",
        ),
    ),
    Case(
        "trailing-junk",
        lambda _: [],
        UnsafeArchiveError,
        ("{zip}: 18 bytes of trailing data follow the end-of-central-directory record",),
        trailing=b"junk after the end",
    ),
    Case(
        "two-end-records",
        lambda _: [],
        UnsafeArchiveError,
        ("{zip}: it has two end-of-central-directory records",),
        comment=HIDDEN_END_RECORD,
    ),
    Case(
        "deflate-ratio",
        lambda _: [Raw("models/bomb.bin", *deflated_zeros(64 * MiB), DEFLATE)],
        ArchiveLimitError,
        ("member 'models/bomb.bin': compression ratio", "exceeds the limit 1000:1 (max_ratio)"),
    ),
    Case(
        "zstd-ratio",
        lambda _: [zstd_member("models/zbomb.bin", 8 * MiB, "-19")],
        ArchiveLimitError,
        ("member 'models/zbomb.bin': compression ratio", "exceeds the limit 1000:1 (max_ratio)"),
    ),
    Case(
        "zstd-window",
        lambda _: [zstd_member("models/window.bin", BIG_WINDOW_N, *BIG_WINDOW)],
        ArchiveLimitError,
        (
            "member 'models/window.bin': its zstd frame needs a 2147483648-byte window, "
            "over the limit of 134217728 bytes (zstd_window_log_max 27)",
        ),
    ),
    Case(
        "zip64-not-deferred",
        # A ZIP64 field claiming 1 TiB although the 32-bit sizes do not defer to it.
        one("models/z64.bin", b"AAAA", central_extra=zip64_extra(4, 1 << 40)),
        UnsafeArchiveError,
        (
            "member 'models/z64.bin': its ZIP64 extra field holds 16 bytes, but the header "
            "defers 0 bytes to it (lying ZIP64 sizes)",
        ),
    ),
    Case(
        "zip64-local-contradicts",
        one("models/z64.bin", b"AAAA", local_extra=zip64_extra(4, 1 << 40)),
        UnsafeArchiveError,
        (
            "member 'models/z64.bin': its local header says 4 and its ZIP64 extra field "
            "1099511627776 for the same size (lying ZIP64 sizes)",
        ),
    ),
    Case(
        "zip64-huge-declared",
        # Consistent ZIP64 records that declare 64 GiB for 4 bytes of data: nothing may be
        # allocated from that; refused because the data would run over the central directory.
        one(
            "models/z64.bin",
            b"AAAA",
            central_sizes32=(MAX32, MAX32),
            local_sizes32=(MAX32, MAX32),
            central_extra=zip64_extra(1 << 36, 1 << 36),
            local_extra=zip64_extra(1 << 36, 1 << 36),
        ),
        UnsafeArchiveError,
        ("member 'models/z64.bin': its data runs into the central directory",),
    ),
    Case(
        "deflate-lies-about-size",
        # Declares 1000 bytes (so the ratio looks fine), inflates to 2 MiB: caught on reading.
        lambda _: [Raw("models/liar.bin", *deflated_zeros(2 * MiB), DEFLATE, size=1000)],
        ArchiveLimitError,
        ("member 'models/liar.bin': decompresses to more than the 1000 bytes it declares",),
        at_open=False,
    ),
    Case(
        "zstd-window-second-frame",
        _zstd_second_frame,
        ArchiveLimitError,
        (
            "member 'models/window2.bin': its zstd data needs a window over the limit of "
            "2^27 bytes (zstd_window_log_max)",
        ),
        at_open=False,
    ),
]


# -- helpers --------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (links not followed), with the bytes of regular files."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = p.read_bytes() if p.is_file() and not p.is_symlink() else None
    return out


def files_under(root: Path) -> list[str]:
    return sorted(k for k, v in tree(root).items() if v is not None) if root.exists() else []


def assert_store_clean(root: Path, *, allowed: frozenset[str] = frozenset()) -> None:
    """No objects (but `allowed` sha256s), nothing left in tmp/, no gc root recorded."""
    if not root.exists():
        return
    objects = {p.name for p in (root / "objects").rglob("*") if p.is_file()}
    assert objects <= allowed, f"objects left in the store: {sorted(objects - allowed)}"
    assert files_under(root / "tmp") == [], "leftovers in the store's tmp/"
    assert files_under(root / "roots") == [], "a refused bundle was registered as a gc root"


def message(case: Case, tmp: Path, zip_path: Path) -> list[str]:
    return [n.replace("{tmp}", str(tmp)).replace("{zip}", str(zip_path)) for n in case.needles]


def run_cas_concurrently(
    tmp: Path, commands: dict[str, list[str]]
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run several `python -m modelcas` commands at once, each with its own store."""
    procs = {}
    for key, argv in commands.items():
        env = {**os.environ, "MODELCAS_HOME": str(tmp / f"store-{key}"), "CAS_NO_PROGRESS": "1"}
        procs[key] = subprocess.Popen(
            [sys.executable, "-m", "modelcas", *argv],
            cwd=tmp,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for key, p in procs.items():
        out, err = p.communicate(timeout=120)
        results[key] = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    return results


def assert_refused_cleanly(r: subprocess.CompletedProcess[str], needles: list[str]) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.stderr.startswith("cas: error: "), r.stderr
    for needle in needles:
        assert needle in r.stderr, f"{needle!r} not in {r.stderr!r}"


# -- hostile archives -----------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_archive_is_refused_by_the_api(case: Case, tmp_path: Path) -> None:
    zip_path = tmp_path / "hostile.zip"
    zip_path.write_bytes(case.make(tmp_path))
    needles = message(case, tmp_path, zip_path)
    store = Store(tmp_path / "store")
    dest = tmp_path / "dest"
    before = tree(tmp_path)

    def check(err: BundleError) -> None:
        assert type(err) is case.error, repr(err)
        assert err.exit_code == 1
        for needle in needles:
            assert needle in str(err), f"{needle!r} not in {str(err)!r}"

    if case.at_open:
        for attempt in (
            lambda: bundles.Bundle.read(zip_path, store=store),
            lambda: bundles.read_manifest(zip_path),
            lambda: bundles.open(zip_path, store=store),
        ):
            with pytest.raises(UnsafeArchiveError) as info:
                attempt()
            check(info.value)
    else:
        b = bundles.Bundle.read(zip_path, store=store)
        for attempt in (b.verify, lambda: b.extract(dest), b.ingest):
            with pytest.raises(UnsafeArchiveError) as info:
                attempt()
            check(info.value)
        with pytest.raises(UnsafeArchiveError) as info:
            bundles.open(zip_path, store=store)
        check(info.value)

    assert not dest.exists()  # not even an empty directory
    assert_store_clean(tmp_path / "store")
    after = {k: v for k, v in tree(tmp_path).items() if not k.startswith(("store", "dest"))}
    assert after == {k: v for k, v in before.items() if not k.startswith("store")}
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "evil.bin").exists()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_archive_is_refused_by_the_cli(case: Case, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    zip_path = work / "hostile.zip"
    zip_path.write_bytes(case.make(tmp_path))
    needles = message(case, tmp_path, zip_path)
    before = tree(work)
    # Every action refuses; `extract` (the one that writes) always runs, the others by turns,
    # all of them where the bomb only goes off while a member is read.
    actions = {
        "verify": ["bundle", "verify", str(zip_path)],
        "add": ["bundle", "add", str(zip_path)],
        "ls": ["bundle", "ls", str(zip_path), "--json"],
    }
    commands = {"extract": ["bundle", "extract", str(zip_path), "-d", str(tmp_path / "dest")]}
    if case.at_open:
        key = list(actions)[CASES.index(case) % len(actions)]
        commands[key] = actions[key]
    else:
        commands.update(verify=actions["verify"], add=actions["add"])
    results = run_cas_concurrently(tmp_path, commands)
    for key, r in results.items():
        assert "OK" not in r.stdout, (key, r.stdout)
        assert_refused_cleanly(r, needles)
        assert_store_clean(tmp_path / f"store-{key}")
    assert files_under(tmp_path / "dest") == []
    assert tree(work) == before
    assert {p.name for p in tmp_path.iterdir()} <= {"work", *(f"store-{k}" for k in commands)}


def test_the_hand_built_bundle_is_valid_without_a_hostile_member(tmp_path: Path) -> None:
    # The control for every case above: the same construction, minus the hostile member, is
    # accepted by modelcas and by Python's zipfile, and extracts.
    zip_path = tmp_path / "fine.zip"
    extra = [
        Raw("models/extra.bin", *deflated_zeros(4096), DEFLATE),
        zstd_member("models/z.bin", 4096, "-3"),
    ]
    zip_path.write_bytes(build(modelcas_bundle(extra)))
    with zipfile.ZipFile(zip_path) as z:
        assert z.read("models/extra.bin") == bytes(4096)
        assert z.read(GOOD) == GOOD_CONTENT
    b = bundles.Bundle.read(zip_path, store=Store(tmp_path / "store"))
    assert b.verify() == []
    b.extract(tmp_path / "dest")
    assert (tmp_path / "dest" / GOOD).read_bytes() == GOOD_CONTENT
    assert (tmp_path / "dest" / "models/extra.bin").read_bytes() == bytes(4096)
    assert (tmp_path / "dest" / "models/z.bin").read_bytes() == bytes(4096)


MID_READ = [c for c in CASES if not c.at_open]


@pytest.mark.parametrize("case", MID_READ, ids=[c.id for c in MID_READ])
def test_failing_midway_leaves_no_partial_output(case: Case, tmp_path: Path) -> None:
    # The good member comes first and is written before the bomb is reached: it must go too.
    zip_path = tmp_path / "hostile.zip"
    zip_path.write_bytes(case.make(tmp_path, good_first=True))
    needles = message(case, tmp_path, zip_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "mine.txt").write_text("already here")
    store = Store(tmp_path / "store")
    b = bundles.Bundle.read(zip_path, store=store)
    with pytest.raises(ArchiveLimitError) as info:
        b.extract(dest)
    for needle in needles:
        assert needle in str(info.value)
    assert sorted(tree(dest)) == ["mine.txt"]
    with pytest.raises(ArchiveLimitError):
        bundles.open(zip_path, store=store)
    # The good member was verified and may stay (objects are shared and content-addressed);
    # the bomb is not stored, tmp/ is empty and the bundle is not a gc root.
    assert_store_clean(
        tmp_path / "store", allowed=frozenset({hashlib.sha256(GOOD_CONTENT).hexdigest()})
    )

    r = run_cas_concurrently(
        tmp_path, {"extract": ["bundle", "extract", str(zip_path), "-d", str(dest)]}
    )["extract"]
    assert_refused_cleanly(r, needles)
    assert sorted(tree(dest)) == ["mine.txt"]


# -- hostile configs and manifests: refused with a BundleError, never a traceback -----------


def _alias_bomb(levels: int = 7) -> bytes:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    return (
        "\n".join(lines).encode()
        + b"\n"
        + CONFIG.replace(
            b"  model_type: Unet\n",
            f"  model_type: Unet\n  inferer_args: {{bomb: *l{levels - 1}}}\n".encode(),
        )
    )


BAD_DOCS = [
    pytest.param(
        {"manifest": b"[" * 100_000},
        "modelcas-manifest.json is malformed: nested too deeply",
        id="deeply-nested-manifest",
    ),
    pytest.param(
        {"config": b"[" * 100_000},
        "config.yml is nested too deeply to read",
        id="deeply-nested-config",
    ),
    pytest.param(
        {"config": _alias_bomb()},
        "config.yml expands to more than 1000000 values through YAML aliases",
        id="yaml-alias-bomb",
    ),
    pytest.param(
        {"config": b"loop: &loop [*loop]\n" + CONFIG},
        "config.yml is nested more than 64 levels deep, or refers to itself through a YAML alias",
        id="yaml-self-reference",
    ),
    pytest.param(
        {"config": CONFIG.replace(GOOD.encode(), b"[1]")},
        "config.yml: good.model_path should be a str, found [1]",
        id="model-path-not-a-string",
    ),
    pytest.param(
        {"config": CONFIG + b"  inferer_args: 5\n"},
        "config.yml: good.inferer_args should be a dict, found 5",
        id="inferer-args-not-a-mapping",
    ),
    pytest.param(
        {
            "config": CONFIG.replace(
                b"  format: 1\n  manifest: modelcas-manifest.json\n", b"  - 1\n"
            )
        },
        "config.yml: _bundle_metadata is not a mapping",
        id="bundle-metadata-not-a-mapping",
    ),
]


@pytest.mark.parametrize(("docs", "needle"), BAD_DOCS)
def test_hostile_config_or_manifest_is_refused(
    tmp_path: Path, cas, docs: dict[str, bytes], needle: str
) -> None:
    zip_path = tmp_path / "hostile.zip"
    zip_path.write_bytes(build(modelcas_bundle([], **docs)))
    with pytest.raises(BundleError) as info:
        bundles.Bundle.read(zip_path, store=Store(tmp_path / "store"))
    assert f"{zip_path}: {needle}" in str(info.value)
    r = cas("bundle", "ls", zip_path, "--json")
    assert r.returncode == 1, r
    assert b"Traceback" not in r.stderr
    assert r.stderr.startswith(f"cas: error: {zip_path}: {needle}".encode()), r.stderr
    assert_store_clean(tmp_path / "store")


def test_hostile_model_metadata_is_refused(tmp_path: Path) -> None:
    config = CONFIG + b"  model_metadata: metadata/good.json\n"
    zip_path = tmp_path / "hostile.zip"
    zip_path.write_bytes(
        build(modelcas_bundle([Raw("metadata/good.json", b"{not json")], config=config))
    )
    b = bundles.open(zip_path, store=Store(tmp_path / "store"))
    with pytest.raises(BundleError) as info:
        b.models()
    assert f"{zip_path}: good.model_metadata 'metadata/good.json' is not valid JSON" in str(
        info.value
    )


# -- valid bundles: nested archives, altered bytes, the sidecar ---------------------------------


def make_bundle(tmp: Path, weights: dict[str, bytes], model_type: str = "Unet") -> Path:
    """A real bundle made by `create_model_bundle`, one model per entry of `weights`."""
    src = tmp / "src"
    (src / "w").mkdir(parents=True)
    lines = []
    for key, data in weights.items():
        name = f"{key}.bin" if "." not in key else key
        (src / "w" / name).write_bytes(data)
        stem = key.split(".")[0]
        lines += [f"{stem}:", f"  model_path: w/{name}", f"  model_type: {model_type}"]
        lines += ["  inferer_args:", "    patch_size: 64"]
    (src / "config.yml").write_text("\n".join(lines) + "\n")
    out = bundles.create_model_bundle(src / "config.yml", tmp / "b.zip", auto_date=False)
    assert out == tmp / "b.zip"
    assert (tmp / "b.zip.sha256").is_file()
    return out


def data_offset(raw: bytes, name: str) -> tuple[int, zipfile.ZipInfo]:
    """Where a member's data starts in the archive, from its local header."""
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        info = z.getinfo(name)
    head = info.header_offset
    name_len, extra_len = struct.unpack_from("<HH", raw, head + 26)
    return head + LOCAL_LEN + name_len + extra_len, info


def central_offset(raw: bytes, name: str) -> int:
    """Where a member's central directory entry starts."""
    with zipfile.ZipFile(io.BytesIO(raw)) as z:
        at = z.start_dir
    while raw[at : at + 4] == struct.pack("<I", SIG_CENTRAL):
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", raw, at + 28)
        if raw[at + 46 : at + 46 + name_len] == name.encode():
            return at
        at += 46 + name_len + extra_len + comment_len
    raise AssertionError(f"{name} has no central entry")


ALPHA, BETA = os.urandom(5000), os.urandom(3000)
ALPHA_MEMBER, BETA_MEMBER = "models/Unet-alpha.bin", "models/Unet-beta.bin"


def flip_beta(path: Path, *, fix_crc: bool) -> None:
    """Flip one byte inside the stored member `beta`; with `fix_crc`, patch both crc32s too."""
    raw = bytearray(path.read_bytes())
    start, info = data_offset(bytes(raw), BETA_MEMBER)
    assert info.compress_type == zipfile.ZIP_STORED
    raw[start + 1234] ^= 0x40
    if fix_crc:
        crc = struct.pack("<I", zlib.crc32(raw[start : start + info.compress_size]))
        raw[info.header_offset + 14 : info.header_offset + 18] = crc
        at = central_offset(bytes(raw), BETA_MEMBER)
        raw[at + 16 : at + 20] = crc
    path.write_bytes(bytes(raw))


def test_valid_bundle_verifies_and_extracts(tmp_path: Path, cas) -> None:
    # The control for the altered-bundle tests below.
    path = make_bundle(tmp_path, {"alpha": ALPHA, "beta": BETA})
    r = cas("bundle", "verify", path)
    assert r.returncode == 0, r.stderr
    assert b"members match the manifest and its .sha256: OK" in r.stdout
    r = cas("bundle", "extract", path, "-d", tmp_path / "dest")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dest" / BETA_MEMBER).read_bytes() == BETA


def test_nested_archive_is_opaque_bytes(tmp_path: Path, cas) -> None:
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as z:
        z.writestr("inner.txt", b"inside the inner archive")
        z.writestr("../../nested-evil.txt", b"would escape if recursed")
    inner_bytes = inner.getvalue()
    path = make_bundle(tmp_path, {"nested.zip": inner_bytes}, model_type="Archive")
    member = "models/Archive-nested.zip"
    assert member in bundles.read_manifest(path)

    dest = tmp_path / "dest"
    r = cas("bundle", "extract", path, "-d", dest)
    assert r.returncode == 0, r.stderr
    assert files_under(dest) == sorted(
        [member, "metadata/Archive-nested.json", "config.yml", bundles.MANIFEST]
    )
    assert (dest / member).read_bytes() == inner_bytes
    found = {p.name for p in tmp_path.rglob("*")}
    assert "inner.txt" not in found
    assert "nested-evil.txt" not in found

    store = Store(tmp_path / "api-store")
    b = bundles.open(path, store=store)
    assert b.model("nested").path.read_bytes() == inner_bytes
    stored = {o.digest.sha256 for o in store.objects()}
    assert hashlib.sha256(inner_bytes).hexdigest() in stored
    assert hashlib.sha256(b"inside the inner archive").hexdigest() not in stored
    assert len(stored) == len(b.manifest)


@pytest.mark.parametrize("fix_crc", [False, True], ids=["flip", "flip-and-fix-crc32"])
def test_altered_member_is_detected_and_named(tmp_path: Path, cas, fix_crc: bool) -> None:
    path = make_bundle(tmp_path, {"alpha": ALPHA, "beta": BETA})
    original_digest = bundles.read_manifest(path)[BETA_MEMBER]
    flip_beta(path, fix_crc=fix_crc)
    # With the crc32 fixed, only the manifest's digests can tell.
    rule = "blake3 expected" if fix_crc else "crc32 is"
    open_rule = "sha256 is" if fix_crc else "crc32 is"

    b = bundles.Bundle.read(path, store=Store(tmp_path / "store"))
    problems = b.verify()
    assert any(p.startswith(f"member '{BETA_MEMBER}': ") and rule in p for p in problems)
    assert any("differs from" in p and "b.zip.sha256" in p for p in problems), problems
    assert not any(ALPHA_MEMBER in p for p in problems), problems

    r = cas("bundle", "verify", path)
    assert r.returncode == 1
    assert b"Traceback" not in r.stderr
    out = r.stdout.decode()
    assert f"FAILED member '{BETA_MEMBER}': " in out
    assert rule in out
    assert "FAILED b.zip: sha256 " in out
    assert "differs from" in out
    assert ALPHA_MEMBER not in out
    # A failed check, not an error: one summary line (the member and the sidecar).
    assert r.stderr.decode() == f"cas: {path}: 2 problem(s)\n"
    # --deep recomputes sha256 too, which then also differs once the crc32 is fixed.
    deep = cas("bundle", "verify", "--deep", path)
    assert deep.returncode == 1
    assert ("sha256 expected" in deep.stdout.decode()) == fix_crc

    store = Store(tmp_path / "api-store")
    with pytest.raises(IntegrityError) as info:
        bundles.open(path, store=store)
    text = str(info.value)
    assert f"member '{BETA_MEMBER}' does not match the bundle's manifest" in text
    assert open_rule in text
    assert "hint: the bundle is damaged" in text
    assert not store.has(original_digest.sha256)
    assert_store_clean(
        tmp_path / "api-store", allowed=frozenset({hashlib.sha256(ALPHA).hexdigest()})
    )

    for args in (["extract", path, "-d", tmp_path / "dest"], ["add", path]):
        r = cas("bundle", *args)
        assert r.returncode == 1, r
        assert b"Traceback" not in r.stderr
        assert r.stderr.startswith(b"cas: error: ")
        assert f"member '{BETA_MEMBER}'".encode() in r.stderr
    # All or nothing: alpha, extracted before beta failed, was removed again.
    assert not (tmp_path / "dest").exists()
    assert not Store(tmp_path / "store").has(original_digest.sha256)
    assert files_under(tmp_path / "store" / "tmp") == []


def test_sidecar_mismatch_is_reported(tmp_path: Path, cas) -> None:
    path = make_bundle(tmp_path, {"alpha": ALPHA})
    sidecar = tmp_path / "b.zip.sha256"
    actual = sidecar.read_text().split()[0]
    sidecar.write_text(f"{'0' * 64}  b.zip\n")
    problems = bundles.Bundle.read(path, store=Store(tmp_path / "store")).verify()
    assert problems == [f"b.zip: sha256 {actual} differs from {sidecar} ({'0' * 64})"]
    r = cas("bundle", "verify", path)
    assert r.returncode == 1
    assert f"FAILED b.zip: sha256 {actual} differs from".encode() in r.stdout
    assert b"1 problem(s)" in r.stderr
    assert b"Traceback" not in r.stderr

    sidecar.write_text(f"{actual}  other.zip\n")
    r = cas("bundle", "verify", path)
    assert r.returncode == 1
    assert f"FAILED {sidecar} lists no line for b.zip".encode() in r.stdout
