"""Unpack one image layer safely into its own directory, in the form overlayfs stacks.

Each layer is unpacked alone (never on top of its parents) and later stacked with
overlayfs, so OCI whiteouts are converted on the way in:

    <dir>/.wh.<name>     ->  <dir>/<name> as a character device 0/0  (overlayfs whiteout)
    <dir>/.wh..wh..opq   ->  xattr trusted.overlay.opaque=y on <dir> (overlayfs opaque dir)

The checks are written out rather than left to `tarfile`'s 'data' filter, which would
drop setuid bits and refuse the whiteout devices we create. Refused, naming the entry:
absolute names, `..` components, entries whose parent is a symlink (`link -> /etc`, then
`link/passwd`), relative symlinks that climb above the layer root, hard links to anything
not already extracted from this layer, device files, and names more than MAX_DEPTH
components deep (no real image comes near; the store removes trees of any depth with
`rootfs.remove_tree`, so this is a sanity bound, not what keeps removal working).
Absolute symlink targets are kept: they resolve against the container's root, which is
where they are ever followed; this module itself never follows a link while writing.

A layer is bounded as it is read: at most `max_bytes` of uncompressed tar stream
(MAX_LAYER_BYTES unless the caller says otherwise; a gzip bomb, a few kB expanding to
many GiB, would otherwise be written out until the node's disk is full) and at most
MAX_LAYER_ENTRIES entries (inodes). Over either, the layer is refused.

The uncompressed stream is hashed while it is read and must match the config's diff_id,
so a layer directory's name always tells the truth about its content.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from agent.runtime.native.oci import ImageError
from agent.runtime.native.rootfs import remove_tree
from common.limits import MAX_LAYER_BYTES

_LOGGER = logging.getLogger(__name__)

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_CHUNK = 1 << 20
# Far deeper than any real image (see above).
MAX_DEPTH = 256
# Entries (headers) of one layer: far more files than real images hold in one layer, far
# fewer inodes than a bomb of empty files could take.
MAX_LAYER_ENTRIES = 1_000_000
# Extended attributes worth keeping from a layer (file capabilities, e.g. for ping).
# trusted.* is refused on purpose: a layer must not forge overlayfs' own metadata.
_KEPT_XATTRS = ("security.capability",)


class _Unsafe(Exception):
    """An entry that must not be extracted; the message says why."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _too_big(what: str, limit: int) -> str:
    return (
        f"{what}: unpacks to more than {limit} bytes, the limit for one layer (the agent's "
        "max_layer_bytes); refusing it"
    )


# What tarfile reads whole into memory before the member it describes: a pax header
# (`x`, `g`) or a GNU long name or link. Real ones are a few hundred bytes (a name is at
# most 4 KiB, the kept xattrs small); a 400 MiB one, 398 KiB gzipped, took the agent's
# memory from 32 MiB to 1.4 GiB.
MAX_HEADER_BYTES = 1 << 20
_HEADER_TYPES = frozenset(
    (
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    )
)


class _BoundedTarInfo(tarfile.TarInfo):
    """A member header, refused before tarfile reads an extended header past
    MAX_HEADER_BYTES (`_proc_member` is where it chooses how to read one: unchanged in
    CPython from 3.2 to 3.13)."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _HEADER_TYPES and self.size > MAX_HEADER_BYTES:
            # A TarError: `unpack_layer` names the layer ("not a valid tar stream (...)").
            raise tarfile.TarError(
                f"an extended header of {self.size} bytes, more than {MAX_HEADER_BYTES}"
            )
        return super()._proc_member(archive)  # type: ignore[misc]


class _HashingReader:
    """A read-only stream that hashes everything read through it, up to `limit` bytes."""

    def __init__(self, raw: _Readable, limit: int, what: str) -> None:
        self._raw = raw
        self._limit = limit
        self._what = what
        self.sha256 = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:  # never unbounded: one byte past the limit at most
            size = self._limit - self.count + 1
        data = self._raw.read(min(size, self._limit - self.count + 1))
        self.count += len(data)
        if self.count > self._limit:
            raise ImageError(_too_big(self._what, self._limit))
        self.sha256.update(data)
        return data

    def drain(self) -> None:
        while self.read(_CHUNK):
            pass


def _decompressed(raw: BinaryIO, media_type: str, what: str) -> _Readable:
    """The tar stream inside a layer blob, sniffing the compression from its first bytes.

    Sniffing rather than trusting the media type: Docker-saved layers carry none, and
    registries have been known to label gzip layers as plain tar.
    """
    head = raw.read(4)
    raw.seek(0)
    if head.startswith(_GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head == _ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise ImageError(
                f"{what}: media type {media_type} is zstd-compressed and the 'zstandard' "
                "module is not installed (pip install zstandard)"
            ) from None
        return zstandard.ZstdDecompressor().stream_reader(raw)
    return raw


def unpack_layer(
    raw: BinaryIO,
    dest: Path,
    *,
    media_type: str,
    diff_id: str,
    what: str,
    max_bytes: int = MAX_LAYER_BYTES,
    max_entries: int = MAX_LAYER_ENTRIES,
) -> int:
    """Extract the layer blob `raw` into the empty directory `dest`; return the bytes unpacked.

    Refuses (ImageError) a layer whose uncompressed tar stream is longer than `max_bytes`
    or that has more than `max_entries` entries, as soon as it gets there.

    Called by the image store with `dest` inside its private staging directory. On any
    error `dest` is left partly written: the caller removes it, nothing else is touched.
    """
    reader = _HashingReader(_decompressed(raw, media_type, what), max_bytes, what)
    unpacker = _Unpacker(dest)
    entries = expanded = 0
    try:
        with tarfile.open(  # type: ignore[call-overload]
            fileobj=reader, mode="r|", tarinfo=_BoundedTarInfo
        ) as tar:
            for member in tar:
                entries += 1
                if entries > max_entries:
                    raise ImageError(
                        f"{what}: more than {max_entries} entries, the limit for one layer; "
                        "refusing it"
                    )
                if member.isreg():
                    # The size written out: a sparse member's is far more than its bytes
                    # in the stream (10 KiB of tar made a 2 GiB file of zeros).
                    expanded += member.size
                    if expanded > max_bytes:
                        raise ImageError(_too_big(what, max_bytes))
                try:
                    unpacker.add(tar, member)
                except _Unsafe as err:
                    raise ImageError(f"{what}: refusing entry {member.name!r}: {err}") from None
        reader.drain()  # the end-of-archive padding counts towards the diff_id too
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        if isinstance(err, OSError) and err.errno is not None:
            raise  # a real I/O failure (disk full, permissions) stays an OSError
        raise ImageError(f"{what}: not a valid tar stream ({err})") from None
    got = "sha256:" + reader.sha256.hexdigest()
    if got != diff_id:
        raise ImageError(f"{what}: uncompressed content hashes to {got}, config says {diff_id}")
    unpacker.finish()
    return unpacker.size


class _Unpacker:
    """Applies tar entries one by one to `dest`, checking each before touching the disk."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.size = 0
        self._as_root = os.geteuid() == 0  # ownership is kept only when we may chown
        # Directory entries by relative path, their attributes applied at the end; an entry
        # replaced later (by a symlink, say) is dropped, so `finish` never acts on its name.
        self._dirs: dict[str, tarfile.TarInfo] = {}
        self._safe_dirs: set[str] = {""}  # relative dirs known to be real directories

    # --- checks ---

    @staticmethod
    def _clean(name: str) -> str:
        """The entry's path relative to the layer root; refuses absolute names and `..`."""
        if name.startswith("/"):
            raise _Unsafe("absolute path")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise _Unsafe("path contains '..'")
        if len(parts) > MAX_DEPTH:
            raise _Unsafe(f"path is more than {MAX_DEPTH} components deep")
        return "/".join(parts)

    def _parent(self, rel: str) -> Path:
        """The entry's parent directory, created if missing; refuses symlinks and non-dirs."""
        parent = rel.rpartition("/")[0]
        if parent in self._safe_dirs:
            return self.dest / parent
        prefix = ""
        for part in parent.split("/"):
            prefix = f"{prefix}/{part}" if prefix else part
            if prefix in self._safe_dirs:
                continue
            path = self.dest / prefix
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                os.mkdir(path, 0o755)  # tars may omit parent entries; tar(1) creates them too
            else:
                if stat.S_ISLNK(st.st_mode):
                    raise _Unsafe(f"its parent {prefix!r} is a symlink")
                if not stat.S_ISDIR(st.st_mode):
                    raise _Unsafe(f"its parent {prefix!r} is not a directory")
            self._safe_dirs.add(prefix)
        return self.dest / parent

    @staticmethod
    def _check_symlink(rel: str, target: str) -> None:
        if not target:
            raise _Unsafe("empty symlink target")
        if target.startswith("/"):
            return  # resolved against the container's root, inside by construction
        depth = rel.count("/")  # directories above the link, up to the layer root
        for part in target.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise _Unsafe(f"symlink target {target!r} points outside the layer")
            elif part not in ("", "."):
                depth += 1

    # --- writing ---

    def _clear(self, path: Path) -> None:
        """Remove what a later entry with the same name replaces (tar: the last one wins)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            remove_tree(path)  # not following links; os.mkdir/open(O_EXCL) fail if it stays
            self._safe_dirs = {""}  # forget cached directories below the removed one
            rel = path.relative_to(self.dest).as_posix()
            for gone in [d for d in self._dirs if d == rel or d.startswith(rel + "/")]:
                del self._dirs[gone]
        else:
            os.unlink(path)

    def _own(self, path: Path | int, m: tarfile.TarInfo, *, link: bool = False) -> None:
        if self._as_root:
            if isinstance(path, int):
                os.fchown(path, m.uid, m.gid)
            else:
                os.chown(path, m.uid, m.gid, follow_symlinks=not link)

    def add(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        rel = self._clean(m.name)
        if not rel:
            return  # the layer root itself: its attributes come from the upper dir at run time
        parent = self._parent(rel)
        base = rel.rpartition("/")[2]
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base)
            return
        path = self.dest / rel
        if m.isdir():
            if not os.path.isdir(path) or os.path.islink(path):
                self._clear(path)
                os.mkdir(path, 0o700)  # final mode later: a read-only dir would block children
            self._safe_dirs.add(rel)
            self._dirs[rel] = m  # a repeated entry: the last one wins
        elif m.isreg():
            self._clear(path)
            self._regular(tar, m, path)
        elif m.issym():
            self._check_symlink(rel, m.linkname)
            self._clear(path)
            os.symlink(m.linkname, path)
            self._own(path, m, link=True)
            os.utime(path, (m.mtime, m.mtime), follow_symlinks=False)
        elif m.islnk():
            self._hardlink(rel, m, path)
        elif m.ischr() and m.devmajor == 0 and m.devminor == 0:
            self._clear(path)
            self._mknod_whiteout(path)  # already in overlayfs form
        elif m.isfifo():
            self._clear(path)
            os.mkfifo(path, 0o600)
            self._own(path, m)
            os.chmod(path, m.mode & 0o7777)
            os.utime(path, (m.mtime, m.mtime))
        elif m.ischr() or m.isblk():
            raise _Unsafe("device files are not allowed in image layers")
        else:
            raise _Unsafe(f"unsupported tar entry type {m.type!r}")

    def _regular(self, tar: tarfile.TarFile, m: tarfile.TarInfo, path: Path) -> None:
        src = tar.extractfile(m)
        assert src is not None  # regular members always have data
        # O_EXCL|O_NOFOLLOW: never write through something that appeared at this name.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(path, flags, 0o600)
        try:
            with os.fdopen(fd, "wb", closefd=False) as out:
                shutil.copyfileobj(src, out, _CHUNK)
            self._own(fd, m)  # before chmod: chown clears setuid/setgid bits
            os.fchmod(fd, m.mode & 0o7777)
            self._xattrs(fd, m)  # after chown, which drops security.capability
            os.utime(fd, (m.mtime, m.mtime))
        finally:
            os.close(fd)
        self.size += m.size

    def _xattrs(self, fd: int, m: tarfile.TarInfo) -> None:
        headers: Mapping[str, Any] = m.pax_headers
        for name in _KEPT_XATTRS:
            value = headers.get(f"SCHILY.xattr.{name}")
            if value is None or not self._as_root:
                continue
            raw = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
            try:
                os.setxattr(fd, name, raw)
            except OSError as err:  # e.g. a filesystem without xattrs: the file still works
                _LOGGER.warning("cannot set %s on %s: %s", name, m.name, err)

    def _hardlink(self, rel: str, m: tarfile.TarInfo, path: Path) -> None:
        try:
            target_rel = self._clean(m.linkname)
        except _Unsafe as err:
            raise _Unsafe(f"hard link target {m.linkname!r}: {err}") from None
        if not target_rel:
            raise _Unsafe("hard link to the layer root")
        if target_rel == rel:
            return  # a link to itself: nothing to do
        target = self._parent(target_rel) / target_rel.rpartition("/")[2]
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            raise _Unsafe(f"hard link target {m.linkname!r} is not in this layer") from None
        if stat.S_ISDIR(st.st_mode):
            raise _Unsafe(f"hard link target {m.linkname!r} is a directory")
        self._clear(path)
        os.link(target, path, follow_symlinks=False)

    def _whiteout(self, parent: Path, base: str) -> None:
        if base == OPAQUE_MARKER:
            try:
                os.setxattr(parent, OPAQUE_XATTR, b"y", follow_symlinks=False)
            except PermissionError:
                raise ImageError(
                    f"marking {parent.name or '/'} opaque needs root (xattr {OPAQUE_XATTR})"
                ) from None
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless here
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", ".."):
            raise _Unsafe("whiteout of an invalid name")
        path = parent / name
        # Whiteouts hide lower layers only: a file of the same name in this layer stays.
        if not os.path.lexists(path):
            self._mknod_whiteout(path)

    @staticmethod
    def _mknod_whiteout(path: Path) -> None:
        try:
            os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))
        except PermissionError:
            raise ImageError(
                f"creating the overlay whiteout {path.name!r} needs root (CAP_MKNOD)"
            ) from None

    def _open_dir(self, rel: str) -> int:
        """An fd on the layer's directory `rel`, following no symlink on the way there."""
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(self.dest, flags)
        for part in rel.split("/"):
            try:
                child = os.open(part, flags, dir_fd=fd)
            finally:
                os.close(fd)
            fd = child
        return fd

    def finish(self) -> None:
        """Directory attributes, deepest first, once nothing more is written inside them.

        Through an fd opened without following links: a name that was a directory when
        its entry came may since have been replaced (`dir`, then `dir -> /etc`), and a
        chown or chmod by name would then land on the host.
        """
        for rel in sorted(self._dirs, key=lambda d: d.count("/"), reverse=True):
            m = self._dirs[rel]
            fd = self._open_dir(rel)
            try:
                self._own(fd, m)
                os.fchmod(fd, m.mode & 0o7777)
                os.utime(fd, (m.mtime, m.mtime))
            finally:
                os.close(fd)
