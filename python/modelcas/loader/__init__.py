"""Verified reading of stored weights, without any framework: references, reads, headers.

``modelcas.torch`` (and any other framework adapter) builds on this: it resolves a reference
with :func:`resolve`, reads the bytes once while verifying them, and deserializes only what
was verified.
"""

from modelcas.loader.reader import read_bytes, read_into, snapshot
from modelcas.loader.target import Ref, Target, resolve

__all__ = ["Ref", "Target", "read_bytes", "read_into", "resolve", "snapshot"]
