"""Verified loading with real torch: every format, every kind of ref, and every refusal."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

import modelcas.torch as cas_torch
from modelcas import IntegrityError, Lockfile, Registry, Store
from modelcas.loader import reader
from modelcas.torch import UnsafeCheckpointError


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
    assert _equal(registry.load(fmt), state)
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
    assert registry.load("onnx") == (files / "model.onnx").read_bytes()
    with pytest.raises(UnsafeCheckpointError, match="trust_pickle=True"):
        registry.load("pkl")
    assert registry.load("pkl", trust_pickle=True) == {"classes": ["cell", "clump"]}


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
            lambda f=fmt: registry.load(f, trust_pickle=True),
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
        lambda: registry.load("evil-pkl"),
        lambda: cas_torch.load("evil-pkl", registry=registry),
        lambda: cas_torch.load_state_dict("evil-pt", registry=registry),
        lambda: registry.load("evil-pt"),
        lambda: registry.load("evil-pt", trust_pickle=True),  # .pt is always weights_only
    ]
    for attempt in attempts:
        with pytest.raises(UnsafeCheckpointError):
            attempt()
        assert not marker.exists()
    with pytest.raises(UnsafeCheckpointError) as e:
        registry.load("evil-pt")
    assert "evil.pt" in str(e.value) and "system" in str(e.value)
    assert "safetensors" in str(e.value)
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1", "the user's setting survives"
    # The test can fail: trusting the pickle really runs it.
    registry.load("evil-pkl", trust_pickle=True)
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


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_load(project: tuple[Registry, Path, dict[str, torch.Tensor]]) -> None:
    registry, _, state = project
    for fmt in ("safetensors", "pt"):
        got = cas_torch.load_state_dict(fmt, registry=registry, device="cuda")
        assert all(t.device.type == "cuda" for t in got.values())
        assert _equal({k: v.cpu() for k, v in got.items()}, state)
    model = cas_torch.load_into(_model(seed=5), "safetensors", registry=registry, device="cuda:0")
    assert next(model.parameters()).device.type == "cuda"


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
    with pytest.raises(IntegrityError, match=r"b\.zip key classifier"):
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
