"""Signatures travel with every remote (docs/signing.md), through the real `cas` CLI.

The Hub through the real huggingface_hub against tests/hubserver.py, OCI registries against the
real CNCF distribution registry (Debian's docker-registry, distribution 2.8: no referrers API,
so the referrers tag schema's fallback is what is used), a shared directory, and a plain web
server (nginx). A signature is the real model_signing format, checked both ways against the real
`python -m model_signing`.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from modelcas.lockfile import Lockfile
from tests.conftest import HUB_TOKEN
from tests.hubserver import HubServer
from tests.nginxserver import Nginx, have_nginx
from tests.ociregistry import RawClient, Registry, docker_config, have_registry, raw
from tests.test_signing import _fingerprint, _key, _model_signing, _one_line

Cas = Callable[..., subprocess.CompletedProcess[bytes]]
REPO = "lab/det"
WEIGHTS = {"v1.0": b"first weights of the detector", "v1.1": b"second weights of the detector"}


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    """The release key (trusted) and another key (not trusted): private PEMs, `.pub` beside."""
    return _key(tmp_path / "release.pem"), _key(tmp_path / "other.pem")


def _project(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    (pkg / "w").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text('[project]\nname = "det-pkg"\nversion = "0.1.0"\n')
    (pkg / "w" / "config.json").write_text('{"classes": 3}')
    return pkg


def _weights(pkg: Path, version: str) -> None:
    (pkg / "w" / "best.pt").write_bytes(WEIGHTS[version])


def _consumer(tmp_path: Path, cas: Cas, pub: Path, env: dict[str, str], name: str = "c") -> Path:
    """A project whose lockfile trusts only `pub` (for every model), and pins nothing yet."""
    folder = tmp_path / name
    folder.mkdir()
    r = cas("trust", "add", pub, cwd=folder, extra_env=env)
    assert r.returncode == 0, r.stderr
    return folder


def _fresh(tmp_path: Path, env: dict[str, str], name: str) -> dict[str, str]:
    return {**env, "MODELCAS_HOME": str(tmp_path / name)}


def _objects(store: Path) -> list[Path]:
    return [p for p in (store / "objects").rglob("*") if p.is_file()]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the Hub -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubRig:
    """The local Hub: what points `cas` at it, and the real client to look at it."""

    env: dict[str, str]
    api: Any
    url: str


@pytest.fixture
def rig(hub: HubServer, hf_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> HubRig:
    from huggingface_hub import HfApi

    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    return HubRig(hf_env, HfApi(endpoint=hub.url, token=HUB_TOKEN), hub.url)


def _hub_file(rig: HubRig, tmp_path: Path, revision: str, name: str = "model.sig") -> bytes:
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(
        REPO, name, revision=revision, endpoint=rig.url, cache_dir=tmp_path / "hf-raw"
    )
    return Path(path).read_bytes()


def _tags(api: Any) -> dict[str, str]:
    refs = api.list_repo_refs(REPO)
    return {t.name: t.target_commit for t in refs.tags}


def _publish(cas: Cas, pkg: Path, env: dict[str, str], version: str, *extra: str | Path) -> str:
    _weights(pkg, version)
    r = cas("publish", "det", "--version", version, "--repo", REPO, "--file", "w/best.pt",
            "--file", "w/config.json", *extra, cwd=pkg, extra_env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def test_hub_round_trip_signed_publish_pulled_with_trust(
    rig: HubRig,
    cas: Cas,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    release, _ = keys
    pkg = _project(tmp_path)
    out = _publish(cas, pkg, rig.env, "v1.0", "--key", release)
    signer = _fingerprint(release.with_suffix(".pub"))
    travels = f"signed by key {signer}; the signature travels with it: hf://{REPO}@weights-v1.0"
    assert f"{travels} (model.sig)" in out
    pinned = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.0"]
    assert pinned.signature is not None and pinned.signature.signer == signer
    # The tag's commit holds model.sig: the very signature pinned, not a pinned file.
    sig = _hub_file(rig, tmp_path, "weights-v1.0")
    assert _sha256(sig) == pinned.signature.digest.sha256
    assert set(pinned.files) == {"best.pt", "config.json"}
    meta = json.loads(_hub_file(rig, tmp_path, "weights-v1.0", "modelcas.json"))
    assert set(meta["files"]) == {"best.pt", "config.json"} and meta["signature"] == "model.sig"

    # A consumer that trusts the release key pulls into a fresh store: checked, then pinned.
    consumer = _consumer(tmp_path, cas, release.with_suffix(".pub"), rig.env)
    fresh = _fresh(tmp_path, rig.env, "fresh")
    r = cas("pull", f"hf://{REPO}@weights-v1.0", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 0, r.stderr
    assert f"signed by key {signer}, trusted; the signature is pinned" in r.stdout.decode()
    got = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.0"]
    assert got.signature == pinned.signature and got.files == pinned.files

    # `cas sync` into another fresh store brings the pinned signature back, then the files.
    again = _fresh(tmp_path, rig.env, "fresh2")
    r = cas("sync", cwd=consumer, extra_env=again)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fresh2" / "objects").exists()
    r = cas("--json", "path", "det@v1.0", "--file", "best.pt", cwd=consumer, extra_env=again)
    assert r.returncode == 0, r.stderr
    # gc keeps the signature: it is pinned.
    assert cas("gc", cwd=consumer, extra_env=again).returncode == 0
    r = cas("verify", "--lock", cwd=consumer, extra_env=again)
    assert r.returncode == 0, r.stderr

    # Interop: model_signing accepts the tag's model.sig over what `cas get -o DIR/` writes.
    folder = tmp_path / "got"
    r = cas("get", "det@v1.0", "-o", f"{folder}/", cwd=consumer, extra_env=again)
    assert r.returncode == 0, r.stderr
    (tmp_path / "model.sig").write_bytes(sig)
    v = _model_signing("verify", "key", "--signature", tmp_path / "model.sig",
                       "--public_key", release.with_suffix(".pub"), folder)  # fmt: skip
    assert v.returncode == 0, v.stdout + v.stderr
    (folder / "best.pt").chmod(0o644)
    (folder / "best.pt").write_bytes(b"changed")
    v = _model_signing("verify", "key", "--signature", tmp_path / "model.sig",
                       "--public_key", release.with_suffix(".pub"), folder)  # fmt: skip
    assert v.returncode != 0


def test_hub_next_version_replaces_or_drops_main_model_sig(
    rig: HubRig,
    cas: Cas,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    """An unsigned version never carries an earlier version's model.sig into its tag."""
    release, _ = keys
    pkg = _project(tmp_path)
    _publish(cas, pkg, rig.env, "v1.0", "--key", release)
    _publish(cas, pkg, rig.env, "v1.1")
    files = rig.api.list_repo_files(REPO, revision="weights-v1.1")
    assert "model.sig" not in files
    assert "model.sig" in rig.api.list_repo_files(REPO, revision="weights-v1.0")
    assert Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.1"].signature is None
    # Publishing again (a rerun) changes nothing.
    out = _publish(cas, pkg, rig.env, "v1.0", "--key", release)
    assert "nothing to do" in out, out


def test_hub_companion_tag_for_a_version_signed_after_it_was_published(
    rig: HubRig,
    cas: Cas,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    release, _ = keys
    pkg = _project(tmp_path)
    _publish(cas, pkg, rig.env, "v1.1")
    before = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.1"]
    tags = _tags(rig.api)
    main = rig.api.model_info(REPO).sha

    # A trusted consumer cannot pin it yet: nothing travels with it.
    consumer = _consumer(tmp_path, cas, release.with_suffix(".pub"), rig.env)
    fresh = _fresh(tmp_path, rig.env, "fresh")
    r = cas("pull", f"hf://{REPO}@weights-v1.1", "--name", "det", cwd=consumer, extra_env=fresh)
    line = _one_line(r)
    assert r.returncode == 1 and "det@v1.1 is not signed" in line and "carries no signature" in line
    assert not (tmp_path / "fresh" / "objects").exists() or not _objects(tmp_path / "fresh")

    r = cas("publish", "det", "--version", "v1.1", "--signature-only", "--key", release,
            cwd=pkg, extra_env=rig.env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f": hf://{REPO}@weights-v1.1.sig (model.sig)" in r.stdout.decode()
    after = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.1"]
    # The version's tag, main and the pinned source stay; the signature is pinned.
    now = _tags(rig.api)
    assert now["weights-v1.1"] == tags["weights-v1.1"]
    assert rig.api.model_info(REPO).sha == main
    assert set(now) == {*tags, "weights-v1.1.sig"}
    assert (after.source, after.commit, after.files) == (before.source, before.commit, before.files)
    assert after.signature is not None
    # The companion commit is the version's files plus model.sig, a commit of its own.
    companion = rig.api.list_repo_files(REPO, revision="weights-v1.1.sig")
    assert {"best.pt", "config.json", "model.sig"} <= set(companion)
    assert now["weights-v1.1.sig"] != now["weights-v1.1"]
    refs = rig.api.list_repo_refs(REPO)
    assert [b.name for b in refs.branches] == ["main"]  # the working branch is gone
    sig = _hub_file(rig, tmp_path, "weights-v1.1.sig")
    assert _sha256(sig) == after.signature.digest.sha256

    # Again: the Hub has it; nothing is sent, no tag is made.
    r = cas("publish", "det", "--version", "v1.1", "--signature-only", "--key", release,
            cwd=pkg, extra_env=rig.env)  # fmt: skip
    assert r.returncode == 0 and "already holds the signature" in r.stdout.decode(), r.stderr
    assert _tags(rig.api) == now
    assert Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.1"] == after

    # Now the consumer pins it, and `cas update --dry-run` does not take the tag for a version.
    r = cas("pull", f"hf://{REPO}@weights-v1.1", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 0, r.stderr
    pinned = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.1"]
    assert pinned.signature == after.signature
    assert pinned.source == f"hf://{REPO}@weights-v1.1"
    r = cas("update", "--dry-run", cwd=consumer, extra_env=fresh)
    assert b"v1.1.sig" not in r.stdout + r.stderr, r.stdout + r.stderr

    # model_signing accepts the companion's model.sig over `cas get -o DIR/`.
    folder = tmp_path / "got"
    assert cas("get", "det@v1.1", "-o", f"{folder}/", cwd=consumer, extra_env=fresh).returncode == 0
    (tmp_path / "companion.sig").write_bytes(sig)
    v = _model_signing("verify", "key", "--signature", tmp_path / "companion.sig",
                       "--public_key", release.with_suffix(".pub"), folder)  # fmt: skip
    assert v.returncode == 0, v.stdout + v.stderr


def test_hub_a_version_resigned_by_an_untrusted_key_is_refused_by_sync_and_pull(
    rig: HubRig,
    cas: Cas,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    release, other = keys
    other_fp = _fingerprint(other.with_suffix(".pub"))
    pkg = _project(tmp_path)
    _publish(cas, pkg, rig.env, "v1.0", "--key", release)
    assert cas("trust", "add", release.with_suffix(".pub"), cwd=pkg).returncode == 0
    # Someone re-signs v1.0 with another key and publishes that signature (and the lock).
    r = cas("sign", "det@v1.0", "--key", other, cwd=pkg, extra_env=rig.env)
    assert r.returncode == 0 and b"does not trust key" in r.stderr
    r = cas("publish", "det", "--version", "v1.0", "--signature-only", cwd=pkg, extra_env=rig.env)
    assert r.returncode == 0, r.stderr
    assert "weights-v1.0.sig" in _tags(rig.api)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    (consumer / "cas.lock").write_text((pkg / "cas.lock").read_text())
    fresh = _fresh(tmp_path, rig.env, "fresh")
    r = cas("sync", cwd=consumer, extra_env=fresh)
    line = _one_line(r)
    assert r.returncode == 1 and f"det@v1.0: signed by key {other_fp}" in line, line
    assert "not trusted" in line
    assert not [p for p in _objects(tmp_path / "fresh") if p.stat().st_size > 2000]
    r = cas("pull", f"hf://{REPO}@weights-v1.0", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 1 and f"signed by key {other_fp}" in _one_line(r)

    # A version published signed by the untrusted key only is refused by a pull, before any
    # byte moves; one that travels with a trusted signature too is taken with that one.
    _publish(cas, pkg, rig.env, "v1.1", "--key", other)
    clean = _consumer(tmp_path, cas, release.with_suffix(".pub"), rig.env, "clean")
    empty = _fresh(tmp_path, rig.env, "empty")
    r = cas("pull", f"hf://{REPO}@weights-v1.1", "--name", "det", cwd=clean, extra_env=empty)
    line = _one_line(r)
    # The bundle names its key by model_signing's hint: the sha256 of the key's PEM.
    hint = _sha256(other.with_suffix(".pub").read_bytes())
    assert r.returncode == 1 and f"det@v1.1: signed by the key whose PEM has sha256 {hint}" in line
    assert not (tmp_path / "empty" / "objects").exists() or not _objects(tmp_path / "empty")
    model = Lockfile.load(clean / "cas.lock").models.get("det")
    assert model is None or "v1.1" not in model.versions
    r = cas("pull", f"hf://{REPO}@weights-v1.0", "--name", "det", cwd=clean, extra_env=empty)
    assert r.returncode == 0, r.stderr
    got = Lockfile.load(clean / "cas.lock").models["det"].versions["v1.0"].signature
    assert got is not None and got.signer == _fingerprint(release.with_suffix(".pub"))


def test_a_pull_without_trust_pins_no_signature(
    rig: HubRig, cas: Cas, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    release, _ = keys
    pkg = _project(tmp_path)
    _publish(cas, pkg, rig.env, "v1.0", "--key", release)
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = cas("pull", f"hf://{REPO}@weights-v1.0", "--name", "det", cwd=consumer, extra_env=rig.env)
    assert r.returncode == 0, r.stderr
    assert b"signed by" not in r.stdout
    entry = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.0"]
    assert entry.signature is None and "model.sig" not in entry.files
    # Trusting the signer, the same pull checks and pins the signature on the version.
    assert cas("trust", "add", release.with_suffix(".pub"), cwd=consumer).returncode == 0
    r = cas("pull", f"hf://{REPO}@weights-v1.0", "--name", "det", cwd=consumer, extra_env=rig.env)
    assert r.returncode == 0, r.stderr
    assert Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.0"].signature
    assert cas("verify", "--lock", cwd=consumer, extra_env=rig.env).returncode == 0


# -- OCI registries ----------------------------------------------------------------------------


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    if not have_registry():
        pytest.fail("docker-registry is not installed (.ci/run installs it)")
    with Registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def oci_env(tmp_path: Path) -> dict[str, str]:
    """No docker config of the machine's: the registry is anonymous."""
    return {"DOCKER_CONFIG": str(docker_config(tmp_path / "no-docker-config"))}


def _oci_publish(
    cas: Cas, pkg: Path, env: dict[str, str], url: str, version: str, *extra: str | Path
) -> str:
    _weights(pkg, version)
    r = cas("publish", "det", "--version", version, "--to", url, "--file", "w/best.pt",
            "--file", "w/config.json", *extra, cwd=pkg, extra_env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout.decode()


def _fallback_index(registry: Registry, subject: str) -> dict[str, object]:
    index_type = "application/vnd.oci.image.index.v1+json"
    url = f"http://{registry.host}/v2/lab/det/manifests/sha256-{subject[7:]}"
    status, headers, body = raw("GET", url, headers={"Accept": index_type})
    assert status == 200 and headers["content-type"] == index_type, body
    index: dict[str, object] = json.loads(body)
    return index


def test_oci_round_trip_signature_as_a_referrer_with_the_tag_schema_fallback(
    registry: Registry,
    oci_env: dict[str, str],
    cas: Cas,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    release, other = keys
    signer = _fingerprint(release.with_suffix(".pub"))
    url = registry.url("lab/det")
    pkg = _project(tmp_path)
    out = _oci_publish(cas, pkg, oci_env, url, "v1.0", "--key", release)
    entry = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.0"]
    assert entry.signature is not None and entry.signature.signer == signer
    assert entry.source is not None
    subject = entry.source.rsplit("@", 1)[1]
    assert f"signed by key {signer}; the signature travels with it: a referrer of {url}@" in out
    # The version's manifest is untouched (its tag still names the pinned digest); distribution
    # 2.8 has no referrers API, so the signature is listed under the fallback tag.
    status, body = RawClient(registry.host).manifest("lab/det", "v1.0")
    assert status == 200 and "sha256:" + _sha256(body) == subject
    assert "subject" not in json.loads(body)
    index = _fallback_index(registry, subject)
    [referrer] = index["manifests"]  # type: ignore[misc]
    assert referrer["artifactType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    status, body = RawClient(registry.host).manifest("lab/det", referrer["digest"])
    manifest = json.loads(body)
    assert manifest["subject"]["digest"] == subject
    sig = RawClient(registry.host).blob("lab/det", manifest["layers"][0]["digest"])
    assert _sha256(sig) == entry.signature.digest.sha256
    log = registry.log_path.read_text()
    assert f"GET /v2/lab/det/referrers/{subject}" in log  # asked first, then the fallback

    # A trusted consumer pulls into a fresh store: checked and pinned; sync brings it back.
    consumer = _consumer(tmp_path, cas, release.with_suffix(".pub"), oci_env)
    fresh = _fresh(tmp_path, oci_env, "fresh")
    r = cas("pull", f"{url}:v1.0", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 0, r.stderr
    got = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.0"]
    assert got.signature == entry.signature
    again = _fresh(tmp_path, oci_env, "fresh2")
    r = cas("sync", cwd=consumer, extra_env=again)
    assert r.returncode == 0, r.stderr
    assert cas("verify", "--lock", cwd=consumer, extra_env=again).returncode == 0

    # Interop: model_signing accepts the referrer's bundle over `cas get -o DIR/`.
    folder = tmp_path / "got"
    assert cas("get", "det@v1.0", "-o", f"{folder}/", cwd=consumer, extra_env=again).returncode == 0
    (tmp_path / "referrer.sig").write_bytes(sig)
    v = _model_signing("verify", "key", "--signature", tmp_path / "referrer.sig",
                       "--public_key", release.with_suffix(".pub"), folder)  # fmt: skip
    assert v.returncode == 0, v.stdout + v.stderr

    # Re-signed by an untrusted key (a second referrer), the publisher's lock is refused.
    assert cas("sign", "det@v1.0", "--key", other, cwd=pkg, extra_env=oci_env).returncode == 0
    r = cas("publish", "det", "--version", "v1.0", "--signature-only", cwd=pkg, extra_env=oci_env)
    assert r.returncode == 0, r.stderr
    assert len(_fallback_index(registry, subject)["manifests"]) == 2  # type: ignore[arg-type]
    status, body = RawClient(registry.host).manifest("lab/det", "v1.0")
    assert "sha256:" + _sha256(body) == subject  # the tag did not move
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    lock = Lockfile.load(pkg / "cas.lock")
    lock.trust = Lockfile.load(consumer / "cas.lock").trust
    lock.save(mirror / "cas.lock")
    r = cas("sync", cwd=mirror, extra_env=_fresh(tmp_path, oci_env, "fresh3"))
    other_fp = _fingerprint(other.with_suffix(".pub"))
    assert r.returncode == 1 and f"det@v1.0: signed by key {other_fp}" in _one_line(r)
    # The consumer's pins name the release key's signature: still fetched and accepted.
    r = cas("sync", cwd=consumer, extra_env=_fresh(tmp_path, oci_env, "fresh4"))
    assert r.returncode == 0, r.stderr


def test_oci_a_version_signed_after_it_was_published_gains_a_referrer(
    registry: Registry,
    oci_env: dict[str, str],
    cas: Cas,
    keys: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    release, _ = keys
    url = registry.url("lab/det")
    pkg = _project(tmp_path)
    _oci_publish(cas, pkg, oci_env, url, "v1.1")
    before = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.1"]
    consumer = _consumer(tmp_path, cas, release.with_suffix(".pub"), oci_env)
    fresh = _fresh(tmp_path, oci_env, "fresh")
    r = cas("pull", f"{url}:v1.1", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 1 and "det@v1.1 is not signed" in _one_line(r)
    r = cas("publish", "det", "--version", "v1.1", "--signature-only", "--key", release,
            cwd=pkg, extra_env=oci_env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    after = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.1"]
    assert (after.source, after.files) == (before.source, before.files)
    assert after.signature is not None
    r = cas("pull", f"{url}:v1.1", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 0, r.stderr
    assert Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.1"].signature
    # `cas update` lists no fallback tag as a version.
    r = cas("update", "--dry-run", cwd=consumer, extra_env=fresh)
    assert b"sha256-" not in r.stdout + r.stderr


# -- directories -------------------------------------------------------------------------------


def test_directory_round_trip_signature_beside_the_catalog_entry(
    cas: Cas, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    release, other = keys
    shared = tmp_path / "shared"
    pkg = _project(tmp_path)
    _weights(pkg, "v1.0")
    r = cas("publish", "det", "--version", "v1.0", "--to", shared, "--file", "w/best.pt",
            "--key", release, cwd=pkg)  # fmt: skip
    assert r.returncode == 0, r.stderr
    entry = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.0"]
    assert entry.signature is not None
    sig = shared / "catalog" / "det" / "v1.0.sig"
    assert (shared / "catalog" / "det" / "v1.0.json").is_file()
    assert _sha256(sig.read_bytes()) == entry.signature.digest.sha256
    assert cas("pull", shared, "--name", "det", "--version", "v1.0", cwd=pkg).returncode == 0

    consumer = _consumer(tmp_path, cas, release.with_suffix(".pub"), {})
    fresh = _fresh(tmp_path, {}, "fresh")
    r = cas("pull", shared, "--name", "det", "--version", "v1.0", cwd=consumer, extra_env=fresh)
    assert r.returncode == 0, r.stderr
    got = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.0"]
    assert got.signature == entry.signature
    # On a fresh store `cas path` (Registry.path) fetches the signature with the files.
    r = cas("path", "det@v1.0", cwd=consumer, extra_env=_fresh(tmp_path, {}, "f1"))
    assert r.returncode == 0, r.stderr
    # The objects mode (every pin of the lockfile) and sync bring the signature too.
    assert cas("pull", shared, cwd=consumer, extra_env=_fresh(tmp_path, {}, "f2")).returncode == 0
    r = cas("sync", cwd=consumer, extra_env=_fresh(tmp_path, {}, "f3"))
    assert r.returncode == 0, r.stderr

    # v1.1 pinned, signed after, and shared with `cas push`: its signature goes beside it.
    _weights(pkg, "v1.1")
    r = cas("add", "w/best.pt", "--name", "det", "--version", "v1.1", cwd=pkg)
    assert r.returncode == 0, r.stderr
    assert cas("sign", "det@v1.1", "--key", release, cwd=pkg).returncode == 0
    assert cas("push", shared, cwd=pkg).returncode == 0
    assert (shared / "catalog" / "det" / "v1.1.sig").is_file()
    r = cas("pull", shared, "--name", "det", "--version", "v1.1", cwd=consumer, extra_env=fresh)
    assert r.returncode == 0, r.stderr

    # Re-signed by an untrusted key: a second file (none is changed); refused by sync and pull.
    assert cas("sign", "det@v1.0", "--key", other, cwd=pkg).returncode == 0
    r = cas("publish", "det", "--version", "v1.0", "--signature-only", "--to", shared, cwd=pkg)
    assert r.returncode == 0, r.stderr
    assert (shared / "catalog" / "det" / "v1.0.sig.2").is_file()
    assert _sha256(sig.read_bytes()) == entry.signature.digest.sha256
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    lock = Lockfile.load(pkg / "cas.lock")
    lock.trust = Lockfile.load(consumer / "cas.lock").trust
    lock.save(mirror / "cas.lock")
    other_fp = _fingerprint(other.with_suffix(".pub"))
    r = cas("sync", cwd=mirror, extra_env=_fresh(tmp_path, {}, "f4"))
    assert r.returncode == 1 and f"det@v1.0: signed by key {other_fp}" in _one_line(r)
    r = cas("pull", shared, cwd=mirror, extra_env=_fresh(tmp_path, {}, "f5"))
    assert r.returncode == 1 and f"det@v1.0: signed by key {other_fp}" in _one_line(r)


def test_trusting_a_key_for_one_model_before_its_first_pull(
    cas: Cas, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    """A consumer trusts its publisher's key for one model before anything is pinned (the
    model gets an entry with no versions); the first pull is then checked against it."""
    release, other = keys
    shared = tmp_path / "shared"
    pkg = _project(tmp_path)
    _weights(pkg, "v1.0")
    r = cas("publish", "det", "--version", "v1.0", "--to", shared, "--file", "w/best.pt",
            "--key", release, cwd=pkg)  # fmt: skip
    assert r.returncode == 0, r.stderr
    for key, name, code in ((release, "ok", 0), (other, "no", 1)):
        consumer = tmp_path / name
        consumer.mkdir()
        r = cas("trust", "add", key.with_suffix(".pub"), "--model", "det", cwd=consumer)
        assert r.returncode == 0, r.stderr
        model = Lockfile.load(consumer / "cas.lock").models["det"]
        assert not model.versions and len(model.trust) == 1
        env = _fresh(tmp_path, {}, f"store-{name}")
        r = cas("pull", shared, "--name", "det", "--version", "v1.0", cwd=consumer, extra_env=env)
        assert r.returncode == code, r.stderr
        pinned = Lockfile.load(consumer / "cas.lock").models["det"].versions
        assert ("v1.0" in pinned) == (code == 0), pinned
        if code:
            assert "not trusted" in _one_line(r)


def test_publishing_a_signed_version_to_a_second_remote_with_key_keeps_its_signature(
    cas: Cas, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    # Re-signing made a new signature (ECDSA differs each run) and re-pinned it, so the first
    # remote no longer carried the pinned one: a sync from the version's source failed.
    release, _ = keys
    first, second = tmp_path / "first", tmp_path / "second"
    pkg = _project(tmp_path)
    _weights(pkg, "v1.0")
    for to in (first, second):
        r = cas("publish", "det", "--version", "v1.0", "--to", to, "--file", "w/best.pt",
                "--key", release, cwd=pkg)  # fmt: skip
        assert r.returncode == 0, r.stderr
    entry = Lockfile.load(pkg / "cas.lock").models["det"].versions["v1.0"]
    assert entry.signature is not None
    for to in (first, second):
        sig = to / "catalog" / "det" / "v1.0.sig"
        assert _sha256(sig.read_bytes()) == entry.signature.digest.sha256, to
    r = cas("trust", "add", release.with_suffix(".pub"), cwd=pkg)
    assert r.returncode == 0, r.stderr
    (second / "catalog" / "det" / "v1.0.sig").unlink()  # the mirror's copy cannot help
    r = cas("sync", cwd=pkg, extra_env=_fresh(tmp_path, {}, "fresh"))
    assert r.returncode == 0, r.stderr


# -- plain URLs --------------------------------------------------------------------------------


def test_a_url_carries_no_signature_but_pull_takes_one_with_signature_file(
    cas: Cas, keys: tuple[Path, Path], tmp_path: Path
) -> None:
    if not have_nginx():
        pytest.fail("nginx is not installed (.ci/run installs nginx-light)")
    release, other = keys
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "best.pt").write_bytes(WEIGHTS["v1.0"])
    for key, name in ((release, "good.sig"), (other, "other.sig")):
        s = _model_signing("sign", "key", "--private_key", key,
                           "--signature", tmp_path / name, folder)  # fmt: skip
        assert s.returncode == 0, s.stdout + s.stderr
    with Nginx(tmp_path / "nginx") as web:
        url = web.url("best.pt")
        web.put("best.pt", WEIGHTS["v1.0"])
        consumer = _consumer(tmp_path, cas, release.with_suffix(".pub"), {})
        pull = ("pull", url, "--name", "det", "--version", "v1")
        r = cas(*pull, cwd=consumer)
        line = _one_line(r)
        assert r.returncode == 1 and "det@v1 is not signed" in line and "no signature" in line
        r = cas(*pull, "--signature", tmp_path / "other.sig", cwd=consumer)
        assert r.returncode == 1 and "not trusted" in _one_line(r)
        r = cas(*pull, "--signature", tmp_path / "good.sig", cwd=consumer)
        assert r.returncode == 0, r.stderr
        entry = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1"]
        assert entry.signature is not None
        assert entry.signature.digest.sha256 == _sha256((tmp_path / "good.sig").read_bytes())
        assert cas("verify", "--lock", cwd=consumer).returncode == 0
        # Without trust, a signature file is refused: it could not be checked.
        plain = tmp_path / "plain"
        plain.mkdir()
        r = cas(*pull, "--signature", tmp_path / "good.sig", cwd=plain)
        assert r.returncode == 2 and "trusts no signer" in _one_line(r)
