"""The same scenarios against every remote, through the real `cas` CLI and real servers.

- hub: tests/hubserver.py with the real huggingface_hub client;
- oci: Debian's `docker-registry` (tests/ociregistry.py);
- dir: a shared directory with the store's layout and its catalog;
- url: Debian's nginx (tests/nginxserver.py), read-only: files are served, not published.

Each scenario runs where the remote supports it: publish (or serve), pull into a fresh store,
sync, update and its dry run, corruption refused, a cut resumed, a trickle ended by the
low-speed limit (and resumed by the next run), the `--json` documents, and the audit with and
without `--read-data`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from modelcas.lockfile import Lockfile
from modelcas.store import Store
from tests.conftest import HUB_TOKEN
from tests.hubserver import HubServer
from tests.nginxserver import Cutter, Nginx, have_nginx
from tests.ociregistry import CuttingProxy, Registry, docker_config, have_registry
from tests.refs import ref_sha256

KINDS = ["hub", "oci", "dir", "url"]
MiB = 1 << 20
Run = Callable[..., subprocess.CompletedProcess[str]]


def _bytes(size: int, seed: int) -> bytes:
    return bytes((i * seed + i // 251) % 256 for i in range(size))


class Place:
    """One remote of one kind, its server, and how the scenarios use it."""

    def __init__(self, kind: str, root: Path, stack: ExitStack) -> None:
        self.kind = kind
        self.root = root
        self.stack = stack
        self.env: dict[str, str] = {"CAS_NO_PROGRESS": "1"}
        self.hub: HubServer | None = None
        self.registry: Registry | None = None
        self.nginx: Nginx | None = None
        self.served: dict[str, bytes] = {}
        if kind == "hub":
            self.hub = stack.enter_context(HubServer(root / "hub"))
            self.env |= {
                "HF_ENDPOINT": self.hub.url,
                "HF_HUB_DISABLE_XET": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1",
                "HF_TOKEN": HUB_TOKEN,
                "HF_HOME": str(root / "hf-home"),
            }
        elif kind == "oci":
            if not have_registry():
                pytest.fail("docker-registry is not installed (.ci/run installs it)")
            self.registry = stack.enter_context(Registry(root / "registry"))
        elif kind == "url":
            if not have_nginx():
                pytest.fail("nginx is not installed (.ci/run installs nginx-light)")
            self.nginx = stack.enter_context(Nginx(root / "nginx"))
        self.env["DOCKER_CONFIG"] = str(docker_config(root / "docker-config"))
        self.shared = root / "shared"

    # -- where a version lives ---------------------------------------------------------------

    def target(self) -> list[str]:
        """`cas publish` options that send a version here."""
        if self.kind == "hub":
            return ["--repo", "lab/det"]
        if self.kind == "oci":
            assert self.registry is not None
            return ["--to", self.registry.url("lab/det")]
        return ["--to", str(self.shared)]

    def ref(self, version: str, *, port: int | None = None) -> list[str]:
        """`cas pull` arguments for a version (through another port: a proxy in front)."""
        if self.kind == "hub":
            return [f"hf://lab/det@weights-{version}"]
        if self.kind == "oci":
            assert self.registry is not None
            host = f"127.0.0.1:{port}" if port else self.registry.host
            return [f"oci://{host}/lab/det:{version}"]
        if self.kind == "dir":
            return [str(self.shared), "--name", "det", "--version", version]
        assert self.nginx is not None
        base = f"http://127.0.0.1:{port}/files" if port else f"{self.nginx.base}/files"
        return [f"{base}/{version}/best.pt", "--name", "det", "--version", version]

    def add(self, cas: Run, project: Path, version: str, data: bytes, **kw: Any) -> Any:
        """Publish `data` as det@version (a URL: serve it, and pin it in the project)."""
        (project / "best.pt").write_bytes(data)
        if self.kind == "url":
            assert self.nginx is not None
            self.nginx.put(f"{version}/best.pt", data)
            self.served[version] = data
            return cas("pull", *self.ref(version), cwd=project, **kw)
        return cas(
            "publish", "det", "--version", version, "--file", "best.pt", *self.target(),
            cwd=project, **kw,
        )  # fmt: skip

    def stored(self, data: bytes) -> Path:
        """Where the server keeps these bytes."""
        sha = ref_sha256(data)
        if self.kind == "hub":
            assert self.hub is not None
            return self.hub.root / "objects" / sha[:2] / sha
        if self.kind == "oci":
            assert self.registry is not None
            return self.registry.blob_data(f"sha256:{sha}")
        if self.kind == "dir":
            return self.shared / "objects" / "sha256" / sha[:2] / sha
        assert self.nginx is not None
        version = next(v for v, d in self.served.items() if d == data)
        return self.nginx.www / version / "best.pt"

    def flip(self, data: bytes) -> None:
        """Flip one byte where the server keeps `data` (same size): a damaged disk."""
        path = self.stored(data)
        path.chmod(0o644)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        path.write_bytes(bytes(raw))
        if self.kind == "url":
            # A web server sees another file: its ETag changes with the mtime.
            os.utime(path, (time.time() + 5, time.time() + 5))

    def requests(self) -> list[str]:
        """What the server logged, one line each (method and path)."""
        if self.hub is not None:
            return [f"{e.method} {e.path} {e.range or ''}" for e in self.hub.log]
        if self.registry is not None:
            return [f"{r.method} {r.path}" for r in self.registry.requests()]
        if self.nginx is not None:
            return [f"{r.method} {r.uri} {r.range or ''}" for r in self.nginx.requests()]
        return []


def only(*kinds: str) -> pytest.MarkDecorator:
    """Run a scenario against the remotes that support it (the fixture's params, narrowed)."""
    return pytest.mark.parametrize("place", kinds, indirect=True)


@pytest.fixture(params=KINDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    with ExitStack() as stack:
        yield Place(request.param, tmp_path, stack)


@pytest.fixture
def cas(place: Place, tmp_path: Path) -> Iterator[Run]:
    outputs: list[str] = []

    def run(
        *args: str | Path,
        cwd: Path,
        store: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MODELCAS_"))}
        r = subprocess.run(
            [sys.executable, "-m", "modelcas", *map(str, args)],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={
                **base,
                **place.env,
                "MODELCAS_HOME": str(store or tmp_path / "store"),
                **(env or {}),
            },
        )
        outputs.append(r.stdout + r.stderr)
        return r

    yield run
    for out in outputs:
        assert HUB_TOKEN not in out and "Traceback" not in out


def _project(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text('[project]\nname = "structflo-cser"\nversion = "0.2.0"\n')
    return path


def _published(place: Place, cas: Run, tmp_path: Path, *versions: str) -> dict[str, bytes]:
    pkg = _project(tmp_path / "pkg")
    out = {}
    for i, v in enumerate(versions):
        data = _bytes(MiB + i * 4096, 7 + i)
        r = place.add(cas, pkg, v, data)
        assert r.returncode == 0, r.stderr
        out[v] = data
    return out


def test_publish_then_pull_into_a_fresh_store_then_sync(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    versions = _published(place, cas, tmp_path, "v1.0")
    consumer = _project(tmp_path / "consumer")
    fresh = tmp_path / "fresh"
    r = cas("pull", *place.ref("v1.0"), "--json", cwd=consumer, store=fresh)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cas.pull/1"
    assert [f["name"] for f in doc["files"]] == ["best.pt"]
    assert doc["files"][0]["sha256"] == ref_sha256(versions["v1.0"])
    assert doc["pinned"]["model"] == "det" and doc["pinned"]["version"] == "v1.0"
    entry = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.0"]
    assert entry.source == doc["source"]
    assert Store(fresh).path(ref_sha256(versions["v1.0"])).read_bytes() == versions["v1.0"]
    if place.kind == "url":
        assert entry.validator and entry.validator.startswith('"')  # nginx's strong ETag

    # Another machine with only the lockfile: sync fetches from the recorded source.
    other = tmp_path / "other-store"
    r = cas("sync", "--json", cwd=consumer, store=other)
    assert r.returncode == 0, r.stderr
    assert [p["file"] for p in json.loads(r.stdout)["fetched"]] == ["best.pt"]
    assert Store(other).path(ref_sha256(versions["v1.0"])).read_bytes() == versions["v1.0"]


def test_update_lists_then_pins_the_newest(place: Place, cas: Run, tmp_path: Path) -> None:
    versions = _published(place, cas, tmp_path, "v1.0")
    consumer = _project(tmp_path / "consumer")
    assert cas("pull", *place.ref("v1.0"), cwd=consumer).returncode == 0
    pkg = tmp_path / "pkg"
    for v, seed in (("1.1.0", 21), ("v2.0rc1", 22)):  # 1.1.0: spelled without the v
        data = _bytes(MiB, seed)
        assert place.add(cas, pkg, v, data).returncode == 0
        versions[v] = data
    before = (consumer / "cas.lock").read_text()
    if place.kind == "url":
        r = cas("update", "det", cwd=consumer)
        assert r.returncode == 2 and "no remote that lists versions" in r.stderr
        r = cas("update", "--dry-run", "--json", cwd=consumer)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["models"][0]["status"] == "not-listed"
        return
    r = cas("update", "--dry-run", "--json", cwd=consumer)
    assert r.returncode == 0, r.stderr
    same = cas("outdated", "--json", cwd=consumer)  # pip list --outdated's spelling
    assert same.returncode == 0 and json.loads(same.stdout)["schema"] == "cas.outdated/1"
    assert json.loads(same.stdout)["models"] == json.loads(r.stdout)["models"]
    (model,) = json.loads(r.stdout)["models"]
    assert model["status"] == "outdated" and model["version"] == "1.1.0"
    assert {c["version"]: c["status"] for c in model["newer"]} == {
        "1.1.0": "compatible",
        "v2.0rc1": "pre-release",
    }
    assert (consumer / "cas.lock").read_text() == before, "a dry run changes nothing"

    r = cas("update", "det", cwd=consumer)
    assert r.returncode == 0, r.stderr
    assert "updated det to 1.1.0" in r.stdout
    assert Lockfile.load(consumer / "cas.lock").models["det"].latest == "1.1.0"
    again = cas("update", "det", cwd=consumer)
    assert again.returncode == 0 and "up to date at 1.1.0" in again.stdout

    # --pre as it says: the pre-release is pulled and becomes latest.
    r = cas("update", "det", "--pre", cwd=consumer)
    assert r.returncode == 0, r.stderr
    model_after = Lockfile.load(consumer / "cas.lock").models["det"]
    assert model_after.latest == "v2.0rc1"


def test_corrupt_bytes_at_the_remote_are_refused(place: Place, cas: Run, tmp_path: Path) -> None:
    versions = _published(place, cas, tmp_path, "v1.0")
    consumer = _project(tmp_path / "consumer")
    assert cas("pull", *place.ref("v1.0"), cwd=consumer).returncode == 0
    place.flip(versions["v1.0"])
    fresh = tmp_path / "fresh"
    r = cas("sync", cwd=consumer, store=fresh)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "expected sha256:" + ref_sha256(versions["v1.0"]) in r.stderr or "changed" in r.stderr
    assert Store(fresh).objects() == []
    assert len(r.stderr.strip().splitlines()) <= 2


def test_sync_repairs_a_corrupt_stored_copy_from_the_remote(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    """`cas verify` names a stored object whose bytes rotted; `cas sync` sets it aside and
    fetches the pinned bytes again from the version's source."""
    versions = _published(place, cas, tmp_path, "v1.0")
    consumer = _project(tmp_path / "consumer")
    store = tmp_path / "consumer-store"
    assert cas("pull", *place.ref("v1.0"), cwd=consumer, store=store).returncode == 0
    obj = Store(store).object_path(ref_sha256(versions["v1.0"]))
    obj.chmod(0o644)
    with open(obj, "r+b") as f:
        f.seek(100)
        flipped = f.read(1)[0] ^ 0xFF
        f.seek(100)
        f.write(bytes([flipped]))
    obj.chmod(0o444)
    named = cas("verify", "--lock", cwd=consumer, store=store)
    assert named.returncode == 1 and "CORRUPT" in named.stdout, named.stdout + named.stderr
    r = cas("sync", cwd=consumer, store=store)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "repaired" in r.stdout and "quarantine" in r.stdout, r.stdout
    assert obj.read_bytes() == versions["v1.0"]
    assert len(list((store / "quarantine").iterdir())) == 1, "the bad copy is kept aside"
    assert cas("verify", "--lock", cwd=consumer, store=store).returncode == 0


def test_audit_with_and_without_read_data(place: Place, cas: Run, tmp_path: Path) -> None:
    versions = _published(place, cas, tmp_path, "v1.0")
    pkg = tmp_path / "pkg"
    r = cas("verify", "--remote", "det@v1.0", "--json", cwd=pkg)
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cas.verify/1" and doc["mode"] == "remote" and doc["ok"]
    r = cas("verify", "--remote", "det@v1.0", "--read-data", "--json", cwd=pkg)
    assert r.returncode == 0, r.stdout + r.stderr
    (audit,) = json.loads(r.stdout)["audits"]
    assert audit["bytes_read"] == len(versions["v1.0"])

    place.flip(versions["v1.0"])
    listing = cas("verify", "--remote", "det@v1.0", cwd=pkg)
    deep = cas("verify", "--remote", "det@v1.0", "--read-data", cwd=pkg)
    assert deep.returncode == 1, deep.stdout + deep.stderr
    assert "best.pt" in deep.stdout and "FAILED" in deep.stdout
    if place.kind == "url":
        assert listing.returncode == 1  # the server's validator changed with the bytes
    else:
        assert listing.returncode == 0, "the metadata alone cannot see a flipped byte"


@only("hub", "oci", "dir")  # a plain URL is read-only: nothing is published there
def test_read_back_refuses_to_tag_what_the_remote_damaged(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    pkg = _project(tmp_path / "pkg")
    data = _bytes(MiB, 5)
    assert place.add(cas, pkg, "v1.0", data).returncode == 0
    place.flip(data)  # the server's storage now holds other bytes of the same size
    (pkg / "best.pt").write_bytes(data)
    r = cas(
        "publish", "det", "--version", "v1.1", "--file", "best.pt", *place.target(),
        "--read-back", cwd=pkg,
    )  # fmt: skip
    assert r.returncode == 1, r.stdout + r.stderr
    assert "read-back of det@v1.1" in r.stderr and "no tag was created" in r.stderr
    assert "v1.1" not in Lockfile.load(pkg / "cas.lock").models["det"].versions
    r = cas("update", "det", "--dry-run", "--json", cwd=pkg)
    assert "v1.1" not in [c["version"] for c in json.loads(r.stdout)["models"][0]["newer"]]


@only("hub", "oci", "url")  # a directory is read, not downloaded
def test_a_cut_download_resumes_with_range(place: Place, cas: Run, tmp_path: Path) -> None:
    data = _bytes(4 * MiB, 3)
    versions = _published(place, cas, tmp_path, "v1.0")
    del versions
    pkg = tmp_path / "pkg"
    (pkg / "best.pt").write_bytes(data)
    assert place.add(cas, pkg, "v2.0", data).returncode == 0
    consumer = _project(tmp_path / "consumer")
    fresh = tmp_path / "fresh"
    with ExitStack() as stack:
        port = None
        if place.kind == "hub":
            assert place.hub is not None
            place.hub.drop(r"best\.pt", keep=MiB, times=1)
        elif place.kind == "oci":
            assert place.registry is not None
            proxy = stack.enter_context(
                CuttingProxy(place.registry.port, f"sha256:{ref_sha256(data)}", keep=MiB)
            )
            port = proxy.port
        else:
            assert place.nginx is not None
            cutter = stack.enter_context(Cutter(place.nginx.port, "/v2.0/best.pt", keep=MiB))
            port = cutter.port
        r = cas("pull", *place.ref("v2.0", port=port), cwd=consumer, store=fresh)
        assert r.returncode == 0, r.stderr
    assert Store(fresh).path(ref_sha256(data)).read_bytes() == data
    log = place.requests()
    if place.kind == "oci":
        assert any(rng and rng.startswith("bytes=") for rng in proxy.ranges)
    else:
        ranged = [line for line in log if "best.pt" in line and "bytes=" in line]
        assert ranged, log
    if place.kind == "url":
        assert place.nginx is not None
        (resumed,) = [q for q in place.nginx.requests() if q.range]
        assert resumed.status == 206 and resumed.if_range and resumed.if_range.startswith('"')


@only("url")
def test_a_file_changed_on_the_server_between_cut_and_resume_restarts_from_zero(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    """If-Range with the validator seen first: the server's file changed after the cut (same
    size, new ETag), so nginx answers 200 with the whole new file. Never a join of the two;
    the pin names the bytes it holds and the validator they came with."""
    assert place.nginx is not None
    nginx = place.nginx
    old, new = _bytes(4 * MiB, 3), _bytes(4 * MiB, 8)
    nginx.put("v1.0/best.pt", old)

    def replace() -> None:
        nginx.put("v1.0/best.pt", new)
        later = time.time() + 10  # another mtime: another ETag
        os.utime(nginx.www / "v1.0" / "best.pt", (later, later))

    consumer = _project(tmp_path / "consumer")
    with Cutter(nginx.port, "/v1.0/best.pt", keep=MiB, on_cut=replace) as cutter:
        url = f"http://127.0.0.1:{cutter.port}/files/v1.0/best.pt"
        r = cas("pull", url, "--name", "det", "--version", "v1.0", cwd=consumer)
        assert r.returncode == 0, r.stderr
        head = urllib.request.urlopen(urllib.request.Request(url, method="HEAD"))
        audit = cas("verify", "--remote", "det@v1.0", cwd=consumer)
        assert audit.returncode == 0, audit.stdout + audit.stderr
    (resumed,) = [q for q in nginx.requests() if q.range]
    assert resumed.if_range and resumed.status == 200, "If-Range refused the stale resume"
    entry = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.0"]
    assert entry.files["best.pt"].sha256 == ref_sha256(new), "never a join of two files"
    assert Store(tmp_path / "store").path(ref_sha256(new)).read_bytes() == new
    assert entry.validator == head.headers["ETag"], "the validator of the bytes pinned"


@only("hub", "oci", "url")  # a directory is read, not downloaded
def test_a_trickle_ends_at_the_low_speed_limit_and_the_next_run_resumes(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    data = _bytes(2 * MiB, 4)
    pkg = _project(tmp_path / "pkg")
    assert place.add(cas, pkg, "v1.0", data).returncode == 0
    consumer = _project(tmp_path / "consumer")
    fresh = tmp_path / "fresh"
    slow = {"MODELCAS_LOW_SPEED_LIMIT": "200000", "MODELCAS_LOW_SPEED_TIME": "1"}
    with ExitStack() as stack:
        port = None
        args = place.ref("v1.0")
        if place.kind == "hub":
            assert place.hub is not None
            place.hub.slow(r"best\.pt", rate=2000)
        elif place.kind == "oci":
            assert place.registry is not None
            proxy = stack.enter_context(
                CuttingProxy(place.registry.port, f"sha256:{ref_sha256(data)}", pause=0.5)
            )
            port = proxy.port
            args = place.ref("v1.0", port=port)
        else:
            assert place.nginx is not None
            url = place.nginx.url("v1.0/best.pt", slow=True)
            args = [url, "--name", "det", "--version", "v1.0"]
        started = time.monotonic()
        r = cas("pull", *args, "--json", cwd=consumer, store=fresh, env=slow)
        took = time.monotonic() - started
    assert r.returncode == 2, r.stdout + r.stderr
    assert "low-speed limit" in r.stderr and took < 60
    assert json.loads(r.stdout)["schema"] == "cas.error/1"
    assert len(r.stderr.strip().splitlines()) <= 2
    kept = list((fresh / "tmp").glob("resume-*.partial"))
    assert len(kept) == 1 and 0 < kept[0].stat().st_size < len(data)
    if place.kind == "url":
        return  # another URL (the fast one) is another download: it starts from zero
    if place.hub is not None:
        place.hub.clear_faults()
    done = cas("pull", *place.ref("v1.0"), cwd=consumer, store=fresh)
    assert done.returncode == 0, done.stderr
    assert Store(fresh).path(ref_sha256(data)).read_bytes() == data
    assert list((fresh / "tmp").glob("resume-*.partial")) == []


def test_json_documents_are_the_same_for_every_remote(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    pkg = _project(tmp_path / "pkg")
    (pkg / "best.pt").write_bytes(_bytes(MiB, 9))
    if place.kind == "url":
        r = cas("publish", "det", "--version", "v1.0", "--file", "best.pt", "--to",
                "https://example.org/x/best.pt", "--json", cwd=pkg)  # fmt: skip
        assert r.returncode == 2 and json.loads(r.stdout)["schema"] == "cas.error/1"
        assert "read-only" in r.stderr
        return
    dry = cas(
        "publish", "det", "--version", "v1.0", "--file", "best.pt", *place.target(),
        "--dry-run", "--json", cwd=pkg,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    real = cas(
        "publish", "det", "--version", "v1.0", "--file", "best.pt", *place.target(), "--json",
        cwd=pkg,
    )  # fmt: skip
    assert real.returncode == 0, real.stderr
    for doc in (json.loads(dry.stdout), json.loads(real.stdout)):
        assert doc["schema"] == "cas.publish/1"
        assert set(doc) >= {"model", "version", "remote", "tag", "source", "files", "commit"}
        assert doc["files"][0]["name"] == "best.pt"
    assert json.loads(real.stdout)["uploaded"] == ["best.pt"]
    again = cas(
        "publish", "det", "--version", "v1.0", "--file", "best.pt", *place.target(), "--json",
        cwd=pkg,
    )  # fmt: skip
    assert again.returncode == 0 and json.loads(again.stdout)["tag_exists"]
    # The same version with other bytes: the tag exists elsewhere, exit 1, one error document.
    other = _project(tmp_path / "other")
    (other / "best.pt").write_bytes(_bytes(MiB, 10))
    clash = cas(
        "publish", "det", "--version", "v1.0", "--file", "best.pt", *place.target(), "--json",
        cwd=other,
    )  # fmt: skip
    assert clash.returncode == 1, clash.stderr
    assert json.loads(clash.stdout)["schema"] == "cas.error/1"


def test_the_library_reaches_the_right_server(
    place: Place, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ops.pull` and `ops.publish` called directly pick the remote from the reference."""
    from huggingface_hub import constants

    from modelcas.ops.publish import PublishRequest, plan, publish
    from modelcas.ops.pull import PullRequest, pull

    # The Hub client reads HF_HUB_DISABLE_XET once, when it is first imported.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)

    pkg = _project(tmp_path / "pkg")
    data = _bytes(MiB, 11)
    (pkg / "best.pt").write_bytes(data)
    store = Store(tmp_path / "store")
    old = dict(os.environ)
    os.environ.update(place.env)
    try:
        if place.kind == "url":
            assert place.nginx is not None
            source = place.nginx.put("v1.0/best.pt", data)
        else:
            to = {"hub": "hf://lab/det", "oci": None, "dir": str(place.shared)}[place.kind]
            if place.kind == "oci":
                assert place.registry is not None
                to = place.registry.url("lab/det")
            req = PublishRequest(
                "det", "v1.0", files=(pkg / "best.pt",), lock=pkg / "cas.lock", to=to
            )
            publish(plan(req, store), store)
            source = " ".join(place.ref("v1.0")).split(" ")[0]
        fresh = Store(tmp_path / "fresh")
        name = {"dir": "det", "url": "det"}.get(place.kind)
        version = "v1.0" if place.kind in ("dir", "url") else None
        got = pull(PullRequest(source, name, version, lock=tmp_path / "consumer.lock"), fresh)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert got.files[0].digest.sha256 == ref_sha256(data)
    assert fresh.path(ref_sha256(data)).read_bytes() == data
    log = place.requests()
    if place.kind == "hub":
        assert any("/resolve/" in line and "best.pt" in line for line in log), log
    elif place.kind == "oci":
        assert any(f"/blobs/sha256:{ref_sha256(data)}" in line for line in log), log
    elif place.kind == "url":
        assert any(line.startswith("GET /files/v1.0/best.pt") for line in log), log
    else:
        assert (place.shared / "catalog" / "det" / "v1.0.json").is_file()


@only("hub", "oci", "dir")  # a plain URL carries no metadata
def test_requires_and_package_travel_with_the_version(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    pkg = _project(tmp_path / "pkg")
    (pkg / "best.pt").write_bytes(_bytes(MiB, 12))
    r = cas(
        "publish", "det", "--version", "v1.0", "--file", "best.pt", *place.target(),
        "--requires", ">=0.1,<1", cwd=pkg,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    consumer = _project(tmp_path / "consumer")
    (consumer / "pyproject.toml").unlink()  # the consumer is not the package
    r = cas("pull", *place.ref("v1.0"), cwd=consumer)
    assert r.returncode == 0, r.stderr
    lock = Lockfile.load(consumer / "cas.lock")
    assert lock.package == "structflo-cser"
    assert lock.models["det"].versions["v1.0"].requires == ">=0.1,<1"


@only("hub", "oci", "dir")  # a plain URL has no tags
def test_equal_versions_keep_the_spelling_first_pinned(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    pkg = _project(tmp_path / "pkg")
    (pkg / "best.pt").write_bytes(_bytes(MiB, 13))
    assert cas("add", "best.pt", "--name", "det", "--version", "v1.0", cwd=pkg).returncode == 0
    r = cas(
        "publish", "det", "--version", "1.0.0", "--file", "best.pt", *place.target(), "--json",
        cwd=pkg,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["version"] == "v1.0"
    assert doc["tag"] == {"hub": "weights-v1.0", "oci": "v1.0", "dir": "det@v1.0"}[place.kind]
    assert list(Lockfile.load(pkg / "cas.lock").models["det"].versions) == ["v1.0"]
    # Other bytes under an equal spelling: the version's tag exists elsewhere (exit 1).
    (pkg / "best.pt").write_bytes(_bytes(MiB, 14))
    r = cas("publish", "det", "--version", "1.0", "--file", "best.pt", *place.target(), cwd=pkg)
    assert r.returncode == 1 and "v1.0" in r.stderr, r.stderr
    if place.kind == "dir":  # asked for by another spelling, pinned as the remote keeps it
        fresh = _project(tmp_path / "consumer")
        r = cas("pull", *place.ref("1.0.0"), cwd=fresh, store=tmp_path / "fresh")
        assert r.returncode == 0, r.stderr
        assert list(Lockfile.load(fresh / "cas.lock").models["det"].versions) == ["v1.0"]


@only("hub", "oci", "dir")
def test_a_pinned_version_is_published_from_the_store_without_its_files_here(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    # A version pinned here (pulled, or added and the file since deleted) with no default
    # weights file: publishing it elsewhere asked for --file, though the store holds it.
    pkg = _project(tmp_path / "pkg")
    data = _bytes(MiB, 21)
    (pkg / "best.pt").write_bytes(data)
    assert cas("add", "best.pt", "--name", "det", "--version", "v1.0", cwd=pkg).returncode == 0
    (pkg / "best.pt").unlink()
    r = cas("publish", "det", "--version", "1.0.0", *place.target(), "--json", cwd=pkg)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["version"] == "v1.0"
    fresh = _project(tmp_path / "consumer")
    r = cas("pull", *place.ref("v1.0"), cwd=fresh, store=tmp_path / "fresh")
    assert r.returncode == 0, r.stderr
    assert Store(tmp_path / "fresh").path(ref_sha256(data)).read_bytes() == data


@only("dir")  # push is for directories
def test_push_records_the_directory_for_sync_elsewhere(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    pkg = _project(tmp_path / "pkg")
    data = _bytes(MiB, 15)
    (pkg / "best.pt").write_bytes(data)
    assert cas("add", "best.pt", "--name", "det", "--version", "v1.0", cwd=pkg).returncode == 0
    (pkg / "shared").mkdir()
    bare = cas("push", "shared", cwd=pkg)  # a bare word reads as a model name
    assert bare.returncode == 2 and "./shared" in bare.stderr, bare.stderr
    r = cas("push", place.shared, "--json", cwd=pkg)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cas.push/1" and doc["recorded"] == ["det@v1.0"]
    entry = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.0"]
    assert entry.source == place.shared.resolve().as_uri()
    # Elsewhere, the lockfile alone is enough.
    r = cas("sync", cwd=pkg, store=tmp_path / "elsewhere")
    assert r.returncode == 0, r.stderr
    assert Store(tmp_path / "elsewhere").path(ref_sha256(data)).read_bytes() == data
    # A second machine's push of other bytes as the same version is refused (exit 1).
    other = _project(tmp_path / "other")
    (other / "best.pt").write_bytes(_bytes(MiB, 16))
    assert cas("add", "best.pt", "--name", "det", "--version", "v1.0", cwd=other).returncode == 0
    sent_before = sorted((place.shared / "objects").rglob("*"))
    clash = cas("push", place.shared, cwd=other)
    assert clash.returncode == 1 and "never changed" in clash.stderr
    assert sorted((place.shared / "objects").rglob("*")) == sent_before, "nothing was sent"


@only("hub", "oci", "dir")  # a URL is one file
def test_include_and_exclude_pick_the_files(place: Place, cas: Run, tmp_path: Path) -> None:
    pkg = _project(tmp_path / "pkg")
    names = ["model.safetensors", "optimizer.pt", "config.json"]
    for i, n in enumerate(names):
        (pkg / n).write_bytes(_bytes(64 << 10, 20 + i))
    files = [a for n in names for a in ("--file", n)]
    r = cas("publish", "det", "--version", "v1.0", *files, *place.target(), cwd=pkg)
    assert r.returncode == 0, r.stderr
    consumer = _project(tmp_path / "consumer")
    r = cas(
        "pull", *place.ref("v1.0"), "--include", "*.safetensors", "--include", "*.json",
        "--exclude", "config*", "--json", cwd=consumer,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert [f["name"] for f in json.loads(r.stdout)["files"]] == ["model.safetensors"]
    none = cas("pull", *place.ref("v1.0"), "--include", "*.onnx", cwd=consumer)
    assert none.returncode == 2 and "no file of" in none.stderr


@only("hub", "oci", "dir")  # a URL is one file
def test_include_of_a_pinned_version_fetches_those_files_against_the_pins(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    """A version pinned whole, pulled again with --include into another store: the chosen
    files are fetched and checked against their pins; the lockfile keeps the whole version
    (it was refused as 'already pinned to other content', after the download)."""
    pkg = _project(tmp_path / "pkg")
    names = ["model.safetensors", "config.json"]
    for i, n in enumerate(names):
        (pkg / n).write_bytes(_bytes(64 << 10, 30 + i))
    files = [a for n in names for a in ("--file", n)]
    assert (
        cas("publish", "det", "--version", "v1.0", *files, *place.target(), cwd=pkg).returncode == 0
    )
    consumer = _project(tmp_path / "consumer")
    assert cas("pull", *place.ref("v1.0"), cwd=consumer).returncode == 0
    before = (consumer / "cas.lock").read_bytes()
    other = tmp_path / "other-store"
    r = cas("pull", *place.ref("v1.0"), "--include", "*.safetensors", cwd=consumer, store=other)
    assert r.returncode == 0, r.stderr
    assert (consumer / "cas.lock").read_bytes() == before
    assert [o.digest.sha256 for o in Store(other).objects()] == [
        ref_sha256((pkg / "model.safetensors").read_bytes())
    ]


@only("hub", "oci", "dir")
def test_an_equal_spelling_published_elsewhere_is_a_tag_conflict(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    """Another publisher's lockfile does not know v1.0: their 1.0.0 is still that version at
    the remote (PEP 440), so other bytes are a conflict (exit 1), never a second tag."""
    _published(place, cas, tmp_path, "v1.0")
    other = _project(tmp_path / "other")
    (other / "best.pt").write_bytes(_bytes(MiB, 40))
    r = cas("publish", "det", "--version", "1.0.0", "--file", "best.pt", *place.target(), cwd=other)
    assert r.returncode == 1, r.stdout + r.stderr
    assert not (other / "cas.lock").exists()
    consumer = _project(tmp_path / "consumer")
    assert cas("pull", *place.ref("v1.0"), cwd=consumer).returncode == 0
    r = cas("update", "--dry-run", "--json", cwd=consumer)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["models"][0]["newer"] == []


@only("dir")
def test_the_audit_of_a_directory_sees_an_object_gone_from_it(
    place: Place, cas: Run, tmp_path: Path
) -> None:
    """The catalog still names the version, its object is gone (deleted by hand, or by a gc
    of the directory): the listing audit must say so, not pass on the catalog alone."""
    versions = _published(place, cas, tmp_path, "v1.0")
    pkg = tmp_path / "pkg"
    place.stored(versions["v1.0"]).unlink()
    r = cas("verify", "--remote", "det@v1.0", cwd=pkg)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "best.pt" in r.stdout and "missing" in r.stdout, r.stdout
