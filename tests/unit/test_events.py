"""Event recording: repeats fold into one event; the store keeps a bounded, ordered set."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from common.models import Event, ObjectReference, now
from scheduler.events import EVENTS, EventRecorder
from scheduler.objects import decode
from scheduler.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        yield store
    finally:
        await store.close()


def ref(name: str) -> ObjectReference:
    return ObjectReference(kind="Pod", name=name, namespace="default", uid=f"uid-{name}")


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
