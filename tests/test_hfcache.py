"""One cache with the Hugging Face client: `cas` takes bytes the HF cache already holds (also
offline), leaves what it downloads where `hf_hub_download` finds it, and resumes cut transfers.

The real `cas` CLI and the real huggingface_hub client run in subprocesses configured by
environment variables only, against the local Hub-compatible server (tests/hubserver.py)."""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from modelcas.lockfile import Lockfile
from modelcas.store import Store
from tests.conftest import HUB_TOKEN
from tests.hubserver import HubServer
from tests.refs import ref_sha256
from tests.users import AS_NOBODY

TOKEN = HUB_TOKEN
REPO = "sidxz/structflo-cser-detector"
FOLDER = "models--sidxz--structflo-cser-detector"
MiB = 1 << 20
CLASSES = b'{"0": "panel", "1": "structure"}\n'
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def env(hf_env: dict[str, str]) -> dict[str, str]:
    return {**hf_env, "PYTHONDONTWRITEBYTECODE": "1"}


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path) -> Iterator[Run]:
    """Run `cas ARGS` (or `python -c CODE` with code=) in a subprocess."""
    outputs: list[str] = []

    def go(
        *args: str | Path,
        cwd: Path,
        store: Path | None = None,
        code: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-c", textwrap.dedent(code)] if code else [
            sys.executable, "-m", "modelcas", *map(str, args),
        ]  # fmt: skip
        r = subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={
                **os.environ,
                **env,
                "MODELCAS_HOME": str(store or tmp_path / "store"),
                **(extra or {}),
            },
        )
        outputs.append(r.stdout + r.stderr)
        return r

    yield go
    for out in outputs:
        assert TOKEN not in out, "the token leaked into output"


def _published(run: Run, tmp_path: Path, size: int = 3 * MiB) -> tuple[Path, bytes]:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text('[project]\nname = "structflo-cser"\n')
    best = bytes((i * 7 + i // 13) % 256 for i in range(size))
    (pkg / "best.pt").write_bytes(best)
    (pkg / "classes.json").write_bytes(CLASSES)
    r = run(
        "publish", "cser-detector", "--version", "v1.0", "--repo", REPO, "--file", "best.pt",
        "--file", "classes.json", "--requires", ">=0.1,<1", cwd=pkg, store=tmp_path / "pub-store",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return pkg, best


def _hf_download(run: Run, tmp_path: Path) -> None:
    """Fill the HF cache the way a user does, with the HF client itself."""
    r = run(
        cwd=tmp_path,
        code=f"""
            from huggingface_hub import snapshot_download
            print(snapshot_download({REPO!r}, revision="weights-v1.0"))
        """,
    )
    assert r.returncode == 0, r.stderr


def _content_gets(hub: HubServer, since: int) -> list[str]:
    return [r.path for r in hub.log[since:] if r.method == "GET" and "/resolve/" in r.path]


def _hf_blob(tmp_path: Path, sha256: str) -> Path:
    return tmp_path / "hf-home" / "hub" / FOLDER / "blobs" / sha256


def test_pull_takes_bytes_from_the_hf_cache(hub: HubServer, run: Run, tmp_path: Path) -> None:
    _, best = _published(run, tmp_path)
    _hf_download(run, tmp_path)
    blob = _hf_blob(tmp_path, ref_sha256(best))
    assert blob.is_file()
    mark = len(hub.log)

    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = run("pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer)
    assert r.returncode == 0, r.stderr
    assert _content_gets(hub, mark) == [], "no file content was downloaded"
    assert "from the HF cache" in r.stdout
    store = Store(tmp_path / "store")
    obj = store.path(ref_sha256(best))
    assert obj.read_bytes() == best
    # Ingested, not hard-linked: the HF blob stays the user's, writable, and separate.
    assert obj.stat().st_ino != blob.stat().st_ino
    assert stat.S_IMODE(obj.stat().st_mode) == 0o444
    assert blob.stat().st_mode & stat.S_IWUSR
    entry = Lockfile.load(consumer / "cas.lock").models["cser-detector"].versions["v1.0"]
    assert entry.files["best.pt"].sha256 == ref_sha256(best)
    assert entry.files["classes.json"].sha256 == ref_sha256(CLASSES)


def test_offline_pull_sync_and_path_use_the_hf_cache(
    hub: HubServer, run: Run, tmp_path: Path
) -> None:
    pkg, best = _published(run, tmp_path)
    _hf_download(run, tmp_path)
    mark = len(hub.log)
    offline = {"HF_HUB_OFFLINE": "1"}

    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = run(
        "pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer,
        store=tmp_path / "s1", extra=offline,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    pinned = Lockfile.load(consumer / "cas.lock").models["cser-detector"].versions["v1.0"]
    published = Lockfile.load(pkg / "cas.lock").models["cser-detector"].versions["v1.0"]
    assert pinned.files == published.files and pinned.commit == published.commit
    assert pinned.requires == ">=0.1,<1"

    s = run("sync", cwd=pkg, store=tmp_path / "s2", extra=offline)
    assert s.returncode == 0, s.stderr
    assert Store(tmp_path / "s2").path(ref_sha256(best)).read_bytes() == best

    p = run(
        cwd=pkg,
        store=tmp_path / "s3",
        extra=offline,
        code="""
            from modelcas import open_lock
            # structflo-cser is not installed here: opt out of its `requires`, explicitly.
            print(open_lock(check_requires=False).path("cser-detector", "v1.0", "best.pt"))
        """,
    )
    assert p.returncode == 0, p.stderr
    assert Path(p.stdout.strip()).read_bytes() == best
    assert hub.log[mark:] == [], "offline: not one request reached the server"


def test_corrupt_hf_blob_is_named_and_not_used(hub: HubServer, run: Run, tmp_path: Path) -> None:
    pkg, best = _published(run, tmp_path)
    _hf_download(run, tmp_path)
    blob = _hf_blob(tmp_path, ref_sha256(best))
    damaged = bytearray(blob.read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    blob.write_bytes(bytes(damaged))

    offline = run("sync", cwd=pkg, store=tmp_path / "s1", extra={"HF_HUB_OFFLINE": "1"})
    assert offline.returncode != 0
    assert str(blob) in offline.stderr and "cas: warning:" in offline.stderr
    assert "Traceback" not in offline.stderr
    assert Store(tmp_path / "s1").objects() == []

    mark = len(hub.log)
    online = run("sync", cwd=pkg, store=tmp_path / "s2")
    assert online.returncode == 0, online.stderr
    assert str(blob) in online.stderr
    assert any("best.pt" in p for p in _content_gets(hub, mark)), "downloaded instead"
    assert Store(tmp_path / "s2").path(ref_sha256(best)).read_bytes() == best
    assert blob.read_bytes() == bytes(damaged), "the user's cache is not rewritten behind them"


def _reflinks(where: Path) -> bool:
    a, b = where / "reflink-probe-a", where / "reflink-probe-b"
    a.write_bytes(b"probe")
    try:
        with open(a, "rb") as s, open(b, "xb") as d:
            fcntl.ioctl(d.fileno(), 0x40049409, s.fileno())  # FICLONE
    except OSError:
        return False
    finally:
        a.unlink()
        b.unlink(missing_ok=True)
    return True


def _hf_finds_the_pull(run: Run, tmp_path: Path, commit: str) -> list[Path]:
    h = run(
        cwd=tmp_path,
        extra={"HF_HUB_OFFLINE": "1"},
        code=f"""
            from huggingface_hub import hf_hub_download
            for rev in ("weights-v1.0", {commit!r}):
                for name in ("best.pt", "classes.json"):
                    print(hf_hub_download({REPO!r}, name, revision=rev, local_files_only=True))
        """,
    )
    assert h.returncode == 0, h.stderr
    return [Path(line) for line in h.stdout.split()]


def test_pull_leaves_files_where_hf_hub_download_finds_them(
    hub: HubServer, run: Run, tmp_path: Path
) -> None:
    """As root (CI) the HF blob never shares the store object's inode: a write there must not
    change a pin. Giving by copy is asked for here (MODELCAS_HF_CACHE=copy); where the
    filesystem reflinks it costs nothing and needs no setting."""
    _, best = _published(run, tmp_path)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    copy = {"MODELCAS_HF_CACHE": "copy"}
    r = run(
        "pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer, extra=copy
    )
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr
    commit = Lockfile.load(consumer / "cas.lock").models["cser-detector"].versions["v1.0"].commit
    assert commit is not None
    mark = len(hub.log)
    paths = _hf_finds_the_pull(run, tmp_path, commit)
    assert [p.read_bytes() for p in paths] == [best, CLASSES, best, CLASSES]
    assert hub.log[mark:] == []
    obj = Store(tmp_path / "store").path(ref_sha256(best))
    blob = _hf_blob(tmp_path, ref_sha256(best))
    assert stat.S_IMODE(blob.stat().st_mode) == 0o444
    assert (tmp_path / "hf-home" / "hub" / FOLDER / "refs" / "weights-v1.0").read_text() == commit
    if os.geteuid() != 0:
        assert blob.stat().st_ino == obj.stat().st_ino, "a normal user's own cache: hard link"
        return
    assert blob.stat().st_ino != obj.stat().st_ino, "root: never a shared inode"
    assert obj.stat().st_nlink == 1
    with open(blob, "r+b") as f:  # root writes through 0444
        f.write(b"rewritten in the HF cache")
    v = run("verify", "--lock", consumer / "cas.lock", "--deep", cwd=consumer)
    assert v.returncode == 0, v.stdout + v.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the rule for root; CI runs as root")
def test_as_root_giving_to_the_hf_cache_is_opt_in_where_it_would_copy(
    hub: HubServer, run: Run, tmp_path: Path
) -> None:
    pkg, best = _published(run, tmp_path)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    auto = {"MODELCAS_HF_CACHE": "auto"}  # the default (the test environment asks for copy)
    r = run(
        "pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer, extra=auto
    )
    assert r.returncode == 0, r.stderr
    blob = _hf_blob(tmp_path, ref_sha256(best))
    obj = Store(tmp_path / "store").path(ref_sha256(best))
    if _reflinks(tmp_path):
        assert blob.stat().st_ino != obj.stat().st_ino and "warning" not in r.stderr
        return
    # Two files pulled, one line said: the setting's name, once.
    warned = [line for line in r.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and "MODELCAS_HF_CACHE=copy" in warned[0], r.stderr
    assert not blob.exists()
    assert obj.stat().st_nlink == 1
    # Said once per store: the next pull into this store (of new bytes) says nothing.
    (pkg / "best.pt").write_bytes(best[::-1])
    r = run(
        "publish", "cser-detector", "--version", "v1.1", "--repo", REPO, "--file", "best.pt",
        cwd=pkg, store=tmp_path / "pub-store",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    again = tmp_path / "again"
    again.mkdir()
    r = run("pull", f"hf://{REPO}@weights-v1.1", "--name", "cser-detector", cwd=again, extra=auto)
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    off = run("pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer,
              extra={"MODELCAS_HF_CACHE": "off"})  # fmt: skip
    assert off.returncode == 0 and "warning" not in off.stderr, off.stderr


def test_as_a_normal_user_giving_to_the_hf_cache_hard_links(
    hub: HubServer, env: dict[str, str], run: Run, tmp_path: Path
) -> None:
    """The same pull as `nobody` (setpriv), in that user's own cache: a hard link of the 0444
    object is allowed there, and that user cannot write through it."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody (CI runs as root)")
    _, best = _published(run, tmp_path)
    base = Path(tempfile.mkdtemp(prefix="modelcas-hf-nobody-"))
    try:
        base.chmod(0o755)
        for d in ("store", "hf-home", "consumer"):
            (base / d).mkdir()
            os.chown(base / d, 65534, 65534)
        as_nobody = AS_NOBODY
        child_env = {
            **os.environ,
            **env,
            "MODELCAS_HOME": str(base / "store"),
            "HF_HOME": str(base / "hf-home"),
            "HOME": str(base),
        }
        child_env.pop("HF_HUB_CACHE", None)
        r = subprocess.run(
            [*as_nobody, sys.executable, "-m", "modelcas", "pull", f"hf://{REPO}@weights-v1.0",
             "--name", "cser-detector"],
            cwd=base / "consumer", env=child_env, capture_output=True, text=True, check=False,
            timeout=300,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "warning" not in r.stderr
        obj = Store(base / "store").object_path(ref_sha256(best))
        blob = base / "hf-home" / "hub" / FOLDER / "blobs" / ref_sha256(best)
        assert blob.stat().st_ino == obj.stat().st_ino, "hard-linked in the user's own cache"
        assert stat.S_IMODE(blob.stat().st_mode) == 0o444
        w = subprocess.run(
            [*as_nobody, "/bin/sh", "-c", 'printf x >> "$1"', "sh", str(blob)],
            capture_output=True, check=False,
        )  # fmt: skip
        assert w.returncode != 0 and b"Permission denied" in w.stderr
        v = subprocess.run(
            [*as_nobody, sys.executable, "-m", "modelcas", "verify", "--lock",
             str(base / "consumer" / "cas.lock"), "--deep"],
            cwd=base / "consumer", env=child_env, capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert v.returncode == 0, v.stdout + v.stderr
        # verify names the shared inode and where the other name is.
        assert f"LINKED  sha256:{ref_sha256(best)} has 2 names" in v.stdout, v.stdout
        assert f"Hugging Face cache's blob {blob}" in v.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("fault", ["truncate", "drop"])
def test_cut_transfer_resumes_with_range(
    hub: HubServer, run: Run, tmp_path: Path, fault: str
) -> None:
    _, best = _published(run, tmp_path, size=5 * MiB)
    cut = getattr(hub, fault)
    cut(r"best\.pt", keep=MiB, times=1)
    cut(r"best\.pt", keep=2 * MiB, times=1)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    mark = len(hub.log)
    r = run("pull", f"hf://{REPO}@weights-v1.0", "--name", "cser-detector", cwd=consumer)
    assert r.returncode == 0, r.stderr
    gets = [x for x in hub.log[mark:] if x.method == "GET" and x.path.endswith("/best.pt")]
    assert len(gets) == 3 and gets[0].range is None
    starts = [int((g.range or "").removeprefix("bytes=").removesuffix("-")) for g in gets[1:]]
    if fault == "truncate":
        # A clean close: the client got all that was sent, and asked only for the rest.
        assert starts == [MiB, 3 * MiB]
        assert sum(g.bytes_sent for g in gets) == len(best), "each byte was received once"
    else:
        # A reset loses what was in flight; the client resumes from what it really has.
        assert 0 < starts[0] < starts[1] < len(best)
    assert starts[-1] + gets[-1].bytes_sent == len(best)
    assert Store(tmp_path / "store").path(ref_sha256(best), deep=True).read_bytes() == best
