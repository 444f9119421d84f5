"""``cas lock set``: edit a pin's ``requires`` or ``latest``, or the lockfile's ``package``.

No bytes move and no digest changes: only the fields people decide after the fact, so that
nobody edits the generated YAML by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from modelcas import lockfile
from modelcas.errors import UsageError


@dataclass(frozen=True, slots=True)
class SetRequest:
    """What to change; ``None`` leaves a field as it is."""

    lock: Path
    ref: str | None = None  # NAME@VERSION, for requires and latest
    requires: str | None = None  # a PEP 440 range; "" removes it
    latest: bool = False  # make this version the model's latest
    package: str | None = None  # the distribution `requires` refers to


@dataclass
class SetResult:
    """What changed (each as ``field: old -> new``)."""

    lock: Path
    changes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether the lockfile was rewritten."""
        return bool(self.changes)


def set_fields(req: SetRequest) -> SetResult:
    """Apply the request to the lockfile (read, checked, written atomically).

    Raises:
        UsageError: nothing to set, a bad range, or ``requires``/``latest`` without a
            version, or a range with no package known to check it against.
        NotPinnedError: no such model or version.
        LockfileError: the lockfile is malformed.
    """
    if req.requires is None and not req.latest and req.package is None:
        raise UsageError("nothing to set: give --requires, --latest or --package")
    name = version = None
    if req.ref is not None:
        name, version = lockfile.split_ref(req.ref)
    if (req.requires is not None or req.latest) and version is None:
        raise UsageError("--requires and --latest edit one version: name it as NAME@VERSION")
    if req.requires:
        lockfile.parse_requires(req.requires, "--requires")
    if req.package is not None:
        lockfile.check_package(req.package, "--package")
    result = SetResult(req.lock)
    with lockfile.edit(req.lock) as lock:
        if name is not None and version is not None:
            chosen, entry = lock.version(name, version)
            label = f"{name}@{chosen}"
            if req.requires is not None:
                new = req.requires or None
                if entry.requires != new:
                    result.changes.append(f"{label} requires: {entry.requires} -> {new}")
                    entry.requires = new
            if req.latest:
                model = lock.models[name]
                if model.latest != chosen:
                    result.changes.append(f"{name} latest: {model.latest} -> {chosen}")
                    model.latest = chosen
        if req.package is not None and lock.package != req.package:
            result.changes.append(f"package: {lock.package} -> {req.package}")
            lock.package = req.package
        if req.requires and lock.package is None:
            package = lockfile.project_name(req.lock)
            if package is None:
                raise UsageError(
                    f"--requires {req.requires!r} needs to know whose version to check: "
                    f"{req.lock} has no `package:` and no pyproject.toml is above it",
                    hint="pass --package DIST as well (e.g. structflo-cser)",
                )
            result.changes.append(f"package: None -> {package}")
            lock.package = package
    return result
