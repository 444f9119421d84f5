"""Where the bytes to load are and what they must hash to.

Every loader starts from :func:`resolve`, which turns a reference into a :class:`Target` (a
stored object, its expected :class:`Digest`, and a label for messages). The references
themselves are resolved by the one resolver, :func:`modelcas.ops.resolve.resolve` (names,
addresses, ``hf://``, bundle and pipeline keys); this module adds only what a loader may also
be handed: a :class:`Target` or a bundle's model. Nothing is re-hashed here: the loaders
verify the bytes as they read them.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from modelcas import lfs
from modelcas.ops.resolve import Resolved

if TYPE_CHECKING:
    from modelcas.registry import Registry
    from modelcas.store import Store

#: ``"name"``, ``"name@version"``, ``"sha256:<hex>"``, ``"hf://..."``, ``"BUNDLE.zip#KEY"``,
#: ``(bundle or pipeline config, key)``, a bundle's model, or a :class:`Target`.
Ref = Any

Target = Resolved  # what to load: path, digest, label, file name (its extension: the format)


def resolve(
    ref: Ref,
    *,
    registry: Registry | None = None,
    lock: str | os.PathLike[str] | None = None,
    store: Store | None = None,
    file: str | None = None,
) -> Target:
    """Turn a reference into a stored object to load (see :mod:`modelcas.ops.resolve`).

    Raises:
        UsageError: the reference has no known form, or names a git-lfs pointer file.
        NotPinnedError, WeightsCompatibilityError, ObjectNotFoundError: it cannot resolve.
    """
    from modelcas.ops.resolve import resolve as resolve_ref  # noqa: PLC0415

    if isinstance(ref, Resolved):
        target = ref
    elif hasattr(ref, "member_name") and hasattr(ref, "digest"):  # bundle.BundleModel
        target = Resolved(
            ref.stored, ref.digest, f"bundle key {ref.key}", ref.member_name, ref.path
        )
    else:
        target = resolve_ref(
            ref, store=store, registry=registry, lock=lock, file=file, verify=False
        )
    # Stored with --allow-lfs-pointer, or pinned from a repo whose LFS files were not pulled:
    # the same refusal as at `cas add`, before any decoder sees the text.
    if target.digest.size < lfs.MAX_POINTER and lfs.file_is_pointer(target.path):
        raise lfs.pointer_error(f"{target.label} ({target.path})")
    return target
