"""Resolving ``name@version`` to verified local files, and checking compatibility.

A :class:`Registry` joins a lockfile to a store. The same class serves a package that ships its
own weights registry (``Registry.from_package``) and an analysis project's ``cas.lock``
(``open_lock``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from packaging.version import Version

from modelcas import lockfile
from modelcas.digest import Digest
from modelcas.errors import (
    IntegrityError,
    LockfileError,
    ModelcasError,
    NotPinnedError,
    RemoteError,
    UsageError,
    WeightsCompatibilityError,
)
from modelcas.hashing import Progress
from modelcas.lockfile import LockedVersion, Lockfile, parse_requires
from modelcas.remotes import for_source
from modelcas.store import Store


@dataclass(frozen=True, slots=True)
class Pin:
    """One pinned file: which model, version and file, and its digest."""

    model: str
    version: str
    file: str
    digest: Digest

    @property
    def label(self) -> str:
        """``model@version file``, as messages name it."""
        return f"{self.model}@{self.version} {self.file}"


@dataclass(frozen=True, slots=True)
class PinProblem:
    """A pinned file that is missing from the store, or corrupt in it."""

    pin: Pin
    kind: Literal["missing", "corrupt", "mismatch"]
    detail: str

    def __str__(self) -> str:
        head = {"missing": "MISSING", "corrupt": "CORRUPT", "mismatch": "MISMATCH"}[self.kind]
        return f"{head} {self.pin.label} sha256:{self.pin.digest.sha256}: {self.detail}"


@dataclass
class SyncReport:
    """What ``sync`` did for each pin."""

    present: list[Pin]
    fetched: list[Pin]


class Registry:
    """Names and versions of weights, resolved through a lockfile to a store.

    Args:
        lock: the lockfile (a package's registry or a project's pins).
        store: the local store; default the user's store.
        distribution: the installed distribution whose version ``requires`` ranges are checked
            against; default the lockfile's ``package``. ``None`` there means no check.
    """

    def __init__(
        self,
        lock: Lockfile,
        store: Store | None = None,
        distribution: str | None = None,
    ) -> None:
        self.lock = lock
        self.store = store if store is not None else Store()
        self.distribution = distribution or lock.package

    @classmethod
    def from_package(
        cls, package: str, resource: str = "weights.lock", *, store: Store | None = None
    ) -> Registry:
        """The registry a package ships as package data.

        Args:
            package: the import package holding the lockfile, e.g. ``"structflo.cser"``.
            resource: the lockfile's name inside it.
            store: the local store; default the user's store.

        Raises:
            LockfileError: the package has no such file, or it is malformed.
        """
        ref = importlib.resources.files(package).joinpath(resource)
        try:
            text = ref.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            raise LockfileError(
                f"package {package!r} ships no {resource!r}",
                hint="ship the lockfile as package data (e.g. [tool.setuptools.package-data])",
            ) from None
        lock = Lockfile.loads(text, Path(str(ref)))
        return cls(lock, store)

    # -- resolving -------------------------------------------------------------------------

    def installed_version(self) -> Version | None:
        """The installed version of the owning distribution, or None when unknown."""
        if not self.distribution:
            return None
        try:
            return Version(importlib.metadata.version(self.distribution))
        except importlib.metadata.PackageNotFoundError:
            return None

    def _admits(self, entry: LockedVersion, installed: Version | None) -> bool:
        if entry.requires is None or installed is None:
            return True
        return parse_requires(entry.requires, "requires").contains(installed, prereleases=True)

    def resolve(self, name: str, version: str | None = None) -> tuple[str, LockedVersion]:
        """Choose a version and check that the installed package can use it.

        Without ``version``: ``latest`` when compatible, else the newest compatible older
        version (with a warning that names both).

        Raises:
            NotPinnedError: unknown model or version.
            WeightsCompatibilityError: no usable version; the message says which range is
                needed, what is installed, and the command that upgrades.
        """
        chosen, entry = self.lock.version(name, version)
        installed = self.installed_version()
        if self._admits(entry, installed):
            return chosen, entry
        model = self.lock.model(name)
        compatible = [
            v for v in reversed(model.ordered()) if self._admits(model.versions[v], installed)
        ]
        if version is None and compatible:
            warnings.warn(
                f"{name}@{chosen} (latest) requires {self.distribution}{entry.requires}, "
                f"you have {installed}; using {name}@{compatible[0]} instead",
                stacklevel=2,
            )
            return compatible[0], model.versions[compatible[0]]
        raise self._incompatible(name, chosen, entry, installed, compatible)

    def _incompatible(
        self,
        name: str,
        version: str,
        entry: LockedVersion,
        installed: Version | None,
        compatible: list[str],
    ) -> WeightsCompatibilityError:
        dist, spec = self.distribution, entry.requires
        message = (
            f"Weights '{name}/{version}' require {dist}{spec} (you have {installed}).\n"
            f"Upgrade with:  uv add '{dist}{spec}'   (or: pip install '{dist}{spec}')"
        )
        hint = None
        if compatible:
            hint = (
                f"{name}@{compatible[0]} works with {dist} {installed}: "
                f"ask for it explicitly to keep your installed version"
            )
        return WeightsCompatibilityError(message, hint=hint)

    def pins(self, name: str | None = None, version: str | None = None) -> list[Pin]:
        """The pinned files of one version, of every version of one model, or of everything."""
        if name is not None and version is not None:
            _, entry = self.lock.version(name, version)
            return [Pin(name, version, f, d) for f, d in entry.files.items()]
        return [Pin(m, v, f, d) for m, v, f, d in self.lock.entries() if name is None or m == name]

    # -- fetching and paths ----------------------------------------------------------------

    def fetch(self, pin: Pin, *, progress: Progress | None = None, verify: bool = True) -> Path:
        """Make one pinned file present and verified in the store; return its path.

        ``verify=False`` skips re-hashing an object that is already present, for callers that
        verify the bytes themselves as they read them (``modelcas.torch``).

        Raises:
            IntegrityError: the stored copy is corrupt, or the remote served other bytes.
            NotPinnedError: it is missing and its version has no source to fetch from.
            RemoteError: the source failed.
        """
        self._check_pair(pin)
        if self.store.has(pin.digest.sha256):
            return self.store.path(pin.digest.sha256, verify=verify)
        _, entry = self.lock.version(pin.model, pin.version)
        if entry.source is None:
            raise NotPinnedError(
                f"{pin.label} (sha256:{pin.digest.sha256}) is not in the store at "
                f"{self.store.root}, and {pin.model}@{pin.version} has no source to fetch from",
                hint="add the file with `cas add`, or record a source in the lockfile",
            )
        # The source, then each mirror; every one is verified as it is read.
        failures: list[ModelcasError] = []
        for place in (entry.source, *entry.mirrors):
            commit = entry.commit if place == entry.source else None
            try:
                info = for_source(place).fetch(
                    pin.file, pin.digest, self.store, commit=commit, progress=progress
                )
            except (RemoteError, IntegrityError) as e:
                failures.append(e)
                continue
            for failed in failures:
                warnings.warn(f"{pin.label}: {failed.message}", stacklevel=2)
            return info.path
        if len(failures) == 1:
            raise failures[0]
        # Bytes that did not match are the graver finding: they decide the exit code.
        kind = (
            IntegrityError if any(isinstance(e, IntegrityError) for e in failures) else RemoteError
        )
        raise kind(
            f"{pin.label}: every place failed: "
            + "; ".join(f"({i + 1}) {e.message}" for i, e in enumerate(failures)),
            hint=failures[-1].hint,
        )

    def pin(self, name: str, version: str | None = None, file: str | None = None) -> Pin:
        """The pinned file ``name[@version]`` (``file`` needed when the version has several).

        Raises:
            WeightsCompatibilityError: the installed package cannot use these weights.
            NotPinnedError: no such model, version or file.
            UsageError: the version has several files and ``file`` is not given.
        """
        chosen, entry = self.resolve(name, version)
        if file is None:
            if len(entry.files) != 1:
                raise UsageError(
                    f"{name}@{chosen} has {len(entry.files)} files "
                    f"({', '.join(entry.files)}); say which one",
                )
            file = next(iter(entry.files))
        if file not in entry.files:
            raise NotPinnedError(
                f"{name}@{chosen} has no file {file!r} (files: {', '.join(entry.files)})"
            )
        return Pin(name, chosen, file, entry.files[file])

    def path(self, name: str, version: str | None = None, file: str | None = None) -> Path:
        """The verified local path of a pinned file, fetching it on first use.

        Args:
            name: the model.
            version: a version; default the latest compatible one.
            file: which file of the version; needed only when it has several.

        Returns:
            A path inside the store. Never write to it.

        Raises:
            WeightsCompatibilityError: the installed package cannot use these weights.
            NotPinnedError, IntegrityError, RemoteError: see :meth:`fetch`.
        """
        return self.fetch(self.pin(name, version, file))

    def load(
        self,
        name: str,
        version: str | None = None,
        file: str | None = None,
        *,
        device: Any = "cpu",
        deep: bool = False,
        trust_pickle: bool = False,
    ) -> Any:
        """Load a pinned file with torch, verified (see :func:`modelcas.torch.load`).

        Needs the ``modelcas[torch]`` extra.
        """
        from modelcas import torch as cas_torch  # noqa: PLC0415 (torch is optional)

        ref = f"{name}@{version}" if version else name
        return cas_torch.load(
            ref, registry=self, file=file, device=device, deep=deep, trust_pickle=trust_pickle
        )

    def paths(self, name: str, version: str | None = None) -> dict[str, Path]:
        """Every file of a version, verified, by file name."""
        chosen, entry = self.resolve(name, version)
        return {f: self.fetch(Pin(name, chosen, f, d)) for f, d in entry.files.items()}

    def _check_pair(self, pin: Pin) -> None:
        """The lock's blake3 must agree with the store's record for the same sha256."""
        if pin.digest.blake3 is None or not self.store.has(pin.digest.sha256):
            return
        known = self.store.info(pin.digest.sha256).digest
        if known.blake3 is not None and known.blake3 != pin.digest.blake3:
            raise LockfileError(
                f"{self.lock.path}: models.{pin.model}.versions.{pin.version}.files."
                f"{pin.file}.blake3 is {pin.digest.blake3}, but the store records "
                f"{known.blake3} for sha256:{pin.digest.sha256}",
                hint="one of the two is wrong: re-pin from a trusted copy "
                "(`cas verify --deep` checks the store's side)",
            )

    # -- whole-lock operations -------------------------------------------------------------

    def sync(self, *, progress: Progress | None = None) -> SyncReport:
        """Make every pinned file present and verified; register the lockfile as a gc root."""
        report = SyncReport([], [])
        for pin in self.pins():
            had = self.store.has(pin.digest.sha256)
            self.fetch(pin, progress=progress)
            (report.present if had else report.fetched).append(pin)
        self.register()
        return report

    def verify(self, *, deep: bool = False) -> list[PinProblem]:
        """Check every pinned file without fetching anything (all objects hashed in parallel)."""
        problems = []
        present = []
        for pin in self.pins():
            if not self.store.has(pin.digest.sha256):
                problems.append(PinProblem(pin, "missing", "not in the store; run `cas sync`"))
                continue
            try:
                self._check_pair(pin)
            except LockfileError as e:
                problems.append(PinProblem(pin, "mismatch", e.message))
                continue
            present.append(pin)
        checked = self.store.check([pin.digest.sha256 for pin in present], deep=deep)
        for pin, problem in zip(present, checked, strict=True):
            if problem is not None:
                problems.append(
                    PinProblem(
                        pin,
                        "corrupt",
                        f"{problem.describe()}; run `cas verify --repair`, then `cas sync`",
                    )
                )
        return problems

    def register(self) -> None:
        """Keep this lockfile's objects through ``cas gc``."""
        if self.lock.path is not None and Path(self.lock.path).is_file():
            self.store.register_root(self.lock.path, "lockfile")


def open_lock(
    path: str | os.PathLike[str] | None = None, *, store: Store | None = None
) -> Registry:
    """A project's lockfile as a registry (default: the nearest ``cas.lock``).

    Raises:
        LockfileError: none found, or malformed.
    """
    return Registry(Lockfile.load(lockfile.locate(path)), store)
