"""One daemon per state directory (common/statelock.py), with real processes."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.statelock import StateDirLocked, lock_state_dir
from tests.conftest import ROOT

# A process that holds the lock of the directory argv[1], says so on stdout, and exits
# at the first line on its stdin (or when killed).
HOLDER = """
import asyncio, sys
from common.statelock import lock_state_dir
lock = asyncio.run(lock_state_dir(sys.argv[1], "test-daemon", wait=10))
print("locked", flush=True)
sys.stdin.readline()
"""


def _hold(directory: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    proc = _hold(tmp_path)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_a_held_directory_is_refused_naming_its_holder(
    tmp_path: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(StateDirLocked) as caught:
        asyncio.run(lock_state_dir(tmp_path, "corral-agent", wait=0.2))
    message = str(caught.value)
    assert f"state directory {tmp_path} is in use by process {holder.pid}" in message
    assert "another corral-agent?" in message
    holder.kill()
    holder.wait()
    # Dropped by the kernel with the process, however it ended: no stale lock.
    asyncio.run(lock_state_dir(tmp_path, "corral-agent", wait=0)).release()


class _Said(logging.Handler):
    """Sets `event` at the first record logged (on the event loop's thread)."""

    def __init__(self, event: asyncio.Event) -> None:
        super().__init__(logging.WARNING)
        self.event = event
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.event.set()


def test_a_starting_daemon_waits_for_the_one_stopping(tmp_path: Path) -> None:
    proc = _hold(tmp_path)
    logger = logging.getLogger("common.statelock")

    async def start_while_the_other_stops() -> list[str]:
        said = _Said(asyncio.Event())
        logger.addHandler(said)
        try:
            starting = asyncio.create_task(lock_state_dir(tmp_path, "corral-scheduler", wait=30))
            # Once it has found the lock held and waits, the other one stops.
            async with asyncio.timeout(10):
                await said.event.wait()
            assert proc.stdin is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            (await starting).release()
        finally:
            logger.removeHandler(said)
        return said.messages

    try:
        messages = asyncio.run(start_while_the_other_stops())
        assert proc.wait(timeout=5) == 0  # it held the lock until it stopped
        assert messages == [
            f"state directory {tmp_path} is locked by process {proc.pid}; waiting for it"
        ]
    finally:
        proc.kill()
        proc.wait()


def test_a_forked_child_does_not_keep_the_lock(tmp_path: Path) -> None:
    """The agent's fork server, monitors and pods are forked from it and outlive it: had
    they inherited the lock (as with flock), a restarted agent would be locked out by
    its own pods."""
    lock = asyncio.run(lock_state_dir(tmp_path, "corral-agent", wait=0))
    child = os.fork()
    if child == 0:  # pragma: no cover (the child sleeps until killed)
        signal.pause()
        os._exit(0)
    try:
        lock.release()
        proc = _hold(tmp_path)  # another process takes it while the child lives
        proc.kill()
        proc.wait()
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)


def test_a_lock_taken_after_its_wait_was_cancelled_is_let_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SIGTERM while a daemon starts cancels its wait for the lock; the thread taking it
    runs on. The lock it took then was kept by the process, which went on without it."""
    import common.statelock as statelock

    go, taken = threading.Event(), threading.Event()
    real = statelock._try_lock

    def slow(path: Path) -> tuple[int | None, str]:
        go.wait(10)  # until the wait for it has been cancelled
        try:
            return real(path)
        finally:
            taken.set()

    monkeypatch.setattr(statelock, "_try_lock", slow)
    probe = "import fcntl, sys; fcntl.lockf(open(sys.argv[1], 'a'), fcntl.LOCK_EX | fcntl.LOCK_NB)"

    def free() -> bool:  # another process can take it
        args = [sys.executable, "-c", probe, str(tmp_path / statelock.LOCK_FILE)]
        return subprocess.run(args, capture_output=True).returncode == 0

    async def cancel_the_wait() -> bool:
        waiting = asyncio.create_task(lock_state_dir(tmp_path, "test-daemon"))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        go.set()
        await asyncio.to_thread(taken.wait, 10)
        for _ in range(50):  # the thread's result reaches the loop, which lets go of it
            await asyncio.sleep(0.02)
            if await asyncio.to_thread(free):
                return True
        return False

    assert asyncio.run(cancel_the_wait())
