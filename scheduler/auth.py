"""API authentication: bearer tokens with a role, stored hashed.

Roles:
- `admin`: everything.
- `viewer`: read-only (GET), and not container logs, which may carry secrets.

A token is `corral_<id>_<secret>`, 32 random bytes of secret; the store keeps
only its SHA-256 under `/tokens/<hash>` (a fast hash is right here: the tokens
are random, not passwords), with its id, role and description. The plain
token is shown once, when it is created. On first start the scheduler creates
an admin token and writes it to `STATE_DIR/admin-token` (mode 0600), as it does
the agents' join token.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from common.models import now
from scheduler.store import Conflict, Store

_LOGGER = logging.getLogger(__name__)

TOKENS = "/tokens/"
Role = Literal["admin", "viewer"]


class TokenRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    role: Role
    description: str = ""
    created: str


def secret_bytes(secret: str) -> bytes:
    """A secret from a request as bytes, whatever it holds: aiohttp decodes header bytes
    that are not UTF-8 to lone surrogates, which a plain `encode()` refuses (a 500)."""
    return secret.encode("utf-8", "surrogatepass")


def token_hash(token: str) -> str:
    return hashlib.sha256(secret_bytes(token)).hexdigest()


def new_token() -> tuple[str, str]:
    """(id, token): the id is public, the token secret."""
    token_id = secrets.token_hex(4)
    return token_id, f"corral_{token_id}_{secrets.token_urlsafe(32)}"


class TokenAuth:
    """Checks bearer tokens against the store; creates and revokes them."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def authenticate(self, header: str | None) -> TokenRecord | None:
        """The token's record, or None when missing, malformed, unknown or revoked."""
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = token_hash(token.strip())
        kv = await self._store.get(TOKENS + digest)
        if kv is None:
            return None
        # The lookup is by hash, so comparing the hashes again in constant time
        # only guards against a future change to the lookup.
        if not hmac.compare_digest(kv.key[len(TOKENS) :], digest):
            return None
        return TokenRecord.model_validate_json(kv.value)

    async def create(
        self, role: Role, description: str = "", token: str | None = None
    ) -> tuple[TokenRecord, str]:
        """A new token (or `token`, when given) with a role; the plain token is returned once."""
        token_id, generated = new_token()
        token = token or generated
        record = TokenRecord(
            id=token_id, role=role, description=description[:200], created=now().isoformat()
        )
        try:
            await self._store.put(
                TOKENS + token_hash(token), record.model_dump_json().encode(), expect=0
            )
        except Conflict:
            raise ValueError("that token already exists") from None
        _LOGGER.info("token %s created (role %s)", token_id, role)
        return record, token

    async def list(self) -> list[TokenRecord]:
        kvs, _ = await self._store.list(TOKENS)
        return sorted(
            (TokenRecord.model_validate_json(kv.value) for kv in kvs), key=lambda r: r.created
        )

    async def revoke(self, token_id: str) -> TokenRecord | None:
        kvs, _ = await self._store.list(TOKENS)
        for kv in kvs:
            record = TokenRecord.model_validate_json(kv.value)
            if record.id == token_id:
                await self._store.delete(kv.key, expect=kv.mod_revision)
                _LOGGER.info("token %s revoked", token_id)
                return record
        return None

    async def bootstrap(self, state_dir: Path, configured: str | None) -> None:
        """Make sure an admin can get in: the configured admin token, or a generated one
        written to STATE_DIR/admin-token the first time."""
        if configured:
            if await self._store.get(TOKENS + token_hash(configured)) is None:
                await self.create("admin", "from the admin_token option", token=configured)
            return
        if any(r.role == "admin" for r in await self.list()):
            return
        _record, token = await self.create("admin", "generated at first start")
        path = state_dir / "admin-token"
        await asyncio.to_thread(_write_secret, path, token)
        _LOGGER.info("generated an admin token in %s", path)


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
