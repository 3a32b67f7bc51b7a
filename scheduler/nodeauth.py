"""Node credentials: each agent gets its own secret, bound to its node name, stored hashed.

The join token lets a machine *join*; after that it speaks only with its node
credential, so one node cannot act as another:

    agent --(join token)--> hello {node: N} --> no confirmed credential for N?
                                                  issue one (pending), send it in the welcome
    agent stores it (0600) --> credential_ack --> confirmed: from now on the join token
                                                  can no longer connect as N
    agent --(node credential of N)--> hello must say N; reports only N's pods

A credential is `corralnode_<node>_<secret>` (node names never contain `_`);
the store keeps `/nodecredentials/<node>` -> its SHA-256, its id and whether it
is confirmed. A *pending* credential (issued, never acknowledged or used) does
not lock the name: the welcome that carried it may have been lost, and the
agent would otherwise be locked out by a message it never saw. Deleting the
node (`DELETE /api/v1/nodes/N`) deletes its credential: the agent is refused,
and may join again with the join token like a new machine.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from common.models import now
from scheduler.auth import secret_bytes
from scheduler.store import Conflict, NotFound, Store

_LOGGER = logging.getLogger(__name__)

PREFIX = "/nodecredentials/"
SCHEME = "corralnode_"


class AlreadyJoined(Exception):
    """The node holds a confirmed credential (or another link is joining it right now)."""


class CredentialRecord(BaseModel):
    """What the store keeps of a node's credential (never the credential itself)."""

    model_config = ConfigDict(extra="forbid")
    node: str
    id: str
    sha256: str
    created: str
    confirmed: bool = False


@dataclass(frozen=True, slots=True)
class Issued:
    record: CredentialRecord
    credential: str  # the plain secret, sent once in the welcome


def _digest(credential: str) -> str:
    return hashlib.sha256(secret_bytes(credential)).hexdigest()


def node_of(credential: str) -> str | None:
    """The node a credential claims to belong to, or None if it is not a node credential."""
    if not credential.startswith(SCHEME):
        return None
    node, sep, secret = credential[len(SCHEME) :].partition("_")
    return node if sep and node and secret else None


class NodeCredentials:
    """Issues, checks, confirms and revokes node credentials in the store."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def get(self, node: str) -> CredentialRecord | None:
        kv = await self._store.get(PREFIX + node)
        return None if kv is None else CredentialRecord.model_validate_json(kv.value)

    async def authenticate(self, credential: str) -> CredentialRecord | None:
        """The record of a valid credential; None when unknown, revoked or malformed."""
        node = node_of(credential)
        if node is None:
            return None
        record = await self.get(node)
        if record is None or not hmac.compare_digest(record.sha256, _digest(credential)):
            return None
        return record

    async def issue(self, node: str) -> Issued:
        """A new credential for `node`, replacing a pending one.

        Raises `AlreadyJoined` if the node holds a confirmed credential (or another link
        issued one meanwhile): a join token cannot take over a node that has joined.
        """
        kv = await self._store.get(PREFIX + node)
        if kv is not None and CredentialRecord.model_validate_json(kv.value).confirmed:
            raise AlreadyJoined(node)
        credential = f"{SCHEME}{node}_{secrets.token_urlsafe(32)}"
        record = CredentialRecord(
            node=node,
            id=secrets.token_hex(4),
            sha256=_digest(credential),
            created=now().isoformat(),
        )
        try:
            await self._store.put(
                PREFIX + node,
                record.model_dump_json().encode(),
                expect=kv.mod_revision if kv else 0,
            )
        except Conflict:
            raise AlreadyJoined(node) from None
        _LOGGER.info("issued credential %s to node %s", record.id, node)
        return Issued(record, credential)

    async def confirm(self, node: str, credential_id: str) -> bool:
        """Mark the credential confirmed (the agent stored or used it); idempotent."""
        for _attempt in range(3):
            kv = await self._store.get(PREFIX + node)
            if kv is None:
                return False
            record = CredentialRecord.model_validate_json(kv.value)
            if record.id != credential_id:
                return False  # replaced meanwhile: the agent holds a stale one
            if record.confirmed:
                return True
            record.confirmed = True
            try:
                await self._store.put(
                    kv.key, record.model_dump_json().encode(), expect=kv.mod_revision
                )
            except (Conflict, NotFound):
                continue
            _LOGGER.info("node %s confirmed credential %s", node, credential_id)
            return True
        return False

    async def revoke(self, node: str) -> bool:
        """Delete the node's credential; True if there was one."""
        for _attempt in range(3):
            kv = await self._store.get(PREFIX + node)
            if kv is None:
                return False
            try:
                await self._store.delete(kv.key, expect=kv.mod_revision)
            except (Conflict, NotFound):
                continue
            _LOGGER.info("revoked the credential of node %s", node)
            return True
        return False
