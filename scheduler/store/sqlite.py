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
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
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
]


@dataclass(slots=True)
class _Pending:
    events: list[Event]
    future: asyncio.Future[list[KV]]


class _SqliteWatch:
    def __init__(self, store: SqliteStore, prefix: str, max_backlog: int) -> None:
        self._store, self.prefix, self._max = store, prefix, max_backlog
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._error: StoreError | None = None
        self._closed = False

    def push(self, event: Event) -> None:
        if len(self._queue) >= self._max:
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
                    raise self._error
                if self._closed:
                    return
                self._wake.clear()
                await self._wake.wait()
        finally:
            self.close()


class SqliteStore:
    """`Store` on SQLite. Open with `await SqliteStore.open(path)`."""

    def __init__(self, db: aiosqlite.Connection, path: str, history: int) -> None:
        self._db = db
        self.path = path
        self._committed: dict[str, KV] = {}
        self._latest: dict[str, KV | None] = {}  # writes queued but not yet durable
        self._revision = 0
        self._next_revision = 0
        self._queue: list[_Pending] = []
        self._wake = asyncio.Event()
        self._history: deque[Event] = deque(maxlen=history)
        self._watchers: set[_SqliteWatch] = set()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self.commits = 0  # transactions written, for metrics and benchmarks
        self.writes = 0

    @classmethod
    async def open(cls, path: str | Path, *, history: int = 100_000) -> SqliteStore:
        path = str(path)
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an acknowledged write
            # survives power loss, not only a crash of this process.
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=5000")
            await _migrate(db)
            store = cls(db, path, history)
            await store._load()
        except BaseException:
            await db.close()
            raise
        store._writer = asyncio.create_task(store._write_loop(), name="store-writer")
        return store

    async def _load(self) -> None:
        async with self._db.execute("SELECT value FROM meta WHERE name = 'revision'") as cur:
            row = await cur.fetchone()
        self._revision = self._next_revision = int(row[0]) if row else 0
        async with self._db.execute(
            "SELECT key, value, create_revision, mod_revision FROM kv"
        ) as cur:
            async for key, value, create_rev, mod_rev in cur:
                self._committed[key] = KV(key, bytes(value), create_rev, mod_rev)
        _LOGGER.info(
            "store %s opened at revision %d with %d keys", self.path, self._revision, len(self._committed)
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

    def list_now(self, prefix: str) -> list[KV]:
        """Synchronous listing of committed keys (in-process readers only)."""
        return [kv for key, kv in self._committed.items() if key.startswith(prefix)]

    async def put(self, key: str, value: bytes, *, obj: Any = None, expect: int | None = None) -> KV:
        return (await self.txn([Op("put", key, value, obj, expect)]))[0]

    async def delete(self, key: str, *, expect: int | None = None) -> KV:
        return (await self.txn([Op("delete", key, expect=expect)]))[0]

    def _current(self, key: str) -> KV | None:
        if key in self._latest:
            return self._latest[key]
        return self._committed.get(key)

    def txn(self, ops: list[Op]) -> asyncio.Future[list[KV]]:  # type: ignore[override]
        """Check every guard now, then queue the writes; the future resolves once durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[KV]] = loop.create_future()
        if self._closing:
            future.set_exception(StoreUnavailable("store is closing"))
            return future
        staged: dict[str, KV | None] = {}
        for op in ops:
            current = staged[op.key] if op.key in staged else self._current(op.key)
            if op.expect is not None:
                have = current.mod_revision if current else 0
                if have != op.expect:
                    future.set_exception(Conflict(op.key, op.expect, current))
                    return future
            if op.kind == "delete" and current is None:
                future.set_exception(NotFound(op.key))
                return future
            staged[op.key] = current if op.kind == "put" else None
        self._next_revision += 1
        revision = self._next_revision
        events: list[Event] = []
        for op in ops:
            prev = self._current(op.key)  # includes this transaction's earlier ops
            if op.kind == "put":
                kv = KV(op.key, op.value, prev.create_revision if prev else revision, revision, op.obj)
                events.append(Event("PUT", kv, prev, revision))
                self._latest[op.key] = kv
            else:
                assert prev is not None
                kv = KV(op.key, prev.value, prev.create_revision, revision, prev.obj)
                events.append(Event("DELETE", kv, prev, revision))
                self._latest[op.key] = None
        self._queue.append(_Pending(events, future))
        self._wake.set()
        return future

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._queue:
                if self._closing:
                    return
                continue
            batch, self._queue = self._queue, []
            try:
                await self._commit(batch)
            except Exception as exc:  # disk full, I/O error: fail loudly, keep nothing half-done
                _LOGGER.exception("store commit failed; %d writes not acknowledged", len(batch))
                with contextlib.suppress(Exception):
                    await self._db.execute("ROLLBACK")
                failed = batch + self._queue
                self._queue = []
                self._latest.clear()
                self._next_revision = self._revision
                for pending in failed:
                    if not pending.future.done():
                        pending.future.set_exception(StoreUnavailable(f"write not durable: {exc}"))
                continue
            self._publish(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        upserts: list[tuple[str, bytes, int, int]] = []
        deletes: list[tuple[str]] = []
        for pending in batch:
            for ev in pending.events:
                if ev.type == "PUT":
                    upserts.append((ev.kv.key, ev.kv.value, ev.kv.create_revision, ev.kv.mod_revision))
                else:
                    deletes.append((ev.kv.key,))
        last_revision = batch[-1].events[0].revision
        await self._db.execute("BEGIN IMMEDIATE")
        if upserts:
            await self._db.executemany(
                "INSERT INTO kv (key, value, create_revision, mod_revision) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value,"
                " mod_revision = excluded.mod_revision",
                upserts,
            )
        if deletes:
            await self._db.executemany("DELETE FROM kv WHERE key = ?", deletes)
        await self._db.execute("UPDATE meta SET value = ? WHERE name = 'revision'", (last_revision,))
        await self._db.execute("COMMIT")
        self.commits += 1
        self.writes += len(batch)

    def _publish(self, batch: list[_Pending]) -> None:
        for pending in batch:
            for ev in pending.events:
                if ev.type == "PUT":
                    self._committed[ev.kv.key] = ev.kv
                else:
                    self._committed.pop(ev.kv.key, None)
                # Drop the overlay entry unless a later queued write replaced it.
                latest = self._latest.get(ev.kv.key, ...)
                if latest is ev.kv or (ev.type == "DELETE" and latest is None):
                    del self._latest[ev.kv.key]
                self._history.append(ev)
                for watcher in list(self._watchers):
                    if ev.kv.key.startswith(watcher.prefix):
                        watcher.push(ev)
            self._revision = pending.events[0].revision
            if not pending.future.done():
                pending.future.set_result([ev.kv for ev in pending.events])

    def watch(self, prefix: str, start_revision: int, *, max_backlog: int = 100_000) -> _SqliteWatch:
        """Events under `prefix` after `start_revision` (history first, then live)."""
        watcher = _SqliteWatch(self, prefix, max_backlog)
        if start_revision < self._revision:
            oldest = self._history[0].revision if self._history else self._revision + 1
            if start_revision + 1 < oldest:
                raise Compacted(
                    f"revision {start_revision} is older than the oldest kept ({oldest - 1})"
                )
            for ev in self._history:
                if ev.revision > start_revision and ev.kv.key.startswith(prefix):
                    watcher.push(ev)
        self._watchers.add(watcher)
        return watcher

    async def close(self) -> None:
        """Write what is queued, stop the writer, close the database."""
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for watcher in list(self._watchers):
            watcher.close()
        await self._db.close()


async def _migrate(db: aiosqlite.Connection) -> None:
    await db.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
        " applied_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)"
    )
    async with db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations") as cur:
        row = await cur.fetchone()
    current = int(row[0]) if row else 0
    known = MIGRATIONS[-1][0]
    if current > known:
        raise StoreError(f"database schema version {current} is newer than this corral ({known})")
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
