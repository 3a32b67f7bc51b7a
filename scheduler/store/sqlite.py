"""The embedded store: one SQLite file in WAL mode, group-committed, cached in memory.

Writes are validated against the latest state (committed plus queued) on the
event loop, then queued for the single writer task. The writer takes
everything queued, writes it in one transaction and one fsync
(`synchronous=FULL`), and only then resolves the callers' futures, updates the
in-memory view that reads are served from and feeds the watchers. So many
concurrent writes share one fsync, and nothing is acknowledged before it is on
disk.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from scheduler.store.base import (
    KV,
    Compacted,
    Conflict,
    Event,
    NotFound,
    Op,
    StoreError,
    StoreUnavailable,
)

_LOGGER = logging.getLogger(__name__)

# Versioned schema migrations: each entry runs once, in order, in one transaction.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE TABLE kv (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
            " create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL) WITHOUT ROWID",
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO meta (name, value) VALUES ('revision', 0)",
        ],
    ),
    (
        # kv as a rowid table: SQLite advises WITHOUT ROWID only for rows under about a
        # twentieth of a page, and a stored pod is 0.5-1 KiB. Upserting 3,000 such rows
        # into 30,000 cost 60-90 ms of CPU without rowid, 12-16 ms with it.
        2,
        [
            "CREATE TABLE kv_rowid (key TEXT PRIMARY KEY, value BLOB NOT NULL,"
            " create_revision INTEGER NOT NULL, mod_revision INTEGER NOT NULL)",
            "INSERT INTO kv_rowid (key, value, create_revision, mod_revision)"
            " SELECT key, value, create_revision, mod_revision FROM kv ORDER BY key",
            "DROP TABLE kv",
            "ALTER TABLE kv_rowid RENAME TO kv",
        ],
    ),
]


@dataclass(slots=True)
class _Pending:
    events: list[Event]
    future: asyncio.Future[list[KV]]


class _SqliteWatch:
    def __init__(
        self, store: SqliteStore, prefix: str, start_revision: int, max_backlog: int
    ) -> None:
        self._store, self.prefix, self._max = store, prefix, max_backlog
        self._start = start_revision
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._error: StoreError | None = None
        self._closed = False

    def push(self, event: Event) -> None:
        """Queue one event (called by the store, in revision order)."""
        if self._error is not None or self._closed or event.revision <= self._start:
            return
        if len(self._queue) >= self._max:
            # Never buffer without bound for a consumer that does not keep up: it
            # gets what is queued, then `Compacted`, and must list and re-watch.
            self._error = Compacted(f"watch on {self.prefix!r} fell {self._max} events behind")
            self._store._watchers.discard(self)
        else:
            self._queue.append(event)
        self._wake.set()

    def close(self) -> None:
        self._closed = True
        self._store._watchers.discard(self)
        self._wake.set()

    async def __aiter__(self) -> AsyncIterator[Event]:
        try:
            while True:
                while self._queue:
                    yield self._queue.popleft()
                if self._error is not None:
                    # A new error each time: the one kept would take the traceback of
                    # this raise, which holds this frame and so the watch (a cycle).
                    raise type(self._error)(*self._error.args)
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            self.close()


# The history's bound in bytes of JSON, besides its count: an agent that reports a big
# status over and over (its pod's whole JSON each time), or clients that rewrite big
# objects, would otherwise hold up to `history` versions of them (5 GB in 36 s, from one
# node reporting 50 KB statuses). A watch older than what is kept lists again (410).
HISTORY_BYTES = 256 * 2**20
# The history keeps each version's JSON for watches that resume from an older revision.
# The decoded objects of its events (`KV.obj`, a tree of a few dozen tracked objects per
# pod) are kept only for the last DECODED_COMMITS commits, which is as far behind as the
# in-process watchers (the cluster view) are: kept for all 100,000 events, versions long
# replaced held a tenth of the scheduler's memory at 10,000 pods, more with churn
# (docs/benchmarks.md, session 11). `decode` decodes a released version again for the
# rare reader further behind.
DECODED_COMMITS = 2


def _release_replaced(ev: Event, committed: dict[str, KV]) -> None:
    """Drop the decoded objects of the versions in `ev` that are no longer current."""
    kv = ev.kv
    if committed.get(kv.key) is not kv:  # replaced since, or the value a DELETE removed
        kv.obj = None
    if ev.prev is not None:  # replaced by `kv`
        ev.prev.obj = None


class SqliteStore:
    """`Store` on SQLite. Open with `await SqliteStore.open(path)`."""

    def __init__(
        self, db: aiosqlite.Connection, path: str, history: int, history_bytes: int = HISTORY_BYTES
    ) -> None:
        self._db = db
        self.path = path
        self._committed: dict[str, KV] = {}
        self._latest: dict[str, KV | None] = {}  # writes queued but not yet durable
        self._revision = 0
        self._next_revision = 0
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._history: deque[Event] = deque(maxlen=history)
        self._history_budget = history_bytes
        self._history_bytes = 0  # of the values the history holds
        self._decoded: deque[builtins.list[_Pending]] = deque()  # the last commits' writes
        # Watches must start at or after this revision: events of it and before
        # have (at least partly) left the history, or predate this process.
        self._compacted = 0
        self._watchers: set[_SqliteWatch] = set()
        self._writer: asyncio.Task[None] | None = None
        self._progress = asyncio.Event()  # set, and replaced, after every commit or failure
        self._closing = False
        self.commits = 0  # transactions written, for metrics and benchmarks
        self.writes = 0
        # Called after every commit with its duration in seconds, from taking the queued
        # writes to their being durable and published on the event loop: the metrics' hook.
        self.on_commit: Callable[[float], None] | None = None

    @classmethod
    async def open(
        cls, path: str | Path, *, history: int = 100_000, history_bytes: int = HISTORY_BYTES
    ) -> SqliteStore:
        """Open (creating and migrating as needed) the database at `path`."""
        path = str(path)
        if path != ":memory:":
            await asyncio.to_thread(Path(path).parent.mkdir, parents=True, exist_ok=True)
        try:
            db = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {path}: {exc}") from exc
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an acknowledged write
            # survives power loss, not only a crash of this process.
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await _migrate(db, path)
            store = cls(db, path, history, history_bytes)
            await store._load()
        except BaseException as exc:
            await db.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"cannot open store {path}: {exc}") from exc
            raise
        store._writer = asyncio.create_task(store._write_loop(), name="store-writer")
        return store

    async def _load(self) -> None:
        async with self._db.execute("SELECT value FROM meta WHERE name = 'revision'") as cur:
            row = await cur.fetchone()
        self._revision = self._next_revision = int(row[0]) if row else 0
        self._compacted = self._revision  # the history starts empty at every open
        async with self._db.execute(
            "SELECT key, value, create_revision, mod_revision FROM kv"
        ) as cur:
            async for key, value, create_rev, mod_rev in cur:
                self._committed[key] = KV(key, bytes(value), create_rev, mod_rev)
        _LOGGER.info(
            "store %s opened at revision %d with %d keys",
            self.path,
            self._revision,
            len(self._committed),
        )

    @property
    def revision(self) -> int:
        return self._revision

    async def get(self, key: str) -> KV | None:
        return self._committed.get(key)

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        items = [kv for key, kv in self._committed.items() if key.startswith(prefix)]
        items.sort(key=lambda kv: kv.key)
        return items, self._revision

    def list_now(self, prefix: str) -> builtins.list[KV]:
        """Synchronous listing of committed keys (in-process readers only)."""
        return [kv for key, kv in self._committed.items() if key.startswith(prefix)]

    async def put(
        self, key: str, value: bytes, *, obj: Any = None, expect: int | None = None
    ) -> KV:
        return (await self.txn([Op("put", key, value, obj, expect)]))[0]

    async def delete(self, key: str, *, expect: int | None = None) -> KV:
        return (await self.txn([Op("delete", key, expect=expect)]))[0]

    def latest(self, key: str) -> KV | None:
        """The newest value of a key, counting writes queued but not yet durable.

        For in-process writers that build a write on top of another (an agent's
        status reports arriving faster than commits); readers use `get`.
        """
        return self._current(key)

    async def settled(self, key: str) -> KV | None:
        target = self._next_revision if key in self._latest else self._revision
        # Until the writes up to `target` are published, or have failed (the failure
        # path takes _next_revision back below it).
        while self._revision < target <= self._next_revision:
            await self._progress.wait()
        return self._committed.get(key)

    def _current(self, key: str) -> KV | None:
        if key in self._latest:
            return self._latest[key]
        return self._committed.get(key)

    def txn(self, ops: builtins.list[Op]) -> asyncio.Future[builtins.list[KV]]:
        """Check every guard now, then queue the writes; the future resolves once durable.

        Ops apply in order, so a later op on the same key sees the earlier one
        (its guard compares with the revision this transaction will get). An
        empty transaction writes nothing and takes no revision.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[builtins.list[KV]] = loop.create_future()
        if self._closing:
            future.set_exception(StoreUnavailable("store is closing"))
            return future
        if not ops:
            future.set_result([])
            return future
        revision = self._next_revision + 1
        staged: dict[str, KV | None] = {}
        events: list[Event] = []
        latest, committed = self._latest, self._committed
        for op in ops:
            key = op.key
            # What `_current` gives, seeing this transaction's earlier ops (inline: a call
            # per op is a good part of a one-op write's cost).
            if key in staged:
                prev = staged[key]
            elif key in latest:
                prev = latest[key]
            else:
                prev = committed.get(key)
            if op.expect is not None and (prev.mod_revision if prev else 0) != op.expect:
                future.set_exception(Conflict(key, op.expect, prev))
                return future
            if op.kind == "put":
                create = prev.create_revision if prev else revision
                kv = KV(key, op.value, create, revision, op.obj)
                events.append(Event("PUT", kv, prev, revision))
                staged[key] = kv
            elif prev is None:
                future.set_exception(NotFound(key))
                return future
            else:
                kv = KV(key, prev.value, prev.create_revision, revision, prev.obj)
                events.append(Event("DELETE", kv, prev, revision))
                staged[key] = None
        self._next_revision = revision
        self._latest.update(staged)
        self._queue.append(_Pending(events, future))
        self._wake.set()
        return future

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._queue = self._queue, []
            try:
                await self._commit(batch, time.monotonic())
            except Exception as exc:  # disk full, I/O error: fail loudly, keep nothing half-done
                _LOGGER.exception("store commit failed; %d writes not acknowledged", len(batch))
                with contextlib.suppress(Exception):
                    await self._db.execute("ROLLBACK")
                # Writes queued meanwhile were checked against the failed ones: fail them too.
                failed = batch + self._queue
                self._queue = []
                self._latest.clear()
                self._next_revision = self._revision
                for pending in failed:
                    if not pending.future.done():
                        pending.future.set_exception(StoreUnavailable(f"write not durable: {exc}"))
                self._progressed()
                continue

    def _progressed(self) -> None:
        """Wake whoever waits in `settled`."""
        self._progress.set()
        self._progress = asyncio.Event()

    async def _commit(self, batch: builtins.list[_Pending], started: float) -> None:
        """Write `batch` durably; `_durable` has published it by the time this returns."""
        # Only each key's final state in the batch goes to disk; later writes win.
        final: dict[str, Event] = {}
        for pending in batch:
            for ev in pending.events:
                final[ev.kv.key] = ev
        upserts = [
            (key, ev.kv.value, ev.kv.create_revision, ev.kv.mod_revision)
            for key, ev in final.items()
            if ev.type == "PUT"
        ]
        deletes = [key for key, ev in final.items() if ev.type == "DELETE"]
        last_revision = batch[-1].events[0].revision
        # The whole transaction in one call on the connection's thread: each call is a hop
        # to that thread and back to the event loop, and a busy machine makes every hop
        # cost (four calls took 0.5-2 ms more than one, on the path of every write).
        # aiosqlite's `_execute` runs a function there, as its own cursors do.
        loop = asyncio.get_running_loop()
        conn = self._db._conn

        def write() -> None:  # on the connection's thread
            _write_batch(conn, upserts, deletes, last_revision)
            # Published from here, one event-loop iteration sooner than after the await:
            # the await's result is a callback, and this task's wake-up another after it.
            # Queued before aiosqlite queues that result, so it runs first.
            loop.call_soon_threadsafe(self._durable, batch, started)

        await self._db._execute(write)

    def _durable(self, batch: builtins.list[_Pending], started: float) -> None:
        """A batch is durable: count it, publish it, wake whoever waits for it, then tell
        the hook (last, and guarded: a loop callback's exception would only be logged,
        with the batch left unpublished)."""
        self.commits += 1
        self.writes += len(batch)
        self._publish(batch)
        self._progressed()
        if self.on_commit is not None:
            try:
                self.on_commit(time.monotonic() - started)
            except Exception:
                _LOGGER.exception("store commit hook failed")

    def _publish(self, batch: builtins.list[_Pending]) -> None:
        committed, latest, history = self._committed, self._latest, self._history
        # Copied once for the whole batch, not once per key: a watcher that falls behind
        # leaves the set meanwhile, and ignores what it is pushed after that.
        watchers = list(self._watchers)
        maxlen = history.maxlen
        budget, held = self._history_budget, self._history_bytes
        for pending in batch:
            kvs: builtins.list[KV] = []
            for ev in pending.events:
                kv = ev.kv
                kvs.append(kv)
                key = kv.key
                if ev.type == "PUT":
                    committed[key] = kv
                else:
                    committed.pop(key, None)
                # Drop the overlay entry unless a later queued write replaced it.
                newest = latest.get(key, ...)
                if newest is kv or (ev.type == "DELETE" and newest is None):
                    del latest[key]
                if maxlen == 0:
                    self._compacted = ev.revision
                else:
                    if len(history) == maxlen:  # the oldest goes with the append
                        self._compacted = history[0].revision
                        held -= len(history[0].kv.value)
                    history.append(ev)
                    held += len(kv.value)
                    while held > budget and len(history) > 1:
                        gone = history.popleft()
                        held -= len(gone.kv.value)
                        self._compacted = gone.revision
                for watcher in watchers:
                    if key.startswith(watcher.prefix):
                        watcher.push(ev)
            self._revision = pending.events[0].revision
            if not pending.future.done():
                pending.future.set_result(kvs)
        self._history_bytes = held
        if maxlen:
            self._decoded.append(batch)
            if len(self._decoded) > DECODED_COMMITS:
                for pending in self._decoded.popleft():
                    for ev in pending.events:
                        _release_replaced(ev, committed)

    def watch(
        self, prefix: str, start_revision: int, *, max_backlog: int = 100_000
    ) -> _SqliteWatch:
        """Events under `prefix` after `start_revision` (history first, then live).

        Raises `Compacted` if events after `start_revision` are no longer all
        kept (list again, then watch from the listing's revision).
        """
        if start_revision < self._compacted:
            raise Compacted(
                f"revision {start_revision} is compacted: watch from {self._compacted} or later"
            )
        watcher = _SqliteWatch(self, prefix, start_revision, max_backlog)
        if self._closing:
            watcher.close()
            return watcher
        if start_revision < self._revision:
            for ev in self._history:
                if ev.kv.key.startswith(prefix):
                    watcher.push(ev)
        if watcher._error is None:
            self._watchers.add(watcher)
        return watcher

    async def close(self) -> None:
        """Write what is queued, stop the writer, close the database. Idempotent."""
        if self._closing:
            if self._writer is not None:
                await asyncio.shield(self._writer)
            return
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
        for watcher in list(self._watchers):
            watcher.close()
        await self._db.close()


# Rows per multi-row statement, at most. A statement's size is always a power of two: the
# connection keeps every statement it prepared (up to 128), and a prepared statement
# takes about 1 KiB a row, so statements of every size that commits happen to have held
# 200 MiB after 300 commits of 1-3,000 rows in a test. With sizes 1, 2, 4 ... 1,024 they
# hold about 2 MiB; the last statement of a write is filled up by repeating its last row,
# which writes that row again, the same (half of a statement, at most: a few ms).
_MAX_ROWS_PER_STATEMENT = 1024
_UPSERT = (
    "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES {rows}"
    " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
    " create_revision = excluded.create_revision,"
    " mod_revision = excluded.mod_revision"
)
_DELETE = "DELETE FROM kv WHERE key IN ({keys})"


def statement_sizes(count: int, most: int) -> list[int]:
    """How many rows each statement of a `count`-row write holds, the last one padded:
    powers of two, at most `most` (itself a power of two)."""
    sizes = [most] * (count // most)
    rest = count % most
    if rest:
        sizes.append(1 << (rest - 1).bit_length())
    return sizes


def _padded_chunks(items: builtins.list[Any], most: int) -> Iterator[builtins.list[Any]]:
    """`items` in chunks of `statement_sizes`, the last filled up with its last item."""
    start = 0
    for size in statement_sizes(len(items), most):
        chunk = items[start : start + size]
        start += size
        yield chunk + [chunk[-1]] * (size - len(chunk))


def _write_batch(
    conn: sqlite3.Connection,
    upserts: builtins.list[tuple[str, bytes, int, int]],
    deletes: builtins.list[str],
    revision: int,
) -> None:
    """One transaction (blocking: on the connection's thread). A failure rolls it back
    and raises, so nothing of the batch is on disk.

    The rows go in as few statements as possible, not by `executemany`: every SQLite
    call gives up the GIL, and taking it back from a busy event loop can wait the
    interpreter's switch interval. `executemany` makes that a wait per row (a 3,000-row
    commit took 30 s against a thread spinning in Python, in a test; 0.15-1 s commits
    in the placement benchmark)."""
    limit = conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
    most = min(_MAX_ROWS_PER_STATEMENT, 1 << ((max(4, limit) // 4).bit_length() - 1))
    conn.execute("BEGIN IMMEDIATE")
    try:
        for rows in _padded_chunks(upserts, most):
            sql = _UPSERT.format(rows=", ".join(["(?, ?, ?, ?)"] * len(rows)))
            conn.execute(sql, [field for row in rows for field in row])
        for keys in _padded_chunks(deletes, most):
            conn.execute(_DELETE.format(keys=", ".join(["?"] * len(keys))), keys)
        conn.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (revision,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


async def _migrate(db: aiosqlite.Connection, path: str) -> None:
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
        " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    known = MIGRATIONS[-1][0]
    if current > known:
        raise StoreError(
            f"store {path} has schema version {current}, newer than this corral knows"
            f" ({known}): it was written by a newer corral; upgrade corral to open it"
        )
    for version, statements in MIGRATIONS:
        if version <= current:
            continue
        await db.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                await db.execute(sql)
            await db.execute("INSERT INTO schema_migrations (version) VALUES (?)", (version,))
            await db.execute("COMMIT")
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        _LOGGER.info("store schema migrated to version %d", version)
        # A migration that rewrote a table left a WAL as big as the table: fold it into the
        # database and truncate it now, not at the next shutdown.
        await db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
