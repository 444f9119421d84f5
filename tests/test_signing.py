"""Signed versions (OpenSSF model_signing format), checked against the real tool both ways.

`python -m model_signing` is the reference: it must accept what `cas sign` writes, and
`cas add --signature` must accept what it writes; a changed byte, a renamed file, an extra
file and another key are refused by both. Trust in the lockfile is checked where versions are
handed out: Registry.path(), the loader, `cas sync`, `cas pull`, `cas verify --lock`.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from modelcas.digest import Digest
from modelcas.errors import LockfileError, SignatureError, UntrustedSignerError, UsageError
from modelcas.lockfile import Lockfile
from modelcas.registry import open_lock
from modelcas.store import Store

Cas = Callable[..., subprocess.CompletedProcess[bytes]]
GOLDEN = Path(__file__).parent / "data" / "golden.lock"
H = "a" * 64
FILES = {"best.pt": b"the detector's weights", "config/classes.json": b'{"classes": 3}'}


def _key(path: Path) -> Path:
    """An EC P-256 key pair as PEM files: PATH (private) and PATH.pub."""
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.with_suffix(".pub").write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def _fingerprint(pub: Path) -> str:
    key = serialization.load_pem_public_key(pub.read_bytes())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _model_signing(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def _pinned(cas: Cas, tmp_path: Path, name: str = "det", version: str = "v1.0") -> None:
    """Pin FILES as name@version (each file added under its pinned name)."""
    src = tmp_path / "src"
    for fname, data in FILES.items():
        (src / fname).parent.mkdir(parents=True, exist_ok=True)
        (src / fname).write_bytes(data)
    lock = Lockfile()
    store = Store(tmp_path / "store")
    files = {fname: store.add_file(src / fname).info.digest for fname in FILES}
    path = tmp_path / "cas.lock"
    if path.exists():
        lock = Lockfile.load(path)
    lock.pin(name, version, files)
    lock.save(path)


def _folder(tmp_path: Path, name: str = "model") -> Path:
    """The folder a version's files form: each pinned file under its pinned name."""
    folder = tmp_path / name
    for fname, data in FILES.items():
        (folder / fname).parent.mkdir(parents=True, exist_ok=True)
        (folder / fname).write_bytes(data)
    return folder


def _lock_text(tmp_path: Path) -> str:
    return (tmp_path / "cas.lock").read_text()


def _one_line(r: subprocess.CompletedProcess[bytes]) -> str:
    err = r.stderr.decode()
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("  hint:")]
    assert len(lines) == 1, err
    return lines[0]


# -- the lockfile schema -------------------------------------------------------------------


def test_golden_signature_and_trust_round_trip() -> None:
    lock = Lockfile.load(GOLDEN)
    assert lock.dumps() == GOLDEN.read_text()
    [top] = lock.trust
    assert top.key == "sha256:7dbe89271c41e3002a03bb35f42de82ac6c6b10c59c36c64795f07059cf81fa6"
    model = lock.models["cser-detector"]
    assert [t.key or t.certificate for t in model.trust] == [top.key, "release@lab.example"]
    assert lock.trusted("cser-detector") == model.trust, "a model's list replaces the file's"
    assert lock.trusted("2d-unet") == [top]
    sig = model.versions["v1.10"].signature
    assert sig is not None and sig.signer == top.key and sig.digest.size == 1595
    assert sig.digest.sha256 in lock.sha256s(), "gc keeps pinned signatures"


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda t: t.replace("7dbe89271c41e3002a03", "8dbe89271c41e3002a03", 1), "fingerprint"),
        (lambda t: t.replace("signer: ", "signer: sha1:", 1), "signature.signer"),
        (
            lambda t: t.replace("        root:", f'        key: "sha256:{H}"\n        root:'),
            "trust",
        ),
        (lambda t: t.replace("        root:", "        rooot:", 1), "trust[1]"),
        (lambda t: t.replace("package: structflo-cser\n", "package: x\ntrust: []\n"), "trust"),
    ],
)
def test_bad_signature_and_trust_entries_are_refused(
    edit: Callable[[str], str], where: str
) -> None:
    with pytest.raises(LockfileError, match=where.replace("[", r"\[").replace("]", r"\]")):
        Lockfile.loads(edit(GOLDEN.read_text()))


def test_a_signature_survives_a_repin_of_the_same_files_only() -> None:
    lock = Lockfile.load(GOLDEN)
    entry = lock.models["cser-detector"].versions["v1.10"]
    assert not lock.pin(
        "cser-detector", "v1.10", dict(entry.files), requires=entry.requires,
        source=entry.source, commit=entry.commit,
    )  # fmt: skip
    assert lock.models["cser-detector"].versions["v1.10"].signature is not None
    other = {"best.pt": Digest("a" * 64, 1)}
    lock.pin("cser-detector", "v1.10", other, force=True)
    assert lock.models["cser-detector"].versions["v1.10"].signature is None


# -- cas sign, checked by model_signing ----------------------------------------------------


def test_model_signing_verifies_what_cas_sign_signed(cas: Cas, tmp_path: Path) -> None:
    _pinned(cas, tmp_path)
    key, other = _key(tmp_path / "release.pem"), _key(tmp_path / "other.pem")
    r = cas("sign", "det@v1.0", "--key", key, "-o", "model.sig")
    assert r.returncode == 0, r.stderr
    assert f"with key {_fingerprint(key.with_suffix('.pub'))}" in r.stdout.decode()
    entry = Lockfile.load(tmp_path / "cas.lock").models["det"].versions["v1.0"]
    assert entry.signature is not None
    assert entry.signature.signer == _fingerprint(key.with_suffix(".pub"))
    data = (tmp_path / "model.sig").read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry.signature.digest.sha256
    assert Store(tmp_path / "store").has(entry.signature.digest.sha256)

    folder = _folder(tmp_path)
    ok = _model_signing("verify", "key", "--signature", tmp_path / "model.sig",
                        "--public_key", key.with_suffix(".pub"), folder)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    # Beside the files, as `model_signing sign` leaves it, it is ignored as its own signature.
    shutil.copy(tmp_path / "model.sig", folder / "model.sig")
    ok = _model_signing("verify", "key", "--signature", folder / "model.sig",
                        "--public_key", key.with_suffix(".pub"), folder)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    (folder / "model.sig").unlink()

    def refused(folder: Path, pub: Path) -> None:
        r = _model_signing("verify", "key", "--signature", tmp_path / "model.sig",
                           "--public_key", pub, folder)  # fmt: skip
        assert r.returncode != 0, f"model_signing accepted {folder}"

    refused(folder, other.with_suffix(".pub"))
    for change in ("byte", "rename", "extra"):
        copy = tmp_path / f"changed-{change}"
        shutil.copytree(folder, copy)
        if change == "byte":
            data = bytearray((copy / "best.pt").read_bytes())
            data[3] ^= 1
            (copy / "best.pt").write_bytes(bytes(data))
        elif change == "rename":
            (copy / "best.pt").rename(copy / "best2.pt")
        else:
            (copy / "notes.txt").write_text("extra")
        refused(copy, key.with_suffix(".pub"))


def test_cas_verify_public_key(cas: Cas, tmp_path: Path) -> None:
    _pinned(cas, tmp_path)
    key, other = _key(tmp_path / "release.pem"), _key(tmp_path / "other.pem")
    assert cas("sign", "det@v1.0", "--key", key).returncode == 0
    r = cas("verify", "det@v1.0", "--public-key", key.with_suffix(".pub"))
    assert r.returncode == 0, r.stderr
    assert "covers exactly its 2 pinned file(s)" in r.stdout.decode()
    r = cas("--json", "verify", "det", "--public-key", key.with_suffix(".pub"))
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cas.verify/1" and doc["mode"] == "signature" and doc["ok"]

    r = cas("verify", "det@v1.0", "--public-key", other.with_suffix(".pub"))
    assert r.returncode == 1
    assert "det@v1.0" in _one_line(r) and "not trusted" in _one_line(r)
    # The key came from --public-key, not the lockfile: no `cas trust add` hint.
    assert "not the key in" in _one_line(r) and b"cas trust" not in r.stderr, r.stderr

    good = _lock_text(tmp_path)
    sha = hashlib.sha256(FILES["best.pt"]).hexdigest()
    # A changed file: the pin names other bytes (present in the store) than were signed.
    store = Store(tmp_path / "store")
    changed = store.add_bytes(b"other weights").digest
    lock = Lockfile.loads(good, tmp_path / "cas.lock")
    lock.models["det"].versions["v1.0"].files["best.pt"] = changed
    lock.save()
    r = cas("verify", "det@v1.0", "--public-key", key.with_suffix(".pub"))
    assert r.returncode == 1 and "'best.pt' differs" in _one_line(r)

    # A missing file, and an extra file, in the pin.
    lock = Lockfile.loads(good, tmp_path / "cas.lock")
    entry = lock.models["det"].versions["v1.0"]
    del entry.files["config/classes.json"]
    lock.save()
    r = cas("verify", "det@v1.0", "--public-key", key.with_suffix(".pub"))
    assert r.returncode == 1 and "does not cover" not in _one_line(r)
    assert "'config/classes.json'" in _one_line(r)
    lock = Lockfile.loads(good, tmp_path / "cas.lock")
    lock.models["det"].versions["v1.0"].files["notes.txt"] = changed
    lock.save()
    r = cas("verify", "det@v1.0", "--public-key", key.with_suffix(".pub"))
    assert r.returncode == 1 and "does not cover 'notes.txt'" in _one_line(r)

    # A stored byte that changed: the bytes fail before the signature is read.
    (tmp_path / "cas.lock").write_text(good)
    obj = store.info(sha).path
    obj.chmod(0o644)
    obj.write_bytes(FILES["best.pt"][:-1] + b"X")
    r = cas("verify", "det@v1.0", "--public-key", key.with_suffix(".pub"))
    assert r.returncode == 1 and "CORRUPT det@v1.0 best.pt" in r.stdout.decode()


def test_cas_verify_takes_a_signature_file_from_model_signing(cas: Cas, tmp_path: Path) -> None:
    _pinned(cas, tmp_path)
    key, other = _key(tmp_path / "release.pem"), _key(tmp_path / "other.pem")
    folder = _folder(tmp_path)
    for k, out in ((key, "ms.sig"), (other, "other.sig")):
        signed = _model_signing("sign", "key", "--private_key", k, "--signature",
                                tmp_path / out, folder)  # fmt: skip
        assert signed.returncode == 0, signed.stderr
    pub = key.with_suffix(".pub")
    r = cas("verify", "det@v1.0", "--public-key", pub, "--signature", "ms.sig")
    assert r.returncode == 0, r.stderr
    r = cas("verify", "det@v1.0", "--public-key", pub, "--signature", "other.sig")
    assert r.returncode == 1


# -- cas add DIR --signature, of what model_signing signed ---------------------------------


def test_cas_add_pins_a_folder_model_signing_signed(cas: Cas, tmp_path: Path) -> None:
    key = _key(tmp_path / "release.pem")
    folder = _folder(tmp_path)
    (folder / ".gitattributes").write_text("*.pt filter=lfs\n")  # ignored by both tools
    signed = _model_signing("sign", "key", "--private_key", key, "--signature",
                            folder / "model.sig", folder)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    r = cas("add", folder, "--signature", folder / "model.sig", "--public-key",
            key.with_suffix(".pub"), "--name", "det", "--version", "v2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert f"signed by key {_fingerprint(key.with_suffix('.pub'))}" in r.stdout.decode()
    entry = Lockfile.load(tmp_path / "cas.lock").models["det"].versions["v2"]
    assert sorted(entry.files) == sorted(FILES)
    assert entry.signature is not None
    assert (
        entry.signature.digest.sha256
        == hashlib.sha256((folder / "model.sig").read_bytes()).hexdigest()
    )
    assert cas("verify", "det@v2", "--public-key", key.with_suffix(".pub")).returncode == 0


def test_cas_add_signature_under_an_equal_spelling_of_a_pinned_version(
    cas: Cas, tmp_path: Path
) -> None:
    """PEP 440: --version 2.0 is the pinned v2; the signature is recorded on that entry (a
    lookup by the new spelling crashed: 'unexpected error')."""
    key = _key(tmp_path / "release.pem")
    folder = _folder(tmp_path)
    signed = _model_signing("sign", "key", "--private_key", key, "--signature",
                            tmp_path / "model.sig", folder)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    assert cas("add", folder, "--name", "det", "--version", "v2").returncode == 0
    r = cas("add", folder, "--signature", tmp_path / "model.sig", "--public-key",
            key.with_suffix(".pub"), "--name", "det", "--version", "2.0")  # fmt: skip
    assert r.returncode == 0, r.stderr
    model = Lockfile.load(tmp_path / "cas.lock").models["det"]
    assert list(model.versions) == ["v2"] and model.versions["v2"].signature is not None


@pytest.mark.parametrize("change", ["byte", "rename", "extra", "stray-sig", "key"])
def test_cas_add_pins_nothing_unless_the_signature_covers_exactly_the_folder(
    cas: Cas, tmp_path: Path, change: str
) -> None:
    key, other = _key(tmp_path / "release.pem"), _key(tmp_path / "other.pem")
    folder = _folder(tmp_path)
    signed = _model_signing("sign", "key", "--private_key", key, "--signature",
                            tmp_path / "model.sig", folder)  # fmt: skip
    assert signed.returncode == 0, signed.stderr
    pub = key.with_suffix(".pub")
    if change == "byte":
        data = bytearray((folder / "best.pt").read_bytes())
        data[0] ^= 1
        (folder / "best.pt").write_bytes(bytes(data))
    elif change == "rename":
        (folder / "best.pt").rename(folder / "best2.pt")
    elif change == "extra":
        (folder / "README.md").write_text("not signed")
    elif change == "stray-sig":
        # Named like a signature, but the signature is elsewhere: an unsigned file to both.
        (folder / "model.sig").write_text("not the signature")
    else:
        pub = other.with_suffix(".pub")
    theirs = _model_signing("verify", "key", "--signature", tmp_path / "model.sig",
                            "--public_key", pub, folder)  # fmt: skip
    assert theirs.returncode != 0, "model_signing refuses it too"
    (tmp_path / "cas.lock").write_text("lock-version: 1\nmodels: {}\n")
    before = _lock_text(tmp_path)
    r = cas("add", folder, "--signature", tmp_path / "model.sig", "--public-key", pub,
            "--name", "det", "--version", "v2")  # fmt: skip
    assert r.returncode == 1, r.stderr
    assert "pinned" not in r.stdout.decode()
    _one_line(r)
    assert _lock_text(tmp_path) == before


# -- the PKI method --------------------------------------------------------------------------


def _certificates(tmp_path: Path, identity: str) -> tuple[Path, Path, Path]:
    """A root CA and a signing certificate for ``identity``: (root.pem, leaf.pem, leaf key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Lab root")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = _key(tmp_path / "leaf.pem")
    leaf_key = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(leaf_key, ec.EllipticCurvePrivateKey)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "release")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(2)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(identity)]), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    root_pem, leaf_pem = tmp_path / "root.pem", tmp_path / "leaf-cert.pem"
    root_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    return root_pem, leaf_pem, key


def test_certificate_signatures_and_identity_trust(cas: Cas, tmp_path: Path) -> None:
    _pinned(cas, tmp_path)
    root, leaf, key = _certificates(tmp_path, "release@lab.example")
    r = cas("sign", "det@v1.0", "--key", key, "--certificate", leaf,
            "--certificate-chain", root, "-o", "model.sig")  # fmt: skip
    assert r.returncode == 0, r.stderr
    ok = _model_signing("verify", "certificate", "--signature", tmp_path / "model.sig",
                        "--certificate_chain", root, _folder(tmp_path))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    r = cas("trust", "add", "--certificate", "release@lab.example", "--root", root,
            "--model", "det")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert cas("verify", "--lock").returncode == 0
    assert (
        open_lock(tmp_path / "cas.lock", store=Store(tmp_path / "store"))
        .path("det", file="best.pt")
        .read_bytes()
        == FILES["best.pt"]
    )
    # The same root, another identity: refused.
    assert cas("trust", "rm", "release@lab.example", "--model", "det").returncode == 0
    r = cas("trust", "add", "--certificate", "ops@lab.example", "--root", root, "--model", "det")
    assert r.returncode == 0
    r = cas("verify", "--lock")
    assert r.returncode == 1 and "release@lab.example" in r.stderr.decode()


# -- trust: fail closed wherever a version is handed out ------------------------------------


def test_trust_refuses_unsigned_and_untrusted_versions_everywhere(cas: Cas, tmp_path: Path) -> None:
    _pinned(cas, tmp_path)
    key, other = _key(tmp_path / "release.pem"), _key(tmp_path / "other.pem")
    assert cas("sign", "det@v1.0", "--key", key).returncode == 0
    assert cas("trust", "add", key.with_suffix(".pub")).returncode == 0
    store = Store(tmp_path / "store")
    lock_path = tmp_path / "cas.lock"

    def path() -> Path:
        return open_lock(lock_path, store=store).path("det", "v1.0", "best.pt")

    assert path().read_bytes() == FILES["best.pt"]
    assert cas("sync").returncode == 0
    assert cas("verify", "--lock").returncode == 0

    # Re-signed by a key the lockfile does not trust: refused, naming model, version, signer.
    assert cas("sign", "det@v1.0", "--key", other).returncode == 0
    signer = _fingerprint(other.with_suffix(".pub"))
    for args in (("sync",), ("verify", "--lock"), ("path", "det@v1.0", "--file", "best.pt")):
        r = cas(*args)
        assert r.returncode == 1, (args, r.stderr)
        line = _one_line(r)
        assert "det@v1.0" in line and signer in line, line
    with pytest.raises(UntrustedSignerError, match=signer):
        path()
    from modelcas.loader import resolve

    with pytest.raises(UntrustedSignerError, match=r"det@v1\.0"):
        resolve("det@v1.0", lock=lock_path, store=store, file="best.pt")

    # An unsigned version of a trusted model: refused the same way.
    _pinned(cas, tmp_path, version="v1.1")
    r = cas("path", "det@v1.1", "--file", "best.pt")
    assert r.returncode == 1 and "det@v1.1 is not signed" in _one_line(r)

    # A signature whose bytes were changed in the store is refused, not trusted.
    assert cas("sign", "det@v1.0", "--key", key).returncode == 0
    sig = Lockfile.load(lock_path).models["det"].versions["v1.0"].signature
    assert sig is not None
    obj = store.info(sig.digest.sha256).path
    obj.chmod(0o644)
    doc = json.loads(obj.read_bytes())
    doc["dsseEnvelope"]["signatures"][0]["sig"] = "MEUCIQ" + "A" * 90
    obj.write_bytes(json.dumps(doc).encode()[: sig.digest.size].ljust(sig.digest.size))
    with pytest.raises(SignatureError, match="corrupt"):
        path()


def test_a_lockfile_naming_a_trusted_signer_for_another_key_s_signature_names_the_real_one(
    cas: Cas, tmp_path: Path
) -> None:
    # The refusal named the signer the lockfile claims (a trusted one: "signed by key K, which
    # is not trusted (trusted: key K)"), not the key that made the signature.
    _pinned(cas, tmp_path)
    key, other = _key(tmp_path / "release.pem"), _key(tmp_path / "other.pem")
    assert cas("sign", "det@v1.0", "--key", other).returncode == 0
    assert cas("trust", "add", key.with_suffix(".pub")).returncode == 0
    trusted = _fingerprint(key.with_suffix(".pub"))
    lock_path = tmp_path / "cas.lock"
    text = lock_path.read_text()
    lock_path.write_text(text.replace(_fingerprint(other.with_suffix(".pub")), trusted))
    hint = hashlib.sha256((tmp_path / "other.pub").read_bytes()).hexdigest()
    for args in (("sync",), ("verify", "--lock"), ("path", "det@v1.0", "--file", "best.pt")):
        r = cas(*args)
        assert r.returncode == 1, (args, r.stderr)
        line = _one_line(r)
        assert "det@v1.0" in line and hint in line and f"signed by key {trusted}," not in line


def test_a_trusted_model_is_not_pulled_from_a_directory_remote_unsigned(
    cas: Cas, tmp_path: Path
) -> None:
    _pinned(cas, tmp_path)
    key = _key(tmp_path / "release.pem")
    assert cas("trust", "add", key.with_suffix(".pub"), "--model", "det").returncode == 0
    assert cas("push", tmp_path / "shared").returncode == 0
    fresh = {"MODELCAS_HOME": str(tmp_path / "fresh")}
    r = cas("pull", tmp_path / "shared", extra_env=fresh)
    assert r.returncode == 1 and "det@v1.0 is not signed" in _one_line(r)
    assert not [p for p in (tmp_path / "fresh" / "objects").rglob("*") if p.is_file()]


# -- the edges ---------------------------------------------------------------------------------


def test_keyless_signing_is_one_line(cas: Cas, tmp_path: Path) -> None:
    _pinned(cas, tmp_path)
    r = cas("sign", "det@v1.0")
    assert r.returncode == 2
    assert _one_line(r) == (
        "cas: error: keyless signing needs network access to Sigstore; use --key or --certificate"
    )


def test_without_the_extra_signing_and_trust_fail_closed_in_one_line(
    cas: Cas, tmp_path: Path
) -> None:
    _pinned(cas, tmp_path)
    key = _key(tmp_path / "release.pem")
    assert cas("sign", "det@v1.0", "--key", key).returncode == 0
    assert cas("trust", "add", key.with_suffix(".pub")).returncode == 0
    hide = "import sys; sys.modules['model_signing'] = None; "
    for args in (["sign", "det@v1.0", "--key", str(key)], ["verify", "--lock"]):
        code = f"{hide}from modelcas.cli import main; sys.exit(main({args!r}))"
        r = subprocess.run(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            capture_output=True,
            env={"MODELCAS_HOME": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"},
            check=False,
        )
        assert r.returncode == 2, r.stderr
        assert "pip install 'modelcas[sign]'" in r.stderr.decode()
        _one_line(r)


def test_a_pinned_file_model_signing_would_skip_cannot_be_signed(cas: Cas, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    lock = Lockfile(path=tmp_path / "cas.lock")
    lock.pin("m", "v1", {".gitattributes": store.add_bytes(b"x").digest})
    lock.save()
    r = cas("sign", "m@v1", "--key", _key(tmp_path / "k.pem"))
    assert r.returncode == 2 and "'.gitattributes'" in _one_line(r)


def test_only_the_signing_package_imports_the_signing_libraries() -> None:
    import ast

    package = Path(__file__).resolve().parent.parent / "python" / "modelcas"
    wrong = []
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for n in names:
                if n.split(".")[0] in ("model_signing", "sigstore", "cryptography", "OpenSSL"):
                    wrong.append(f"{path.relative_to(package)} imports {n}")
        text = path.read_text()
        if "import_module(" in text and "model_signing" in text and path.name != "_lib.py":
            wrong.append(f"{path.relative_to(package)} loads model_signing")
    assert wrong == []


def test_a_changed_statement_or_a_malformed_signature_is_refused(cas: Cas, tmp_path: Path) -> None:
    import base64

    _pinned(cas, tmp_path)
    key = _key(tmp_path / "release.pem")
    assert cas("sign", "det@v1.0", "--key", key, "-o", "good.sig").returncode == 0
    doc = json.loads((tmp_path / "good.sig").read_bytes())
    statement = json.loads(base64.b64decode(doc["dsseEnvelope"]["payload"]))
    statement["predicate"]["resources"][0]["digest"] = H  # what an attacker would pin instead
    doc["dsseEnvelope"]["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    (tmp_path / "changed.sig").write_text(json.dumps(doc))
    (tmp_path / "junk.sig").write_bytes(b"\x00not json")
    pub = key.with_suffix(".pub")
    for sig, why in (("changed.sig", "not a valid signature"), ("junk.sig", "not a model_sign")):
        r = cas("verify", "det@v1.0", "--public-key", pub, "--signature", sig)
        assert r.returncode == 1 and why in _one_line(r), r.stderr
    changed = _model_signing("verify", "key", "--signature", tmp_path / "changed.sig",
                             "--public_key", pub, _folder(tmp_path))  # fmt: skip
    assert changed.returncode != 0, "model_signing agrees"


def test_gc_keeps_pinned_signatures_and_lock_show_names_the_signer(
    cas: Cas, tmp_path: Path
) -> None:
    _pinned(cas, tmp_path)
    key = _key(tmp_path / "release.pem")
    assert cas("sign", "det@v1.0", "--key", key).returncode == 0
    assert cas("sign", "det@v1.0", "--key", key).returncode == 0  # the first one is garbage now
    assert cas("trust", "add", key.with_suffix(".pub")).returncode == 0
    r = cas("gc", "--grace", "0")
    assert r.returncode == 0, r.stderr
    sig = Lockfile.load(tmp_path / "cas.lock").models["det"].versions["v1.0"].signature
    assert sig is not None and Store(tmp_path / "store").has(sig.digest.sha256)
    assert cas("verify", "--lock").returncode == 0
    shown = cas("lock", "show", "det@v1.0").stdout.decode()
    assert f"signed:   by key {sig.signer} (sha256:{sig.digest.sha256})" in shown
    doc = json.loads(cas("--json", "lock", "show", "det@v1.0").stdout)
    assert doc["versions"]["v1.0"]["signature"]["signer"] == sig.signer


def test_a_hub_pull_of_a_trusted_model_fails_closed_until_its_signature_travels(
    hub: object, hf_env: dict[str, str], cas: Cas, tmp_path: Path
) -> None:
    repo = "lab/det"
    pkg = tmp_path / "pkg"
    (pkg / "w").mkdir(parents=True)
    (pkg / "pyproject.toml").write_text('[project]\nname = "det-pkg"\nversion = "0.1.0"\n')
    key = _key(tmp_path / "release.pem")
    for version, data in (("v1.0", b"first weights"), ("v1.1", b"second weights")):
        (pkg / "w" / "best.pt").write_bytes(data)
        r = cas("publish", "det", "--version", version, "--repo", repo, "--file", "w/best.pt",
                cwd=pkg, extra_env=hf_env)  # fmt: skip
        assert r.returncode == 0, r.stderr
    assert cas("sign", "det@v1.0", "--key", key, cwd=pkg).returncode == 0
    assert cas("trust", "add", key.with_suffix(".pub"), cwd=pkg).returncode == 0
    consumer = tmp_path / "consumer"
    consumer.mkdir()
    lock = Lockfile.load(pkg / "cas.lock")
    lock.unpin("det", "v1.1")
    lock.save(consumer / "cas.lock")
    fresh = {**hf_env, "MODELCAS_HOME": str(tmp_path / "fresh")}
    # v1.0 is pinned with its signature, but the signature's bytes are not here yet.
    r = cas("pull", f"hf://{repo}@weights-v1.0", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 1 and "its signature" in _one_line(r) and "det@v1.0" in _one_line(r)
    # v1.1 is not pinned: it would arrive unsigned.
    r = cas("pull", f"hf://{repo}@weights-v1.1", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 1 and "det@v1.1 is not signed" in _one_line(r)
    assert "v1.1" not in Lockfile.load(consumer / "cas.lock").models["det"].versions
    # In the publisher's store the signature is present: its pull is checked and passes.
    r = cas("pull", f"hf://{repo}@weights-v1.0", "--name", "det", cwd=pkg, extra_env=hf_env)
    assert r.returncode == 0, r.stderr
    # Once the publisher sends the signature (a companion tag), the consumer's pull passes.
    r = cas("publish", "det", "--version", "v1.0", "--signature-only", cwd=pkg, extra_env=hf_env)
    assert r.returncode == 0, r.stderr
    r = cas("pull", f"hf://{repo}@weights-v1.0", "--name", "det", cwd=consumer, extra_env=fresh)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("kind", ["garbage", "empty", "rsa", "p224"])
def test_a_trusted_key_that_cannot_check_signatures_is_one_line_never_a_crash(
    cas: Cas, tmp_path: Path, kind: str
) -> None:
    # A hand-edited trust entry whose fingerprint matches its bytes, but whose bytes are no
    # key this format signs with: the check cannot run, so it fails closed in one line.
    import base64

    from cryptography.hazmat.primitives.asymmetric import rsa

    from modelcas.signing import verify_signature
    from modelcas.signing.trust import stored_signature

    _pinned(cas, tmp_path)
    key = _key(tmp_path / "release.pem")
    assert cas("sign", "det@v1.0", "--key", key).returncode == 0
    assert cas("trust", "add", key.with_suffix(".pub")).returncode == 0
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = {
        "garbage": b"garbage",
        "empty": b"",
        "rsa": rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, spki),
        "p224": ec.generate_private_key(ec.SECP224R1())
        .public_key()
        .public_bytes(serialization.Encoding.DER, spki),
    }[kind]
    fingerprint = "sha256:" + hashlib.sha256(der).hexdigest()
    lock_path = tmp_path / "cas.lock"
    text = lock_path.read_text().replace(
        "trust:\n",
        f'trust:\n  - key: "{fingerprint}"\n    public-key: "{base64.b64encode(der).decode()}"\n',
        1,
    )
    lock_path.write_text(text)
    lock = Lockfile.load(lock_path)
    entry = lock.models["det"].versions["v1.0"]
    assert entry.signature is not None
    data = stored_signature(Store(tmp_path / "store"), entry.signature, "det@v1.0")
    # model_signing writes a key hint; a signature without one is tried against every key.
    doc = json.loads(data)
    del doc["verificationMaterial"]["publicKey"]["hint"]
    for sig in (data, json.dumps(doc).encode()):
        with pytest.raises(LockfileError, match=fingerprint):
            verify_signature(sig, entry.files, lock.trust, "det@v1.0")
    r = cas("path", "det@v1.0", "--file", "best.pt")
    assert r.returncode == 2 and fingerprint in _one_line(r), r.stderr


@pytest.mark.parametrize(
    ("where", "value"),
    [
        ("hash_type", ["sha256"]),
        ("hash_type", 7),
        ("ignore_paths", 5),
        ("ignore_paths", [["model.sig"]]),
        ("algorithm", None),
    ],
)
def test_a_validly_signed_statement_of_odd_shape_is_refused_in_one_line(
    cas: Cas, tmp_path: Path, where: str, value: object
) -> None:
    # Signed by the trusted key (another tool, or a bug): still untrusted input in its shape.
    import base64

    _pinned(cas, tmp_path)
    key = _key(tmp_path / "release.pem")
    assert cas("sign", "det@v1.0", "--key", key, "-o", "good.sig").returncode == 0
    doc = json.loads((tmp_path / "good.sig").read_bytes())
    envelope = doc["dsseEnvelope"]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    if where == "algorithm":
        for r in statement["predicate"]["resources"]:
            r["algorithm"] = value
    else:
        statement["predicate"]["serialization"][where] = value
    payload = json.dumps(statement).encode()
    kind = envelope["payloadType"].encode()
    pae = b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)
    private = serialization.load_pem_private_key(key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    sig = private.sign(pae, ec.ECDSA(hashes.SHA256()))
    envelope["payload"] = base64.b64encode(payload).decode()
    envelope["signatures"][0]["sig"] = base64.b64encode(sig).decode()
    (tmp_path / "odd.sig").write_text(json.dumps(doc))
    r = cas("verify", "det@v1.0", "--public-key", key.with_suffix(".pub"), "--signature", "odd.sig")
    assert r.returncode == 1, r.stderr
    assert "not model_signing's" in _one_line(r) or "modelcas checks" in _one_line(r), r.stderr


def test_signing_under_a_trusted_certificate_identity_warns_of_nothing(
    cas: Cas, tmp_path: Path
) -> None:
    _pinned(cas, tmp_path)
    root, leaf, key = _certificates(tmp_path, "release@lab.example")
    r = cas("trust", "add", "--certificate", "release@lab.example", "--root", root)
    assert r.returncode == 0, r.stderr
    r = cas("sign", "det@v1.0", "--key", key, "--certificate", leaf,
            "--certificate-chain", root, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert b"does not trust" not in r.stderr and json.loads(r.stdout)["trusted"] is True
    assert cas("verify", "--lock").returncode == 0
    # The bare key alone is not what the lockfile trusts: that warning is right.
    r = cas("sign", "det@v1.0", "--key", key, "--json")
    assert r.returncode == 0 and b"does not trust" in r.stderr, r.stderr
    assert json.loads(r.stdout)["trusted"] is False


@pytest.mark.parametrize("where", ["adir", "missing/dir/x.sig"])
def test_cas_sign_to_an_output_it_cannot_write_changes_nothing(
    cas: Cas, tmp_path: Path, where: str
) -> None:
    _pinned(cas, tmp_path)
    key = _key(tmp_path / "release.pem")
    (tmp_path / "adir").mkdir()
    before = _lock_text(tmp_path)
    r = cas("sign", "det@v1.0", "--key", key, "-o", where)
    assert r.returncode == 2, r.stderr
    line = _one_line(r)
    assert where in line and ".tmp" not in line, line
    assert _lock_text(tmp_path) == before, "nothing pinned"


def test_cas_add_signature_of_an_empty_folder_pins_nothing_and_keeps_the_lockfile(
    cas: Cas, tmp_path: Path
) -> None:
    # A valid signature of no files over an empty folder: nothing to pin. It wrote
    # `files:` with nothing under it, and every later command failed on the lockfile.
    from modelcas.signing import KeySpec, sign_files

    _pinned(cas, tmp_path)
    key = _key(tmp_path / "release.pem")
    (tmp_path / "empty.sig").write_bytes(sign_files({}, "empty", KeySpec(key)).data)
    (tmp_path / "empty").mkdir()
    before = _lock_text(tmp_path)
    r = cas("add", "empty", "--signature", "empty.sig", "--public-key", key.with_suffix(".pub"),
            "--name", "e", "--version", "v1")  # fmt: skip
    assert r.returncode == 2 and "holds no file" in _one_line(r), r.stderr
    assert _lock_text(tmp_path) == before
    assert cas("lock", "ls").returncode == 0
    # The lockfile model refuses such a pin too, whoever asks.
    lock = Lockfile.load(tmp_path / "cas.lock")
    with pytest.raises(UsageError, match="at least one file"):
        lock.pin("e", "v1", {})


@pytest.mark.parametrize("where", [[], ["--model", "det"]], ids=["file", "model"])
def test_trusting_keys_in_any_order_writes_the_lockfile(
    cas: Cas, tmp_path: Path, where: list[str]
) -> None:
    """The writer sorts `trust:` entries; the lockfile's read-back check must agree (it once
    refused half of all second keys, by the order their random fingerprints fell in)."""
    _pinned(cas, tmp_path)
    a, b = _key(tmp_path / "a.pem"), _key(tmp_path / "b.pem")
    first, second = sorted([a, b], key=lambda k: _fingerprint(k.with_suffix(".pub")), reverse=True)
    for key in (first, second):
        r = cas("trust", "add", key.with_suffix(".pub"), *where)
        assert r.returncode == 0, r.stderr
    listed = cas("trust", "ls")
    assert listed.returncode == 0
    assert all(_fingerprint(k.with_suffix(".pub")) in listed.stdout.decode() for k in (a, b))


def test_trusting_a_key_that_sorts_before_a_trusted_one_writes_the_lockfile(
    cas: Cas, tmp_path: Path
) -> None:
    """The writer checks its text reads back as the same lockfile: the new list is sorted."""
    _pinned(cas, tmp_path)
    keys = [_key(tmp_path / "a.pem"), _key(tmp_path / "b.pem")]
    later, earlier = sorted(keys, key=lambda k: _fingerprint(k.with_suffix(".pub")), reverse=True)
    for where in (("--model", "det"), ()):
        for key in (later, earlier):
            r = cas("trust", "add", key.with_suffix(".pub"), *where)
            assert r.returncode == 0, r.stderr
    lock = Lockfile.load(tmp_path / "cas.lock")
    assert [t.key for t in lock.models["det"].trust] == sorted(t.key for t in lock.trust)
    assert len(lock.trust) == 2
