"""A real installed distribution for compatibility tests: a dist-info plus a package."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from modelcas.lockfile import Lockfile
from modelcas.store import Store


def registry_lock(shared: Store) -> str:
    """The seed package's weights.lock: three versions of cser-detector, with their ranges."""
    lock = Lockfile(package="structflo-cser")
    for version, requires, payload in (
        ("v1.0", ">=0.1,<1", b"old weights"),
        ("v1.1", ">=0.2,<1", b"retrained weights"),
        ("v2.0", ">=1.0.0,<2.0.0", b"three classes"),
    ):
        d = shared.add_bytes(payload).digest
        lock.pin(
            "cser-detector", version, {"best.pt": d}, requires=requires, source=shared.root.as_uri()
        )
    return lock.dumps()


def fake_package(site: Path, dist_version: str, lock_text: str) -> None:
    """A real installed distribution: a dist-info directory and a package with weights.lock."""
    info = site / f"structflo_cser-{dist_version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: structflo-cser\nVersion: {dist_version}\n"
    )
    pkg = site / "structflo" / "cser"
    pkg.mkdir(parents=True)
    (site / "structflo" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "weights.lock").write_text(lock_text)
    # The RECORD lists the package's files, as pip writes it: how modelcas finds the owner.
    (info / "RECORD").write_text(
        "structflo/__init__.py,,\nstructflo/cser/__init__.py,,\nstructflo/cser/weights.lock,,\n"
        f"{info.name}/METADATA,,\n{info.name}/RECORD,,\n"
    )


def run_in_site(
    site: Path, store: Path, code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh Python that sees the fake package and uses ``store``."""
    env = {
        **(env or {}),
        **os.environ,
        "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "MODELCAS_HOME": str(store),
    }
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
