"""The real ``huggingface_hub`` client against ``tests.hubserver.HubServer``.

How the client is pointed at the server: ``huggingface_hub`` reads its environment once, at
import (``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET``, ``HF_HOME``...), and the server's port is only
known once it runs, while another test module may already have imported the client. So the
in-process tests pass ``endpoint=hub.url``, ``token=`` and ``cache_dir=`` explicitly, and the
autouse fixture sets the import-time constants that cannot be passed (Xet and telemetry off, the
default cache in tmp_path) on ``huggingface_hub.constants`` for the duration of each test.
Telemetry must be off in process: with it on, the first request of a process fetches the agent
registry from ``constants.ENDPOINT``, which ``endpoint=`` does not change.
``test_environment_variables_alone_configure_the_client`` runs the client in a subprocess
configured by environment variables only, the way ``modelcas`` runs it.

Client behaviours these tests pin down (huggingface_hub 2.4.0):

- a download by tag sends HEAD then GET to the same tag URL; the GET is not pinned to the commit
  the HEAD reported, and the client checks only the size of what it receives;
- a GET cut short is retried after a 1 s pause, with a Range request from the last whole
  10 MiB piece it received (from the start below that); a 500 on a GET is not retried, a 500
  on the metadata HEAD and on an LFS PUT are (the PUT after a 1 s pause);
- ``create_tag(exist_ok=True)`` swallows any 409, including a tag that points elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, constants, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from tests.hubserver import HubServer

MiB = 1 << 20
TOKEN = "hf_hubserver_test_token"
REPO = "acme/tiny-model"
TAG = "weights-v1.1"
CONFIG = b'{"hidden_size": 8}\n'

# The client itself passes data= to httpx2 for LFS uploads.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def client_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What HF_HUB_DISABLE_XET=1, HF_HUB_DISABLE_TELEMETRY=1 and HF_HOME=tmp would have set."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "default-cache"))


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    with HubServer(tmp_path / "hub") as server:
        yield server


@pytest.fixture
def api(hub: HubServer) -> HfApi:
    return HfApi(endpoint=hub.url, token=TOKEN)


@dataclass
class Published:
    commit: str
    weights: bytes

    @property
    def sha256(self) -> str:
        return sha256(self.weights)


@pytest.fixture
def published(api: HfApi) -> Published:
    """REPO with a 3 MiB random model.bin and a config.json in one commit, tagged TAG."""
    api.create_repo(REPO)
    weights = random.Random(0).randbytes(3 * MiB)
    info = api.create_commit(
        REPO,
        operations=[
            CommitOperationAdd("model.bin", weights),
            CommitOperationAdd("config.json", CONFIG),
        ],
        commit_message="weights v1.1",
    )
    api.create_tag(REPO, tag=TAG, revision=info.oid)
    return Published(info.oid, weights)


def download(
    hub: HubServer, tmp_path: Path, filename: str, revision: str, force_download: bool = False
) -> Path:
    path = hf_hub_download(
        REPO,
        filename,
        revision=revision,
        endpoint=hub.url,
        token=TOKEN,
        cache_dir=tmp_path / "cache",
        force_download=force_download,
    )
    return Path(path)


def resolve_requests(hub: HubServer, method: str) -> list[tuple[int, int]]:
    return [
        (r.status, r.bytes_sent) for r in hub.log if r.method == method and "/resolve/" in r.path
    ]


def tag_target(api: HfApi, tag: str) -> str:
    return next(t.target_commit for t in api.list_repo_refs(REPO).tags if t.name == tag)


def test_create_repo_exist_ok_private_and_auth(hub: HubServer, api: HfApi) -> None:
    url = api.create_repo(REPO)
    assert url.repo_id == REPO
    assert url.startswith(hub.url)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    api.create_repo(REPO, exist_ok=True)
    assert api.repo_exists(REPO)
    assert not api.repo_exists("acme/missing")
    # As on the Hub, a new repo starts with one commit holding .gitattributes.
    assert [s.rfilename for s in api.model_info(REPO).siblings or []] == [".gitattributes"]

    api.create_repo("acme/secret", private=True)
    assert api.model_info("acme/secret").private
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("acme/secret", token=False)
    with pytest.raises(HfHubHTTPError) as err:
        HfApi(endpoint=hub.url, token=False).create_repo("acme/anonymous")
    assert err.value.response.status_code == 401
    assert not any(TOKEN in str(entry) for entry in hub.log)


def test_commit_tag_refs_and_metadata(hub: HubServer, api: HfApi, published: Published) -> None:
    refs = api.list_repo_refs(REPO)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", published.commit)]
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [
        (TAG, f"refs/tags/{TAG}", published.commit)
    ]

    info = api.model_info(REPO, revision=TAG, files_metadata=True)
    assert info.sha == published.commit
    siblings = {s.rfilename: s for s in info.siblings or []}
    assert siblings.keys() == {".gitattributes", "config.json", "model.bin"}
    lfs = siblings["model.bin"].lfs
    assert lfs is not None
    assert (lfs.sha256, lfs.size) == (published.sha256, 3 * MiB)
    assert siblings["config.json"].lfs is None
    assert siblings["config.json"].size == len(CONFIG)

    weights, config = api.get_paths_info(REPO, ["model.bin", "config.json", "nope"], revision=TAG)
    assert isinstance(weights, RepoFile)
    assert weights.lfs is not None
    assert (weights.lfs.sha256, weights.size) == (published.sha256, 3 * MiB)
    assert isinstance(config, RepoFile)
    assert config.lfs is None

    tree = {f.path: f for f in api.list_repo_tree(REPO, revision=published.commit, recursive=True)}
    assert tree.keys() == {".gitattributes", "config.json", "model.bin"}
    tree_weights = tree["model.bin"]
    assert isinstance(tree_weights, RepoFile)
    assert tree_weights.lfs is not None
    assert tree_weights.lfs.sha256 == published.sha256

    # One PUT carried the weights; like the Hub's pre-signed URL it needs no token.
    puts = [(r.status, r.bytes_received, r.token_sent) for r in hub.log if r.method == "PUT"]
    assert puts == [(200, 3 * MiB, False)]
    assert all(r.token_sent for r in hub.log if r.method != "PUT")


def test_download_by_tag_and_by_commit(
    hub: HubServer, published: Published, tmp_path: Path
) -> None:
    path = download(hub, tmp_path, "model.bin", TAG)
    assert path.read_bytes() == published.weights
    assert path.parent.name == published.commit
    assert download(hub, tmp_path, "config.json", TAG).read_bytes() == CONFIG

    # A commit sha already in the cache needs no request at all.
    before = len(hub.log)
    assert download(hub, tmp_path, "model.bin", published.commit) == path
    assert len(hub.log) == before


def test_encoded_tag_and_path(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    api.create_repo(REPO)
    info = api.create_commit(
        REPO, [CommitOperationAdd("sub dir/my file.json", CONFIG)], commit_message="spaces"
    )
    api.create_tag(REPO, tag="release/v1", revision=info.oid)
    assert tag_target(api, "release/v1") == info.oid
    assert api.model_info(REPO, revision="release/v1").sha == info.oid
    path = download(hub, tmp_path, "sub dir/my file.json", "release/v1")
    assert path.read_bytes() == CONFIG
    assert any(r.path == f"/{REPO}/resolve/release%2Fv1/sub%20dir/my%20file.json" for r in hub.log)
    top = {f.path: type(f) for f in api.list_repo_tree(REPO, revision="release/v1")}
    assert top == {".gitattributes": RepoFile, "sub dir": RepoFolder}
    [inner] = api.list_repo_tree(REPO, path_in_repo="sub dir", revision="release/v1")
    assert inner.path == "sub dir/my file.json"


def test_known_bytes_are_not_uploaded_again(
    hub: HubServer, api: HfApi, published: Published
) -> None:
    # Same bytes at a new path: the LFS batch API answers without an upload action.
    v2 = api.create_commit(
        REPO, [CommitOperationAdd("v2/model.bin", published.weights)], commit_message="v2"
    )
    # Same bytes at the same path: preupload reports the same oid and the client skips the commit.
    same = api.create_commit(
        REPO, [CommitOperationAdd("model.bin", published.weights)], commit_message="no-op"
    )
    assert same.oid == v2.oid
    assert [r.method for r in hub.log].count("PUT") == 1
    assert len([r for r in hub.log if "/commit/" in r.path]) == 2
    files = api.get_paths_info(REPO, ["model.bin", "v2/model.bin"], revision=v2.oid)
    assert {f.lfs.sha256 for f in files if isinstance(f, RepoFile) and f.lfs} == {published.sha256}


def test_parent_commit_must_be_the_branch_head(api: HfApi, published: Published) -> None:
    notes = api.create_commit(
        REPO,
        [CommitOperationAdd("notes.txt", b"first\n")],
        commit_message="notes",
        parent_commit=published.commit,
    )
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(
            REPO,
            [CommitOperationAdd("notes.txt", b"second\n")],
            commit_message="stale",
            parent_commit=published.commit,
        )
    assert err.value.response.status_code == 412
    assert api.model_info(REPO).sha == notes.oid


def test_existing_tag_is_refused(api: HfApi, published: Published) -> None:
    newer = api.create_commit(REPO, [CommitOperationAdd("notes.txt", b"x\n")], commit_message="x")
    # The Hub refuses an existing tag even when it already points to the requested commit.
    for target in (published.commit, newer.oid):
        with pytest.raises(HfHubHTTPError) as err:
            api.create_tag(REPO, tag=TAG, revision=target)
        assert err.value.response.status_code == 409
    # exist_ok=True swallows the 409 and leaves the tag where it was.
    api.create_tag(REPO, tag=TAG, revision=newer.oid, exist_ok=True)
    assert tag_target(api, TAG) == published.commit

    api.delete_tag(REPO, tag=TAG)
    api.create_tag(REPO, tag=TAG, revision=newer.oid)
    assert tag_target(api, TAG) == newer.oid
    with pytest.raises(RevisionNotFoundError):
        api.delete_tag(REPO, tag="no-such-tag")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(REPO, revision="no-such-tag")


def test_resolve_headers_range_and_no_xet(hub: HubServer, published: Published) -> None:
    url = f"{hub.url}/{REPO}/resolve/{TAG}/model.bin"
    with urlopen(Request(url, method="HEAD")) as head:
        assert head.headers["X-Repo-Commit"] == published.commit
        assert head.headers["ETag"] == head.headers["X-Linked-Etag"] == f'"{published.sha256}"'
        assert head.headers["X-Linked-Size"] == head.headers["Content-Length"] == str(3 * MiB)
        assert not [name for name in head.headers if name.lower().startswith("x-xet")]
    with urlopen(Request(url, headers={"Range": "bytes=10-19"})) as part:
        assert part.status == 206
        assert part.headers["Content-Range"] == f"bytes 10-19/{3 * MiB}"
        assert part.read() == published.weights[10:20]
    with urlopen(Request(url, headers={"Range": "bytes=-5"})) as tail:
        assert tail.read() == published.weights[-5:]
    with pytest.raises(HTTPError) as err:
        urlopen(Request(url, headers={"Range": f"bytes={3 * MiB}-"}))
    assert err.value.code == 416


def test_lfs_put_keeps_only_matching_bytes(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO)
    data = bytes(range(256)) * 4
    oid = sha256(data)

    def batch() -> dict[str, object]:
        body = {"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}
        request = Request(
            f"{hub.url}/{REPO}.git/info/lfs/objects/batch",
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urlopen(request) as resp:
            answer = json.load(resp)
        assert answer["transfer"] == "basic"
        [obj] = answer["objects"]
        return dict(obj)

    href = batch()["actions"]["upload"]["href"]  # type: ignore[index]
    with pytest.raises(HTTPError) as err:
        urlopen(Request(href, data=data[::-1], method="PUT"))
    assert err.value.code == 400
    assert "actions" in batch()  # the wrong bytes were not kept
    with urlopen(Request(href, data=data, method="PUT")) as resp:
        assert resp.status == 200
    assert "actions" not in batch()


def test_fault_wrong_bytes_of_the_right_size(
    hub: HubServer, published: Published, tmp_path: Path
) -> None:
    hub.corrupt("/model.bin$")
    data = download(hub, tmp_path, "model.bin", TAG).read_bytes()
    assert len(data) == len(published.weights)
    assert sha256(data) != published.sha256  # the client checks sizes only


def test_fault_truncated_download_is_resumed(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    # The client writes what it receives in 10 MiB pieces and resumes after the last whole one.
    api.create_repo(REPO)
    big = random.Random(4).randbytes(12 * MiB)
    api.create_commit(REPO, [CommitOperationAdd("big.bin", big)], commit_message="big")
    hub.truncate("/big.bin$", keep=11 * MiB)
    assert download(hub, tmp_path, "big.bin", "main").read_bytes() == big
    assert resolve_requests(hub, "GET") == [(200, 11 * MiB), (206, 2 * MiB)]


def test_fault_truncated_download_then_error_raises(
    hub: HubServer, published: Published, tmp_path: Path
) -> None:
    hub.truncate("/model.bin$", keep=MiB)
    hub.fail("/model.bin$", method="GET")  # faults apply in order: this one hits the retry
    with pytest.raises(HfHubHTTPError) as err:
        download(hub, tmp_path, "model.bin", TAG)
    assert err.value.response.status_code == 500
    assert resolve_requests(hub, "GET")[0] == (200, MiB)
    assert [status for status, _ in resolve_requests(hub, "GET")] == [200, 500]
    assert not list((tmp_path / "cache").rglob("model.bin"))


def test_fault_http_500(hub: HubServer, api: HfApi, published: Published, tmp_path: Path) -> None:
    # A failed metadata HEAD is retried.
    hub.fail("/resolve/.*/model.bin$", method="HEAD")
    assert download(hub, tmp_path, "model.bin", TAG).read_bytes() == published.weights
    assert [status for status, _ in resolve_requests(hub, "HEAD")] == [500, 200]
    # A failed content GET is not.
    hub.fail("/model.bin$", method="GET")
    with pytest.raises(HfHubHTTPError):
        download(hub, tmp_path, "model.bin", TAG, force_download=True)
    # Nor are plain API calls.
    hub.fail("^/api/models/", times=None)
    with pytest.raises(HfHubHTTPError):
        api.model_info(REPO)
    hub.clear_faults()
    assert api.model_info(REPO).sha == published.commit


def test_fault_http_500_on_lfs_put_is_retried(hub: HubServer, api: HfApi) -> None:
    api.create_repo(REPO)
    data = random.Random(2).randbytes(MiB)
    hub.fail(r"\.git/info/lfs/objects/[0-9a-f]{64}$", method="PUT")
    api.create_commit(REPO, [CommitOperationAdd("model.bin", data)], commit_message="retry")
    puts = [(r.status, r.bytes_received) for r in hub.log if r.method == "PUT"]
    assert puts == [(500, MiB), (200, MiB)]


def test_fault_tag_moved_between_head_and_get(
    hub: HubServer, api: HfApi, published: Published, tmp_path: Path
) -> None:
    other = random.Random(1).randbytes(len(published.weights))
    v2 = api.create_commit(REPO, [CommitOperationAdd("model.bin", other)], commit_message="v2")
    hub.move_tag_after_resolve(REPO, TAG, v2.oid)
    path = download(hub, tmp_path, "model.bin", TAG)
    # Cached under the commit the HEAD reported, with the bytes of the commit the GET found.
    assert path.parent.name == published.commit
    assert path.read_bytes() == other
    assert tag_target(api, TAG) == v2.oid


def test_dataset_repo_round_trip(hub: HubServer, api: HfApi, tmp_path: Path) -> None:
    data = b"PAR1" + random.Random(3).randbytes(1000)
    api.create_repo("acme/data", repo_type="dataset")
    api.upload_file(
        path_or_fileobj=data, path_in_repo="train.parquet", repo_id="acme/data", repo_type="dataset"
    )
    path = hf_hub_download(
        "acme/data",
        "train.parquet",
        repo_type="dataset",
        endpoint=hub.url,
        token=TOKEN,
        cache_dir=tmp_path / "cache",
    )
    assert Path(path).read_bytes() == data
    assert any(r.path == "/datasets/acme/data.git/info/lfs/objects/batch" for r in hub.log)


ENV_SCRIPT = """
import json
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download
api = HfApi()
api.create_repo("acme/env-model")
data = bytes(range(256)) * 4096
info = api.create_commit(
    "acme/env-model", [CommitOperationAdd("model.safetensors", data)], commit_message="v1"
)
api.create_tag("acme/env-model", tag="weights-v1", revision=info.oid)
path = hf_hub_download("acme/env-model", "model.safetensors", revision="weights-v1")
print(json.dumps({"commit": info.oid, "path": path, "same": open(path, "rb").read() == data}))
"""


def test_environment_variables_alone_configure_the_client(hub: HubServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env |= {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN": TOKEN,
        "HF_HOME": str(tmp_path / "hf-home"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", ENV_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["same"]
    assert out["path"].startswith(str(tmp_path / "hf-home" / "hub"))
    assert TOKEN not in proc.stdout + proc.stderr
    # Telemetry is on here: the agent registry is fetched once, from this server, without token.
    harness = [r for r in hub.log if r.path == "/api/agent-harnesses"]
    assert [(r.status, r.token_sent) for r in harness] == [(200, False)]
    others = [r for r in hub.log if r.method != "PUT" and r not in harness]
    assert all(r.token_sent for r in others)
