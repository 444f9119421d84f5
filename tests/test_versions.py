"""One version per PEP 440 value: ``v1.0``, ``1.0`` and ``1.0.0`` are one pin."""

from __future__ import annotations

import json
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from modelcas.digest import Digest
from modelcas.errors import LockfileError
from modelcas.lockfile import Lockfile

Run = Callable[..., subprocess.CompletedProcess[bytes]]
A = Digest("a" * 64, 1)
B = Digest("b" * 64, 2)


def test_a_second_spelling_with_the_same_bytes_is_the_first() -> None:
    lock = Lockfile()
    assert lock.pin("det", "1.0.0", {"best.pt": A})
    assert not lock.pin("det", "v1.0", {"best.pt": A})  # nothing changed
    assert list(lock.models["det"].versions) == ["1.0.0"]
    assert lock.models["det"].latest == "1.0.0"


def test_a_second_spelling_with_other_bytes_is_refused() -> None:
    lock = Lockfile()
    lock.pin("det", "1.0.0", {"best.pt": A})
    with pytest.raises(LockfileError, match=r"det@v1\.0 is already pinned as 1\.0\.0 to other"):
        lock.pin("det", "v1.0", {"best.pt": B})
    with pytest.raises(LockfileError, match=r"already pinned as 1\.0\.0"):
        lock.check_repin("det", "v1.0", {"other.pt"})


@pytest.mark.parametrize("spelling", ["v1.0", "1.0", "1.0.0", "V1.0.0", "v1"])
def test_lookups_accept_any_spelling(spelling: str) -> None:
    lock = Lockfile()
    lock.pin("det", "v1.0", {"best.pt": A})
    assert lock.version("det", spelling)[0] == "v1.0"


def test_equal_spellings_in_a_lockfile_load_with_one_line(tmp_path: Path, cas: Run) -> None:
    lock = Lockfile(path=tmp_path / "cas.lock")
    lock.pin("det", "v1.0", {"best.pt": A})
    lock.pin("det", "v2.0", {"best.pt": B})
    text = lock.dumps().replace("v2.0:", "1.0.0:").replace("latest: v2.0", "latest: v1.0")
    (tmp_path / "cas.lock").write_text(text)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loaded = Lockfile.load(tmp_path / "cas.lock")
    assert [str(w.message) for w in seen] == [
        f"{tmp_path / 'cas.lock'}: models.det.versions: v1.0 and 1.0.0 are one version "
        "(PEP 440); lookups use v1.0; `cas lock check` says how to merge them"
    ]
    assert loaded.version("det", "1.0")[0] == "v1.0"
    assert loaded.version("det", "1.0.0")[0] == "1.0.0"  # the exact spelling first

    r = cas("lock", "ls")
    assert r.returncode == 0, r.stderr
    assert r.stderr.decode().count("\n") == 1
    assert r.stderr.decode().startswith("cas: warning: ")

    r = cas("lock", "check", "--offline")
    assert r.returncode == 1
    out = r.stdout.decode()
    assert "v1.0, 1.0.0 are one version (PEP 440); they pin different files" in out
    assert "`cas lock rm det@1.0.0`" in out

    assert cas("lock", "rm", "det@1.0.0").returncode == 0
    assert cas("lock", "check", "--offline").returncode == 0


def test_cli_lookups_and_pins_use_the_first_spelling(tmp_path: Path, cas: Run) -> None:
    (tmp_path / "best.pt").write_bytes(b"weights one")
    (tmp_path / "other.pt").write_bytes(b"weights two")
    assert cas("add", "best.pt", "--name", "det", "--version", "1.0.0").returncode == 0
    r = cas("add", "best.pt", "--name", "det", "--version", "v1.0")
    assert r.returncode == 0, r.stderr
    assert "already pinned det@1.0.0 in" in r.stdout.decode(), r.stdout
    r = cas("add", "best.pt", "--name", "det", "--version", "v1.0", "--json")
    assert json.loads(r.stdout)["pin"]["version"] == "1.0.0"
    r = cas("add", "other.pt", "--name", "det", "--version", "v1", "--json")
    assert r.returncode == 2
    assert "det@v1 is already pinned as 1.0.0" in r.stderr.decode()
    r = cas("path", "det@v1.0")
    assert r.returncode == 0, r.stderr
    r = cas("lock", "show", "det", "--json")
    assert list(json.loads(r.stdout)["versions"]) == ["1.0.0"]
    # Removed under any spelling: the line names the version as pinned, and never "None".
    r = cas("lock", "rm", "det@1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("removed det@1.0.0 from "), r.stdout
    assert "None" not in r.stdout.decode() and "no version of det left" in r.stdout.decode()


def test_adding_the_same_files_again_after_a_push_keeps_the_pin(tmp_path: Path, cas: Run) -> None:
    """A pushed (or published, or signed) version records where its bytes also live; adding
    the same files again is "already pinned", not "pinned to other content" (exit 2)."""
    (tmp_path / "best.pt").write_bytes(b"weights one")
    assert cas("add", "best.pt", "--name", "det", "--version", "v1.0").returncode == 0
    assert cas("push", tmp_path / "shared").returncode == 0
    before = (tmp_path / "cas.lock").read_bytes()
    assert Lockfile.load(tmp_path / "cas.lock").models["det"].versions["v1.0"].source
    for spelling in ("v1.0", "1.0.0"):
        r = cas("add", "best.pt", "--name", "det", "--version", spelling)
        assert r.returncode == 0, r.stderr
        assert "already pinned det@v1.0" in r.stdout.decode(), r.stdout
    assert (tmp_path / "cas.lock").read_bytes() == before
