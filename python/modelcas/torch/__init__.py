"""Verified loading of weights with torch (the ``modelcas[torch]`` extra).

The bytes that are hashed are the bytes that are deserialized: a file is read once into memory
this process owns and hashed as it lands (blake3 on all cores; sha256 too with ``deep=True``),
and only then deserialized from that same memory. Nothing re-opens the stored path after
verification, so a file swapped or modified in between has no effect.

- ``.safetensors``: read into huge pages with the hash computed in the same pass; tensors are
  views of that buffer. The header is validated as strictly as the reference does
  (:mod:`modelcas.loader.header`). For a CUDA device the file streams in chunks through pinned
  staging buffers with non-blocking copies (:mod:`modelcas.torch._device`), and the device
  buffer is handed out only after the whole file verified.
- ``.pt``/``.pth``/``.bin``/``.ckpt``: read and hashed in the same one pass into private
  memory; torch's zip-checkpoint loader (what ``torch.load(..., mmap=True)`` runs on a mapped
  file) then builds the tensors as views of that memory, which nothing outside this process
  can change. (A torch whose loader takes no memory gets a sealed ``memfd`` snapshot, see
  :func:`snapshot`.) ``weights_only=True`` always, with no fallback, even when
  ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is set.
- ``.onnx``: :func:`load_bytes` gives the verified bytes; :func:`onnx_session` builds an
  ``onnxruntime`` session from them.
- ``.pkl``/``.pickle``/``.joblib``: unpickled only with ``trust_pickle=True``, and only after
  verification.

torch is imported only by this package, and only when a tensor is made; nothing else in
modelcas imports this package. Without torch, loading raises
:class:`~modelcas.errors.MissingExtraError` with the ``pip install 'modelcas[torch]'`` hint.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from modelcas.errors import MissingExtraError, UnsafeCheckpointError, UsageError
from modelcas.loader import header as st_header
from modelcas.loader import reader
from modelcas.loader.reader import snapshot
from modelcas.loader.target import Ref, Target, resolve
from modelcas.torch import _device, _sharded
from modelcas.torch._tensors import (
    can_load_in_memory,
    checkpoint,
    checkpoint_in,
    refuse_pickle,
    torch_required,
    unpickle,
    views,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "Ref",
    "Target",
    "UnsafeCheckpointError",
    "load",
    "load_bundle",
    "load_bytes",
    "load_into",
    "load_many",
    "load_state_dict",
    "onnx_session",
    "read_verified",
    "resolve",
    "snapshot",
]

_PICKLE_EXTS = (".pkl", ".pickle", ".joblib")
_TORCH_EXTS = (".pt", ".pth", ".bin", ".ckpt")


def read_verified(target: Target, *, deep: bool = False, into: str = "bytes") -> Any:
    """Read a stored object once into memory and verify it there.

    Args:
        target: what to read.
        deep: verify sha256 as well as blake3.
        into: ``"bytes"``; ``"tensor"``, a writable ``torch.uint8`` tensor in private huge
            pages; or ``"pinned"``, the same in page-locked memory for GPU copies.

    Returns:
        The verified buffer.

    Raises:
        IntegrityError: the bytes do not match; nothing is returned.
        MissingExtraError: a tensor was asked for and torch is not installed.
    """
    if into == "bytes":
        return reader.read_bytes(target, deep=deep)
    with torch_required():
        import torch  # noqa: PLC0415
    size = target.digest.size
    if into == "pinned" or not size:
        buf = torch.empty(size, dtype=torch.uint8, pin_memory=into == "pinned")
    else:
        buf = torch.frombuffer(reader.private_memory(size), dtype=torch.uint8)
    reader.read_into(target, buf.numpy().data, deep=deep)
    return buf


def load_bytes(ref: Ref, *, deep: bool = False, **where: Any) -> bytes:
    """The verified bytes of a stored file (for ``.onnx`` and other formats).

    Args:
        ref: see :func:`resolve`.
        deep: verify sha256 as well as blake3.
        **where: ``registry``, ``lock``, ``store``, ``file`` as for :func:`resolve`.

    Returns:
        The file's bytes, read once and verified.

    Raises:
        IntegrityError: the stored bytes are not what the reference says.
    """
    data: bytes = read_verified(resolve(ref, **where), deep=deep)
    return data


def onnx_session(ref: Ref, *, deep: bool = False, **kwargs: Any) -> Any:
    """An ``onnxruntime.InferenceSession`` built from verified bytes.

    Args:
        ref: see :func:`resolve`.
        deep: verify sha256 as well as blake3.
        **kwargs: ``registry``, ``lock``, ``store``, ``file`` as for :func:`resolve`; the rest
            go to ``InferenceSession`` (``providers``, ``sess_options``).

    Returns:
        The session.

    Raises:
        IntegrityError: the stored bytes are not what the reference says.
        MissingExtraError: onnxruntime is not installed.
    """
    where = {k: kwargs.pop(k) for k in ("registry", "lock", "store", "file") if k in kwargs}
    try:
        import onnxruntime  # noqa: PLC0415 (optional)
    except ModuleNotFoundError:
        raise MissingExtraError(
            "onnx_session needs onnxruntime, which is not installed",
            hint="pip install onnxruntime",
        ) from None
    return onnxruntime.InferenceSession(load_bytes(ref, deep=deep, **where), **kwargs)


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
    try:
        with open(target.path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise reader.unreadable(target, e) from e
    if head[:2] == b"PK":
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise UsageError(
        f"{target.label}: cannot tell the format of {target.filename or 'it'}",
        hint="name the file with its extension (.safetensors, .pt, .onnx, .pkl)",
    )


def _device_of(device: Any) -> torch.device:
    with torch_required():
        import torch  # noqa: PLC0415
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r} was asked for, but torch sees no CUDA device")
    return dev


def _safetensors(
    target: Target, device: torch.device, deep: bool, copier: _device.Copier | None = None
) -> dict[str, torch.Tensor]:
    """Tensors of a verified safetensors file on ``device``.

    On the CPU the file is read straight into its final buffer; a device (or an explicit
    ``copier``: tests run the device pipeline on the CPU this way) gets the chunked pipeline.
    """
    with torch_required():
        import torch  # noqa: PLC0415
    if device.type == "cpu" and copier is None:
        size = target.digest.size
        memory = reader.private_memory(size) if size else bytearray()
        reader.read_into(target, memoryview(memory), deep=deep)
        header = st_header.parse(memoryview(memory), size, target.label)
        return views(torch.frombuffer(memory, dtype=torch.uint8), header, target.label)
    flat, head = _device.stream(target, copier or _device.copier_for(device), deep=deep)
    header = st_header.parse(head, target.digest.size, target.label)
    return views(flat, header, target.label)


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

    Returns:
        A state dict (or what the checkpoint holds), ONNX bytes, or the unpickled object.

    Raises:
        IntegrityError: the stored bytes are not what the pin says; nothing is deserialized.
        FormatError: a safetensors header the reference would refuse.
        UnsafeCheckpointError: loading would need code execution that was not allowed.
        MissingExtraError: torch is not installed.
    """
    target = resolve(ref, **where)
    kind = _format(target)
    if kind == "onnx":
        return reader.read_bytes(target, deep=deep)
    if kind == "pickle":
        refuse_pickle(target, trust_pickle)
        return unpickle(reader.read_bytes(target, deep=deep), target)
    dev = _device_of(device)
    if kind == "safetensors":
        return _safetensors(target, dev, deep)
    return _checkpoint(target, dev, deep)


def _checkpoint(target: Target, device: torch.device, deep: bool) -> Any:
    """What a verified torch checkpoint holds.

    The file is read once into private memory (huge pages where the kernel allows), hashed as
    it lands on every core, exactly as a safetensors file is; the tensors are then views of
    that memory, which nothing outside this process can change. A torch whose zip loader
    cannot build on given memory gets a sealed snapshot file that it maps instead.
    """
    size = target.digest.size
    if size and can_load_in_memory():
        memory = reader.private_memory(size)
        reader.read_into(target, memoryview(memory), deep=deep)
        return checkpoint_in(memory, target, device)
    if reader.SNAPSHOTS and size:
        with snapshot(target, deep=deep) as (fd, _):
            return checkpoint(f"/proc/self/fd/{fd}", target, device)
    return checkpoint(reader.read_bytes(target, deep=deep), target, device)


def load_state_dict(
    ref: Ref, *, device: Any = "cpu", deep: bool = False, **where: Any
) -> dict[str, torch.Tensor]:
    """A verified state dict from a ``.safetensors`` or ``.pt``/``.pth`` file, or a sharded one.

    A pinned version with ``model.safetensors.index.json`` (or ``pytorch_model.bin.index.json``)
    and the shards it names loads as one state dict: the index and every shard verified, the
    shards in parallel (:mod:`modelcas.torch._sharded`).

    Args:
        ref: a lock name (``"cser-detector"``, ``"cser-detector@v1.1"``), an address
            (``"sha256:..."``), ``(bundle or pipeline config, key)``: see :func:`resolve`.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device``.
        deep: verify sha256 as well as blake3.
        **where: ``registry``, ``lock``, ``store``, ``file`` as for :func:`resolve`.

    Returns:
        Tensor name to tensor, on ``device``.

    Raises:
        IntegrityError: corrupt; nothing is deserialized.
        UnsafeCheckpointError: the checkpoint needs arbitrary globals.
        FormatError: a sharded version whose index names a shard it does not pin, or a
            tensor twice, or disagrees with its shards.
        UsageError: the file is not a state dict.
    """
    plan = _sharded.find(ref, where)
    if plan is not None:
        return _sharded.load(plan, load_many, device=device, deep=deep)
    state = load(ref, device=device, deep=deep, **where)
    if not isinstance(state, Mapping):
        raise UsageError(
            f"{ref!r} is not a state dict (found {type(state).__name__})",
            hint="save model.state_dict(), not the model object",
        )
    return dict(state)


def load_many(
    refs: Mapping[Any, Ref] | list[Ref],
    *,
    device: Any = "cpu",
    deep: bool = False,
    trust_pickle: bool = False,
    workers: int | None = None,
    **where: Any,
) -> dict[Any, Any]:
    """Load several files at once: their reads and hashes overlap on all cores.

    Args:
        refs: a mapping of your keys to references, or a list of references (the keys are
            then the references themselves).
        device: as for :func:`load`.
        deep: verify sha256 as well as blake3.
        trust_pickle: as for :func:`load`.
        workers: loads in flight; default up to 4.
        **where: as for :func:`resolve`.

    Returns:
        Each key's loaded object, in the order given.

    Raises:
        IntegrityError, UnsafeCheckpointError, FormatError: the first failure; then nothing
            is returned.
    """
    items = list(refs.items()) if isinstance(refs, Mapping) else [(r, r) for r in refs]
    if not items:
        return {}
    n = workers or min(len(items), 4)
    with ThreadPoolExecutor(n, thread_name_prefix="modelcas-load") as pool:
        futures = [
            (
                key,
                pool.submit(
                    load, ref, device=device, deep=deep, trust_pickle=trust_pickle, **where
                ),
            )
            for key, ref in items
        ]
        try:
            return {key: f.result() for key, f in futures}
        except BaseException:
            for _, f in futures:
                f.cancel()
            raise


def load_bundle(
    source: Any,
    *,
    keys: list[str] | None = None,
    device: Any = "cpu",
    deep: bool = False,
    trust_pickle: bool = False,
    store: Any = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Load a pipeline's models at once from its bundle, verified.

    Args:
        source: a bundle (path or opened), or a pipeline config (``.yml`` path or mapping)
            whose ``models: model_collection:`` names one.
        keys: which models; default all.
        device: as for :func:`load`.
        deep: verify sha256 as well as blake3.
        trust_pickle: as for :func:`load`.
        store: the store; default the user's.
        workers: loads in flight; default up to 4.

    Returns:
        Model key to its loaded weights.

    Raises:
        IntegrityError, UnsafeCheckpointError, FormatError: see :func:`load_many`.
    """
    from modelcas import bundle  # noqa: PLC0415 (bundles pull in the zip reader)

    if isinstance(source, bundle.Bundle):
        models = source.models()
        label = source.path.name
    elif isinstance(source, Mapping) or str(source).lower().endswith((".yml", ".yaml")):
        pipeline = bundle.resolve_pipeline_config(source, store=store)
        models, label = pipeline.models, pipeline.bundle.path.name
    else:
        opened = bundle.open(source, store=store)
        models, label = opened.models(), opened.path.name
    chosen = keys if keys is not None else list(models)
    missing = [k for k in chosen if k not in models]
    if missing:
        raise UsageError(f"{label} has no model {missing[0]!r} (keys: {', '.join(models)})")
    targets = {
        k: Target(models[k].stored, models[k].digest, f"{label} key {k}", models[k].member_name)
        for k in chosen
    }
    return load_many(targets, device=device, deep=deep, trust_pickle=trust_pickle, workers=workers)


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

    Args:
        module: the model.
        ref: see :func:`resolve`.
        device: where to put it; default where its parameters are.
        strict: as for ``nn.Module.load_state_dict``.
        deep: verify sha256 as well as blake3.
        **where: as for :func:`resolve`.

    Returns:
        The module, for chaining.

    Raises:
        IntegrityError, UnsafeCheckpointError, UsageError: see :func:`load_state_dict`.
    """
    with torch_required():
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
