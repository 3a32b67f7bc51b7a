"""Cgroup drivers for the native runtime: v1 and v2 behind one interface, chosen by probing.

Each pod gets one cgroup below the agent's *parent* ("corral" by default, relative to
each hierarchy root) and each container a child of it: ``pod-<uid>/<container>``.
The agent asks `probe()` once at start for the driver that fits the machine:

- `V2Driver` (the unified hierarchy, cgroup2): one directory tree. Limits go to
  ``cpu.max``, ``cpu.weight``, ``memory.max``, ``memory.swap.max`` and ``pids.max``;
  a controller is usable in a cgroup only once every ancestor lists it in
  ``cgroup.subtree_control``, so `create()` enables cpu, memory and pids on the way
  down. Killing uses ``cgroup.kill`` (Linux 5.14+), else freeze, SIGKILL, thaw.
- `V1Driver` (legacy hierarchies): one tree per controller, so every cgroup is a set
  of same-named directories (cpu, cpuacct, memory, pids and, if mounted, freezer;
  cpu and cpuacct may be co-mounted as one). Limits go to ``cpu.cfs_quota_us``,
  ``cpu.shares``, ``memory.limit_in_bytes`` (+ ``memory.memsw.limit_in_bytes``),
  ``pids.max``. Like systemd's *hybrid* mode, the driver ALSO uses a controller-less
  cgroup2 hierarchy when one is mounted (``/sys/fs/cgroup/unified``) for process
  tracking (``cgroup.events``) and for ``cgroup.kill``; without it, killing falls back
  to the v1 freezer: freeze, SIGKILL every pid, thaw, until empty.

Where the pods live: by default ``/sys/fs/cgroup[/<controller>]/corral/...``. When the
agent runs as a systemd unit with ``Delegate=yes`` it must stay inside the subtree
systemd handed it: pass ``parent=f"{own_cgroup()}/pods"`` on cgroup2 (and
``own_cgroup("memory")`` or any other of its controllers on v1, where systemd puts a
delegated unit at the same path in every hierarchy). On cgroup2 the agent must first
move itself into a leaf such as ``f"{own}/agent"``, because a cgroup that holds
processes cannot enable controllers for its children (the no-internal-processes rule).

Every method is blocking file I/O on cgroupfs (cheap, but `kill()` waits for processes
to die); the agent calls the mutating ones through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import select
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

_LOGGER = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
MIN_CFS_QUOTA_US = 1_000  # the kernel refuses quotas below 1 ms
MIN_SHARES, MAX_SHARES, DEFAULT_SHARES = 2, 262_144, 1024
DEFAULT_WEIGHT = 100
V2_CONTROLLERS = ("cpu", "memory", "pids")
V1_REQUIRED = ("cpu", "cpuacct", "memory", "pids")  # cpuacct: cpu.stat has no usage on v1
V1_OPTIONAL = ("freezer",)  # for killing without cgroup.kill
_POLL = 0.005  # seconds between looks while waiting for processes to die or freeze


class CgroupError(Exception):
    """A cgroup operation failed; the message names the file or controller and why."""


@dataclass(frozen=True)
class Limits:
    cpu_limit_millis: int | None = None  # CFS quota: v1 cpu.cfs_quota_us, v2 cpu.max
    cpu_request_millis: int | None = None  # v1 cpu.shares, v2 cpu.weight
    memory_limit_bytes: int | None = None  # v1 memory(.memsw).limit_in_bytes, v2 memory.max
    pids_limit: int | None = None  # pids.max


@dataclass(frozen=True)
class CgroupStats:
    cpu_usage_ns: int  # cumulative, this cgroup and its descendants
    memory_bytes: int  # current usage including page cache; 0 without a memory controller
    pids: int
    oom_kills: int  # processes of this cgroup (and descendants) killed by the OOM killer


class CgroupDriver(Protocol):
    """What the native runtime needs from cgroups, whatever the version.

    `path` arguments are relative to `parent` ("" is the parent itself). Methods raise
    CgroupError on failure. create/remove/kill are idempotent so a reconciliation pass
    may repeat them.
    """

    version: int  # 1 or 2
    parent: str  # the agent's subtree, relative to each hierarchy root

    def create(self, path: str, limits: Limits | None = None) -> None:
        """Create the cgroup (and missing ancestors) in every hierarchy; apply `limits`."""
        ...

    def make(self, path: str) -> bool:
        """`create` without limits: the directories (and on cgroup2 the controllers they
        need), the part that takes the kernel's cgroup_mutex; True if all of it is new."""
        ...

    def set_limits(self, path: str, limits: Limits, *, fresh: bool = False) -> None:
        """Apply all four limits; a None field resets that limit to the kernel default.
        `fresh`: `make` has just made the cgroup, so the defaults need no writing."""
        ...

    def add_process(self, path: str, pid: int) -> None:
        """Move `pid` (0: the calling process) into the cgroup in every hierarchy."""
        ...

    def prime_attach(self) -> None:
        """Make the next moves into cgroups fast for a while (best effort, never raises)."""
        ...

    def own_procs_file(self) -> str:
        """The `cgroup.procs` file of the calling process's own cgroup (what prime_attach
        writes to); raises CgroupError or OSError if it cannot be found."""
        ...

    def procs(self, path: str) -> list[int]:
        """Every pid in the cgroup and its descendants, sorted."""
        ...

    def kill(self, path: str, timeout: float = 5.0) -> None:
        """SIGKILL everything in the cgroup's subtree; return once it is empty."""
        ...

    def remove(self, path: str) -> None:
        """Remove the cgroup and its descendants everywhere; fail if processes remain."""
        ...

    def exists(self, path: str) -> bool:
        """True if the cgroup exists in any hierarchy (even half-created)."""
        ...

    def remove_parent_if_empty(self) -> bool:
        """Remove the parent's own directory in every hierarchy if no cgroup is left below
        it in any (no pod's): True if it is gone. Never raises."""
        ...

    def stats(self, path: str) -> CgroupStats: ...

    def oom_kills(self, path: str) -> int: ...

    def oom_files(self, path: str) -> list[str]:
        """The files that count this cgroup's own OOM kills (for a monitor to read)."""
        ...

    def paths(self, path: str) -> list[str]:
        """The cgroup's absolute directories, one per hierarchy, existing or not."""
        ...

    def child_paths(self, path: str = "") -> list[str]:
        """Relative paths of the existing children of `path` (default: of the parent)."""
        ...


# --- limit arithmetic (the Kubernetes formulas, so the same pod gets the same share) ---


def cfs_quota_us(millis: int) -> int:
    """CFS quota for `millis` of CPU per 100 ms period (500m -> 50000)."""
    return max(MIN_CFS_QUOTA_US, millis * CFS_PERIOD_US // 1000)


def cpu_shares(millis: int) -> int:
    """v1 cpu.shares for a CPU request, as the kubelet computes it."""
    return min(MAX_SHARES, max(MIN_SHARES, millis * 1024 // 1000))


def cpu_weight(shares: int) -> int:
    """v2 cpu.weight for v1 shares: the kubelet's linear map of [2, 262144] onto [1, 10000]."""
    return 1 + ((shares - MIN_SHARES) * 9999) // (MAX_SHARES - MIN_SHARES)


def _check_limits(limits: Limits) -> None:
    for name in ("cpu_limit_millis", "cpu_request_millis", "memory_limit_bytes", "pids_limit"):
        value = getattr(limits, name)
        if value is not None and value <= 0:
            raise CgroupError(f"{name} must be positive, got {value}")


# --- reading the machine's mounts ---


@dataclass(frozen=True)
class Mount:
    """One cgroup or cgroup2 line of /proc/self/mountinfo."""

    mount_point: str
    root: str  # the hierarchy path mounted there ("/" unless a subtree is bind-mounted)
    fstype: str  # "cgroup" (v1) or "cgroup2"
    options: frozenset[str]  # super options: controllers ("cpu", "memory") or "name=systemd"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def read_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[Mount]:
    """The cgroup (v1) and cgroup2 mounts listed in `mountinfo`, in order."""
    mounts = []
    with open(mountinfo) as f:
        for line in f:
            # "<id> <parent> <maj:min> <root> <mount point> <opts> [optional...] - "
            # "<fstype> <source> <super options>"
            left, sep, right = line.rstrip("\n").partition(" - ")
            fields, tail = left.split(" "), right.split(" ")
            if not sep or len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
                continue
            mounts.append(
                Mount(
                    mount_point=_unescape(fields[4]),
                    root=_unescape(fields[3]),
                    fstype=tail[0],
                    options=frozenset(tail[2].split(",")),
                )
            )
    return mounts


def _find_mount(mounts: Iterable[Mount], hierarchy: str) -> Mount | None:
    for mount in mounts:
        if hierarchy in ("", "unified"):
            if mount.fstype == "cgroup2":
                return mount
        elif mount.fstype == "cgroup" and hierarchy in mount.options:
            return mount
    return None


def own_cgroup(
    hierarchy: str = "",
    *,
    proc_cgroup: str = "/proc/self/cgroup",
    mountinfo: str = "/proc/self/mountinfo",
) -> str:
    """The calling process's cgroup in `hierarchy`, relative to where that hierarchy is mounted.

    `hierarchy` is "" (or "unified") for cgroup2, else a v1 controller ("memory") or
    named hierarchy ("name=systemd"). Returns e.g. "system.slice/corral-agent.service"
    ("" at the root), ready for ``parent=f"{own}/pods"`` under systemd's Delegate=yes.
    """
    with open(proc_cgroup) as f:
        lines = f.read().splitlines()
    for line in lines:
        hierarchy_id, controllers, path = line.split(":", 2)
        if hierarchy in ("", "unified"):
            if hierarchy_id != "0" or controllers:
                continue
        elif hierarchy not in controllers.split(","):
            continue
        # When a subtree is bind-mounted (a container without a cgroup namespace), the
        # mount shows that subtree: strip its root to get a path below the mount point.
        mount = _find_mount(read_mounts(mountinfo), hierarchy)
        if mount is not None and mount.root != "/":
            root = mount.root.rstrip("/")
            if path == root or path.startswith(root + "/"):
                path = path[len(root) :]
        return path.strip("/")
    raise CgroupError(f"{proc_cgroup} lists no {hierarchy or 'cgroup2'} hierarchy")


# --- small file helpers: cgroupfs reports errors per write, so each one names its file ---


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError as exc:
        raise CgroupError(f"cannot read {path}: {exc.strerror}") from exc


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from exc


def _keyed(path: str) -> dict[str, int]:
    """A flat-keyed file ("key value" lines: cpu.stat, memory.events, memory.oom_control)."""
    out = {}
    for line in _read(path).splitlines():
        key, _, value = line.partition(" ")
        if value.strip().lstrip("-").isdigit():
            out[key] = int(value)
    return out


def _tree(top: str) -> list[str]:
    """`top` and every cgroup below it, each before its children ([] if `top` is gone).
    Not os.walk: a cgroup directory holds dozens of control files, and this looks at
    nothing but the type the directory entry already carries."""
    found = []
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as entries:
                stack += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed while we looked
        found.append(directory)
    return found


def _procs_under(top: str) -> set[int]:
    pids: set[int] = set()
    for dirpath in _tree(top):  # a missing top yields nothing
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                pids.update(int(p) for p in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # removed while we walked
    return pids


def _mkdir(path: str) -> bool:
    """Create a cgroup directory (and missing ancestors); True if it is new, so that it
    still holds the kernel's defaults and writing them again can be skipped."""
    try:
        os.mkdir(path)
        return True
    except FileExistsError:
        return False
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)
        return True


def _wait(predicate: Callable[[], bool], until: float) -> bool:
    """Poll `predicate()` until true or the monotonic deadline `until`; return its last value."""
    while True:
        if predicate():
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(_POLL)


class _Driver:
    """What both versions share: paths, process listing, removal, the kill loop."""

    version: int

    def __init__(self, parent: str, hierarchies: list[str]) -> None:
        parent = parent.strip("/")
        if not parent:
            raise CgroupError("the parent must be a subtree, not the hierarchy root")
        self.parent = parent
        self._hierarchies = hierarchies  # mount points, each holding a copy of the tree
        self._own_procs: str | None = None  # cgroup.procs of our own cgroup (prime_attach)

    # paths

    def _rel(self, path: str) -> str:
        if path.startswith("/"):
            raise CgroupError(f"cgroup path {path!r} must be relative to the parent")
        parts = [p for p in path.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise CgroupError(f"cgroup path {path!r} must not contain '.' or '..'")
        return "/".join(parts)

    def _dir(self, mount: str, rel: str) -> str:
        return os.path.join(mount, self.parent, rel) if rel else os.path.join(mount, self.parent)

    def paths(self, path: str) -> list[str]:
        rel = self._rel(path)
        return [self._dir(h, rel) for h in self._hierarchies]

    def exists(self, path: str) -> bool:
        return any(os.path.isdir(d) for d in self.paths(path))

    def child_paths(self, path: str = "") -> list[str]:
        rel = self._rel(path)
        names: set[str] = set()
        for d in self.paths(rel):
            try:
                names.update(e.name for e in os.scandir(d) if e.is_dir(follow_symlinks=False))
            except FileNotFoundError:
                continue
        return sorted(f"{rel}/{n}" if rel else n for n in names)

    def remove_parent_if_empty(self) -> bool:
        # Only the parent's last directory: those above it are the machine's (a delegated
        # unit's, the admin's), made by whoever made them. A pod's cgroup below it, in any
        # hierarchy, keeps them all: pods outlive the agent by design. The kernel refuses
        # to remove a cgroup with children or processes anyway (EBUSY), so one made
        # meanwhile is not lost either.
        if self.child_paths(""):
            return False
        for directory in self.paths(""):
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                continue
            except OSError as exc:
                _LOGGER.info("cgroup parent %s left: %s", directory, exc.strerror)
                return False
        return True

    # processes

    def add_process(self, path: str, pid: int) -> None:
        for d in self.paths(path):
            if not os.path.isdir(d):
                raise CgroupError(f"cgroup {d} does not exist; create() it first")
            _write(os.path.join(d, "cgroup.procs"), str(pid))  # "0" means the writer itself

    def prime_attach(self) -> None:
        """A no-op move of this process into the cgroup it is in.

        Any write to a `cgroup.procs` takes the kernel's cgroup_threadgroup_rwsem for
        writing, and the first writer after a quiet spell waits for an RCU grace period
        (5-15 ms here) before it may; writers in the next grace period or so do not wait
        (rcu_sync stays in its writer state). A pod start moves its container's init
        into its cgroups some milliseconds after the agent begins it: priming the lock
        then, in a thread, takes that wait off the start's critical path. Measured here:
        a cold write 7.5 ms, one within ~12 ms of another's end 0.1-0.2 ms."""
        with contextlib.suppress(OSError, CgroupError):  # an optimization, nothing more
            if self._own_procs is None:
                self._own_procs = self._own_procs_file()
            _write(self._own_procs, str(os.getpid()))

    def own_procs_file(self) -> str:
        if self._own_procs is None:
            self._own_procs = self._own_procs_file()
        return self._own_procs

    def _own_procs_file(self) -> str:
        raise NotImplementedError

    def procs(self, path: str) -> list[int]:
        pids: set[int] = set()
        for d in self.paths(path):
            pids |= _procs_under(d)
        return sorted(pids)

    def _populated(self, rel: str) -> bool:
        """Whether a cgroup2 view still counts live processes (they leave cgroup.procs first)."""
        return False

    def _empty(self, rel: str) -> bool:
        return not self.procs(rel) and not self._populated(rel)

    # killing: version-specific hooks, one loop

    def _kill_file(self, rel: str) -> str | None:
        """The cgroup.kill file covering this cgroup, if the kernel has one."""
        return None

    def _untracked(self, rel: str) -> set[int]:
        """Pids that the cgroup.kill file does not reach."""
        return set()

    def _freeze(self, rel: str, until: float) -> bool:
        """Freeze the subtree so no pid can fork or exit while we signal; False if we cannot."""
        return False

    def _thaw(self, rel: str) -> None:
        pass

    def kill(self, path: str, timeout: float = 5.0) -> None:
        rel = self._rel(path)
        deadline = time.monotonic() + timeout
        while not self._empty(rel):
            if time.monotonic() >= deadline:
                raise CgroupError(
                    f"processes {self.procs(rel)} of cgroup {self.parent}/{rel} "
                    f"survived SIGKILL for {timeout}s"
                )
            kill_file = self._kill_file(rel)
            if kill_file is not None:
                # The kernel signals the whole subtree atomically, even processes forking
                # right now; only pids outside the cgroup2 view need the slow way.
                _write(kill_file, "1")
            if kill_file is None or self._untracked(rel):
                self._kill_frozen(rel, deadline)
            # Dying takes a moment (unmapping memory, closing files): wait a little,
            # then go round again in case something escaped.
            _wait(lambda: self._empty(rel), min(deadline, time.monotonic() + 0.2))

    def _kill_frozen(self, rel: str, deadline: float) -> None:
        # Frozen processes can neither fork new ones nor exit and free their pid for
        # reuse, so the pids we read are exactly the ones we signal.
        frozen = self._freeze(rel, deadline)
        try:
            for pid in self.procs(rel):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            if frozen:
                self._thaw(rel)  # a SIGKILLed frozen task dies only once thawed

    # removal

    def remove(self, path: str) -> None:
        rel = self._rel(path)
        # No walk for processes first: rmdir refuses (EBUSY) while any remain, and
        # _rmdir names them then.
        for top in self.paths(rel):
            for dirpath in reversed(_tree(top)):  # children before their parents
                self._rmdir(dirpath)

    def _rmdir(self, directory: str) -> None:
        # A killed task leaves cgroup.procs a moment before the cgroup stops counting it
        # as populated, so EBUSY with no process listed is retried briefly.
        until = time.monotonic() + 1.0
        while True:
            try:
                os.rmdir(directory)
                return
            except FileNotFoundError:
                return
            except OSError as exc:
                left = sorted(_procs_under(directory)) if exc.errno == errno.EBUSY else []
                if exc.errno != errno.EBUSY or left or time.monotonic() >= until:
                    raise CgroupError(
                        f"cannot remove {directory}: {exc.strerror}"
                        + (f" (processes {left} remain)" if left else "")
                    ) from exc
                time.sleep(_POLL)


class V2Driver(_Driver):
    """The unified hierarchy (cgroup2) mounted at `root`."""

    version = 2

    def __init__(self, root: str = "/sys/fs/cgroup", parent: str = "corral") -> None:
        super().__init__(parent, [os.path.normpath(root)])
        self.root = os.path.normpath(root)

    def _own_procs_file(self) -> str:
        return os.path.join(self.root, own_cgroup(""), "cgroup.procs")

    def create(self, path: str, limits: Limits | None = None) -> None:
        fresh = self.make(path)
        if limits is not None:
            self._apply(self._rel(path), limits, fresh)

    def make(self, path: str) -> bool:
        rel = self._rel(path)
        current = self.root
        fresh = False
        for part in [*self.parent.split("/"), *rel.split("/")]:
            if not part:
                continue
            self._enable_controllers(current)
            current = os.path.join(current, part)
            fresh = _mkdir(current)
        return fresh

    def _enable_controllers(self, directory: str) -> None:
        """Let the children of `directory` use cpu, memory and pids, if it has them."""
        available = _read(os.path.join(directory, "cgroup.controllers")).split()
        subtree = os.path.join(directory, "cgroup.subtree_control")
        enabled = _read(subtree).split()
        wanted = [c for c in V2_CONTROLLERS if c in available and c not in enabled]
        if not wanted:
            return  # also the common case below systemd's delegation: nothing to write
        try:
            with open(subtree, "w") as f:
                f.write(" ".join(f"+{c}" for c in wanted))
        except OSError as exc:
            hint = ""
            if exc.errno == errno.EBUSY:
                hint = (
                    " (a cgroup that holds processes cannot enable controllers for children:"
                    " move them into a leaf cgroup first)"
                )
            raise CgroupError(f"cannot enable {wanted} in {subtree}: {exc.strerror}{hint}") from exc

    def set_limits(self, path: str, limits: Limits, *, fresh: bool = False) -> None:
        self._apply(self._rel(path), limits, fresh)

    def _apply(self, rel: str, limits: Limits, fresh: bool) -> None:
        """set_limits; `fresh`: the cgroup was just made, so defaults need no writing."""
        _check_limits(limits)
        d = self._dir(self.root, rel)
        available = set(_read(os.path.join(d, "cgroup.controllers")).split())
        wanted = {
            "cpu": limits.cpu_limit_millis is not None or limits.cpu_request_millis is not None,
            "memory": limits.memory_limit_bytes is not None,
            "pids": limits.pids_limit is not None,
        }
        # Refuse before writing anything: a limit that silently does nothing is worse than none.
        missing = [c for c, needed in wanted.items() if needed and c not in available]
        if missing:
            raise CgroupError(
                f"cannot set limits on {d}: the {', '.join(missing)} controller(s) are not "
                f"available there (cgroup.controllers: {' '.join(sorted(available)) or 'none'})"
            )
        # A None field resets its limit, so set_limits is declarative; skip controllers
        # that are absent, as there is nothing to reset.
        if "cpu" in available:
            quota = limits.cpu_limit_millis
            if quota is not None or not fresh:
                max_ = f"{'max' if quota is None else cfs_quota_us(quota)} {CFS_PERIOD_US}"
                _write(os.path.join(d, "cpu.max"), max_)
            request = limits.cpu_request_millis
            weight = cpu_weight(cpu_shares(request)) if request else DEFAULT_WEIGHT
            if weight != DEFAULT_WEIGHT or not fresh:
                _write(os.path.join(d, "cpu.weight"), str(weight))
        if "memory" in available:
            memory = limits.memory_limit_bytes
            if memory or not fresh:
                _write(os.path.join(d, "memory.max"), str(memory) if memory else "max")
                swap = os.path.join(d, "memory.swap.max")  # absent without swap accounting
                if os.path.exists(swap):
                    _write(swap, "0" if memory else "max")
        if "pids" in available:
            pids = limits.pids_limit
            if pids or not fresh:
                _write(os.path.join(d, "pids.max"), str(pids) if pids else "max")

    def stats(self, path: str) -> CgroupStats:
        rel = self._rel(path)
        d = self._dir(self.root, rel)
        cpu = _keyed(os.path.join(d, "cpu.stat")).get("usage_usec", 0) * 1000  # always there
        memory_file = os.path.join(d, "memory.current")
        memory = int(_read(memory_file)) if os.path.exists(memory_file) else 0
        pids_file = os.path.join(d, "pids.current")
        pids = int(_read(pids_file)) if os.path.exists(pids_file) else len(self.procs(rel))
        return CgroupStats(cpu, memory, pids, self.oom_kills(rel))

    def oom_files(self, path: str) -> list[str]:
        return [os.path.join(self._dir(self.root, self._rel(path)), "memory.events")]

    def oom_kills(self, path: str) -> int:
        # memory.events counts the subtree (unless mounted with memory_localevents).
        events = os.path.join(self._dir(self.root, self._rel(path)), "memory.events")
        return _keyed(events).get("oom_kill", 0) if os.path.exists(events) else 0

    def _populated(self, rel: str) -> bool:
        events = os.path.join(self._dir(self.root, rel), "cgroup.events")
        try:
            return _keyed(events).get("populated", 0) == 1
        except CgroupError:
            return False  # gone

    def _kill_file(self, rel: str) -> str | None:
        kill = os.path.join(self._dir(self.root, rel), "cgroup.kill")
        return kill if os.path.exists(kill) else None  # Linux >= 5.14

    def _freeze(self, rel: str, until: float) -> bool:
        d = self._dir(self.root, rel)
        if not os.path.exists(os.path.join(d, "cgroup.freeze")):
            return False
        _write(os.path.join(d, "cgroup.freeze"), "1")
        # Proceed after a second even if not fully frozen: SIGKILL still gets through.
        events = os.path.join(d, "cgroup.events")
        _wait(lambda: _keyed(events).get("frozen") == 1, min(until, time.monotonic() + 1.0))
        return True

    def _thaw(self, rel: str) -> None:
        _write(os.path.join(self._dir(self.root, rel), "cgroup.freeze"), "0")


class V1Driver(_Driver):
    """Legacy per-controller hierarchies, plus the controller-less cgroup2 one if mounted.

    `mounts` maps each controller to its mount point: cpu, cpuacct, memory and pids are
    required, freezer is used when present (others are ignored). Co-mounted controllers
    share a path (``{"cpu": ".../cpu,cpuacct", "cpuacct": ".../cpu,cpuacct"}``).
    `unified` is the hybrid-mode cgroup2 mount (systemd's ``/sys/fs/cgroup/unified``),
    used for tracking and ``cgroup.kill``.
    """

    version = 1

    def __init__(
        self, mounts: Mapping[str, str], parent: str = "corral", *, unified: str | None = None
    ) -> None:
        missing = [c for c in V1_REQUIRED if c not in mounts]
        if missing:
            raise CgroupError(f"cgroup v1 controller(s) not mounted: {', '.join(missing)}")
        self.mounts = {
            c: os.path.normpath(mounts[c]) for c in (*V1_REQUIRED, *V1_OPTIONAL) if c in mounts
        }
        self.unified = os.path.normpath(unified) if unified else None
        hierarchies = list(dict.fromkeys(self.mounts.values()))  # co-mounted: one directory
        super().__init__(parent, hierarchies + ([self.unified] if self.unified else []))

    def _own_procs_file(self) -> str:
        return os.path.join(self.mounts["pids"], own_cgroup("pids"), "cgroup.procs")

    @classmethod
    def from_mounts(
        cls, mounts: Iterable[Mount], parent: str = "corral", root: str = "/sys/fs/cgroup"
    ) -> V1Driver:
        """The driver for the v1 (and hybrid cgroup2) mounts found below `root`."""
        root = os.path.normpath(root)
        by_controller: dict[str, str] = {}
        unified = None
        for mount in mounts:
            if not mount.mount_point.startswith(root + "/"):
                continue
            if mount.fstype == "cgroup2":
                unified = unified or mount.mount_point
            for controller in (*V1_REQUIRED, *V1_OPTIONAL):
                if mount.fstype == "cgroup" and controller in mount.options:
                    by_controller.setdefault(controller, mount.mount_point)
        return cls(by_controller, parent, unified=unified)

    def _ctl(self, controller: str, rel: str) -> str:
        return self._dir(self.mounts[controller], rel)

    def create(self, path: str, limits: Limits | None = None) -> None:
        fresh = self.make(path)
        if limits is not None:
            self._apply(self._rel(path), limits, fresh)

    def make(self, path: str) -> bool:
        fresh = [_mkdir(d) for d in self.paths(path)]  # every one, whatever the first says
        return all(fresh)

    def set_limits(self, path: str, limits: Limits, *, fresh: bool = False) -> None:
        self._apply(self._rel(path), limits, fresh)

    def _apply(self, rel: str, limits: Limits, fresh: bool) -> None:
        """set_limits; `fresh`: the cgroup was just made, so defaults need no writing (the
        CFS period is 100 ms and the shares 1024 by default, memory and pids unlimited)."""
        _check_limits(limits)
        cpu = self._ctl("cpu", rel)
        quota = limits.cpu_limit_millis
        if quota is None:
            if not fresh:
                _write(os.path.join(cpu, "cpu.cfs_quota_us"), "-1")
        else:
            if not fresh:
                _write(os.path.join(cpu, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
            _write(os.path.join(cpu, "cpu.cfs_quota_us"), str(cfs_quota_us(quota)))
        request = limits.cpu_request_millis
        shares = cpu_shares(request) if request else DEFAULT_SHARES
        if shares != DEFAULT_SHARES or not fresh:
            _write(os.path.join(cpu, "cpu.shares"), str(shares))
        if limits.memory_limit_bytes or not fresh:
            self._set_memory(self._ctl("memory", rel), limits.memory_limit_bytes)
        pids = limits.pids_limit
        if pids or not fresh:
            _write(os.path.join(self._ctl("pids", rel), "pids.max"), str(pids) if pids else "max")

    @staticmethod
    def _set_memory(d: str, limit: int | None) -> None:
        mem = os.path.join(d, "memory.limit_in_bytes")
        memsw = os.path.join(d, "memory.memsw.limit_in_bytes")  # only with swap accounting
        value = str(limit) if limit else "-1"
        if not os.path.exists(memsw):
            _write(mem, value)
        else:
            # The kernel keeps memory <= memory+swap at every step, so raise memsw
            # first and lower it last; equal values mean the cgroup may not swap.
            current = int(_read(mem))
            if limit is None or limit > current:
                _write(memsw, value)
                _write(mem, value)
            else:
                _write(mem, value)
                _write(memsw, value)
        swappiness = os.path.join(d, "memory.swappiness")
        if limit is not None and os.path.exists(swappiness):
            _write(swappiness, "0")  # no swap even where memsw accounting is off

    def stats(self, path: str) -> CgroupStats:
        rel = self._rel(path)
        cpu = int(_read(os.path.join(self._ctl("cpuacct", rel), "cpuacct.usage")))
        memory = int(_read(os.path.join(self._ctl("memory", rel), "memory.usage_in_bytes")))
        pids = int(_read(os.path.join(self._ctl("pids", rel), "pids.current")))
        return CgroupStats(cpu, memory, pids, self.oom_kills(rel))

    def oom_files(self, path: str) -> list[str]:
        return [os.path.join(self._ctl("memory", self._rel(path)), "memory.oom_control")]

    def oom_kills(self, path: str) -> int:
        # v1 counts an OOM kill only in the victim's own cgroup (v2 propagates it up),
        # so sum the subtree to report the same number as the v2 driver.
        total = 0
        for dirpath in _tree(self._ctl("memory", self._rel(path))):
            try:
                total += _keyed(os.path.join(dirpath, "memory.oom_control")).get("oom_kill", 0)
            except CgroupError:
                continue  # removed while we walked
        return total

    def _populated(self, rel: str) -> bool:
        if self.unified is None:
            return False
        try:
            events = os.path.join(self._dir(self.unified, rel), "cgroup.events")
            return _keyed(events).get("populated", 0) == 1
        except CgroupError:
            return False

    def _kill_file(self, rel: str) -> str | None:
        if self.unified is None:
            return None
        kill = os.path.join(self._dir(self.unified, rel), "cgroup.kill")
        return kill if os.path.exists(kill) else None

    def _untracked(self, rel: str) -> set[int]:
        assert self.unified is not None  # only asked after cgroup.kill was found
        # Read the cgroup2 view first: a process forked between the two reads then shows
        # up as untracked (a harmless extra freeze pass) instead of being missed.
        tracked = _procs_under(self._dir(self.unified, rel))
        return set(self.procs(rel)) - tracked

    def _freeze(self, rel: str, until: float) -> bool:
        if "freezer" not in self.mounts:
            return False  # plain SIGKILL by pid: racy with fork, but the loop repeats it
        state = os.path.join(self._ctl("freezer", rel), "freezer.state")
        if not os.path.exists(state):
            return False
        _write(state, "FROZEN")
        # FREEZING until every task stopped; go on after a second (a task stuck in the
        # kernel may never freeze) and let the outer loop retry.
        _wait(lambda: _read(state).strip() == "FROZEN", min(until, time.monotonic() + 1.0))
        return True

    def _thaw(self, rel: str) -> None:
        _write(os.path.join(self._ctl("freezer", rel), "freezer.state"), "THAWED")


class AttachPrimer:
    """The driver's prime_attach on a thread of its own, set off without waking any Python.

    The thread waits in splice(2) on a pipe. `prime()` writes this process's pid into the
    pipe, and the kernel moves it on into our own `cgroup.procs`, in the thread's context:
    the prime (and the grace period it waits for) begins at once. A thread woken to write
    the pid itself would first need the GIL, which the thread asking keeps but for moments
    while it makes the pod's files: the prime began 1-1.5 ms after it was asked for, on a
    path where it is the longest step. Where the kernel cannot splice into cgroupfs, the
    thread reads the pipe and calls prime_attach instead.
    """

    def __init__(self, driver: CgroupDriver) -> None:
        self._driver = driver
        self._procs = os.open(driver.own_procs_file(), os.O_WRONLY | os.O_CLOEXEC)
        self._read, self._write = os.pipe()  # both O_CLOEXEC
        os.set_blocking(self._write, False)  # prime() never waits
        self._pid = str(os.getpid()).encode()
        self._lock = threading.Lock()
        self._busy = False
        self._splice = hasattr(os, "splice")  # Python 3.10+
        self._thread = threading.Thread(target=self._run, name="corral-prime", daemon=True)
        self._thread.start()

    def prime(self) -> None:
        """Prime now, unless a prime is under way (any thread; never blocks)."""
        with self._lock:  # held across the write: close() must not close the fd meanwhile
            if self._busy or self._write < 0:
                return
            try:
                os.write(self._write, self._pid)  # a few bytes: atomic, the pipe is empty
                self._busy = True
            except OSError:
                pass

    def close(self) -> None:
        """Stop the thread (blocking: a prime under way ends first)."""
        with self._lock:
            write, self._write = self._write, -1
        if write >= 0:
            os.close(write)  # EOF: the thread returns
            self._thread.join()
            os.close(self._read)
            os.close(self._procs)

    def _run(self) -> None:
        while True:
            if self._splice:
                try:
                    moved = os.splice(self._read, self._procs, 64)
                except OSError as exc:
                    if exc.errno in (errno.EINVAL, errno.ENOSYS, errno.EBADF):
                        self._splice = False  # this kernel cannot: read and write instead
                        continue
                    moved = -1  # the move failed (an optimization, nothing more)
                    self._drain()
                if moved == 0:
                    return
            else:
                if not os.read(self._read, 64):
                    return
                self._driver.prime_attach()
            with self._lock:
                self._busy = False

    def _drain(self) -> None:
        """Drop a pid a failed splice left in the pipe, without waiting for one."""
        with contextlib.suppress(OSError):
            if select.select([self._read], [], [], 0)[0]:
                os.read(self._read, 64)


def probe(
    parent: str = "corral",
    *,
    root: str = "/sys/fs/cgroup",
    mountinfo: str = "/proc/self/mountinfo",
) -> CgroupDriver:
    """The driver for this machine.

    v2 if `root` is a cgroup2 mount offering cpu, memory and pids; else v1 if those
    controllers (and cpuacct) are mounted below `root`, with the hybrid cgroup2 mount
    if there is one; else CgroupError naming what is missing.
    """
    root = os.path.normpath(root)
    mounts = read_mounts(mountinfo)
    problems = []
    if any(m.fstype == "cgroup2" and m.mount_point == root for m in mounts):
        available = _read(os.path.join(root, "cgroup.controllers")).split()
        missing = [c for c in V2_CONTROLLERS if c not in available]
        if not missing:
            _LOGGER.info("cgroup v2 at %s, parent %s", root, parent)
            return V2Driver(root, parent)
        problems.append(f"{root} is cgroup2 without the {', '.join(missing)} controller(s)")
    try:
        driver = V1Driver.from_mounts(mounts, parent, root)
    except CgroupError as exc:
        problems.append(f"{exc} below {root}")
        raise CgroupError("no usable cgroup hierarchy: " + "; ".join(problems)) from None
    _LOGGER.info(
        "cgroup v1 (%s), unified hierarchy %s, parent %s",
        ", ".join(f"{c}={m}" for c, m in driver.mounts.items()),
        driver.unified or "not mounted",
        parent,
    )
    return driver


if TYPE_CHECKING:  # mypy checks that both drivers satisfy the protocol

    def _conforms(v1: V1Driver, v2: V2Driver) -> None:
        _a: CgroupDriver = v1
        _b: CgroupDriver = v2
