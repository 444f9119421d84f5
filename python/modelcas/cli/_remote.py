"""Rendering the remote operations' typed results, the same way for every remote."""

from __future__ import annotations

from typing import Any

from modelcas.cli._common import human, show_path
from modelcas.remotes import Fetched


def file_rows(files: list[Fetched]) -> list[dict[str, Any]]:
    """Fetched files as JSON rows."""
    return [
        {
            "name": f.name,
            "size": f.digest.size,
            "sha256": f.digest.sha256,
            "blake3": f.digest.blake3,
            "downloaded": f.downloaded,
            "origin": f.origin,
        }
        for f in files
    ]


def file_line(f: Fetched) -> str:
    """``downloaded  best.pt  sha256:939bc124a3da55f0…  (5.1 KiB, verified)``."""
    state = {"store": "present   ", "download": "downloaded", "hf-cache": "from the HF cache"}[
        f.origin
    ]
    note = "" if f.origin == "store" else ", verified"
    return f"{state}  {f.name}  sha256:{f.digest.sha256[:16]}…  ({human(f.digest.size)}{note})"


def audit_rows(audits: list[Any]) -> list[dict[str, Any]]:
    """Audits as JSON rows."""
    return [
        {
            "model": a.model,
            "version": a.version,
            "remote": a.remote,
            "source": a.source,
            "read_data": a.read_data,
            "checked": a.checked,
            "bytes_read": a.bytes_read,
            "ok": a.ok,
            "problems": a.problems,
        }
        for a in audits
    ]


def audit_lines(audits: list[Any]) -> list[str]:
    """One line per audit, then one per problem."""
    lines = []
    for a in audits:
        how = f"{human(a.bytes_read)} read and hashed" if a.read_data else "listing"
        head = "OK     " if a.ok else "FAILED "
        lines.append(
            f"{head} {a.model}@{a.version} at {a.source} ({len(a.checked)} file(s), {how})"
        )
        lines += [f"  {p}" for p in a.problems]
    return lines


def lock_text(path: Any) -> str:
    """A lockfile path for messages."""
    return show_path(path or "")
