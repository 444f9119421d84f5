"""HiTMicTools configs as users have them: the seed's complete example, with ``./models/...``
paths relative to the working directory, a tracker, and the seed's member names."""

from __future__ import annotations

import json
import random
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from modelcas import bundle as bundles
from modelcas.bundle.models import BundleModel, BundleTracker
from modelcas.errors import UsageError
from modelcas.store import Store
from tests.refs import ref_sha256

Cas = Callable[..., subprocess.CompletedProcess[bytes]]
EPOCH = "1766071842"  # 2025-12-18 15:30:42 UTC

# The seed's "Complete Example" (seeds/model-bundles.md), verbatim but for the comments.
SEED_COMPLETE = """\
bf_focus:
  model_path: "/path/to/bf_focus_model.pth"
  model_metadata: "/path/to/bf_focus_config.json"
  inferer_args:
    scale_method: "range01"
    patch_size: 256
    overlap_ratio: 0.25
    half_precision: false
    scaler_args:
      pmin: 1.0
      pmax: 99.8
fl_focus:
  model_path: "/path/to/fl_focus_model.pth"
  model_metadata: "/path/to/fl_focus_config.json"
  inferer_args:
    scale_method: "fixed_range"
    patch_size: 256
    overlap_ratio: 0.25
    half_precision: false
    scaler_args:
      bit_depth: 12
segmentation:
  model_path: "/path/to/segmentation_model.pth"
  model_metadata: "/path/to/segmentation_config.json"
  inferer_args:
    scale_method: "none"
    patch_size: 512
    overlap_ratio: 0.25
    half_precision: false
cell_classifier:
  model_path: "/path/to/classifier.pth"
  model_metadata: "/path/to/classifier_config.json"
  model_args:
    batch_size: 512
    min_size: 128
    classes:
      0: "single-cell"
      1: "clump"
      2: "noise"
      3: "off-focus"
      4: "joint-cell"
pi_classification:
  model_path: "/path/to/pi_classifier.pkl"
oof_detector:
  model_path: "/path/to/oof_detector.pth"
  model_metadata: "/path/to/oof_config.json"
  inferer_args:
    patch_size: 560
    overlap_ratio: 0.25
    score_threshold: 0.5
    nms_iou: 0.5
    class_dict:
      oof: 0
sc_segmenter:
  model_path: "/path/to/sc_segmenter.pth"
  model_metadata: "/path/to/sc_config.json"
  inferer_args:
    patch_size: 256
    overlap_ratio: 0.25
    score_threshold: 0.3
    nms_iou: 0.5
    class_dict:
      0: "single-cell"
      1: "clump"
      2: "joint-cell"
      3: "debris"
    temporal_buffer_size: 8
    batch_size: 32
    mask_threshold: 0.5
tracker:
  config_path: "/path/to/tracking_config.yml"
"""

# The seed's table and tree: key -> member stem.
SEED_NAMES = {
    "bf_focus": "NAFNet-bf_focus_restoration",
    "fl_focus": "NAFNet-fl_focus_restoration",
    "segmentation": "MonaiUnet-segmentation",
    "cell_classifier": "FlexResNet-cell_classifier",
    "pi_classification": "PIClassifier",
    "oof_detector": "RFDETR-oof_detector",
    "sc_segmenter": "RFDETRSegm-sc_segmenter",
}
TRACKING = "tracker: btrack\nmax_search_radius: 50\nmotion_model:\n  accuracy: 7.5\n"


def seed_project(root: Path) -> dict[str, bytes]:
    """A HiTMicTools project: config/config_model_bundle.yml naming ./models/... files.

    Returns the weights by file name.
    """
    config = yaml.safe_load(SEED_COMPLETE)
    weights = {}
    rng = random.Random(15)
    for key, spec in config.items():
        for field in ("model_path", "model_metadata", "config_path"):
            if field not in spec:
                continue
            name = Path(spec[field]).name
            spec[field] = f"./models/{name}"
            target = root / "models" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if field == "model_metadata":
                target.write_text(json.dumps({"trained_on": f"{key} set", "key": key}))
            elif field == "config_path":
                target.write_text(TRACKING)
            else:
                weights[name] = rng.randbytes(3000 + len(weights))
                target.write_bytes(weights[name])
    (root / "config").mkdir()
    (root / "config" / "config_model_bundle.yml").write_text(
        yaml.safe_dump(config, sort_keys=False)
    )
    return weights


def test_the_seeds_complete_example_builds_from_the_working_directory(
    tmp_path: Path, cas: Cas
) -> None:
    project = tmp_path / "project"
    weights = seed_project(project)
    env = {"SOURCE_DATE_EPOCH": EPOCH}
    r = cas(
        "bundle",
        "-i",
        "config/config_model_bundle.yml",
        "-o",
        "model_collection.zip",
        cwd=project,
        extra_env=env,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr == b"", "no warning: the files exist in one place only"
    out = project / "model_collection_20251218.zip"
    with zipfile.ZipFile(out) as z:
        names = z.namelist()
        config = yaml.safe_load(z.read("config.yml"))
        for key, stem in SEED_NAMES.items():
            entry = config[key]
            original = Path(yaml.safe_load(SEED_COMPLETE)[key]["model_path"]).name
            assert entry["model_path"] == f"models/{stem}{Path(original).suffix}", key
            assert entry["model_metadata"] == f"metadata/{stem}.json", key
            assert z.read(entry["model_path"]) == weights[original], key
            meta = json.loads(z.read(entry["model_metadata"]))
            assert meta["original_name"] == original, key
        # The seed's tree, member for member.
        assert sorted(n for n in names if n.startswith("models/")) == sorted(
            [f"models/{s}.pth" for k, s in SEED_NAMES.items() if k != "pi_classification"]
            + ["models/PIClassifier.pkl"]
        )
        assert sorted(n for n in names if n.startswith("metadata/")) == sorted(
            f"metadata/{s}.json" for s in SEED_NAMES.values()
        )
        assert "config_tracker.yml" in names
        assert z.read("config_tracker.yml").decode() == TRACKING
        assert config["tracker"] == {"config_path": "config_tracker.yml"}
        assert config["sc_segmenter"]["inferer_args"]["class_dict"][3] == "debris"
    check = subprocess.run(
        ["sha256sum", "-c", out.name + ".sha256"], cwd=project, capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout


def test_resolve_pipeline_config_returns_the_tracker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    weights = seed_project(project)
    monkeypatch.chdir(project)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    store = Store(tmp_path / "store")
    bundles.create_model_bundle("config/config_model_bundle.yml", "model_collection.zip")
    pipeline = project / "config" / "pipeline.yml"
    pipeline.write_text("models:\n  model_collection: ./model_collection_20251218.zip\n")
    m = bundles.resolve_pipeline_config(pipeline, store=store)
    tracker = m.get("tracker")
    assert isinstance(tracker, BundleTracker)
    assert tracker.config == yaml.safe_load(TRACKING)
    assert tracker.path.read_text() == TRACKING, "a verified local copy"
    assert tracker.digest.sha256 == ref_sha256(TRACKING.encode())
    assert set(m) == {*SEED_NAMES, "tracker"}
    bf = m["bf_focus"]
    assert isinstance(bf, BundleModel)
    assert bf.path.read_bytes() == weights["bf_focus_model.pth"]
    assert bf.inferer_args["scaler_args"] == {"pmin": 1.0, "pmax": 99.8}
    assert bf.metadata["original_name"] == "bf_focus_model.pth"
    assert m.tracker is tracker and len(m) == 8


def test_config_relative_paths_still_work_from_anywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "project"
    seed_project(project)
    # The config beside models/: ./models/... resolves against the config's folder.
    (project / "config" / "config_model_bundle.yml").rename(project / "config_model_bundle.yml")
    monkeypatch.chdir(tmp_path)
    out = bundles.create_model_bundle(
        project / "config_model_bundle.yml", tmp_path / "b.zip", auto_date=False
    )
    plan = bundles.plan_bundle(project / "config_model_bundle.yml", tmp_path / "c.zip")
    assert {m.found for m in plan.models} == {"config"}
    assert out.is_file()
    # From neither place, every path is named: 7 models, 6 metadata files and the tracker.
    monkeypatch.chdir(project / "config")
    (project / "config_model_bundle.yml").rename(project / "config" / "cfg.yml")
    with pytest.raises(UsageError) as e:
        bundles.plan_bundle("cfg.yml", tmp_path / "d.zip")
    assert "14 problems" in str(e.value)


def test_a_path_found_in_both_places_uses_the_working_directory_and_warns(
    tmp_path: Path, cas: Cas
) -> None:
    project = tmp_path / "project"
    seed_project(project)
    # A stale copy of one model beside the config, differing from the working directory's.
    stale = project / "config" / "models" / "unet_segm.pth"
    cfg = project / "config" / "config_model_bundle.yml"
    spec = yaml.safe_load(cfg.read_text())
    spec["segmentation"]["model_path"] = "./models/unet_segm.pth"
    (project / "models" / "unet_segm.pth").write_bytes(b"current weights")
    stale.parent.mkdir()
    stale.write_bytes(b"stale weights")
    cfg.write_text(yaml.safe_dump(spec, sort_keys=False))
    r = cas("bundle", "-i", cfg, "-o", "b.zip", "--no-auto-date", cwd=project)
    assert r.returncode == 0, r.stderr
    warning = r.stderr.decode()
    assert warning.startswith("cas: warning: segmentation.model_path: ./models/unet_segm.pth")
    assert str(project / "models" / "unet_segm.pth") in warning and str(stale) in warning
    assert warning.count("\n") == 1
    with zipfile.ZipFile(project / "b.zip") as z:
        assert z.read("models/MonaiUnet-segmentation.pth") == b"current weights"
    dry = cas("bundle", "-i", cfg, "-o", "b.zip", "--dry-run", cwd=project)
    assert b"unet_segm.pth -> models/MonaiUnet-segmentation.pth" in dry.stdout
    assert b"from cwd" in dry.stdout


def test_other_keys_are_named_type_dash_key(tmp_path: Path) -> None:
    (tmp_path / "w.onnx").write_bytes(b"onnx")
    (tmp_path / "x.pt").write_bytes(b"pt")
    cfg = tmp_path / "cfg.yml"
    cfg.write_text(
        "nuclei:\n  model_path: w.onnx\n  model_type: Unet\n"
        "untyped:\n  model_path: x.pt\n"
        "bf_focus:\n  model_path: x.pt\n  model_type: NAFNet-medium\n"
    )
    plan = bundles.plan_bundle(cfg, tmp_path / "b.zip", auto_date=False)
    members = {m.key: (m.member, m.model_type) for m in plan.models}
    assert members == {
        "nuclei": ("models/Unet-nuclei.onnx", "Unet"),
        "untyped": ("models/untyped.pt", None),
        # A seed key keeps the seed's name whatever type it declares.
        "bf_focus": ("models/NAFNet-bf_focus_restoration.pt", "NAFNet-medium"),
    }
