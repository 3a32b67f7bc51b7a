"""Events: what happened to an object, recorded for `corral describe` and `corral get events`.

Recording must never slow down what it records: `record` only folds the event
into memory as plain data (repeats of the same object, reason and message become
one event with a count, as in Kubernetes); a flush task writes what changed
every FLUSH_SECONDS in one transaction, building each event's JSON there, once
per flush however often it was recorded meanwhile. The store gets no decoded
object with the JSON: whoever reads an event decodes it then (and the store
keeps it), so the events nobody reads, most of them, are never built as models.
Events are kept bounded: at most `max_events`, none older than `ttl_seconds`;
the least recently recorded go first, found without sorting (the in-memory dict
is kept in recording order).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from json.encoder import encode_basestring as _string  # JSON string, UTF-8 kept
from typing import NamedTuple

from pydantic import TypeAdapter

from common.models import Event, now
from scheduler.objects import decode
from scheduler.store import Op, Store, StoreError

_LOGGER = logging.getLogger(__name__)

EVENTS = "/events/"
FLUSH_SECONDS = 0.25
MAX_MESSAGE = 1024
# Kubernetes' limit on an event's reason (a CamelCase word). The reason is free text from
# an agent's events frame: uncut, one of 8 MB was kept, written and listed whole, and
# up to `max_events` of them.
MAX_REASON = 128
MAX_NAME = 253  # an event's name is a DNS subdomain, as every object name
_EPOCH = datetime.fromtimestamp(0, UTC)


def event_key(namespace: str, name: str) -> str:
    return f"{EVENTS}{namespace}/{name}"


class Ref(NamedTuple):
    """The object an event is about: an event's `involvedObject`, as plain data."""

    kind: str
    name: str
    namespace: str | None = None
    uid: str | None = None


@dataclass(slots=True)
class _Recorded:
    """One event, folded, as plain data; `_event_json` gives its stored form."""

    name: str
    namespace: str
    ref: Ref
    reason: str
    message: str
    type: str
    count: int
    created: datetime | None
    first: datetime | None
    last: datetime | None
    component: str | None  # source.component; None: no source
    host: str | None
    seq: int = 0  # when it was last recorded, in this recorder's order (`recorded_order`)


class EventRecorder:
    def __init__(
        self, store: Store, *, max_events: int = 10_000, ttl_seconds: float = 3600.0
    ) -> None:
        self._store = store
        self.max_events = max_events
        self.ttl = timedelta(seconds=ttl_seconds)
        # key -> latest version (written or not), least recently recorded first
        self._events: dict[str, _Recorded] = {}
        self._dirty: set[str] = set()
        self._written: set[str] = set()  # keys that exist in the store
        self._wake = asyncio.Event()
        self._sequence = itertools.count(1)

    async def load(self) -> None:
        kvs, _ = await self._store.list(EVENTS)
        loaded = [(kv.key, _from_event(decode(kv, Event))) for kv in kvs]
        loaded.sort(key=lambda item: item[1].last or _EPOCH)
        for key, event in loaded:
            event.seq = next(self._sequence)
            self._events[key] = event
            self._written.add(key)

    def recorded_order(self, key: str) -> int:
        """Where the event stored at `key` was last recorded, in recording order (0: not
        known here). Events are stamped to the second and one flush writes many in one
        revision, so this is what orders those of one second and one flush: their keys
        are digests, in no order of time."""
        event = self._events.get(key)
        return event.seq if event is not None else 0

    def record(
        self,
        ref: Ref,
        reason: str,
        message: str,
        *,
        type: str = "Normal",
        component: str = "corral-scheduler",
        host: str | None = None,
        count: int = 1,
        timestamp: datetime | None = None,
    ) -> None:
        """Fold one occurrence in; it is written within FLUSH_SECONDS. Called for every
        pod placed: keep it cheap (no model is built here)."""
        message = message[:MAX_MESSAGE]
        reason = reason[:MAX_REASON]
        namespace = ref.namespace or "default"
        digest = hashlib.sha1(
            f"{ref.kind}/{ref.uid or ref.name}/{reason}/{message}".encode()
        ).hexdigest()[:16]
        # The digest keeps names unique; a long object name is cut so the event's stays valid.
        prefix = ref.name if len(ref.name) <= MAX_NAME - 17 else ref.name[: MAX_NAME - 17]
        name = f"{prefix.rstrip('-.')}.{digest}"
        key = event_key(namespace, name)
        stamp = timestamp or now()
        if stamp.utcoffset():  # kept in UTC, as the Event model keeps every time
            stamp = stamp.astimezone(UTC)
        event = self._events.pop(key, None)  # re-inserted last: recording order
        if event is not None:
            event.count += count
            event.last = stamp
        else:
            event = _Recorded(
                name,
                namespace,
                ref,
                reason,
                message,
                "Warning" if type == "Warning" else "Normal",
                count,
                stamp,
                stamp,
                stamp,
                component,
                host,
            )
        event.seq = next(self._sequence)
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
        events = self._events
        puts = {key for key in self._dirty if key in events}
        self._dirty.clear()
        ops = [Op("put", key, _event_json(events[key])) for key in puts]
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
            if (event.last or cutoff) >= cutoff:
                break
            expired.append(key)
        excess = len(self._events) - len(expired) - self.max_events
        if excess > 0:
            expired += itertools.islice(self._events, len(expired), len(expired) + excess)
        for key in expired:
            del self._events[key]
        return expired


def _from_event(event: Event) -> _Recorded:
    ref = event.involved_object
    source = event.source
    return _Recorded(
        event.metadata.name,
        event.metadata.namespace or "default",
        Ref(ref.kind, ref.name, ref.namespace, ref.uid),
        event.reason,
        event.message,
        event.type,
        event.count,
        event.metadata.creation_timestamp,
        event.first_timestamp,
        event.last_timestamp,
        source.component if source is not None else None,
        source.host if source is not None else None,
    )


def _event_json(event: _Recorded) -> bytes:
    """The stored form of the `Event`: the bytes `objects.encode` gives for the model
    (tests/unit/test_events.py compares them), written out directly: building the
    model and encoding it cost three times as much, `json.dumps` of a dict more still."""
    ref = event.ref
    created = _time_field("creationTimestamp", event.created)
    times = _time_field("firstTimestamp", event.first) + _time_field("lastTimestamp", event.last)
    namespace = "" if ref.namespace is None else f',"namespace":{_string(ref.namespace)}'
    uid = "" if ref.uid is None else f',"uid":{_string(ref.uid)}'
    if event.component is None:
        source = ""
    elif event.host is None:
        source = f',"source":{{"component":{_string(event.component)}}}'
    else:
        source = (
            f',"source":{{"component":{_string(event.component)},"host":{_string(event.host)}}}'
        )
    return (
        f'{{"apiVersion":"v1","kind":"Event","metadata":{{"name":{_string(event.name)},'
        f'"namespace":{_string(event.namespace)},"labels":{{}},"annotations":{{}}{created}}},'
        f'"involvedObject":{{"kind":{_string(ref.kind)},"name":{_string(ref.name)}'
        f"{namespace}{uid}}},"
        f'"reason":{_string(event.reason)},"message":{_string(event.message)},'
        f'"type":{_string(event.type)},"count":{event.count:d}{times}{source}}}'
    ).encode()


def _time_field(name: str, value: datetime | None) -> str:
    return "" if value is None else f',"{name}":"{_timestamp(value, value.utcoffset())}"'


_DATETIME: TypeAdapter[datetime] = TypeAdapter(datetime)


@functools.lru_cache(maxsize=1024)
def _timestamp(value: datetime, offset: timedelta | None) -> str:
    """A timestamp as pydantic writes it in a model's JSON. Cached: a flush writes a few
    distinct seconds. The offset is part of the key because equal instants in other
    time zones are equal datetimes, but are not written alike."""
    text: str = _DATETIME.dump_python(value, mode="json")
    return text


def pod_ref(pod: object) -> Ref:
    meta = pod.metadata  # type: ignore[attr-defined]
    return Ref("Pod", meta.name, meta.namespace, meta.uid)


def node_ref(name: str) -> Ref:
    return Ref("Node", name, "default", name)
