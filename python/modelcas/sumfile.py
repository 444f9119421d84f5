"""Checksum files in the format of ``sha256sum`` and ``b3sum``, read and written byte-exactly.

A line is ``<hex>  <name>`` (``*<name>`` in binary mode). Names holding a backslash, newline
or carriage return are escaped, and the line then starts with a backslash, as GNU coreutils
does. ``SHA256 (<name>) = <hex>`` (BSD tag format, ``sha256sum --tag``) is read and written
too. Names are bytes: file names on Linux need not be UTF-8.

b3sum (1.x) differs in three ways, each matched here when writing as b3sum: it leaves carriage
returns unescaped; it writes a name that is not UTF-8 with U+FFFD in place of each invalid
sequence (so the line names no file; its ``-c`` refuses such lines); and its ``-c`` escapes a
name it prints whenever it holds a backslash or newline, where GNU's ``-c`` escapes only names
with a newline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from modelcas.errors import ChecksumFileError

_PLAIN = re.compile(rb"([0-9a-fA-F]{64}) [ *](.*)", re.DOTALL)
_TAG = re.compile(rb"(SHA256|BLAKE3) \((.*)\) = ([0-9a-fA-F]{64})", re.DOTALL)
_ESCAPES = {b"\\": b"\\\\", b"\n": b"\\n", b"\r": b"\\r"}
# b3sum (1.x) leaves carriage returns alone.
_B3_ESCAPES = {b"\\": b"\\\\", b"\n": b"\\n"}
_UNESCAPES = {b"\\": b"\\", b"n": b"\n", b"r": b"\r"}


def _table(b3sum: bool) -> dict[bytes, bytes]:
    return _B3_ESCAPES if b3sum else _ESCAPES


def needs_escape(name: bytes, *, b3sum: bool = False) -> bool:
    """Whether ``sha256sum`` (or ``b3sum``) would escape this name."""
    return any(c in name for c in _table(b3sum))


def escape(name: bytes, *, b3sum: bool = False) -> bytes:
    """Escape a name as ``sha256sum`` (or ``b3sum``) does, without the line's leading backslash."""
    table = _table(b3sum)
    return b"".join(table.get(bytes([c]), bytes([c])) for c in name)


def format_line(hexdigest: str, name: bytes, *, b3sum: bool = False) -> bytes:
    """One line of ``sha256sum`` (or ``b3sum``) output, newline included.

    As b3sum, a name that is not UTF-8 is written lossily (see :func:`b3sum_name`).
    """
    if b3sum:
        name = b3sum_name(name)
    if needs_escape(name, b3sum=b3sum):
        return b"\\" + hexdigest.encode() + b"  " + escape(name, b3sum=b3sum) + b"\n"
    return hexdigest.encode() + b"  " + name + b"\n"


def format_tag(algo: str, hexdigest: str, name: bytes) -> bytes:
    """One BSD-style line, as ``sha256sum --tag`` writes it: ``SHA256 (NAME) = HEX``."""
    tag = algo.upper().encode()
    if needs_escape(name):
        return b"\\" + tag + b" (" + escape(name) + b") = " + hexdigest.encode() + b"\n"
    return tag + b" (" + name + b") = " + hexdigest.encode() + b"\n"


def b3sum_name(name: bytes) -> bytes:
    """A name as b3sum 1.x writes it: U+FFFD for each invalid UTF-8 sequence.

    That is Rust's lossy conversion, which Python's ``errors="replace"`` matches.
    """
    return name.decode("utf-8", "replace").encode("utf-8")


def lossy(name: bytes) -> bool:
    """Whether a name holds U+FFFD: what b3sum writes for bytes that are not UTF-8."""
    return REPLACEMENT in name


REPLACEMENT = "\ufffd".encode()


def check_name(name: bytes, *, b3sum: bool = False) -> bytes:
    """A name as ``sha256sum -c`` (or ``b3sum -c``) prints it before ``: OK``.

    GNU escapes only a name that holds a newline (then its backslashes, newlines and carriage
    returns, behind a leading backslash); b3sum escapes a name with a backslash or newline.
    """
    escaped = needs_escape(name, b3sum=True) if b3sum else b"\n" in name
    return b"\\" + escape(name, b3sum=b3sum) if escaped else name


def _unescape(name: bytes, where: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(name):
        c = name[i : i + 1]
        if c == b"\\":
            nxt = name[i + 1 : i + 2]
            if nxt not in _UNESCAPES:
                raise ChecksumFileError(f"{where}: bad escape sequence in file name")
            out += _UNESCAPES[nxt]
            i += 2
        else:
            out += c
            i += 1
    return bytes(out)


@dataclass(frozen=True, slots=True)
class SumEntry:
    """One checked file: its expected digest and its name as written in the checksum file."""

    hexdigest: str
    name: bytes
    lineno: int
    algo: str | None = None  # set by the BSD tag format; None means "as the caller decides"


def parse(data: bytes, source: str) -> tuple[list[SumEntry], list[int]]:
    """Parse a checksum file.

    Args:
        data: the file's bytes.
        source: its name, for error messages.

    Returns:
        The entries, and the numbers of the improperly formatted lines that were skipped.

    """
    entries: list[SumEntry] = []
    bad: list[int] = []
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        line = raw.removesuffix(b"\r")
        if not line or line.startswith(b"#"):
            continue
        escaped = line.startswith(b"\\")
        body = line[1:] if escaped else line
        where = f"{source}:{lineno}"
        if m := _PLAIN.fullmatch(body):
            hexdigest, name, algo = m.group(1), m.group(2), None
        elif m := _TAG.fullmatch(body):
            algo = m.group(1).decode().lower()
            name, hexdigest = m.group(2), m.group(3)
        else:
            bad.append(lineno)
            continue
        if escaped:
            try:
                name = _unescape(name, where)
            except ChecksumFileError:
                bad.append(lineno)  # as sha256sum: a bad escape is an improper line
                continue
        entries.append(SumEntry(hexdigest.decode().lower(), name, lineno, algo))
    return entries, bad
