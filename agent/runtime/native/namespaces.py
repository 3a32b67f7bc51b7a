"""A pod's shared namespaces (ipc, uts, net): made by its first container's init and pinned
by that container's monitor, joined by every later init, detached by the runtime in one
umount.

Like `ip netns add`, a namespace outlives its processes while a bind mount pins it::

    every init           `make()`, before it knows its pod (a spare helper forks it ahead,
                         see monitor.py): unshare(ipc, uts, net), `lo` up
    first container      init: keeps them, sets the hostname; its monitor, in the host's
                         mount namespace, mounts a tmpfs on <pod>/ns/ and binds
                         /proc/<init>/ns/<kind> on <pod>/ns/<kind>: no sandbox helper
                         process, and it overlaps the init's own work
    later containers     init: setns() into each pinned <pod>/ns/<kind>
    hostNetwork pods     init: setns() back into the host's uts and net namespaces
    remove_pod           umount2(<pod>/ns, MNT_DETACH): the tmpfs and every pin on it,
                         one RCU grace period instead of one per namespace

A kind is pinned when its file is on another filesystem than its directory (nsfs on the
tmpfs, or on the pod directory for pods an older agent created, one bind mount per file),
so nobody reads /proc/self/mountinfo to find out. Imported by the fork server: stdlib only.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from agent.runtime.native import rootfs
from agent.runtime.native import syscalls as sc

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing into the fork server
if TYPE_CHECKING:
    from typing import Any

KINDS = ("ipc", "uts", "net")
TMPFS_FLAGS = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
TMPFS_DATA = "mode=0755,size=16k"
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def _on_other_fs(path: str) -> bool:
    """True if `path` is a mount point or has one bound on it (its st_dev differs from its
    directory's); False if it does not exist."""
    try:
        return os.stat(path).st_dev != os.stat(os.path.dirname(path.rstrip("/"))).st_dev
    except FileNotFoundError:
        return False


def missing(sandbox: dict[str, Any]) -> list[str]:
    """The kinds of `sandbox` ({"dir", "kinds", "hostname"}) not pinned yet."""
    return [k for k in sandbox["kinds"] if not _on_other_fs(os.path.join(sandbox["dir"], k))]


def make() -> dict[str, int]:
    """In an init not yet told its pod: move into new ipc, uts and net namespaces (`lo`
    up); return fds of the ones it had before (the host's), to go back to (`enter`)."""
    host = {kind: os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in KINDS}
    sc.unshare(sc.CLONE_NEWIPC | sc.CLONE_NEWUTS | sc.CLONE_NEWNET)
    loopback_up()
    return host


def enter(sandbox: dict[str, Any] | None, create: list[str], host: dict[str, int]) -> None:
    """In the init made by `make()`, told its pod: keep the new namespaces of the kinds in
    `create` (with the pod's hostname), join the pod's pinned ones of its other kinds, and
    go back to the host's (`host`: fds from `make`) for kinds the pod does not have.
    Closes the fds in `host`."""
    kinds = sandbox["kinds"] if sandbox else []
    try:
        for kind in KINDS:
            if kind in create:
                continue
            if kind in kinds:
                assert sandbox is not None
                fd = os.open(os.path.join(sandbox["dir"], kind), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    sc.setns(fd, sc.NS_FLAGS[kind])
                finally:
                    os.close(fd)
            else:
                sc.setns(host[kind], sc.NS_FLAGS[kind])
    finally:
        for fd in host.values():
            os.close(fd)
    if "uts" in create:
        assert sandbox is not None
        socket.sethostname(sandbox["hostname"])


def pin(pid: int | str, sandbox: dict[str, Any], kinds: list[str]) -> None:
    """Pin the `kinds` namespaces of process `pid` (the init's, from its monitor, which is
    in the host's mount namespace) under the pod's ns/ directory."""
    ns_dir = sandbox["dir"]
    if not _on_other_fs(ns_dir):
        # A tmpfs: the pin files cost no journal writes, and one umount removes them all.
        sc.mount("tmpfs", ns_dir, "tmpfs", TMPFS_FLAGS, TMPFS_DATA)
    for kind in kinds:
        target = os.path.join(ns_dir, kind)
        os.close(os.open(target, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o444))
        sc.mount(f"/proc/{pid}/ns/{kind}", target, None, sc.MS_BIND)


def unpin(ns_dir: str) -> None:
    """Detach a pod's pins (the runtime's teardown; idempotent): the tmpfs with all of them,
    and single pins of pods an older agent created. Unmounting what is not mounted fails
    at once (EINVAL, ENOENT): cheap, so no mountinfo read is needed to know."""
    for path in (ns_dir, *(os.path.join(ns_dir, kind) for kind in KINDS)):
        rootfs.detach(path)


def loopback_up() -> None:
    """Bring `lo` up in the caller's network namespace (a new one starts with it down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        # struct ifreq: a 16-byte name, then a union whose first member is the flags.
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
