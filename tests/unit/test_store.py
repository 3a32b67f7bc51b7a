"""The SQLite store, on real database files: guards, transactions, revisions, watches,
group commit, migrations and commit failures."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from common.models import Pod
from scheduler.api.watch import event_type, history_filter
from scheduler.objects import PODS, decode, encode, pod_key
from scheduler.store import (
    KV,
    Compacted,
    Conflict,
    Event,
    NotFound,
    Op,
    SqliteStore,
    StoreError,
    StoreUnavailable,
)
from scheduler.store.base import Watch
from scheduler.store.sqlite import DECODED_COMMITS, MIGRATIONS, _SqliteWatch, statement_sizes
from tests.conftest import collector_off, cyclic_garbage_of

TIMEOUT = 10.0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the test's database file lives (created by the store)."""
    return tmp_path / "state" / "corral.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    """An open store on a fresh file, closed after the test."""
    opened = await SqliteStore.open(db_path)
    yield opened
    await opened.close()


async def _take(watch: Watch, count: int) -> list[Event]:
    """The next `count` events of a watch, failing the test if they do not come in time."""
    events: list[Event] = []

    async def collect() -> None:
        async for event in watch:
            events.append(event)
            if len(events) == count:
                return

    await asyncio.wait_for(collect(), TIMEOUT)
    return events


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of a query on the database file, read with a separate plain connection."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_put_get(store: SqliteStore) -> None:
    """A put is readable at once, with create and mod revision set to its revision."""
    kv = await store.put("/pods/default/a", b'{"a": 1}')
    assert kv == KV("/pods/default/a", b'{"a": 1}', 1, 1)
    assert await store.get("/pods/default/a") == kv
    assert await store.get("/pods/default/b") is None
    assert store.revision == 1


async def test_put_carries_decoded_object(store: SqliteStore) -> None:
    """The optional decoded object travels with the KV for in-process readers."""
    obj = {"decoded": True}
    await store.put("k", b"{}", obj=obj)
    got = await store.get("k")
    assert got is not None and got.obj is obj


async def test_update_keeps_create_revision(store: SqliteStore) -> None:
    """An update bumps mod_revision and keeps create_revision."""
    await store.put("a", b"1")
    await store.put("b", b"1")
    kv = await store.put("a", b"2")
    assert (kv.create_revision, kv.mod_revision, kv.value) == (1, 3, b"2")


async def test_list_by_prefix(store: SqliteStore) -> None:
    """list() returns the keys under a prefix, sorted, with the current revision."""
    for key in ["/pods/ns2/z", "/pods/ns1/b", "/nodes/n1", "/pods/ns1/a", "/podsx/q"]:
        await store.put(key, key.encode())
    items, revision = await store.list("/pods/")
    assert [kv.key for kv in items] == ["/pods/ns1/a", "/pods/ns1/b", "/pods/ns2/z"]
    assert revision == store.revision == 5
    items, _ = await store.list("/pods/ns1/")
    assert [kv.value for kv in items] == [b"/pods/ns1/a", b"/pods/ns1/b"]
    assert (await store.list("/none/"))[0] == []
    assert len((await store.list(""))[0]) == 5
    assert sorted(kv.key for kv in store.list_now("/pods/")) == [kv.key for kv in items] + [
        "/pods/ns2/z"
    ]


async def test_delete(store: SqliteStore) -> None:
    """delete() removes the key and returns its last value at the delete's revision."""
    await store.put("a", b"v")
    kv = await store.delete("a")
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision) == ("a", b"v", 1, 2)
    assert await store.get("a") is None
    assert store.revision == 2


async def test_delete_absent_not_found(store: SqliteStore) -> None:
    """Deleting a key that does not exist raises NotFound and takes no revision."""
    with pytest.raises(NotFound):
        await store.delete("nope")
    assert store.revision == 0


async def test_create_guard(store: SqliteStore) -> None:
    """expect=0 creates only if absent; otherwise Conflict carries the current KV."""
    created = await store.put("a", b"1", expect=0)
    with pytest.raises(Conflict) as info:
        await store.put("a", b"2", expect=0)
    assert info.value.key == "a"
    assert info.value.expected == 0
    assert info.value.current == created
    assert "expected revision absent, found 1" in str(info.value)
    assert (await store.get("a")) == created


async def test_revision_guard(store: SqliteStore) -> None:
    """expect=rev writes only if the key is still at that mod revision."""
    first = await store.put("a", b"1")
    second = await store.put("a", b"2", expect=first.mod_revision)
    with pytest.raises(Conflict) as info:
        await store.put("a", b"3", expect=first.mod_revision)
    assert info.value.current == second
    assert f"expected revision {first.mod_revision}, found {second.mod_revision}" in str(info.value)
    with pytest.raises(Conflict) as absent:
        await store.put("b", b"1", expect=5)
    assert absent.value.current is None


async def test_guarded_delete(store: SqliteStore) -> None:
    """A delete guarded by a stale revision conflicts; with the right one it deletes."""
    kv = await store.put("a", b"1")
    await store.put("a", b"2")
    with pytest.raises(Conflict):
        await store.delete("a", expect=kv.mod_revision)
    await store.delete("a", expect=2)
    assert await store.get("a") is None


async def test_txn_applies_all(store: SqliteStore) -> None:
    """A transaction's ops share one revision and all become visible together."""
    await store.put("a", b"0")
    result = await store.txn(
        [Op("put", "b", b"1", expect=0), Op("delete", "a", expect=1), Op("put", "c", b"2")]
    )
    assert [kv.mod_revision for kv in result] == [2, 2, 2]
    assert store.revision == 2
    assert await store.get("a") is None
    assert [kv.key for kv in (await store.list(""))[0]] == ["b", "c"]


@pytest.mark.parametrize(
    ("failing", "error"),
    [(Op("put", "x", b"1", expect=99), Conflict), (Op("delete", "absent"), NotFound)],
)
async def test_txn_all_or_nothing(store: SqliteStore, failing: Op, error: type[StoreError]) -> None:
    """One failing op fails the transaction: nothing written, seen, or watched."""
    await store.put("a", b"0")
    watch = store.watch("", store.revision)
    with pytest.raises(error):
        await store.txn([Op("put", "b", b"1"), Op("put", "a", b"changed"), failing])
    assert store.revision == 1
    assert await store.get("b") is None
    assert (await store.get("a")) == KV("a", b"0", 1, 1)
    # The next write gets the next revision, and is the first event the watch sees.
    await store.put("c", b"1")
    [event] = await _take(watch, 1)
    assert (event.kv.key, event.revision) == ("c", 2)
    watch.close()


async def test_txn_ops_apply_in_order(store: SqliteStore) -> None:
    """Later ops on a key in one transaction see the earlier ones."""
    await store.put("a", b"0")
    next_revision = store.revision + 1
    await store.txn([Op("put", "n", b"1", expect=0), Op("put", "n", b"2", expect=next_revision)])
    assert (await store.get("n")) == KV("n", b"2", 2, 2)
    with pytest.raises(Conflict):  # the second create of the same key must fail
        await store.txn([Op("put", "m", b"1", expect=0), Op("put", "m", b"2", expect=0)])
    assert await store.get("m") is None
    await store.txn([Op("put", "t", b"1"), Op("delete", "t")])
    assert await store.get("t") is None
    kv = (await store.txn([Op("delete", "a"), Op("put", "a", b"new")]))[1]
    assert (kv.create_revision, kv.mod_revision) == (store.revision, store.revision)


async def test_empty_txn(store: SqliteStore) -> None:
    """An empty transaction succeeds, writes nothing and takes no revision."""
    await store.put("a", b"1")
    assert await store.txn([]) == []
    assert store.revision == 1
    assert (await store.put("b", b"1")).mod_revision == 2


async def test_revisions_monotonic(store: SqliteStore) -> None:
    """Every successful write takes exactly the next revision; failures take none."""
    seen = []
    for i in range(20):
        if i % 5 == 4:
            with pytest.raises(Conflict):
                await store.put(f"k{i % 3}", b"x", expect=10_000)
        elif i % 7 == 6:
            seen.append((await store.delete(f"k{(i - 1) % 3}")).mod_revision)
        else:
            seen.append((await store.put(f"k{i % 3}", str(i).encode())).mod_revision)
    assert seen == list(range(1, len(seen) + 1))
    assert store.revision == len(seen)


async def test_reads_see_only_durable_writes(store: SqliteStore) -> None:
    """A queued write is invisible to readers until it is durable and acknowledged."""
    pending = store.txn([Op("put", "a", b"1")])
    assert await store.get("a") is None
    assert store.revision == 0
    await asyncio.wait_for(pending, TIMEOUT)
    assert await store.get("a") is not None


async def test_guards_see_queued_writes(store: SqliteStore) -> None:
    """Guards are checked against queued writes too, so two creates cannot both win."""
    first = store.txn([Op("put", "a", b"1", expect=0)])
    second = store.txn([Op("put", "a", b"2", expect=0)])
    with pytest.raises(Conflict):
        await second
    assert (await asyncio.wait_for(first, TIMEOUT))[0].value == b"1"


async def test_same_batch_delete_then_put_on_disk(db_path: Path) -> None:
    """A delete and re-create of one key in one group commit lands on disk in order."""
    store = await SqliteStore.open(db_path)
    await store.put("a", b"old")
    await store.put("b", b"old")
    batch = [
        store.txn([Op("delete", "a")]),
        store.txn([Op("put", "a", b"new")]),
        store.txn([Op("put", "b", b"mid")]),
        store.txn([Op("delete", "b")]),
    ]
    await asyncio.wait_for(asyncio.gather(*batch), TIMEOUT)
    assert store.commits == 3  # two single puts, then the four writes in one commit
    expected = await store.get("a")
    assert expected == KV("a", b"new", 4, 4)
    assert await store.get("b") is None
    await store.close()
    reopened = await SqliteStore.open(db_path)
    try:
        assert await reopened.get("a") == expected
        assert await reopened.get("b") is None
        assert reopened.revision == 6
    finally:
        await reopened.close()


async def test_reopen_keeps_state(db_path: Path) -> None:
    """Closing and reopening the file gives the same keys, revisions and next revision."""
    store = await SqliteStore.open(db_path)
    for i in range(10):
        await store.put(f"/k/{i}", f"v{i}".encode())
    await store.delete("/k/3")
    await store.put("/k/4", b"again")
    before, revision = await store.list("")
    await store.close()

    reopened = await SqliteStore.open(db_path)
    try:
        after, reopened_revision = await reopened.list("")
        assert (after, reopened_revision) == (before, revision) == (after, 12)
        assert (await reopened.put("/k/new", b"x")).mod_revision == 13
    finally:
        await reopened.close()


async def test_watch_from_zero_history_then_live(store: SqliteStore) -> None:
    """A watch from 0 replays the history, then follows live writes, in revision order."""
    await store.put("a", b"1")
    await store.put("a", b"2")
    await store.delete("a")
    watch = store.watch("", 0)
    await store.put("b", b"1")
    await store.txn([Op("put", "c", b"1"), Op("put", "d", b"1")])
    events = await _take(watch, 6)
    assert [(e.type, e.kv.key, e.revision) for e in events] == [
        ("PUT", "a", 1),
        ("PUT", "a", 2),
        ("DELETE", "a", 3),
        ("PUT", "b", 4),
        ("PUT", "c", 5),
        ("PUT", "d", 5),
    ]
    put2, delete = events[1], events[2]
    assert put2.prev is not None and put2.prev.value == b"1"
    assert delete.prev == put2.kv
    assert (delete.kv.value, delete.kv.mod_revision) == (b"2", 3)
    assert events[0].prev is None
    watch.close()


async def test_watch_from_revision_skips_older(store: SqliteStore) -> None:
    """A watch from revision r gets only events after r."""
    for i in range(5):
        await store.put(f"k{i}", b"x")
    watch = store.watch("", 3)
    assert [e.revision for e in await _take(watch, 2)] == [4, 5]
    watch.close()


async def test_watch_from_future_revision(store: SqliteStore) -> None:
    """A watch from a revision not yet reached starts delivering after it."""
    watch = store.watch("", 2)
    for i in range(4):
        await store.put(f"k{i}", b"x")
    assert [e.revision for e in await _take(watch, 2)] == [3, 4]
    watch.close()


async def test_watch_prefix_filter(store: SqliteStore) -> None:
    """A watch sees only keys under its prefix, in history and live."""
    await store.put("/pods/a", b"1")
    await store.put("/nodes/n1", b"1")
    watch = store.watch("/pods/", 0)
    await store.put("/nodes/n2", b"1")
    await store.put("/podsx", b"1")
    await store.put("/pods/b", b"1")
    await store.delete("/pods/a")
    events = await _take(watch, 3)
    assert [(e.type, e.kv.key) for e in events] == [
        ("PUT", "/pods/a"),
        ("PUT", "/pods/b"),
        ("DELETE", "/pods/a"),
    ]
    watch.close()


async def test_watch_compacted(db_path: Path) -> None:
    """With a small history, a watch from a revision no longer kept raises Compacted."""
    store = await SqliteStore.open(db_path, history=3)
    try:
        for i in range(6):
            await store.put(f"k{i}", b"x")
        with pytest.raises(Compacted, match="revision 2 is compacted"):
            store.watch("", 2)
        watch = store.watch("", 3)  # events 4, 5, 6 are all kept
        assert [e.revision for e in await _take(watch, 3)] == [4, 5, 6]
        watch.close()
    finally:
        await store.close()


async def test_the_history_is_bounded_in_bytes_too(db_path: Path) -> None:
    """The history keeps at most `history_bytes` of values, the newest, whatever its count
    allows: a value rewritten over and over (an agent's big status) held as many copies
    as the count let. A version bigger than the whole budget is still kept alone."""
    store = await SqliteStore.open(db_path, history=1000, history_bytes=3000)
    try:
        for i in range(6):
            await store.put("k", bytes([i]) * 1000)  # revisions 1..6
        with pytest.raises(Compacted, match="revision 2 is compacted"):
            store.watch("", 2)  # would miss 3
        watch = store.watch("", 3)  # 4, 5, 6: 3,000 bytes
        assert [e.kv.value[0] for e in await _take(watch, 3)] == [3, 4, 5]
        watch.close()
        await store.put("big", b"x" * 5000)  # 7, alone past the budget
        with pytest.raises(Compacted):
            store.watch("", 5)
        watch = store.watch("", 6)
        assert [e.revision for e in await _take(watch, 1)] == [7]
        watch.close()
        await store.delete("big")  # 8: its value counted, and 7 goes
        with pytest.raises(Compacted):
            store.watch("", 6)
    finally:
        await store.close()


async def test_the_history_counts_the_bytes_of_what_its_count_drops(db_path: Path) -> None:
    """Versions dropped by the count leave the byte total too: after the count has turned
    the history over, the budget still holds as many versions as it fits."""
    store = await SqliteStore.open(db_path, history=3, history_bytes=3000)
    try:
        for i in range(10):
            await store.put("k", bytes([i]) * 1000)  # revisions 1..10; the count keeps 3
        watch = store.watch("", 7)  # 8, 9, 10: within both bounds
        assert [e.kv.value[0] for e in await _take(watch, 3)] == [7, 8, 9]
        watch.close()
        with pytest.raises(Compacted):
            store.watch("", 6)
        await store.put("small", b"x")  # 11: the count drops 8, the bytes keep the rest
        watch = store.watch("", 8)
        assert [e.revision for e in await _take(watch, 3)] == [9, 10, 11]
        watch.close()
    finally:
        await store.close()


async def test_watch_compacted_mid_transaction(db_path: Path) -> None:
    """If only part of a transaction's events are kept, watching from before it is refused."""
    store = await SqliteStore.open(db_path, history=2)
    try:
        await store.put("a", b"x")
        await store.txn([Op("put", "b", b"x"), Op("put", "c", b"x"), Op("put", "d", b"x")])
        with pytest.raises(Compacted):
            store.watch("", 1)  # would miss b
        store.watch("", 2).close()
    finally:
        await store.close()


async def test_watch_after_reopen_needs_current_revision(db_path: Path) -> None:
    """History does not survive a restart: watch from an older revision is Compacted."""
    store = await SqliteStore.open(db_path)
    await store.put("a", b"x")
    await store.put("b", b"x")
    await store.close()
    reopened = await SqliteStore.open(db_path)
    try:
        with pytest.raises(Compacted):
            reopened.watch("", 0)
        _, revision = await reopened.list("")
        watch = reopened.watch("", revision)
        await reopened.put("c", b"x")
        [event] = await _take(watch, 1)
        assert (event.kv.key, event.revision) == ("c", 3)
        watch.close()
    finally:
        await reopened.close()


async def test_slow_watcher_overflow(store: SqliteStore) -> None:
    """A watcher that falls too far behind gets what was queued, then Compacted."""
    watch = store.watch("", 0, max_backlog=5)
    for i in range(8):
        await store.put(f"k{i}", b"x")
    received: list[int] = []
    with pytest.raises(Compacted, match="fell 5 events behind"):
        async with asyncio.timeout(TIMEOUT):
            async for event in watch:
                received.append(event.revision)
    assert received == [1, 2, 3, 4, 5]
    assert (await store.put("after", b"x")).mod_revision == 9  # writers are unaffected


async def test_watcher_overflow_within_one_commit(store: SqliteStore) -> None:
    """A watcher that falls behind in the middle of one commit gets what fit, then Compacted;
    a watcher beside it still gets every event of that commit, in order."""
    slow = store.watch("", 0, max_backlog=3)
    other = store.watch("", 0)
    await store.txn([Op("put", f"k{i}", b"x") for i in range(6)])
    await store.txn([Op("put", f"j{i}", b"x") for i in range(2)])
    received: list[str] = []
    with pytest.raises(Compacted, match="fell 3 events behind"):
        async with asyncio.timeout(TIMEOUT):
            async for event in slow:
                received.append(event.kv.key)
    assert received == ["k0", "k1", "k2"]
    assert [e.kv.key for e in await _take(other, 8)] == [f"k{i}" for i in range(6)] + ["j0", "j1"]


async def test_watch_history_overflow(store: SqliteStore) -> None:
    """A watch whose replay alone exceeds its backlog fails with Compacted, not unbounded."""
    for i in range(8):
        await store.put(f"k{i}", b"x")
    watch = store.watch("", 0, max_backlog=3)
    with pytest.raises(Compacted):
        await _take(watch, 8)


async def test_a_watch_that_fell_behind_is_freed_without_the_cyclic_collector(
    store: SqliteStore,
) -> None:
    """The error a watch ends with is raised anew, not the one it keeps: the traceback of
    that one's raise held the watch's frame, which holds the watch (a cycle, which the
    scheduler's collector settings keep for good once a young collection saw it)."""
    for i in range(8):
        await store.put(f"k{i}", b"x")
    with collector_off() as existing:  # a cycle the watch made is still there after
        watch = store.watch("", 0, max_backlog=3)
        for _ in range(2):  # and the error is the same one, raised again
            # Iterated as the API's watch streams do, in this task: `wait_for`'s task would
            # make a cycle of its own with the error it holds.
            with pytest.raises(Compacted, match="fell 3 events behind"):
                async with asyncio.timeout(TIMEOUT):
                    async for _event in watch:
                        pass
        del watch
        assert cyclic_garbage_of(_SqliteWatch, existing) == []  # not an earlier test's


async def test_history_keeps_decoded_objects_of_recent_commits_only(store: SqliteStore) -> None:
    """Versions replaced or deleted lose their decoded objects once DECODED_COMMITS newer
    commits are published; their JSON stays for the watches that replay them, and the
    current versions keep theirs."""
    first, second, removed = object(), object(), object()
    await store.txn([Op("put", "a", b"1", first), Op("put", "b", b"1", removed)])
    await store.txn([Op("put", "a", b"2", second), Op("delete", "b")])
    assert DECODED_COMMITS >= 2
    replay = await _take(store.watch("", 0), 4)
    a1, b1, a2, b_deleted = replay
    # Within the window: every version still decoded, the replaced ones too.
    assert (a1.kv.obj, b1.kv.obj, a2.kv.obj) == (first, removed, second)
    assert b_deleted.kv.obj is removed

    for i in range(DECODED_COMMITS):
        await store.put(f"other{i}", b"x", obj=object())
    assert a1.kv.obj is None and a2.prev is a1.kv  # replaced by a2
    assert b1.kv.obj is None and b_deleted.kv.obj is None  # deleted
    assert a2.kv.obj is second  # still current
    assert (await store.get("a")) is a2.kv
    # A watch from the start still replays every version, as JSON.
    values = [(e.type, e.kv.key, e.kv.value) for e in await _take(store.watch("", 0), 4)]
    assert values == [
        ("PUT", "a", b"1"),
        ("PUT", "b", b"1"),
        ("PUT", "a", b"2"),
        ("DELETE", "b", b"1"),
    ]


async def test_a_filtered_watch_leaves_released_versions_undecoded(store: SqliteStore) -> None:
    """A watch with a selector that replays history decodes the versions the store
    released to test them, and leaves them released (cached again, each would stay
    decoded until it left the history)."""
    pods = [
        Pod.model_validate(
            {
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": f"web:{i}"}]},
            }
        )
        for i in range(2)
    ]
    key = pod_key("default", "web")
    await store.put(key, encode(pods[0]), obj=pods[0])
    await store.put(key, encode(pods[1]), obj=pods[1])
    for i in range(DECODED_COMMITS):
        await store.put(f"other{i}", b"x", obj=object())
    replay = await _take(store.watch(PODS, 0), 2)
    assert replay[0].kv.obj is None and replay[1].kv.obj is pods[1]  # released; current

    def web(kv: KV) -> bool:
        return decode(kv, Pod).metadata.labels.get("app") == "web"

    replayed = history_filter(web, store)
    types = [event_type(e.type, e.kv, e.prev, replayed) for e in replay]
    assert types == ["ADDED", "MODIFIED"]
    assert replay[0].kv.obj is None  # tested, and left as the store released it
    assert replay[1].kv.obj is pods[1]  # the current version keeps its decoded object
    # A current version not decoded yet (as one read back from disk) is cached when tested.
    replay[1].kv.obj = None
    assert replayed(replay[1].kv) and isinstance(replay[1].kv.obj, Pod)


async def test_close_ends_watches(db_path: Path) -> None:
    """Closing the store ends every watch's iteration."""
    store = await SqliteStore.open(db_path)
    watch = store.watch("", 0)

    async def drain() -> list[Event]:
        return [event async for event in watch]

    task = asyncio.create_task(drain())
    await store.put("a", b"x")
    await store.close()
    events = await asyncio.wait_for(task, TIMEOUT)
    assert [e.kv.key for e in events] == ["a"]


async def test_close_writes_what_is_queued(db_path: Path) -> None:
    """close() makes queued writes durable before closing (it once hung instead)."""
    store = await SqliteStore.open(db_path)
    await store.put("first", b"x")
    pending = [store.txn([Op("put", f"k{i}", b"x")]) for i in range(50)]
    async with asyncio.timeout(TIMEOUT) as deadline:  # close() in this task, right away
        await store.close()
    assert not deadline.expired()
    assert all(f.done() and f.exception() is None for f in pending)
    with pytest.raises(StoreUnavailable, match="closing"):
        await store.put("late", b"x")
    reopened = await SqliteStore.open(db_path)
    try:
        assert len((await reopened.list("k"))[0]) == 50
        assert reopened.revision == 51
    finally:
        await reopened.close()


async def test_close_twice(db_path: Path) -> None:
    """close() may be called more than once."""
    store = await SqliteStore.open(db_path)
    await store.close()
    await asyncio.wait_for(store.close(), TIMEOUT)


async def test_group_commit(db_path: Path) -> None:
    """2,000 concurrent puts share far fewer commits than writes, and all are durable."""
    store = await SqliteStore.open(db_path)
    count = 2000
    results = await asyncio.wait_for(
        asyncio.gather(*(store.put(f"/k/{i:05d}", b"v" * 100) for i in range(count))), TIMEOUT
    )
    assert sorted(kv.mod_revision for kv in results) == list(range(1, count + 1))
    assert store.writes == count
    assert store.commits <= count // 20, store.commits
    await store.close()
    assert _rows(db_path, "SELECT COUNT(*), MAX(mod_revision) FROM kv") == [(count, count)]
    assert _rows(db_path, "SELECT value FROM meta WHERE name = 'revision'") == [(count,)]


async def test_durable_settings(store: SqliteStore, db_path: Path) -> None:
    """The file is in WAL mode and the store's connection fsyncs every commit."""
    await store.put("a", b"x")
    assert _rows(db_path, "PRAGMA journal_mode") == [("wal",)]
    async with store._db.execute("PRAGMA synchronous") as cursor:
        assert await cursor.fetchone() == (2,)  # FULL


async def test_schema_version(store: SqliteStore, db_path: Path) -> None:
    """A new database records every schema version in schema_migrations."""
    versions = _rows(db_path, "SELECT version FROM schema_migrations ORDER BY version")
    assert versions == [(version,) for version, _ in MIGRATIONS] == [(1,), (2,)]


async def test_newer_schema_refused(db_path: Path) -> None:
    """A database written by a newer corral is refused with a clear error."""
    store = await SqliteStore.open(db_path)
    await store.close()
    newer = MIGRATIONS[-1][0] + 1
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO schema_migrations (version) VALUES (?)", (newer,))
    with pytest.raises(StoreError, match=f"schema version {newer}, newer than this corral knows"):
        await SqliteStore.open(db_path)


async def test_a_failed_migration_leaves_the_file_as_it_was(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails partway is rolled back whole: the store refuses to open,
    naming the file, the file keeps its old schema and data, and a corral with a working
    migration opens it later."""
    store = await SqliteStore.open(db_path)
    await store.put("/k", b"kept")
    await store.close()
    with sqlite3.connect(db_path) as conn:  # back to version 1, as an older corral left it
        conn.execute("DELETE FROM schema_migrations WHERE version > 1")
    version_2 = MIGRATIONS[1]
    broken = (version_2[0], [*version_2[1], "INSERT INTO no_such_table VALUES (1)"])
    monkeypatch.setattr("scheduler.store.sqlite.MIGRATIONS", [MIGRATIONS[0], broken])
    with pytest.raises(StoreError, match=f"cannot open store {db_path}"):
        await SqliteStore.open(db_path)
    assert _rows(db_path, "SELECT version FROM schema_migrations") == [(1,)]
    assert _rows(db_path, "SELECT key, value FROM kv") == [("/k", b"kept")]
    assert _rows(db_path, "SELECT name FROM sqlite_master WHERE name = 'kv_rowid'") == []
    monkeypatch.undo()
    reopened = await SqliteStore.open(db_path)
    try:
        assert (await reopened.get("/k")) is not None
    finally:
        await reopened.close()


def _kv_table_sql(path: Path) -> str:
    """The statement that created the kv table, as SQLite keeps it."""
    [(sql,)] = _rows(path, "SELECT sql FROM sqlite_master WHERE name = 'kv'")
    assert isinstance(sql, str)
    return sql


async def test_migration_to_rowid_table_keeps_everything(db_path: Path) -> None:
    """A version-1 database (kv WITHOUT ROWID) opens migrated to a rowid kv table with
    every key, value, revision and the store's revision as they were."""
    await asyncio.to_thread(db_path.parent.mkdir, parents=True)
    rows = [(f"/pods/ns/p{i:03d}", f"pod {i}".encode() * 50, i + 1, 2 * i + 1) for i in range(300)]
    with sqlite3.connect(db_path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY,"
            " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
        )
        for sql in MIGRATIONS[0][1]:
            conn.execute(sql)
        conn.execute("INSERT INTO schema_migrations (version) VALUES (1)")
        conn.executemany("INSERT INTO kv VALUES (?, ?, ?, ?)", rows)
        conn.execute("UPDATE meta SET value = 700 WHERE name = 'revision'")
    assert "WITHOUT ROWID" in _kv_table_sql(db_path)

    store = await SqliteStore.open(db_path)
    try:
        listed, revision = await store.list("")
        assert revision == 700
        assert [(kv.key, kv.value, kv.create_revision, kv.mod_revision) for kv in listed] == rows
        assert (await store.put("/pods/ns/p000", b"after")).mod_revision == 701
    finally:
        await store.close()
    assert "WITHOUT ROWID" not in _kv_table_sql(db_path)
    assert _rows(db_path, "SELECT version FROM schema_migrations ORDER BY version") == [(1,), (2,)]
    assert _rows(db_path, "SELECT value FROM kv WHERE key = '/pods/ns/p000'") == [(b"after",)]
    assert _rows(db_path, "SELECT COUNT(*) FROM kv") == [(300,)]


async def test_commits_use_padded_statements_of_few_sizes(db_path: Path) -> None:
    """The statements a commit runs hold a power-of-two number of rows (the padding is
    what keeps the connection's statement cache small), and the padded rows change
    nothing: every key is written once, with its own value."""
    store = await SqliteStore.open(db_path)
    conn = store._db._conn
    statements: list[str] = []
    await store._db._execute(conn.set_trace_callback, statements.append)
    writes = [store.put(f"/k/{i:03d}", f"v{i}".encode()) for i in range(300)]
    await asyncio.wait_for(asyncio.gather(*writes), TIMEOUT)
    writes = [store.delete(f"/k/{i:03d}") for i in range(0, 300, 3)]  # 100 deletes
    await asyncio.wait_for(asyncio.gather(*writes), TIMEOUT)
    await store._db._execute(conn.set_trace_callback, None)
    await store.close()
    # The callback gets each statement with its values in place: count the rows and keys
    # by their separators (no key or value here holds one).
    rows = [s.count("), (") + 1 for s in statements if s.startswith("INSERT INTO kv ")]
    keys = [s.count("', '") + 1 for s in statements if s.startswith("DELETE FROM kv")]
    assert rows and keys
    assert all(n & (n - 1) == 0 for n in rows + keys), (rows, keys)
    assert sum(rows) >= 300 and sum(keys) >= 100
    expected = [(f"/k/{i:03d}", f"v{i}".encode()) for i in range(300) if i % 3]
    assert _rows(db_path, "SELECT key, value FROM kv ORDER BY key") == expected


async def test_a_commit_hook_that_fails_loses_nothing(db_path: Path) -> None:
    """The commit hook runs after the batch is published: if it raises, the writes are
    still acknowledged, readable and watched, and the store keeps going."""
    store = await SqliteStore.open(db_path)
    calls: list[float] = []

    def failing(seconds: float) -> None:
        calls.append(seconds)
        raise RuntimeError("hook broke")

    store.on_commit = failing
    watch = store.watch("", store.revision)
    try:
        for key in ("/a", "/b"):
            await asyncio.wait_for(store.put(key, b"x"), TIMEOUT)
        assert len(calls) == 2
        assert [kv.key for kv, _ in [(e.kv, e) for e in await _take(watch, 2)]] == ["/a", "/b"]
        assert await store.get("/b") == KV("/b", b"x", 2, 2)
        assert store._latest == {}  # nothing left queued as not yet durable
    finally:
        watch.close()
        await store.close()


def test_statement_sizes_are_few() -> None:
    """A write of any number of rows uses statements of a power-of-two size (the
    connection caches each size it prepared: a few sizes keep that cache small), full
    ones up to the largest, then one padded by less than half of itself."""
    assert statement_sizes(0, 8) == []
    assert statement_sizes(1, 8) == [1]
    assert statement_sizes(5, 8) == [8]
    assert statement_sizes(8, 8) == [8]
    assert statement_sizes(19, 8) == [8, 8, 4]
    sizes_seen: set[int] = set()
    for count in range(1, 3000):
        sizes = statement_sizes(count, 1024)
        sizes_seen.update(sizes)
        assert sum(sizes) >= count
        assert sum(sizes) - count < max(1, sizes[-1] // 2 + 1)
    assert sizes_seen == {1 << i for i in range(11)}


async def test_commit_larger_than_one_statement(db_path: Path) -> None:
    """A commit with more rows than one statement may bind (the connection's limit on
    parameters lowered to force several) writes every upsert and delete."""
    store = await SqliteStore.open(db_path)
    conn = store._db._conn  # used on its own thread, as sqlite3 requires
    # 40 parameters, 10 rows: statements of 8 rows, the last of each write padded.
    await store._db._execute(conn.setlimit, sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 40)
    for i in range(0, 60, 2):
        await store.put(f"/k/{i:03d}", b"old")
    writes = [store.put(f"/k/{i:03d}", f"v{i}".encode()) for i in range(1, 60, 2)]  # 30
    writes += [store.delete(f"/k/{i:03d}") for i in range(0, 54, 2)]  # 27: 8, 8, 8, 4
    commits = store.commits
    await asyncio.wait_for(asyncio.gather(*writes), TIMEOUT)
    assert store.commits == commits + 1
    await store.close()
    expected = [(f"/k/{i:03d}", f"v{i}".encode()) for i in range(1, 60, 2)]
    expected += [(f"/k/{i:03d}", b"old") for i in range(54, 60, 2)]
    assert _rows(db_path, "SELECT key, value FROM kv ORDER BY key") == sorted(expected)
    assert _rows(db_path, "SELECT value FROM meta WHERE name = 'revision'") == [(30 + 30 + 27,)]


async def test_not_a_database_refused(db_path: Path) -> None:
    """A file that is not SQLite is refused as a StoreError naming it."""
    await asyncio.to_thread(db_path.parent.mkdir, parents=True)
    await asyncio.to_thread(db_path.write_bytes, b"this is not a database, just text" * 100)
    with pytest.raises(StoreError, match=f"cannot open store {db_path}"):
        await SqliteStore.open(db_path)


async def test_commit_failure(store: SqliteStore, db_path: Path) -> None:
    """A commit the disk refuses (SQLITE_FULL) fails its writers with StoreUnavailable,
    leaves nothing half-visible, and the store keeps working once there is room."""
    await store.put("a", b"before")
    watch = store.watch("", store.revision)
    # A real SQLITE_FULL: cap this connection's database at its current size.
    async with store._db.execute("PRAGMA page_count") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    await store._db.execute(f"PRAGMA max_page_count = {row[0]}")

    writers = [
        store.txn([Op("put", "big", b"x" * 200_000)]),
        store.txn([Op("put", "a", b"after", expect=1)]),
        store.txn([Op("delete", "a")]),
    ]
    results = await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), TIMEOUT)
    assert all(isinstance(r, StoreUnavailable) for r in results), results
    assert "database or disk is full" in str(results[0])

    assert store.revision == 1
    assert await store.get("big") is None
    assert await store.get("a") == KV("a", b"before", 1, 1)
    assert [kv.key for kv in (await store.list(""))[0]] == ["a"]

    await store._db.execute("PRAGMA max_page_count = 1073741823")
    kv = await store.put("a", b"after", expect=1)  # guards see the committed state again
    assert kv.mod_revision == 2
    [event] = await _take(watch, 1)  # the failed writes were never published
    assert (event.kv.value, event.revision) == (b"after", 2)
    watch.close()
    assert _rows(db_path, "SELECT key, value, mod_revision FROM kv") == [("a", b"after", 2)]


async def test_settled_reads_a_key_once_its_queued_writes_are_durable(store: SqliteStore) -> None:
    """A read-modify-write that lost to a queued write waits for it instead of reading
    the same committed value again (and losing again)."""
    await store.put("/k", b"1")
    queued = store.txn([Op("put", "/k", b"2")])
    committed = await store.get("/k")
    assert committed is not None and committed.value == b"1"
    with pytest.raises(Conflict):  # the queued write is newer than what get() shows
        await store.put("/k", b"3", expect=committed.mod_revision)
    settled = await store.settled("/k")
    assert queued.done() and settled is not None and settled.value == b"2"
    assert (await store.put("/k", b"3", expect=settled.mod_revision)).value == b"3"
    assert (await store.settled("/untouched")) is None  # nothing queued: at once
