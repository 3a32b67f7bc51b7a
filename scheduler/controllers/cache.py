"""What the workload controllers read: objects of one kind kept current, and who owns what.

`ObjectCache` holds the Deployments (or Jobs, Namespaces, ControllerRevisions)
as of the store's latest revision; it lists its prefix once at start and then
follows `ClusterState`'s single watch (`object_listeners`), so every
controller sees one revision order. `OwnerIndex` maps an owner's uid to the
keys of the objects whose ownerReferences name it, so a controller finds a
Deployment's pods without scanning every pod.

Listeners run inside the cluster watch: they must be quick and must never raise
(a raise would stop the watch), so each is guarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from common.models import ControllerRevision, Deployment, Job, Namespace, OwnerReference
from scheduler.kinds import Kind
from scheduler.objects import decode
from scheduler.store import KV, Event, Store

_LOGGER = logging.getLogger(__name__)

M = TypeVar("M", Deployment, Job, Namespace, ControllerRevision)
Handler = Callable[[str, M | None, M | None], None]


def key_namespace(key: str) -> str:
    """`/deployments/web-ns/web` -> `web-ns`."""
    return key.split("/", 3)[2]


class OrphanIndex:
    """The keys of objects a Deployment made that no controller owns now (active pods,
    or ControllerRevisions; the manager keeps one index of each), by namespace: a
    Deployment looks at its own namespace's only."""

    def __init__(self) -> None:
        self._keys: set[str] = set()  # membership, on the pod listener's fast path
        self._by_namespace: dict[str, set[str]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __bool__(self) -> bool:
        return bool(self._keys)

    def add(self, key: str) -> None:
        self._keys.add(key)
        self._by_namespace.setdefault(key_namespace(key), set()).add(key)

    def discard(self, key: str) -> None:
        if key in self._keys:
            self._keys.discard(key)
            namespace = key_namespace(key)
            keys = self._by_namespace[namespace]
            keys.discard(key)
            if not keys:
                del self._by_namespace[namespace]

    def in_namespace(self, namespace: str) -> list[str]:
        return list(self._by_namespace.get(namespace, ()))


def safely(name: str, call: Callable[[], None]) -> None:
    """Run a listener; log instead of raising into the watch that feeds everyone."""
    try:
        call()
    except Exception:
        _LOGGER.exception("listener %s failed", name)


class ObjectCache(Generic[M]):
    """Objects of one kind, keyed by store key, with their KVs (for guarded writes), and
    by namespace for a namespaced kind (a controller looks in one namespace, as
    Kubernetes' listers do, not through every namespace's objects)."""

    def __init__(self, kind: Kind, model: type[M]) -> None:
        self.kind = kind
        self.model: type[M] = model
        self.objects: dict[str, M] = {}
        self.kvs: dict[str, KV] = {}
        self.by_uid: dict[str, str] = {}
        self.handlers: list[Handler[M]] = []
        self._by_namespace: dict[str, dict[str, M]] = {}

    def in_namespace(self, namespace: str) -> dict[str, M]:
        """The objects of a namespaced kind in `namespace`, by key (do not mutate)."""
        return self._by_namespace.get(namespace, {})

    async def load(self, store: Store) -> None:
        kvs, _ = await store.list(self.kind.prefix)
        for kv in kvs:
            try:
                self._set(kv.key, kv)
            except ValueError:  # stored by an older corral, past what this one reads
                _LOGGER.warning("ignoring %s: it does not decode as a %s", kv.key, self.kind.kind)

    def get(self, key: str) -> M | None:
        return self.objects.get(key)

    def apply(self, event: Event) -> None:
        """An event from the cluster watch (any key; others are ignored)."""
        key = event.kv.key
        if not key.startswith(self.kind.prefix):
            return
        have = self.kvs.get(key)
        if have is not None and have.mod_revision >= event.revision and event.type == "PUT":
            return  # listed at start already newer than this replayed event
        old = self.objects.get(key)
        if event.type == "PUT":
            try:
                new: M | None = self._set(key, event.kv)
            except ValueError:  # pydantic's ValidationError: a value this corral cannot read
                _LOGGER.warning("ignoring %s: it does not decode as a %s", key, self.kind.kind)
                return
        else:
            self._drop(key)
            new = None
        for handler in self.handlers:
            try:
                handler(key, old, new)
            except Exception:  # never into the watch that feeds everyone
                _LOGGER.exception("%s handler failed on %s", self.kind.plural, key)

    def _set(self, key: str, kv: KV) -> M:
        obj = decode(kv, self.model)
        old = self.objects.get(key)
        if old is not None and old.metadata.uid != obj.metadata.uid:
            self.by_uid.pop(old.metadata.uid or "", None)
        self.objects[key] = obj
        self.kvs[key] = kv
        if self.kind.namespaced:
            self._by_namespace.setdefault(key_namespace(key), {})[key] = obj
        uid = obj.metadata.uid
        if uid:
            self.by_uid[uid] = key
        return obj

    def _drop(self, key: str) -> None:
        old = self.objects.pop(key, None)
        self.kvs.pop(key, None)
        if old is not None:
            self.by_uid.pop(old.metadata.uid or "", None)
            if self.kind.namespaced:
                namespace = key_namespace(key)
                objects = self._by_namespace[namespace]
                del objects[key]
                if not objects:
                    del self._by_namespace[namespace]


def controller_ref(refs: Iterable[OwnerReference] | None) -> OwnerReference | None:
    """The ownerReference with `controller: true`, if any."""
    for ref in refs or ():
        if ref.controller:
            return ref
    return None


class OwnerIndex:
    """owner uid -> keys of its dependents; kept by the listeners of each dependent kind."""

    def __init__(self) -> None:
        self.dependents: dict[str, set[str]] = {}
        self._owners: dict[str, tuple[str, ...]] = {}  # dependent key -> owner uids
        self._kinds: dict[str, str] = {}  # owner uid -> its kind, as the references say

    def update(self, key: str, refs: list[OwnerReference] | None) -> None:
        want = tuple(r.uid for r in refs or ())
        have = self._owners.get(key, ())
        if want == have:
            return
        for uid in have:
            keys = self.dependents.get(uid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.dependents[uid]
                    self._kinds.pop(uid, None)
        for ref in refs or ():
            self.dependents.setdefault(ref.uid, set()).add(key)
            self._kinds[ref.uid] = ref.kind
        if want:
            self._owners[key] = want
        else:
            self._owners.pop(key, None)

    def of(self, uid: str | None) -> set[str]:
        return self.dependents.get(uid or "", set())

    def owners_of(self, key: str) -> tuple[str, ...]:
        """The uids of every owner the dependent at `key` names."""
        return self._owners.get(key, ())

    def kind_of(self, uid: str) -> str | None:
        return self._kinds.get(uid)

    def owners(self) -> list[str]:
        return list(self.dependents)
