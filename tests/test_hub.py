"""Publishing to and pulling from the Hub: the real `cas` CLI and the real huggingface_hub client
against the local Hub-compatible server (tests/hubserver.py), in subprocesses configured by
environment variables only, as users run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelcas.lockfile import Lockfile
from modelcas.store import Store
from tests.conftest import HUB_TOKEN
from tests.hubserver import HubServer
from tests.pkgs import fake_package, run_in_site
from tests.refs import ref_sha256

TOKEN = HUB_TOKEN
REPO = "sidxz/structflo-cser-detector"
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cas(hf_env: dict[str, str], tmp_path: Path) -> Run:
    outputs: list[str] = []

    def run(
        *args: str | Path, cwd: Path, store: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [sys.executable, "-m", "modelcas", *map(str, args)],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={
                **os.environ,
                **hf_env,
                "MODELCAS_HOME": str(store or tmp_path / "store"),
                **(env or {}),
            },
        )
        outputs.append(r.stdout + r.stderr)
        return r

    yield run  # type: ignore[misc]
    for out in outputs:
        assert TOKEN not in out, "the token leaked into output"


def _package(tmp_path: Path) -> Path:
    """A package's source tree, as the seed's: its pyproject names the distribution."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text('[project]\nname = "structflo-cser"\nversion = "0.2.0"\n')
    return pkg


def _weights(dirpath: Path, seed: int, size: int = 3 << 20) -> Path:
    p = dirpath / "runs" / "labels_detect" / "weights" / "best.pt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(bytes((i * seed + i // 13) % 256 for i in range(size)))
    return p


def _puts(hub: HubServer) -> list[int]:
    return [r.bytes_received for r in hub.log if r.method == "PUT"]


def test_publish_new_model_then_retrain_then_pull(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    w = _weights(pkg, seed=3)
    first = cas(
        "publish",
        "cser-detector",
        "--version",
        "v1.0",
        "--repo",
        REPO,
        "--file",
        "runs/labels_detect/weights/best.pt",
        "--requires",
        ">=0.1,<1",
        cwd=pkg,
    )
    assert first.returncode == 0, first.stderr
    assert "tag weights-v1.0" in first.stdout
    lock = Lockfile.load(pkg / "cas.lock")
    m = lock.models["cser-detector"]
    v1 = m.versions["v1.0"]
    assert v1.source == f"hf://{REPO}@weights-v1.0" and v1.commit and len(v1.commit) == 40
    assert v1.files["best.pt"].sha256 == ref_sha256(w.read_bytes())
    assert m.repo == f"hf://{REPO}" and m.weights_path == "runs/labels_detect/weights/best.pt"

    # Seed case 1: retrain, same architecture: repo, file and requires all come from the lock.
    _weights(pkg, seed=5)
    second = cas("publish", "cser-detector", "--version", "v1.1", cwd=pkg)
    assert second.returncode == 0, second.stderr
    lock = Lockfile.load(pkg / "cas.lock")
    v11 = lock.models["cser-detector"].versions["v1.1"]
    assert lock.models["cser-detector"].latest == "v1.1"
    assert v11.requires == ">=0.1,<1" and v11.commit != v1.commit

    # A consumer with a fresh store pulls by tag.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    pull = cas(
        "pull",
        f"hf://{REPO}@weights-v1.1",
        "--name",
        "cser-detector",
        cwd=consumer,
        store=tmp_path / "consumer-store",
    )
    assert pull.returncode == 0, pull.stderr
    pinned = Lockfile.load(consumer / "cas.lock").models["cser-detector"].versions["v1.1"]
    assert pinned.files == v11.files and pinned.commit == v11.commit
    assert pinned.requires == ">=0.1,<1", "requires travels in modelcas.json"
    gets_before = sum(r.method == "GET" and "/resolve/" in r.path for r in hub.log)
    again = cas(
        "pull",
        f"hf://{REPO}@weights-v1.1",
        "--name",
        "cser-detector",
        cwd=consumer,
        store=tmp_path / "consumer-store",
    )
    assert again.returncode == 0 and "present" in again.stdout
    gets_after = sum(
        r.method == "GET" and "/resolve/" in r.path and "best.pt" in r.path for r in hub.log
    )
    assert gets_after <= gets_before, "nothing is downloaded when the object is present"
    # `cas lock check` asks the Hub: nothing moved.
    assert cas("lock", "check", cwd=consumer).returncode == 0


def test_a_file_the_hub_lists_without_an_lfs_sha256_is_never_pinned_unverified(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    """The Hub may list a file it keeps in Xet with no LFS sha256: its blob id is then the
    pointer's, which says nothing of the bytes. A pull must refuse with a hint, not pin what
    arrived; a sync against a pin checks the pin (and is not refused for the pointer's id)."""
    pkg = _package(tmp_path)
    w = _weights(pkg, seed=3)
    args = ("--repo", REPO, "--file", "runs/labels_detect/weights/best.pt")
    assert cas("publish", "cser-detector", "--version", "v1.0", *args, cwd=pkg).returncode == 0
    hub.xet_only(r"best\.pt")
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    store = tmp_path / "consumer-store"
    pull = cas("pull", f"hf://{REPO}@weights-v1.0", "--name", "det", cwd=consumer, store=store)
    assert pull.returncode == 1, pull.stderr
    lines = pull.stderr.strip().splitlines()
    assert "best.pt" in lines[0] and "no LFS sha256" in lines[0], lines
    assert lines[1].startswith("  hint:"), lines
    assert not (consumer / "cas.lock").exists(), "nothing pinned"
    assert not Store(store).objects(), "nothing stored"
    # A pin made while the Hub listed the sha256 is what a sync checks the bytes against.
    (consumer / "cas.lock").write_bytes((pkg / "cas.lock").read_bytes())
    sync = cas("sync", cwd=consumer, store=store)
    assert sync.returncode == 0, sync.stderr
    assert Store(store).has(ref_sha256(w.read_bytes()))


def test_dry_run_changes_nothing_anywhere(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    r = cas(
        "publish",
        "cser-detector",
        "--version",
        "v1.0",
        "--repo",
        REPO,
        "--file",
        "runs/labels_detect/weights/best.pt",
        "--dry-run",
        cwd=pkg,
    )
    assert r.returncode == 0, r.stderr
    for word in (
        f"hf://{REPO}",
        "will be created",
        "weights-v1.0",
        "best.pt",
        "3145728",
        "+      v1.0:",
    ):
        assert word in r.stdout
    assert not (pkg / "cas.lock").exists()
    assert all(req.method in ("GET", "HEAD") for req in hub.log), hub.log
    assert not Store(tmp_path / "store").objects(), "a dry run does not even fill the cache"


def test_same_bytes_are_not_uploaded_again(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    args = ("--repo", REPO, "--file", "runs/labels_detect/weights/best.pt")
    assert cas("publish", "cser-detector", "--version", "v1.0", *args, cwd=pkg).returncode == 0
    big_puts = [n for n in _puts(hub) if n >= 3 << 20]
    assert len(big_puts) == 1
    assert (
        "already there, not sent"
        in cas("publish", "cser-detector", "--version", "v1.0.1", "--dry-run", cwd=pkg).stdout
    )
    real = cas("publish", "cser-detector", "--version", "v1.0.1", cwd=pkg)
    assert real.returncode == 0, real.stderr
    rerun = cas("publish", "cser-detector", "--version", "v1.0.1", cwd=pkg)
    assert rerun.returncode == 0 and "already published" in rerun.stdout
    assert [n for n in _puts(hub) if n >= 3 << 20] == big_puts, "no second upload of the bytes"


def test_existing_tag_is_never_moved(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    args = ("--repo", REPO, "--file", "runs/labels_detect/weights/best.pt")
    assert cas("publish", "cser-detector", "--version", "v1.0", *args, cwd=pkg).returncode == 0
    other = tmp_path / "other"
    other.mkdir()
    _weights(other, seed=9)
    r = cas("publish", "cser-detector", "--version", "v1.0", *args, cwd=other)
    assert r.returncode == 1  # a tag that exists elsewhere: a check found a problem
    assert "refusing to move it" in r.stderr and "weights-v1.0" in r.stderr
    assert not (other / "cas.lock").exists()
    # Overwriting a pinned version with other bytes is refused too.
    _weights(pkg, seed=11)
    again = cas("publish", "cser-detector", "--version", "v1.0", cwd=pkg)
    assert again.returncode == 1 and "refusing to move it" in again.stderr


def test_a_tag_whose_small_git_file_differs_in_bytes_only_is_a_conflict(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    """A small file the Hub keeps in git (no LFS sha256) with the same size and other bytes:
    the existing tag holds another version; adopting it would pin bytes the tag does not hold."""
    args = ("--repo", REPO, "--file", "best.pt", "--file", "classes.json")
    for who, classes in (("first", b'{"names": ["cat"]}'), ("second", b'{"names": ["dog"]}')):
        d = tmp_path / who
        d.mkdir()
        (d / "best.pt").write_bytes(b"\0" * (3 << 20))
        (d / "classes.json").write_bytes(classes)
    first = cas("publish", "det", "--version", "v1.0", *args, cwd=tmp_path / "first")
    assert first.returncode == 0, first.stderr
    for dry in (("--dry-run",), ()):
        r = cas("publish", "det", "--version", "v1.0", *args, *dry, cwd=tmp_path / "second")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "refusing to move it" in r.stderr and "classes.json" in r.stderr
    assert not (tmp_path / "second" / "cas.lock").exists()


def test_failure_midway_leaves_lock_unchanged_and_rerun_finishes(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    args = (
        "cser-detector",
        "--version",
        "v1.0",
        "--repo",
        REPO,
        "--file",
        "runs/labels_detect/weights/best.pt",
    )
    hub.fail(r"/tag/", times=None)
    r = cas("publish", *args, cwd=pkg)
    assert r.returncode == 2 and "cannot tag" in r.stderr
    assert not (pkg / "cas.lock").exists()
    hub.clear_faults()
    rerun = cas("publish", *args, cwd=pkg)
    assert rerun.returncode == 0, rerun.stderr
    assert Lockfile.load(pkg / "cas.lock").models["cser-detector"].versions["v1.0"].commit


def _published(hub: HubServer, cas: Run, tmp_path: Path) -> Path:
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    r = cas(
        "publish",
        "cser-detector",
        "--version",
        "v1.0",
        "--repo",
        REPO,
        "--file",
        "runs/labels_detect/weights/best.pt",
        "--requires",
        ">=0.1,<1",
        cwd=pkg,
    )
    assert r.returncode == 0, r.stderr
    return pkg


@pytest.mark.parametrize("fault", ["corrupt", "truncate", "500"])
def test_bad_downloads_leave_nothing(hub: HubServer, cas: Run, tmp_path: Path, fault: str) -> None:
    _published(hub, cas, tmp_path)
    if fault == "corrupt":
        hub.corrupt(r"best\.pt")
    elif fault == "truncate":
        hub.truncate(r"best\.pt", keep=1000, times=None)
    else:
        hub.fail(r"/resolve/.*best\.pt", times=None)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    store = tmp_path / "consumer-store"
    r = cas(
        "pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer, store=store
    )
    assert r.returncode != 0
    assert "best.pt" in r.stderr and REPO in r.stderr, r.stderr
    if fault == "corrupt":
        assert r.returncode == 1 and "expected sha256" in r.stderr
    s = Store(store)
    assert s.objects() == []
    assert not (consumer / "cas.lock").exists()
    kept = list(s.tmp_dir.iterdir())
    if fault != "truncate":
        assert kept == []
        return
    # What arrived before the cuts is kept for the next run, which resumes from there.
    assert [p.name.startswith("resume-") for p in kept] == [True]
    size = kept[0].stat().st_size
    assert size >= 1000
    hub.clear_faults()
    again = cas(
        "pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer, store=store
    )
    assert again.returncode == 0, again.stderr
    gets = [e for e in hub.log if e.method == "GET" and e.path.endswith("best.pt")]
    assert gets[-1].range == f"bytes={size}-"
    assert list(s.tmp_dir.iterdir()) == [] and len(s.objects()) == 1


def test_tag_moved_between_resolve_and_download(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _published(hub, cas, tmp_path)
    v1 = Lockfile.load(pkg / "cas.lock").models["cser-detector"].versions["v1.0"]
    _weights(pkg, seed=7)
    assert cas("publish", "cser-detector", "--version", "v1.1", cwd=pkg).returncode == 0
    v11 = Lockfile.load(pkg / "cas.lock").models["cser-detector"].versions["v1.1"]
    assert v11.commit is not None
    hub.move_tag_after_resolve(REPO, "weights-v1.0", v11.commit)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = cas(
        "pull",
        f"hf://{REPO}@weights-v1.0",
        "--name",
        "cser-detector",
        cwd=consumer,
        store=tmp_path / "cs",
    )
    assert r.returncode == 0, r.stderr
    pinned = Lockfile.load(consumer / "cas.lock").models["cser-detector"].versions["v1.0"]
    # The download is by the commit the tag resolved to first: bytes and pin agree.
    assert pinned.commit == v1.commit and pinned.files == v1.files
    # Now the tag really points elsewhere, and `cas lock check` says so.
    check = cas("lock", "check", cwd=consumer)
    assert check.returncode == 1 and "now resolves to commit" in check.stdout


def test_registry_fetches_on_first_use_and_works_offline(
    hub: HubServer, cas: Run, tmp_path: Path, hf_env: dict[str, str]
) -> None:
    pkg = _published(hub, cas, tmp_path)
    registry_text = (pkg / "cas.lock").read_text()
    for installed, ok in (("0.2.0", True), ("1.5.0", False)):
        site = tmp_path / f"site-{installed}"
        fake_package(site, installed, registry_text)
        user_store = tmp_path / f"user-store-{installed}"
        code = """
            from modelcas import Registry, WeightsCompatibilityError
            reg = Registry.from_package("structflo.cser", "weights.lock")
            try:
                print("PATH", reg.path("cser-detector"))
            except WeightsCompatibilityError as e:
                print("INCOMPATIBLE", e)
        """
        r = run_in_site(site, user_store, code, env=hf_env)
        assert r.returncode == 0, r.stderr
        if ok:
            assert r.stdout.startswith("PATH"), r.stdout
            offline = run_in_site(site, user_store, code, env={**hf_env, "HF_HUB_OFFLINE": "1"})
            assert offline.stdout == r.stdout, offline.stderr
        else:
            assert (
                "INCOMPATIBLE Weights 'cser-detector/v1.0' require structflo-cser>=0.1,<1 "
                "(you have 1.5.0)" in r.stdout
            )
        assert TOKEN not in r.stdout + r.stderr


def test_update_finds_newest_compatible_tag(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _published(hub, cas, tmp_path)
    _weights(pkg, seed=7)
    assert cas("publish", "cser-detector", "--version", "v1.1", cwd=pkg).returncode == 0
    _weights(pkg, seed=8)
    assert (
        cas(
            "publish", "cser-detector", "--version", "v2.0", "--requires", ">=1.0,<2", cwd=pkg
        ).returncode
        == 0
    )
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    assert (
        cas("pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer).returncode
        == 0
    )
    # Fail closed: the versions have `requires`, and structflo-cser is not installed here.
    blind = cas("update", "cser-detector", cwd=consumer)
    assert blind.returncode == 2 and "not installed" in blind.stderr, blind.stderr
    assert "--no-check-requires" in blind.stderr
    site = tmp_path / "site"
    fake_package(site, "0.2.0", "lock-version: 1\nmodels: {}\n")
    env = {"PYTHONPATH": str(site)}
    up = cas("update", "cser-detector", cwd=consumer, env=env)
    assert up.returncode == 0, up.stderr
    assert "skip cser-detector@v2.0: requires structflo-cser>=1.0,<2" in up.stdout
    lock = Lockfile.load(consumer / "cas.lock")
    assert lock.models["cser-detector"].latest == "v1.1"
    assert (
        "up to date" in cas("update", "cser-detector", "--to", "<2", cwd=consumer, env=env).stdout
    )


def test_token_never_shown_even_in_errors(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    hub.fail(r"/api/repos/create", times=None, status=403)
    r = cas(
        "publish",
        "cser-detector",
        "--version",
        "v1.0",
        "--repo",
        REPO,
        "--file",
        "runs/labels_detect/weights/best.pt",
        cwd=pkg,
    )
    assert r.returncode == 2 and "cannot create" in r.stderr
    # The `cas` fixture asserts that TOKEN appears in no output at all.


# -- workflows that failed open (regressions) --------------------------------------------------


def _hub_files(hub: HubServer, tag: str) -> dict[str, Any]:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub.url, token=TOKEN)
    return {
        e.path: e
        for e in api.list_repo_tree(REPO, revision=tag, recursive=True)
        if hasattr(e, "blob_id")
    }


def test_a_tag_holds_exactly_its_versions_files(
    hub: HubServer, cas: Run, tmp_path: Path, hf_env: dict[str, str]
) -> None:
    """Reproduction: `--file exp/last.pt` uploaded last.pt and left v1.1's best.pt in v1.2."""
    pkg = _published(hub, cas, tmp_path)
    last = pkg / "exp" / "last.pt"
    last.parent.mkdir()
    last.write_bytes(os.urandom(1 << 20))
    r = cas("publish", "cser-detector", "--version", "v1.2", "--file", "exp/last.pt", cwd=pkg)
    assert r.returncode == 0, r.stderr
    assert set(_hub_files(hub, "weights-v1.2")) == {"best.pt", "modelcas.json", ".gitattributes"}
    from huggingface_hub import hf_hub_download

    got = hf_hub_download(
        REPO, "best.pt", revision="weights-v1.2", endpoint=hub.url, token=TOKEN,
        cache_dir=tmp_path / "hf-cache",
    )  # fmt: skip
    assert Path(got).read_bytes() == last.read_bytes(), "a plain download gets v1.2's bytes"
    pinned = Lockfile.load(pkg / "cas.lock").models["cser-detector"]
    assert list(pinned.versions["v1.2"].files) == ["best.pt"]
    # --file was for that publish only: the next version plans the model's default file again.
    dry = cas("publish", "cser-detector", "--version", "v1.3", "--dry-run", cwd=pkg)
    assert dry.returncode == 0, dry.stderr
    assert "runs/labels_detect/weights/best.pt -> best.pt" in dry.stdout
    assert "exp/last.pt" not in dry.stdout
    # --as renames, and the old name leaves the tagged tree in the same commit.
    r = cas("publish", "cser-detector", "--version", "v1.3", "--as", "model.pt", cwd=pkg)
    assert r.returncode == 0, r.stderr
    assert set(_hub_files(hub, "weights-v1.3")) == {"model.pt", "modelcas.json", ".gitattributes"}
    assert "best.pt" in _hub_files(hub, "weights-v1.2"), "an earlier tag keeps its tree"


def test_set_default_changes_the_default_file_and_says_so(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    pkg = _published(hub, cas, tmp_path)
    other = pkg / "exp" / "best.pt"
    other.parent.mkdir()
    other.write_bytes(os.urandom(4096))
    r = cas(
        "publish", "cser-detector", "--version", "v1.1", "--file", "exp/best.pt",
        "--set-default", cwd=pkg,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "default weights file of cser-detector is now exp/best.pt" in r.stdout
    assert Lockfile.load(pkg / "cas.lock").models["cser-detector"].weights_path == "exp/best.pt"


def test_publish_reads_back_what_the_hub_recorded(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    """Reproduction: a server that damaged an accepted upload got a pinned, unpullable version."""
    pkg = _published(hub, cas, tmp_path)
    before = (pkg / "cas.lock").read_bytes()
    _weights(pkg, seed=9)
    hub.misrecord(r"best\.pt")
    r = cas("publish", "cser-detector", "--version", "v1.1", cwd=pkg)
    assert r.returncode == 1, r.stderr
    assert "best.pt is 3145729 bytes, not 3145728" in r.stderr
    assert "no tag was created and nothing was pinned" in r.stderr
    assert "weights-v1.1" not in set(_tags(hub))
    assert (pkg / "cas.lock").read_bytes() == before


def _tags(hub: HubServer) -> list[str]:
    from huggingface_hub import HfApi

    return [t.name for t in HfApi(endpoint=hub.url, token=TOKEN).list_repo_refs(REPO).tags]


def test_the_compatibility_check_runs_on_lockfiles_cas_wrote(
    hub: HubServer, cas: Run, tmp_path: Path, hf_env: dict[str, str]
) -> None:
    """Reproduction: `requires` was checked only with a hand-written `package:` key."""
    pkg = _published(hub, cas, tmp_path)
    _weights(pkg, seed=8)
    v2 = cas(
        "publish", "cser-detector", "--version", "v2.0", "--requires", ">=1.0.0,<2.0.0", cwd=pkg
    )
    assert v2.returncode == 0, v2.stderr
    text = (pkg / "cas.lock").read_text()
    assert "package: structflo-cser" in text, "publish records the package from pyproject.toml"
    for with_package_key in (True, False):
        site = tmp_path / f"site-{with_package_key}"
        registry = text if with_package_key else text.replace("package: structflo-cser\n", "")
        fake_package(site, "0.2.0", registry)
        code = """
            from modelcas import Registry, WeightsCompatibilityError
            reg = Registry.from_package("structflo.cser", "weights.lock")
            try:
                reg.path("cser-detector", "v2.0")
            except WeightsCompatibilityError as e:
                print(e)
        """
        r = run_in_site(site, tmp_path / "user-store", code, env=hf_env)
        assert r.returncode == 0, r.stderr
        assert (
            "Weights 'cser-detector/v2.0' require structflo-cser>=1.0.0,<2.0.0 (you have 0.2.0).\n"
            "Upgrade with:  uv add 'structflo-cser>=1.0.0,<2.0.0'" in r.stdout
        ), r.stdout


def test_an_unknown_package_fails_closed(tmp_path: Path, hf_env: dict[str, str]) -> None:
    site = tmp_path / "site"
    lock = (
        "lock-version: 1\nmodels:\n  m:\n    latest: v1\n    versions:\n      v1:\n"
        "        requires: '>=1'\n        files:\n          w.pt: {size: 1, sha256: "
        + "a" * 64
        + "}\n"
    )
    fake_package(site, "0.2.0", lock)
    (next(site.glob("*.dist-info")) / "RECORD").write_text("")  # an editable install
    code = """
        from modelcas import Registry
        from modelcas.errors import CompatibilityCheckError
        reg = Registry.from_package("structflo.cser", "weights.lock")
        try:
            reg.path("m")
        except CompatibilityCheckError as e:
            print("REFUSED", e.message)
        print(Registry.from_package("structflo.cser", check_requires=False).pin("m").version)
    """
    r = run_in_site(site, tmp_path / "store", code, env=hf_env)
    assert r.returncode == 0, r.stderr
    assert "REFUSED m@v1 requires '>=1', but whose version to check is unknown" in r.stdout
    assert r.stdout.strip().endswith("v1")


def test_prereleases_do_not_become_latest_or_updates(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    pkg = _published(hub, cas, tmp_path)
    _weights(pkg, seed=11)
    assert cas("publish", "cser-detector", "--version", "v2.0rc1", cwd=pkg).returncode == 0
    assert Lockfile.load(pkg / "cas.lock").models["cser-detector"].latest == "v1.0"
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    pulled = cas("pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer)
    assert pulled.returncode == 0, pulled.stderr
    site = tmp_path / "site"
    fake_package(site, "0.2.0", "lock-version: 1\nmodels: {}\n")
    env = {"PYTHONPATH": str(site)}
    up = cas("update", "cser-detector", cwd=consumer, env=env)
    assert up.returncode == 0 and "up to date at v1.0" in up.stdout, up.stdout + up.stderr
    assert "skip cser-detector@v2.0rc1: a pre-release" in up.stdout
    pre = cas("update", "cser-detector", "--pre", cwd=consumer, env=env)
    assert pre.returncode == 0, pre.stderr
    assert Lockfile.load(consumer / "cas.lock").models["cser-detector"].versions["v2.0rc1"]


def test_a_git_lfs_pointer_is_not_published(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    pointer = pkg / "best.pt"
    pointer.write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 102760448\n"
    )
    r = cas("publish", "det", "--version", "v1.0", "--repo", REPO, "--file", "best.pt", cwd=pkg)
    assert r.returncode == 2 and "git-lfs pointer" in r.stderr and "git lfs pull" in r.stderr
    assert not any(req.method == "POST" for req in hub.log)


def test_publish_without_a_token_says_so(hub: HubServer, cas: Run, tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    r = cas(
        "publish", "det", "--version", "v1.0", "--repo", REPO, "--file",
        "runs/labels_detect/weights/best.pt", cwd=pkg, env={"HF_TOKEN": ""},
    )  # fmt: skip
    assert r.returncode == 2
    assert "HF_TOKEN" in r.stderr and "resumes" not in r.stderr, r.stderr


def test_verified_load_from_a_hub_reference(
    hub: HubServer, cas: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One loader for every source: an hf:// reference is fetched, verified, then loaded."""
    import torch
    from safetensors.torch import save_file

    import modelcas.torch as cas_torch

    pkg = _package(tmp_path)
    state = {"w": torch.arange(6, dtype=torch.float32)}
    save_file(state, str(pkg / "best.safetensors"))
    r = cas(
        "publish", "m", "--version", "v1", "--repo", REPO, "--file", "best.safetensors", cwd=pkg
    )
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "loader-hf-home"))
    store = Store(tmp_path / "loader-store")
    loaded = cas_torch.load_state_dict(f"hf://{REPO}@weights-v1", store=store)
    assert torch.equal(loaded["w"], state["w"])


def test_publish_keeps_files_cas_did_not_write(
    hub: HubServer, cas: Run, tmp_path: Path, hf_env: dict[str, str], monkeypatch: Any
) -> None:
    """A README and a config.json uploaded by someone else stay on main and in every tag;
    a file an earlier publish wrote goes when the next version does not pin it."""
    from huggingface_hub import HfApi, constants

    for k, v in hf_env.items():
        monkeypatch.setenv(k, v)
    # The Hub client reads HF_HUB_DISABLE_XET once, when it is first imported.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    api = HfApi(endpoint=hub.url, token=TOKEN)
    api.create_repo(REPO)
    api.upload_file(path_or_fileobj=b"# the detector\n", path_in_repo="README.md", repo_id=REPO)
    api.upload_file(path_or_fileobj=b'{"arch": "yolo"}\n', path_in_repo="config.json", repo_id=REPO)
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    (pkg / "old.pt").write_bytes(b"only in the first version" * 100)
    first = cas(
        "publish", "cser-detector", "--version", "v1.0", "--repo", REPO,
        "--file", "runs/labels_detect/weights/best.pt", "--file", "old.pt", cwd=pkg,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "kept 2 file(s) cas did not write: README.md, config.json" in first.stdout
    _weights(pkg, seed=5)
    args = ("cser-detector", "--version", "v2.0", "--file", "runs/labels_detect/weights/best.pt")
    dry = cas("publish", *args, "--dry-run", cwd=pkg)
    assert dry.returncode == 0, dry.stderr
    assert "delete   old.pt (written by an earlier publish, not part of v2.0)" in dry.stdout
    assert "keep     README.md (not written by cas; --prune would remove it)" in dry.stdout
    assert "keep     config.json (not written by cas" in dry.stdout
    second = cas("publish", *args, cwd=pkg)
    assert second.returncode == 0, second.stderr
    assert "1 removed from the tree" in second.stdout

    def files(rev: str) -> set[str]:
        return {f.path for f in api.list_repo_tree(REPO, revision=rev, recursive=True)}

    ours = {".gitattributes", "modelcas.json", "README.md", "config.json", "best.pt"}
    assert files("main") == ours
    assert files("weights-v2.0") == ours  # and not old.pt, pinned only by v1.0
    assert files("weights-v1.0") == ours | {"old.pt"}
    # The consumer pulls the version's files, not the others' README or config.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = cas("pull", f"hf://{REPO}@weights-v2.0", "--json", cwd=consumer)
    assert r.returncode == 0, r.stderr
    import json

    assert [f["name"] for f in json.loads(r.stdout)["files"]] == ["best.pt"]

    # --prune removes the others too, after saying which.
    _weights(pkg, seed=6)
    args = ("cser-detector", "--version", "v3.0", "--file", "runs/labels_detect/weights/best.pt")
    dry = cas("publish", *args, "--prune", "--dry-run", cwd=pkg)
    assert "prune    README.md (not written by cas; removed because of --prune)" in dry.stdout
    dry = cas("publish", *args, "--prune", "--dry-run", "--json", cwd=pkg)
    assert json.loads(dry.stdout)["prune"] == ["README.md", "config.json"]
    pruned = cas("publish", *args, "--prune", cwd=pkg)
    assert pruned.returncode == 0, pruned.stderr
    # The real run says which too, not only "2 removed from the tree".
    assert "removed 2 file(s) cas did not write (--prune): README.md, config.json" in (
        pruned.stdout
    )
    assert files("weights-v3.0") == {".gitattributes", "modelcas.json", "best.pt"}


def test_a_missing_repo_or_tag_says_which_and_what_exists(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    _published(hub, cas, tmp_path)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = cas("pull", f"hf://{REPO}@weights-v9.9", cwd=consumer)
    assert r.returncode == 1
    assert f"hf://{REPO} exists but has no tag or branch 'weights-v9.9'" in r.stderr
    assert "(weights-* tags: weights-v1.0)" in r.stderr
    assert "404" not in r.stderr
    r = cas("pull", "hf://sidxz/no-such-repo@weights-v1.0", cwd=consumer)
    assert r.returncode == 1 and "hf://sidxz/no-such-repo does not exist" in r.stderr


def test_a_hub_answering_500_gives_one_error_and_no_client_logs(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    import json

    _published(hub, cas, tmp_path)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    hub.fail(r"/api/models/", times=None, status=500)
    r = cas("pull", f"hf://{REPO}@weights-v1.0", "--json", cwd=consumer)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) <= 2 and lines[0].startswith("cas: error: cannot resolve"), r.stderr
    assert "Retry" not in r.stderr and "retry" not in r.stderr.lower()
    assert json.loads(r.stdout)["schema"] == "cas.error/1"
    loud = cas("-v", "pull", f"hf://{REPO}@weights-v1.0", cwd=consumer)
    assert loud.returncode == 2


def test_a_weights_tag_that_is_no_version_is_not_a_candidate(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    """Someone tags `weights-latest` (or `weights-best`): update lists the versions it can
    compare and leaves that tag out (it stopped with "'latest' is not a version")."""
    from huggingface_hub import HfApi

    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    args = ("--repo", REPO, "--file", "runs/labels_detect/weights/best.pt")
    assert cas("publish", "cser-detector", "--version", "v1.0", *args, cwd=pkg).returncode == 0
    HfApi(endpoint=hub.url, token=TOKEN).create_tag(REPO, tag="weights-latest")
    r = cas("update", "--dry-run", cwd=pkg)
    assert r.returncode == 0, r.stderr
    assert "up to date" in r.stdout, r.stdout


def test_a_hub_failing_on_modelcas_json_fails_the_pull(
    hub: HubServer, cas: Run, tmp_path: Path
) -> None:
    """modelcas.json says which files are the version's and what package range it requires.
    A 500 while reading it is a failure, not "a repo cas did not publish": the pull pinned
    the version without its `requires` (so nothing checked compatibility afterwards)."""
    pkg = _package(tmp_path)
    _weights(pkg, seed=3)
    args = ("--repo", REPO, "--file", "runs/labels_detect/weights/best.pt", "--requires", ">=0.1")
    assert cas("publish", "cser-detector", "--version", "v1.0", *args, cwd=pkg).returncode == 0
    hub.fail(r"modelcas\.json", status=500, times=None)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = cas("pull", f"hf://{REPO}@weights-v1.0", cwd=consumer, store=tmp_path / "s2")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "modelcas.json" in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
    assert not (consumer / "cas.lock").exists()
