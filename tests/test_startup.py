"""Short commands import only what they need (issue 27): a guard against start-up regressions.

`cas --version` and `cas hash FILE` should cost little more than the interpreter's own start-up
(the target is 0.06 s; `benches/bench_cli.py` times them beside `python -c pass`). Timing is
too noisy for a test on a shared machine, so this checks the cause instead: the modules a
fresh interpreter has imported once the command ran. Each entry below cost a short command
from 5 ms (dataclasses, through the digest types) to 300 ms (the Hub client).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Never needed by the short commands below: the Hub client and its HTTP stack, YAML, the
# torch extra, version parsing, and the store (which pulls in file locks and the index).
# (`cas bundle verify` and `ls` read the bundle's config.yml, so they import yaml.)
HEAVY = (
    "huggingface_hub",
    "httpx",
    "requests",
    "torch",
    "numpy",
    "packaging",
    "filelock",
    "modelcas.store",
    "modelcas.lockfile",
    "modelcas.registry",
    "modelcas.hub",
    "modelcas.bundle",
    "modelcas.oci",
)

_PROBE = """
import json, sys
from modelcas.cli import main
try:
    code = main(sys.argv[2:])
except SystemExit as e:
    code = e.code
with open(sys.argv[1], "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def _imported(tmp_path: Path, *args: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``cas ARGS`` (which must succeed)."""
    out = tmp_path / "modules.json"
    env = {**os.environ, "MODELCAS_HOME": str(tmp_path / "store")}
    subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        check=True,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    result = json.loads(out.read_text())
    assert result["code"] in (0, None), result["code"]
    return set(result["modules"])


def _heavy(modules: set[str], *also: str) -> list[str]:
    heavy = (*HEAVY, *also)
    return sorted(m for m in modules if any(m == h or m.startswith(f"{h}.") for h in heavy))


@pytest.mark.parametrize("args", [["--version"], ["--json", "--version"], ["-q", "--version"]])
def test_version_imports_no_command(tmp_path: Path, args: list[str]) -> None:
    modules = _imported(tmp_path, *args)
    assert _heavy(modules, "yaml") == []
    commands = sorted(m for m in modules if m.startswith("modelcas.cli.") and "._" not in m)
    assert commands == [], "no command module is needed to print the version"
    assert "modelcas.digest" not in modules and "dataclasses" not in modules


def test_hash_of_a_small_file_imports_no_store(tmp_path: Path) -> None:
    (tmp_path / "small.txt").write_text("hello\n")
    for args in (["hash", "small.txt"], ["hash", "--algo", "both", "--json", "small.txt"]):
        modules = _imported(tmp_path, *args)
        assert _heavy(modules, "yaml") == [], args
        assert "modelcas.cli.hash" in modules  # the probe really ran the command


def test_store_verify_imports_no_lockfile_or_hub(tmp_path: Path) -> None:
    from modelcas.store import Store

    Store(tmp_path / "store")  # named by MODELCAS_HOME: `cas verify` reads only a store that exists
    modules = _imported(tmp_path, "verify")
    assert "modelcas.store" in modules  # it needs the store, and nothing else heavy
    assert [m for m in _heavy(modules, "yaml") if not m.startswith("modelcas.store")] == []


def test_version_is_still_printed_and_command_options_still_parse(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "modelcas"]
    out = subprocess.run([*run, "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("modelcas ")
    # `--version` is also an option of `cas add`: that one is not the program's version.
    bad = subprocess.run([*run, "add", "--version"], check=False, capture_output=True, text=True)
    assert bad.returncode == 2 and "expected one argument" in bad.stderr
    # Help still lists every command.
    helped = subprocess.run(
        [*run, "--help", "--version"], check=False, capture_output=True, text=True
    )
    assert "bundle" in helped.stdout and "verify" in helped.stdout


def test_bundle_verify_and_ls_import_no_store(tmp_path: Path) -> None:
    from modelcas import bundle

    (tmp_path / "w.pt").write_bytes(os.urandom(5000))
    (tmp_path / "cfg.yml").write_text("seg:\n  model_path: w.pt\n  model_type: Unet\n")
    out = bundle.create_model_bundle(tmp_path / "cfg.yml", tmp_path / "b.zip", auto_date=False)
    for action in ("verify", "ls"):
        modules = _imported(tmp_path, "bundle", action, str(out))
        assert "modelcas.bundle.archive" in modules
        # The bundle's own config.yml is YAML; nothing else heavy, and no store.
        assert [m for m in _heavy(modules) if not m.startswith("modelcas.bundle")] == [], action
        assert "modelcas.bundle.pipeline" not in modules
