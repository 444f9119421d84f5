"""Registry credentials, found where docker, podman and oras keep them, and auth challenges.

Where a credential comes from, first match wins:

1. ``REGISTRY_AUTH_FILE`` (podman, skopeo, buildah), else podman's default
   ``$XDG_RUNTIME_DIR/containers/auth.json``;
2. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json`` (docker, oras).

In each file a registry's ``credHelpers`` entry wins, then ``credsStore``, then the inline
``auths`` entry, as docker itself decides. A helper is the ``docker-credential-NAME`` program
on ``PATH`` (``get`` protocol: the registry on stdin, JSON out). A username of ``<token>`` means
the secret is an identity (refresh) token for the OAuth2 flow.

Secrets never reach a repr, a message or a log: :class:`Credential` hides them, and helper
output is parsed, never echoed.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelcas import untrusted
from modelcas.errors import ModelcasError, RemoteError, UsageError

# A docker config is a few kilobytes; a bound, so that a wrong path cannot eat memory.
_MAX_CONFIG = 16 << 20

# The username docker files an identity token under (not a secret).
IDENTITY_TOKEN_USER = "<token>"  # noqa: S105
# Docker Hub's credentials are filed under its v1 index address.
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io"}
_PARAM = re.compile(r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


@dataclass(frozen=True, slots=True)
class Credential:
    """A username and its secret (a password, or an identity token when ``identity_token``).

    ``origin`` names where it was found (a file or a helper), for messages.
    """

    username: str
    secret: str = field(repr=False)
    identity_token: bool = False
    origin: str = ""

    def basic(self) -> str:
        """The ``Authorization: Basic`` value."""
        raw = f"{self.username}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True, slots=True)
class Challenge:
    """What a registry's ``WWW-Authenticate`` asks for: ``basic``, or ``bearer`` with a realm."""

    scheme: str
    realm: str | None = None
    service: str | None = None
    scope: str | None = None


def parse_challenge(header: str | None) -> Challenge | None:
    """The first Basic or Bearer challenge in a ``WWW-Authenticate`` header, or None."""
    if not header:
        return None
    scheme, _, params = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    values = {}
    for key, raw in _PARAM.findall(params):
        value = raw[1:-1].replace('\\"', '"') if raw.startswith('"') else raw
        values[key.lower()] = value
    return Challenge(scheme, values.get("realm"), values.get("service"), values.get("scope"))


def config_files() -> list[Path]:
    """The credential files consulted, in order (existing or not)."""
    files = []
    auth_file = os.environ.get("REGISTRY_AUTH_FILE")
    if auth_file:
        files.append(Path(auth_file))
    elif os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    docker_dir = os.environ.get("DOCKER_CONFIG")
    files.append(
        Path(docker_dir) / "config.json" if docker_dir else Path.home() / ".docker" / "config.json"
    )
    return files


def find_credential(registry: str) -> Credential | None:
    """The credential for ``registry`` (``host[:port]``), or None to go anonymous.

    Raises:
        UsageError: a credential file is malformed.
        RemoteError: a configured credential helper is missing or failed.
    """
    for path in config_files():
        config = _read_config(path)
        if config is None:
            continue
        found = _from_config(config, registry, path)
        if found is not None:
            return found
    return None


def _read_config(path: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads(untrusted.read_text(path, "a credential file (JSON)", cap=_MAX_CONFIG))
    except FileNotFoundError:
        return None
    except ModelcasError as e:  # a FIFO, device or huge file: refused, never read
        raise UsageError(
            e.message, hint="fix or remove it, or log in again (`docker login` / `podman login`)"
        ) from None
    except (OSError, ValueError, RecursionError) as e:
        raise UsageError(
            f"{path}: unreadable credential file ({type(e).__name__})",
            hint="fix or remove it, or log in again (`docker login` / `podman login`)",
        ) from None
    if not isinstance(raw, dict):
        raise UsageError(f"{path}: a credential file must hold a JSON object")
    return raw


def _keys(registry: str) -> Iterator[str]:
    yield registry.lower()
    if registry.lower() in _HUB_ALIASES:
        yield "index.docker.io"


def _normalize(key: str) -> str:
    """``https://host:port/v1/`` -> ``host:port``: how docker files the same registry."""
    key = key.lower()
    for prefix in ("https://", "http://"):
        key = key.removeprefix(prefix)
    return key.split("/", 1)[0]


def _from_config(config: dict[str, Any], registry: str, path: Path) -> Credential | None:
    helpers = config.get("credHelpers") or {}
    auths = config.get("auths") or {}
    if not isinstance(helpers, dict) or not isinstance(auths, dict):
        raise UsageError(f"{path}: 'auths' and 'credHelpers' must be JSON objects")
    by_key = {_normalize(k): v for k, v in auths.items()}
    helper_by_key = {_normalize(k): v for k, v in helpers.items()}
    for key in _keys(registry):
        helper = helper_by_key.get(key)
        if isinstance(helper, str) and helper:
            return _from_helper(helper, registry)
    store = config.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, registry)
        if found is not None:
            return found
    for key in _keys(registry):
        entry = by_key.get(key)
        if isinstance(entry, dict):
            found = _from_entry(entry, path, key)
            if found is not None:
                return found
    return None


def _from_entry(entry: dict[str, Any], path: Path, key: str) -> Credential | None:
    origin = str(path)
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    username, password = entry.get("username"), entry.get("password")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise UsageError(
                f"{path}: auths.{key}.auth is not base64 of USER:PASSWORD",
                hint=f"log in again: `docker login {key}`",
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise UsageError(f"{path}: auths.{key}.auth is not base64 of USER:PASSWORD")
    if isinstance(token, str) and token:
        return Credential(username or IDENTITY_TOKEN_USER, token, True, origin)
    if isinstance(username, str) and isinstance(password, str) and username:
        return Credential(username, password, False, origin)
    return None


def _from_helper(name: str, registry: str) -> Credential | None:
    program = f"docker-credential-{name}"
    exe = shutil.which(program)
    if exe is None:
        raise RemoteError(
            f"{program} (the credential helper configured for {registry}) is not on PATH",
            hint="install it, or remove it from credHelpers/credsStore in your docker config",
        )
    try:
        done = subprocess.run(
            [exe, "get"],
            input=registry.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RemoteError(f"{program} get {registry}: no answer within 60 s") from None
    if done.returncode != 0:
        said = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
        if "credentials not found" in said.lower():
            return None
        first = said.splitlines()[0][:200] if said else f"exit status {done.returncode}"
        raise RemoteError(
            f"{program} get {registry} failed: {first}",
            hint=f"log in again (`docker login {registry}`), or check the helper",
        )
    try:
        payload = json.loads(done.stdout)
        username, secret = payload["Username"], payload["Secret"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise RemoteError(f"{program} get {registry}: its answer is not JSON") from None
    if not isinstance(username, str) or not isinstance(secret, str) or not secret:
        return None
    return Credential(username, secret, username == IDENTITY_TOKEN_USER, program)
