"""``cas hash``: digests of files, compatible with ``sha256sum`` and ``b3sum``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import stat
import sys
from pathlib import Path
from typing import Any, BinaryIO

from modelcas import hashing, sumfile
from modelcas.cli._common import add_command, emit_json
from modelcas.cli._progress import byte_bar
from modelcas.digest import Hashes
from modelcas.errors import ChecksumFileError, UsageError

HELP = "print or check sha256/blake3 digests (sha256sum/b3sum compatible)"
DESCRIPTION = """\
Print the digests of files, or check them against a checksum file.

The default output is byte-for-byte what `sha256sum` prints (what `b3sum` prints with
--algo blake3), so either tool can check it. Both digests cost one read pass: blake3 runs
beside sha256 on the other core. Names with backslashes or newlines are escaped as
sha256sum (or b3sum) escapes them. Names that are not UTF-8 are written as their raw
bytes, as sha256sum does (b3sum would replace them with U+FFFD, which no tool can check)."""
EPILOG = """\
examples:
  cas hash best.pt > best.pt.sha256
  cas hash --algo blake3 -r checkpoints/
  cas hash --algo both --json weights/*.safetensors
  cas hash --check model_collection_20251218.zip.sha256

--json prints {"schema": "cas.hash/1", "files": [{"path", "size", "sha256", "blake3"}, ...]}
(both digests, whatever --algo says; files that could not be read are on stderr, exit 1).

--check reads lines `HEX  NAME` (and `HEX *NAME`, and `SHA256 (NAME) = HEX`) and behaves as
`sha256sum -c`: -q prints only failures, --status nothing, --warn each improperly formatted
line, --strict makes such lines fail, --ignore-missing skips files that do not exist. A
relative NAME is looked up in the current directory first, as sha256sum does, then beside
the checksum file, so a `.sha256` sidecar checks from anywhere. The algorithm is --algo,
else the line's own tag, else blake3 for files named *.b3 or *.blake3, else sha256.

exit status: 0 all files OK; 1 a digest differed, a file was missing, or a checksum file
had no properly formatted line; 2 usage error."""

STDIN = "-"
_CHUNK = 1 << 20
_BLAKE3_SUFFIXES = (".b3", ".blake3", ".b3sum", ".b3sums")


def register(sub: Any) -> None:
    """Add ``cas hash`` to the command parser."""
    p = add_command(sub, "hash", HELP, DESCRIPTION, EPILOG)
    p.add_argument("paths", nargs="*", metavar="PATH", help="files to hash ('-' for stdin)")
    p.add_argument(
        "-a",
        "--algo",
        choices=("sha256", "blake3", "both"),
        default=None,
        help="digest to print (default sha256); 'both' prints sha256, blake3 and size",
    )
    p.add_argument("-r", "--recursive", action="store_true", help="hash files under directories")
    p.add_argument(
        "-c", "--check", action="store_true", help="read checksum files and check each listed file"
    )
    p.add_argument("--status", action="store_true", help="with --check: print nothing, use exit")
    p.add_argument(
        "--strict", action="store_true", help="with --check: exit 1 on improperly formatted lines"
    )
    p.add_argument(
        "-w", "--warn", action="store_true", help="with --check: warn about each improper line"
    )
    p.add_argument(
        "--ignore-missing", action="store_true", help="with --check: skip files that do not exist"
    )
    p.add_argument(
        "--no-mmap", action="store_true", help="read with bounded buffers instead of mapping files"
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas hash``."""
    if args.check:
        if args.json or args.recursive:
            raise UsageError("--json and --recursive do not apply to --check")
        return _check(args)
    if args.status or args.ignore_missing or args.strict or args.warn:
        raise UsageError("--status, --strict, --warn and --ignore-missing apply to --check")
    return _print(args)


def _expand(paths: list[str], recursive: bool) -> tuple[list[str], list[str]]:
    """Files to hash in order, and error messages for arguments that cannot be hashed."""
    files: list[str] = []
    errors: list[str] = []
    for p in paths or [STDIN]:
        if p != STDIN and os.path.isdir(p):
            if not recursive:
                errors.append(f"{p}: Is a directory (use --recursive)")
                continue
            for root, dirs, names in os.walk(p):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in sorted(names))
        else:
            files.append(p)
    return files, errors


def _hash_stdin(algos: tuple[hashing.Algo, ...]) -> Hashes:
    h = hashing.Hasher(algos)
    stream = sys.stdin.buffer
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
    return h.hashes()


def _hash_all(
    files: list[str], algos: tuple[hashing.Algo, ...], mmap: bool | None
) -> list[Hashes | OSError]:
    on_disk = [f for f in files if f != STDIN]
    total = 0
    for f in on_disk:
        with contextlib.suppress(OSError):
            total += os.stat(f).st_size
    with byte_bar(total, "hashing") as bar:
        results = iter(hashing.hash_files(on_disk, algos, mmap=mmap, progress=bar))
    return [_hash_stdin(algos) if f == STDIN else next(results) for f in files]


def _algos(choice: str | None) -> tuple[hashing.Algo, ...]:
    if choice == "both":
        return hashing.BOTH
    return ("blake3",) if choice == "blake3" else ("sha256",)


def _print(args: argparse.Namespace) -> int:
    files, errors = _expand(args.paths, args.recursive)
    json_out = args.json
    algos = hashing.BOTH if json_out else _algos(args.algo)
    results = _hash_all(files, algos, False if args.no_mmap else None)
    out: BinaryIO = sys.stdout.buffer
    records: list[dict[str, object]] = []
    for f, r in zip(files, results, strict=True):
        if isinstance(r, OSError):
            errors.append(f"{f}: {r.strerror or r}")
            continue
        if json_out:
            records.append({"path": f, "size": r.size, "sha256": r.sha256, "blake3": r.blake3})
        elif args.algo == "both":
            name = os.fsencode(f)
            prefix = b"\\" if sumfile.needs_escape(name) else b""
            out.write(
                prefix
                + f"sha256:{r.sha256}  blake3:{r.blake3}  {r.size}  ".encode()
                + sumfile.escape(name)
                + b"\n"
            )
        else:
            hexdigest = r.blake3 if args.algo == "blake3" else r.sha256
            assert hexdigest is not None
            out.write(sumfile.format_line(hexdigest, os.fsencode(f), b3sum=args.algo == "blake3"))
    if json_out:
        out.flush()
        emit_json("hash", {"files": records})
    out.flush()
    for e in errors:
        print(f"cas: {e}", file=sys.stderr)
    return 1 if errors else 0


def _resolve(name: bytes, sumpath: str) -> str:
    """Where a listed name lives: as given (like sha256sum), else beside the checksum file."""
    path = os.fsdecode(name)
    if os.path.isabs(path) or sumpath == STDIN or os.path.lexists(path):
        return path
    beside = os.path.join(os.path.dirname(sumpath), path)
    return beside if os.path.lexists(beside) else path


def _algo_for(entry: sumfile.SumEntry, sumpath: str, forced: str | None) -> hashing.Algo:
    if forced in ("sha256", "blake3"):
        return "blake3" if forced == "blake3" else "sha256"
    if entry.algo == "blake3" or (entry.algo is None and sumpath.endswith(_BLAKE3_SUFFIXES)):
        return "blake3"
    return "sha256"


def _read_sumfile(sumpath: str) -> bytes:
    """A checksum file's bytes (a directory, FIFO or device is refused, not read)."""
    if sumpath == STDIN:
        return sys.stdin.buffer.read()
    st = os.stat(sumpath)
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", sumpath)
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, "not a regular file", sumpath)
    return Path(sumpath).read_bytes()


def _check(args: argparse.Namespace) -> int:
    if args.algo == "both":
        raise UsageError("--check takes --algo sha256 or blake3: a checksum line holds one digest")
    if not args.paths:
        args.paths = [STDIN]
    jobs: list[tuple[sumfile.SumEntry, str, hashing.Algo]] = []
    problems = 0
    for sumpath in args.paths:
        try:
            data = _read_sumfile(sumpath)
        except OSError as e:
            print(f"cas: {sumpath}: {e.strerror or e}", file=sys.stderr)
            problems += 1
            continue
        try:
            entries, bad_lines = sumfile.parse(data, sumpath)
        except ChecksumFileError as e:
            print(f"cas: {e.message}", file=sys.stderr)
            problems += 1
            continue
        if not entries:
            print(f"cas: {sumpath}: no properly formatted checksum lines found", file=sys.stderr)
            problems += 1
            continue
        if bad_lines and not args.status:
            if args.warn:
                for lineno in bad_lines:
                    print(
                        f"cas: {sumpath}: {lineno}: improperly formatted checksum line",
                        file=sys.stderr,
                    )
            n = len(bad_lines)
            print(
                f"cas: WARNING: {n} line{' is' if n == 1 else 's are'} improperly formatted",
                file=sys.stderr,
            )
        if bad_lines and args.strict:
            problems += 1
        jobs.extend(
            (e, _resolve(e.name, sumpath), _algo_for(e, sumpath, args.algo)) for e in entries
        )
    if not jobs:
        return 1

    wanted = tuple(sorted({a for _, _, a in jobs}, reverse=True))
    results = _hash_all([p for _, p, _ in jobs], wanted, False if args.no_mmap else None)
    out: BinaryIO = sys.stdout.buffer
    failed = missing = 0
    for (entry, path, algo), r in zip(jobs, results, strict=True):
        shown = (
            (b"\\" + sumfile.escape(entry.name)) if sumfile.needs_escape(entry.name) else entry.name
        )
        if isinstance(r, OSError):
            if args.ignore_missing and isinstance(r, FileNotFoundError):
                continue
            missing += 1
            if not args.status:
                print(f"cas: {path}: {r.strerror or r}", file=sys.stderr)
                out.write(shown + b": FAILED open or read\n")
            continue
        actual = r.blake3 if algo == "blake3" else r.sha256
        if actual == entry.hexdigest:
            if not (args.quiet or args.status):
                out.write(shown + b": OK\n")
        else:
            failed += 1
            if not args.status:
                out.write(shown + b": FAILED\n")
    out.flush()
    if not args.status:
        if missing:
            print(f"cas: WARNING: {missing} listed file(s) could not be read", file=sys.stderr)
        if failed:
            print(f"cas: WARNING: {failed} computed checksum(s) did NOT match", file=sys.stderr)
    return 1 if (failed or missing or problems) else 0
