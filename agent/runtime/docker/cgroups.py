"""Cgroups of Docker pods: corral's own pod and container cgroups as Docker's CgroupParent.

With dockerd's cgroupfs driver, a container's cgroup is `<CgroupParent>/<container id>` in
every hierarchy. Giving Docker corral's `pod-<uid>/<container>` (made by the native
runtime's cgroup driver, with the same limits) as parent makes limits, usage and OOM
accounting identical to native pods, and they outlive each Docker container.

OOM kills: cgroup v2 counts them in every ancestor's memory.events, so ours has them. v1
counts a kill only in the victim's own cgroup, Docker's, which is deleted at exit; so on
v1 an eventfd OOM notification on our cgroup (the one whose limit was hit) is watched
while the agent runs, and each notification is recorded on disk for the exit to find.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from agent.runtime.native.cgroups import CgroupDriver, read_mounts

_LOGGER = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"


def docker_parent(driver: CgroupDriver, rel: str) -> str:
    """The CgroupParent (absolute within each hierarchy) for our cgroup `rel`."""
    parent = str(getattr(driver, "parent", "")).strip("/")
    return "/" + "/".join(p for p in (parent, rel) if p)


def memory_dir(driver: CgroupDriver, rel: str) -> str | None:
    """The v1 memory controller directory of our cgroup `rel` (None on v2)."""
    if driver.version != 1:
        return None
    mounts: dict[str, str] = getattr(driver, "mounts", {})
    if "memory" not in mounts:
        return None
    return os.path.join(mounts["memory"], docker_parent(driver, rel).lstrip("/"))


class OomWatch:
    """A v1 eventfd OOM notification on one cgroup; `on_oom()` runs on the event loop."""

    def __init__(self, directory: str, on_oom: Callable[[], None]) -> None:
        self._efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            self._cfd = os.open(
                os.path.join(directory, "memory.oom_control"), os.O_RDONLY | os.O_CLOEXEC
            )
            try:
                with open(os.path.join(directory, "cgroup.event_control"), "w") as control:
                    control.write(f"{self._efd} {self._cfd}")
            except OSError:
                os.close(self._cfd)
                raise
        except OSError:
            os.close(self._efd)
            raise
        self._directory = directory
        self._on_oom = on_oom
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._efd, self._ready)

    def _ready(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            return
        except OSError:
            self.close()  # the cgroup is gone (the kernel signals that too)
            return
        # The kernel also signals when the cgroup is removed: that is no OOM.
        if os.path.isdir(self._directory):
            self._on_oom()

    def close(self) -> None:
        if self._efd >= 0:
            self._loop.remove_reader(self._efd)
            os.close(self._efd)
            os.close(self._cfd)
            self._efd = self._cfd = -1


def remove_everywhere(driver: CgroupDriver, rel: str) -> None:
    """rmdir `rel` (deepest first) in every cgroup hierarchy, not only the driver's: runc
    creates the parent path in each v1 hierarchy it joins (blkio, devices, freezer...).
    Only empty directories are removed; a busy one is left and logged (blocking)."""
    target = docker_parent(driver, rel).lstrip("/")
    for mount in read_mounts():
        if mount.fstype not in ("cgroup", "cgroup2"):
            continue
        if not mount.mount_point.startswith(CGROUP_ROOT):
            continue
        top = Path(mount.mount_point, target)
        if not top.is_dir():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda e: -len(e[0])):
            with contextlib.suppress(FileNotFoundError):
                try:
                    os.rmdir(dirpath)
                except OSError as exc:
                    _LOGGER.warning("cannot remove cgroup %s: %s", dirpath, exc.strerror)
