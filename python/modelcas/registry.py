"""Resolving ``name@version`` to verified local files, and checking compatibility.

A :class:`Registry` joins a lockfile to a store. The same class serves a package that ships its
own weights registry (``Registry.from_package``) and an analysis project's ``cas.lock``
(``open_lock``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path

from packaging.version import Version

from modelcas import lockfile
from modelcas.digest import Digest, mismatch
from modelcas.errors import (
    CompatibilityCheckError,
    IntegrityError,
    LockfileError,
    ModelcasError,
    NotPinnedError,
    RemoteError,
    UsageError,
    WeightsCompatibilityError,
)
from modelcas.hashing import Progress
from modelcas.lockfile import LockedVersion, Lockfile, is_prerelease, parse_requires
from modelcas.remotes import pinned
from modelcas.store import Store, views
from modelcas.warning import warn


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


class Registry:
    """Names and versions of weights, resolved through a lockfile to a store.

    Args:
        lock: the lockfile (a package's registry or a project's pins).
        store: the local store; default the user's store.
        distribution: the installed distribution whose version ``requires`` ranges are checked
            against; default the lockfile's ``package``.
        check_requires: ``False`` opts out of the compatibility check (explicitly: a check
            that cannot run is otherwise an error, never a pass).
    """

    def __init__(
        self,
        lock: Lockfile,
        store: Store | None = None,
        distribution: str | None = None,
        *,
        check_requires: bool = True,
    ) -> None:
        self.lock = lock
        self.store = store if store is not None else Store()
        self.distribution = distribution or lock.package
        self.check_requires = check_requires
        self._unknown_why: str | None = None

    @classmethod
    def from_package(
        cls,
        package: str,
        resource: str = "weights.lock",
        *,
        store: Store | None = None,
        check_requires: bool = True,
    ) -> Registry:
        """The registry a package ships as package data.

        The distribution whose version ``requires`` is checked is the lockfile's
        ``package``; for a lockfile without one, the single installed distribution whose
        RECORD lists the package's files.

        Args:
            package: the import package holding the lockfile, e.g. ``"structflo.cser"``.
            resource: the lockfile's name inside it.
            store: the local store; default the user's store.
            check_requires: as for :class:`Registry`.

        Raises:
            LockfileError: the package has no such file, or it is malformed.
        """
        try:
            ref = importlib.resources.files(package).joinpath(resource)
            text = ref.read_text(encoding="utf-8")
        except ModuleNotFoundError:
            raise UsageError(
                f"no installed package {package!r}",
                hint="install it, or check the import name (e.g. 'structflo.cser')",
            ) from None
        except (FileNotFoundError, NotADirectoryError):
            raise LockfileError(
                f"package {package!r} ships no {resource!r}",
                hint="ship the lockfile as package data (e.g. [tool.setuptools.package-data])",
            ) from None
        except UnicodeDecodeError:
            raise LockfileError(f"package {package!r}: {resource!r} is not UTF-8 text") from None
        lock = Lockfile.loads(text, Path(str(ref)))
        registry = cls(lock, store, check_requires=check_requires)
        if registry.distribution is None:
            registry.distribution, registry._unknown_why = _owning_distribution(package)
        return registry

    # -- resolving -------------------------------------------------------------------------

    def installed_version(self) -> Version | None:
        """The installed version of the owning distribution, or None when unknown."""
        if not self.distribution:
            return None
        try:
            return Version(importlib.metadata.version(self.distribution))
        except importlib.metadata.PackageNotFoundError:
            return None

    def _installed_for(self, name: str, version: str, entry: LockedVersion) -> Version:
        """The installed version to check ``entry.requires`` against; never a guess.

        Raises:
            CompatibilityCheckError: the distribution is unknown or not installed.
        """
        label = f"{name}@{version} requires {entry.requires!r}"
        if not self.distribution:
            why = self._unknown_why or f"{self.lock.path or 'the lockfile'} names no `package:`"
            raise CompatibilityCheckError(
                f"{label}, but whose version to check is unknown: {why}",
                hint="add `package: DIST` to the lockfile (cas publish and cas add --requires "
                "write it), or opt out with check_requires=False / --no-check-requires",
            )
        installed = self.installed_version()
        if installed is None:
            raise CompatibilityCheckError(
                f"{label} of {self.distribution}, which is not installed",
                hint=f"install it (pip install {self.distribution}), or opt out with "
                "check_requires=False / --no-check-requires",
            )
        return installed

    def admits(self, name: str, version: str, entry: LockedVersion) -> bool:
        """Whether the installed package can use these weights (see :meth:`resolve`).

        Raises:
            CompatibilityCheckError: the check cannot run.
        """
        if entry.requires is None or not self.check_requires:
            return True
        installed = self._installed_for(name, version, entry)
        return parse_requires(entry.requires, "requires").contains(installed, prereleases=True)

    def resolve(self, name: str, version: str | None = None) -> tuple[str, LockedVersion]:
        """Choose a version and check that the installed package can use it.

        Without ``version``: ``latest`` when compatible, else the newest compatible older
        version that is not a pre-release (with a warning that names both).

        Raises:
            NotPinnedError: unknown model or version.
            SignatureError: the lockfile trusts signers for the model and the chosen version
                has no valid signature by one of them.
            WeightsCompatibilityError: no usable version; the message says which range is
                needed, what is installed, and the command that upgrades.
            CompatibilityCheckError: a version has ``requires`` and the distribution to check
                is unknown or not installed.
        """
        chosen, entry = self.lock.version(name, version)
        if self.admits(name, chosen, entry):
            return self._trusted(name, chosen, entry)
        model = self.lock.model(name)
        compatible = [
            v
            for v in reversed(model.ordered())
            if not is_prerelease(v) and self.admits(name, v, model.versions[v])
        ]
        installed = self.installed_version()
        if version is None and compatible:
            warn(
                f"{name}@{chosen} (latest) requires {self.distribution}{entry.requires}, "
                f"you have {installed}; using {name}@{compatible[0]} instead"
            )
            return self._trusted(name, compatible[0], model.versions[compatible[0]])
        raise self._incompatible(name, chosen, entry, installed, compatible)

    def _trusted(self, name: str, version: str, entry: LockedVersion) -> tuple[str, LockedVersion]:
        """The version, once the lockfile's ``trust:`` accepts its signature (if it has one).

        Raises:
            SignatureError: the model has trusted signers and this version is not validly
                signed by one of them (docs/signing.md).
        """
        if self.lock.trusted(name):
            from modelcas.signing import check_trusted  # noqa: PLC0415 (only when trusting)

            if entry.signature is not None and not self.store.has(entry.signature.digest.sha256):
                # A fresh store: the signature comes from where the version lives, as its files.
                from modelcas.remotes.signature import fetch_signature  # noqa: PLC0415

                fetch_signature(self.store, name, version, entry)
            check_trusted(self.lock, name, version, self.store, entry=entry)
        return version, entry

    def _incompatible(
        self,
        name: str,
        version: str,
        entry: LockedVersion,
        installed: Version | None,
        compatible: list[str],
    ) -> WeightsCompatibilityError:
        dist, spec = self.distribution, entry.requires
        verb = _direction(spec, installed)
        error = WeightsCompatibilityError(
            f"Weights '{name}/{version}' require {dist}{spec} (you have {installed}).",
            hint=f"{verb} with:  uv add '{dist}{spec}'   (or: pip install '{dist}{spec}')",
        )
        error.compatible = compatible  # older versions that work with what is installed
        return error

    def pins(self, name: str | None = None, version: str | None = None) -> list[Pin]:
        """The pinned files of one version, of every version of one model, or of everything.

        Only bytes: ``requires`` is not read, so a cache can be warmed without the package.
        """
        if name is not None and version is not None:
            version, entry = self.lock.version(name, version)
            return [Pin(name, version, f, d) for f, d in entry.files.items()]
        return [Pin(m, v, f, d) for m, v, f, d in self.lock.entries() if name is None or m == name]

    # -- fetching and paths ----------------------------------------------------------------

    def fetch(self, pin: Pin, *, progress: Progress | None = None, verify: bool = True) -> Path:
        """Make one pinned file present and verified in the store; return its path.

        ``verify=False`` skips re-hashing an object that is already present, for callers that
        verify the bytes themselves as they read them (``modelcas.torch``); the size and the
        store's record are still compared with the pin.

        Raises:
            IntegrityError: the stored copy is corrupt or has another size or digest than the
                pin, or the remote served other bytes.
            NotPinnedError: it is missing and its version has no source to fetch from.
            RemoteError: the source failed.
        """
        if self.store.has(pin.digest.sha256):
            self.check_record(pin)
            return self.store.path(pin.digest.sha256, verify=verify, progress=progress)
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
            at_source = place == entry.source
            remote, at = pinned(
                place,
                model=pin.model,
                version=pin.version,
                commit=entry.commit if at_source else None,
                validator=entry.validator if at_source else None,
            )
            try:
                got = remote.fetch(at, {pin.file: pin.digest}, self.store, progress=progress)
            except (RemoteError, IntegrityError) as e:
                failures.append(e)
                continue
            for failed in failures:
                warn(f"{pin.label}: {failed.message}")
            return self.store.object_path(got[0].digest.sha256)
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
            WeightsCompatibilityError, CompatibilityCheckError: see :meth:`resolve`.
            NotPinnedError: no such model, version or file.
            UsageError: the version has several files and ``file`` is not given.
        """
        chosen, entry = self.resolve(name, version)
        if file is None:
            if len(entry.files) != 1:
                raise UsageError(
                    f"{name}@{chosen} has {len(entry.files)} files "
                    f"({', '.join(entry.files)}); say which one",
                    hint=f"--file NAME (file=...) names one; every file: cas get {name}@{chosen} "
                    "-o DIR/, or Registry.view()",
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
            file: which file of the version; without it, a version with several files gives
                its directory (as ``cas path`` prints it).

        Returns:
            A path in the store's named view of the version, ending in the pinned file name
            (``.../views/<key>/best.pt``, a symlink to the verified object): frameworks that
            decide by the suffix accept it. For a version with several files and no ``file``,
            the view itself (:meth:`view`: what ``from_pretrained`` takes). Never write to it
            (``docs/store.md``).

        Raises:
            WeightsCompatibilityError, CompatibilityCheckError: see :meth:`resolve`.
            NotPinnedError, IntegrityError, RemoteError: see :meth:`fetch`.
        """
        if file is None:
            chosen, entry = self.resolve(name, version)  # resolved (and warned about) once
            if len(entry.files) > 1:
                return self._fetch_all(name, chosen, entry)
            ((only, digest),) = entry.files.items()
            pin = Pin(name, chosen, only, digest)
        else:
            pin = self.pin(name, version, file)
        self.fetch(pin)
        return self.named(pin)

    def paths(self, name: str, version: str | None = None) -> dict[str, Path]:
        """Every file of a version, verified, by file name (paths in its named view)."""
        chosen, entry = self.resolve(name, version)
        folder = self._fetch_all(name, chosen, entry)
        return {f: folder / f for f in entry.files}

    def view(self, name: str, version: str | None = None) -> Path:
        """The version's directory: every file verified, under its pinned name.

        What ``from_pretrained`` takes (``config.json`` beside the weights, shards beside
        their index), as the Hugging Face cache's ``snapshots/<commit>/``.

        Raises:
            As :meth:`paths`.
        """
        chosen, entry = self.resolve(name, version)
        return self._fetch_all(name, chosen, entry)

    def _fetch_all(self, name: str, version: str, entry: LockedVersion) -> Path:
        for f, d in entry.files.items():
            self.fetch(Pin(name, version, f, d))
        return views.view(self.store, entry.files)

    def named(self, pin: Pin) -> Path:
        """Where a pinned file is named in its version's view (the object is not checked).

        Raises:
            NotPinnedError: the pin's version is not in the lockfile.
        """
        _, entry = self.lock.version(pin.model, pin.version)
        return views.file(self.store, entry.files, pin.file)

    def check_record(self, pin: Pin) -> None:
        """The pin must agree with the store's record of the same sha256: size and blake3.

        Raises:
            IntegrityError: they differ (one of the two is wrong; nothing is served).
        """
        known = self.store.info(pin.digest.sha256).digest
        if (m := mismatch(pin.digest, known)) is not None:
            where = f"models.{pin.model}.versions.{pin.version}.files.{pin.file}.{m.field}"
            raise IntegrityError(
                f"{self.lock.path}: {where}: the lockfile says {m.expected}, the store's object "
                f"sha256:{pin.digest.sha256} is {m.actual}",
                hint="one of the two is wrong: re-pin from a trusted copy "
                "(`cas verify --deep` checks the store's side)",
            )

    def register(self) -> None:
        """Keep this lockfile's objects through ``cas gc``."""
        if self.lock.path is not None:
            self.store.register_root(self.lock.path, "lockfile")


def _direction(spec: str | None, installed: Version | None) -> str:
    """Which way the installed package must move: "Upgrade", "Downgrade" or "Install".

    The seed's message says "Upgrade with"; for weights that need an older package (the
    installed version is past an upper bound) that would send the reader the wrong way.
    """
    if spec is None or installed is None:
        return "Install"
    older = newer = False
    for s in parse_requires(spec, "requires"):
        if s.contains(installed, prereleases=True):
            continue
        if s.operator in ("!=", "==="):
            return "Install"  # excluded, or an arbitrary string: no direction to name
        bound = Version(s.version.removesuffix(".*"))
        if s.operator in ("<", "<=") or (s.operator not in (">", ">=") and installed > bound):
            older = True  # the installed version is too new
        else:
            newer = True
    if older and not newer:
        return "Downgrade"
    if newer and not older:
        return "Upgrade"
    return "Install"


def _owning_distribution(package: str) -> tuple[str | None, str | None]:
    """The one installed distribution whose RECORD lists the import package's files.

    ``packages_distributions()`` maps only top-level names, and gets namespace packages and
    editable installs wrong, so the RECORDs are read instead.

    Returns:
        (distribution, None), or (None, why it is unknown).
    """
    parts = tuple(package.split("."))
    owners = set()
    for dist in importlib.metadata.distributions():
        for f in dist.files or ():
            if f.parts[: len(parts)] == parts and f.suffix == ".py":
                owners.add(dist.metadata["Name"])
                break
    if len(owners) == 1:
        return owners.pop(), None
    if not owners:
        return None, f"no installed distribution's RECORD lists the files of {package!r}"
    return None, f"several installed distributions list {package!r}: {', '.join(sorted(owners))}"


def open_lock(
    path: str | os.PathLike[str] | None = None,
    *,
    store: Store | None = None,
    check_requires: bool = True,
) -> Registry:
    """A project's lockfile as a registry (default: the nearest ``cas.lock``).

    Raises:
        LockfileError: none found, or malformed.
    """
    return Registry(Lockfile.load(lockfile.locate(path)), store, check_requires=check_requires)
