"""YAML documents from users and from bundles, loaded defensively.

Bundle configs, the ``config.yml`` inside a bundle and pipeline configs are small mappings, but
a hostile or broken one can hold invalid UTF-8, nesting deep enough to exhaust the parser's
recursion, or aliases that expand exponentially. Each is refused with a one-line message.
"""

from __future__ import annotations

from typing import Any

import yaml

from modelcas.errors import ModelcasError

MAX_VALUES = 1_000_000  # values with aliases expanded
MAX_DEPTH = 64  # nesting of mappings and lists


def load(data: bytes, where: str, error: type[ModelcasError], *, hint: str | None = None) -> Any:
    """Parse one YAML document.

    Args:
        data: the document's bytes.
        where: what to name in messages (a path, or ``bundle.zip: config.yml``).
        error: the exception to raise.
        hint: the hint for that exception.

    Returns:
        The parsed value.

    Raises:
        ModelcasError: of type ``error``: not UTF-8, not YAML, too deep or too big.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        at = f"byte {e.start} is {data[e.start]:#04x}"
        raise error(f"{where} is not UTF-8 text ({at})", hint=hint) from None
    try:
        value = yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as e:
        if "nesting depth" in str(e):  # libyaml's own limit
            raise error(f"{where} is nested too deeply to read", hint=hint) from None
        raise error(f"{where} is not valid YAML: {one_line(e)}", hint=hint) from None
    except RecursionError:
        raise error(f"{where} is nested too deeply to read", hint=hint) from None
    depth, count = _shape(value)
    if depth > MAX_DEPTH:
        raise error(
            f"{where} is nested more than {MAX_DEPTH} levels deep, or refers to itself through "
            "a YAML alias",
            hint=hint,
        )
    if count > MAX_VALUES:
        raise error(
            f"{where} expands to more than {MAX_VALUES} values through YAML aliases (an alias "
            "bomb, or a self-referencing value)",
            hint=hint,
        )
    return value


def one_line(e: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and where."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return f"{e.problem}{at}"
    return " ".join(str(e).split())


# libyaml's safe loader where PyYAML was built with it: the same documents, faster.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _shape(value: object) -> tuple[int, int]:
    """(deepest nesting, values with aliases expanded), counting stops past ``MAX_VALUES``."""
    stack: list[tuple[object, int]] = [(value, 1)]
    deepest = count = 0
    while stack and count <= MAX_VALUES:
        v, depth = stack.pop()
        count += 1
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        if isinstance(v, dict):
            stack.extend((k, depth + 1) for k in v)
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
    return deepest, count
