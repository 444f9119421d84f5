"""Frameworks open the paths we hand out: ultralytics' YOLO by a file path, transformers by a
version's directory. Real checkpoints, built here (no training, no download): each framework
runs in a fresh process with its settings under tmp and, as root, no network at all.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("ultralytics")  # dev dependencies; a plain install lacks them
pytest.importorskip("transformers")


def _offline(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """How to run a framework with nothing to fetch: settings under tmp, no network."""
    env = {
        **os.environ,
        "MODELCAS_HOME": str(tmp_path / "store"),
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(tmp_path / "yolo-settings"),
        "MPLCONFIGDIR": str(tmp_path / "mpl"),
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf-home"),
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    # A network namespace of its own: any download attempt fails instead of reaching out.
    isolate = ["unshare", "--net"] if os.geteuid() == 0 and shutil.which("unshare") else []
    return isolate, env


def _run(tmp_path: Path, code: str) -> str:
    isolate, env = _offline(tmp_path)
    r = subprocess.run(
        [*isolate, sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Downloading" not in r.stdout + r.stderr, r.stderr
    return r.stdout


def test_yolo_loads_the_named_path_registry_path_hands_out(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        import torch
        from ultralytics import YOLO
        from modelcas import Store
        from modelcas.ops.add import PinRequest, add
        from modelcas.registry import open_lock

        YOLO("yolo11n.yaml").save("best.pt")  # a real checkpoint: built, never trained
        add(["best.pt"], Store(), pin=PinRequest("cser-detector", "v1.1"))
        registry = open_lock("cas.lock")
        path = registry.path("cser-detector")
        print("NAME", path.name)
        model = YOLO(path)
        assert isinstance(model.model, torch.nn.Module), type(model.model)
        saved = torch.load("best.pt", weights_only=False)["model"].float().state_dict()
        got = model.model.state_dict()
        assert saved.keys() == got.keys()
        assert all(torch.equal(saved[k], got[k].to(saved[k].dtype)) for k in saved)
        print("LOADED", type(model.model).__name__, len(got))
        # The object's own path, with no file name, is not taken for weights (the issue).
        obj = registry.store.object_path(registry.pin("cser-detector").digest.sha256)
        print("BARE", type(YOLO(str(obj)).model).__name__)
        """,
    )
    assert "NAME best.pt" in out
    assert "LOADED DetectionModel" in out
    assert "BARE str" in out, out


def test_transformers_loads_a_version_directory_from_pretrained(tmp_path: Path) -> None:
    out = _run(
        tmp_path,
        """
        import torch
        from transformers import AutoModel, BertConfig, BertModel
        import modelcas.torch as cas_torch
        from modelcas import Store
        from modelcas.ops.add import PinRequest, add
        from modelcas.registry import open_lock

        config = BertConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=37, vocab_size=99,
        )
        torch.manual_seed(0)
        original = BertModel(config).eval()
        original.save_pretrained("one")
        original.save_pretrained("sharded", max_shard_size="20KB")
        add(["one"], Store(), pin=PinRequest("tiny-bert", "v1"))
        add(["sharded"], Store(), pin=PinRequest("tiny-bert", "v2"))
        registry = open_lock("cas.lock")
        want = original.state_dict()
        for version in ("v1", "v2"):
            folder = registry.view("tiny-bert", version)
            model = AutoModel.from_pretrained(folder).eval()
            got = model.state_dict()
            assert all(torch.equal(want[k], got[k]) for k in want), version
            names = sorted(p.name for p in folder.iterdir())[:2]
            print("FROM_PRETRAINED", version, type(model).__name__, names)
        # The same sharded version as one verified state dict, without transformers' loader.
        state = cas_torch.load_state_dict("tiny-bert@v2", registry=registry)
        assert all(torch.equal(want[k], state[k]) for k in state) and len(state) >= len(want) - 1
        files = registry.lock.version("tiny-bert", "v2")[1].files
        print("SHARDS", len([f for f in files if f.endswith(".safetensors")]))
        """,
    )
    assert "FROM_PRETRAINED v1 BertModel ['config.json', 'model.safetensors']" in out
    assert "FROM_PRETRAINED v2 BertModel" in out
    shards = int(out.split("SHARDS ")[1].split()[0])
    assert shards > 1, out
