"""Messages that point the right way: at the caller's line, in the direction the package
must move, at what is left to do, and at every path that was tried."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from modelcas.store import Store
from tests.pkgs import fake_package, registry_lock


def _user_script(tmp_path: Path, site: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "user_code.py"
    script.write_text(textwrap.dedent(code))
    env = {
        **os.environ,
        "PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "MODELCAS_HOME": str(tmp_path / "user-store"),
    }
    return subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_fallback_warning_points_at_the_callers_line(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_package(site, "0.2.0", registry_lock(Store(tmp_path / "shared")))
    r = _user_script(
        tmp_path,
        site,
        """\
        import warnings
        from modelcas import Registry
        reg = Registry.from_package("structflo.cser", "weights.lock")
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            reg.path("cser-detector")  # line 6: latest needs 1.x, falls back
            reg.pin("cser-detector")  # line 7
        for x in w:
            print(f"{x.filename}:{x.lineno}: {x.message}")
        """,
    )
    assert r.returncode == 0, r.stderr
    script = tmp_path / "user_code.py"
    lines = r.stdout.splitlines()
    assert len(lines) == 2, r.stdout
    assert lines[0].startswith(f"{script}:6: cser-detector@v2.0 (latest) requires"), lines
    assert lines[1].startswith(f"{script}:7: "), lines
    assert "registry.py" not in r.stdout


def test_an_older_version_says_downgrade_not_upgrade(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_package(site, "1.5.0", registry_lock(Store(tmp_path / "shared")))
    r = _user_script(
        tmp_path,
        site,
        """\
        from modelcas import Registry, WeightsCompatibilityError
        reg = Registry.from_package("structflo.cser")
        for version in ("v1.0", "v2.0"):
            try:
                reg.path("cser-detector", version)
            except WeightsCompatibilityError as e:
                print(e.hint)
            else:
                print("usable", version)
        """,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "Downgrade with:  uv add 'structflo-cser>=0.1,<1'   "
        "(or: pip install 'structflo-cser>=0.1,<1')",
        "usable v2.0",
    ]


def _cas(
    argv: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelcas", *argv],
        cwd=cwd,
        env={**os.environ, "CAS_NO_PROGRESS": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_after_repair_the_output_does_not_ask_for_a_repair(tmp_path: Path) -> None:
    env = {"MODELCAS_HOME": str(tmp_path / "store")}
    (tmp_path / "w.bin").write_bytes(b"weights " * 100)
    assert _cas(["add", "w.bin", "--name", "m", "--version", "v1"], tmp_path, env).returncode == 0
    obj = Path(_cas(["path", "m"], tmp_path, env).stdout.strip())
    obj.chmod(0o644)
    obj.write_bytes(b"X" + obj.read_bytes()[1:])
    obj.chmod(0o444)
    before = _cas(["verify", "--lock"], tmp_path, env)
    assert before.returncode == 1
    assert "run `cas verify --lock --repair`, then `cas sync`" in before.stdout, before.stdout
    repaired = _cas(["verify", "--lock", "--repair"], tmp_path, env)
    assert repaired.returncode == 1
    assert "--repair" not in repaired.stdout + repaired.stderr, repaired.stdout
    assert "CORRUPT m@v1 w.bin" in repaired.stdout
    assert "moved to" in repaired.stdout and "run `cas sync`" in repaired.stdout


def test_many_bundle_config_problems_come_one_per_line(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    entries = "".join(f"k{i}:\n  model_path: weights/m{i}.pt\n" for i in range(12))
    (cfg_dir / "cfg.yml").write_text(entries)
    work = tmp_path / "work"
    work.mkdir()
    r = _cas(["bundle", "-i", "../configs/cfg.yml", "-o", "b.zip"], work)
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0] == "cas: error: ../configs/cfg.yml: 12 problems, nothing was written:"
    assert len(lines) == 1 + 10 + 1 + 1, r.stderr
    for i, line in enumerate(lines[1:11]):
        # Each names both places the relative path was looked for.
        assert line == (
            f"  - k{i}.model_path: weights/m{i}.pt is not a file (looked for "
            f"{work}/weights/m{i}.pt and {cfg_dir.resolve()}/weights/m{i}.pt)"
        ), line
    assert lines[11] == "  - ... and 2 more"
    assert lines[12].startswith("  hint: ")
    doc = json.loads(
        _cas(["bundle", "-i", "../configs/cfg.yml", "-o", "b.zip", "--json"], work).stdout
    )
    assert doc["schema"] == "cas.error/1" and len(doc["details"]) == 12
    # One problem stays one line.
    (cfg_dir / "one.yml").write_text("k0:\n  model_path: weights/m0.pt\n")
    one = _cas(["bundle", "-i", "../configs/one.yml", "-o", "b.zip"], work)
    assert len(one.stderr.splitlines()) == 2 and "1 problem" not in one.stderr, one.stderr
    assert "k0.model_path: weights/m0.pt is not a file" in one.stderr.splitlines()[0]
