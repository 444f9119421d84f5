"""Shared helpers for the bundle tests: the example bundle inputs, and the CLI error contract."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples"


def example_config(tmp: Path) -> Path:
    """A copy of the example bundle config and its inputs under ``tmp/src``; its path."""
    work = tmp / "src"
    shutil.copytree(EXAMPLE / "bundle", work / "bundle")
    shutil.copytree(EXAMPLE / "weights", work / "weights")
    return work / "bundle" / "config_model_bundle.yml"


def one_error(r: subprocess.CompletedProcess[bytes], code: int | None = None) -> str:
    """The run failed (with ``code``, else 1 or 2): one error line and at most a hint line,
    no traceback, nothing on stdout. Returns stderr."""
    err = r.stderr.decode(errors="replace")
    assert r.returncode == code if code is not None else r.returncode in (1, 2), (
        r.returncode,
        err,
    )
    assert "Traceback" not in err, err
    lines = err.splitlines()
    # `cas: error:` from a command and from its argument parser alike.
    assert lines and re.match(r"cas( [a-z-]+)*: error: ", lines[0]), err
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("  hint: ")), err
    assert r.stdout == b"", r.stdout
    return err
