"""Reading a hand-written weights registry (the seed's ``weights.py``) without running it.

A package that ships ``REGISTRY`` and ``LATEST`` dicts (and a ``scripts/publish_weights.py``
whose ``MODEL_REPOS`` names each model's Hub repo and file) moves to a lockfile with
``cas lock import``. Both files are parsed with :mod:`ast` and only literals are read: nothing
in them is executed, and a value that is not a literal is a one-line error naming its line.

The shapes such files have are tolerated: per version ``repo_id`` (or ``repo``), ``filename``
(or ``file``), ``revision`` (or ``tag``; default ``weights-<version>``, the seed's tags),
``sha256`` (bare or ``sha256:``-prefixed, or None) and ``requires``; ``repo_id``/``filename``
at the model level, in ``MODEL_REPOS``, or given on the command line. Every key that was not
used is reported, with its line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcas.digest import is_hex64
from modelcas.errors import UsageError

_REPO_KEYS = ("repo_id", "repo")
_FILE_KEYS = ("filename", "file")
_REV_KEYS = ("revision", "tag")
_VERSION_KEYS = {*_REPO_KEYS, *_FILE_KEYS, *_REV_KEYS, "sha256", "requires"}
_NOT_LITERAL = {
    ast.Call: "a function call",
    ast.Name: "a name",
    ast.Attribute: "an attribute",
    ast.JoinedStr: "an f-string",
    ast.BinOp: "an expression",
    ast.BoolOp: "an expression",
    ast.Compare: "a comparison",
    ast.Subscript: "a subscript",
    ast.Lambda: "a lambda",
    ast.IfExp: "a conditional expression",
    ast.DictComp: "a comprehension",
    ast.ListComp: "a comprehension",
    ast.SetComp: "a comprehension",
    ast.GeneratorExp: "a comprehension",
    ast.Starred: "a * expansion",
}

Lines = dict[tuple[Any, ...], int]


@dataclass(frozen=True, slots=True)
class LegacyVersion:
    """One version the hand-written registry records."""

    model: str
    version: str
    repo: str
    filename: str
    revision: str
    sha256: str | None
    requires: str | None
    where: str  # "weights.py:12", for messages


@dataclass
class LegacyRegistry:
    """What a ``weights.py`` (and its publish script) say, read without running them."""

    path: Path
    versions: list[LegacyVersion] = field(default_factory=list)
    latest: dict[str, str] = field(default_factory=dict)
    weights_paths: dict[str, str] = field(default_factory=dict)
    unused: list[str] = field(default_factory=list)  # "weights.py:14: REGISTRY.m.v1.date"
    notes: list[str] = field(default_factory=list)  # models with nothing to import, defaults


def literals(path: Path, names: tuple[str, ...]) -> dict[str, tuple[Any, Lines]]:
    """The module-level ``NAME = <literal>`` assignments of a Python file, never executed.

    Returns:
        Each name found: its value, and the line of every key path in it.

    Raises:
        UsageError: not Python, or a wanted name is assigned something that is not a literal.
    """
    from modelcas.lockfile import read_text  # noqa: PLC0415

    text = read_text(path, "Python file")
    try:
        tree = ast.parse(text, filename=str(path))
    except SyntaxError as e:
        at = f"{path}:{e.lineno}" if e.lineno else str(path)
        raise UsageError(f"{at}: not valid Python: {e.msg}") from None
    except (ValueError, MemoryError, RecursionError) as e:
        # Null bytes (ValueError before 3.12), or nesting too deep for the parser.
        why = str(e).strip() or "nested too deeply to parse"
        raise UsageError(f"{path}: not valid Python: {why}") from None
    found: dict[str, tuple[Any, Lines]] = {}
    for stmt in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        for t in targets:
            if isinstance(t, ast.Name) and t.id in names and value is not None:
                lines: Lines = {(): value.lineno}
                found[t.id] = (_literal(value, (), lines, path, t.id), lines)
    return found


def _literal(node: ast.expr, at: tuple[Any, ...], lines: Lines, path: Path, name: str) -> Any:
    if isinstance(node, ast.Dict):
        out: dict[Any, Any] = {}
        for k, v in zip(node.keys, node.values, strict=True):
            if k is None:
                raise _not_literal(path, name, v, "a ** expansion")
            key = _literal(k, at, lines, path, name)
            try:
                hash(key)
            except TypeError:  # a list or dict as a key: Python itself would refuse it
                raise _not_literal(path, name, k, "a key that cannot be a dict key") from None
            lines[(*at, key)] = k.lineno
            out[key] = _literal(v, (*at, key), lines, path, name)
        return out
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e, (*at, i), lines, path, name) for i, e in enumerate(node.elts)]
        return items if isinstance(node, ast.List) else tuple(items)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        bad = next(
            (n for n in ast.walk(node) if type(n) in _NOT_LITERAL),
            node,
        )
        raise _not_literal(path, name, bad, _NOT_LITERAL.get(type(bad), "not a literal")) from None


def _not_literal(path: Path, name: str, node: ast.AST, what: str) -> UsageError:
    line = getattr(node, "lineno", "?")
    return UsageError(
        f"{path}:{line}: {name} is not a Python literal there ({what}); the file is read, "
        "never run, so nothing was imported",
        hint="write that value out as a literal, or pass --repo and --file",
    )


def _pick(entry: dict[Any, Any], keys: tuple[str, ...]) -> tuple[str | None, str | None]:
    for k in keys:
        if isinstance(entry.get(k), str):
            return entry[k], k
    return None, None


def read(
    weights_py: Path,
    *,
    script: Path | None = None,
    repo: str | None = None,
    file: str | None = None,
    model: str | None = None,
) -> LegacyRegistry:
    """Read ``REGISTRY``/``LATEST`` of a ``weights.py``, and ``MODEL_REPOS`` where needed.

    Args:
        weights_py: the package's ``weights.py``.
        script: the publish script holding ``MODEL_REPOS`` and ``DEFAULT_WEIGHTS_PATHS``;
            default ``scripts/publish_weights.py`` of the project (the folder of the nearest
            ``pyproject.toml``), read only when it is there.
        repo: the Hub repo (``org/name``) for versions that name none.
        file: the file name for versions that name none.
        model: only this model.

    Returns:
        Every version to import, ``LATEST``, default weights paths, and the keys not used.

    Raises:
        UsageError: no ``REGISTRY``, a non-literal, a version that is not PEP 440, or a
            version whose repo or file is named nowhere.
    """
    from modelcas.lockfile import parse_version  # noqa: PLC0415

    found = literals(weights_py, ("REGISTRY", "LATEST"))
    if "REGISTRY" not in found:
        raise UsageError(
            f"{weights_py}: no module-level REGISTRY = {{...}} to import",
            hint="point at the package's weights.py (the file with REGISTRY and LATEST)",
        )
    registry, rlines = found["REGISTRY"]
    latest_raw, llines = found.get("LATEST", ({}, {}))
    if not isinstance(registry, dict):
        raise UsageError(f"{weights_py}:{rlines[()]}: REGISTRY is not a dict")
    out = LegacyRegistry(weights_py)
    script = script if script is not None else _script_of(weights_py)
    try:
        repos, plines, spath = _model_repos(script)
    except UsageError as e:
        if repo is None or file is None:
            raise
        repos, plines, spath = {}, {}, None
        out.notes.append(f"MODEL_REPOS not read ({e.message.split(';')[0]}); using --repo/--file")

    def where(lines: Lines, *at: Any, file_: Path | None = None) -> str:
        name = (file_ or weights_py).name
        for n in range(len(at), -1, -1):
            if at[:n] in lines:
                return f"{name}:{lines[at[:n]]}"
        return name

    def unused(lines: Lines, label: str, at: tuple[Any, ...], keys: Iterator[Any]) -> None:
        for k in keys:
            out.unused.append(
                f"{where(lines, *at, k, file_=spath if label == 'MODEL_REPOS' else weights_py)}: "
                f"{label}.{'.'.join(map(str, (*at, k)))}"
            )

    for name, body in registry.items():
        if model is not None and name != model:
            continue
        if not isinstance(body, dict):
            unused(rlines, "REGISTRY", (), iter([name]))
            continue
        shared = repos.get(name, {}) if isinstance(repos.get(name), dict) else {}
        nested = body.get("versions")
        versions: dict[Any, Any] = nested if isinstance(nested, dict) else body
        vat: tuple[Any, ...] = (name, "versions") if versions is not body else (name,)
        top = {k: v for k, v in body.items() if not isinstance(v, dict)}
        if versions is body:
            unused(
                rlines, "REGISTRY", (name,), (k for k in top if k not in (*_REPO_KEYS, *_FILE_KEYS))
            )
        else:
            unused(
                rlines,
                "REGISTRY",
                (name,),
                (k for k in body if k not in ("versions", *_REPO_KEYS, *_FILE_KEYS)),
            )
        count = 0
        for version, entry in versions.items():
            if not isinstance(entry, (dict, str)):
                if versions is not body:  # a model-level scalar was reported above
                    unused(rlines, "REGISTRY", vat, iter([version]))
                continue
            try:
                parse_version(str(version))
            except UsageError:
                raise UsageError(
                    f"{where(rlines, *vat, version)}: REGISTRY[{name!r}]: {version!r} is not a "
                    "version (PEP 440, optionally with a v prefix)"
                ) from None
            fields: dict[Any, Any] = entry if isinstance(entry, dict) else {"revision": entry}
            r, _ = _pick(fields, _REPO_KEYS)
            f, _ = _pick(fields, _FILE_KEYS)
            rev, _ = _pick(fields, _REV_KEYS)
            r = r or _pick(top, _REPO_KEYS)[0] or _pick(shared, _REPO_KEYS)[0] or repo
            f = f or _pick(top, _FILE_KEYS)[0] or _pick(shared, _FILE_KEYS)[0] or file
            label = f"{where(rlines, *vat, version)}: {name}@{version}"
            if r is None or f is None:
                missing = "repo_id" if r is None else "filename"
                raise UsageError(
                    f"{label} names no {missing}, and neither does MODEL_REPOS"
                    + (f" in {spath}" if spath else " (no scripts/publish_weights.py found)"),
                    hint="pass --repo ORG/NAME and --file NAME (with --model for one model)",
                )
            sha = fields.get("sha256")
            if sha is not None:
                sha = str(sha).lower().removeprefix("sha256:")
                if not is_hex64(sha):
                    raise UsageError(f"{label}: sha256 {fields['sha256']!r} is not 64 hex digits")
            requires = fields.get("requires")
            if requires is not None and not isinstance(requires, str):
                # Dropping it would pin the version with no compatibility check at all.
                raise UsageError(
                    f"{label}: requires {requires!r} is not a version range",
                    hint="write it as one PEP 440 string, e.g. '>=1.0,<2'",
                )
            # What the lockfile would refuse is refused here, before anything is fetched.
            _check_pin(name, f, requires, where(rlines, name), label)
            if rev is None:
                rev = f"weights-{version}"
                out.notes.append(f"{label}: no revision recorded; using the tag {rev}")
            out.versions.append(
                LegacyVersion(
                    name, str(version), r.removeprefix("hf://"), f, rev, sha, requires, label
                )
            )
            unused(
                rlines,
                "REGISTRY",
                (*vat, version),
                (k for k in fields if k not in _VERSION_KEYS and isinstance(entry, dict)),
            )
            count += 1
        if not count:
            out.notes.append(
                f"{where(rlines, name)}: {name} has no versions yet; nothing to import"
            )
        want = latest_raw.get(name) if isinstance(latest_raw, dict) else None
        if isinstance(want, str):
            out.latest[name] = want
        if name in repos and isinstance(repos[name], dict):
            unused(
                plines,
                "MODEL_REPOS",
                (name,),
                (k for k in repos[name] if k not in (*_REPO_KEYS, *_FILE_KEYS)),
            )
    if isinstance(latest_raw, dict):
        for name in latest_raw:
            if name not in registry:
                unused(llines, "LATEST", (), iter([name]))
    if spath is not None:
        try:
            got = literals(spath, ("DEFAULT_WEIGHTS_PATHS",)).get("DEFAULT_WEIGHTS_PATHS")
        except UsageError as e:
            got = None
            out.notes.append(f"DEFAULT_WEIGHTS_PATHS not read: {e.message.split(';')[0]}")
        if got is not None and isinstance(got[0], dict):
            out.weights_paths = {
                k: v for k, v in got[0].items() if isinstance(v, str) and k in registry
            }
    return out


def _check_pin(model: Any, filename: str, requires: str | None, at: str, label: str) -> None:
    """Refuse a model name, file name or range that no lockfile can pin.

    Raises:
        UsageError: naming the line.
    """
    from modelcas.lockfile import check_file_name, check_name, parse_requires  # noqa: PLC0415

    try:
        if not isinstance(model, str):
            raise UsageError(f"{model!r} is not a model name")
        check_name(model)
    except UsageError as e:
        raise UsageError(f"{at}: {e.message}", hint=e.hint) from None
    check_file_name(filename, label)
    if requires is not None:
        parse_requires(requires, f"{label} requires")


def _script_of(weights_py: Path) -> Path | None:
    here = weights_py.resolve().parent
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file():
            candidate = d / "scripts" / "publish_weights.py"
            return candidate if candidate.is_file() else None
    return None


def _model_repos(script: Path | None) -> tuple[dict[Any, Any], Lines, Path | None]:
    if script is None:
        return {}, {}, None
    got = literals(script, ("MODEL_REPOS",)).get("MODEL_REPOS")
    if got is None or not isinstance(got[0], dict):
        return {}, {}, script
    return got[0], got[1], script
