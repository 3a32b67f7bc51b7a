"""Whether a recorded process still runs: told, or an error, never guessed."""

from __future__ import annotations

import errno
import os

import pytest

from agent.runtime.native import runtime as native
from agent.runtime.native.monitor import proc_start_time


def test_a_running_process_and_a_gone_one() -> None:
    me = {"pid": os.getpid(), "start": proc_start_time(os.getpid())}
    fd = native._pidfd(me)
    assert fd is not None
    os.close(fd)
    assert native._pidfd({"pid": os.getpid(), "start": -1}) is None  # the pid reused
    assert native._pidfd({"pid": 2**22 + 1, "start": 0}) is None  # past pid_max: no such


def test_out_of_descriptors_is_an_error_not_a_dead_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """EMFILE read as "not running": a healthy container's monitor was taken for lost
    (at an agent's start, `_container_info` then killed the container's cgroup)."""

    def exhausted(pid: int, flags: int = 0) -> int:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(native.os, "pidfd_open", exhausted)
    with pytest.raises(OSError) as caught:
        native._pidfd({"pid": os.getpid(), "start": proc_start_time(os.getpid())})
    assert caught.value.errno == errno.EMFILE
