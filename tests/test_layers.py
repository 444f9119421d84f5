"""The architecture, as a test: each layer imports only the layers before it.

    core -> digest/hashing -> store -> lockfile -> signing -> registry/remotes -> bundle -> ops
    -> loader -> cli

``modelcas.loader`` reads what the one resolver (``modelcas.ops.resolve``) names into verified
bytes; ``modelcas.torch`` is an adapter on top of it: nothing in the package imports it.
Imports inside functions count too, so the drawing cannot drift behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "modelcas"
LAYERS = [
    ("core", ["modelcas._core", "modelcas.errors", "modelcas.warning", "modelcas.untrusted"]),
    ("digest/hashing", ["modelcas.digest", "modelcas.hashing", "modelcas.sumfile", "modelcas.lfs"]),
    ("store", ["modelcas.store"]),
    ("lockfile", ["modelcas.lockfile", "modelcas.pinning", "modelcas.migrate"]),
    ("signing", ["modelcas.signing"]),
    (
        "registry/remotes",
        [
            "modelcas.registry",
            "modelcas.remotes",
            "modelcas.hub",
            "modelcas.hfcache",
            "modelcas.oci",
        ],
    ),
    ("bundle", ["modelcas.bundle"]),
    ("ops", ["modelcas.ops"]),
    ("loader", ["modelcas.loader"]),
    ("cli", ["modelcas.cli"]),
    ("adapters", ["modelcas.torch"]),
]
FACADES = {"modelcas", "modelcas.__main__"}  # re-export or run; not a layer


def _layer(module: str) -> int | None:
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("modelcas")}
        elif (
            isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("modelcas")
        ):
            found.add(node.module)
            # `from modelcas import hashing` imports the module modelcas.hashing.
            found |= {
                f"{node.module}.{a.name}"
                for a in node.names
                if (PACKAGE.parent / node.module.replace(".", "/") / f"{a.name}.py").exists()
                or (PACKAGE.parent / node.module.replace(".", "/") / a.name).is_dir()
            }
    return found


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_is_in_a_layer() -> None:
    missing = [m for m in _modules() if m not in FACADES and _layer(m) is None]
    assert missing == [], f"place these in LAYERS (tests/test_layers.py): {missing}"


def test_each_layer_imports_only_the_layers_before_it() -> None:
    wrong = []
    for name, path in _modules().items():
        if name in FACADES:
            continue
        mine = _layer(name)
        assert mine is not None
        for imported in _imports(path):
            theirs = _layer(imported)
            if theirs is not None and theirs > mine:
                wrong.append(f"{name} ({LAYERS[mine][0]}) imports {imported} ({LAYERS[theirs][0]})")
    assert wrong == []


def test_nothing_in_the_package_imports_the_torch_adapter() -> None:
    users = [
        name
        for name, path in _modules().items()
        if not name.startswith("modelcas.torch")
        and any(i == "modelcas.torch" or i.startswith("modelcas.torch.") for i in _imports(path))
    ]
    assert users == []


def test_only_the_cli_prints() -> None:
    """The ruff rule T20 enforces it; this keeps the rule itself from being dropped."""
    config = (PACKAGE.parent.parent / "pyproject.toml").read_text()
    assert '"T20"' in config
    assert '"python/modelcas/cli/**" = ["T20"]' in config
