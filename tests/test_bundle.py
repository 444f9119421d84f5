"""Model bundles: creation as the seed describes, real zip readers, self-verification, use."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from modelcas import bundle as bundles
from modelcas import hashing
from modelcas.errors import UsageError
from modelcas.lockfile import Lockfile
from modelcas.store import Store
from tests.refs import ref_blake3, ref_sha256

Cas = Callable[..., subprocess.CompletedProcess[bytes]]
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "bundle"
EPOCH = "1766071842"  # 2025-12-18 15:30:42 UTC


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A copy of the example bundle config and its inputs, with the seed's shapes."""
    work = tmp_path / "work"
    shutil.copytree(EXAMPLE, work / "bundle")
    shutil.copytree(EXAMPLE.parent / "weights", work / "weights")
    (work / "weights" / "pi_model_20251218.pkl").write_bytes(b"\x80\x04sklearn-ish model")
    cfg = yaml.safe_load((work / "bundle" / "config_model_bundle.yml").read_text())
    cfg["pi_classification"] = {
        "model_path": "../weights/pi_model_20251218.pkl",
        "model_type": "PIClassifier",
    }
    (work / "bundle" / "config_model_bundle.yml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return work / "bundle" / "config_model_bundle.yml"


def _epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)


def test_create_as_the_seed_describes(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _epoch(monkeypatch)
    out = bundles.create_model_bundle(config, tmp_path / "bundles" / "2025" / "dec" / "my.zip")
    assert out == tmp_path / "bundles" / "2025" / "dec" / "my_20251218.zip", "auto-dated, dirs made"
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        assert "models/NAFNet-bf_focus_restoration.safetensors" in names
        assert "models/PIClassifier.pkl" in names
        assert "metadata/MonaiUnet-segmentation.json" in names
        assert "config_tracker.yml" in names and names[-1] == bundles.MANIFEST
        meta = json.loads(z.read("metadata/NAFNet-bf_focus_restoration.json"))
        assert meta["original_name"] == "bf_focus.safetensors" and meta["model_type"] == "NAFNet"
        assert meta["trained_on"] == "dataset_042", "the user's metadata is kept"
        internal = yaml.safe_load(z.read("config.yml"))
        assert internal["_bundle_metadata"]["creation_date"] == "2025-12-18 15:30:42"
        assert internal["_bundle_metadata"]["source_config"] == "config_model_bundle.yml"
        bf = internal["bf_focus"]
        assert bf["model_path"] == "models/NAFNet-bf_focus_restoration.safetensors"
        assert bf["inferer_args"]["scaler_args"] == {"pmin": 1.0, "pmax": 99.8}
        assert internal["cell_classifier"]["model_args"]["classes"] == {
            0: "single-cell",
            1: "clump",
        }
        manifest = json.loads(z.read(bundles.MANIFEST))["members"]
        data = z.read("models/NAFNet-bf_focus_restoration.safetensors")
        assert manifest["models/NAFNet-bf_focus_restoration.safetensors"] == {
            "size": len(data),
            "sha256": ref_sha256(data),
            "blake3": ref_blake3(data),
            "crc32": zipfile.ZipInfo
            and z.getinfo("models/NAFNet-bf_focus_restoration.safetensors").CRC,
        }
        assert set(manifest) == set(names) - {bundles.MANIFEST}
    sidecar = out.with_name(out.name + ".sha256")
    check = subprocess.run(
        ["sha256sum", "-c", sidecar.name], cwd=out.parent, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout


def test_no_auto_date_and_overwrite_protection(config: Path, tmp_path: Path) -> None:
    out = bundles.create_model_bundle(config, tmp_path / "exact.zip", auto_date=False)
    assert out == tmp_path / "exact.zip"
    with pytest.raises(FileExistsError):
        bundles.create_model_bundle(config, tmp_path / "exact.zip", auto_date=False)
    assert (
        bundles.create_model_bundle(config, tmp_path / "exact.zip", auto_date=False, force=True)
        == out
    )


def test_deterministic_with_source_date_epoch(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _epoch(monkeypatch)
    for compression in ("stored", "deflate", "zstd:3"):
        a = bundles.create_model_bundle(
            config, tmp_path / "a" / "b.zip", compression=compression, force=True
        )
        b = bundles.create_model_bundle(
            config, tmp_path / "b" / "b.zip", compression=compression, force=True
        )
        assert a.read_bytes() == b.read_bytes(), compression


@pytest.mark.parametrize("compression", ["stored", "deflate", "deflate:9"])
def test_opens_with_zipfile_unzip_and_bsdtar(
    config: Path, tmp_path: Path, compression: str
) -> None:
    out = bundles.create_model_bundle(
        config, tmp_path / "b.zip", auto_date=False, compression=compression
    )
    with zipfile.ZipFile(out) as z:
        assert z.testzip() is None
        weights = z.read("models/MonaiUnet-segmentation.safetensors")
    assert weights == (config.parent.parent / "weights" / "segmentation.safetensors").read_bytes()
    assert subprocess.run(["unzip", "-tq", out], capture_output=True, check=False).returncode == 0
    listing = subprocess.run(["bsdtar", "-tf", out], capture_output=True, text=True, check=True)
    assert "config.yml" in listing.stdout
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["bsdtar", "-xf", out, "-C", dest], check=True)
    assert (dest / "models" / "MonaiUnet-segmentation.safetensors").read_bytes() == weights


def test_zstd_opens_with_bsdtar_and_modelcas(config: Path, tmp_path: Path, cas: Cas) -> None:
    out = bundles.create_model_bundle(
        config, tmp_path / "z.zip", auto_date=False, compression="zstd:5"
    )
    with zipfile.ZipFile(out) as z:
        assert {i.compress_type for i in z.infolist()} == {93, 0}, "zstd, and a stored manifest"
    dest = tmp_path / "x"
    dest.mkdir()
    r = subprocess.run(["bsdtar", "-xf", out, "-C", dest], capture_output=True, check=False)
    assert r.returncode == 0, r.stderr
    seg = (config.parent.parent / "weights" / "segmentation.safetensors").read_bytes()
    assert (dest / "models" / "MonaiUnet-segmentation.safetensors").read_bytes() == seg
    assert cas("bundle", "verify", out).returncode == 0


def test_every_input_is_checked_before_writing(config: Path, tmp_path: Path, cas: Cas) -> None:
    cfg = yaml.safe_load(config.read_text())
    cfg["bf_focus"]["model_path"] = "../weights/missing.pth"
    cfg["segmentation"]["model_metadata"] = "metadata/nope.json"
    cfg["tracker"]["config_path"] = "gone.yml"
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(UsageError) as e:
        bundles.create_model_bundle(config, tmp_path / "out" / "b.zip")
    text = str(e.value)
    for part in (
        "3 problems",
        "bf_focus.model_path",
        "missing.pth",
        "segmentation.model_metadata",
        "nope.json",
        "tracker.config_path",
    ):
        assert part in text
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    r = cas("bundle", "-i", config, "-o", tmp_path / "out" / "b.zip")
    assert r.returncode == 2 and b"nothing was written" in r.stderr


def test_models_by_lock_name_and_address(config: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    weights = config.parent.parent / "weights"
    d = store.add_file(weights / "cser-detector-v1.0.safetensors").info.digest
    e = store.add_file(weights / "segmentation.safetensors").info.digest
    lock = Lockfile(path=config.parent / "cas.lock")
    lock.pin("cser-detector", "v1.0", {"best.safetensors": d})
    lock.save()
    cfg = yaml.safe_load(config.read_text())
    cfg["cell_classifier"]["model_path"] = "cser-detector@v1.0"
    cfg["segmentation"]["model_path"] = e.address
    cfg["segmentation"]["original_name"] = "unet_segm.safetensors"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = bundles.create_model_bundle(config, tmp_path / "b.zip", auto_date=False, store=store)
    with zipfile.ZipFile(out) as z:
        cell = json.loads(z.read("metadata/FlexResNet-cell_classifier.json"))
        assert cell["original_name"] == "best.safetensors"
        data = z.read("models/FlexResNet-cell_classifier.safetensors")
        assert ref_sha256(data) == d.sha256
        seg = json.loads(z.read("metadata/MonaiUnet-segmentation.json"))
        assert seg["original_name"] == "unet_segm.safetensors"


def test_cli_ls_verify_extract_add(config: Path, tmp_path: Path, cas: Cas) -> None:
    r = cas("bundle", "-i", config, "-o", tmp_path / "b.zip", "--no-auto-date")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "b.zip"
    listing = json.loads(cas("bundle", "ls", out, "--json").stdout)
    keys = {m["key"]: m for m in listing["models"]}
    assert keys["bf_focus"]["model_type"] == "NAFNet"
    assert keys["bf_focus"]["inferer_args"]["patch_size"] == 256
    assert keys["segmentation"]["sha256"] == ref_sha256(
        (config.parent.parent / "weights" / "segmentation.safetensors").read_bytes()
    )
    assert cas("bundle", "verify", out).returncode == 0
    dest = tmp_path / "extracted"
    assert cas("bundle", "extract", out, "-d", dest).returncode == 0
    assert (dest / "config.yml").is_file() and (dest / "models").is_dir()
    again = cas("bundle", "extract", out, "-d", dest)
    assert again.returncode == 0, "the same verified files are there: nothing to do"
    (dest / "config.yml").write_text("changed: true\n")
    clash = cas("bundle", "extract", out, "-d", dest)
    assert clash.returncode == 2, "other bytes are not overwritten without --force"
    assert b"--force" in clash.stderr
    store = Store(tmp_path / "store")
    first = cas("--store", store.root, "bundle", "add", out)
    assert first.returncode == 0 and b"10 new object(s)" in first.stdout
    # A second bundle sharing the weights stores only what is new.
    cfg = yaml.safe_load(config.read_text())
    cfg["bf_focus"]["inferer_args"]["patch_size"] = 512
    other = config.with_name("other.yml")
    other.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert cas("bundle", "-i", other, "-o", tmp_path / "c.zip", "--no-auto-date").returncode == 0
    second = cas("--store", store.root, "bundle", "add", tmp_path / "c.zip")
    assert b"1 new object(s)" in second.stdout, second.stdout  # only config.yml differs


def test_tampered_member_and_sidecar_are_named(config: Path, tmp_path: Path, cas: Cas) -> None:
    out = bundles.create_model_bundle(config, tmp_path / "b.zip", auto_date=False)
    data = bytearray(out.read_bytes())
    target = (config.parent.parent / "weights" / "segmentation.safetensors").read_bytes()
    at = bytes(data).index(target[1000:1064]) + 10
    data[at] ^= 0xFF
    out.write_bytes(bytes(data))
    r = cas("bundle", "verify", out)
    assert r.returncode == 1
    assert b"models/MonaiUnet-segmentation.safetensors" in r.stdout
    assert b".sha256" in r.stdout


def test_sidecar_is_checked_in_segments_from_the_manifest_midstates(
    config: Path, tmp_path: Path
) -> None:
    big = config.parent.parent / "weights" / "pi_model_20251218.pkl"
    big.write_bytes(random.Random(7).randbytes(40 << 20))
    out = bundles.create_model_bundle(config, tmp_path / "b.zip", auto_date=False)
    with zipfile.ZipFile(out) as zf:
        raw = json.loads(zf.read(bundles.MANIFEST))["sha256_midstates"]
    step, states = raw["step"], raw["states"]
    assert step == 16 << 20
    assert len(states) == 2  # at 16 and 32 MiB, before the manifest
    want = hashlib.sha256(out.read_bytes()).hexdigest()
    assert hashing.sha256_chained(out, step, states) == want
    link = tmp_path / "latest.zip"
    link.symlink_to(out)
    assert hashing.sha256_chained(link, step, states) == want
    # The midstates are checked, not trusted: a wrong one breaks the chain.
    wrong = [states[0], states[0]]
    assert hashing.sha256_chained(out, step, wrong) is None
    assert bundles.Bundle.read(out).verify() == []

    data = bytearray(out.read_bytes())
    data[20 << 20] ^= 1
    out.write_bytes(bytes(data))
    problems = bundles.Bundle.read(out).verify()
    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert any("PIClassifier.pkl" in p for p in problems), problems
    assert any(f"sha256 {actual} differs" in p for p in problems), problems


def test_open_ingests_once_then_only_stats(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = bundles.create_model_bundle(config, tmp_path / "b.zip", auto_date=False)
    store = Store(tmp_path / "store")
    opened = bundles.open(out, store=store)
    seg = opened.model("segmentation")
    assert (
        seg.path.read_bytes()
        == (config.parent.parent / "weights" / "segmentation.safetensors").read_bytes()
    )
    assert seg.inferer_args["patch_size"] == 512 and seg.metadata["model_type"] == "MonaiUnet"
    assert [r.path for r in store.roots()] == [out.resolve()]
    calls: list[str] = []
    monkeypatch.setattr(hashing, "hash_file", lambda *a, **k: calls.append("hash"))
    monkeypatch.setattr(hashing, "hash_bytes", lambda *a, **k: calls.append("hash"))
    objects = sorted(
        p.stat().st_mtime_ns for p in (store.root / "objects").rglob("*") if p.is_file()
    )
    again = bundles.open(out, store=store)
    models = again.models()
    assert set(models) == {"bf_focus", "segmentation", "cell_classifier", "pi_classification"}
    assert calls == [], "a second open does no hashing"
    after = sorted(p.stat().st_mtime_ns for p in (store.root / "objects").rglob("*") if p.is_file())
    assert after == objects, "and extracts nothing"
    assert models["cell_classifier"].model_args["batch_size"] == 512


def test_pipeline_config_resolves_through_the_bundle(config: Path, tmp_path: Path) -> None:
    out = bundles.create_model_bundle(config, tmp_path / "model_collection.zip", auto_date=False)
    pipeline = tmp_path / "pipeline.yml"
    pipeline.write_text("models:\n  model_collection: ./model_collection.zip\n")
    models = bundles.resolve_pipeline_config(pipeline, store=Store(tmp_path / "store"))
    assert models["bf_focus"].path.is_file()
    assert models["bf_focus"].digest.sha256 == ref_sha256(models["bf_focus"].path.read_bytes())
    assert out.exists()


def test_gc_keeps_bundle_objects_while_the_bundle_exists(
    config: Path, tmp_path: Path, cas: Cas
) -> None:
    out = bundles.create_model_bundle(config, tmp_path / "b.zip", auto_date=False)
    store = Store(tmp_path / "store")
    bundles.open(out, store=store)
    count = len(store.objects())
    assert cas("--store", store.root, "gc", "--grace", "0").returncode == 0
    assert len(store.objects()) == count
    os.unlink(out)
    # Gone: its members may now exist only in the store (they have no remote source), so gc
    # keeps them and says how to release them (docs/store.md).
    r = cas("--store", store.root, "gc", "--grace", "0")
    assert r.returncode == 0 and f"`cas gc --forget {out.resolve()}`" in r.stdout.decode()
    assert len(store.objects()) == count
    r = cas("--store", store.root, "gc", "--grace", "0", "--forget", out)
    assert r.returncode == 0, r.stderr
    assert store.objects() == []
