"""Sharded checkpoints: one state dict from an index and its shards, every byte verified."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
import safetensors.torch
import torch

import modelcas.torch as cas_torch
from modelcas.errors import FormatError, IntegrityError, UsageError
from modelcas.ops.add import PinRequest, add
from modelcas.registry import open_lock
from modelcas.store import Store


def _state(n: int = 6) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {f"layer{i}.weight": torch.randn(4, 8, generator=gen) for i in range(n)}


def _write_sharded(
    folder: Path,
    state: dict[str, torch.Tensor],
    shards: int,
    *,
    fmt: str = "safetensors",
    edit: Callable[[dict[str, str]], None] | None = None,
) -> Path:
    """As `save_pretrained(max_shard_size=...)` writes it: shards and an index."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(state)
    weight_map: dict[str, str] = {}
    stem, ext = ("model", "safetensors") if fmt == "safetensors" else ("pytorch_model", "bin")
    for i in range(shards):
        part = {k: state[k].contiguous() for k in names[i::shards]}
        shard = f"{stem}-{i + 1:05d}-of-{shards:05d}.{ext}"
        if fmt == "safetensors":
            safetensors.torch.save_file(part, folder / shard)
        else:
            torch.save(part, folder / shard)
        weight_map.update(dict.fromkeys(part, shard))
    if edit is not None:
        edit(weight_map)
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / f"{stem}.{ext}.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text("{}")
    return folder


def _pin(tmp_path: Path, folder: Path, name: str = "big") -> tuple[Store, Path]:
    store = Store(tmp_path / "store")
    lock = tmp_path / "cas.lock"
    add([folder], store, pin=PinRequest(name, "v1", lock=lock))
    return store, lock


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_a_sharded_version_loads_as_one_verified_state_dict(tmp_path: Path, fmt: str) -> None:
    state = _state()
    store, lock = _pin(tmp_path, _write_sharded(tmp_path / "snap", state, 3, fmt=fmt))
    got = cas_torch.load_state_dict("big", lock=lock, store=store)
    assert sorted(got) == sorted(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k
    # By version too, and through a registry.
    reg = open_lock(lock, store=store)
    assert sorted(cas_torch.load_state_dict("big@v1", registry=reg)) == sorted(state)
    # One file of the version is still loadable by name.
    shard = (
        "model-00002-of-00003.safetensors"
        if fmt == "safetensors"
        else ("pytorch_model-00002-of-00003.bin")
    )
    one = cas_torch.load_state_dict("big", lock=lock, store=store, file=shard)
    assert set(one) < set(state)


def test_an_index_naming_a_missing_shard_is_refused(tmp_path: Path) -> None:
    folder = _write_sharded(tmp_path / "snap", _state(), 3)
    (folder / "model-00003-of-00003.safetensors").unlink()
    store, lock = _pin(tmp_path, folder)
    with pytest.raises(FormatError, match=r"model-00003-of-00003\.safetensors.*does not pin"):
        cas_torch.load_state_dict("big", lock=lock, store=store)


def test_an_index_naming_a_tensor_twice_is_refused(tmp_path: Path) -> None:
    folder = _write_sharded(tmp_path / "snap", _state(), 2)
    index = folder / "model.safetensors.index.json"
    text = index.read_text()
    # The same key twice in the JSON object (json.loads would keep the last one).
    first = '"layer0.weight": "model-00001-of-00002.safetensors"'
    assert first in text
    index.write_text(text.replace(first, first + ", " + first.replace("00001", "00002")))
    store, lock = _pin(tmp_path, folder)
    with pytest.raises(FormatError, match=r"'layer0\.weight' twice"):
        cas_torch.load_state_dict("big", lock=lock, store=store)


def test_a_tensor_in_two_shards_or_not_where_the_index_says_is_refused(tmp_path: Path) -> None:
    state = _state(4)
    folder = _write_sharded(tmp_path / "a", state, 2)
    # The second shard also holds layer0 (the first shard's tensor).
    safetensors.torch.save_file(
        {"layer0.weight": state["layer0.weight"], "layer1.weight": state["layer1.weight"],
         "layer3.weight": state["layer3.weight"]},
        folder / "model-00002-of-00002.safetensors",
    )  # fmt: skip
    store, lock = _pin(tmp_path, folder)
    with pytest.raises(FormatError, match=r"layer0\.weight"):
        cas_torch.load_state_dict("big", lock=lock, store=store)

    def drop(weight_map: dict[str, str]) -> None:
        del weight_map["layer1.weight"]

    folder = _write_sharded(tmp_path / "b", state, 2, edit=drop)
    store, lock = _pin(tmp_path / "b", folder)
    with pytest.raises(FormatError, match="does not list it"):
        cas_torch.load_state_dict("big", lock=lock, store=store)

    def extra(weight_map: dict[str, str]) -> None:
        weight_map["ghost.weight"] = "model-00001-of-00002.safetensors"

    folder = _write_sharded(tmp_path / "c", state, 2, edit=extra)
    store, lock = _pin(tmp_path / "c", folder)
    with pytest.raises(FormatError, match=r"'ghost\.weight'.*does not hold it"):
        cas_torch.load_state_dict("big", lock=lock, store=store)


def test_a_corrupt_shard_loads_nothing(tmp_path: Path) -> None:
    folder = _write_sharded(tmp_path / "snap", _state(), 3)
    store, lock = _pin(tmp_path, folder)
    reg = open_lock(lock, store=store)
    obj = store.object_path(reg.pin("big", "v1", "model-00002-of-00003.safetensors").digest.sha256)
    os.chmod(obj, 0o644)
    with open(obj, "r+b") as f:
        f.seek(-4, os.SEEK_END)
        f.write(b"\x00\x00\x80\x7f")
    with pytest.raises(IntegrityError, match=r"model-00002-of-00003\.safetensors"):
        cas_torch.load_state_dict("big", lock=lock, store=store)


def test_a_version_with_several_files_and_no_index_still_asks_which(tmp_path: Path) -> None:
    folder = tmp_path / "two"
    folder.mkdir()
    safetensors.torch.save_file(_state(1), folder / "a.safetensors")
    safetensors.torch.save_file(_state(2), folder / "b.safetensors")
    store, lock = _pin(tmp_path, folder)
    with pytest.raises(UsageError, match="say which one"):
        cas_torch.load_state_dict("big", lock=lock, store=store)


def test_an_index_naming_no_tensor_is_refused_not_an_empty_state_dict(tmp_path: Path) -> None:
    # An empty state dict loads "successfully" into a model with strict=False: refuse it.
    folder = _write_sharded(tmp_path / "snap", _state(), 2)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    store, lock = _pin(tmp_path, folder)
    with pytest.raises(FormatError, match="no tensor"):
        cas_torch.load_state_dict("big", lock=lock, store=store)
