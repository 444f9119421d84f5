"""OCI registries (Harbor, GHCR, ECR, ACR, Artifact Registry, Quay, CNCF distribution) as a remote.

A version is one CNCF ModelPack artifact tagged with the version; each file is one
uncompressed layer whose digest is the file's sha256 address. See ``docs/oci.md``.

- :mod:`modelcas.oci.reference`: ``oci://HOST[:PORT]/REPO[:TAG|@sha256:…]``.
- :mod:`modelcas.oci.auth`: credentials from docker/podman config and helpers; challenges.
- :mod:`modelcas.oci.client`: the distribution API over ``http.client`` (why not the oras
  SDK is written there).
- :mod:`modelcas.oci.modelpack`: the artifact's manifest and config.
- :mod:`modelcas.oci.remote`: the adapter to the one remote protocol (``modelcas.remotes``).
"""

from modelcas.oci.reference import Reference, check_tag, is_tag, parse
from modelcas.oci.remote import BlobStep, OciRemote, PushPlan, PushResult, plan_push, push

__all__ = [
    "BlobStep",
    "OciRemote",
    "PushPlan",
    "PushResult",
    "Reference",
    "check_tag",
    "is_tag",
    "parse",
    "plan_push",
    "push",
]
