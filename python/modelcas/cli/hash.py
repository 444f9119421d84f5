"""``cas hash``: digests of files, compatible with ``sha256sum`` and ``b3sum``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import sys
from collections.abc import Collection
from typing import Any, BinaryIO

from modelcas import hashing, sumfile, untrusted
from modelcas.cli._common import add_command, emit_json, quote, show_path
from modelcas.cli._progress import byte_bar
from modelcas.digest import Hashes
from modelcas.errors import ChecksumFileError, ModelcasError, UsageError

HELP = "print or check sha256/blake3 digests (sha256sum/b3sum compatible)"
DESCRIPTION = """\
Print the digests of files, or check them against a checksum file.

The default output is byte-for-byte what `sha256sum` prints (`sha256sum --tag` with --tag),
and with --algo blake3 what `b3sum` (1.x) prints, so either tool can check it. Both digests
cost one read pass: blake3 runs beside sha256 on the other core. Names with backslashes,
newlines or carriage returns are escaped as sha256sum escapes them (b3sum leaves carriage
returns alone). A name that is not UTF-8 is written as its raw bytes for sha256, as
sha256sum does; with --algo blake3 it is written as b3sum 1.x writes it, with U+FFFD in
place of each invalid byte sequence: such a line names no file, and --check (like
`b3sum -c`) refuses it. Use sha256 for such names."""
EPILOG = """\
examples:
  cas hash best.pt > best.pt.sha256
  cas hash --tag best.pt                BSD style: SHA256 (best.pt) = HEX
  cas hash --algo blake3 -r checkpoints/
  cas hash --algo both --json weights/*.safetensors
  cas hash --check model_collection_20251218.zip.sha256

--json prints {"schema": "cas.hash/1", "files": [{"path", "size", "sha256", "blake3"}, ...],
"errors": [TEXT, ...]} (both digests, whatever --algo says; a file that could not be read is
an error, on stderr too, and the exit status is 1).

--check reads lines `HEX  NAME` (and `HEX *NAME`, and `SHA256 (NAME) = HEX`) and behaves as
`sha256sum -c`: -q prints only failures; --status prints nothing on stdout (files that
cannot be read are still named on stderr); --warn names each improperly formatted line (the
last of --status and --warn wins); --strict makes such lines fail; --ignore-missing skips
files that do not exist, and fails with "no file was verified" when no listed file matched.
Names are printed as `sha256sum -c` prints them (escaped only when they hold a newline), or
as `b3sum -c` does for blake3 lines (escaped when they hold a backslash or newline). A
relative NAME is looked up in the current directory first, as sha256sum does, then beside
the checksum file, so a `.sha256` sidecar checks from anywhere. The algorithm is --algo,
else the line's own tag, else blake3 for files named *.b3 or *.blake3, else sha256.

exit status: 0 all files OK; 1 a digest differed, a file was missing, or a checksum file
had no properly formatted line; 2 usage error."""

STDIN = "-"
_CHUNK = 1 << 20
# A checksum file is read whole; a bound, so that a wrong path cannot eat memory.
MAX_SUMFILE = 256 << 20
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
    # As in sha256sum, the last of --status and --warn wins.
    p.add_argument(
        "--status",
        dest="report",
        action="store_const",
        const="status",
        help="with --check: print nothing, use exit",
    )
    p.add_argument(
        "--strict", action="store_true", help="with --check: exit 1 on improperly formatted lines"
    )
    p.add_argument(
        "-w",
        "--warn",
        dest="report",
        action="store_const",
        const="warn",
        help="with --check: warn about each improper line",
    )
    p.add_argument(
        "--tag",
        action="store_true",
        help="write BSD-style lines, as sha256sum --tag: ALGO (NAME) = HEX",
    )
    p.add_argument(
        "--ignore-missing", action="store_true", help="with --check: skip files that do not exist"
    )
    p.add_argument(
        "--no-mmap",
        action="store_true",
        help="accepted for compatibility: files are always read with bounded buffers, never "
        "mapped (a file truncated under a mapping kills the reader)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``cas hash``."""
    args.status, args.warn = args.report == "status", args.report == "warn"
    if args.check:
        if args.json or args.recursive or args.tag:
            raise UsageError("--json, --recursive and --tag do not apply to --check")
        return _check(args)
    if args.status or args.ignore_missing or args.strict or args.warn:
        raise UsageError("--status, --strict, --warn and --ignore-missing apply to --check")
    if args.tag and (args.json or args.algo == "both"):
        raise UsageError("--tag writes one digest per line: not with --json or --algo both")
    return _print(args)


def _expand(paths: list[str], recursive: bool) -> tuple[list[str], list[str], set[str]]:
    """Files to hash, in order; errors for arguments that cannot be hashed; walked files.

    The walked files were found in a directory (-r), not named by the user.
    """
    files: list[str] = []
    errors: list[str] = []
    walked: set[str] = set()
    for p in paths or [STDIN]:
        if p != STDIN and os.path.isdir(p):
            if not recursive:
                errors.append(f"{p}: Is a directory (use --recursive)")
                continue

            # A directory that cannot be listed is an error, never left out in silence.
            def unlisted(e: OSError) -> None:
                errors.append(f"{e.filename}: {e.strerror or e}")

            for root, dirs, names in os.walk(p, onerror=unlisted):
                dirs.sort()
                found = [os.path.join(root, n) for n in sorted(names)]
                files.extend(found)
                walked.update(found)
        else:
            files.append(p)
    return files, errors, walked


def _hash_stdin(algos: tuple[hashing.Algo, ...]) -> Hashes:
    h = hashing.Hasher(algos)
    stream = sys.stdin.buffer
    while chunk := stream.read(_CHUNK):
        h.update(chunk)
    return h.hashes()


def _hash_all(
    files: list[str],
    algos: tuple[hashing.Algo, ...],
    args: argparse.Namespace,
    *,
    listed: bool = False,
    walked: Collection[str] = (),
) -> list[Hashes | OSError]:
    """Hash files named on the command line, or with ``listed`` by a checksum file.

    A file named on the command line is read as `sha256sum` reads it (a pipe too); one a
    checksum file names, or one found by walking a directory (``walked``), is someone else's
    choice, so only a regular file is read (a FIFO or device there is an error, "FAILED open
    or read" under --check, never waited on).
    """
    on_disk = [f for f in files if f != STDIN]
    total = 0
    for f in on_disk:
        with contextlib.suppress(OSError):
            total += os.stat(f).st_size
    strict = [f for f in on_disk if listed or f in walked]
    named = [f for f in on_disk if not (listed or f in walked)]
    done: dict[str, Hashes | OSError] = {}
    with byte_bar(total, "hashing", quiet=args.quiet or args.status) as bar:
        for batch, regular_only in ((named, False), (strict, True)):
            if batch:
                hashed = hashing.hash_files(
                    batch, algos, regular_only=regular_only, follow=True, progress=bar
                )
                done.update(zip(batch, hashed, strict=True))
    return [_hash_stdin(algos) if f == STDIN else done[f] for f in files]


def _algos(choice: str | None) -> tuple[hashing.Algo, ...]:
    if choice == "both":
        return hashing.BOTH
    return ("blake3",) if choice == "blake3" else ("sha256",)


def _print(args: argparse.Namespace) -> int:
    files, errors, walked = _expand(args.paths, args.recursive)
    json_out = args.json
    algos = hashing.BOTH if json_out else _algos(args.algo)
    results = _hash_all(files, algos, args, walked=walked)
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
            algo = "blake3" if args.algo == "blake3" else "sha256"
            hexdigest = r.blake3 if algo == "blake3" else r.sha256
            assert hexdigest is not None
            if args.tag:
                out.write(sumfile.format_tag(algo, hexdigest, os.fsencode(f)))
            else:
                out.write(sumfile.format_line(hexdigest, os.fsencode(f), b3sum=algo == "blake3"))
    if json_out:
        out.flush()
        emit_json("hash", {"files": records, "errors": errors})
    out.flush()
    for e in errors:
        print(quote(f"cas: {e}"), file=sys.stderr)
    return 1 if errors else 0


def _resolve(name: bytes, sumpath: str) -> str:
    """Where a listed name lives: as given (like sha256sum), else beside the checksum file."""
    path = os.fsdecode(name)
    if os.path.isabs(path) or sumpath == STDIN or os.path.lexists(path):
        return path
    beside = os.path.join(os.path.dirname(sumpath), path)
    return beside if os.path.lexists(beside) else path


def _suffix_algo(sumpath: str) -> hashing.Algo:
    return "blake3" if sumpath.endswith(_BLAKE3_SUFFIXES) else "sha256"


def _algo_for(entry: sumfile.SumEntry, sumpath: str, forced: str | None) -> hashing.Algo:
    if forced in ("sha256", "blake3"):
        return "blake3" if forced == "blake3" else "sha256"
    if entry.algo is not None:
        return "blake3" if entry.algo == "blake3" else "sha256"
    return _suffix_algo(sumpath)


def _read_sumfile(sumpath: str) -> bytes:
    """A checksum file's bytes (a directory, FIFO or device is refused, not read)."""
    if sumpath == STDIN:
        return sys.stdin.buffer.read()
    if os.path.isdir(sumpath):
        raise IsADirectoryError(errno.EISDIR, "Is a directory", sumpath)  # as GNU says it
    try:
        return untrusted.read_file(sumpath, "a checksum file", cap=MAX_SUMFILE)
    except ModelcasError as e:
        raise OSError(errno.EINVAL, e.message.removeprefix(f"{sumpath}: "), sumpath) from None


def _check(args: argparse.Namespace) -> int:
    if args.algo == "both":
        raise UsageError("--check takes --algo sha256 or blake3: a checksum line holds one digest")
    failed = False
    for sumpath in args.paths or [STDIN]:
        failed |= _check_file(args, sumpath)
    return 1 if failed else 0


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _check_file(args: argparse.Namespace, sumpath: str) -> bool:
    """Check one checksum file as ``sha256sum -c`` does; True when it failed.

    Output follows GNU's: one ``NAME: OK`` / ``NAME: FAILED`` / ``NAME: FAILED open or read``
    per listed file, in the file's order, then the file's WARNING lines; a file that cannot be
    read is named on stderr even with --status.
    """
    shown_file = "'standard input'" if sumpath == STDIN else sumpath
    try:
        data = _read_sumfile(sumpath)
        entries, bad_lines = sumfile.parse(data, shown_file)
    except OSError as e:
        print(quote(f"cas: {shown_file}: {e.strerror or e}"), file=sys.stderr)
        return True
    except ChecksumFileError as e:
        print(quote(f"cas: {e.message}"), file=sys.stderr)
        return True
    algos = [_algo_for(e, sumpath, args.algo) for e in entries]
    # b3sum wrote U+FFFD for bytes that are not UTF-8: such a line names no file (b3sum -c
    # refuses it too), so it is refused, not looked up.
    refused = {
        e.lineno
        for e, a in zip(entries, algos, strict=True)
        if a == "blake3" and sumfile.lossy(e.name)
    }
    jobs = [
        (e, _resolve(e.name, sumpath), a)
        for e, a in zip(entries, algos, strict=True)
        if e.lineno not in refused
    ]
    wanted = tuple(sorted({a for _, _, a in jobs}, reverse=True)) or ("sha256",)
    results = dict(
        zip(
            (e.lineno for e, _, _ in jobs),
            _hash_all([p for _, p, _ in jobs], wanted, args, listed=True),
            strict=True,
        )
    )
    out: BinaryIO = sys.stdout.buffer
    matched = mismatched = unreadable = lossy = 0
    bad = set(bad_lines)
    kind = "BLAKE3" if (args.algo or _suffix_algo(sumpath)) == "blake3" else "SHA256"
    by_line = {e.lineno: (e, a) for e, a in zip(entries, algos, strict=True)}
    for lineno in sorted(bad | by_line.keys()):
        if lineno in bad:
            if args.warn and not args.status:
                out.flush()
                print(
                    quote(
                        f"cas: {shown_file}: {lineno}: improperly formatted {kind} checksum line"
                    ),
                    file=sys.stderr,
                )
            continue
        entry, algo = by_line[lineno]
        name = sumfile.check_name(entry.name, b3sum=algo == "blake3")
        if lineno in refused:
            out.flush()
            print(
                quote(
                    f"cas: {shown_file}: {lineno}: the name holds U+FFFD, which b3sum writes "
                    "for bytes that are not UTF-8: it names no file"
                ),
                file=sys.stderr,
            )
            lossy += 1
            continue
        r = results[lineno]
        if isinstance(r, OSError):
            if args.ignore_missing and isinstance(r, FileNotFoundError):
                continue
            unreadable += 1
            out.flush()
            why = os.strerror(r.errno) if r.errno else (r.strerror or str(r))
            print(f"cas: {show_path(os.fsdecode(entry.name))}: {why}", file=sys.stderr)
            if not args.status:
                out.write(name + b": FAILED open or read\n")
            continue
        actual = r.blake3 if algo == "blake3" else r.sha256
        if actual == entry.hexdigest:
            matched += 1
            if not (args.quiet or args.status):
                out.write(name + b": OK\n")
        else:
            mismatched += 1
            if not args.status:
                out.write(name + b": FAILED\n")
    out.flush()
    if not entries:
        print(
            quote(f"cas: {shown_file}: no properly formatted checksum lines found"), file=sys.stderr
        )
        return True
    if not args.status:
        if bad_lines:
            n = len(bad_lines)
            are = "line is" if n == 1 else "lines are"
            print(f"cas: WARNING: {n} {are} improperly formatted", file=sys.stderr)
        if unreadable:
            files = _plural(unreadable, "listed file", "listed files")
            print(f"cas: WARNING: {files} could not be read", file=sys.stderr)
        if mismatched:
            sums = _plural(mismatched, "computed checksum", "computed checksums")
            print(f"cas: WARNING: {sums} did NOT match", file=sys.stderr)
        if args.ignore_missing and not matched:
            # Every listed file was missing (or differed): nothing vouches for anything.
            print(quote(f"cas: {shown_file}: no file was verified"), file=sys.stderr)
    return bool(
        mismatched
        or unreadable
        or lossy
        or (bad_lines and args.strict)
        or (args.ignore_missing and not matched)
    )
