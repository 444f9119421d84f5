"""Shared fixtures. Reference digests always come from hashlib and the blake3 package."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cas(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    """Run the real `cas` entry point in a subprocess with an isolated store."""
    env = {**os.environ, "MODELCAS_HOME": str(tmp_path / "store"), "CAS_NO_PROGRESS": "1"}

    def run(
        *args: str | os.PathLike[str],
        cwd: Path | None = None,
        input: bytes | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "modelcas", *map(str, args)],
            cwd=cwd or tmp_path,
            input=input,
            capture_output=True,
            env={**env, **(extra_env or {})},
            timeout=300,
            check=False,
        )

    return run
