"""Housekeeping at agent start: what a pod leaves when the agent dies at the wrong moment.

A pod's log directory (`<log_dir>/<uid>`), its supervisor record
(`<state>/supervisor/<uid>.json`) and its cgroup (`pod-<uid>` below the agent's parent,
in every hierarchy) are made and removed apart from the record that makes the pod
known to its runtime (its pod directory). A kill -9 of the agent between the two (a
cgroup made before the pod's directory; the directory removed before the log
directory, or before the supervisor record is unlinked) leaves them behind for good:
no runtime knows the pod, so nothing removes them.

So once the runtimes have recovered their pods, and before the agent hears of any new
one (the scheduler link starts after it), the agent removes those belonging to no pod
that any runtime knows (the native and Docker runtimes share the log directory and
the cgroup naming, so both are asked), as the kubelet's housekeeping removes orphaned
pod directories and pod cgroups. A cgroup is removed only when empty: one that holds a
process is left, and reported (a warning), never killed: what runs there is not known
to be corral's to kill.

Only what is named as corral names a pod's is removed: a log directory named by a pod
uid (a UUID, as the scheduler makes every uid). `log_dir` is the admin's to choose, and
may hold what is not corral's (`/var/log`, say): a sweep of every directory no pod
knows deleted all of that at the agent's start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from agent.runtime.docker.cgroups import CGROUP_ROOT, docker_parent
from agent.runtime.native.cgroups import CgroupDriver, read_mounts
from agent.runtime.native.rootfs import remove_tree

_LOGGER = logging.getLogger(__name__)

POD_CGROUP_PREFIX = "pod-"  # the runtimes' `pod_cgroup(uid)`
RECORD_SUFFIXES = (".json", ".tmp")  # a supervisor record, and one being written


@dataclass(slots=True)
class Swept:
    """What one sweep found of pods no runtime knows."""

    log_dirs: list[Path] = field(default_factory=list)  # removed
    records: list[Path] = field(default_factory=list)  # removed
    cgroups: list[str] = field(default_factory=list)  # removed (directories)
    busy_cgroups: list[str] = field(default_factory=list)  # left: processes in them

    def __bool__(self) -> bool:
        return bool(self.log_dirs or self.records or self.cgroups or self.busy_cgroups)


def sweep(known: set[str], log_dir: Path, records_dir: Path, cgroups: CgroupDriver) -> Swept:
    """Remove the log directories, supervisor records and empty pod cgroups of every pod
    whose uid is not in `known` (blocking)."""
    swept = Swept()
    for path in _entries(log_dir):
        name = path.name
        if _is_uid(name) and name not in known and path.is_dir() and not path.is_symlink():
            remove_tree(path)
            swept.log_dirs.append(path)
    for path in _entries(records_dir):
        uid, suffix = os.path.splitext(path.name)
        if suffix in RECORD_SUFFIXES and uid not in known and path.is_file():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            swept.records.append(path)
    # One pod's cgroup is a directory in each hierarchy: all of them go, or none.
    orphans: dict[str, list[Path]] = {}
    for top in _cgroup_parents(cgroups):
        for path in _entries(top):
            name = path.name
            if not name.startswith(POD_CGROUP_PREFIX) or not path.is_dir():
                continue
            if name.removeprefix(POD_CGROUP_PREFIX) not in known:
                orphans.setdefault(name, []).append(path)
    for paths in orphans.values():
        if _remove_cgroup(paths):
            swept.cgroups.extend(str(p) for p in paths)
        else:
            swept.busy_cgroups.extend(str(p) for p in paths)
    return swept


def log_swept(swept: Swept) -> None:
    for path in swept.busy_cgroups:
        _LOGGER.warning(
            "housekeeping: cgroup %s belongs to no pod this agent knows, but processes "
            "run in it; left as it is (kill them, then rmdir it)",
            path,
        )
    removed = [str(p) for p in (*swept.log_dirs, *swept.records)] + swept.cgroups
    if removed:
        _LOGGER.info(
            "housekeeping: removed what pods no runtime knows left behind: %s",
            ", ".join(removed),
        )


def _is_uid(name: str) -> bool:
    """Whether `name` is a pod uid, as the scheduler makes them (`str(uuid.uuid4())`)."""
    try:
        return str(uuid.UUID(name)) == name
    except ValueError:
        return False


def _entries(directory: Path) -> list[Path]:
    try:
        return sorted(directory.iterdir())
    except FileNotFoundError:
        return []


def _cgroup_parents(cgroups: CgroupDriver) -> list[Path]:
    """The agent's parent cgroup in every hierarchy: the driver's, and every other one
    mounted (dockerd's runc makes a pod's cgroup in each v1 hierarchy it joins, blkio or
    devices too, as docker/cgroups.py's remove_everywhere knows)."""
    tops = {Path(p) for p in cgroups.paths("")}
    target = docker_parent(cgroups, "").lstrip("/")
    for mount in read_mounts():
        if mount.fstype in ("cgroup", "cgroup2") and mount.mount_point.startswith(CGROUP_ROOT):
            tops.add(Path(mount.mount_point, target))
    return sorted(tops)


def _remove_cgroup(tops: list[Path]) -> bool:
    """rmdir a pod's cgroup (its directory in each hierarchy) and those below it, deepest
    first, if no process is in any of them; False if one is (the kernel refuses to
    remove a cgroup with processes, so one that enters after the look is refused too)."""
    tree = list(tops)
    for top in tops:
        for dirpath, dirnames, _ in os.walk(top):
            tree.extend(Path(dirpath, name) for name in dirnames)
    for path in tree:
        with contextlib.suppress(FileNotFoundError):
            if (path / "cgroup.procs").read_text().split():
                return False
    for path in sorted(tree, key=lambda p: -len(p.parts)):
        try:
            os.rmdir(path)
        except FileNotFoundError:
            continue
        except OSError as exc:
            _LOGGER.debug("housekeeping: cannot remove cgroup %s: %s", path, exc.strerror)
            return False
    return True
