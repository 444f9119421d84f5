"""OCI registries as a remote, against the real CNCF distribution registry (`docker-registry`),
through the real `cas` CLI in subprocesses. Interop is checked by a raw-HTTP client
(tests/ociregistry.py) that shares no code with modelcas."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from modelcas.errors import UsageError
from modelcas.lockfile import Lockfile
from modelcas.oci.auth import find_credential, parse_challenge
from modelcas.oci.reference import parse
from modelcas.store import Store
from tests.ociregistry import (
    OCI_MANIFEST,
    PASSWORD,
    REFRESH_TOKEN,
    USER,
    CuttingProxy,
    RawClient,
    Registry,
    TokenIssuer,
    basic_entry,
    docker_config,
    have_registry,
    raw,
)
from tests.refs import ref_sha256
from tests.test_store_faults import _assert_store_sound

pytestmark = pytest.mark.skipif(not have_registry(), reason="docker-registry is not installed")

MiB = 1 << 20
SECRETS = (PASSWORD, REFRESH_TOKEN)
MODELPACK_CONFIG_KEYS = {"descriptor", "modelfs", "config"}
MODELPACK_DESCRIPTOR_KEYS = {
    "createdAt", "authors", "family", "name", "docURL", "sourceURL", "datasetsURL", "version",
    "revision", "vendor", "licenses", "title", "description",
}  # fmt: skip
Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    with Registry(tmp_path / "registry") as reg:
        yield reg


@pytest.fixture
def cas(tmp_path: Path) -> Iterator[Run]:
    """`cas` in a subprocess with its own store and an empty docker config."""
    outputs: list[str] = []
    empty = docker_config(tmp_path / "no-docker-config")

    def run(
        *args: str | Path,
        cwd: Path,
        store: Path | None = None,
        env: dict[str, str] | None = None,
        wrap: Callable[[list[str]], list[str]] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR")
        }
        argv = [sys.executable, "-m", "modelcas", *map(str, args)]
        r = subprocess.run(
            wrap(argv) if wrap else argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={
                **base,
                "MODELCAS_HOME": str(store or tmp_path / "store"),
                "CAS_NO_PROGRESS": "1",
                "DOCKER_CONFIG": str(empty),
                "PYTHONDONTWRITEBYTECODE": "1",
                **(env or {}),
            },
        )
        outputs.append(r.stdout + r.stderr)
        return r

    yield run
    for out in outputs:
        for secret in SECRETS:
            assert secret not in out, "a secret leaked into output"


def _project(path: Path, files: dict[str, bytes]) -> Path:
    """A package's source tree: its pyproject names the distribution `requires` is about."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "pyproject.toml").write_text('[project]\nname = "structflo-cser"\n')
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def _bytes(size: int, seed: int) -> bytes:
    return bytes((i * seed + i // 251) % 256 for i in range(size))


def _publish(cas: Run, project: Path, version: str, to: str, *files: str, **kw: Any) -> Any:
    args = ["publish", "cser-detector", "--version", version, "--to", to]
    for f in files:
        args += ["--file", f]
    return cas(*args, cwd=project, **kw)


def _tag_status(registry: Registry, repo: str, tag: str) -> int:
    url = f"http://{registry.host}/v2/{repo}/manifests/{tag}"
    return raw("HEAD", url, headers={"Accept": OCI_MANIFEST})[0]


def _check_modelpack(manifest: dict[str, Any], config: dict[str, Any]) -> None:
    """The ModelPack rules, as the spec states them (docs/spec.md, config-schema.json)."""
    assert manifest["schemaVersion"] == 2
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == "application/vnd.cncf.model.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.model.config.v1+json"
    roles = {
        ".pt": "application/vnd.cncf.model.weight.v1.raw",
        ".json": "application/vnd.cncf.model.weight.config.v1.raw",
        ".md": "application/vnd.cncf.model.doc.v1.raw",
    }
    for layer in manifest["layers"]:
        path = layer["annotations"]["org.cncf.model.filepath"]
        assert layer["mediaType"] == roles[Path(path).suffix], path
    assert set(config) == MODELPACK_CONFIG_KEYS  # all required, additionalProperties false
    assert set(config["descriptor"]) <= MODELPACK_DESCRIPTOR_KEYS
    assert config["descriptor"]["name"]
    assert config["modelfs"] == {
        "type": "layers",
        "diffIds": [layer["digest"] for layer in manifest["layers"]],
    }
    assert isinstance(config["config"], dict)


def test_publish_pull_dedupe_and_no_tag_move(registry: Registry, cas: Run, tmp_path: Path) -> None:
    best, classes = _bytes(3 * MiB, 7), b'{"0": "panel", "1": "structure"}\n'
    pkg = _project(tmp_path / "pkg", {"best.pt": best, "classes.json": classes})
    to = registry.url("lab/cser-detector")

    dry = cas(
        "publish", "cser-detector", "--version", "v1.0", "--to", to, "--file", "best.pt",
        "--file", "classes.json", "--requires", ">=0.1,<1", "--dry-run", cwd=pkg,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "[upload]" in dry.stdout and "will be created" in dry.stdout
    assert (
        not (pkg / "cas.lock").exists() and registry.uploads_of(f"sha256:{ref_sha256(best)}") == 0
    )

    first = cas(
        "publish", "cser-detector", "--version", "v1.0", "--to", to, "--file", "best.pt",
        "--file", "classes.json", "--requires", ">=0.1,<1", cwd=pkg,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr
    entry = Lockfile.load(pkg / "cas.lock").models["cser-detector"].versions["v1.0"]
    assert entry.source is not None
    assert entry.source.startswith(f"oci://{registry.host}/lab/cser-detector@sha256:")
    manifest_digest = entry.source.rpartition("@")[2]
    assert entry.requires == ">=0.1,<1"
    assert entry.files["best.pt"].sha256 == ref_sha256(best)

    # Interop, by a client that is not ours: the tag, the manifest, the config, the bytes.
    rawc = RawClient(registry.host)
    status, body = rawc.manifest("lab/cser-detector", "v1.0")
    assert status == 200 and "sha256:" + hashlib.sha256(body).hexdigest() == manifest_digest
    manifest = json.loads(body)
    config_bytes = rawc.blob("lab/cser-detector", manifest["config"]["digest"])
    assert "sha256:" + ref_sha256(config_bytes) == manifest["config"]["digest"]
    config = json.loads(config_bytes)
    _check_modelpack(manifest, config)
    assert config["descriptor"] == {"name": "cser-detector", "version": "v1.0"}
    by_name = {x["annotations"]["org.cncf.model.filepath"]: x for x in manifest["layers"]}
    for name, data in (("best.pt", best), ("classes.json", classes)):
        layer = by_name[name]
        assert layer["digest"] == f"sha256:{ref_sha256(data)}" and layer["size"] == len(data)
        assert rawc.blob("lab/cser-detector", layer["digest"]) == data

    # A consumer pulls by tag into a fresh store; the lockfile pins the manifest digest.
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    pulled = cas("pull", f"{to}:v1.0", cwd=consumer, store=tmp_path / "store2")
    assert pulled.returncode == 0, pulled.stderr
    lock = Lockfile.load(consumer / "cas.lock")
    got = lock.models["cser-detector"].versions["v1.0"]
    assert got.source == entry.source and got.requires == ">=0.1,<1"
    assert got.files == entry.files
    store2 = Store(tmp_path / "store2")
    assert store2.path(ref_sha256(best)).read_bytes() == best

    # Retrain: classes.json is unchanged, so its blob is not sent again.
    best2 = _bytes(3 * MiB, 11)
    (pkg / "best.pt").write_bytes(best2)
    second = _publish(cas, pkg, "v1.1", to, "best.pt", "classes.json")
    assert second.returncode == 0, second.stderr
    assert "1 already there" in second.stdout
    assert registry.uploads_of(f"sha256:{ref_sha256(classes)}") == 1
    assert registry.uploads_of(f"sha256:{ref_sha256(best)}") == 1
    assert registry.uploads_of(f"sha256:{ref_sha256(best2)}") == 1

    # The same publish again: nothing is sent, nothing changes.
    again = _publish(cas, pkg, "v1.1", to, "best.pt", "classes.json")
    assert again.returncode == 0, again.stderr
    assert "already published" in again.stdout and "nothing to do" in again.stdout
    assert registry.uploads_of(f"sha256:{ref_sha256(best2)}") == 1

    # Somebody else's v1.0 (other bytes, no lockfile) never moves the existing tag.
    other = _project(tmp_path / "other", {"best.pt": _bytes(MiB, 13)})
    moved = _publish(cas, other, "v1.0", to, "best.pt")
    assert moved.returncode == 1, moved.stderr
    assert "refusing to move the tag" in moved.stderr and "Traceback" not in moved.stderr
    assert len(moved.stderr.strip().splitlines()) <= 2
    status, body = rawc.manifest("lab/cser-detector", "v1.0")
    assert "sha256:" + hashlib.sha256(body).hexdigest() == manifest_digest
    assert not (other / "cas.lock").exists()


def test_version_that_cannot_be_a_tag_is_refused(
    registry: Registry, cas: Run, tmp_path: Path
) -> None:
    pkg = _project(tmp_path / "pkg", {"best.pt": b"weights"})
    r = _publish(cas, pkg, "v1.0+cu121", registry.url("lab/m"), "best.pt")
    assert r.returncode == 2
    assert "'+'" in r.stderr and "hint:" in r.stderr and "Traceback" not in r.stderr
    assert registry.requests() == [] or all("/v2/lab" not in q.path for q in registry.requests())


def test_artifact_pushed_by_hand_is_pulled(registry: Registry, cas: Run, tmp_path: Path) -> None:
    rawc = RawClient(registry.host)
    weights, tokenizer = _bytes(2 * MiB, 3), b'{"vocab": {}}'
    lw = rawc.push_blob("vendor/xyz", weights)
    lt = rawc.push_blob("vendor/xyz", tokenizer)
    config = json.dumps(
        {
            "descriptor": {"name": "xyz-3-8b", "version": "3.1"},
            "config": {"format": "safetensors"},
            "modelfs": {"type": "layers", "diffIds": [lw, lt]},
        }
    ).encode()
    cd = rawc.push_blob("vendor/xyz", config)
    digest = rawc.put_manifest(
        "vendor/xyz",
        "3.1",
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.cncf.model.config.v1+json",
                "digest": cd,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.cncf.model.weight.v1.raw",
                    "digest": lw,
                    "size": len(weights),
                    "annotations": {"org.cncf.model.filepath": "model/weights.safetensors"},
                },
                {
                    "mediaType": "application/vnd.cncf.model.weight.config.v1.raw",
                    "digest": lt,
                    "size": len(tokenizer),
                    "annotations": {"org.cncf.model.filepath": "tokenizer.json"},
                },
            ],
        },
    )
    project = tmp_path / "project"
    project.mkdir()
    r = cas("pull", registry.url("vendor/xyz:3.1"), cwd=project)
    assert r.returncode == 0, r.stderr
    lock = Lockfile.load(project / "cas.lock")
    entry = lock.models["xyz-3-8b"].versions["3.1"]
    assert entry.source == registry.url(f"vendor/xyz@{digest}")
    store = Store(tmp_path / "store")
    assert store.path(lw.removeprefix("sha256:")).read_bytes() == weights
    assert set(entry.files) == {"model/weights.safetensors", "tokenizer.json"}

    # By digest, without pinning: the same, and nothing downloaded twice.
    again = cas("pull", registry.url(f"vendor/xyz@{digest}"), "--no-pin", cwd=project)
    assert again.returncode == 0, again.stderr
    assert registry.downloads_of(lw) == 1


def test_corrupt_blob_in_registry_storage_is_refused(
    registry: Registry, cas: Run, tmp_path: Path
) -> None:
    best = _bytes(2 * MiB, 5)
    pkg = _project(tmp_path / "pkg", {"best.pt": best})
    assert _publish(cas, pkg, "v1.0", registry.url("lab/m"), "best.pt").returncode == 0
    data = registry.blob_data(f"sha256:{ref_sha256(best)}")
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # same size, one bit
    data.write_bytes(bytes(blob))

    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = cas("pull", registry.url("lab/m:v1.0"), cwd=consumer, store=tmp_path / "fresh")
    assert r.returncode == 1, r.stderr
    assert f"expected sha256:{ref_sha256(best)}" in r.stderr and "nothing was stored" in r.stderr
    assert "Traceback" not in r.stderr
    fresh = Store(tmp_path / "fresh")
    assert fresh.objects() == [] and list(fresh.tmp_dir.iterdir()) == []
    assert not (consumer / "cas.lock").exists()

    # And `cas sync` from the publisher's lockfile into another store refuses it the same way.
    s = cas("sync", cwd=pkg, store=tmp_path / "fresh2")
    assert s.returncode == 1, s.stderr
    assert "nothing was stored" in s.stderr
    assert Store(tmp_path / "fresh2").objects() == []


def test_basic_auth_with_docker_config_and_helper(cas: Run, tmp_path: Path) -> None:
    with Registry(tmp_path / "registry", auth="htpasswd") as reg:
        pkg = _project(tmp_path / "pkg", {"best.pt": _bytes(MiB, 3)})
        to = reg.url("lab/m")

        anonymous = _publish(cas, pkg, "v1.0", to, "best.pt")
        assert anonymous.returncode == 2
        assert "requires a login" in anonymous.stderr and "docker login" in anonymous.stderr

        wrong = docker_config(tmp_path / "wrong", {reg.host: basic_entry(USER, "nope")})
        denied = _publish(cas, pkg, "v1.0", to, "best.pt", env={"DOCKER_CONFIG": str(wrong)})
        assert denied.returncode == 2 and "authentication failed" in denied.stderr

        good = docker_config(tmp_path / "good", {f"https://{reg.host}/v1/": basic_entry()})
        ok = _publish(cas, pkg, "v1.0", to, "best.pt", env={"DOCKER_CONFIG": str(good)})
        assert ok.returncode == 0, ok.stderr

        # A credential helper, as `credHelpers` names it (docker-credential-NAME on PATH).
        bindir = tmp_path / "bin"
        bindir.mkdir()
        helper = bindir / "docker-credential-labvault"
        helper.write_text(
            "#!/bin/sh\nread host\n"
            f'[ "$host" = "{reg.host}" ] || {{ echo "credentials not found"; exit 1; }}\n'
            f'echo \'{{"ServerURL": "\'$host\'", "Username": "{USER}", "Secret": "{PASSWORD}"}}\'\n'
        )
        helper.chmod(0o755)
        helped = docker_config(tmp_path / "helped", credHelpers={reg.host: "labvault"})
        env = {"DOCKER_CONFIG": str(helped), "PATH": f"{bindir}:{os.environ['PATH']}"}
        consumer = tmp_path / "consumer"
        consumer.mkdir()
        pulled = cas("pull", f"{to}:v1.0", cwd=consumer, store=tmp_path / "s2", env=env)
        assert pulled.returncode == 0, pulled.stderr


def test_bearer_token_flow(cas: Run, tmp_path: Path) -> None:
    with (
        TokenIssuer(tmp_path / "issuer") as issuer,
        Registry(tmp_path / "registry", auth="token", issuer=issuer) as reg,
    ):
        pkg = _project(tmp_path / "pkg", {"best.pt": _bytes(MiB, 9), "extra.bin": b"x" * 1000})
        to = reg.url("lab/m")
        auth_file = tmp_path / "auth.json"
        auth_file.write_text(json.dumps({"auths": {reg.host: basic_entry()}}))
        env = {"REGISTRY_AUTH_FILE": str(auth_file)}

        anonymous = _publish(cas, pkg, "v1.0", to, "best.pt")
        assert anonymous.returncode == 2 and "authentication failed" in anonymous.stderr

        ok = _publish(cas, pkg, "v1.0", to, "best.pt", "extra.bin", env=env)
        assert ok.returncode == 0, ok.stderr
        pushes = [
            e for e in issuer.log if e.get("user") and "repository:lab/m:pull,push" in e["scopes"]
        ]
        assert pushes, issuer.log

        # An identity (refresh) token, as `docker login` files it for OAuth2 registries.
        ident = docker_config(
            tmp_path / "ident", {reg.host: {"auth": "", "identitytoken": REFRESH_TOKEN}}
        )
        consumer = tmp_path / "consumer"
        consumer.mkdir()
        pulled = cas(
            "pull", f"{to}:v1.0", cwd=consumer, store=tmp_path / "s2",
            env={"DOCKER_CONFIG": str(ident)},
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr
        assert any(e["method"] == "POST" and not e.get("refused") for e in issuer.log)


def _kill_at_sendfile(path: Path, when: int, argv: list[str]) -> list[str]:
    """`argv` under strace, killed at the `when`-th sendfile from `path` (only that file's
    syscalls are traced, so other uploads do not count)."""
    return [
        "strace", "-f", "-qq", "-o", "/dev/null", "-P", str(path),
        "-e", "trace=sendfile", "-e", f"inject=sendfile:signal=KILL:when={when}",
        *argv,
    ]  # fmt: skip


def test_kill_during_push_then_rerun_sends_only_missing(
    registry: Registry, cas: Run, tmp_path: Path
) -> None:
    small, big = _bytes(MiB, 3), os.urandom(48 * MiB)
    pkg = _project(tmp_path / "pkg", {"a-small.bin": small, "b-big.bin": big})
    to = registry.url("lab/m")
    store = Store(tmp_path / "store")
    for f in ("a-small.bin", "b-big.bin"):
        store.add_file(pkg / f)  # in the store first, so the object's path is known

    def store_object(data: bytes) -> Path:
        return store.object_path(ref_sha256(data))

    killed = _publish(
        cas, pkg, "v1.0", to, "a-small.bin", "b-big.bin",
        wrap=lambda argv: _kill_at_sendfile(store_object(big), 2, argv),
    )  # fmt: skip
    assert killed.returncode != 0
    # No tag without its manifest; the first blob is complete, the big one is not.
    assert _tag_status(registry, "lab/m", "v1.0") == 404
    assert registry.uploads_of(f"sha256:{ref_sha256(small)}") == 1
    assert registry.uploads_of(f"sha256:{ref_sha256(big)}") == 0
    assert not (pkg / "cas.lock").exists()

    rerun = _publish(cas, pkg, "v1.0", to, "a-small.bin", "b-big.bin")
    assert rerun.returncode == 0, rerun.stderr
    assert "1 already there" in rerun.stdout
    assert registry.uploads_of(f"sha256:{ref_sha256(small)}") == 1
    assert registry.uploads_of(f"sha256:{ref_sha256(big)}") == 1
    assert _tag_status(registry, "lab/m", "v1.0") == 200


def test_kill_during_pull_then_rerun_fetches_only_missing(
    registry: Registry, cas: Run, tmp_path: Path
) -> None:
    small, big = _bytes(MiB, 3), os.urandom(48 * MiB)
    pkg = _project(tmp_path / "pkg", {"a-small.bin": small, "b-big.bin": big})
    to = registry.url("lab/m")
    assert _publish(cas, pkg, "v1.0", to, "a-small.bin", "b-big.bin").returncode == 0
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    fresh = tmp_path / "fresh"
    # The big blob comes over a slow link; SIGKILL once the small object is in and the big
    # one is partly written (strace cannot name that moment: its counts are per thread).
    big_digest = f"sha256:{ref_sha256(big)}"
    with CuttingProxy(registry.port, big_digest, pause=0.004) as proxy:
        env = {
            **os.environ,
            "MODELCAS_HOME": str(fresh),
            "CAS_NO_PROGRESS": "1",
            "DOCKER_CONFIG": str(tmp_path / "no-docker-config"),
        }
        argv = [
            sys.executable,
            "-m",
            "modelcas",
            "pull",
            f"oci://localhost:{proxy.port}/lab/m:v1.0",
        ]
        proc = subprocess.Popen(argv, cwd=consumer, env=env, stderr=subprocess.DEVNULL)
        small_object = fresh / "objects" / "sha256" / ref_sha256(small)[:2] / ref_sha256(small)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            partial = list((fresh / "tmp").glob("*.partial")) if (fresh / "tmp").is_dir() else []
            if small_object.exists() and any(p.stat().st_size >= 8 * MiB for p in partial):
                proc.kill()
                break
            time.sleep(0.002)
        assert proc.wait(30) == -9, "killed during the big download"
    store = Store(fresh)
    assert [o.digest.sha256 for o in store.objects()] == [ref_sha256(small)]
    _assert_store_sound(store)  # the partial download is only in tmp/
    assert not (consumer / "cas.lock").exists()

    rerun = cas("pull", f"{to}:v1.0", cwd=consumer, store=fresh)
    assert rerun.returncode == 0, rerun.stderr
    assert registry.downloads_of(f"sha256:{ref_sha256(small)}") == 1
    assert Store(fresh).path(ref_sha256(big)).read_bytes() == big


def test_sync_tries_source_then_mirrors(registry: Registry, cas: Run, tmp_path: Path) -> None:
    best = _bytes(MiB, 17)
    pkg = _project(tmp_path / "pkg", {"best.pt": best})
    assert _publish(cas, pkg, "v1.0", registry.url("lab/m"), "best.pt").returncode == 0
    lock = Lockfile.load(pkg / "cas.lock")
    entry = lock.models["cser-detector"].versions["v1.0"]
    good = entry.source
    assert good is not None
    # A dead place first (nothing listens there), the registry second.
    entry.source = "oci://127.0.0.1:9/lab/m@" + good.rpartition("@")[2]
    entry.mirrors = [good]
    lock.save()
    text = (pkg / "cas.lock").read_text()
    assert "mirrors:\n          - " in text and Lockfile.loads(text).dumps() == text
    r = cas("sync", cwd=pkg, store=tmp_path / "fresh")
    assert r.returncode == 0, r.stderr
    assert "127.0.0.1:9" in r.stderr  # the failed place is named
    assert Store(tmp_path / "fresh").path(ref_sha256(best)).read_bytes() == best


# -- library pieces ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("oci://127.0.0.1:5000/lab/m:v1.1", ("127.0.0.1", 5000, "lab/m", "v1.1", None)),
        ("oci://ghcr.io/org/team/model", ("ghcr.io", None, "org/team/model", None, None)),
        (
            "oci://[::1]:5000/m@sha256:" + "a" * 64,
            ("::1", 5000, "m", None, "sha256:" + "a" * 64),
        ),
        ("oci://localhost/a.b_c__d-e/f", ("localhost", None, "a.b_c__d-e/f", None, None)),
    ],
)
def test_reference_parsing(text: str, expected: tuple[Any, ...]) -> None:
    ref = parse(text)
    assert (ref.host, ref.port, ref.repository, ref.tag, ref.digest) == expected
    assert parse(ref.url) == ref


@pytest.mark.parametrize(
    "bad",
    [
        "oci://host",
        "oci://host/Upper",
        "oci://host:99999/m",
        "oci://host/m:v1+local",
        "oci://host/m@sha512:abc",
        "hf://org/name",
        "oci://bad_host/m",
    ],
)
def test_bad_references_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        parse(bad)


def test_credentials_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv(
        "DOCKER_CONFIG",
        str(docker_config(tmp_path / "d", {"https://reg.lab:5000/v1/": basic_entry()})),
    )
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    cred = find_credential("reg.lab:5000")
    assert cred is not None and cred.username == USER and cred.secret == PASSWORD
    assert PASSWORD not in repr(cred) and PASSWORD not in str(cred)
    assert find_credential("other.lab") is None
    # REGISTRY_AUTH_FILE comes first, as podman reads it.
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"auths": {"reg.lab:5000": basic_entry("bob", "pw")}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    found = find_credential("reg.lab:5000")
    assert found is not None and found.username == "bob"
    auth.write_text("{not json")
    with pytest.raises(UsageError, match="unreadable credential file"):
        find_credential("reg.lab:5000")


def test_challenge_parsing() -> None:
    c = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",'
        'scope="repository:a/b:pull,push"'
    )
    assert c is not None and c.scheme == "bearer"
    assert (c.realm, c.service, c.scope) == (
        "https://auth.example/token",
        "registry.example",
        "repository:a/b:pull,push",
    )
    basic = parse_challenge('Basic realm="x"')
    assert basic is not None and basic.scheme == "basic"
    assert parse_challenge("Negotiate abc") is None


def test_hub_version_gets_the_registry_as_mirror(
    registry: Registry, cas: Run, tmp_path: Path
) -> None:
    from tests.hubserver import HubServer

    best = _bytes(2 * MiB, 19)
    pkg = _project(tmp_path / "pkg", {"best.pt": best})
    with HubServer(tmp_path / "hub") as hub:
        hf = {
            "HF_ENDPOINT": hub.url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_TOKEN": "hf_test_token_0123456789",
            "HF_HOME": str(tmp_path / "hf-home"),
        }
        first = cas(
            "publish", "cser-detector", "--version", "v1.0", "--repo", "lab/cser-detector",
            "--file", "best.pt", "--requires", ">=0.2,<1", cwd=pkg, env=hf,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        to = registry.url("lab/cser-detector")
        other = cas(
            "publish", "cser-detector", "--version", "v1.0", "--to", to, "--file", "best.pt",
            "--requires", ">=0.3", cwd=pkg, env=hf,
        )  # fmt: skip
        assert other.returncode == 2 and "is pinned with requires" in other.stderr
        second = _publish(cas, pkg, "v1.0", to, "best.pt", env=hf)
        assert second.returncode == 0, second.stderr
        assert "as a mirror: commit it" in second.stdout
    entry = Lockfile.load(pkg / "cas.lock").models["cser-detector"].versions["v1.0"]
    assert entry.source == "hf://lab/cser-detector@weights-v1.0" and entry.commit
    assert entry.requires == ">=0.2,<1"
    _, body = RawClient(registry.host).manifest("lab/cser-detector", "v1.0")
    assert json.loads(body)["annotations"]["io.modelcas.requires"] == ">=0.2,<1"
    assert len(entry.mirrors) == 1
    assert entry.mirrors[0].startswith(registry.url("lab/cser-detector@sha256:"))

    # The Hub is gone: sync takes the bytes from the registry, verified.
    r = cas("sync", cwd=pkg, store=tmp_path / "fresh", env=hf)
    assert r.returncode == 0, r.stderr
    assert "cas: warning:" in r.stderr and "Traceback" not in r.stderr
    assert Store(tmp_path / "fresh").path(ref_sha256(best)).read_bytes() == best


def test_cut_blob_download_resumes_with_range(registry: Registry, cas: Run, tmp_path: Path) -> None:
    big = os.urandom(8 * MiB)
    pkg = _project(tmp_path / "pkg", {"big.bin": big})
    assert _publish(cas, pkg, "v1.0", registry.url("lab/m"), "big.bin").returncode == 0
    digest = f"sha256:{ref_sha256(big)}"
    with CuttingProxy(registry.port, digest, keep=3 * MiB, times=2) as proxy:
        consumer = tmp_path / "consumer"
        consumer.mkdir()
        fresh = tmp_path / "fresh"
        r = cas("pull", f"oci://localhost:{proxy.port}/lab/m:v1.0", cwd=consumer, store=fresh)
        assert r.returncode == 0, r.stderr
    assert len(proxy.ranges) == 3 and proxy.ranges[0] is None
    starts = [int((x or "").removeprefix("bytes=").removesuffix("-")) for x in proxy.ranges[1:]]
    assert 0 < starts[0] < starts[1] < len(big), proxy.ranges
    assert Store(fresh).path(ref_sha256(big), deep=True).read_bytes() == big


def test_verified_load_from_an_oci_reference(
    registry: Registry, cas: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One loader for every source: an oci:// reference is pulled, verified, then loaded."""
    import torch
    from safetensors.torch import save_file

    import modelcas.torch as cas_torch

    weights = tmp_path / "w.safetensors"
    state = {"w": torch.arange(12, dtype=torch.float32).reshape(3, 4)}
    save_file(state, str(weights))
    pkg = _project(tmp_path / "pkg", {"best.safetensors": weights.read_bytes()})
    to = registry.url("lab/loadable")
    r = cas("publish", "m", "--version", "v1", "--to", to, "--file", "best.safetensors", cwd=pkg)
    assert r.returncode == 0, r.stderr
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    store = Store(tmp_path / "loader-store")
    loaded = cas_torch.load_state_dict(f"{to}:v1", store=store)
    assert torch.equal(loaded["w"], state["w"])
    assert store.verify(deep=True) == []


def test_layers_carry_their_modelpack_role_and_the_package(
    registry: Registry, cas: Run, tmp_path: Path
) -> None:
    files = {
        "best.pt": _bytes(MiB, 31),
        "classes.json": b'{"0": "cell"}\n',
        "README.md": b"# det\n",
        "tokenizer.model": b"spm",
    }
    pkg = _project(tmp_path / "pkg", files)
    to = registry.url("lab/roles")
    args = [a for n in files for a in ("--file", n)]
    bad = cas(
        "publish", "det", "--version", "v1.0", *args, "--to", to,
        "--media-type", "best.pt=application/x-nope", cwd=pkg,
    )  # fmt: skip
    assert bad.returncode == 2 and "not a raw ModelPack layer type" in bad.stderr
    r = cas(
        "publish", "det", "--version", "v1.0", *args, "--to", to, "--requires", ">=0.1",
        "--media-type", "tokenizer.model=application/vnd.cncf.model.code.v1.raw", cwd=pkg,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    _, body = RawClient(registry.host).manifest("lab/roles", "v1.0")
    manifest = json.loads(body)
    types = {
        layer["annotations"]["org.cncf.model.filepath"]: layer["mediaType"]
        for layer in manifest["layers"]
    }
    assert types == {
        "best.pt": "application/vnd.cncf.model.weight.v1.raw",
        "classes.json": "application/vnd.cncf.model.weight.config.v1.raw",
        "README.md": "application/vnd.cncf.model.doc.v1.raw",
        "tokenizer.model": "application/vnd.cncf.model.code.v1.raw",
    }
    assert manifest["annotations"]["io.modelcas.package"] == "structflo-cser"
    assert manifest["annotations"]["io.modelcas.requires"] == ">=0.1"


def test_the_oras_sdk_reads_what_cas_writes_and_cas_reads_what_it_writes(
    registry: Registry, cas: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interop with a client we did not write: the oras Python SDK."""
    import oras.client

    best, classes = _bytes(MiB, 41), b'{"0": "cell"}\n'
    pkg = _project(tmp_path / "pkg", {"best.pt": best, "classes.json": classes})
    to = registry.url("lab/interop")
    assert _publish(cas, pkg, "v1.0", to, "best.pt", "classes.json").returncode == 0
    client = oras.client.OrasClient(insecure=True)
    out = tmp_path / "oras-out"
    client.pull(target=f"{registry.host}/lab/interop:v1.0", outdir=str(out))
    assert (out / "best.pt").read_bytes() == best
    assert (out / "classes.json").read_bytes() == classes

    # The other way: an artifact the SDK pushes (ModelPack types) is pulled by cas.
    src = tmp_path / "oras-src"
    src.mkdir()
    weights = _bytes(MiB // 2, 43)
    (src / "model.safetensors").write_bytes(weights)
    digest = "sha256:" + hashlib.sha256(weights).hexdigest()
    config = {
        "descriptor": {"name": "pushed", "version": "v3"},
        "config": {},
        "modelfs": {"type": "layers", "diffIds": [digest]},
    }
    (src / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(src)
    client.push(
        target=f"{registry.host}/lab/pushed:v3",
        files=["model.safetensors:application/vnd.cncf.model.weight.v1.raw"],
        manifest_config="config.json:application/vnd.cncf.model.config.v1+json",
        quiet=True,
    )
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = cas("pull", registry.url("lab/pushed:v3"), cwd=consumer)
    assert r.returncode == 0, r.stderr
    entry = Lockfile.load(consumer / "cas.lock").models["pushed"].versions["v3"]
    assert entry.files["model.safetensors"].sha256 == digest.removeprefix("sha256:")


def test_skopeo_copies_what_cas_publishes_and_cas_pulls_the_copy(
    registry: Registry, cas: Run, tmp_path: Path
) -> None:
    """Interop with another client we did not write: skopeo (containers/image) copies a
    published artifact to an OCI layout, byte-identical, and into another repository, from
    which `cas pull` gets the same pins."""
    if shutil.which("skopeo") is None:
        pytest.fail("skopeo is not installed (.ci/run installs it)")
    best, classes = _bytes(MiB, 51), b'{"0": "cell"}\n'
    pkg = _project(tmp_path / "pkg", {"best.pt": best, "classes.json": classes})
    assert (
        _publish(cas, pkg, "v1.0", registry.url("lab/skopeo"), "best.pt", "classes.json").returncode
        == 0
    )
    src = f"docker://{registry.host}/lab/skopeo:v1.0"
    layout = tmp_path / "layout"
    for dest in (f"oci:{layout}:v1.0", f"docker://{registry.host}/lab/copied:v1.0"):
        r = subprocess.run(
            ["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false", src, dest],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
    for data in (best, classes):
        blob = layout / "blobs" / "sha256" / hashlib.sha256(data).hexdigest()
        assert blob.read_bytes() == data
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    r = cas("pull", registry.url("lab/copied:v1.0"), "--name", "det", cwd=consumer)
    assert r.returncode == 0, r.stderr
    theirs = Lockfile.load(consumer / "cas.lock").models["det"].versions["v1.0"].files
    ours = Lockfile.load(pkg / "cas.lock").models["cser-detector"].versions["v1.0"].files
    assert theirs == ours
