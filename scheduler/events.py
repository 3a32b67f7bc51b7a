"""Events: what happened to an object, recorded for `corral describe` and `corral get events`.

Recording must never slow down what it records: `record` only folds the event
into memory (repeats of the same object, reason and message become one event
with a count, as in Kubernetes); a flush task writes what changed every
FLUSH_SECONDS in one transaction. Events are kept bounded: at most
`max_events`, none older than `ttl_seconds`; the least recently recorded go
first, found without sorting (the in-memory dict is kept in recording order).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from datetime import UTC, datetime, timedelta

from common.models import Event, EventSource, ObjectMeta, ObjectReference, now
from scheduler.objects import decode, encode
from scheduler.store import Op, Store, StoreError

_LOGGER = logging.getLogger(__name__)

EVENTS = "/events/"
FLUSH_SECONDS = 0.25
MAX_MESSAGE = 1024
_EPOCH = datetime.fromtimestamp(0, UTC)


def event_key(namespace: str, name: str) -> str:
    return f"{EVENTS}{namespace}/{name}"


class EventRecorder:
    def __init__(
        self, store: Store, *, max_events: int = 10_000, ttl_seconds: float = 3600.0
    ) -> None:
        self._store = store
        self.max_events = max_events
        self.ttl = timedelta(seconds=ttl_seconds)
        # key -> latest version (written or not), least recently recorded first
        self._events: dict[str, Event] = {}
        self._dirty: set[str] = set()
        self._written: set[str] = set()  # keys that exist in the store
        self._wake = asyncio.Event()

    async def load(self) -> None:
        kvs, _ = await self._store.list(EVENTS)
        loaded = [(kv.key, decode(kv, Event)) for kv in kvs]
        loaded.sort(key=lambda item: item[1].last_timestamp or _EPOCH)
        for key, event in loaded:
            self._events[key] = event
            self._written.add(key)

    def record(
        self,
        ref: ObjectReference,
        reason: str,
        message: str,
        *,
        type: str = "Normal",
        component: str = "corral-scheduler",
        host: str | None = None,
        count: int = 1,
        timestamp: datetime | None = None,
    ) -> None:
        """Fold one occurrence in; it is written within FLUSH_SECONDS.

        Called for every pod placed: keep it cheap (pydantic's validated
        constructor is several times faster than its `model_construct`).
        """
        message = message[:MAX_MESSAGE]
        namespace = ref.namespace or "default"
        digest = hashlib.sha1(
            f"{ref.kind}/{ref.uid or ref.name}/{reason}/{message}".encode()
        ).hexdigest()[:16]
        name = f"{ref.name}.{digest}"
        key = event_key(namespace, name)
        stamp = timestamp or now()
        existing = self._events.pop(key, None)  # re-inserted last: recording order
        if existing is not None:
            event = existing.model_copy(
                update={"count": existing.count + count, "last_timestamp": stamp}
            )
        else:
            event = Event(
                metadata=ObjectMeta(name=name, namespace=namespace, creation_timestamp=stamp),
                involved_object=ref,
                reason=reason,
                message=message,
                type="Warning" if type == "Warning" else "Normal",
                count=count,
                first_timestamp=stamp,
                last_timestamp=stamp,
                source=EventSource(component=component, host=host),
            )
        self._events[key] = event
        self._dirty.add(key)
        self._wake.set()

    async def run(self) -> None:
        """Write folded events, and drop the oldest past the bounds (cancel to stop)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()
            await asyncio.sleep(FLUSH_SECONDS)

    async def flush(self) -> None:
        puts = {key for key in self._dirty if key in self._events}
        self._dirty.clear()
        ops = [Op("put", key, encode(self._events[key]), self._events[key]) for key in puts]
        expired = self._expired()
        ops += [Op("delete", key) for key in expired if key in self._written or key in puts]
        if not ops:
            return
        try:
            await self._store.txn(ops)
        except StoreError as exc:
            _LOGGER.warning("could not write %d events: %s", len(ops), exc)
            return
        self._written.update(puts)
        self._written.difference_update(expired)

    def _expired(self) -> list[str]:
        """Keys to drop: older than the TTL, then the least recently recorded beyond
        max_events. Both are at the front of `_events`, so this never scans the rest."""
        cutoff = now() - self.ttl
        expired = []
        for key, event in self._events.items():
            if (event.last_timestamp or cutoff) >= cutoff:
                break
            expired.append(key)
        excess = len(self._events) - len(expired) - self.max_events
        if excess > 0:
            expired += itertools.islice(self._events, len(expired), len(expired) + excess)
        for key in expired:
            del self._events[key]
        return expired


def pod_ref(pod: object) -> ObjectReference:
    meta = pod.metadata  # type: ignore[attr-defined]
    return ObjectReference(kind="Pod", name=meta.name, namespace=meta.namespace, uid=meta.uid)


def node_ref(name: str) -> ObjectReference:
    return ObjectReference(kind="Node", name=name, namespace="default", uid=name)
