"""Paths in configs, resolved as HiTMicTools resolves them.

HiTMicTools opens the paths in ``config_model_bundle.yml`` as given, so a relative path is
relative to the working directory. Configs written for modelcas name paths relative to the
config's own folder. A relative path is taken from the working directory when it exists there,
else from the config's folder; when both exist and are different files, the working directory
wins and the caller is told, so it can warn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Base = Literal["absolute", "cwd", "config"]


@dataclass(frozen=True, slots=True)
class Resolved:
    """A path from a config: the file it names and where it was found."""

    given: str
    path: Path
    base: Base
    other: Path | None = None  # the config folder's file, when both existed and differ
    tried: tuple[Path, ...] = ()  # every place looked at, in order (for "not found")

    def warning(self, where: str) -> str | None:
        """The warning to show when both candidates existed, else ``None``."""
        if self.other is None:
            return None
        return (
            f"{where}: {self.given} exists in the working directory ({self.path}) and beside "
            f"the config ({self.other}); using the working directory's, as HiTMicTools does"
        )


def resolve(value: str, config_dir: Path, cwd: Path | None = None) -> Resolved:
    """Where a config's path points (the file need not exist: the caller checks).

    Args:
        value: the path as written (``~`` is expanded).
        config_dir: the folder of the config that holds it.
        cwd: the working directory (default: the current one).

    Returns:
        The chosen file and which base it came from.
    """
    p = Path(value).expanduser()
    if p.is_absolute():
        return Resolved(value, p, "absolute", tried=(p,))
    here = (cwd or Path.cwd()) / p
    beside = config_dir / p
    tried = (here,) if here == beside else (here, beside)
    if not here.exists():
        return Resolved(value, beside, "config", tried=tried)
    if beside.exists() and not _same(here, beside):
        return Resolved(value, here, "cwd", beside, tried=tried)
    return Resolved(value, here, "cwd", tried=tried)


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
