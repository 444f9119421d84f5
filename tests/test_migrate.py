"""Moving in from a hand-written weights registry (`cas lock import`), and `cas lock set`.

The package is the seed's, published the old way (its own `scripts/publish_weights.py`,
through the real Hub client against the local Hub); the registry is then read, never run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcas.lockfile import Lockfile
from tests.refs import ref_sha256

Cas = Callable[..., subprocess.CompletedProcess[bytes]]
ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "examples" / "tutorial"
REPO = "sidxz/structflo-cser-weights"


def _one_line(r: subprocess.CompletedProcess[bytes]) -> str:
    lines = r.stderr.decode().strip().splitlines()
    assert len(lines) in (1, 2) and lines[0].startswith("cas: error: "), r.stderr
    assert "Traceback" not in r.stderr.decode()
    return lines[0]


@pytest.fixture
def legacy(tmp_path: Path, hf_env: dict[str, str]) -> Path:
    """The seed's package with two versions published by its own script: two Hub tags."""
    pkg = tmp_path / "legacy-cser"
    shutil.copytree(TUTORIAL / "legacy-cser", pkg)
    for version, requires in (("v1.0", ">=0.1,<1"), ("v2.0", ">=1.0.0,<2.0.0")):
        r = subprocess.run(
            [sys.executable, "scripts/publish_weights.py", "--model", "cser-detector",
             "--version", version, "--requires", requires,
             "--weights-file", str(TUTORIAL / f"best-{version}.pt")],
            cwd=pkg, env={**os.environ, **hf_env}, capture_output=True, check=False,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    return pkg


def test_lock_import_pins_every_version_with_requires_package_and_latest(
    legacy: Path, hf_env: dict[str, str], cas: Cas, tmp_path: Path
) -> None:
    weights_py = legacy / "structflo" / "cser" / "weights.py"
    text = weights_py.read_text()
    # A key the importer has no use for is reported with its line, not dropped silently.
    weights_py.write_text(
        text.replace(
            "'revision': 'weights-v1.0',", "'revision': 'weights-v1.0', 'date': '2025-10-01',"
        )
    )
    r = cas("lock", "import", "structflo/cser/weights.py", cwd=legacy, extra_env=hf_env)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert (
        "pinned cser-detector@v1.0 best.pt from hf://sidxz/structflo-cser-weights@weights-v1.0"
        in out
    )
    assert "sha256 matches weights.py" in out
    assert "not used: weights.py:" in out and "REGISTRY.cser-detector.v1.0.date" in out
    lock = Lockfile.load(legacy / "structflo" / "cser" / "weights.lock")
    assert lock.package == "structflo-cser"
    model = lock.model("cser-detector")
    assert model.latest == "v2.0" and model.repo == f"hf://{REPO}"
    assert model.weights_path == "runs/labels_detect/yolo11l_panels/weights/best.pt"
    v1, v2 = model.versions["v1.0"], model.versions["v2.0"]
    assert v1.requires == ">=0.1,<1" and v2.requires == ">=1.0.0,<2.0.0"
    assert v1.source == f"hf://{REPO}@weights-v1.0" and v1.commit and len(v1.commit) == 40
    assert v1.files["best.pt"].sha256 == ref_sha256((TUTORIAL / "best-v1.0.pt").read_bytes())
    # Again: nothing changes.
    r = cas("lock", "import", "structflo/cser/weights.py", cwd=legacy, extra_env=hf_env)
    assert r.returncode == 0 and b"already up to date" in r.stdout, r.stdout
    # -q: only what needs attention (the unused key), no "pinned" or "already" lines.
    r = cas("-q", "lock", "import", "structflo/cser/weights.py", cwd=legacy, extra_env=hf_env)
    assert r.returncode == 0 and r.stdout.decode().startswith("not used:"), r.stdout
    assert b"pinned" not in r.stdout and b"already" not in r.stdout, r.stdout
    # The consumer, as before: the seed's error for v2.0, a fallback to v1.0 otherwise.
    site = tmp_path / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", site, "."],
        cwd=legacy, capture_output=True, check=False,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, **hf_env, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    env["MODELCAS_HOME"] = str(tmp_path / "store")
    check = subprocess.run(
        [sys.executable, str(TUTORIAL / "check_compatibility.py"), "v2.0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 1, check.stderr
    assert (
        "WeightsCompatibilityError: Weights 'cser-detector/v2.0' require structflo-cser"
        in check.stdout
    )
    check = subprocess.run(
        [sys.executable, str(TUTORIAL / "check_compatibility.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert "using cser-detector@v1.0 instead" in check.stdout
    assert check.stdout.strip().endswith("/best.pt")


def test_a_recorded_sha256_that_differs_pins_nothing(
    legacy: Path, hf_env: dict[str, str], cas: Cas
) -> None:
    weights_py = legacy / "structflo" / "cser" / "weights.py"
    real = ref_sha256((TUTORIAL / "best-v2.0.pt").read_bytes())
    weights_py.write_text(weights_py.read_text().replace(real, "0" * 64))
    r = cas("lock", "import", "structflo/cser/weights.py", cwd=legacy, extra_env=hf_env)
    assert r.returncode == 1
    line = _one_line(r)
    assert "weights.py:" in line and "cser-detector@v2.0" in line and real in line
    assert not (legacy / "structflo" / "cser" / "weights.lock").exists()


def test_a_value_that_is_not_a_literal_is_one_line_naming_it_and_never_runs(
    tmp_path: Path, cas: Cas
) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "scripts").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "1"\n')
    marker = tmp_path / "ran"
    (pkg / "weights.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        "REGISTRY = {\n"
        '    "det": {\n'
        '        "v1.0": {"repo_id": "a/b", "filename": "best.pt",\n'
        '                 "sha256": compute_sha()},\n'
        "    },\n"
        "}\n"
    )
    r = cas("lock", "import", "weights.py", cwd=pkg)
    assert r.returncode == 2
    line = _one_line(r)
    assert "weights.py:6: REGISTRY is not a Python literal there (a function call)" in line
    assert not marker.exists(), "weights.py must never run"
    # The same rule for MODEL_REPOS in the publish script.
    (pkg / "weights.py").write_text('REGISTRY = {"det": {"v1.0": {"sha256": None}}}\n')
    (pkg / "scripts" / "publish_weights.py").write_text(
        'ORG = "sidxz"\nMODEL_REPOS = {\n    "det": {"repo_id": f"{ORG}/det", "filename": "best.pt"},\n}\n'  # noqa: E501
    )
    r = cas("lock", "import", "weights.py", cwd=pkg)
    assert r.returncode == 2
    assert (
        "publish_weights.py:3: MODEL_REPOS is not a Python literal there (an f-string)"
        in _one_line(r)
    )


def test_repo_and_file_from_the_command_line(
    tmp_path: Path, hub: object, hf_env: dict[str, str], cas: Cas
) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text('[project]\nname = "p"\nversion = "1"\n')
    (pkg / "best.pt").write_bytes(b"weights one")
    (pkg / "weights.py").write_text(
        'REGISTRY = {"det": {"v1.0": {"tag": "weights-v1.0"}}}\nLATEST = {"det": "v1.0"}\n'
    )
    r = cas("lock", "import", "weights.py", cwd=pkg, extra_env=hf_env)
    assert r.returncode == 2 and "names no repo_id" in _one_line(r)
    # Publish the tag (cas publish pins it in its own cas.lock; the import writes weights.lock).
    r = cas("publish", "det", "--version", "v1.0", "--repo", "acme/det", "--file", "best.pt",
            cwd=pkg, extra_env=hf_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    r = cas("lock", "import", "weights.py", "--repo", "acme/det", "--file", "best.pt",
            "--json", cwd=pkg, extra_env=hf_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(r.stdout)
    assert doc["schema"] == "cas.lock-import/1" and doc["latest"] == {"det": "v1.0"}
    assert doc["versions"][0]["checked"] is False and doc["package"] == "p"


def test_lock_set_edits_requires_latest_and_package_in_place(tmp_path: Path, cas: Cas) -> None:
    for v in ("v1.0", "v1.1"):
        (tmp_path / "best.pt").write_bytes(v.encode())
        assert cas("add", "best.pt", "--name", "det", "--version", v).returncode == 0
    lock_path = tmp_path / "cas.lock"
    r = cas("lock", "set", "det@v1.0", "--requires", ">=0.1,<1")
    assert r.returncode == 2 and "no `package:`" in _one_line(r)
    r = cas("lock", "set", "det@v1.0", "--requires", ">=0.1,<1", "--package", "structflo-cser")
    assert r.returncode == 0, r.stderr
    assert b"set det@v1.0 requires: None -> >=0.1,<1" in r.stdout
    r = cas("lock", "set", "det@v1.0", "--latest", "--json")
    assert r.returncode == 0
    assert b'"det latest: v1.1 -> v1.0"' in r.stdout and b'"cas.lock-set/1"' in r.stdout
    lock = Lockfile.load(lock_path)
    assert lock.package == "structflo-cser" and lock.model("det").latest == "v1.0"
    assert lock.version("det", "v1.0")[1].requires == ">=0.1,<1"
    assert lock_path.read_text() == lock.dumps(), "still canonical"
    r = cas("lock", "set", "det@v1.0", "--requires", "")
    assert r.returncode == 0 and Lockfile.load(lock_path).version("det", "v1.0")[1].requires is None
    before = lock_path.read_bytes()
    for argv, code in (
        (["lock", "set", "det@v1.0"], 2),
        (["lock", "set", "det", "--latest"], 2),
        (["lock", "set", "det@v1.0", "--requires", ">>1"], 2),
        (["lock", "set", "det@v9", "--latest"], 1),
    ):
        r = cas(*argv)
        assert r.returncode == code, (argv, r.stderr)
        _one_line(r)
    assert lock_path.read_bytes() == before


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("REGISTRY = {[1]: {}}\n", "weights.py:1: REGISTRY is not a Python literal there (a key"),
        (
            'REGISTRY = {"det": {"v1.0": {}}}\nLATEST = {\n  ("a", [1]): "v1.0"}\n',
            "weights.py:3: LATEST is not a Python literal there (a key",
        ),
        ("REGISTRY = " + "-" * 100_000 + "1\n", "weights.py: not valid Python"),
        ('REGISTRY = {"det": {}}\x00\n', "weights.py: not valid Python"),
        ('REGISTRY = {\n  "../det": {"v1.0": {}}}\n', "weights.py:2: '../det' is not a model"),
        ("REGISTRY = {\n  7: {'v1.0': {}}}\n", "weights.py:2: 7 is not a model name"),
        (
            'REGISTRY = {"det": {\n  "v1.0": {"filename": "../../x.pt"}}}\n',
            "weights.py:2: det@v1.0: file name '../../x.pt'",
        ),
        # Dropped, it would pin the version with no compatibility check at all.
        (
            'REGISTRY = {"det": {\n  "v1.0": {"requires": [">=1", "<2"]}}}\n',
            "weights.py:2: det@v1.0: requires ['>=1', '<2'] is not a version range",
        ),
        (
            'REGISTRY = {"det": {\n  "v1.0": {"requires": 1.0}}}\n',
            "weights.py:2: det@v1.0: requires 1.0 is not a version range",
        ),
        ("REGISTRY = {}\nLATEST = {}\n", "weights.py: REGISTRY records no version"),
    ],
    ids=[
        "list key",
        "latest key",
        "deep",
        "null byte",
        "bad name",
        "int name",
        "file name",
        "requires list",
        "requires number",
        "empty",
    ],
)
def test_a_hostile_weights_py_is_one_line_before_any_fetch(
    tmp_path: Path, cas: Cas, text: str, said: str
) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "weights.py").write_text(text)
    # No Hub here: a fetch would fail with "cannot resolve"; the file is refused before one.
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "1"}
    r = cas("lock", "import", "weights.py", "--repo", "a/b", "--file", "w.pt", cwd=pkg,
            extra_env=env)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert said in _one_line(r), r.stderr
    assert not (pkg / "weights.lock").exists()


@pytest.mark.parametrize("package", ["", "a b", "x\ny", "../../etc", "-lead"])
def test_lock_set_and_import_refuse_a_package_that_is_no_distribution_name(
    tmp_path: Path, cas: Cas, package: str
) -> None:
    (tmp_path / "best.pt").write_bytes(b"w")
    assert cas("add", "best.pt", "--name", "det", "--version", "v1.0").returncode == 0
    before = (tmp_path / "cas.lock").read_bytes()
    r = cas("lock", "set", f"--package={package}")
    assert r.returncode == 2 and "not a distribution name" in _one_line(r), r.stderr
    assert (tmp_path / "cas.lock").read_bytes() == before
    (tmp_path / "weights.py").write_text('REGISTRY = {"det": {"v1.0": {}}}\n')
    r = cas("lock", "import", "weights.py", "--repo", "a/b", "--file", "best.pt",
            f"--package={package}")  # fmt: skip
    assert r.returncode == 2 and "not a distribution name" in _one_line(r), r.stderr
    assert not (tmp_path / "weights.lock").exists()
