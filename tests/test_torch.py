"""Verified loading with real torch: every format, every kind of ref, and every refusal."""

from __future__ import annotations

import os
import pickle
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import modelcas.torch as cas_torch
from modelcas import IntegrityError, Lockfile, ModelcasError, Registry, Store
from modelcas.loader import reader
from modelcas.torch import UnsafeCheckpointError, _device


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2))


class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


class Custom:
    """A harmless class that weights_only loading still cannot construct."""

    def __init__(self) -> None:
        self.w = torch.ones(2)


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Registry, Path, dict[str, torch.Tensor]]]:
    """A store and a lockfile pinning the same weights in several formats."""
    store = Store(tmp_path / "store")
    state = _model().state_dict()
    files = tmp_path / "files"
    files.mkdir()
    safetensors.torch.save_file(state, files / "model.safetensors")
    torch.save(state, files / "model.pt")
    with open(files / "model.pkl", "wb") as f:
        pickle.dump({"classes": ["cell", "clump"]}, f)
    (files / "model.onnx").write_bytes(b"\x08\x07onnx-ish bytes")
    lock = Lockfile(path=tmp_path / "cas.lock")
    for i, name in enumerate(("model.safetensors", "model.pt", "model.pkl", "model.onnx")):
        d = store.add_file(files / name).info.digest
        lock.pin(name.split(".")[1], f"v1.{i}", {name: d})
    lock.save()
    yield Registry(lock, store), files, state


def _equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return sorted(a) == sorted(b) and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_round_trip_every_kind_of_ref(
    project: tuple[Registry, Path, dict[str, torch.Tensor]], fmt: str
) -> None:
    registry, _, state = project
    store = registry.store
    pin = registry.pin(fmt)
    refs: list[dict[str, object]] = [
        {"ref": fmt, "registry": registry},
        {"ref": f"{fmt}@{pin.version}", "registry": registry},
        {"ref": fmt, "lock": registry.lock.path, "store": store},
        {"ref": pin.digest.address, "store": store, "file": pin.file},
    ]
    for kwargs in refs:
        ref = kwargs.pop("ref")
        assert _equal(cas_torch.load_state_dict(ref, **kwargs), state), kwargs  # type: ignore[arg-type]
    assert _equal(cas_torch.load(fmt, registry=registry), state)
    model = cas_torch.load_into(_model(seed=99), fmt, registry=registry)
    assert torch.equal(model[0].weight, state["0.weight"])


def test_safetensors_matches_the_reference_library(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
) -> None:
    registry, files, _ = project
    ours = cas_torch.load_state_dict("safetensors", registry=registry)
    theirs = safetensors.torch.load_file(files / "model.safetensors")
    assert _equal(ours, theirs)
    assert all(ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape for k in ours)


def test_odd_dtypes_and_alignment(tmp_path: Path) -> None:
    state = {
        "a_half": torch.arange(3, dtype=torch.float16),
        "b_float": torch.arange(5, dtype=torch.float32),
        "c_bf16": torch.ones(7, dtype=torch.bfloat16),
        "d_int8": torch.arange(3, dtype=torch.int8),
        "e_long": torch.arange(3, dtype=torch.int64),
        "f_bool": torch.tensor([True, False]),
        "g_empty": torch.empty(0, 4),
    }
    p = tmp_path / "odd.safetensors"
    safetensors.torch.save_file(state, p)
    store = Store(tmp_path / "s")
    d = store.add_file(p).info.digest
    got = cas_torch.load_state_dict(d.address, store=store, file=p.name)
    assert _equal(got, safetensors.torch.load_file(p))


def test_onnx_bytes_and_trusted_pickle(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
) -> None:
    registry, files, _ = project
    assert cas_torch.load_bytes("onnx", registry=registry) == (files / "model.onnx").read_bytes()
    assert cas_torch.load("onnx", registry=registry) == (files / "model.onnx").read_bytes()
    with pytest.raises(UnsafeCheckpointError, match="trust_pickle=True"):
        cas_torch.load("pkl", registry=registry)
    assert cas_torch.load("pkl", registry=registry, trust_pickle=True) == {
        "classes": ["cell", "clump"]
    }


def test_flipped_byte_refused_by_every_path(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
) -> None:
    registry, _, _ = project
    for fmt in ("safetensors", "pt", "pkl", "onnx"):
        pin = registry.pin(fmt)
        obj = registry.store.object_path(pin.digest.sha256)
        obj.chmod(0o644)
        data = bytearray(obj.read_bytes())
        data[len(data) // 2] ^= 0x01
        obj.write_bytes(bytes(data))
        calls = [
            lambda f=fmt: cas_torch.load(f, registry=registry, trust_pickle=True),
            lambda f=fmt: cas_torch.load_many([f], registry=registry, trust_pickle=True),
            lambda f=fmt: cas_torch.load_bytes(f, registry=registry),
            lambda p=pin: cas_torch.load(
                p.digest.address, store=registry.store, file=p.file, trust_pickle=True
            ),
        ]
        for call in calls:
            with pytest.raises(IntegrityError) as e:
                call()
            msg = str(e.value)
            assert pin.digest.sha256 in msg and "blake3" in msg and "nothing was loaded" in msg
            assert pin.file in msg or pin.digest.address in msg


def test_truncated_object_refused(project: tuple[Registry, Path, dict[str, torch.Tensor]]) -> None:
    registry, _, _ = project
    obj = registry.store.object_path(registry.pin("safetensors").digest.sha256)
    obj.chmod(0o644)
    os.truncate(obj, obj.stat().st_size - 1)
    with pytest.raises(IntegrityError, match="size"):
        cas_torch.load_state_dict("safetensors", registry=registry)


def test_snapshot_cannot_be_changed_after_verification(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
) -> None:
    registry, _, _ = project
    target = cas_torch.resolve("pt", registry=registry)
    with cas_torch.snapshot(target) as (fd, view):
        before = bytes(view[:64])
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"x" * 8, 0)
        with pytest.raises(PermissionError):
            os.ftruncate(fd, 1)
        other = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY)  # another way in: also sealed
        try:
            with pytest.raises(PermissionError):
                os.write(other, b"x")
        finally:
            os.close(other)
        view[:8] = b"y" * 8  # a private copy-on-write page: the snapshot itself is untouched
        assert os.pread(fd, 64, 0) == before


def test_snapshot_refuses_a_corrupt_object(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
) -> None:
    registry, _, _ = project
    target = cas_torch.resolve("pt", registry=registry)
    target.path.chmod(0o644)
    with target.path.open("r+b") as f:
        f.seek(target.digest.size // 2)
        byte = f.read(1)
        f.seek(target.digest.size // 2)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(IntegrityError, match="blake3"), cas_torch.snapshot(target):
        pass


def test_swap_after_verification_has_no_effect(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, _, state = project
    other = tmp = registry.store.root.parent / "other.safetensors"
    safetensors.torch.save_file(_model(seed=1).state_dict(), tmp)
    original = reader.check

    def check_then_swap(target: cas_torch.Target, *args: object) -> None:
        original(target, *args)  # type: ignore[arg-type]
        # An attacker replaces the object the moment verification passes.
        target.path.chmod(0o644)
        target.path.write_bytes(other.read_bytes())

    monkeypatch.setattr(reader, "check", check_then_swap)
    for fmt in ("safetensors", "pt"):
        assert _equal(cas_torch.load_state_dict(fmt, registry=registry), state)


def test_pt_tensors_are_views_of_one_private_copy(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A .pt loads from the one buffer it was read and hashed into: no snapshot file, no
    second copy (every tensor lies inside one allocation of the file's size)."""
    registry, _, state = project
    assert cas_torch.can_load_in_memory(), "this torch's zip loader takes given memory"

    def no_snapshot(*args: object, **kwargs: object) -> None:
        raise AssertionError("the sealed snapshot is only for a torch that cannot do this")

    monkeypatch.setattr(cas_torch, "snapshot", no_snapshot)
    monkeypatch.setattr(os, "memfd_create", no_snapshot)
    got = cas_torch.load_state_dict("pt", registry=registry)
    assert _equal(got, state)
    size = registry.pin("pt").digest.size
    bases = {t.untyped_storage()._cdata for t in got.values()}
    starts = [t.data_ptr() for t in got.values()]
    ends = [t.data_ptr() + t.untyped_storage().nbytes() for t in got.values()]
    assert max(ends) - min(starts) <= size, "all tensors inside one buffer of the file's size"
    assert len(bases) == len(got)  # each its own storage slice, as torch.load(mmap=True) makes
    got["0.weight"].add_(1)  # writable, and private: the next load is unchanged
    assert _equal(cas_torch.load_state_dict("pt", registry=registry), state)


def test_pt_without_the_in_memory_loader_uses_the_snapshot(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, _, state = project
    made = []
    real = os.memfd_create

    def counted(*args: object) -> int:
        made.append(args)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cas_torch, "can_load_in_memory", lambda: False)
    monkeypatch.setattr(os, "memfd_create", counted)
    assert _equal(cas_torch.load_state_dict("pt", registry=registry), state)
    assert len(made) == 1


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_old_format_and_torchscript_checkpoints(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    state = _model(seed=2).state_dict()
    old = tmp_path / "old.pt"
    torch.save(state, old, _use_new_zipfile_serialization=False)
    d = store.add_file(old).info.digest
    assert _equal(cas_torch.load_state_dict(d.address, store=store, file=old.name), state)
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(_model()), script)
    d = store.add_file(script).info.digest
    with pytest.raises(UnsafeCheckpointError, match=r"script\.pt is a TorchScript archive"):
        cas_torch.load(d.address, store=store, file=script.name)


def test_malicious_pickle_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    store = Store(tmp_path / "store")
    files = tmp_path / "files"
    files.mkdir()
    with open(files / "evil.pkl", "wb") as f:
        pickle.dump(Evil(marker), f)
    torch.save({"w": torch.ones(2), "x": Evil(marker)}, files / "evil.pt")
    lock = Lockfile(path=tmp_path / "cas.lock")
    for i, name in enumerate(("evil.pkl", "evil.pt")):
        lock.pin(name.replace(".", "-"), f"v{i}", {name: store.add_file(files / name).info.digest})
    lock.save()
    registry = Registry(lock, store)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    attempts = [
        lambda: cas_torch.load("evil-pkl", registry=registry),
        lambda: cas_torch.load("evil-pkl", registry=registry),
        lambda: cas_torch.load_state_dict("evil-pt", registry=registry),
        lambda: cas_torch.load("evil-pt", registry=registry),
        lambda: cas_torch.load(
            "evil-pt", registry=registry, trust_pickle=True
        ),  # .pt is always weights_only
    ]
    for attempt in attempts:
        with pytest.raises(UnsafeCheckpointError):
            attempt()
        assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError) as e:
        cas_torch.load("evil-pt", registry=registry)
    assert "evil.pt" in str(e.value) and "system" in str(e.value)
    assert "safetensors" in str(e.value)
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1", "the user's setting survives"
    # The test can fail: trusting the pickle really runs it.
    cas_torch.load("evil-pkl", registry=registry, trust_pickle=True)
    assert marker.exists()


def test_checkpoint_needing_globals_names_them(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    p = tmp_path / "custom.pt"
    torch.save({"obj": Custom()}, p)
    d = store.add_file(p).info.digest
    with pytest.raises(UnsafeCheckpointError) as e:
        cas_torch.load(d.address, store=store, file=p.name)
    assert "Custom" in str(e.value) and "custom.pt" in str(e.value)


def test_bad_safetensors_header_is_a_clear_error(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    p = tmp_path / "bad.safetensors"
    p.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    d = store.add_file(p).info.digest
    with pytest.raises(Exception, match="not a valid safetensors file"):
        cas_torch.load_state_dict(d.address, store=store, file=p.name)


def test_cuda_request_without_cuda_is_clear(
    project: tuple[Registry, Path, dict[str, torch.Tensor]],
) -> None:
    registry, _, _ = project
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; test_cuda_load covers it")
    with pytest.raises(Exception, match="no CUDA device"):
        cas_torch.load_state_dict("safetensors", registry=registry, device="cuda")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
def test_cuda_load(project: tuple[Registry, Path, dict[str, torch.Tensor]]) -> None:
    registry, _, state = project
    for fmt in ("safetensors", "pt"):
        got = cas_torch.load_state_dict(fmt, registry=registry, device="cuda")
        assert all(t.device.type == "cuda" for t in got.values())
        assert _equal({k: v.cpu() for k, v in got.items()}, state)
    model = cas_torch.load_into(_model(seed=5), "safetensors", registry=registry, device="cuda:0")
    assert next(model.parameters()).device.type == "cuda"


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("chunk", [1 << 16, 64 << 20])
def test_cuda_pipeline_streams_in_chunks(tmp_path: Path, chunk: int) -> None:
    state = _big_state(seed=3, n=8, each=1_000_000)
    p = tmp_path / "big.safetensors"
    safetensors.torch.save_file(state, p)
    store = Store(tmp_path / "store")
    target = cas_torch.resolve(store.add_file(p).info.digest.address, store=store, file=p.name)
    dev = torch.device("cuda")
    flat, _ = _device.stream(target, _device.CudaCopier(dev), chunk=chunk)
    assert flat.device.type == "cuda"
    assert bytes(flat.cpu().numpy()) == p.read_bytes()
    got = cas_torch._safetensors(target, dev, True, copier=_device.CudaCopier(dev))
    assert _equal({k: v.cpu() for k, v in got.items()}, state)
    loaded = cas_torch.load_state_dict(target, device="cuda")
    assert _equal({k: v.cpu() for k, v in loaded.items()}, state)


@pytest.mark.cuda
@needs_cuda
def test_cuda_mismatch_returns_nothing_and_frees_device_memory(tmp_path: Path) -> None:
    import gc

    state = _big_state(seed=4, n=4, each=2_000_000)
    p = tmp_path / "big.safetensors"
    safetensors.torch.save_file(state, p)
    store = Store(tmp_path / "store")
    d = store.add_file(p).info.digest
    obj = store.object_path(d.sha256)
    obj.chmod(0o644)
    with obj.open("r+b") as f:
        f.seek(d.size - 3)
        f.write(b"\xee")
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    with pytest.raises(IntegrityError, match="blake3") as caught:
        cas_torch.load_state_dict(d.address, store=store, file=p.name, device="cuda")
    gc.collect()
    assert caught.tb is not None
    assert torch.cuda.memory_allocated() == before


@pytest.mark.cuda
@needs_cuda
def test_cuda_load_many(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    refs = {}
    states = {}
    for i in range(3):
        states[i] = _big_state(seed=10 + i, n=3, each=100_000)
        p = tmp_path / f"m{i}.safetensors"
        safetensors.torch.save_file(states[i], p)
        refs[i] = cas_torch.resolve(store.add_file(p).info.digest.address, store=store, file=p.name)
    got = cas_torch.load_many(refs, device="cuda")
    for i, state in states.items():
        assert _equal({k: v.cpu() for k, v in got[i].items()}, state)


def test_load_from_a_bundle_key(tmp_path: Path) -> None:
    from modelcas import bundle as bundles

    state = _model(seed=3).state_dict()
    safetensors.torch.save_file(state, tmp_path / "seg.safetensors")
    torch.save(state, tmp_path / "cls.pt")
    (tmp_path / "cfg.yml").write_text(
        "segmentation:\n  model_path: seg.safetensors\n  model_type: MonaiUnet\n"
        "classifier:\n  model_path: cls.pt\n  model_type: FlexResNet\n"
    )
    out = bundles.create_model_bundle(tmp_path / "cfg.yml", tmp_path / "b.zip", auto_date=False)
    store = Store(tmp_path / "store")
    for key in ("segmentation", "classifier"):
        assert _equal(cas_torch.load_state_dict((out, key), store=store), state)
    opened = bundles.open(out, store=store)
    assert _equal(cas_torch.load_state_dict((opened, "segmentation")), state)
    obj = opened.model("classifier").path
    obj.chmod(0o644)
    data = obj.read_bytes()
    obj.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(IntegrityError, match=r"b\.zip#classifier"):
        cas_torch.load_state_dict((opened, "classifier"))


def test_large_file_read_in_parallel_and_truncation(tmp_path: Path) -> None:
    # Over 128 MiB, so the buffer is filled by several threads.
    state = {"a": torch.randn(17 << 20), "b": torch.randn(17 << 20)}
    p = tmp_path / "big.safetensors"
    safetensors.torch.save_file(state, p)
    store = Store(tmp_path / "store")
    d = store.add_file(p).info.digest
    assert _equal(cas_torch.load_state_dict(d.address, store=store, file=p.name), state)
    obj = store.object_path(d.sha256)
    obj.chmod(0o644)
    os.truncate(obj, d.size - (40 << 20))
    with pytest.raises(IntegrityError, match="size: expected"):
        cas_torch.load_state_dict(d.address, store=store, file=p.name)


# -- the safetensors header, against the reference ----------------------------------------------

_T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def _raw_st(header: object = None, body: bytes = b"", raw: bytes | None = None) -> bytes:
    import json

    text = raw if raw is not None else json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


# Each refused by safetensors.load_file, and by us with a FormatError naming the file.
_REFUSED = {
    "hole between tensors": _raw_st({"a": _T, "b": {**_T, "data_offsets": [12, 20]}}, b"\0" * 20),
    "hole before the first": _raw_st({"a": {**_T, "data_offsets": [4, 12]}}, b"\0" * 12),
    "trailing bytes": _raw_st({"a": _T}, b"\0" * 8 + b"polyglot"),
    "trailing bytes, no tensors": _raw_st({}, b"x"),
    "overlap": _raw_st({"a": _T, "b": {**_T, "data_offsets": [4, 12]}}, b"\0" * 12),
    "past the end": _raw_st({"a": {**_T, "data_offsets": [0, 8]}}, b"\0" * 4),
    "deep nesting": _raw_st(raw=b'{"a": {"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"),
    "deep nesting in metadata": _raw_st(
        raw=b'{"__metadata__": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    ),
    "header length past the file": (10**9).to_bytes(8, "little") + b"{}",
    "header over the limit": (200_000_000).to_bytes(8, "little") + b"{}" + b" " * 16,
    "too short": b"\x02\0\0",
    "not an object": _raw_st(raw=b"[1]"),
    "not UTF-8": _raw_st(raw=b'{"\xff": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}'),
    "metadata not strings": _raw_st({"__metadata__": {"a": 1}, "a": _T}, b"\0" * 8),
    "unknown dtype": _raw_st({"a": {**_T, "dtype": "Q9"}}, b"\0" * 8),
    "bool in shape": _raw_st({"a": {**_T, "shape": [True, 2]}}, b"\0" * 8),
    "float in shape": _raw_st({"a": {**_T, "shape": [2.0]}}, b"\0" * 8),
    "negative shape": _raw_st({"a": {**_T, "shape": [-2]}}, b"\0" * 8),
    "three offsets": _raw_st({"a": {**_T, "data_offsets": [0, 8, 8]}}, b"\0" * 8),
    "size does not match shape": _raw_st({"a": {**_T, "shape": [3]}}, b"\0" * 8),
    "missing field": _raw_st({"a": {"dtype": "F32", "shape": [2]}}, b"\0" * 8),
    "NaN": _raw_st(raw=b'{"__metadata__": {"a": NaN}}'),
    "UTF-16": _raw_st(raw='{"__metadata__": {}}'.encode("utf-16")),
}
# Accepted by both.
_ACCEPTED = {
    "padding spaces": _raw_st(
        raw=b'{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}   ', body=b"\0" * 8
    ),
    "metadata": _raw_st({"__metadata__": {"format": "pt"}, "a": _T}, b"\0" * 8),
    "extra field": _raw_st({"a": {**_T, "x": {"y": [1]}}}, b"\0" * 8),
    "empty tensors": _raw_st(
        {"a": _T, "b": {"dtype": "F32", "shape": [0, 3], "data_offsets": [8, 8]}}, b"\0" * 8
    ),
    "scalar and unaligned": _raw_st(
        {
            "a": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [1, 9]},
        },
        b"\x07" + b"\0" * 8,
    ),
    "no tensors": _raw_st({}),
    "unicode name": _raw_st({"é": _T}, b"\0" * 8),
}


def _stored(tmp_path: Path, data: bytes, name: str = "m.safetensors") -> tuple[Store, str]:
    p = tmp_path / name
    p.write_bytes(data)
    store = Store(tmp_path / "store")
    return store, store.add_file(p).info.digest.address


@pytest.mark.parametrize("case", sorted(_REFUSED))
def test_header_refused_like_the_reference(tmp_path: Path, case: str) -> None:
    from modelcas.errors import FormatError

    data = _REFUSED[case]
    (tmp_path / "ref.safetensors").write_bytes(data)
    with pytest.raises(Exception):  # noqa: B017 (the reference raises several types)
        safetensors.torch.load_file(tmp_path / "ref.safetensors")
    store, address = _stored(tmp_path, data)
    with pytest.raises(FormatError, match="not a valid safetensors file") as e:
        cas_torch.load_state_dict(address, store=store, file="m.safetensors")
    assert address in str(e.value)
    assert e.value.exit_code == 1


def test_header_stricter_than_the_reference_on_duplicate_names(tmp_path: Path) -> None:
    from modelcas.errors import FormatError

    entry = b'{"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}'
    data = _raw_st(raw=b'{"a": ' + entry + b', "a": ' + entry + b"}", body=b"\0" * 8)
    (tmp_path / "ref.safetensors").write_bytes(data)
    assert list(safetensors.torch.load_file(tmp_path / "ref.safetensors")) == ["a"]
    store, address = _stored(tmp_path, data)
    # Which of two entries a reader takes differs between parsers: refuse the ambiguity.
    with pytest.raises(FormatError, match="duplicate"):
        cas_torch.load_state_dict(address, store=store, file="m.safetensors")


@pytest.mark.parametrize("case", sorted(_ACCEPTED))
def test_header_accepted_like_the_reference(tmp_path: Path, case: str) -> None:
    data = _ACCEPTED[case]
    (tmp_path / "ref.safetensors").write_bytes(data)
    theirs = safetensors.torch.load_file(tmp_path / "ref.safetensors")
    store, address = _stored(tmp_path, data)
    ours = cas_torch.load_state_dict(address, store=store, file="m.safetensors")
    assert _equal(ours, theirs)
    assert all(ours[k].dtype == theirs[k].dtype and ours[k].shape == theirs[k].shape for k in ours)


# -- the device pipeline, run on the CPU -------------------------------------------------------


class RecordingCopier(_device.HostCopier):
    """The CPU copier, recording what the pipeline asks of the device and what it allocated."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.in_flight: set[int] = set()
        self.allocated: list[weakref.ref[torch.Tensor]] = []

    def alloc(self, size: int) -> torch.Tensor:
        t = super().alloc(size)
        self.allocated.append(weakref.ref(t))
        return t

    def copy(self, slot: int, dst: torch.Tensor, src: torch.Tensor) -> None:
        assert slot not in self.in_flight, "a staging buffer was refilled before its copy ended"
        self.calls.append(("copy", slot))
        self.in_flight.add(slot)
        super().copy(slot, dst, src)

    def wait(self, slot: int) -> None:
        self.calls.append(("wait", slot))
        self.in_flight.discard(slot)

    def drain(self) -> None:
        self.calls.append(("drain", -1))
        self.in_flight.clear()


def _big_state(seed: int = 0, n: int = 6, each: int = 300_000) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {f"layer{i}.weight": torch.randn(each + i, generator=gen) for i in range(n)}


@pytest.mark.parametrize("chunk", [1024, 1 << 16, 1 << 20, 64 << 20])
def test_chunked_pipeline_on_cpu_matches_the_reference(tmp_path: Path, chunk: int) -> None:
    state = _big_state()
    p = tmp_path / "big.safetensors"
    safetensors.torch.save_file(state, p, metadata={"pad": "x" * 3000})  # header > 1 chunk
    store = Store(tmp_path / "store")
    target = cas_torch.resolve(store.add_file(p).info.digest.address, store=store, file=p.name)
    copier = RecordingCopier()
    flat, head = _device.stream(target, copier, chunk=chunk)
    assert bytes(flat.numpy()) == p.read_bytes()
    assert head == p.read_bytes()[: len(head)] and len(head) >= 3000
    got = cas_torch._safetensors(target, torch.device("cpu"), False, copier=RecordingCopier())
    assert _equal(got, safetensors.torch.load_file(p))
    copies = [c for c in copier.calls if c[0] == "copy"]
    assert len(copies) == -(-target.digest.size // chunk)
    assert copier.calls[-1] == ("drain", -1)


def test_chunked_pipeline_refuses_and_frees_on_mismatch(tmp_path: Path) -> None:
    import gc

    state = _big_state(seed=1)
    p = tmp_path / "big.safetensors"
    safetensors.torch.save_file(state, p)
    store = Store(tmp_path / "store")
    d = store.add_file(p).info.digest
    target = cas_torch.resolve(d.address, store=store, file=p.name)
    obj = store.object_path(d.sha256)
    obj.chmod(0o644)
    with obj.open("r+b") as f:
        f.seek(d.size - 5)
        f.write(b"\xff")
    for deep in (False, True):
        copier = RecordingCopier()
        with pytest.raises(IntegrityError, match="blake3" if not deep else "corrupt") as caught:
            _device.stream(target, copier, chunk=1 << 16, deep=deep)
        gc.collect()
        # Freed while the caller still holds the error (and its traceback's frames).
        assert caught.tb is not None
        assert [r() for r in copier.allocated] == [None], "device memory outlived the error"
        assert copier.calls[-1] == ("drain", -1)
    # Truncated: the size is named, and nothing is returned either.
    os.truncate(obj, d.size - 100)
    copier = RecordingCopier()
    with pytest.raises(
        IntegrityError, match=f"size: expected {d.size} bytes, found {d.size - 100}"
    ):
        _device.stream(target, copier, chunk=1 << 16)
    gc.collect()
    assert [r() for r in copier.allocated] == [None]


def test_every_path_refuses_short_and_long_objects(tmp_path: Path) -> None:
    state = _big_state(seed=2, n=2, each=1000)
    files = {"st": tmp_path / "m.safetensors", "pt": tmp_path / "m.pt"}
    safetensors.torch.save_file(state, files["st"])
    torch.save(state, files["pt"])
    store = Store(tmp_path / "store")
    for p in files.values():
        d = store.add_file(p).info.digest
        obj = store.object_path(d.sha256)
        obj.chmod(0o644)
        good = obj.read_bytes()
        for bad in (good[:-1], good + b"\0"):
            obj.write_bytes(bad)
            target = cas_torch.resolve(d.address, store=store, file=p.name)
            with pytest.raises(IntegrityError, match="size: expected"):
                cas_torch.load(target)
            with pytest.raises(IntegrityError, match="size: expected"):
                cas_torch.load_bytes(target)
            with pytest.raises(IntegrityError, match="size: expected"):
                cas_torch.read_verified(target, into="tensor")
        obj.write_bytes(good)
        assert _equal(cas_torch.load_state_dict(d.address, store=store, file=p.name), state)


# -- every source, one loader ------------------------------------------------------------------


def test_every_source_ends_in_the_same_verified_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelcas import bundle as bundles

    state = _model(seed=7).state_dict()
    safetensors.torch.save_file(state, tmp_path / "seg.safetensors")
    torch.save(state, tmp_path / "cls.pt")
    store = Store(tmp_path / "store")
    # A package that ships its own registry.
    site = tmp_path / "site"
    pkg = site / "casweights_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    lock = Lockfile(path=pkg / "weights.lock")
    d = store.add_file(tmp_path / "seg.safetensors").info.digest
    lock.pin("seg", "v1", {"seg.safetensors": d})
    lock.save()
    monkeypatch.syspath_prepend(str(site))
    from_package = Registry.from_package("casweights_pkg", store=store)
    # A bundle, and a pipeline config naming it.
    (tmp_path / "cfg.yml").write_text(
        "segmentation:\n  model_path: seg.safetensors\n  model_type: MonaiUnet\n"
        "classifier:\n  model_path: cls.pt\n  model_type: FlexResNet\n"
    )
    out = bundles.create_model_bundle(tmp_path / "cfg.yml", tmp_path / "b.zip", auto_date=False)
    (tmp_path / "pipeline.yml").write_text(f"models:\n  model_collection: {out.name}\n")
    opened = bundles.open(out, store=store)
    refs: list[tuple[object, dict[str, object]]] = [
        ("seg", {"registry": from_package}),
        ("seg@v1", {"registry": from_package}),
        ("seg", {"lock": pkg / "weights.lock", "store": store}),
        (d.address, {"store": store, "file": "seg.safetensors"}),
        ((out, "segmentation"), {"store": store}),
        ((opened, "classifier"), {}),
        ((tmp_path / "pipeline.yml", "segmentation"), {"store": store}),
        (({"models": {"model_collection": str(out)}}, "classifier"), {"store": store}),
        (opened.model("segmentation"), {}),
        (cas_torch.resolve(d.address, store=store, file="x.safetensors"), {}),
    ]
    for ref, where in refs:
        target = cas_torch.resolve(ref, **where)  # type: ignore[arg-type]
        assert isinstance(target, cas_torch.Target) and target.digest.size > 0
        assert _equal(cas_torch.load_state_dict(ref, **where), state), ref  # type: ignore[arg-type]
    for ref, why in (
        ("hf://org/repo/model.safetensors", "expected hf://ORG/NAME"),
        ("hf://org/repo", "name a revision"),
        ("oci://registry/x", "name a tag or a digest"),
    ):
        with pytest.raises(ModelcasError, match=why):
            cas_torch.resolve(ref, store=store)
    with pytest.raises(ModelcasError, match="no model 'nope'"):
        cas_torch.resolve((tmp_path / "pipeline.yml", "nope"), store=store)


def test_load_many_and_a_whole_bundle_at_once(tmp_path: Path) -> None:
    from modelcas import bundle as bundles

    states = {f"m{i}": _big_state(seed=i, n=3, each=50_000) for i in range(4)}
    lines = []
    for i, (key, state) in enumerate(states.items()):
        ext = ".pt" if i % 2 else ".safetensors"
        path = tmp_path / f"{key}{ext}"
        (torch.save if i % 2 else safetensors.torch.save_file)(state, path)
        lines.append(f"{key}:\n  model_path: {path.name}\n  model_type: T{i}\n")
    (tmp_path / "cfg.yml").write_text("".join(lines))
    out = bundles.create_model_bundle(tmp_path / "cfg.yml", tmp_path / "b.zip", auto_date=False)
    store = Store(tmp_path / "store")
    got = cas_torch.load_bundle(out, store=store)
    assert list(got) == list(states)
    assert all(_equal(got[k], states[k]) for k in states)
    opened = bundles.open(out, store=store)
    many = cas_torch.load_many({k: (opened, k) for k in states}, workers=3)
    assert all(_equal(many[k], states[k]) for k in states)
    assert _equal(cas_torch.load_bundle(opened, keys=["m1"])["m1"], states["m1"])
    # One corrupt model: the whole call fails, naming it, and returns nothing.
    obj = opened.model("m2").path
    obj.chmod(0o644)
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 1
    obj.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"b\.zip key m2"):
        cas_torch.load_bundle(opened)


# -- ONNX through onnxruntime ------------------------------------------------------------------


def _tiny_onnx() -> bytes:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(3, 2), name="W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def test_onnx_session_runs_from_verified_bytes(tmp_path: Path) -> None:
    import numpy as np

    p = tmp_path / "tiny.onnx"
    p.write_bytes(_tiny_onnx())
    store = Store(tmp_path / "store")
    d = store.add_file(p).info.digest
    lock = Lockfile(path=tmp_path / "cas.lock")
    lock.pin("tiny", "v1", {"tiny.onnx": d})
    lock.save()
    registry = Registry(lock, store)
    session = cas_torch.onnx_session("tiny", registry=registry, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([[1, 2, 3]], dtype=np.float32)})
    assert y.tolist() == [[16.0, 22.0]]
    assert cas_torch.load("tiny", registry=registry) == p.read_bytes()
    obj = store.object_path(d.sha256)
    obj.chmod(0o644)
    obj.write_bytes(p.read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError, match=r"tiny@v1 tiny\.onnx"):
        cas_torch.onnx_session("tiny", registry=registry)


# -- without torch -----------------------------------------------------------------------------


def test_without_torch_loading_says_what_to_install(tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    p = tmp_path / "m.safetensors"
    safetensors.torch.save_file({"a": torch.ones(2)}, p)
    store = Store(tmp_path / "store")
    address = store.add_file(p).info.digest.address
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # as if torch were not installed
        import modelcas, modelcas.store, modelcas.registry, modelcas.bundle, modelcas.loader
        import modelcas.torch as cas_torch
        from modelcas.errors import MissingExtraError
        store = modelcas.Store({str(store.root)!r})
        assert cas_torch.load_bytes({address!r}, store=store)[:8]
        try:
            cas_torch.load_state_dict({address!r}, store=store, file="m.safetensors")
        except MissingExtraError as e:
            assert isinstance(e, ImportError)
            print(e)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert "pip install 'modelcas[torch]'" in out.stdout


def test_nothing_else_imports_the_torch_adapter() -> None:
    import subprocess
    import sys

    code = (
        "import sys, modelcas, modelcas.store, modelcas.registry, modelcas.bundle, "
        "modelcas.loader, modelcas.cli\n"
        "assert 'torch' not in sys.modules and 'modelcas.torch' not in sys.modules, "
        "[m for m in sys.modules if 'torch' in m]"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_reader_refuses_bad_buffers_and_reuse(tmp_path: Path) -> None:
    from modelcas import _core

    p = tmp_path / "f"
    p.write_bytes(b"x" * 5000)
    r = _core.FileReader(p, 5000)
    with pytest.raises(BufferError):
        r.read_into(b"\0" * 5000)  # read-only
    with pytest.raises(ValueError, match="needs 5000"):
        r.read_into(bytearray(10))
    assert r.read_bytes() == b"x" * 5000
    assert r.finish()[:2] == (5000, False)
    with pytest.raises(ValueError, match="finished"):
        r.finish()
    with pytest.raises(ValueError, match="power of two"):
        _core.FileReader(p, 5000, piece=3000)
    with pytest.raises(FileNotFoundError):
        _core.FileReader(tmp_path / "missing", 1)
