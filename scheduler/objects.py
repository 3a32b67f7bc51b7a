"""How objects are kept in the store: keys, JSON encoding, and resourceVersion.

An object's `metadata.resourceVersion` is its key's mod revision in the store;
it is not stored inside the value (the value is written before its revision is
known) but spliced in when the object is read.
"""

from __future__ import annotations

import os
from json.encoder import encode_basestring as _string  # JSON string, UTF-8 kept
from typing import Any, TypeVar

from pydantic import ValidationError

from common.models import Model, ObjectMeta, Pod
from scheduler.store import KV

PODS = "/pods/"
NODES = "/nodes/"

T = TypeVar("T", bound=Model)


def pod_key(namespace: str, name: str) -> str:
    return f"{PODS}{namespace}/{name}"


def pod_store_key(pod: Pod) -> str:
    """Where the pod is stored (a pod without a namespace is in "default", as the API
    puts it)."""
    return pod_key(pod.metadata.namespace or "default", pod.metadata.name)


def node_key(name: str) -> str:
    return f"{NODES}{name}"


def new_uids(count: int) -> list[str]:
    """`count` random (version 4) UUIDs as strings, as `str(uuid.uuid4())` makes them, from
    one read of the OS's randomness: a fifth of the time of `uuid4()` per uid."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)  # the 7th byte's high nibble: 4
    raw[8::16] = raw[8::16].translate(_VARIANT_RFC_4122)  # the 9th byte's top bits: 10
    h = raw.hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-{h[i + 12 : i + 16]}-{h[i + 16 : i + 20]}-"
        f"{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


_VERSION_4 = bytes(b & 0x0F | 0x40 for b in range(256))
_VARIANT_RFC_4122 = bytes(b & 0x3F | 0x80 for b in range(256))


def encode(obj: Model) -> bytes:
    """The stored form: wire JSON without resourceVersion (metadata comes third, after
    apiVersion and kind, which `with_resource_version` relies on)."""
    # Serialized straight to bytes (model_dump_json makes a str of them); an object without
    # a resourceVersion, as every new one, needs no `exclude`, which costs about an eighth.
    serializer = type(obj).__pydantic_serializer__
    meta = getattr(obj, "metadata", None)
    if isinstance(meta, ObjectMeta) and meta.resource_version is None:
        return serializer.to_json(obj, by_alias=True, exclude_none=True)
    return serializer.to_json(
        obj, by_alias=True, exclude_none=True, exclude={"metadata": {"resource_version"}}
    )


_STATUS = b',"status":'


def status_json(status: Model) -> bytes:
    """An object's status as `encode` writes it: the last field of the object's JSON."""
    # Straight to bytes, as `encode`: `model_dump_json` is a Python call around this that
    # makes a str of the bytes, which was then encoded back.
    return type(status).__pydantic_serializer__.to_json(status, by_alias=True, exclude_none=True)


# Where a pod's JSON, as `encode` writes it, is cut to bind it. spec.nodeName comes right
# before terminationGracePeriodSeconds, which is always written (it has a default); the
# status is the pod's last field. The last match before the status is the spec's field:
# after it come only fields without free-form keys (hostNetwork, volumes, runtimeClassName),
# and no JSON string can hold `,"` unescaped. `,"status":{` is the pod's status alone: every
# other "status" in a pod (a condition's, free-form keys') has a string value.
_NODE_NAME_GOES_BEFORE = b',"terminationGracePeriodSeconds":'
_POD_STATUS = b',"status":{'


def split_status(stored: bytes) -> tuple[bytes, bytes] | None:
    """The stored JSON of a pod cut before its status: (everything up to `"status":`, the
    status's JSON as `status_json` writes it), so that a status write compares and
    replaces the status without serializing the stored one again. None unless `stored`
    ends with the pod's status object, as `encode` writes it."""
    at = stored.rfind(_POD_STATUS)
    if at < 0 or not stored.endswith(b"}}"):
        return None
    at += len(_STATUS)
    return stored[:at], stored[at:-1]


def split_unbound_pod(stored: bytes) -> tuple[bytes, bytes, bytes] | None:
    """The stored JSON of a pod without spec.nodeName, cut where a bind changes it:
    (up to where nodeName goes, the rest of the spec, the status's JSON as `status_json`
    writes it). None unless `stored` is shaped as `encode` writes a pod."""
    split = split_status(stored)
    if split is None:
        return None
    head, status = split
    at = len(head) - len(_STATUS)  # where the pod's status field starts
    cut = stored.rfind(_NODE_NAME_GOES_BEFORE, 0, at)
    if cut < 0:
        return None
    return stored[:cut], stored[cut:at], status


def bound_pod_json(head: bytes, node: str, spec_rest: bytes, status: bytes) -> bytes:
    """The stored JSON of the pod cut by `split_unbound_pod`, with spec.nodeName `node`
    and the status `status` (`status_json`): what `encode` writes for the bound pod,
    without serializing the rest of it again."""
    return b"".join(
        (head, b',"nodeName":', _string(node).encode(), spec_rest, _STATUS, status, b"}")
    )


class UnreadableObject(ValueError):
    """A stored object this corral cannot read: one an older corral stored with a value
    past a limit added since, or damaged in the store. The API answers a 500
    `StorageReadError` naming its key; a DELETE may remove it as it is (api/deleting.py)."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def decode(kv: KV, model: type[T]) -> T:
    """The object in a KV, decoded once and cached on the KV (shared: do not mutate).
    UnreadableObject (a ValueError) if the stored value does not validate."""
    if kv.obj is None:
        try:
            kv.obj = model.model_validate_json(kv.value)
        except ValidationError as exc:
            raise UnreadableObject(kv.key, _first_problem(exc)) from None
    obj: T = kv.obj
    return obj


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    more = exc.error_count() - 1
    return f"{where}: {error['msg'][:200]}" + (f" (and {more} more)" if more else "")


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
    values: list[bytes] = []
    spliced, splice = -1, b""
    for kv in items:
        if kv.mod_revision != spliced:  # items written together share it: format it once
            spliced = kv.mod_revision
            splice = b'%s"resourceVersion":"%d",' % (_META, spliced)
        values.append(kv.value.replace(_META, splice, 1))
    return head + b",".join(values) + b"]}"


def mutable_copy(obj: T) -> T:
    """A deep copy safe to change: objects cached in the store are shared."""
    return obj.model_copy(deep=True)


_set = object.__setattr__


def set_fields(obj: Model, changes: dict[str, Any]) -> None:
    """Set fields of `obj` in place, unvalidated: what assigning each one does (corral's
    models do not validate assignments), in two C-level calls instead of two Python
    frames per field (pydantic's `__setattr__` and its handler). `changes` names fields."""
    obj.__dict__.update(changes)
    obj.__pydantic_fields_set__.update(changes)


def replaced(obj: T, changes: dict[str, Any]) -> T:
    """A shallow copy of `obj` with the fields in `changes` replaced, unvalidated: what
    `obj.model_copy(update=changes)` gives, at about half the cost for corral's models,
    which have neither extra fields nor private attributes (pydantic's copy goes through
    `copy.copy` three times and looks for both on every call). Used on hot paths."""
    if obj.__pydantic_extra__ is not None or obj.__pydantic_private__ is not None:
        return obj.model_copy(update=changes)
    new = type(obj).__new__(type(obj))
    values = obj.__dict__.copy()
    values.update(changes)
    _set(new, "__dict__", values)
    _set(new, "__pydantic_fields_set__", obj.__pydantic_fields_set__ | changes.keys())
    _set(new, "__pydantic_extra__", None)
    _set(new, "__pydantic_private__", None)
    return new
