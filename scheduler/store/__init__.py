"""Durable state: the `Store` interface and its embedded SQLite implementation."""

from scheduler.store.base import (
    KV,
    Compacted,
    Conflict,
    Event,
    NotFound,
    Op,
    Store,
    StoreError,
    StoreUnavailable,
)
from scheduler.store.sqlite import SqliteStore

__all__ = [
    "KV",
    "Compacted",
    "Conflict",
    "Event",
    "NotFound",
    "Op",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailable",
]
