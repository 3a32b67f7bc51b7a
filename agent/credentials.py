"""The node credential: issued by the scheduler when the agent joins, kept in STATE_DIR (0600).

The agent presents the join token only until it holds a credential; from then
on it presents `STATE_DIR/node-credential`, which binds its link to its node
name. If the scheduler refuses the credential (the node was deleted, or the
scheduler's store was replaced), the agent forgets it and joins again with the
join token, if it still has one (see docs/security.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

FILENAME = "node-credential"


class CredentialStore:
    """Reads, writes (atomically, 0600, fsynced) and forgets the node credential."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / FILENAME

    def load(self) -> str | None:
        try:
            text = self.path.read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def save(self, credential: str) -> None:
        """Write it durably before the agent says it has it (credential_ack)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # an old tmp file may have had another mode
            os.write(fd, (credential + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        _LOGGER.info("stored the node credential in %s", self.path)

    def forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
