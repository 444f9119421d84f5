"""Extract writes only what the manifest lists, only inside the destination."""

from __future__ import annotations

import os
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from modelcas import bundle as bundles
from modelcas.errors import IntegrityError, UnsafeArchiveError
from modelcas.store import Store
from tests.bundlekit import example_config, one_error

Cas = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    """A valid bundle of the example config."""
    config = example_config(tmp_path)
    return bundles.create_model_bundle(config, tmp_path / "ok.zip", auto_date=False)


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


def test_a_symlinked_folder_inside_the_destination_is_refused(
    bundle: Path, tmp_path: Path, cas: Cas
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "models").symlink_to(outside)
    (dest / "mine.txt").write_text("already here")
    err = one_error(cas("bundle", "extract", bundle, "-d", dest), 1)
    assert f"{dest / 'models'} is a symbolic link" in err
    assert files(outside) == [], "nothing written through the link"
    assert files(dest) == ["mine.txt"], "nothing left behind"
    assert (dest / "models").is_symlink()
    with pytest.raises(UnsafeArchiveError):
        bundles.Bundle.read(bundle).extract(dest)
    assert files(outside) == []


def test_a_symlinked_destination_is_followed(bundle: Path, tmp_path: Path, cas: Cas) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    r = cas("bundle", "extract", bundle, "-d", link)
    assert r.returncode == 0, r.stderr
    assert "config.yml" in files(real)
    assert (real / "models" / "MonaiUnet-segmentation.safetensors").is_file()


def test_a_link_as_the_target_file_is_replaced_not_followed(
    bundle: Path, tmp_path: Path, cas: Cas
) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    victim = tmp_path / "victim.yml"
    victim.write_text("keep me")
    (dest / "config.yml").symlink_to(victim)
    one_error(cas("bundle", "extract", bundle, "-d", dest), 2)  # exists, no --force
    assert cas("bundle", "extract", bundle, "-d", dest, "--force").returncode == 0
    assert victim.read_text() == "keep me"
    assert not (dest / "config.yml").is_symlink()


def with_unlisted_member(bundle: Path) -> Path:
    """The bundle with one more member, which its manifest does not list."""
    with zipfile.ZipFile(bundle, "a") as z:
        z.writestr("models/extra.bin", b"not in the manifest")
    return bundle


def test_a_member_the_manifest_does_not_list_fails_every_action(
    bundle: Path, tmp_path: Path, cas: Cas
) -> None:
    with_unlisted_member(bundle)
    needle = "member 'models/extra.bin' is not in the manifest"
    dest = tmp_path / "dest"
    for action in (["extract", bundle, "-d", dest], ["ls", bundle], ["add", bundle]):
        err = one_error(cas("bundle", *action), 1)
        assert needle in err, (action, err)
    assert not dest.exists()
    r = cas("bundle", "verify", bundle)
    assert r.returncode == 1
    assert f"FAILED {needle}" in r.stdout.decode()
    store = Store(tmp_path / "store")
    with pytest.raises(IntegrityError, match="is not in the manifest"):
        bundles.open(bundle, store=store)
    assert store.objects() == []
    problems = bundles.Bundle.read(bundle, listed=False).verify()
    assert problems[0] == needle
    assert "ok.zip: sha256" in problems[1], "the sidecar predates the extra member"


def test_extract_verifies_and_can_sync(bundle: Path, tmp_path: Path, cas: Cas) -> None:
    dest = tmp_path / "dest"
    r = cas("bundle", "extract", bundle, "-d", dest, "--deep", "--sync")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("extracted 9 verified file(s)")
    config = yaml.safe_load((dest / "config.yml").read_text())
    assert config["bf_focus"]["model_type"] == "NAFNet"
    assert not [p for p in files(dest) if p.endswith(".partial")]
    # Read permissions as a new file gets them (umask applied), not the archive's mode bits.
    mode = os.stat(dest / "config.yml").st_mode & 0o777
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
