"""A container's root filesystem: overlay over the image layers, pivot_root, /proc, /dev, volumes.

`enter(spec)` runs in the container's init process (PID 1 of its new PID namespace,
forked by the monitor) just before it execs the container's command. The canonical
order, as in rubber-docker, one step per line with its why:

    unshare(CLONE_NEWNS)              own mount table (the monitor keeps the host's)
    mount / MS_REC|MS_PRIVATE         nothing mounted below leaks back to the host
    mount overlay on <rootfs>         image layers (read-only) + a per-container upper dir
    open volume sources (O_PATH)      resolved on the host, checked against allowed prefixes
    mount a tmpfs on <rootfs>/dev     minimal devices; the host's root will move to a
                                      directory on it, so making and removing that
                                      directory writes nothing to the disk's journal
    stage volumes and /etc files      each source bound (and made read-only) on
                                      <rootfs>/dev/.mounts/<i>, a fresh tmpfs private to
                                      this init: no name there can be raced; an O_PATH
                                      fd kept on each staged mount
    pivot_root <rootfs> <rootfs>/dev/.oldroot; chdir /
    mount /proc, /sys (ro)            fresh proc for the new PID namespace (before the
                                      detach: nothing but the image and this container's
                                      upper dir can change the names resolved for them)
    umount2 /dev/.oldroot MNT_DETACH  the host's tree is gone from the container's view
    move staged mounts to targets     targets resolved inside the new root (`in_root`),
                                      made, and the staged mount moved there (MS_MOVE
                                      through its fd); a target swapped for a symlink
                                      meanwhile (runc's CVE-2021-30465 race) reaches only
                                      what the container itself sees, never the host
    remove /dev/.mounts               best effort, through descriptors

The overlay lives only in the container's mount namespace: when the container's last
process exits, the kernel unmounts it; nothing needs unmounting on the host.

The host-side helpers at the end (`check_host_path`, `mountinfo`, `detach`,
`unmount_below`) are used by the runtime. Imported by the fork server, so only `errno`,
`os` and `stat` (built in) at load time.
"""

from __future__ import annotations

import errno
import os
import stat

from agent.runtime.native import syscalls as sc

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing into the fork server
if TYPE_CHECKING:
    from typing import Any

OLD_ROOT = "/dev/.oldroot"  # in the container's /dev tmpfs
STAGING = "/dev/.mounts"  # also: volumes and /etc files wait there, one entry each

# (name, major, minor): the character devices every container gets, as runc creates them.
DEVICES = (
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
)
DEV_LINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
)


class SetupError(Exception):
    """A step of building the container's root failed; the message names the step."""


def _escape_overlay(path: str) -> str:
    # overlayfs splits lowerdir on ':' and the option string on ','; a backslash escapes.
    return path.replace("\\", "\\\\").replace(":", "\\:").replace(",", "\\,")


def overlay_options(lower: list[str], upper: str, work: str) -> str:
    """The overlay mount data, shortened if the absolute form does not fit in a page.

    Shortening, as Docker's overlay2 does: short symlinks ``l/0``, ``l/1``... to the
    layers, next to the upper dir, and paths relative to there (this changes the cwd:
    call it in the single-threaded child, and restore the cwd after mounting).
    """
    data = _overlay_data(lower, upper, work)
    if len(data) <= 3800:  # mount(2) copies one page of options
        return data
    base = os.path.dirname(upper)
    links = os.path.join(base, "l")
    os.makedirs(links, exist_ok=True)
    short = []
    for index, layer in enumerate(lower):
        link = os.path.join(links, str(index))
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(layer, link)
        short.append(f"l/{index}")
    os.chdir(base)
    return _overlay_data(short, os.path.relpath(upper, base), os.path.relpath(work, base))


def _overlay_data(lower: list[str], upper: str, work: str) -> str:
    return (
        f"lowerdir={':'.join(_escape_overlay(p) for p in lower)},"
        f"upperdir={_escape_overlay(upper)},workdir={_escape_overlay(work)}"
    )


def _open_source(mount: dict[str, Any]) -> int:
    """An O_PATH fd for a bind source on the host, checked against its allowed prefixes."""
    source = str(mount["source"])
    fd = os.open(source, os.O_PATH | os.O_CLOEXEC)
    within = mount.get("within")
    if isinstance(within, list):
        # Check what the fd really is, not the name: a symlink swapped in after the
        # agent validated the path would resolve somewhere else.
        real = os.readlink(f"/proc/self/fd/{fd}")
        if not any(real == p or real.startswith(p.rstrip("/") + "/") for p in within):
            os.close(fd)
            raise SetupError(f"hostPath {source} resolves to {real}, outside {within}")
    return fd


MAX_SYMLINKS = 40  # followed in one path, as the kernel's walk allows (then ELOOP)
# What no mount target may resolve into, by path components, and why. OLD_ROOT: the host's
# tree, parked there until it is detached (a guard for /proc and /sys; for volumes, which
# are moved after the detach, a clear error only). STAGING: where the volumes wait for
# their moves; one moved onto it would cover the others, and the clean-up after the moves
# would look into it.
_RESERVED = {
    tuple(OLD_ROOT.strip("/").split("/")): f"{OLD_ROOT}, outside the container",
    tuple(STAGING.strip("/").split("/")): f"{STAGING}, where corral stages volumes",
}


def in_root(path: str, root: str = "/") -> str:
    """`path`, absolute in the container, with every symlink on the way resolved as the
    container sees it: absolute targets from its root, `..` never above it (the rule of
    runc's securejoin for mount targets). `root` is where that root is (the new root is
    "/" after pivot_root). The result names no symlink that exists, so making and
    mounting on it follow none. One that lands in OLD_ROOT, where the host's tree is
    parked after pivot_root, is refused as soon as it reaches OLD_ROOT, before anything
    there is looked at: an image's `proc -> /dev/.oldroot/...` would have the init make
    directories on the host for /proc. That name check is what protects the host for
    /proc and /sys, resolved while the host's tree is parked, in a tree nothing else can
    change then (the image's layers and this container's upper dir; no volume is
    mounted yet). Volume and /etc targets are resolved after the host's tree is
    detached: a name there can be changed between this and the mkdir by a running
    container of the pod sharing a volume, so it is not this check that keeps them off
    the host but the detach (`enter`); for them the refusal only turns an image's link
    into the parked root into a clear error."""
    todo = [p for p in reversed(path.split("/")) if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part == "..":
            if done:
                done.pop()
            continue
        reserved = _RESERVED.get((*done, part))
        if reserved is not None:
            # Refused before anything below is looked at (lstat, readlink): an image must
            # not learn the host's files' types or links' targets from the message.
            raise SetupError(f"mount target {path} resolves into {reserved}")
        here = os.path.join(root, *done, part)
        try:
            mode = os.lstat(here).st_mode
        except FileNotFoundError:
            mode = 0  # made later, a real directory or file
        if stat.S_ISLNK(mode):
            links += 1
            if links > MAX_SYMLINKS:
                raise SetupError(f"mount target {path}: more than {MAX_SYMLINKS} symlinks")
            target = os.readlink(here)
            if target.startswith("/"):
                done = []
            todo.extend(p for p in reversed(target.split("/")) if p not in ("", "."))
            continue
        done.append(part)
    return "/" + "/".join(done)


def _mkdir_p(path: str) -> None:
    try:
        os.makedirs(path, 0o755, exist_ok=True)
    except FileExistsError:
        pass  # a symlink to a directory, or a file: mount() will say which


def _touch(path: str) -> None:
    _mkdir_p(os.path.dirname(path))
    if not os.path.lexists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))


def _plain_dir(path: str) -> str:
    """`path` as a real directory of the new root, which is still mounted below the host's
    tree: an image's symlink there (which would resolve on the host) is replaced."""
    try:
        if stat.S_ISDIR(os.lstat(path).st_mode):
            return path
        os.unlink(path)  # in the overlay: a whiteout over the image's entry
    except FileNotFoundError:
        pass
    os.mkdir(path, 0o755)
    return path


def _mount_dev(dev: str) -> None:
    """A tmpfs on `dev` (the new root's /dev, before the swap: the host's /dev is still
    at hand) instead of the host's /dev: the container sees only what we create."""
    sc.mount("tmpfs", dev, "tmpfs", sc.MS_NOSUID | sc.MS_STRICTATIME, "mode=755,size=65536k")
    for name, major, minor in DEVICES:
        path = f"{dev}/{name}"
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(major, minor))
            os.chmod(path, 0o666)  # mknod's mode is filtered by the umask
        except PermissionError:
            # No CAP_MKNOD (a user namespace): bind the host's node instead.
            _touch(path)
            sc.mount(f"/dev/{name}", path, None, sc.MS_BIND)
    # newinstance: the container's own pty numbering, not the host's /dev/pts.
    os.mkdir(f"{dev}/pts")
    sc.mount(
        "devpts",
        f"{dev}/pts",
        "devpts",
        sc.MS_NOSUID | sc.MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )
    os.mkdir(f"{dev}/shm")
    # 64 MiB, as docker gives containers by default (a tmpfs is otherwise half the RAM).
    shm_flags = sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC
    sc.mount("shm", f"{dev}/shm", "tmpfs", shm_flags, "mode=1777,size=65536k")
    # POSIX message queues of the pod's IPC namespace.
    os.mkdir(f"{dev}/mqueue")
    sc.mount("mqueue", f"{dev}/mqueue", "mqueue", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    for name, target in DEV_LINKS:
        os.symlink(target, f"{dev}/{name}")


def _stage(fd: int, path: str, readonly: bool) -> int:
    """Bind the checked source `fd` on `path`, a new entry of the staging directory (a
    directory, or an empty file for a non-directory source), read-only if asked, and
    return an O_PATH fd on the staged mount. The staging directory is on the fresh /dev
    tmpfs of this init's own mount namespace: nothing else can see, let alone swap, a
    name there. The source is mounted through the fd's magic link: the file opened (and
    checked) on the host, whatever its name points to now."""
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.mkdir(path, 0o755)
    else:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
    sc.mount(f"/proc/self/fd/{fd}", path, None, sc.MS_BIND | sc.MS_REC)
    if readonly:
        # MS_RDONLY is ignored on the first bind mount; it takes a remount.
        sc.mount(None, path, None, sc.MS_REMOUNT | sc.MS_BIND | sc.MS_RDONLY)
    # The root of the staged mount, held by descriptor: a volume later mounted over /dev
    # or over this path (a mountPath may name it) cannot hide it from the move.
    return os.open(path, os.O_PATH | os.O_CLOEXEC)


def _move(staged: int, target: str) -> None:
    """Move the staged mount `staged` (an O_PATH fd on its root) to `target`, resolved
    in the new root first, and made without following a symlink that was there then.
    Called after the host's tree is detached: a name swapped meanwhile by a container
    sharing a volume can only lead to what the container sees itself."""
    target = in_root(target)
    if stat.S_ISDIR(os.fstat(staged).st_mode):
        _mkdir_p(target)
    else:
        _touch(target)
    # MS_MOVE needs the root of a mount as its source: the magic link resolves to
    # exactly the mount and dentry the fd holds, wherever (and however covered) it is.
    sc.mount(f"/proc/self/fd/{staged}", target, None, sc.MS_MOVE)


def _unstage(dev: int, count: int) -> None:
    """Remove the staging directory, emptied by the moves, from the /dev tmpfs (`dev`, a
    descriptor on its root: a volume mounted over /dev may cover it). Best effort."""
    try:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        staging = os.open(os.path.basename(STAGING), flags, dir_fd=dev)
    except OSError:
        return
    tmpfs = os.fstat(dev).st_dev
    try:
        if os.fstat(staging).st_dev != tmpfs:
            return  # something is mounted on it: what is below is not ours to remove
        for index in range(count):
            name = str(index)
            try:
                entry = os.lstat(name, dir_fd=staging)
                if entry.st_dev != tmpfs:
                    continue  # a mount left on it (its move failed): never look into it
                if stat.S_ISDIR(entry.st_mode):
                    os.rmdir(name, dir_fd=staging)
                else:
                    os.unlink(name, dir_fd=staging)
            except OSError:
                pass
    finally:
        os.close(staging)
    try:
        os.rmdir(os.path.basename(STAGING), dir_fd=dev)
    except OSError:
        pass


def enter(spec: dict[str, Any]) -> None:
    """Build the container's root and make it `/` for the calling process (the init).

    `spec["rootfs"]`: {"lower": [dirs, top first], "upper", "work", "target"};
    `spec["mounts"]`: [{"source", "target", "readonly", "within"?}], volumes then
    /etc files. Raises OSError or SetupError naming the failed step.
    """
    rootfs = spec["rootfs"]
    assert isinstance(rootfs, dict)
    mounts = spec.get("mounts") or []
    assert isinstance(mounts, list)
    new_root = str(rootfs["target"])

    # A mount namespace of our own: what we mount from here on is invisible to the host,
    # and all of it is unmounted by the kernel when the container's last process exits.
    # (Not in the monitor: pivot_root would move the root of every process in the
    # namespace, the monitor's too.)
    sc.unshare(sc.CLONE_NEWNS)
    # Stop propagation both ways: the host's mounts were copied as shared, and
    # pivot_root refuses to work on shared mounts.
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)

    # The writable root: image layers below, this container's changes in upperdir.
    # The fresh overlay mount is also the mount point pivot_root requires of new_root.
    cwd = os.getcwd()
    data = overlay_options([str(p) for p in rootfs["lower"]], rootfs["upper"], rootfs["work"])
    sc.mount("overlay", new_root, "overlay", 0, data)
    os.chdir(cwd)

    # Open bind sources while the host's tree is still "/": names are resolved there.
    fds = [_open_source(m) for m in mounts]

    # /dev before the swap, and in it the directory the host's root moves to until we
    # have taken what we need from it: both on the tmpfs, not in the upper dir.
    dev_path = _plain_dir(new_root + "/dev")
    _mount_dev(dev_path)
    dev = os.open(dev_path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    # Volumes and /etc/{hostname,hosts,resolv.conf} staged on that tmpfs now, while the
    # names they will get in the container are still unresolved: the host's tree must be
    # out of reach before anything is made for a target (see `_move`).
    os.mkdir(new_root + STAGING, 0o700)
    staged = []
    for index, (mount, fd) in enumerate(zip(mounts, fds, strict=True)):
        path = f"{new_root}{STAGING}/{index}"
        staged.append(_stage(fd, path, bool(mount.get("readonly"))))
        os.close(fd)

    put_old = new_root + OLD_ROOT
    os.mkdir(put_old)
    sc.pivot_root(new_root, put_old)
    os.chdir("/")

    # proc for the new PID namespace (the init is PID 1 in it): `ps` shows the container.
    # Before the detach, as runc does: in a user namespace (none is used today) the kernel
    # mounts a proc only where a fully visible one is already mounted, as the parked host
    # tree's is.
    proc = in_root("/proc")
    _mkdir_p(proc)
    sc.mount("proc", proc, "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    # sysfs read-only: tools read it, nothing in a container should write it.
    sys_ = in_root("/sys")
    _mkdir_p(sys_)
    sc.mount("sysfs", sys_, "sysfs", sc.MS_RDONLY | sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)

    # Detach the host's tree: lazily, as the overlay still holds references into it.
    # From here on no name the container can change leads to the host.
    sc.umount2(OLD_ROOT, sc.MNT_DETACH)
    os.rmdir(OLD_ROOT)

    # Each staged mount moved to its target, in order (a volume below another lands in it).
    for mount, fd in zip(mounts, staged, strict=True):
        _move(fd, str(mount["target"]))
        os.close(fd)
    _unstage(dev, len(staged))
    os.close(dev)


def resolve_user(user: str | None) -> tuple[int, int, list[int]]:
    """(uid, gid, supplementary gids) for an image's or pod's `user`, read from the
    container's /etc/passwd and /etc/group (call after `enter`). "" is root."""
    if not user:
        return 0, 0, []
    name, _, group = user.partition(":")
    uid = gid = None
    home_gid = 0
    if name.isdigit():
        uid = int(name)
    for fields in _table("/etc/passwd"):
        if len(fields) >= 4 and (fields[0] == name or (uid is not None and fields[2] == name)):
            uid, home_gid = int(fields[2]), int(fields[3])
            break
    if uid is None:
        raise SetupError(f"user {name!r} not found in the image's /etc/passwd")
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            gid = next((int(f[2]) for f in _table("/etc/group") if f[0] == group), None)
            if gid is None:
                raise SetupError(f"group {group!r} not found in the image's /etc/group")
    else:
        gid = home_gid
    members = [
        int(f[2])
        for f in _table("/etc/group")
        if len(f) >= 4 and name in f[3].split(",") and f[2].isdigit()
    ]
    return uid, gid, sorted({gid, *members})


def _table(path: str) -> list[list[str]]:
    try:
        with open(path) as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip()]
    except OSError:
        return []


# --- host side (the runtime) ---


def check_host_path(path: str, allowed: list[str]) -> str:
    """The real path of a hostPath volume, if it lies below one of the allowed prefixes.

    Refuses relative paths, `..` components and symlinks that resolve outside; raises
    SetupError saying why.
    """
    if not path.startswith("/") or ".." in path.split("/"):
        raise SetupError(f"hostPath {path!r} must be an absolute path without '..'")
    if not allowed:
        raise SetupError(f"hostPath {path} is not allowed: no host paths are allowed on this node")
    real = os.path.realpath(path)
    prefixes = [os.path.realpath(p) for p in allowed]
    for prefix in prefixes:
        if real == prefix or real.startswith(prefix.rstrip("/") + "/"):
            return real
    shown = path if real == path else f"{path} (resolving to {real})"
    raise SetupError(f"hostPath {shown} is not below an allowed prefix ({', '.join(allowed)})")


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountinfo(path: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount in the caller's mount namespace."""
    with open(path) as f:
        out = []
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split(" ")
            if len(fields) >= 5:
                out.append((_unescape(fields[4]), right.split(" ", 1)[0]))
        return out


def mounts_below(prefix: str) -> list[str]:
    """Mount points at or below `prefix`, deepest first."""
    prefix = prefix.rstrip("/")
    points = [p for p, _ in mountinfo() if p == prefix or p.startswith(prefix + "/")]
    return sorted(set(points), key=lambda p: (-p.count("/"), p))


def detach(path: str) -> bool:
    """Lazily unmount whatever is mounted on `path`, stacked mounts too; True if anything
    was. Nothing mounted there (or no such path) fails at once in the kernel, so callers
    that know where their mounts are need no mountinfo read."""
    detached = False
    for _ in range(8):
        try:
            sc.umount2(path, sc.MNT_DETACH | sc.UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno not in (2, 20, 22):  # ENOENT, ENOTDIR, EINVAL: nothing mounted
                raise
            return detached
        detached = True
    return detached


def unmount_below(prefix: str) -> None:
    """Detach every mount at or below `prefix` (ns files, emptyDir tmpfs, stray overlays)."""
    for _ in range(8):  # stacked mounts come off one layer per pass
        points = mounts_below(prefix)
        if not points:
            return
        for point in points:
            try:
                sc.umount2(point, sc.MNT_DETACH | sc.UMOUNT_NOFOLLOW)
            except OSError as exc:
                if exc.errno not in (2, 22):  # ENOENT, EINVAL: gone already
                    raise


def _retried(dir_fd: int, remove: Any, name: str) -> None:
    """`remove(name, dir_fd=dir_fd)`; refused for want of write permission on the directory
    (a process without CAP_DAC_OVERRIDE, a 0555 directory of an image), made writable by
    its owner through its descriptor, never by name, and tried once more."""
    try:
        remove(name, dir_fd=dir_fd)
    except PermissionError as exc:
        if exc.errno != errno.EACCES:  # EPERM: an immutable file, a sticky directory
            raise
        os.fchmod(dir_fd, 0o700)
        remove(name, dir_fd=dir_fd)


def _open_dir(name: str, dir_fd: int | None, flags: int) -> int:
    """The directory `name` opened with `flags`; one its owner may not read (mode 0), made
    readable first through an O_PATH descriptor of that very directory: a link swapped in
    is not followed (O_NOFOLLOW), and /proc/self/fd names the inode opened."""
    try:
        return os.open(name, flags, dir_fd=dir_fd)
    except PermissionError as exc:
        if exc.errno != errno.EACCES:
            raise
        path_only = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        pinned = os.open(name, path_only, dir_fd=dir_fd)
        try:
            os.chmod(f"/proc/self/fd/{pinned}", 0o700)
        finally:
            os.close(pinned)
        return os.open(name, flags, dir_fd=dir_fd)


def remove_tree(top: str | os.PathLike[str]) -> None:
    """Delete `top` and everything below it, as `shutil.rmtree(top, ignore_errors=True)`,
    without recursion and without long paths: a container can make its upper dir or a
    volume as deep as it likes (`mkdir d; cd d`, over and over), and rmtree recursed once
    a level (RecursionError on Python 3.11 and 3.12, whatever ignore_errors says, so the
    container could never restart and the trash was never emptied again). One directory
    descriptor at a time, down by name, up by `..`; links are removed, never followed; a
    directory its owner may not read or write is made so (as shutil.rmtree's callers
    here used to); what cannot be removed is left, as rmtree's ignore_errors leaves it."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        if not stat.S_ISDIR(os.lstat(top).st_mode):
            os.unlink(top)
            return
        fd = _open_dir(os.fspath(top), None, flags)
    except OSError:
        return
    names: list[str] = []  # from `top` down to where `fd` is
    stuck: set[tuple[str, ...]] = set()  # directories that could not be entered or removed
    try:
        while True:
            below = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            _retried(fd, os.unlink, entry.name)
                        elif (*names, entry.name) not in stuck:
                            below = entry.name
                            break
                    except OSError:
                        pass
            if below is not None:
                try:
                    child = _open_dir(below, fd, flags)
                except OSError:
                    stuck.add((*names, below))
                    continue
                os.close(fd)
                fd = child
                names.append(below)
                continue
            if not names:
                break
            parent = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = parent
            name = names.pop()
            try:
                _retried(fd, os.rmdir, name)
            except OSError:
                stuck.add((*names, name))
    except OSError:
        pass
    finally:
        os.close(fd)
    try:
        os.rmdir(top)
    except OSError:
        pass
