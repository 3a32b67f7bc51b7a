"""Event recording: repeats fold into one event; the store keeps a bounded, ordered set."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

import pytest

from common.models import Event, EventSource, ObjectMeta, ObjectReference, now
from scheduler.events import EVENTS, EventRecorder, Ref, event_key, node_ref
from scheduler.objects import decode, encode
from scheduler.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        yield store
    finally:
        await store.close()


def ref(name: str) -> Ref:
    return Ref("Pod", name, "default", f"uid-{name}")


async def stored(store: SqliteStore) -> dict[str, Event]:
    kvs, _ = await store.list(EVENTS)
    events = [decode(kv, Event) for kv in kvs]
    return {e.involved_object.name: e for e in events}


async def test_repeats_fold_into_one_event_with_a_count(store: SqliteStore) -> None:
    recorder = EventRecorder(store)
    for _ in range(3):
        recorder.record(ref("a"), "BackOff", "restarting", type="Warning")
    recorder.record(ref("a"), "Pulled", "image present")
    await recorder.flush()
    kvs, _ = await store.list(EVENTS)
    by_reason = {e.reason: e for e in (decode(kv, Event) for kv in kvs)}
    assert by_reason["BackOff"].count == 3
    assert by_reason["BackOff"].type == "Warning"
    assert by_reason["Pulled"].count == 1


async def test_beyond_max_events_the_least_recently_recorded_go(store: SqliteStore) -> None:
    recorder = EventRecorder(store, max_events=3)
    for name in ("a", "b", "c"):
        recorder.record(ref(name), "Scheduled", "placed")
    await recorder.flush()
    recorder.record(ref("a"), "Scheduled", "placed")  # a repeat: now the most recent
    recorder.record(ref("d"), "Scheduled", "placed")
    await recorder.flush()
    events = await stored(store)
    assert sorted(events) == ["a", "c", "d"]  # b was recorded least recently
    assert events["a"].count == 2


async def test_events_past_their_ttl_are_deleted(store: SqliteStore) -> None:
    recorder = EventRecorder(store, ttl_seconds=60)
    old = now() - timedelta(seconds=120)
    recorder.record(ref("old"), "Killing", "stopping", timestamp=old)
    recorder.record(ref("new"), "Started", "running")
    await recorder.flush()
    assert sorted(await stored(store)) == ["new"]
    recorder.record(ref("newer"), "Started", "running")
    await recorder.flush()
    assert sorted(await stored(store)) == ["new", "newer"]


async def test_a_restarted_recorder_keeps_the_order_of_the_stored_events(
    store: SqliteStore,
) -> None:
    first = EventRecorder(store, max_events=2)
    start = now()
    # Recorded out of name order, so the store's key order differs from time order.
    first.record(ref("z"), "Scheduled", "placed", timestamp=start - timedelta(seconds=2))
    first.record(ref("a"), "Scheduled", "placed", timestamp=start - timedelta(seconds=1))
    await first.flush()
    second = EventRecorder(store, max_events=2)
    await second.load()
    second.record(ref("m"), "Scheduled", "placed", timestamp=start)
    await second.flush()
    assert sorted(await stored(store)) == ["a", "m"]  # z, the oldest, made room


def _model_of(
    r: Ref,
    reason: str,
    message: str,
    stamp: datetime,
    *,
    type: Literal["Normal", "Warning"] = "Normal",
    host: str | None = None,
    component: str = "corral-scheduler",
    count: int = 1,
    first: datetime | None = None,
) -> Event:
    """The event as the recorder built it when it was a pydantic model per record."""
    digest = hashlib.sha1(f"{r.kind}/{r.uid or r.name}/{reason}/{message}".encode()).hexdigest()
    return Event(
        metadata=ObjectMeta(
            name=f"{r.name}.{digest[:16]}",
            namespace=r.namespace or "default",
            creation_timestamp=first or stamp,
        ),
        involved_object=ObjectReference(kind=r.kind, name=r.name, namespace=r.namespace, uid=r.uid),
        reason=reason,
        message=message,
        type=type,
        count=count,
        first_timestamp=first or stamp,
        last_timestamp=stamp,
        source=EventSource(component=component, host=host),
    )


async def test_stored_json_is_what_the_model_encodes_to(store: SqliteStore) -> None:
    """Events are kept as plain data and their JSON built at flush: byte for byte what
    encoding the Event model gives, for odd messages, time zones and references too."""
    recorder = EventRecorder(store)
    stamp = now()
    agent_time = datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=timezone(timedelta(hours=2)))
    same_instant_utc = agent_time.astimezone(UTC)
    odd = 'quote " backslash \\ newline \n tab \t nul \x00 \x7f \u2028 é 😀'
    cases: list[tuple[Ref, str, str, datetime, Literal["Normal", "Warning"], str | None, str]] = [
        (
            ref("a"),
            "Scheduled",
            "Successfully assigned default/a to n1",
            stamp,
            "Normal",
            None,
            "corral-scheduler",
        ),
        (ref("b"), "BackOff", odd, agent_time, "Warning", "n1", "corral-agent"),
        (ref("c"), "Started", "ok", same_instant_utc, "Normal", "n1", "corral-agent"),
        (node_ref("n1"), "NodeReady", "joined", stamp, "Normal", None, "corral-scheduler"),
        (Ref("Pod", "d"), "Pulled", "no namespace, no uid", stamp, "Normal", None, "c"),
    ]
    expected = {}
    for r, reason, message, when, kind, host, component in cases:
        recorder.record(
            r, reason, message, timestamp=when, type=kind, host=host, component=component
        )
        model = _model_of(r, reason, message, when, type=kind, host=host, component=component)
        expected[event_key(model.metadata.namespace or "", model.metadata.name)] = encode(model)
    await recorder.flush()
    kvs, _ = await store.list(EVENTS)
    assert {kv.key: kv.value for kv in kvs} == expected
    # A fold of a loaded event keeps its first time and counts on.
    later = stamp + timedelta(seconds=5)
    second = EventRecorder(store)
    await second.load()
    second.record(ref("a"), "Scheduled", "Successfully assigned default/a to n1", timestamp=later)
    await second.flush()
    model = _model_of(
        ref("a"),
        "Scheduled",
        "Successfully assigned default/a to n1",
        later,
        count=2,
        first=stamp,
    )
    kv = await store.get(event_key("default", model.metadata.name))
    assert kv is not None and kv.value == encode(model)


async def test_a_long_object_name_gives_a_valid_event_name(store: SqliteStore) -> None:
    """A name near the 253-character limit is cut (the digest keeps events apart), so
    recording never fails, nor does reading the event back."""
    long_name = "a" * 235 + "-" + "b" * 17  # 253: the cut (236) falls after the "-"
    recorder = EventRecorder(store)
    recorder.record(Ref("Pod", long_name, "default", "u1"), "Scheduled", "placed")
    recorder.record(Ref("Pod", long_name, "default", "u2"), "Scheduled", "placed")
    await recorder.flush()
    kvs, _ = await store.list(EVENTS)
    names = [decode(kv, Event).metadata.name for kv in kvs]
    assert len(names) == 2 and all(len(n) <= 253 for n in names)
    assert all(n.startswith("a" * 235 + ".") for n in names)
