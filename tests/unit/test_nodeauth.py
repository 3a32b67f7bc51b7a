"""Node credentials in a real store: issue, pending versus confirmed, revoke, hashed at rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.nodeauth import PREFIX, AlreadyJoined, NodeCredentials
from scheduler.store import SqliteStore


async def test_lifecycle(tmp_path: Path) -> None:
    """A pending credential may be replaced by a new join; a confirmed one may not;
    a revoked one authenticates no more; the store holds only a hash."""
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        creds = NodeCredentials(store)
        first = await creds.issue("n1")
        assert (await creds.authenticate(first.credential)) == first.record
        second = await creds.issue("n1")  # first was never confirmed: replaced
        assert await creds.authenticate(first.credential) is None
        assert not await creds.confirm("n1", first.record.id)  # stale id
        assert await creds.confirm("n1", second.record.id)
        assert await creds.confirm("n1", second.record.id)  # idempotent
        with pytest.raises(AlreadyJoined):
            await creds.issue("n1")
        forged = second.credential.replace("corralnode_n1_", "corralnode_n2_")
        assert await creds.authenticate(forged) is None
        assert await creds.authenticate(second.credential[:-1] + "x") is None
        kv = await store.get(PREFIX + "n1")
        assert kv is not None and second.credential.encode() not in kv.value
        assert await creds.revoke("n1")
        assert not await creds.revoke("n1")
        assert await creds.authenticate(second.credential) is None
        await creds.issue("n1")  # a deleted node may join again
    finally:
        await store.close()
