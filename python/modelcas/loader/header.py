"""The safetensors header, read as strictly as the reference implementation reads it.

A safetensors file is an 8-byte little-endian header length, a JSON header, and the tensors'
bytes, back to back. The reference (``safetensors.load_file``) refuses a header that leaves
holes between tensors, lets them overlap, or leaves bytes after the last one: bytes no tensor
accounts for are where a polyglot file hides its second meaning. This parser refuses the same,
plus what a Python JSON parser would accept and the reference would not (``NaN``, UTF-16,
lone surrogates), duplicate names (which parsers resolve differently), and nesting deeper than
any header needs (which would otherwise exhaust the recursion limit). Every refusal is a
:class:`~modelcas.errors.FormatError` naming the file.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from typing import Any

from modelcas.errors import FormatError

#: The reference's limit on the header's length.
MAX_HEADER = 100_000_000
#: A header nests three deep (file, tensor, shape); the reference's JSON parser stops at 128.
MAX_DEPTH = 32

#: Bytes per element of each dtype torch can hold.
ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "F8_E8M0": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]")
_INNERMOST = re.compile(rb"\[\]|\{\}")


@dataclass(frozen=True, slots=True)
class Entry:
    """One tensor: its dtype name, shape, and byte range within the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed header: where the data section starts, the tensors in file order, metadata."""

    data_start: int
    entries: tuple[Entry, ...]
    metadata: dict[str, str] | None


def header_length(prefix: bytes | memoryview, total: int, where: str) -> int:
    """The JSON header's length from the first 8 bytes, checked against the file's size.

    Raises:
        FormatError: too short, or the length does not fit the file or the limit.
    """
    if total < 8 or len(prefix) < 8:
        raise FormatError(f"{where}: not a valid safetensors file (too short)")
    (n,) = struct.unpack("<Q", prefix[:8])
    if n > MAX_HEADER:
        raise FormatError(
            f"{where}: not a valid safetensors file (header of {n} bytes, over the limit of "
            f"{MAX_HEADER})"
        )
    if n > total - 8:
        raise FormatError(
            f"{where}: not a valid safetensors file (header length {n} does not fit the file)"
        )
    return int(n)


def _depth_within(raw: bytes, limit: int) -> bool:
    """Whether the JSON text nests at most ``limit`` deep; without recursing, in linear passes."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", raw))
    for _ in range(limit):
        if not brackets:
            return True
        brackets = _INNERMOST.sub(b"", brackets)  # one level per pass
    return not brackets


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _count(value: Any) -> bool:
    """A JSON unsigned integer that fits 64 bits (``true`` is not one)."""
    return type(value) is int and 0 <= value < 1 << 64


def parse(data: bytes | memoryview, total: int, where: str) -> Header:
    """Parse and validate the header at the start of ``data``, of a file of ``total`` bytes.

    Args:
        data: at least the first ``8 + header length`` bytes of the file.
        total: the whole file's size.
        where: names the file in messages.

    Returns:
        The header, with every tensor's range checked against the others and the file.

    Raises:
        FormatError: anything the reference would refuse, and the stricter cases above.
    """
    n = header_length(data, total, where)
    bad = f"{where}: not a valid safetensors file"
    raw = bytes(data[8 : 8 + n])
    if not _depth_within(raw, MAX_DEPTH):
        raise FormatError(f"{bad} (header nested deeper than {MAX_DEPTH} levels, or unbalanced)")
    try:
        text = raw.decode("utf-8")
        header = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{bad} (header is not valid JSON: {e})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{bad} (header is not an object)")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise FormatError(f"{bad} (__metadata__ is not an object of strings)")
    entries = [_entry(name, info, bad) for name, info in header.items()]
    body = total - 8 - n
    end = 0
    for t in sorted(entries, key=lambda t: (t.start, t.end, t.name)):
        if t.start != end:
            what = "overlaps the tensor before it" if t.start < end else "leaves a hole before it"
            raise FormatError(f"{bad} (tensor {t.name!r} at {t.start}..{t.end} {what})")
        end = t.end
    if end != body:
        raise FormatError(
            f"{bad} ({body - end} bytes after the last tensor belong to none)"
            if end < body
            else f"{bad} (tensors end at {end}, past the file's {body} data bytes)"
        )
    return Header(8 + n, tuple(entries), metadata)


def _entry(name: str, info: Any, bad: str) -> Entry:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError(f"{bad} (a tensor name is not valid UTF-8)") from None
    if not isinstance(info, dict):
        raise FormatError(f"{bad} (entry for tensor {name!r} is not an object)")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ITEMSIZE:
        raise FormatError(f"{bad} (tensor {name!r} has dtype {dtype!r}, which is not supported)")
    if not isinstance(shape, list) or not all(_count(d) for d in shape):
        raise FormatError(f"{bad} (tensor {name!r} has shape {shape!r})")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_count, offsets)):
        raise FormatError(f"{bad} (tensor {name!r} has data_offsets {offsets!r})")
    start, end = offsets
    count = 1
    for d in shape:
        count *= d
    if end < start or end - start != count * ITEMSIZE[dtype]:
        raise FormatError(
            f"{bad} (tensor {name!r} has offsets {start}..{end}, which do not match its "
            f"{dtype} shape {shape})"
        )
    return Entry(name, dtype, tuple(shape), start, end)
