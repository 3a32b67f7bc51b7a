"""One daemon per state directory: an exclusive lock held for the process's lifetime.

Two schedulers on one store would each count revisions from what they loaded and
overwrite each other's writes; two agents on one state directory would both adopt the
same pods and fight over them. As etcd, containerd and Nomad lock their data
directories, each daemon takes `DIR/lock` at start and refuses to run while another
process holds it.

The lock is a POSIX record lock (`lockf`), not `flock`: a child forked from the daemon
(the agent's fork server, monitors and pods, which outlive it) does not inherit it, so
a restarted agent is never locked out by its own pods. The kernel drops it when the
process exits, however it exits (kill -9 included): nothing to clean up.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

_LOGGER = logging.getLogger(__name__)

LOCK_FILE = "lock"
# How long a starting daemon waits for the one before it (stopping: draining, closing
# its store) to let go, before it gives up.
WAIT_SECONDS = 3.0
POLL_SECONDS = 0.05


class StateDirLocked(OSError):
    """Another process holds the state directory's lock."""


class StateLock:
    """The held lock of a state directory; `release` (or the process's exit) lets go."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the record lock
            self._fd = None


def _try_lock(path: Path) -> tuple[int | None, str]:
    """(the locked descriptor, "") or (None, the holder's pid as it wrote it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EAGAIN):  # no locks here (NFS without
            os.close(fd)  # lockd: ENOLCK): say so, not "in use"
            raise OSError(exc.errno, f"cannot lock {path}: {exc.strerror}") from None
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        return None, holder
    except BaseException:
        os.close(fd)
        raise
    # Who holds it, for the next one's message (a reader of a stale pid learns nothing
    # false: the lock, not this file, says whether it is held).
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, ""


async def _cancel_safe(
    try_lock: Callable[[Path], tuple[int | None, str]], path: Path
) -> tuple[int | None, str]:
    """`try_lock(path)` in a thread. Cancelled meanwhile (a SIGTERM while the daemon
    starts), the thread runs on: the lock it may take is let go when it ends, not held
    by a process that went on without it."""
    attempt = asyncio.ensure_future(asyncio.to_thread(try_lock, path))
    try:
        result: tuple[int | None, str] = await asyncio.shield(attempt)
    except asyncio.CancelledError:
        attempt.add_done_callback(_release_unwanted)
        raise
    return result


def _release_unwanted(attempt: asyncio.Future[tuple[int | None, str]]) -> None:
    if not attempt.cancelled() and attempt.exception() is None:
        fd = attempt.result()[0]
        if fd is not None:
            os.close(fd)


async def lock_state_dir(
    directory: str | Path, daemon: str, *, wait: float = WAIT_SECONDS
) -> StateLock:
    """Hold `directory`'s lock for this process, waiting up to `wait` seconds for the
    process holding it to exit; `StateDirLocked`, naming it, if it does not."""
    path = Path(directory) / LOCK_FILE
    deadline = time.monotonic() + wait
    logged = False
    while True:
        fd, holder = await _cancel_safe(_try_lock, path)
        if fd is not None:
            return StateLock(path, fd)
        who = f"process {holder}" if holder.isdigit() else "another process"
        if time.monotonic() >= deadline:
            raise StateDirLocked(
                f"state directory {directory} is in use by {who} (another {daemon}?): "
                f"only one {daemon} may use a state directory; stop it, or give this one "
                "another state_dir"
            )
        if not logged:
            _LOGGER.warning("state directory %s is locked by %s; waiting for it", directory, who)
            logged = True
        await asyncio.sleep(POLL_SECONDS)
