"""Progress bars on stderr, shown only to a person at a terminal and only for long work."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Below this many bytes the work ends before a bar would be worth drawing.
MIN_BYTES = 256 << 20


def wanted(total: int | None) -> bool:
    """Whether to draw a bar for ``total`` bytes of work."""
    if os.environ.get("CAS_NO_PROGRESS") or not sys.stderr.isatty():
        return False
    return total is None or total >= MIN_BYTES


@contextmanager
def byte_bar(total: int | None, desc: str) -> Iterator[Callable[[int], object] | None]:
    """Yield an ``update(nbytes)`` callable feeding a bar, or ``None`` when no bar is wanted."""
    if not wanted(total):
        yield None
        return
    from tqdm import tqdm  # noqa: PLC0415 (only at a terminal: saves its import otherwise)

    with tqdm(
        total=total,
        desc=desc,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    ) as bar:
        yield bar.update
