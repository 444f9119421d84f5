"""`cas hash` against GNU `sha256sum` and `b3sum` (1.2), run on the same awkward names.

Every case runs the real tool and `cas hash` with the same arguments in the same folder and
compares stdout and the exit status byte for byte; stderr too, once the program name is
made the same (`sha256sum: ` becomes `cas: `). Where b3sum's stderr wording is its own (it
refuses a U+FFFD name with "Unicode replacement character in path"), stdout and the exit
status are compared, and the one stderr line each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Names sha256sum and b3sum treat specially: backslash, newline and carriage return escapes,
# both at once, a name that is not UTF-8, and the harmless ones around them.
AWKWARD = [
    b"plain.pt",
    b"with space.pt",
    b"back\\slash",
    b"new\nline",
    b"car\rriage",
    b"b\\a\nc",
    b"cr\\x\ry",
    b"n\nl\rr",
    b"tab\there",
    "ünïcode.bin".encode(),
    b"\xff\xfe.bin",
    b"gone",
]
NOT_UTF8 = b"\xff\xfe.bin"
GNU = shutil.which("sha256sum")
B3SUM = shutil.which("b3sum")

pytestmark = pytest.mark.skipif(
    GNU is None or B3SUM is None, reason="needs GNU sha256sum and b3sum (apt: coreutils, b3sum)"
)


def _name(raw: bytes) -> str:
    return os.fsdecode(raw)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    d = tmp_path / "w"
    d.mkdir()
    for i, raw in enumerate(AWKWARD):
        (d / _name(raw)).write_bytes(bytes([i + 1]) * (i * 333 + 1))
    return d


def _run(
    argv: list[str], cwd: Path, stdin: bytes | None = None, *, short: bool = True
) -> tuple[bytes, bytes, int]:
    # argv[0] as a shell gives it: GNU tools name themselves by it in messages.
    r = subprocess.run(
        [Path(argv[0]).name if short else argv[0], *argv[1:]],
        executable=argv[0],
        cwd=cwd,
        input=stdin,
        capture_output=True,
        check=False,
        timeout=120,
        env={**os.environ, "CAS_NO_PROGRESS": "1", "LC_ALL": "C"},
    )
    return r.stdout, r.stderr, r.returncode


def _cas(args: list[str], cwd: Path, stdin: bytes | None = None) -> tuple[bytes, bytes, int]:
    return _run([sys.executable, "-m", "modelcas", "hash", *args], cwd, stdin, short=False)


def _same(tool: str, args: list[str], cwd: Path, stdin: bytes | None = None) -> bytes:
    """Run `tool ARGS` and `cas hash ARGS`; both streams and the status must be the same."""
    theirs = _run([tool, *args], cwd, stdin)
    ours = _cas(args, cwd, stdin)
    prog = Path(tool).name.encode() + b": "
    assert ours[0] == theirs[0], (args, ours[0], theirs[0])
    assert ours[2] == theirs[2], (args, ours, theirs)
    assert ours[1] == theirs[1].replace(prog, b"cas: "), (args, ours[1], theirs[1])
    return theirs[0]


def _names(exclude: tuple[bytes, ...] = ()) -> list[str]:
    return [_name(n) for n in AWKWARD if n not in exclude]


def test_writing_is_byte_identical(tree: Path) -> None:
    assert GNU and B3SUM
    _same(GNU, _names(), tree)
    _same(GNU, ["--tag", *_names()], tree)
    # b3sum writes U+FFFD for the bytes that are not UTF-8: so does `cas hash --algo blake3`.
    theirs = _run([B3SUM, *_names()], tree)
    ours = _cas(["--algo", "blake3", *_names()], tree)
    assert ours == theirs
    assert "\ufffd\ufffd.bin".encode() in ours[0]


def _sums(tool: str, tree: Path, out: str, *extra: str) -> Path:
    listing = subprocess.run(
        [tool, *extra, *_names()], cwd=tree, capture_output=True, check=True
    ).stdout
    path = tree.parent / out
    path.write_bytes(listing)
    return path


@pytest.mark.parametrize(
    "flags",
    [[], ["--status"], ["--quiet"], ["--strict"], ["-w"], ["--status", "-w"], ["-w", "--status"]],
    ids=lambda f: " ".join(f) or "plain",
)
def test_checking_as_sha256sum_does(tree: Path, flags: list[str]) -> None:
    assert GNU
    sums = _sums(GNU, tree, "all.sha256")
    tagged = _sums(GNU, tree, "tagged.sha256", "--tag")
    # All intact: every awkward name printed as GNU prints it.
    out = _same(GNU, ["-c", *flags, str(sums)], tree)
    _same(GNU, ["-c", *flags, str(tagged)], tree)
    if not flags:
        assert b"\\new\\nline: OK\n" in out and b"back\\slash: OK\n" in out
    # One file changed, one gone, and an improperly formatted line in the middle.
    (tree / "plain.pt").write_bytes(b"tampered")
    (tree / "gone").unlink()
    lines = sums.read_bytes().splitlines(keepends=True)
    sums.write_bytes(b"".join([*lines[:3], b"not a checksum line\n", *lines[3:]]))
    _same(GNU, ["-c", *flags, str(sums)], tree)
    _same(GNU, ["-c", *flags, str(tagged)], tree)


def test_ignore_missing(tree: Path) -> None:
    assert GNU
    sums = _sums(GNU, tree, "all.sha256")
    (tree / "gone").unlink()
    _same(GNU, ["-c", "--ignore-missing", str(sums)], tree)
    # No listed file exists: "no file was verified", exit 1 (silent with --status).
    only_gone = tree.parent / "gone.sha256"
    only_gone.write_bytes(b"".join(x for x in sums.read_bytes().splitlines(True) if b"gone" in x))
    assert _cas(["-c", "--ignore-missing", str(only_gone)], tree)[1:] == (
        f"cas: {only_gone}: no file was verified\n".encode(),
        1,
    )
    _same(GNU, ["-c", "--ignore-missing", str(only_gone)], tree)
    _same(GNU, ["-c", "--ignore-missing", "--status", str(only_gone)], tree)
    # Every listed file that exists differs: nothing verified either.
    (tree / "plain.pt").write_bytes(b"tampered")
    plain = tree.parent / "plain.sha256"
    plain.write_bytes(
        b"".join(x for x in sums.read_bytes().splitlines(True) if b"plain" in x or b"gone" in x)
    )
    _same(GNU, ["-c", "--ignore-missing", str(plain)], tree)


def test_status_still_names_unreadable_files(tree: Path) -> None:
    assert GNU
    sums = _sums(GNU, tree, "all.sha256")
    (tree / "gone").unlink()
    out = _same(GNU, ["-c", "--status", str(sums)], tree)
    assert out == b""
    assert _cas(["-c", "--status", str(sums)], tree)[1] == b"cas: gone: No such file or directory\n"


def test_standard_input_and_nothing_to_check(tree: Path) -> None:
    assert GNU
    sums = _sums(GNU, tree, "all.sha256").read_bytes()
    _same(GNU, ["-c"], tree, stdin=sums)
    _same(GNU, ["-c", "-"], tree, stdin=b"junk\n")
    (tree.parent / "junk.sha256").write_bytes(b"junk\nmore junk\n")
    _same(GNU, ["-c", "-w", str(tree.parent / "junk.sha256")], tree)


def test_checking_b3sum_files_as_b3sum_does(tree: Path) -> None:
    assert B3SUM
    sums = _sums(B3SUM, tree, "all.b3")
    theirs = _run([B3SUM, "-c", str(sums)], tree)
    ours = _cas(["-c", str(sums)], tree)
    # Names printed as b3sum prints them (a backslash alone is escaped, a CR is not), and
    # the U+FFFD line refused by both: nothing on stdout for it, one line on stderr, exit 1.
    assert ours[0] == theirs[0] and ours[2] == theirs[2] == 1, (ours, theirs)
    assert b"\\back\\\\slash: OK\n" in ours[0] and b"car\rriage: OK\n" in ours[0]
    assert theirs[1].count(b"\n") == ours[1].count(b"\n") == 1, (ours[1], theirs[1])
    assert b"U+FFFD" in ours[1] and b"replacement character" in theirs[1]
    # Without that line: all OK, exit 0; then one file changed: FAILED, exit 1.
    clean = tree.parent / "clean.b3"
    clean.write_bytes(b"".join(x for x in sums.read_bytes().splitlines(True) if b".bin" not in x))
    for _ in range(2):
        theirs = _run([B3SUM, "-c", str(clean)], tree)
        ours = _cas(["-c", str(clean)], tree)
        assert (ours[0], ours[2]) == (theirs[0], theirs[2]), (ours, theirs)
        (tree / "plain.pt").write_bytes(b"tampered")
    assert b"plain.pt: FAILED\n" in ours[0] and ours[2] == 1
