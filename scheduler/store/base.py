"""The store interface: a revisioned key-value store, kept to what etcd also offers.

get, list by prefix, put and delete guarded by a key's mod revision, atomic
transactions of such operations, and watch from a revision. Every write gets
the next value of one global, monotonic revision, as in etcd.

Values are bytes (JSON of the stored object). A `KV` may also carry the decoded
object (`obj`) so that readers in the same process need not decode it again;
such objects are shared and must be treated as immutable.
"""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol


class StoreError(Exception):
    """Base of store errors."""


class Conflict(StoreError):
    """A guarded write found the key at another revision (or present/absent unexpectedly)."""

    def __init__(self, key: str, expected: int, current: KV | None) -> None:
        self.key, self.expected, self.current = key, expected, current
        have = current.mod_revision if current else "absent"
        super().__init__(f"{key}: expected revision {expected or 'absent'}, found {have}")


class NotFound(StoreError):
    """A delete of a key that does not exist."""


class Compacted(StoreError):
    """A watch asked for a revision older than the history kept."""


class StoreUnavailable(StoreError):
    """The write could not be made durable (disk error); nothing was acknowledged."""


@dataclass(slots=True)
class KV:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    obj: Any = field(default=None, compare=False)


# Op and Event are not `frozen`: a frozen dataclass sets each field through
# object.__setattr__, which made making one three times slower (1.1 against 0.4 us),
# and every write makes one of each. Both are still never changed once made.


@dataclass(slots=True)
class Op:
    """One operation of a transaction. `expect`: None = unguarded, 0 = must not exist,
    n = the key's mod revision must be n."""

    kind: Literal["put", "delete"]
    key: str
    value: bytes = b""
    obj: Any = None
    expect: int | None = None


@dataclass(slots=True)
class Event:
    type: Literal["PUT", "DELETE"]
    kv: KV  # for DELETE: the last value, with mod_revision = the revision of the delete
    prev: KV | None
    revision: int


class Watch(Protocol):
    """An ordered stream of events under a prefix; `Compacted` if the consumer fell behind."""

    def __aiter__(self) -> AsyncIterator[Event]: ...

    def close(self) -> None: ...


class Store(Protocol):
    """What the scheduler needs of durable state.

    Every write returns only once it is durable. Implementations: `SqliteStore`
    (embedded, default). The interface is what etcd offers, so an etcd-backed
    store with leader election can be added without touching callers.
    """

    @property
    def revision(self) -> int:
        """The revision of the latest durable write."""
        ...

    async def get(self, key: str) -> KV | None: ...

    def latest(self, key: str) -> KV | None:
        """The newest value, counting writes accepted but not yet durable (an
        implementation without such a queue returns what `get` would)."""
        ...

    async def settled(self, key: str) -> KV | None:
        """The key's durable value once every write to it accepted so far is durable (or
        has failed): what a read-modify-write that lost to a queued write reads before it
        tries again, instead of the same committed value (an implementation without such
        a queue returns what `get` would)."""
        ...

    async def list(self, prefix: str) -> tuple[list[KV], int]:
        """Every key under the prefix, sorted, with the revision the listing reflects."""
        ...

    async def put(
        self, key: str, value: bytes, *, obj: Any = None, expect: int | None = None
    ) -> KV: ...

    async def delete(self, key: str, *, expect: int | None = None) -> KV: ...

    def txn(self, ops: builtins.list[Op]) -> Awaitable[builtins.list[KV]]:
        """Apply every op or none; raises `Conflict` naming the first failed guard.

        Declared as returning an awaitable (`await store.txn(ops)`), so that an
        implementation may check guards and queue the write synchronously, fixing
        its order at the call, as `SqliteStore` does; an `async def` fits too.
        """
        ...

    def watch(self, prefix: str, start_revision: int) -> Watch:
        """Events under the prefix with revision > start_revision."""
        ...

    async def close(self) -> None: ...
