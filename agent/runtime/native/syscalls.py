"""The Linux calls Python lacks (mount, umount2, pivot_root, prctl), wrapped with ctypes.

Each wrapper raises `OSError(errno, strerror)` like the `os` functions do. `unshare`
and `setns` use `os.unshare` / `os.setns` where Python has them (3.12+) and libc
otherwise. Imported by the fork server and every monitor, so it stays small: only
`ctypes` and `os`, no `ctypes.util` (which pulls in subprocess).
"""

from __future__ import annotations

import ctypes
import os

# clone(2)/unshare(2) flags: which namespaces to create or join.
CLONE_NEWNS = 0x00020000  # mount
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000  # hostname
CLONE_NEWIPC = 0x08000000  # SysV IPC, POSIX message queues
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# The namespace file under /proc/<pid>/ns/ for each flag, and back.
NS_FLAGS = {"net": CLONE_NEWNET, "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}

# mount(2) flags.
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

# umount2(2) flags.
MNT_FORCE = 1
MNT_DETACH = 2  # lazy: detach now, free once nothing uses it
UMOUNT_NOFOLLOW = 8

# prctl(2) options.
PR_SET_PDEATHSIG = 1

# glibc has no pivot_root() wrapper: call the syscall by number.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}

# CDLL(None) is the running program, which links libc: no library search needed.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


def _check(result: int, what: str, *paths: str | None) -> None:
    if result < 0:
        err = ctypes.get_errno()
        named = [p for p in paths if p]
        raise OSError(err, f"{what}: {os.strerror(err)}", *named[:1])


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    """mount(2). `source` may be None (remounts, propagation changes)."""
    result = _libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data))
    _check(result, f"mount {source or fstype or ''} on {target}", target)


def umount2(target: str, flags: int = 0) -> None:
    """umount2(2)."""
    _check(_libc.umount2(_b(target), flags), f"umount {target}", target)


def pivot_root(new_root: str, put_old: str) -> None:
    """pivot_root(2): make `new_root` the root mount; the old root moves to `put_old`."""
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(38, f"pivot_root: unknown syscall number on {os.uname().machine}")
    result = _libc.syscall(ctypes.c_long(number), _b(new_root), _b(put_old))
    _check(result, f"pivot_root {new_root}", new_root)


def unshare(flags: int) -> None:
    """unshare(2): move the caller into new namespaces."""
    if hasattr(os, "unshare"):  # Python 3.12+
        os.unshare(flags)
        return
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    """setns(2): join the namespace that `fd` (an open /proc/*/ns/* file) refers to."""
    if hasattr(os, "setns"):  # Python 3.12+
        os.setns(fd, nstype)
        return
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send `sig` to the caller when its parent thread exits."""
    _check(_libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0), "prctl(PR_SET_PDEATHSIG)")


def set_process_name(name: str) -> None:
    """The name `ps -o comm` and /proc/PID/comm show (the kernel keeps 15 bytes)."""
    with open("/proc/self/comm", "w") as f:
        f.write(name[:15])
