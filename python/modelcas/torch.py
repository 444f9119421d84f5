"""Verified loading of weights with torch (the ``modelcas[torch]`` extra).

The bytes that are hashed are the bytes that are deserialized: a file is read once into private
memory, verified there (blake3; sha256 too with ``deep=True``), and only then deserialized from
that same memory. Nothing re-opens the stored path after verification, so a file swapped or
modified in between has no effect.

- ``.safetensors``: read into huge pages (pinned memory for a CUDA device, then copied without
  blocking); tensors are zero-copy views into the verified buffer (the format is a JSON header
  plus raw little-endian arrays; the header is validated strictly). The safetensors package's
  own entry points would either re-open the path or copy every tensor.
- ``.pt``/``.pth``/``.bin``: copied into a sealed snapshot, an in-memory file (``memfd``) that
  nobody can change once sealed, this process included; then ``torch.load(...,
  weights_only=True)`` maps its tensors from the snapshot (``mmap=True``) instead of copying
  them out. ``weights_only=True`` always, with no fallback, even when
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set.
- ``.onnx``: :func:`load_bytes` gives the verified bytes; :func:`onnx_session` builds an
  ``onnxruntime`` session from them.
- ``.pkl``/``.pickle``/``.joblib``: unpickled only with ``trust_pickle=True``, and only after
  verification.

torch is imported here only, and only when this module is used.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import itertools
import json
import mmap
import os
import pickle
import re
import struct
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from modelcas import hashing
from modelcas.digest import Digest
from modelcas.errors import IntegrityError, ModelcasError, UsageError
from modelcas.lockfile import split_ref
from modelcas.registry import Registry, open_lock
from modelcas.store import Store

if TYPE_CHECKING:
    import torch
    from torch import nn

Ref = Any  # str ("name", "name@v", "sha256:..."), a (bundle, key) pair, or a Pin


class UnsafeCheckpointError(ModelcasError):
    """A checkpoint needs code execution (pickle globals) to load, and that was not allowed."""

    exit_code = 1


@dataclass(frozen=True, slots=True)
class Target:
    """What to load: the stored object, what it must hash to, and names for messages."""

    path: Path
    digest: Digest
    label: str  # "cser-detector@v1.1 best.pt", "bundle.zip key segmentation", "sha256:..."
    filename: str  # decides the format by its extension


# -- resolving references ------------------------------------------------------------------


def resolve(
    ref: Ref,
    *,
    registry: Registry | None = None,
    lock: str | os.PathLike[str] | None = None,
    store: Store | None = None,
    file: str | None = None,
) -> Target:
    """Turn a reference into a stored object to load.

    Args:
        ref: ``"name"``, ``"name@version"`` (through ``registry`` or the lockfile), an address
            ``"sha256:<hex>"``, or ``(bundle, key)`` with a bundle path or an opened bundle.
        registry: resolve names through this registry (a package's); default ``lock``.
        lock: the lockfile for names; default the nearest ``cas.lock``.
        store: the store; default the registry's, else the user's.
        file: which file of a version with several.

    Raises:
        NotPinnedError, WeightsCompatibilityError, ObjectNotFoundError: the ref cannot resolve.
    """
    if isinstance(ref, tuple):
        from modelcas import bundle  # noqa: PLC0415 (bundles pull in the zip reader)

        source, key = ref
        opened = source if isinstance(source, bundle.Bundle) else bundle.open(source, store=store)
        model = opened.model(key)
        return Target(model.path, model.digest, f"{opened.path.name} key {key}", model.member_name)
    if not isinstance(ref, str):
        raise UsageError(f"cannot load {ref!r}: expected a name, an address or (bundle, key)")
    if ref.startswith("sha256:"):
        s = store or (registry.store if registry else Store())
        sha256 = s.resolve(ref)
        info = s.info(sha256)
        return Target(info.path, info.digest, f"sha256:{sha256}", file or "")
    reg = registry or open_lock(lock, store=store)
    pin = reg.pin(*split_ref(ref), file)
    path = reg.fetch(pin, verify=False)  # the bytes are verified as they are read
    known = reg.store.info(pin.digest.sha256).digest
    digest = Digest(pin.digest.sha256, pin.digest.size, pin.digest.blake3 or known.blake3)
    return Target(path, digest, pin.label, pin.file)


# -- reading once and verifying --------------------------------------------------------------


def _verify(buf: memoryview, target: Target, deep: bool) -> None:
    """Hash the buffer and compare; raises IntegrityError naming everything."""
    algos: tuple[hashing.Algo, ...] = (
        hashing.BOTH if deep or target.digest.blake3 is None else ("blake3",)
    )
    got = hashing.hash_bytes(buf, algos)
    expected = target.digest
    bad = None
    if got.size != expected.size:
        bad = f"size: expected {expected.size} bytes, found {got.size}"
    elif expected.blake3 is not None and got.blake3 != expected.blake3:
        bad = f"blake3: expected {expected.blake3}, found {got.blake3}"
    elif got.sha256 is not None and got.sha256 != expected.sha256:
        bad = f"sha256: expected {expected.sha256}, found {got.sha256}"
    if bad is not None:
        raise IntegrityError(
            f"{target.label} (sha256:{expected.sha256}) at {target.path} is corrupt: {bad}; "
            "nothing was loaded",
            hint="run `cas verify --repair`, then `cas sync` to fetch a good copy",
        )


_PARALLEL_READ = 64 << 20


def _in_parts(size: int, copy: Callable[[int, int], int]) -> int:
    """Run ``copy(start, end)`` over ``0..size``, in parallel parts when it is large.

    Most of the cost of filling fresh memory is faulting its pages in, and that spreads over
    the cores (the system calls release the GIL). ``copy`` returns how many bytes it did.

    Returns:
        How many bytes from the start were done: a short part means the source ended early.
    """
    parts = max(1, min(os.cpu_count() or 1, 8, size // _PARALLEL_READ))
    if parts == 1:
        return copy(0, size)
    step = -(-size // parts)
    ranges = [(start, min(size, start + step)) for start in range(0, size, step)]
    with ThreadPoolExecutor(parts, thread_name_prefix="modelcas-read") as pool:
        got = list(pool.map(lambda r: copy(*r), ranges))
    total = 0
    for (start, end), n in zip(ranges, got, strict=True):
        total += n
        if n < end - start:
            break
    return total


def _fill(fd: int, into: memoryview) -> int:
    """Fill ``into`` from the start of ``fd``; returns how many bytes were read."""

    def part(start: int, end: int) -> int:
        pos = start
        while pos < end and (n := os.preadv(fd, [into[pos:end]], pos)):
            pos += n
        return pos - start

    return _in_parts(len(into), part)


def _private_memory(size: int) -> mmap.mmap:
    """Fresh writable memory for ``size`` (> 0) bytes, in huge pages where the kernel allows.

    Faulting in a gigabyte page by page costs more than reading it (1 GiB here: 0.32 s in
    4 KiB pages, 0.09 s in 2 MiB pages).
    """
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        with contextlib.suppress(OSError):
            memory.madvise(mmap.MADV_HUGEPAGE)
    return memory


def _read_exactly(target: Target, into: memoryview | None) -> bytes | None:
    """Read the whole object, into ``into`` when given, else as new bytes; check the size."""
    size = target.digest.size
    try:
        fd = os.open(target.path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb", buffering=0) as f:
            if into is None:
                # bytes from read() are allocated without being zeroed first.
                data = f.read(size + 1)
                found = len(data)
            else:
                data = None
                found = _fill(fd, into) + len(os.pread(fd, 1, size))
    except OSError as e:
        raise _unreadable(target, e) from e
    if found != size:
        _wrong_size(target, found)
    return data


def _unreadable(target: Target, e: OSError) -> IntegrityError:
    return IntegrityError(
        f"{target.label}: cannot read {target.path}: {e.strerror or e}",
        hint="run `cas verify`; then `cas sync` to fetch it again",
    )


def _wrong_size(target: Target, found: int) -> NoReturn:
    size = target.digest.size
    shown = f"{found} bytes" if found < size else "more bytes"
    raise IntegrityError(
        f"{target.label} (sha256:{target.digest.sha256}) at {target.path} is corrupt: "
        f"size: expected {size} bytes, found {shown}; nothing was loaded",
        hint="run `cas verify --repair`, then `cas sync` to fetch a good copy",
    )


# memfds need Linux; torch.load reaches the snapshot through its /proc/self/fd path.
_SNAPSHOTS = hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


def _copy_into(src: int, dst: int, size: int) -> int:
    """Copy ``size`` bytes of ``src`` into ``dst`` inside the kernel; returns bytes copied."""

    def part(start: int, end: int) -> int:
        # Each part writes through its own open file description, so positions do not clash.
        out = os.open(f"/proc/self/fd/{dst}", os.O_WRONLY)
        try:
            os.lseek(out, start, os.SEEK_SET)
            pos = start
            while pos < end and (n := os.sendfile(out, src, pos, end - pos)):
                pos += n
            return pos - start
        finally:
            os.close(out)

    return _in_parts(size, part)


@contextlib.contextmanager
def snapshot(target: Target, *, deep: bool = False) -> Iterator[tuple[int, mmap.mmap]]:
    """A verified, sealed in-memory copy of a stored object: ``(fd, private mapping)``.

    The copy is sealed before it is hashed, so the verified bytes can never change. The mapping
    is copy-on-write: tensors built on it may be modified without touching the snapshot. Both
    stay valid after the ``with`` block for as long as something refers to the mapping; the
    descriptor is closed when the block ends.

    Raises:
        IntegrityError: the object is not what its digest says; nothing is returned.
    """
    size = target.digest.size
    fd = -1
    try:
        src = os.open(target.path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            fd = os.memfd_create(
                f"modelcas:{target.digest.sha256[:16]}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING
            )
            os.ftruncate(fd, size)
            found = _copy_into(src, fd, size) + len(os.pread(src, 1, size))
        finally:
            os.close(src)
    except OSError as e:
        if fd >= 0:
            os.close(fd)
        raise _unreadable(target, e) from e
    try:
        if found != size:
            _wrong_size(target, found)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        view = mmap.mmap(fd, size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ | mmap.PROT_WRITE)
        with memoryview(view) as buf:
            _verify(buf, target, deep)
        yield fd, view
    finally:
        os.close(fd)


def read_verified(target: Target, *, deep: bool = False, into: str = "bytes") -> Any:
    """Read a stored object once into memory and verify it there.

    Args:
        target: what to read.
        deep: verify sha256 as well as blake3.
        into: ``"bytes"``; ``"tensor"``, a writable ``torch.uint8`` tensor (safetensors views
            share it); or ``"pinned"``, the same in page-locked memory for GPU copies.

    Returns:
        The verified buffer.

    Raises:
        IntegrityError: the bytes do not match; nothing is returned.
    """
    if into == "bytes":
        data = _read_exactly(target, None)
        assert data is not None
        _verify(memoryview(data), target, deep)
        return data
    import torch  # noqa: PLC0415

    if into == "pinned" or not target.digest.size:
        # torch.empty does not zero the memory it hands out.
        buf = torch.empty(target.digest.size, dtype=torch.uint8, pin_memory=into == "pinned")
    else:
        buf = torch.frombuffer(_private_memory(target.digest.size), dtype=torch.uint8)
    view = buf.numpy().data
    _read_exactly(target, view)
    _verify(view, target, deep)
    return buf


def load_bytes(ref: Ref, *, deep: bool = False, **where: Any) -> bytes:
    """The verified bytes of a stored file (for ``.onnx`` and other formats)."""
    data: bytes = read_verified(resolve(ref, **where), deep=deep)
    return data


def onnx_session(ref: Ref, *, deep: bool = False, **kwargs: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` built from verified bytes.

    Raises:
        ModuleNotFoundError: onnxruntime is not installed.
    """
    where = {k: kwargs.pop(k) for k in ("registry", "lock", "store", "file") if k in kwargs}
    import onnxruntime  # noqa: PLC0415

    return onnxruntime.InferenceSession(load_bytes(ref, deep=deep, **where), **kwargs)


# -- deserializing -----------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
}
_PICKLE_EXTS = (".pkl", ".pickle", ".joblib")
_TORCH_EXTS = (".pt", ".pth", ".bin", ".ckpt")


def _format(target: Target) -> str:
    name = target.filename.lower()
    if name.endswith(".safetensors"):
        return "safetensors"
    if name.endswith(_TORCH_EXTS):
        return "torch"
    if name.endswith(_PICKLE_EXTS):
        return "pickle"
    if name.endswith(".onnx"):
        return "onnx"
    # Only chooses the decoder; the whole content is verified before it is decoded.
    with open(target.path, "rb") as f:
        head = f.read(16)
    if head[:2] == b"PK":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise UsageError(
        f"{target.label}: cannot tell the format of {target.filename or 'it'}",
        hint="name the file with its extension (.safetensors, .pt, .onnx, .pkl)",
    )


def _safetensors(buf: Any, target: Target, device: Any) -> dict[str, torch.Tensor]:
    import torch  # noqa: PLC0415

    data = buf.numpy().data if isinstance(buf, torch.Tensor) else memoryview(buf)
    where = f"{target.label}: not a valid safetensors file"
    if len(data) < 8:
        raise UsageError(f"{where} (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8 or n > 100 << 20:
        raise UsageError(f"{where} (header length {n} does not fit)")
    try:
        header = json.loads(bytes(data[8 : 8 + n]))
    except ValueError as e:
        raise UsageError(f"{where} (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise UsageError(f"{where} (header is not an object)")
    header.pop("__metadata__", None)
    base = 8 + n
    body = len(data) - base
    spans = []
    tensors: dict[str, torch.Tensor] = {}
    flat = buf if isinstance(buf, torch.Tensor) else torch.frombuffer(buf, dtype=torch.uint8)
    for name, info in header.items():
        try:
            dtype = getattr(torch, _ST_DTYPES[info["dtype"]])
            shape = [int(x) for x in info["shape"]]
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise UsageError(f"{where} (bad entry for tensor {name!r})") from None
        count = 1
        for dim in shape:
            count *= dim
        itemsize = torch.empty((), dtype=dtype).element_size()
        if (
            not 0 <= start <= end <= body
            or end - start != count * itemsize
            or any(dim < 0 for dim in shape)
        ):
            raise UsageError(
                f"{where} (tensor {name!r} has offsets {start}..{end} that do "
                f"not match its shape {shape} or the file)"
            )
        spans.append((start, end, name))
        raw = flat[base + start : base + end]
        if not count:
            tensors[name] = torch.empty(shape, dtype=dtype)
            continue
        try:
            tensors[name] = raw.view(dtype).reshape(shape)
        except RuntimeError:
            # Misaligned for its dtype (offsets are only byte-aligned): copy this one tensor.
            tensors[name] = raw.clone().view(dtype).reshape(shape)
    spans.sort()
    for (_, end_a, a), (start_b, _, b) in itertools.pairwise(spans):
        if start_b < end_a:
            raise UsageError(f"{where} (tensors {a!r} and {b!r} overlap)")
    return _to_device(tensors, device)


def _to_device(tensors: dict[str, torch.Tensor], device: Any) -> dict[str, torch.Tensor]:
    import torch  # noqa: PLC0415

    dev = torch.device(device)
    if dev.type == "cpu":
        return tensors
    moved = {k: v.to(dev, non_blocking=True) for k, v in tensors.items()}
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return moved


@contextlib.contextmanager
def _weights_only_enforced() -> Iterator[None]:
    """Keep ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` from turning weights_only off for our call."""
    saved = os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = saved


_GLOBAL = re.compile(r"(?:GLOBAL|global) ([\w.]+(?: ?\.[\w]+)*)")


def _torch_checkpoint(source: str | bytes, target: Target, device: Any) -> Any:
    """``torch.load`` from a snapshot's path (tensors map it) or from verified bytes."""
    import torch  # noqa: PLC0415

    try:
        with _weights_only_enforced():
            if isinstance(source, bytes):
                return torch.load(io.BytesIO(source), map_location=device, weights_only=True)
            with open(source, "rb") as f:
                # Only zip checkpoints (torch >= 1.6) can be mapped; older ones are read.
                mappable = f.read(4) == b"PK\x03\x04"
            return torch.load(source, map_location=device, weights_only=True, mmap=mappable)
    except pickle.UnpicklingError as e:
        found = _GLOBAL.search(str(e))
        what = found.group(1) if found else "an object torch does not allow"
        raise UnsafeCheckpointError(
            f"{target.label}: {target.filename} needs {what} to load, which could run code; "
            "it was not loaded (torch.load with weights_only=True)",
            hint="save the weights as a state dict or, better, as .safetensors "
            "(safetensors.torch.save_file(model.state_dict(), 'model.safetensors'))",
        ) from None


def _pickle(buf: Any, target: Target, trust_pickle: bool) -> Any:
    if not trust_pickle:
        raise UnsafeCheckpointError(
            f"{target.label}: {target.filename} is a pickle, and unpickling can run any code; "
            "it was not loaded",
            hint="pass trust_pickle=True for this call if you trust its author",
        )
    raw = buf
    if target.filename.lower().endswith(".joblib"):
        import joblib  # noqa: PLC0415

        return joblib.load(io.BytesIO(raw))
    return pickle.loads(raw)  # noqa: S301 (explicitly trusted by the caller, after verification)


def load(
    ref: Ref,
    *,
    device: Any = "cpu",
    deep: bool = False,
    trust_pickle: bool = False,
    **where: Any,
) -> Any:
    """Load any supported file, verified: a state dict, an ONNX model's bytes, or a pickle.

    Args:
        ref: see :func:`resolve`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        deep: verify sha256 as well as blake3.
        trust_pickle: allow unpickling ``.pkl``/``.joblib`` files (after verification).
        **where: ``registry``, ``lock``, ``store``, ``file`` as for :func:`resolve`.

    Raises:
        IntegrityError: the stored bytes are not what the pin says; nothing is deserialized.
        UnsafeCheckpointError: loading would need code execution that was not allowed.
    """
    target = resolve(ref, **where)
    cuda = str(device).startswith("cuda")
    if cuda:
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():
            raise UsageError(f"device {device!r} was asked for, but torch sees no CUDA device")
    kind = _format(target)
    if kind == "torch" and _SNAPSHOTS and target.digest.size:
        with snapshot(target, deep=deep) as (fd, _):
            return _torch_checkpoint(f"/proc/self/fd/{fd}", target, device)
    into = ("pinned" if cuda else "tensor") if kind == "safetensors" else "bytes"
    buf = read_verified(target, deep=deep, into=into)
    if kind == "safetensors":
        return _safetensors(buf, target, device)
    if kind == "torch":
        return _torch_checkpoint(buf, target, device)
    if kind == "onnx":
        return buf
    return _pickle(buf, target, trust_pickle)


def load_state_dict(
    ref: Ref, *, device: Any = "cpu", deep: bool = False, **where: Any
) -> dict[str, torch.Tensor]:
    """A verified state dict from a ``.safetensors`` or ``.pt``/``.pth`` file.

    Args:
        ref: a lock name (``"cser-detector"``, ``"cser-detector@v1.1"``), an address
            (``"sha256:..."``), or ``(bundle, key)``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        deep: verify sha256 as well as blake3.
        **where: ``registry``, ``lock``, ``store``, ``file`` as for :func:`resolve`.

    Returns:
        Tensor name to tensor, on ``device``.

    Raises:
        IntegrityError: corrupt; nothing is deserialized.
        UnsafeCheckpointError: the checkpoint needs arbitrary globals.
        UsageError: the file is not a state dict.
    """
    state = load(ref, device=device, deep=deep, **where)
    if not isinstance(state, Mapping):
        raise UsageError(
            f"{ref!r} is not a state dict (found {type(state).__name__})",
            hint="save model.state_dict(), not the model object",
        )
    return dict(state)


def load_into(
    module: nn.Module,
    ref: Ref,
    *,
    device: Any = None,
    strict: bool = True,
    deep: bool = False,
    **where: Any,
) -> nn.Module:
    """Load verified weights into ``module`` and move it to ``device``.

    Returns:
        The module, for chaining.
    """
    import torch  # noqa: PLC0415

    target_device = (
        device
        if device is not None
        else next((p.device for p in module.parameters()), torch.device("cpu"))
    )
    state = load_state_dict(ref, device=target_device, deep=deep, **where)
    module.to(target_device)
    module.load_state_dict(state, strict=strict)
    return module
