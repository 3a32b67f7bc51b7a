"""The infra ("pause") image of Docker pods, built locally from the node's static busybox.

A pod's infra container holds its network and IPC namespaces; the pod's containers join
them (`container:<id>` network and IPC modes). It only has to sleep. No image can be
pulled for it (nodes may have no registry access), so the runtime builds one with
`docker import` of a one-file layer: Debian's `busybox-static` at /bin/busybox, run as
`busybox sleep`. Its tag carries the binary's hash, so a new busybox gives a new image.
An operator can name another image instead (`docker_pause_image`, e.g. a pause image
they keep in their own registry).
"""

from __future__ import annotations

import hashlib
import io
import struct
import tarfile
from pathlib import Path

PAUSE_REPO = "corral-pause"
PAUSE_COMMAND = ["/bin/busybox", "sleep", "2147483647"]  # PID 1 ignores SIGTERM: stop = kill
BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000  # fixed, so the same busybox always gives the same layer


class PauseImageError(Exception):
    """No static busybox to build the pause image from; the message says what to install."""


def _is_static_elf(data: bytes) -> bool:
    """True for an ELF file without a PT_INTERP header (it needs no dynamic loader)."""
    if data[:4] != b"\x7fELF":
        return False
    is64, endian = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        phoff, phentsize, phnum = struct.unpack_from(endian + "Q14xHH", data, 32)
    else:
        phoff, phentsize, phnum = struct.unpack_from(endian + "I10xHH", data, 28)
    for i in range(phnum):
        (p_type,) = struct.unpack_from(endian + "I", data, phoff + i * phentsize)
        if p_type == 3:  # PT_INTERP
            return False
    return True


def pause_layer(busybox: Path = BUSYBOX) -> tuple[str, bytes]:
    """(tag, tar of the one-file root filesystem) for `docker import` (blocking)."""
    try:
        data = busybox.read_bytes()
    except OSError as exc:
        raise PauseImageError(
            f"cannot read {busybox} ({exc.strerror}): Docker pods need a static busybox for "
            "their infra container (apt-get install busybox-static), or docker_pause_image"
        ) from None
    if not _is_static_elf(data):
        raise PauseImageError(
            f"{busybox} is not a static executable: install busybox-static, or set "
            "docker_pause_image"
        )
    tag = hashlib.sha256(data).hexdigest()[:16]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        folder = tarfile.TarInfo("bin")
        folder.type, folder.mode, folder.mtime = tarfile.DIRTYPE, 0o755, MTIME
        tar.addfile(folder)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(data), 0o755, MTIME
        tar.addfile(info, io.BytesIO(data))
    return tag, out.getvalue()
