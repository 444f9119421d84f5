"""Streaming a verified file to a device: read and hash chunk k+1 while chunk k is copied.

The file is read in chunks into a few staging buffers (page-locked for a GPU) and hashed as it
lands; each chunk is then copied to its place in one device buffer without blocking, on a side
stream, so the copy of chunk k overlaps the read and hash of chunk k+1. The device buffer is
handed out only after the whole file matched its digest; on a mismatch (or any error) every
copy is waited for and the device memory is released before the error propagates.

Everything device-specific sits behind :class:`Copier` (five operations). :class:`HostCopier`
runs the same pipeline on the CPU, so tests exercise every line but the CUDA calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelcas import hashing
from modelcas.loader import reader
from modelcas.loader.header import MAX_HEADER
from modelcas.loader.target import Target
from modelcas.torch._tensors import torch_required

if TYPE_CHECKING:
    import torch

#: Bytes per chunk: a power of two (each chunk is then a whole blake3 subtree), large enough
#: that a copy is worth launching, small enough to keep staging memory modest.
CHUNK = 64 << 20
#: Staging buffers in flight: one being filled while the other is copied out.
SLOTS = 2


class Copier:
    """The device seam: allocate, stage, copy, and wait. Subclasses own one device each."""

    def alloc(self, size: int) -> torch.Tensor:
        """The destination: ``size`` bytes as uint8 on the device."""
        raise NotImplementedError

    def staging(self, size: int) -> torch.Tensor:
        """A host buffer of ``size`` bytes to read into (page-locked where that helps)."""
        raise NotImplementedError

    def copy(self, slot: int, dst: torch.Tensor, src: torch.Tensor) -> None:
        """Start copying ``src`` (staging buffer ``slot``) into ``dst``."""
        raise NotImplementedError

    def wait(self, slot: int) -> None:
        """Return once staging buffer ``slot`` may be written again."""

    def drain(self) -> None:
        """Return once every copy has finished."""


class HostCopier(Copier):
    """The pipeline on the CPU: plain memory and synchronous copies."""

    def alloc(self, size: int) -> torch.Tensor:
        with torch_required():
            import torch  # noqa: PLC0415
        if not size:
            return torch.empty(0, dtype=torch.uint8)
        return torch.frombuffer(reader.private_memory(size), dtype=torch.uint8)

    def staging(self, size: int) -> torch.Tensor:
        with torch_required():
            import torch  # noqa: PLC0415
        return torch.empty(size, dtype=torch.uint8)

    def copy(self, slot: int, dst: torch.Tensor, src: torch.Tensor) -> None:  # noqa: ARG002
        dst.copy_(src)


class CudaCopier(Copier):  # pragma: no cover (needs a GPU: tests marked cuda)
    """Pinned staging buffers and non-blocking copies on a side stream, one event per slot."""

    def __init__(self, device: torch.device) -> None:
        with torch_required():
            import torch  # noqa: PLC0415
        self.device = device
        self.stream = torch.cuda.Stream(device)  # type: ignore[no-untyped-call]
        self.events: dict[int, Any] = {}

    def alloc(self, size: int) -> torch.Tensor:
        with torch_required():
            import torch  # noqa: PLC0415
        return torch.empty(size, dtype=torch.uint8, device=self.device)

    def staging(self, size: int) -> torch.Tensor:
        with torch_required():
            import torch  # noqa: PLC0415
        return torch.empty(size, dtype=torch.uint8, pin_memory=True)

    def copy(self, slot: int, dst: torch.Tensor, src: torch.Tensor) -> None:
        with torch_required():
            import torch  # noqa: PLC0415
        # The side stream must not start before the destination's allocation is visible.
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            dst.copy_(src, non_blocking=True)
            event = torch.cuda.Event()  # type: ignore[no-untyped-call]
            event.record(self.stream)
        self.events[slot] = event

    def wait(self, slot: int) -> None:
        event = self.events.pop(slot, None)
        if event is not None:
            event.synchronize()

    def drain(self) -> None:
        self.stream.synchronize()
        self.events.clear()


def copier_for(device: torch.device) -> Copier:
    """The copier for a device."""
    if device.type == "cuda":  # pragma: no cover (needs a GPU)
        return CudaCopier(device)
    return HostCopier()


def stream(
    target: Target,
    copier: Copier,
    *,
    deep: bool = False,
    chunk: int = CHUNK,
    slots: int = SLOTS,
) -> tuple[torch.Tensor, bytes]:
    """Read, verify and copy a stored object to a device, chunk by chunk.

    Args:
        target: what to load.
        copier: the device (see :func:`copier_for`).
        deep: verify sha256 as well as blake3.
        chunk: bytes per chunk (a power of two of at least 1 KiB).
        slots: staging buffers.

    Returns:
        The verified bytes as one uint8 tensor on the device, and the file's first bytes (up
        to a safetensors header's limit) for the caller to parse on the host.

    Raises:
        IntegrityError: the bytes do not match; nothing is returned and the device memory is
            released.
    """
    # The device buffer is only ever named through this list, which is emptied on failure: a
    # traceback keeps every frame alive, and the memory must not outlive the error with it.
    holder = [copier.alloc(target.digest.size)]
    try:
        head = _pipeline(target, copier, holder, deep=deep, chunk=chunk, slots=slots)
    except BaseException:
        holder.clear()
        raise
    return holder[0], head


def _pipeline(
    target: Target,
    copier: Copier,
    holder: list[torch.Tensor],
    *,
    deep: bool,
    chunk: int,
    slots: int,
) -> bytes:
    size = target.digest.size
    file = reader.open_reader(target, piece=chunk)
    sha = hashing.Hasher(("sha256",)) if reader.needs_sha256(target, deep) else None
    keep = 0
    head = bytearray()
    staging: list[torch.Tensor] = []
    pos = 0
    try:
        k = 0
        while n := file.next_len():
            slot = k % slots
            if slot == len(staging):
                staging.append(copier.staging(min(chunk, size)))
            copier.wait(slot)
            buf = staging[slot]
            view = buf.numpy().data
            got = file.read_into(view)
            if sha is not None:
                sha.update(view[:got])
            if k == 0:
                # The header's length is in its first 8 bytes; a bad one is kept as it is
                # for the header check, after verification, to report.
                length = int.from_bytes(view[: min(got, 8)], "little")
                keep = min(size, 8 + min(length, MAX_HEADER))
            if len(head) < keep:
                head += view[: min(got, keep - len(head))]
            copier.copy(slot, holder[0][pos : pos + got], buf[:got])
            pos += got
            k += 1
            if got < n:
                break
        fill = file.finish()
    except OSError as e:
        raise reader.unreadable(target, e) from e
    finally:
        # No copy may still read a staging buffer (or write dest) once this returns.
        copier.drain()
    reader.check(target, fill, sha.hashes().sha256 if sha is not None else None)
    return bytes(head)
