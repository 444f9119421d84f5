"""Progress bars on stderr: the one helper every long operation uses.

A bar is drawn only for a person at a terminal (stderr is a tty: never when piped), never
with ``-q`` or ``CAS_NO_PROGRESS``, and only for work large enough to be worth it: a known
total of at least ``MIN_BYTES``, or work of unknown size (a download that may not happen)
once it has run for ``DELAY`` seconds.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

# Below this many bytes the work ends before a bar would be worth drawing.
MIN_BYTES = 256 << 20
# Work of unknown size shows its bar only after this long (most of it ends before).
DELAY = 0.5


def wanted(total: int | None, quiet: bool = False) -> bool:
    """Whether to draw a bar for ``total`` bytes of work (None: not known yet)."""
    if quiet or os.environ.get("CAS_NO_PROGRESS") or not sys.stderr.isatty():
        return False
    return total is None or total >= MIN_BYTES


class Bar:
    """``bar(n)`` advances by n bytes; ``bar.total(n)`` sets the total once it is known."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __call__(self, n: int) -> None:
        if self._inner is not None:
            inner = self._inner
            if inner.total is not None and inner.n + n > inner.total:
                inner.total = inner.n + n  # more work than announced (a copy after a link failed)
            inner.update(n)

    def total(self, n: int) -> None:
        """Set the total; a bar for little work is hidden."""
        if self._inner is not None:
            if n < MIN_BYTES:
                self._inner.disable = True
            self._inner.total = n
            self._inner.refresh()


@contextmanager
def byte_bar(total: int | None, desc: str, *, quiet: bool = False) -> Iterator[Bar | None]:
    """Yield a :class:`Bar` feeding a tqdm bar, or ``None`` when no bar is wanted."""
    if not wanted(total, quiet):
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
        delay=DELAY if total is None else 0,
    ) as bar:
        yield Bar(bar)
