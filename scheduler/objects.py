"""How objects are kept in the store: keys, JSON encoding, and resourceVersion.

An object's `metadata.resourceVersion` is its key's mod revision in the store;
it is not stored inside the value (the value is written before its revision is
known) but spliced in when the object is read.
"""

from __future__ import annotations

from typing import TypeVar

from common.models import Model
from scheduler.store import KV

PODS = "/pods/"
NODES = "/nodes/"

T = TypeVar("T", bound=Model)


def pod_key(namespace: str, name: str) -> str:
    return f"{PODS}{namespace}/{name}"


def node_key(name: str) -> str:
    return f"{NODES}{name}"


def encode(obj: Model) -> bytes:
    """The stored form: wire JSON without resourceVersion (metadata comes third, after
    apiVersion and kind, which `with_resource_version` relies on)."""
    return obj.model_dump_json(
        by_alias=True, exclude_none=True, exclude={"metadata": {"resource_version"}}
    ).encode()


_STATUS = b',"status":'


def status_json(status: Model) -> bytes:
    """An object's status as `encode` writes it: the last field of the object's JSON."""
    return status.model_dump_json(by_alias=True, exclude_none=True).encode()


def replace_status(stored: bytes, old: bytes, new: bytes) -> bytes | None:
    """The stored JSON of an object with its status `old` (`status_json`) replaced by
    `new`, without serializing the rest again; None unless `stored` ends with `old` as
    its last field, as `encode` writes it."""
    tail = _STATUS + old + b"}"
    if not stored.endswith(tail):
        return None
    return stored[: len(stored) - len(tail)] + _STATUS + new + b"}"


def decode(kv: KV, model: type[T]) -> T:
    """The object in a KV, decoded once and cached on the KV (shared: do not mutate)."""
    if kv.obj is None:
        kv.obj = model.model_validate_json(kv.value)
    obj: T = kv.obj
    return obj


_META = b'"metadata":{'


def with_resource_version(kv: KV) -> bytes:
    """The object's JSON with `metadata.resourceVersion` set to its mod revision."""
    return kv.value.replace(_META, b'%s"resourceVersion":"%d",' % (_META, kv.mod_revision), 1)


def list_json(kind: str, items: list[KV], revision: int, api_version: str = "v1") -> bytes:
    """A Kubernetes list (`PodList`, `NodeList`) assembled from stored JSON without re-encoding."""
    head = b'{"apiVersion":"%s","kind":"%s","metadata":{"resourceVersion":"%d"},"items":[' % (
        api_version.encode(),
        kind.encode(),
        revision,
    )
    return head + b",".join(with_resource_version(kv) for kv in items) + b"]}"


def mutable_copy(obj: T) -> T:
    """A deep copy safe to change: objects cached in the store are shared."""
    return obj.model_copy(deep=True)
