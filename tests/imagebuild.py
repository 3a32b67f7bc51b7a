"""Build container images for tests without a network: busybox rootfs, OCI layout, docker save.

The busybox comes from Debian's `busybox-static` package (`apt-get install busybox-static`;
.ci/run installs it). Everything else is written here in Python: tar layers with fixed
owners and mtimes (so digests are stable from run to run), gzip, sha256, the OCI JSON
documents. Debian also packages `umoci` and `skopeo`; neither is needed.

    rootfs = build_busybox_rootfs(tmp / "rootfs")
    layout = write_oci_layout(rootfs, tmp / "oci", ref="busybox:latest")
    tarball = write_docker_save(rootfs, tmp / "busybox.tar", repo_tags=["busybox:latest"])

Crafted layers (whiteouts, path traversal, symlink escapes...) are lists of `Entry`,
passed as `extra_layers` (with `rootfs=None` for an image of only those layers).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import pytest

from common.version import host_arch

BUSYBOX = Path("/bin/busybox")
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
MTIME = 1_700_000_000  # every entry's mtime: fixed, so the same input gives the same digests
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"

Compression = Literal["gzip", "none", "zstd"]
LayerSpec = bytes | Sequence["Entry"]  # an uncompressed tar, or entries to make one from


class BusyboxMissing(RuntimeError):
    """No static busybox at /bin/busybox."""


def skip_or_fail(reason: str) -> NoReturn:
    """Skip for a missing prerequisite; under CI=true fail instead (CI must run every test)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: this test must run)")
    pytest.skip(reason)


def _is_static_elf(path: Path) -> bool:
    """True when the ELF file has no PT_INTERP program header (needs no dynamic loader)."""
    with open(path, "rb") as f:
        ident = f.read(16)
        if ident[:4] != b"\x7fELF":
            return False
        is64, endian = ident[4] == 2, "<" if ident[5] == 1 else ">"
        header = f.read(48 if is64 else 36)
        if is64:
            phoff, phentsize, phnum = struct.unpack(endian + "16xQ14xHH", header[:42])
        else:
            phoff, phentsize, phnum = struct.unpack(endian + "12xI10xHH", header[:32])
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            (p_type,) = struct.unpack(endian + "I", f.read(4))
            if p_type == 3:  # PT_INTERP
                return False
    return True


def busybox_binary() -> Path:
    """/bin/busybox, checked to be the static build; BusyboxMissing says how to get it."""
    if not BUSYBOX.is_file():
        raise BusyboxMissing(
            f"{BUSYBOX} not found: test images need Debian's static busybox "
            "(apt-get install busybox-static)"
        )
    if not _is_static_elf(BUSYBOX):
        raise BusyboxMissing(
            f"{BUSYBOX} is dynamically linked (Debian's 'busybox' package); containers need "
            "the static one: apt-get install busybox-static"
        )
    return BUSYBOX


def build_busybox_rootfs(dest: Path) -> Path:
    """A minimal root filesystem: bin/busybox and a symlink per applet, /etc/passwd, /tmp."""
    busybox = busybox_binary()
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox, dest / "bin" / "busybox")
    listed = subprocess.run([busybox, "--list"], check=True, capture_output=True, text=True)
    for applet in sorted(set(listed.stdout.split())):
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    for name, mode in (
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("root", 0o700),
        ("proc", 0o755),
        ("sys", 0o755),
        ("dev", 0o755),
    ):
        (dest / name).mkdir(exist_ok=True)
        os.chmod(dest / name, mode)  # mkdir's mode is filtered by the umask; chmod is not
    (dest / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    )
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest


# --- layers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tar entry of a crafted layer."""

    name: str
    kind: Literal["file", "dir", "symlink", "hardlink", "chardev", "blockdev", "fifo"] = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlink or hard link target
    uid: int = 0
    gid: int = 0
    major: int = 0
    minor: int = 0


def file(name: str, data: bytes | str = b"", mode: int = 0o644, **kw: Any) -> Entry:
    return Entry(name, "file", data.encode() if isinstance(data, str) else data, mode, **kw)


def directory(name: str, mode: int = 0o755, **kw: Any) -> Entry:
    return Entry(name, "dir", mode=mode, **kw)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, "symlink", mode=0o777, target=target)


def hardlink(name: str, target: str) -> Entry:
    return Entry(name, "hardlink", target=target)


def device(name: str, major: int, minor: int, *, block: bool = False) -> Entry:
    return Entry(name, "blockdev" if block else "chardev", mode=0o600, major=major, minor=minor)


def whiteout(path: str) -> Entry:
    """The OCI whiteout deleting `path` from the layers below: `<dir>/.wh.<name>`."""
    parent, _, base = path.rstrip("/").rpartition("/")
    return file(f"{parent}/.wh.{base}" if parent else f".wh.{base}", mode=0o600)


def opaque(dir_path: str) -> Entry:
    """The OCI marker hiding everything below `dir_path` in lower layers."""
    return file(f"{dir_path.rstrip('/')}/.wh..wh..opq", mode=0o600)


_KINDS = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "chardev": tarfile.CHRTYPE,
    "blockdev": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def layer_tar(entries: Iterable[Entry]) -> bytes:
    """An uncompressed tar of exactly these entries, in this order (names kept verbatim)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = _KINDS[e.kind]
            info.mode, info.uid, info.gid, info.mtime = e.mode, e.uid, e.gid, MTIME
            info.linkname = e.target
            info.devmajor, info.devminor = e.major, e.minor
            info.size = len(e.data) if e.kind == "file" else 0
            tar.addfile(info, io.BytesIO(e.data) if e.kind == "file" else None)
    return out.getvalue()


def dir_tar(root: Path) -> bytes:
    """An uncompressed tar of a directory's contents: sorted, owned by 0:0, fixed mtimes."""

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = MTIME
        return info

    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for child in sorted(os.listdir(root)):
            tar.add(root / child, arcname=child, filter=normalize)  # recursion is sorted too
    return out.getvalue()


def _as_tar(layer: LayerSpec) -> bytes:
    return layer if isinstance(layer, bytes) else layer_tar(layer)


def compress(data: bytes, compression: Compression) -> tuple[bytes, str]:
    """(blob, OCI media type) for an uncompressed layer tar."""
    if compression == "gzip":
        return gzip.compress(data, compresslevel=1, mtime=0), OCI_LAYER + "+gzip"
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data), OCI_LAYER + "+zstd"
    return data, OCI_LAYER


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _layers(rootfs: Path | None, extra_layers: Sequence[LayerSpec]) -> list[bytes]:
    layers = [dir_tar(rootfs)] if rootfs is not None else []
    layers.extend(_as_tar(x) for x in extra_layers)
    if not layers:
        raise ValueError("an image needs a rootfs or at least one extra layer")
    return layers


def image_config(
    diff_ids: list[str],
    *,
    arch: str | None = None,
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = ("sh",),
    env: Sequence[str] = DEFAULT_ENV,
    working_dir: str = "",
    user: str = "",
) -> dict[str, Any]:
    """An OCI image config (docker's is the same JSON)."""
    run: dict[str, Any] = {"Env": list(env)}
    if entrypoint is not None:
        run["Entrypoint"] = list(entrypoint)
    if cmd is not None:
        run["Cmd"] = list(cmd)
    if working_dir:
        run["WorkingDir"] = working_dir
    if user:
        run["User"] = user
    return {
        "architecture": arch or host_arch(),
        "os": "linux",
        "created": "2023-11-14T22:13:20Z",
        "config": run,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


# --- OCI layout --------------------------------------------------------------------------------


def _put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = sha256(data)
    path = layout / "blobs" / "sha256" / digest.split(":", 1)[1]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": digest, "size": len(data)}


def write_oci_layout(
    rootfs: Path | None,
    dest: Path,
    *,
    ref: str | None = "busybox:latest",
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = ("sh",),
    env: Sequence[str] = DEFAULT_ENV,
    working_dir: str = "",
    user: str = "",
    extra_layers: Sequence[LayerSpec] = (),
    compression: Compression = "gzip",
    arch: str | None = None,
    platforms: Sequence[str] | None = None,
    annotation: Literal["containerd", "oci"] = "containerd",
) -> Path:
    """Write an OCI image layout at `dest` (oci-layout, index.json, blobs/) and return `dest`.

    Layers, bottom to top: `rootfs` (if any), then each of `extra_layers`. With
    `platforms` (architectures), index.json points at an image index holding one manifest
    per architecture (same layers, different config), like a multi-arch registry image.
    `annotation` picks how `ref` is recorded: "containerd" as Docker 25+ and containerd do
    (io.containerd.image.name, plus the tag as org.opencontainers.image.ref.name), or
    "oci" (the full reference in org.opencontainers.image.ref.name).
    """
    dest.mkdir(parents=True, exist_ok=True)
    tars = _layers(rootfs, extra_layers)
    layer_descs = []
    for data in tars:
        blob, media_type = compress(data, compression)
        layer_descs.append({"mediaType": media_type, **_put_blob(dest, blob)})
    diff_ids = [sha256(t) for t in tars]

    def manifest_for(arch_: str | None) -> dict[str, Any]:
        config = image_config(
            diff_ids,
            arch=arch_,
            entrypoint=entrypoint,
            cmd=cmd,
            env=env,
            working_dir=working_dir,
            user=user,
        )
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, **_put_blob(dest, _dumps(config))},
            "layers": layer_descs,
        }
        return {"mediaType": OCI_MANIFEST, **_put_blob(dest, _dumps(manifest))}

    if platforms:
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {**manifest_for(a), "platform": {"os": "linux", "architecture": a}}
                for a in platforms
            ],
        }
        top = {"mediaType": OCI_INDEX, **_put_blob(dest, _dumps(index))}
    else:
        top = manifest_for(arch)
    if ref is not None:
        if annotation == "containerd":
            tag = ref.rpartition(":")[2] if ":" in ref.rpartition("/")[2] else "latest"
            top["annotations"] = {
                "io.containerd.image.name": ref,
                "org.opencontainers.image.ref.name": tag,
            }
        else:
            top["annotations"] = {"org.opencontainers.image.ref.name": ref}
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (dest / "index.json").write_bytes(
        _dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [top]})
    )
    return dest


def layout_top_digest(layout: Path) -> str:
    """The digest index.json points at first (a manifest, or an index for multi-arch)."""
    return str(json.loads((layout / "index.json").read_text())["manifests"][0]["digest"])


def layout_blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def layout_layer_digests(layout: Path) -> list[str]:
    """The layer blob digests of a single-manifest layout, bottom to top."""
    manifest = json.loads(layout_blob(layout, layout_top_digest(layout)).read_bytes())
    return [layer["digest"] for layer in manifest["layers"]]


def corrupt(path: Path) -> None:
    """Flip one byte in the middle of a file (its digest no longer matches)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def write_oci_archive(rootfs: Path | None, dest: Path, **kwargs: Any) -> Path:
    """An OCI layout packed in a tar file (what `skopeo copy ... oci-archive:` writes)."""
    with tempfile.TemporaryDirectory() as tmp:
        layout = write_oci_layout(rootfs, Path(tmp) / "layout", **kwargs)
        with tarfile.open(dest, "w") as tar:
            for child in sorted(os.listdir(layout)):
                tar.add(layout / child, arcname=child)
    return dest


# --- docker save -------------------------------------------------------------------------------


def write_docker_save(
    rootfs: Path | None,
    dest: Path,
    *,
    repo_tags: Sequence[str] = ("busybox:latest",),
    entrypoint: Sequence[str] | None = None,
    cmd: Sequence[str] | None = ("sh",),
    env: Sequence[str] = DEFAULT_ENV,
    extra_layers: Sequence[LayerSpec] = (),
    arch: str | None = None,
) -> Path:
    """A `docker save` tarball in the classic format (Docker before 25) at `dest`.

    manifest.json, `<config hex>.json`, and `<layer id>/layer.tar` (uncompressed).
    """
    tars = _layers(rootfs, extra_layers)
    diff_ids = [sha256(t) for t in tars]
    config = _dumps(image_config(diff_ids, arch=arch, entrypoint=entrypoint, cmd=cmd, env=env))
    config_name = sha256(config).split(":", 1)[1] + ".json"
    files: list[tuple[str, bytes]] = [(config_name, config)]
    layer_names = []
    for data, diff_id in zip(tars, diff_ids, strict=True):
        layer_id = diff_id.split(":", 1)[1]  # real docker uses a chain id; any name works
        files.append((f"{layer_id}/VERSION", b"1.0"))
        files.append((f"{layer_id}/layer.tar", data))
        layer_names.append(f"{layer_id}/layer.tar")
    manifest = [{"Config": config_name, "RepoTags": list(repo_tags), "Layers": layer_names}]
    files.append(("manifest.json", json.dumps(manifest).encode()))
    with tarfile.open(dest, "w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), MTIME, 0o644
            tar.addfile(info, io.BytesIO(data))
    return dest


# --- crafted layers that must be refused ---------------------------------------------------------


def traversal_layer(name: str = "../evil") -> list[Entry]:
    return [file("ok", "fine"), file(name, "escaped")]


def absolute_layer(path: str) -> list[Entry]:
    return [file(path, "escaped")]


def symlink_escape_layer(outside: str = "/etc") -> list[Entry]:
    """`link -> outside`, then a file written through it (`link/passwd`)."""
    return [symlink("link", outside), file("link/passwd", "pwned")]


def relative_symlink_escape_layer() -> list[Entry]:
    return [directory("a"), symlink("a/up", "../../outside")]


def hardlink_escape_layer(target: str) -> list[Entry]:
    """A hard link to `target`, which is outside the layer (absolute or with `..`)."""
    return [hardlink("stolen", target)]


def device_layer() -> list[Entry]:
    return [directory("dev"), device("dev/sda", 8, 0, block=True)]


def check_root_marker(request: pytest.FixtureRequest) -> None:
    """For an autouse fixture: a test marked `root` skips without root (fails under CI=true)."""
    if request.node.get_closest_marker("root") is not None and os.geteuid() != 0:
        skip_or_fail("needs root")
