"""One daemon per state directory (common/statelock.py), with real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.statelock import StateDirLocked, lock_state_dir
from tests.conftest import ROOT

# A process that holds the lock of the directory argv[1] until it gets SIGTERM (or, with
# argv[2], for that many seconds), and says so on stdout.
HOLDER = """
import asyncio, signal, sys, time
from common.statelock import lock_state_dir
lock = asyncio.run(lock_state_dir(sys.argv[1], "test-daemon", wait=10))
print("locked", flush=True)
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
else:
    signal.sigwait({signal.SIGTERM})
"""


def _hold(directory: Path, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), *args],
        cwd=ROOT,
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


def test_a_starting_daemon_waits_for_the_one_stopping(tmp_path: Path) -> None:
    proc = _hold(tmp_path, "0.5")  # lets go half a second from now
    try:
        with pytest.raises(StateDirLocked):
            asyncio.run(lock_state_dir(tmp_path, "corral-scheduler", wait=0))
        asyncio.run(lock_state_dir(tmp_path, "corral-scheduler", wait=10)).release()
        assert proc.wait(timeout=5) == 0  # it held the lock to its end
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
