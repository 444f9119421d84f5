"""A version of a model as a CNCF ModelPack artifact: build its manifest, read one back.

One artifact per version. Each file is one uncompressed layer whose media type is its role's
(``weight.v1.raw``; ``weight.config.v1.raw`` for configs and tokenizers; ``doc.v1.raw`` for
README and LICENSE) and whose digest is the file's sha256, so the registry, the lockfile and
the store name the same bytes the same way; the file's name is the layer's
``org.cncf.model.filepath`` annotation. The config blob (``...model.config.v1+json``) holds
``descriptor`` (name, version), ``config`` and ``modelfs`` (``type: layers``, ``diffIds``:
for raw layers, the layers' digests). See ``docs/spec.md`` and ``docs/config.md``
of ``modelpack/model-spec``.

What is built is deterministic (no timestamps): the same files give the same manifest digest,
so a rerun after a failure recognises its own tag.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from modelcas.digest import Digest, is_hex64
from modelcas.errors import IntegrityError, RemoteError, UsageError

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
ARTIFACT_TYPE = "application/vnd.cncf.model.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.cncf.model.config.v1+json"
WEIGHT_RAW = "application/vnd.cncf.model.weight.v1.raw"
WEIGHT_CONFIG_RAW = "application/vnd.cncf.model.weight.config.v1.raw"
DOC_RAW = "application/vnd.cncf.model.doc.v1.raw"
# Other one-file-per-layer ModelPack types a pull accepts (tar layers are archives, not files).
RAW_LAYER_TYPES = frozenset(
    {
        WEIGHT_RAW,
        WEIGHT_CONFIG_RAW,
        DOC_RAW,
        "application/vnd.cncf.model.code.v1.raw",
        "application/vnd.cncf.model.dataset.v1.raw",
    }
)
FILEPATH = "org.cncf.model.filepath"
TITLE = "org.opencontainers.image.title"  # what `oras pull` names a file by
VERSION = "org.opencontainers.image.version"
REQUIRES = "io.modelcas.requires"  # the version's `requires` range, for `cas pull`
PACKAGE = "io.modelcas.package"  # whose version `requires` is checked against
_CONFIG_NAMES = ("config.json", "generation_config.json", "preprocessor_config.json")
_DOC_STEMS = ("readme", "license", "licence", "notice", "model_card", "modelcard")


def role_media_type(path: str) -> str:
    """The ModelPack layer type of a file by its role (a raw layer: one file each).

    ``weight.config`` for configs and tokenizers (``config.json``, ``tokenizer*``,
    ``*.yaml``/``*.yml``, ``classes.json``-like JSON next to weights is a config too), ``doc``
    for README and LICENSE files, and ``weight`` for everything else.
    """
    base = path.rsplit("/", 1)[-1].lower()
    stem = base.split(".", 1)[0]
    if stem in _DOC_STEMS or base.endswith((".md", ".rst")):
        return DOC_RAW
    if (
        base in _CONFIG_NAMES
        or base.startswith(("tokenizer", "special_tokens_map", "vocab", "merges"))
        or base.endswith((".yaml", ".yml", ".json", ".txt"))
    ):
        return WEIGHT_CONFIG_RAW
    return WEIGHT_RAW


MAX_CONFIG = 1 << 20


@dataclass(frozen=True, slots=True)
class Blob:
    """A blob of the artifact: its media type and digest (the bytes for the config)."""

    media_type: str
    digest: Digest
    data: bytes | None = None

    @property
    def descriptor(self) -> dict[str, Any]:
        """The OCI descriptor (without annotations)."""
        return {
            "mediaType": self.media_type,
            "digest": self.digest.address,
            "size": self.digest.size,
        }


@dataclass(frozen=True, slots=True)
class Artifact:
    """A model version as an OCI artifact: the manifest bytes and what they point at."""

    name: str
    version: str | None
    requires: str | None
    files: dict[str, Digest]  # file path -> digest, in layer order
    config: Blob
    manifest: bytes
    media_types: dict[str, str] = field(default_factory=dict)  # file path -> layer type

    @property
    def digest(self) -> str:
        """The manifest digest, ``sha256:<hex>``."""
        return "sha256:" + hashlib.sha256(self.manifest).hexdigest()

    def blobs(self) -> list[tuple[str, Blob]]:
        """Every blob to push, named for messages: the layers, then the config."""
        layers = [(f, Blob(self.media_types.get(f, WEIGHT_RAW), d)) for f, d in self.files.items()]
        return [*layers, ("(config)", self.config)]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def build(
    name: str,
    version: str,
    files: dict[str, Digest],
    requires: str | None,
    *,
    package: str | None = None,
    media_types: dict[str, str] | None = None,
) -> Artifact:
    """The ModelPack artifact of a version (layers sorted by file name).

    Each layer's media type is its role's (:func:`role_media_type`) unless ``media_types``
    names another; ``requires`` and ``package`` travel as manifest annotations.

    Raises:
        UsageError: ``media_types`` names a file the version does not have, or a type that
            is not a raw ModelPack layer.
    """
    ordered = dict(sorted(files.items()))
    chosen = {f: role_media_type(f) for f in ordered}
    for f, t in (media_types or {}).items():
        if f not in ordered:
            raise UsageError(
                f"--media-type {f}={t}: {name}@{version} has no file {f!r}",
                hint=f"its files: {', '.join(ordered)}",
            )
        if t not in RAW_LAYER_TYPES:
            raise UsageError(
                f"--media-type {f}={t}: not a raw ModelPack layer type",
                hint="one of: " + ", ".join(sorted(RAW_LAYER_TYPES)),
            )
        chosen[f] = t
    config = _dumps(
        {
            "descriptor": {"name": name, "version": version},
            "config": {},
            "modelfs": {"type": "layers", "diffIds": [d.address for d in ordered.values()]},
        }
    )
    config_blob = Blob(
        CONFIG_MEDIA_TYPE, Digest(hashlib.sha256(config).hexdigest(), len(config)), config
    )
    annotations = {VERSION: version}
    if requires:
        annotations[REQUIRES] = requires
    if package:
        annotations[PACKAGE] = package
    manifest = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": ARTIFACT_TYPE,
        "config": config_blob.descriptor,
        "layers": [
            {
                **Blob(chosen[f], d).descriptor,
                "annotations": {FILEPATH: f, TITLE: f},
            }
            for f, d in ordered.items()
        ],
        "annotations": annotations,
    }
    return Artifact(name, version, requires, ordered, config_blob, _dumps(manifest), chosen)


@dataclass(frozen=True, slots=True)
class Manifest:
    """A ModelPack manifest read from a registry, checked for what a pull relies on."""

    digest: str
    config: Blob
    files: dict[str, Digest]
    annotations: dict[str, str]
    media_types: dict[str, str] = field(default_factory=dict)


def parse_manifest(body: bytes, where: str) -> Manifest:
    """Read and check a manifest: ModelPack, raw layers, safe and unique file names.

    Raises:
        RemoteError: not a ModelPack artifact this modelcas can pull (the message says why).
    """
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raise RemoteError(f"{where}: the manifest is not JSON") from None
    if not isinstance(raw, dict):
        raise RemoteError(f"{where}: the manifest is not a JSON object")
    media_type = raw.get("mediaType")
    if media_type == "application/vnd.oci.image.index.v1+json":
        raise RemoteError(
            f"{where} is an image index, not a model artifact",
            hint="pull one of its manifests by digest",
        )
    if raw.get("schemaVersion") != 2 or media_type not in (None, MANIFEST_MEDIA_TYPE):
        raise RemoteError(f"{where}: not an OCI image manifest (mediaType {media_type!r})")
    config = _descriptor(raw.get("config"), where, "config")
    if raw.get("artifactType") != ARTIFACT_TYPE and config.media_type != CONFIG_MEDIA_TYPE:
        raise RemoteError(
            f"{where} is not a ModelPack model artifact (artifactType "
            f"{raw.get('artifactType')!r}, config {config.media_type!r})",
            hint=f"cas pulls artifacts with artifactType {ARTIFACT_TYPE}",
        )
    if config.media_type != CONFIG_MEDIA_TYPE:
        raise RemoteError(f"{where}: config media type is {config.media_type!r}")
    layers = raw.get("layers")
    if not isinstance(layers, list) or not layers:
        raise RemoteError(f"{where}: the manifest has no layers")
    files: dict[str, Digest] = {}
    types: dict[str, str] = {}
    for i, layer in enumerate(layers):
        blob = _descriptor(layer, where, f"layers[{i}]")
        if blob.media_type not in RAW_LAYER_TYPES:
            raise RemoteError(
                f"{where}: layers[{i}] has media type {blob.media_type!r}; cas pulls "
                "ModelPack raw layers (one file each), not archives",
                hint="repack the model with raw layers (cas publish does)",
            )
        notes = layer.get("annotations") or {}
        path = notes.get(FILEPATH) or notes.get(TITLE) if isinstance(notes, dict) else None
        if not isinstance(path, str):
            raise RemoteError(f"{where}: layers[{i}] has no {FILEPATH} annotation")
        _check_path(path, where, i)
        if path in files:
            raise RemoteError(f"{where}: two layers are named {path!r}")
        files[path] = blob.digest
        types[path] = blob.media_type
    notes = raw.get("annotations") or {}
    annotations = (
        {k: v for k, v in notes.items() if isinstance(v, str)} if isinstance(notes, dict) else {}
    )
    return Manifest(digest, config, files, annotations, types)


def _descriptor(value: object, where: str, what: str) -> Blob:
    if not isinstance(value, dict):
        raise RemoteError(f"{where}: {what} is not a descriptor")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str):
        raise RemoteError(f"{where}: {what} has no mediaType")
    if not isinstance(digest, str) or not (
        digest.startswith("sha256:") and is_hex64(digest.removeprefix("sha256:"))
    ):
        raise RemoteError(
            f"{where}: {what} digest {digest!r} is not sha256:<hex>",
            hint="cas addresses content by sha256; other digest algorithms cannot be pinned",
        )
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RemoteError(f"{where}: {what} size {size!r} is not a byte count")
    return Blob(media_type, Digest(digest.removeprefix("sha256:"), size))


def _check_path(path: str, where: str, index: int) -> None:
    """A relative POSIX path inside the version, without ``..``: it names a file, nothing more."""
    normal = posixpath.normpath(path)
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or normal != path
        or normal == ".."
        or normal.startswith("../")
    ):
        raise RemoteError(
            f"{where}: layers[{index}] file path {path!r} is not a safe relative name"
        )


@dataclass(frozen=True, slots=True)
class Config:
    """The descriptor name and version a config gives."""

    name: str | None
    version: str | None


def parse_config(body: bytes, manifest: Manifest, where: str) -> Config:
    """Check a config blob against its manifest: ModelPack shape, diffIds = layer digests.

    Raises:
        IntegrityError: ``diffIds`` disagree with the layers.
        RemoteError: not a ModelPack config.
    """
    try:
        raw = json.loads(body)
    except (ValueError, RecursionError):
        raise RemoteError(f"{where}: the config blob is not JSON") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("descriptor"), dict):
        raise RemoteError(f"{where}: the config blob has no descriptor")
    modelfs = raw.get("modelfs")
    if not isinstance(modelfs, dict) or modelfs.get("type") != "layers":
        raise RemoteError(f"{where}: the config's modelfs is not of type 'layers'")
    diff_ids = modelfs.get("diffIds", modelfs.get("diff_ids"))
    layers = [d.address for d in manifest.files.values()]
    if diff_ids != layers:
        raise IntegrityError(
            f"{where}: the config's modelfs.diffIds {diff_ids!r} differ from the layers "
            f"{layers!r}; nothing was stored",
            hint="the artifact is inconsistent: ask its publisher to push it again",
        )
    descriptor = raw["descriptor"]
    name, version = descriptor.get("name"), descriptor.get("version")
    return Config(
        name if isinstance(name, str) and name else None,
        version if isinstance(version, str) and version else None,
    )
