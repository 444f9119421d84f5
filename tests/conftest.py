"""Shared fixtures. Reference digests always come from hashlib and the blake3 package."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.hubserver import HubServer

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


# Any token works with the local Hub; its value must never appear in output.
HUB_TOKEN = "hf_SECRET_token_never_shown_0123456789"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    """The local Hub-compatible server, on its own data, for one test."""
    with HubServer(tmp_path / "hub") as server:
        yield server


@pytest.fixture
def hf_env(hub: HubServer, tmp_path: Path) -> dict[str, str]:
    """What points the real Hub client (and `cas`) at the local server."""
    return {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_TOKEN": HUB_TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"),
        "CAS_NO_PROGRESS": "1",
        # As root without reflinks (CI), giving to the HF cache is a copy and opt-in.
        **({"MODELCAS_HF_CACHE": "copy"} if os.geteuid() == 0 else {}),
    }
