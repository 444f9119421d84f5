"""Lockfiles and registries: format, errors, ordering, compatibility, concurrency, crashes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import modelcas
from modelcas.digest import Digest
from modelcas.errors import (
    IntegrityError,
    LockfileError,
    LockVersionError,
    NotPinnedError,
    UsageError,
)
from modelcas.lockfile import Lockfile
from modelcas.registry import Registry, open_lock
from modelcas.store import Store
from tests.faults import strace_inject
from tests.pkgs import fake_package, registry_lock, run_in_site
from tests.refs import ref_blake3, ref_sha256

Cas = Callable[..., subprocess.CompletedProcess[bytes]]
GOLDEN = Path(__file__).parent / "data" / "golden.lock"
H = "a" * 64


def test_golden_lockfile_round_trips_byte_for_byte() -> None:
    text = GOLDEN.read_text()
    lock = Lockfile.load(GOLDEN)
    assert lock.dumps() == text
    assert Lockfile.loads(lock.dumps()).dumps() == text
    m = lock.model("cser-detector")
    assert m.ordered() == ["v1.0rc1", "v1.9", "v1.10"]
    assert m.latest == "v1.10" and m.repo == "hf://sidxz/structflo-cser-detector"
    assert lock.version("2d-unet")[0] == "3.0"
    assert lock.version("cser-detector", "v1.10")[1].mirrors == [
        "oci://registry.lab:5000/models/cser-detector@sha256:"
        "3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855e",
        "file:///lab/shared/cas",
    ]


def test_mirrors_are_kept_on_repin_and_added_once() -> None:
    lock = Lockfile.load(GOLDEN)
    _, entry = lock.version("cser-detector", "v1.10")
    before = list(entry.mirrors)
    assert not lock.add_mirror("cser-detector", "v1.10", before[0])
    assert not lock.add_mirror("cser-detector", "v1.10", entry.source or "")
    assert lock.add_mirror("cser-detector", "v1.10", "oci://other.lab/m@sha256:" + H)
    assert lock.version("cser-detector", "v1.10")[1].mirrors == [
        *before,
        "oci://other.lab/m@sha256:" + H,
    ]
    same = lock.version("cser-detector", "v1.10")[1]
    assert not lock.pin(
        "cser-detector", "v1.10", same.files, requires=same.requires, source=same.source,
        commit=same.commit,
    )  # fmt: skip


def test_same_content_same_bytes_whatever_the_insertion_order() -> None:
    a, b = Lockfile(), Lockfile()
    files = {"z.bin": Digest(H, 1, H), "a.bin": Digest("b" * 64, 2)}
    for version in ("v1.9", "v1.10", "v1.2"):
        a.pin("m", version, files)
    for version in ("v1.2", "v1.10", "v1.9"):
        b.pin("m", version, dict(reversed(files.items())))
    assert a.dumps() == b.dumps()
    assert a.models["m"].latest == "v1.10"


@pytest.mark.parametrize(
    ("versions", "latest"),
    [
        (["v1.9", "v1.10"], "v1.10"),
        (["v2.0rc1", "v1.5"], "v1.5"),  # a pre-release never becomes latest by itself
        (["v2.0", "v2.0rc1"], "v2.0"),
        (["1.0", "v0.9", "V1.1"], "V1.1"),
        (["v1.0.post1", "v1.0"], "v1.0.post1"),
    ],
)
def test_latest_follows_pep440(versions: list[str], latest: str) -> None:
    lock = Lockfile()
    for v in versions:
        lock.pin("m", v, {"w": Digest(H, 1)})
    assert lock.models["m"].latest == latest


def test_a_prerelease_becomes_latest_only_when_asked() -> None:
    lock = Lockfile()
    lock.pin("m", "v1.2", {"w": Digest(H, 1)})
    lock.pin("m", "v2.0rc1", {"w": Digest(H, 1)})
    assert lock.models["m"].latest == "v1.2"
    lock.pin("m", "v2.0rc2", {"w": Digest(H, 1)}, pre=True)
    assert lock.models["m"].latest == "v2.0rc2"
    lock.pin("m", "v2.0", {"w": Digest(H, 1)})
    assert lock.models["m"].latest == "v2.0"


def test_no_latest_and_unpin() -> None:
    lock = Lockfile()
    lock.pin("m", "v1.0", {"w": Digest(H, 1)})
    lock.pin("m", "v2.0", {"w": Digest("b" * 64, 1)}, set_latest=False)
    assert lock.models["m"].latest == "v1.0"
    lock.pin("m", "v1.1", {"w": Digest("c" * 64, 1)})
    assert lock.models["m"].latest == "v2.0", "latest is the highest version"
    lock.unpin("m", "v2.0")
    assert lock.models["m"].latest == "v1.1"
    with pytest.raises(NotPinnedError):
        lock.unpin("m", "v9")


def test_repinning_other_content_needs_force() -> None:
    lock = Lockfile()
    assert lock.pin("m", "v1", {"w": Digest(H, 1)})
    assert not lock.pin("m", "v1", {"w": Digest(H, 1)})
    with pytest.raises(LockfileError, match="already pinned"):
        lock.pin("m", "v1", {"w": Digest("b" * 64, 1)})
    assert lock.pin("m", "v1", {"w": Digest("b" * 64, 1)}, force=True)


@pytest.mark.parametrize("bad", ["not a version", "v1..2", ""])
def test_bad_versions_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        Lockfile().pin("m", bad, {"w": Digest(H, 1)})


def _broken(edit: Callable[[str], str]) -> str:
    return edit(GOLDEN.read_text())


@pytest.mark.parametrize(
    ("edit", "error", "where"),
    [
        (
            lambda t: t.replace("lock-version: 1", "lock-version: 7"),
            LockVersionError,
            "lock-version 7",
        ),
        (
            lambda t: t.replace("lock-version: 1", "lock-version: one"),
            LockfileError,
            "lock-version",
        ),
        (
            lambda t: t.replace('sha256: "9f86d0', 'sha256: "9F86d0'),
            LockfileError,
            "models.cser-detector.versions.v1.0rc1.files.best.pt.sha256",
        ),
        (
            lambda t: t.replace('sha256: "2c26b4', 'sha256: "2c26'),
            LockfileError,
            "models.cser-detector.versions.v1.10.files.best.pt.sha256",
        ),
        (
            lambda t: t.replace("size: 42", "size: -1"),
            LockfileError,
            "models.cser-detector.versions.v1.10.files.classes.json.size",
        ),
        (
            lambda t: t.replace("    latest: v1.10\n", "    latest: v1.10\n    lattest: v1\n"),
            LockfileError,
            "models.cser-detector.lattest: unknown key",
        ),
        (lambda t: t.replace("package:", "packages:"), LockfileError, "packages: unknown key"),
        (
            lambda t: t.replace('requires: ">=0.1,<1"', 'requires: "at least 0.1"'),
            LockfileError,
            "models.cser-detector.versions.v1.0rc1.requires",
        ),
        (
            lambda t: t.replace("latest: v1.10", "latest: v9"),
            LockfileError,
            "models.cser-detector.latest",
        ),
        (lambda t: t.replace("      v1.9:", "      v1.10:"), LockfileError, "duplicate key"),
        (lambda t: t.replace('commit: "0a1b', 'commit: "zz1b'), LockfileError, "commit"),
        (lambda t: t + "  bad model!:\n    versions: {}\n", LockfileError, "bad model!"),
        (
            lambda t: t.replace('          - "file:///lab/shared/cas"', "          - 42"),
            LockfileError,
            "models.cser-detector.versions.v1.10.mirrors[1]",
        ),
        (
            lambda t: re.sub(r"mirrors:\n(          - .*\n)+", 'mirrors: "oci://x/y"\n', t),
            LockfileError,
            "models.cser-detector.versions.v1.10.mirrors",
        ),
    ],
)
def test_hand_edited_errors_name_file_and_key_path(
    tmp_path: Path, edit: Callable[[str], str], error: type[Exception], where: str
) -> None:
    p = tmp_path / "cas.lock"
    p.write_text(_broken(edit))
    with pytest.raises(error) as e:
        Lockfile.load(p)
    assert str(p) in str(e.value)
    assert where in str(e.value)


def test_digest_pair_disagreeing_with_store(tmp_path: Path, cas: Cas) -> None:
    store = Store(tmp_path / "store")
    src = tmp_path / "w.pt"
    src.write_bytes(b"weights")
    d = store.add_file(src).info.digest
    lock = Lockfile(path=tmp_path / "cas.lock")
    lock.pin("m", "v1", {"w.pt": Digest(d.sha256, d.size, "f" * 64)})
    lock.save()
    with pytest.raises(IntegrityError, match=r"models\.m\.versions\.v1\.files\.w\.pt\.blake3"):
        Registry(lock, store).path("m")
    r = cas("--store", store.root, "verify", "--lock", lock.path)
    assert r.returncode == 1 and b"MISMATCH" in r.stdout


def test_a_wrong_size_in_the_lockfile_is_caught(tmp_path: Path, cas: Cas) -> None:
    """Reproduction: a lied-about size passed `cas verify --lock` and `cas path`."""
    store = Store(tmp_path / "store")
    src = tmp_path / "w.pt"
    src.write_bytes(b"weights")
    d = store.add_file(src).info.digest
    lock = Lockfile(path=tmp_path / "cas.lock")
    lock.pin("m", "v1", {"w.pt": Digest(d.sha256, d.size + 1, d.blake3)})
    lock.save()
    with pytest.raises(IntegrityError, match=r"files\.w\.pt\.size"):
        Registry(lock, store).path("m")
    r = cas("--store", store.root, "verify", "--lock", lock.path)
    assert r.returncode == 1 and b"MISMATCH" in r.stdout and b"size" in r.stdout
    r = cas("--store", store.root, "--lock", lock.path, "path", "m")
    assert r.returncode == 1 and r.stdout == b"" and b"size" in r.stderr


# -- CLI ------------------------------------------------------------------------------------


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_cli_pin_list_show_rm(tmp_path: Path, cas: Cas) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    w1 = _file(tmp_path, "best.pt", b"v1 weights")
    r = cas(
        "add",
        w1,
        "--name",
        "cser-detector",
        "--version",
        "v1.9",
        "--requires",
        ">=0.2,<1",
        "--package",
        "structflo-cser",
        cwd=proj,
    )
    assert r.returncode == 0, r.stderr
    assert Lockfile.load(proj / "cas.lock").package == "structflo-cser"
    w2 = _file(tmp_path, "best2.pt", b"v2 weights")
    assert cas("add", w2, "--name", "cser-detector", "--version", "v1.10", cwd=proj).returncode == 0
    lock = Lockfile.load(proj / "cas.lock")
    assert lock.models["cser-detector"].latest == "v1.10"
    assert lock.version("cser-detector", "v1.9")[1].files["best.pt"] == Digest(
        ref_sha256(b"v1 weights"), 10, ref_blake3(b"v1 weights")
    )
    ls = cas("lock", "ls", cwd=proj)
    assert b"* cser-detector@v1.10" in ls.stdout
    show = cas("lock", "show", "cser-detector@v1.9", cwd=proj)
    assert ref_sha256(b"v1 weights").encode() in show.stdout and b">=0.2,<1" in show.stdout
    # Re-pinning other content is refused; the lockfile is untouched.
    before = (proj / "cas.lock").read_bytes()
    again = cas("add", w2, "--name", "cser-detector", "--version", "v1.9", cwd=proj)
    assert again.returncode == 2 and b"already pinned" in again.stderr
    assert (proj / "cas.lock").read_bytes() == before
    # Fail closed: v1.9 has `requires`, and structflo-cser is not installed here.
    blind = cas("path", "cser-detector@v1.9", cwd=proj)
    assert blind.returncode == 2 and b"not installed" in blind.stderr
    path = cas("path", "cser-detector@v1.9", "--no-check-requires", cwd=proj)
    assert Path(path.stdout.decode().strip()).read_bytes() == b"v1 weights"
    got = cas("get", "cser-detector", "-o", tmp_path / "out" / "best.pt", cwd=proj)
    assert got.returncode == 0 and (tmp_path / "out" / "best.pt").read_bytes() == b"v2 weights"
    assert cas("lock", "rm", "cser-detector@v1.10", cwd=proj).returncode == 0
    assert Lockfile.load(proj / "cas.lock").models["cser-detector"].latest == "v1.9"
    missing = cas("path", "nope", cwd=proj)
    assert missing.returncode == 1 and b"no model 'nope'" in missing.stderr
    bad = cas("add", w1, "--name", "x", "--version", "not-a-version", cwd=proj)
    assert bad.returncode == 2 and b"not a version" in bad.stderr


def test_verify_lock_distinguishes_missing_and_corrupt(tmp_path: Path, cas: Cas) -> None:
    store = Store(tmp_path / "store")
    proj = tmp_path / "proj"
    proj.mkdir()
    a = _file(tmp_path, "a.pt", b"a" * 5000)
    b = _file(tmp_path, "b.pt", b"b" * 5000)
    for f, name in ((a, "alpha"), (b, "beta")):
        r = cas("--store", store.root, "add", f, "--name", name, "--version", "v1", cwd=proj)
        assert r.returncode == 0, r.stderr
    assert cas("--store", store.root, "verify", "--lock", cwd=proj).returncode == 0
    da, db = (Lockfile.load(proj / "cas.lock").version(n)[1].files for n in ("alpha", "beta"))
    obj_a = store.object_path(da["a.pt"].sha256)
    obj_a.chmod(0o644)
    obj_a.write_bytes(b"A" * 5000)
    store.quarantine(db["b.pt"].sha256)
    r = cas("--store", store.root, "verify", "--lock", cwd=proj)
    assert r.returncode == 1
    assert b"CORRUPT alpha@v1 a.pt" in r.stdout
    assert b"MISSING beta@v1 b.pt" in r.stdout and b"cas sync" in r.stdout


def test_lock_check_detects_non_canonical_file(tmp_path: Path, cas: Cas) -> None:
    p = tmp_path / "cas.lock"
    p.write_text(GOLDEN.read_text())
    assert cas("lock", "--lock", p, "check", "--offline").returncode == 0
    p.write_text(GOLDEN.read_text().replace("lock-version: 1", "lock-version:   1"))
    r = cas("lock", "--lock", p, "check", "--offline")
    assert r.returncode == 1 and b"canonical" in r.stdout


def test_sync_from_directory_remote(tmp_path: Path, cas: Cas) -> None:
    shared = Store(tmp_path / "shared")
    data = b"lab weights" * 1000
    d = shared.add_bytes(data).digest
    lock = Lockfile(path=tmp_path / "cas.lock")
    lock.pin("unet", "v1", {"unet.pt": d}, source=shared.root.as_uri())
    lock.save()
    fresh = Store(tmp_path / "fresh")
    r = cas("--store", fresh.root, "sync", "--lock", lock.path)
    assert r.returncode == 0, r.stderr
    assert b"1 fetched" in r.stdout
    assert fresh.path(d.sha256).read_bytes() == data
    assert [root.path for root in fresh.roots()] == [lock.path.resolve()]
    assert b"0 fetched" in cas("--store", fresh.root, "sync", "--lock", lock.path).stdout
    # gc keeps what the registered lockfile pins.
    assert cas("--store", fresh.root, "gc", "--grace", "0").returncode == 0
    assert fresh.has(d.sha256)
    # A remote object with other bytes is refused and nothing is stored.
    other = Store(tmp_path / "other")
    evil = shared.object_path(d.sha256)
    evil.chmod(0o644)
    evil.write_bytes(b"tampered!" * 1000)
    with pytest.raises(IntegrityError, match="expected sha256"):
        Registry(lock, other).path("unet")
    assert other.objects() == [] and list(other.tmp_dir.iterdir()) == []


def test_missing_without_source_says_so(tmp_path: Path) -> None:
    lock = Lockfile(path=tmp_path / "cas.lock")
    lock.pin("m", "v1", {"w": Digest(H, 3)})
    with pytest.raises(NotPinnedError, match="no source"):
        Registry(lock, Store(tmp_path / "s")).path("m")


def test_eight_processes_pin_different_versions(tmp_path: Path, cas: Cas) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    files = [_file(tmp_path, f"w{i}.pt", f"weights {i}".encode()) for i in range(8)]
    env = {**os.environ, "MODELCAS_HOME": str(tmp_path / "store")}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelcas",
                "add",
                str(f),
                "--name",
                "m",
                "--version",
                f"v1.{i}",
            ],
            cwd=proj,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i, f in enumerate(files)
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lock = Lockfile.load(proj / "cas.lock")
    assert lock.models["m"].ordered() == [f"v1.{i}" for i in range(8)]
    assert lock.models["m"].latest == "v1.7"


@pytest.mark.parametrize("when", [1, 2])
def test_crash_while_writing_lockfile_leaves_old_or_new(tmp_path: Path, when: int) -> None:
    proj = tmp_path / "proj"
    proj.mkdir()
    env = {**os.environ, "MODELCAS_HOME": str(tmp_path / "store"), "PYTHONDONTWRITEBYTECODE": "1"}
    first = _file(tmp_path, "a.pt", b"first")
    subprocess.run(
        [sys.executable, "-m", "modelcas", "add", str(first), "--name", "m", "--version", "v1"],
        cwd=proj,
        env=env,
        check=True,
        capture_output=True,
    )
    old = (proj / "cas.lock").read_bytes()
    second = _file(tmp_path, "b.pt", b"second")
    # The add's renames: object, index record, then the lockfile; kill at the last ones.
    add = [sys.executable, "-m", "modelcas", "add", str(second), "--name", "m", "--version", "v2"]
    argv = strace_inject("rename", "signal=KILL", 2 + when, add)
    r = subprocess.run(argv, cwd=proj, env=env, capture_output=True, check=False)
    assert r.returncode in (-9, 137), r.stderr
    text = (proj / "cas.lock").read_bytes()
    lock = Lockfile.load(proj / "cas.lock")
    assert text == old or set(lock.models["m"].versions) == {"v1", "v2"}
    # The kill may leave the git-style lock behind; it names a dead owner, so the next command
    # breaks it and goes on.
    third = _file(tmp_path, "c.pt", b"third")
    add = [sys.executable, "-m", "modelcas", "add", str(third), "--name", "m", "--version", "v3"]
    env["MODELCAS_LOCK_TIMEOUT"] = "5"
    r = subprocess.run(add, cwd=proj, env=env, capture_output=True, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "v3" in Lockfile.load(proj / "cas.lock").models["m"].versions
    assert not [p for p in proj.iterdir() if p.name != "cas.lock" and p.suffix == ".lock"]


# -- package registries and compatibility ---------------------------------------------------


def test_registry_from_package_compatible_and_not(tmp_path: Path) -> None:
    shared = Store(tmp_path / "shared")
    site = tmp_path / "site"
    fake_package(site, "0.2.0", registry_lock(shared))
    r = run_in_site(
        site,
        tmp_path / "user-store",
        """
        import warnings
        from modelcas import Registry, WeightsCompatibilityError
        reg = Registry.from_package("structflo.cser", "weights.lock")
        assert reg.installed_version().public == "0.2.0"
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            p = reg.path("cser-detector")          # latest v2.0 needs 1.x: falls back
        assert open(p, "rb").read() == b"retrained weights", p
        assert "using cser-detector@v1.1 instead" in str(w[0].message)
        assert open(reg.path("cser-detector", "v1.0"), "rb").read() == b"old weights"
        try:
            reg.path("cser-detector", "v2.0")
        except WeightsCompatibilityError as e:
            print(str(e))
            print("compatible:", e.compatible)
        else:
            raise SystemExit("no error")
    """,
    )
    assert r.returncode == 0, r.stderr
    assert (
        "Weights 'cser-detector/v2.0' require structflo-cser>=1.0.0,<2.0.0 (you have 0.2.0)"
    ) in r.stdout, r.stdout
    assert "Upgrade with:  uv add 'structflo-cser>=1.0.0,<2.0.0'" in r.stdout
    assert "pip install 'structflo-cser>=1.0.0,<2.0.0'" in r.stdout
    assert "compatible: ['v1.1', 'v1.0']" in r.stdout


def test_registry_with_no_compatible_version(tmp_path: Path) -> None:
    shared = Store(tmp_path / "shared")
    site = tmp_path / "site"
    fake_package(site, "0.0.5", registry_lock(shared))
    r = run_in_site(
        site,
        tmp_path / "user-store",
        """
        from modelcas import Registry, WeightsCompatibilityError
        reg = Registry.from_package("structflo.cser")
        try:
            reg.path("cser-detector")
        except WeightsCompatibilityError as e:
            print(e)
    """,
    )
    assert (
        "Weights 'cser-detector/v2.0' require structflo-cser>=1.0.0,<2.0.0 (you have 0.0.5)"
        in r.stdout
    ), r.stdout + r.stderr


def test_registry_missing_resource_is_clear(tmp_path: Path) -> None:
    site = tmp_path / "site"
    fake_package(site, "0.2.0", "")
    r = run_in_site(
        site,
        tmp_path / "s",
        """
        from modelcas import Registry, LockfileError
        try:
            Registry.from_package("structflo.cser", "nope.lock")
        except LockfileError as e:
            print(e)
    """,
    )
    assert "ships no 'nope.lock'" in r.stdout, r.stderr


def test_open_lock_finds_nearest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = Lockfile(path=tmp_path / "cas.lock")
    lock.pin("m", "v1", {"w": Digest(H, 1)})
    lock.save()
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    reg = open_lock(store=Store(tmp_path / "s"))
    assert reg.lock.path == tmp_path / "cas.lock"
    assert isinstance(reg, modelcas.Registry)


# -- the parser refuses what it cannot trust (regressions) -----------------------------------

_ONE = (
    "lock-version: 1\nmodels:\n  m:\n    versions:\n      v1:\n        files:\n"
    '          {name}:\n            size: 1\n            sha256: "' + "a" * 64 + '"\n'
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lock-version: true\nmodels: {}\n", "lock-version: expected the integer 1, found True"),
        ("lock-version: 1.0\nmodels: {}\n", "lock-version: expected the integer 1"),
        ("", "the file is empty"),
        ("   \n# only a comment\n", "the file is empty"),
        ("a: " + "[" * 5000 + "]" * 5000, "nested too deeply"),
        (_ONE.format(name='"../escape.pt"'), "files.../escape.pt: the file name has an empty"),
        (_ONE.format(name='"/etc/passwd"'), "the file name is absolute"),
        (_ONE.format(name='"a\\\\b.pt"'), "contains a backslash"),
        (_ONE.format(name='"a//b.pt"'), "has an empty, '.' or '..' part"),
        (_ONE.format(name='"bell\\a.pt"'), "contains a control character"),
    ],
)
def test_untrustworthy_lockfiles_are_refused_with_the_key_path(text: str, message: str) -> None:
    with pytest.raises(LockfileError) as e:
        Lockfile.loads(text, Path("cas.lock"))
    assert message in str(e.value)
    assert "Traceback" not in str(e.value)


def test_subfolders_are_allowed_in_file_names() -> None:
    lock = Lockfile.loads(_ONE.format(name='"unet/model.safetensors"'), Path("cas.lock"))
    assert list(lock.models["m"].versions["v1"].files) == ["unet/model.safetensors"]


def test_non_utf8_and_non_regular_lockfiles_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "cas.lock"
    bad.write_bytes(b"lock-version: 1\nmodels: {\xff: 1}\n")
    with pytest.raises(LockfileError, match="not UTF-8"):
        Lockfile.load(bad)
    with pytest.raises(LockfileError, match="is a directory"):
        Lockfile.load(tmp_path)
    fifo = tmp_path / "fifo.lock"
    os.mkfifo(fifo)
    with pytest.raises(LockfileError, match="not a regular file"):
        Lockfile.load(fifo)  # refused without blocking on the FIFO


def test_a_git_lfs_pointer_is_not_pinned(tmp_path: Path, cas: Cas) -> None:
    """Reproduction: a pointer file was pinned as weights (forgot `git lfs pull`)."""
    pointer = tmp_path / "best.pt"
    pointer.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "b" * 64 + "\nsize 9\n"
    )
    r = cas("add", pointer, "--name", "m", "--version", "v1")
    assert r.returncode == 2 and b"git-lfs pointer" in r.stderr and b"git lfs pull" in r.stderr
    assert not (tmp_path / "cas.lock").exists()
    ok = cas("add", pointer, "--name", "m", "--version", "v1", "--allow-lfs-pointer")
    assert ok.returncode == 0, ok.stderr
