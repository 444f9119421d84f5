"""The `cas bundle` CLI contract: bad input is one line and an exit code, --json has a
schema, --dry-run never downloads, extract shows progress, pinned bytes are checked before the
bundle is put in place."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from modelcas import bundle as bundles
from modelcas.cli import _progress, main
from modelcas.digest import Digest
from modelcas.errors import IntegrityError
from modelcas.lockfile import Lockfile
from modelcas.store import Store
from tests.bundlekit import example_config, one_error
from tests.refs import ref_blake3, ref_sha256

Cas = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return example_config(tmp_path)


def bad_inputs(tmp: Path) -> dict[str, Path]:
    (tmp / "empty.zip").write_bytes(b"")
    (tmp / "random.zip").write_bytes(random.Random(1).randbytes(5000))
    (tmp / "folder.zip").mkdir()
    (tmp / "latin1.yml").write_bytes(b"caf\xe9:\n  model_path: x.pth\n")
    (tmp / "nested.yml").write_bytes(b"a: " + b"[" * 50_000)
    (tmp / "deep.yml").write_text("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 80)))
    (tmp / "garbage.yml").write_bytes(b"\x00\x01: [unclosed\n  - :")
    (tmp / "list.yml").write_text("- a\n- b\n")
    return {p.name: p for p in tmp.iterdir()}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["verify", "{tmp}/missing.zip"], "No such file"),
        (["verify", "{tmp}/empty.zip"], "not a zip archive"),
        (["ls", "{tmp}/random.zip"], "no end-of-central-directory record"),
        (["extract", "{tmp}/folder.zip", "-d", "{tmp}/d"], "Is a directory"),
        (["add", "{tmp}/empty.zip"], "not a zip archive"),
        (["-i", "{tmp}/missing.yml", "-o", "{tmp}/o.zip"], "does not exist"),
        (["-i", "{tmp}/folder.zip", "-o", "{tmp}/o.zip"], "is a directory"),
        (["-i", "{tmp}/empty.zip", "-o", "{tmp}/o.zip"], "expected a mapping"),
        (["-i", "{tmp}/latin1.yml", "-o", "{tmp}/o.zip"], "is not UTF-8 text"),
        (["-i", "{tmp}/nested.yml", "-o", "{tmp}/o.zip"], "nested too deeply"),
        (["-i", "{tmp}/deep.yml", "-o", "{tmp}/o.zip"], "nested more than 64 levels deep"),
        (["-i", "{tmp}/garbage.yml", "-o", "{tmp}/o.zip"], "is not valid YAML"),
        (["-i", "{tmp}/list.yml", "-o", "{tmp}/o.zip"], "expected a mapping"),
        (["-i", "{tmp}/list.yml", "-o", "{tmp}/o.zip", "--compression", "zstd:99"], "zstd"),
        (["-i", "{tmp}/list.yml", "-o", "{tmp}/o.zip", "--compression", "zstd:0"], "1 to 22"),
        (["-i", "{tmp}/list.yml", "-o", "{tmp}/o.zip", "--compression", "deflate:10"], "0 to 9"),
        (["-i", "{tmp}/list.yml", "-o", "{tmp}/o.zip", "--compression", "lzma"], "unknown"),
        (["-i", "{tmp}/list.yml", "-o", "{tmp}/o.zip", "--compression", "stored:1"], "no level"),
        (["-i", "{tmp}/list.yml"], "create a bundle with -i CONFIG -o OUT.zip"),
        (["verify"], "the following arguments are required: BUNDLE"),
        (["bogus", "x.zip"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_an_exit_code(
    tmp_path: Path, cas: Cas, args: list[str], needle: str
) -> None:
    bad_inputs(tmp_path)
    r = cas("bundle", *(a.replace("{tmp}", str(tmp_path)) for a in args))
    err = one_error(r)
    assert needle in err, err
    assert not (tmp_path / "o.zip").exists()


def test_compression_is_checked_before_anything_is_read(tmp_path: Path, cas: Cas) -> None:
    # The config does not exist: the parser refuses the level first, with exit 2.
    r = cas("bundle", "-i", tmp_path / "none.yml", "-o", "o.zip", "--compression", "zstd:99")
    assert r.returncode == 2
    assert "zstd level 99 is out of range: expected 1 to 22" in one_error(r)


def test_ls_json_has_a_schema(config: Path, tmp_path: Path, cas: Cas) -> None:
    out = bundles.create_model_bundle(config, tmp_path / "b.zip", auto_date=False)
    r = cas("bundle", "ls", out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "cas.bundle-ls/1"
    assert set(doc) == {"schema", "bundle", "metadata", "models", "tracker"}
    model = doc["models"][0]
    assert set(model) == {
        "key",
        "model_type",
        "member",
        "original_name",
        "size",
        "sha256",
        "blake3",
        "inferer_args",
        "model_args",
    }
    assert model["member"] == "models/NAFNet-bf_focus_restoration.safetensors"
    data = (config.parent.parent / "weights" / "bf_focus.safetensors").read_bytes()
    assert (model["sha256"], model["blake3"]) == (ref_sha256(data), ref_blake3(data))
    tracker = (config.parent / "tracking_config.yml").read_bytes()
    assert doc["tracker"] == {
        "member": "config_tracker.yml",
        "size": len(tracker),
        "sha256": ref_sha256(tracker),
    }
    assert b"schema" in cas("bundle", "ls", "--help").stdout


def test_verify_json_has_a_schema_and_exits_1_on_a_problem(
    config: Path, tmp_path: Path, cas: Cas
) -> None:
    out = bundles.create_model_bundle(config, tmp_path / "b.zip", auto_date=False)
    r = cas("bundle", "verify", out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc == {
        "schema": "cas.bundle-verify/1",
        "bundle": str(out),
        "ok": True,
        "deep": False,
        "members": 8,
        "sidecar": {"path": str(out) + ".sha256", "sha256": ref_sha256(out.read_bytes())},
        "problems": [],
    }
    data = bytearray(out.read_bytes())
    seg = (config.parent.parent / "weights" / "segmentation.safetensors").read_bytes()
    data[bytes(data).index(seg[1000:1064]) + 5] ^= 0xFF
    out.write_bytes(bytes(data))
    r = cas("bundle", "verify", out, "--json", "--deep")
    assert r.returncode == 1
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["deep"] is True
    kinds = [(p["member"], p["kind"]) for p in doc["problems"]]
    assert kinds == [("models/MonaiUnet-segmentation.safetensors", "corrupt"), (None, "sidecar")]
    assert b"schema" in cas("bundle", "verify", "--help").stdout


def test_dry_run_never_downloads(config: Path, tmp_path: Path, cas: Cas) -> None:
    store = Store(tmp_path / "store")
    weights = config.parent.parent / "weights"
    data = (weights / "cser-detector-v1.0.safetensors").read_bytes()
    digest = Digest(ref_sha256(data), len(data), ref_blake3(data))
    lock = Lockfile(path=config.parent / "cas.lock")
    lock.pin("cser-detector", "v1.0", {"best.safetensors": digest}, source="hf://org/repo")
    lock.save()
    cfg = yaml.safe_load(config.read_text())
    cfg["cell_classifier"]["model_path"] = "cser-detector@v1.0"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    # Any request would fail: nothing listens there.
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1"}
    args = ("--store", store.root, "bundle", "-i", config, "-o", tmp_path / "b.zip")
    r = cas(*args, "--dry-run", extra_env=env)
    assert r.returncode == 0, r.stderr
    assert b"fetch cser-detector@v1.0 best.safetensors -> models/FlexResNet-" in r.stdout
    assert store.objects() == []
    # Without --dry-run the fetch is tried (and fails here), and nothing is written.
    r = cas(*args, extra_env=env)
    assert r.returncode in (1, 2)
    assert not list(tmp_path.glob("b*.zip"))


def test_pinned_bytes_are_checked_before_the_bundle_is_put_in_place(
    config: Path, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store")
    seg = config.parent.parent / "weights" / "segmentation.safetensors"
    info = store.add_file(seg).info
    cfg = yaml.safe_load(config.read_text())
    cfg["segmentation"]["model_path"] = info.digest.address
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = tmp_path / "b.zip"
    old = bundles.create_model_bundle(config, out, auto_date=False, store=store)
    before = (old.read_bytes(), (tmp_path / "b.zip.sha256").read_bytes())
    # The store object rots (same size): the bundle must not be replaced.
    obj = info.path
    obj.chmod(0o644)
    rotten = bytearray(obj.read_bytes())
    rotten[100] ^= 1
    obj.write_bytes(bytes(rotten))
    with pytest.raises(IntegrityError) as e:
        bundles.create_model_bundle(config, out, auto_date=False, store=store, force=True)
    assert f"should have sha256 {info.digest.sha256}" in str(e.value)
    assert "hint: run `cas verify --repair`" in str(e.value)
    assert (out.read_bytes(), (tmp_path / "b.zip.sha256").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".b.zip")) == []


def test_extract_draws_a_progress_bar_at_a_terminal(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = bundles.create_model_bundle(config, tmp_path / "b.zip", auto_date=False)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("CAS_NO_PROGRESS", raising=False)
    monkeypatch.setattr(_progress, "MIN_BYTES", 0)
    monkeypatch.setattr("sys.stderr", Terminal())
    monkeypatch.setenv("MODELCAS_HOME", str(tmp_path / "store"))
    seen: list[tuple[int | None, str]] = []
    real = _progress.byte_bar

    def spy(total: int | None, desc: str, *, quiet: bool = False) -> object:
        seen.append((total, desc))
        return real(total, desc, quiet=quiet)

    monkeypatch.setattr("modelcas.cli.bundle.byte_bar", spy)
    assert main(["bundle", "extract", str(out), "-d", str(tmp_path / "d")]) == 0
    assert seen and seen[0][1] == "extracting"
    assert "extracting" in sys.stderr.getvalue()
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not _progress.wanted(1 << 40), "not at a terminal: no bar"
