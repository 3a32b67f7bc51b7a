"""The agent's local image store: content-addressed blobs, unpacked layers, and image names.

Layout under the root (default /var/lib/corral/images):

    blobs/sha256/<hex>          every blob (index, manifest, config, layer), digest-verified
    layers/<diffid-hex>/rootfs  one unpacked layer, shared by every image and pod using it
    layers/<diffid-hex>/layer.json   {"diff_id", "blob", "size"}
    images.json                 names -> manifest digest, and one record per image
    tmp/                        staging, same filesystem, so finished work is a rename away
    doomed/                     layer dirs gc took out of layers/, until `purge` deletes them
    lock                        flock: one writer (import, remove, gc) at a time
    purge.lock                  flock: one deleter of doomed/ at a time

Everything appears by rename after it is complete and synced, so a crash leaves either
the old state or the new one, plus litter in tmp/ that the next writer clears and blobs or
layers no image names, which gc reclaims. An import is all or nothing: a refused blob or
layer rolls back every blob and layer it added, and no name changes.

The import path is the pull path: a source (an OCI layout, an OCI archive, a `docker
save` tarball; later a registry) puts blobs in with `ImportTransaction.add_blob`, then
`add_image` reads the manifest and config from the store, fetches missing blobs through
the source's callback, unpacks layers and files the names, committed when the
transaction ends.

Readers (`get`, `list`, `layer_dirs`) take no lock: images.json is replaced atomically and
blobs never change. `gc` must not race a pod start that has its layer dirs but has not
mounted them yet: the native runtime takes an image for a start, and image gc removes
one, under the runtime's `image_lock` (agent/imagegc.py).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from agent.runtime.native import tarsafe
from agent.runtime.native.oci import (
    ERR_IMAGE_NEVER_PULL,
    MAX_JSON_DOCUMENT,
    Descriptor,
    Fetch,
    ImageConfig,
    ImageError,
    ImageRef,
    digest_hex,
    document_kind,
    is_digest,
    load_json,
    open_source,
    parse_config,
    parse_manifest,
    parse_reference,
    platform_matches,
    read_images,
)
from agent.runtime.native.rootfs import remove_tree
from common.version import host_arch

__all__ = ["GcStats", "Image", "ImageConfig", "ImageError", "ImageStore", "image_main"]

_LOGGER = logging.getLogger(__name__)

DEFAULT_ROOT = Path("/var/lib/corral/images")
_STATE_VERSION = 1
_CHUNK = 1 << 20
_HEX_RE = re.compile(r"[a-f0-9]{64}")


@dataclass(frozen=True, slots=True)
class Image:
    """One image in the store, under the name it was asked for (or listed by)."""

    ref: str  # normalized: docker.io/library/busybox:latest, repo@sha256:..., or a bare digest
    digest: str  # the manifest digest
    diff_ids: tuple[str, ...]  # uncompressed layer digests, bottom to top
    config: ImageConfig
    size: int  # bytes of file content in its layers, unpacked
    config_digest: str

    @property
    def repo_digest(self) -> str:
        """`docker.io/library/busybox@sha256:...` (its repository, its manifest digest), or
        the bare digest for an image known by digest alone: what containerd's CRI reports
        as a container's `imageID`, so the native runtime reports it too."""
        if is_digest(self.ref):
            return self.digest
        return f"{parse_reference(self.ref).repository}@{self.digest}"


@dataclass(frozen=True, slots=True)
class GcStats:
    blobs_removed: int
    layers_removed: int
    bytes_freed: int


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _syncfs(path: Path) -> None:
    """Flush a whole unpacked tree at once (one syscall instead of an fsync per file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a tree (or a file) of any depth: `rootfs.remove_tree`, iterative and one
    descriptor at a time, never following a link. shutil.rmtree recursed once a level, so
    a tree deeper than Python's recursion limit raised RecursionError and, left in tmp/,
    failed every later import, pull and gc. What cannot be removed is left and logged
    (tmp/ is swept again by the next writer)."""
    remove_tree(path)
    if os.path.lexists(path):
        _LOGGER.warning("could not remove all of %s; left for the next sweep", path)


class ImportTransaction:
    """One all-or-nothing change to the store; get one from `ImageStore.transaction()`.

    It is the `oci.ImageSink` that sources write into. A registry pull will be another
    source: fetch the manifest with `add_blob`, then `add_image` with a `fetch` callback
    that downloads each missing blob into `add_blob` (which verifies digest and size).
    """

    def __init__(self, store: ImageStore, state: dict[str, Any]) -> None:
        self.store = store
        self.arch = store.arch
        self.state = state
        self.added_blobs: list[str] = []
        self.added_layers: list[str] = []
        self.images: list[str] = []  # manifest digests added, in order

    def add_blob(self, src: BinaryIO, digest: str | None = None, size: int | None = None) -> str:
        """Copy `src` into the store and return its digest, refusing a digest or size mismatch.

        Written to a temp file beside the blobs, fsynced, checked, then renamed: a refused
        or interrupted blob never appears under blobs/.
        """
        store = self.store
        if digest is not None and store.has_blob(digest):
            return digest  # verified when it came in; content addressing makes this a no-op
        what = f"blob {digest}" if digest else "blob"
        h, n = hashlib.sha256(), 0
        fd, tmp_name = tempfile.mkstemp(dir=store.tmp, prefix="blob-")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := src.read(_CHUNK):
                    n += len(chunk)
                    if size is not None and n > size:
                        raise ImageError(f"{what}: larger than the {size} bytes declared")
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            got = "sha256:" + h.hexdigest()
            if digest is not None and got != digest:
                raise ImageError(f"{what}: digest mismatch (content hashes to {got})")
            if size is not None and n != size:
                raise ImageError(f"{what}: {n} bytes, {size} declared")
            final = store.blob_path(got)
            if final.exists():
                tmp.unlink()
            else:
                os.rename(tmp, final)
                _fsync_dir(final.parent)
                self.added_blobs.append(got)
            return got
        finally:
            tmp.unlink(missing_ok=True)

    def read_blob(self, digest: str, what: str) -> bytes:
        return self.store.read_blob(digest, what)

    def open_blob(self, digest: str) -> BinaryIO:
        return open(self.store.blob_path(digest), "rb")

    def _ensure_blob(self, desc: Descriptor, fetch: Fetch) -> None:
        if not self.store.has_blob(desc.digest):
            fetch(desc)
            if not self.store.has_blob(desc.digest):
                raise ImageError(f"blob {desc.digest} ({desc.media_type}) was not provided")

    def ensure_layer(self, blob: str, media_type: str, diff_id: str) -> int:
        """Unpack a layer blob unless its directory exists; return its unpacked size."""
        store = self.store
        layer_dir = store.layers / digest_hex(diff_id)
        if layer_dir.exists():
            return store.layer_size(diff_id)
        staging = Path(tempfile.mkdtemp(dir=store.tmp, prefix="layer-"))
        try:
            rootfs = staging / "rootfs"
            rootfs.mkdir(mode=0o755)
            with open(store.blob_path(blob), "rb") as raw:
                size = tarsafe.unpack_layer(
                    raw,
                    rootfs,
                    media_type=media_type,
                    diff_id=diff_id,
                    what=f"layer {diff_id}",
                    max_bytes=store.max_layer_bytes,
                )
            meta = {"diff_id": diff_id, "blob": blob, "size": size}
            (staging / "layer.json").write_text(json.dumps(meta))
            _syncfs(staging)
            os.rename(staging, layer_dir)  # the layer appears whole or not at all
            _fsync_dir(store.layers)
        finally:
            _remove(staging)
        self.added_layers.append(diff_id)
        return size

    def add_image(
        self, manifest: str, names: Iterable[ImageRef], *, fetch: Fetch, aliases: Iterable[str] = ()
    ) -> None:
        """File the image whose manifest blob `manifest` is in the store, under `names`.

        Fetches what the manifest refers to through `fetch`, checks the platform, unpacks
        the layers, and records names: `repo:tag` for each name, plus `repo@<digest>` for the
        manifest and for each of `aliases` (digests of indexes that led here), so pinned
        references resolve too. With no names, the bare digest names the image.
        """
        store = self.store
        what = f"image {manifest}"
        doc = load_json(store.read_blob(manifest, what), what)
        if document_kind(doc, None, what) != "manifest":
            raise ImageError(f"{what}: expected an image manifest, found an index")
        parsed = parse_manifest(doc, what)
        self._ensure_blob(parsed.config, fetch)
        config = parse_config(store.read_blob(parsed.config.digest, what), f"{what} config")
        plat = config.platform
        if plat.os and not platform_matches(plat, store.arch):
            raise ImageError(f"{what} is for {plat}, this node is linux/{store.arch}")
        if len(config.diff_ids) != len(parsed.layers):
            raise ImageError(
                f"{what}: {len(parsed.layers)} layers but "
                f"{len(config.diff_ids)} diff_ids in its config"
            )
        sizes: dict[str, int] = {}  # by diff_id: a layer used twice takes its space once
        for layer, diff_id in zip(parsed.layers, config.diff_ids, strict=True):
            self._ensure_blob(layer, fetch)
            sizes[diff_id] = self.ensure_layer(layer.digest, layer.media_type, diff_id)
        alias_list = [a for a in aliases if a != manifest]
        self.state["images"][manifest] = {
            "media_type": parsed.media_type,
            "config": parsed.config.digest,
            "layers": [
                {"digest": d.digest, "media_type": d.media_type, "size": d.size, "diff_id": i}
                for d, i in zip(parsed.layers, config.diff_ids, strict=True)
            ],
            "aliases": alias_list,
            "size": sum(sizes.values()),
        }
        table: dict[str, str] = self.state["names"]
        names = list(names)
        for ref in names:
            table[ref.key()] = manifest
            for digest in (manifest, *alias_list):
                table[f"{ref.repository}@{digest}"] = manifest
        if names:
            table.pop(manifest, None)  # no longer untagged
        elif not any(v == manifest for v in table.values()):
            table[manifest] = manifest
        _prune_records(self.state)  # a tag that moved may have orphaned another image
        self.images.append(manifest)

    def rollback(self) -> None:
        for diff_id in self.added_layers:
            _remove(self.store.layers / digest_hex(diff_id))
        for digest in self.added_blobs:
            self.store.blob_path(digest).unlink(missing_ok=True)


def _prune_records(state: dict[str, Any]) -> None:
    """Drop image records no name points to (their blobs are left for gc)."""
    named = set(state["names"].values())
    for digest in [d for d in state["images"] if d not in named]:
        del state["images"][digest]


class ImageStore:
    """The local image store. Sync disk I/O: the agent calls it through asyncio.to_thread."""

    def __init__(
        self,
        root: Path | str = DEFAULT_ROOT,
        *,
        arch: str | None = None,
        max_layer_bytes: int = tarsafe.MAX_LAYER_BYTES,
    ) -> None:
        self.root = Path(root)
        self.arch = arch or host_arch()
        # Uncompressed bytes one layer may unpack to (the agent's max_layer_bytes): a layer
        # over it fails its import or pull, and nothing of it is kept.
        self.max_layer_bytes = max_layer_bytes
        self.blobs = self.root / "blobs" / "sha256"
        self.layers = self.root / "layers"
        self.tmp = self.root / "tmp"
        # Not below tmp/: every writer clears tmp/ under the store's lock, and a pass of
        # image gc deletes what it doomed after letting that lock go (a big tree takes
        # seconds); in tmp/ an import would have deleted the same tree at the same time.
        self.doomed = self.root / "doomed"
        self.state_path = self.root / "images.json"
        self._configs: dict[str, ImageConfig] = {}  # config digest -> parsed (blobs never change)

    # --- blobs and layers ---

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest_hex(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str, what: str) -> bytes:
        path = self.blob_path(digest)
        try:
            if path.stat().st_size > MAX_JSON_DOCUMENT:
                raise ImageError(f"{what}: blob {digest} is too large for a JSON document")
            return path.read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{what}: blob {digest} is missing", ERR_IMAGE_NEVER_PULL) from None

    def layer_size(self, diff_id: str) -> int:
        meta = self.layers / digest_hex(diff_id) / "layer.json"
        try:
            return int(json.loads(meta.read_text())["size"])
        except (OSError, ValueError, KeyError):
            return 0

    # --- state ---

    def _load_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return {"version": _STATE_VERSION, "names": {}, "images": {}}
        except ValueError as err:
            raise ImageError(f"{self.state_path} is corrupt: {err}") from None
        if state.get("version") != _STATE_VERSION:
            raise ImageError(f"{self.state_path}: unknown version {state.get('version')!r}")
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".images.json.")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(state, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, self.state_path)
            _fsync_dir(self.root)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        for path in (self.blobs, self.layers, self.tmp):
            path.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # also excludes other processes (the CLI)
            yield

    def _clear_tmp(self) -> None:
        """Leftovers of a writer that crashed; only called with the lock held."""
        for entry in self.tmp.iterdir():
            _remove(entry)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ImportTransaction]:
        """Lock the store and yield a transaction; commit its names on success, else roll back."""
        with self._locked():
            self._clear_tmp()
            txn = ImportTransaction(self, self._load_state())
            try:
                yield txn
                self._save_state(txn.state)
            except BaseException:
                txn.rollback()
                raise

    # --- import ---

    def import_path(self, path: Path | str, *, name: str | None = None) -> list[Image]:
        """Import every image in an OCI layout dir, OCI archive or `docker save` tarball.

        `name`, if given, is added to the imported image (there must be exactly one).
        Returns the images under their first name (or digest). All or nothing.
        """
        path = Path(path)
        extra = [parse_reference(name)] if name is not None else []
        with open_source(path) as src, self.transaction() as txn:
            try:
                read_images(txn, src, str(path), extra)
            except OSError as err:
                raise ImageError(f"{path}: {err}") from err
            state = txn.state
        return [self._image(_first_name(state, d), d, state["images"][d]) for d in txn.images]

    # --- queries ---

    def _image(self, ref: str, digest: str, record: dict[str, Any]) -> Image:
        config_digest = record["config"]
        config = self._configs.get(config_digest)
        if config is None:
            data = self.read_blob(config_digest, f"image {digest} config")
            config = parse_config(data, f"image {digest} config").config
            self._configs[config_digest] = config
        diff_ids = tuple(layer["diff_id"] for layer in record["layers"])
        return Image(ref, digest, diff_ids, config, int(record["size"]), config_digest)

    def _resolve(self, state: dict[str, Any], ref: str) -> tuple[str, str] | None:
        """(normalized name, manifest digest) for a reference or bare digest, None if absent."""
        if is_digest(ref):
            if ref in state["images"]:
                return ref, ref
            for key, digest in state["names"].items():  # an index digest, known by alias
                if key.endswith("@" + ref):
                    return ref, digest
            return None
        key = parse_reference(ref).key()
        digest = state["names"].get(key)
        return (key, digest) if digest in state["images"] else None

    def get(self, ref: str) -> Image | None:
        """The image a reference names (any spelling Docker accepts, or a digest), else None.

        Raises ImageError(InvalidImageName) when `ref` does not parse.
        """
        state = self._load_state()
        found = self._resolve(state, ref)
        if found is None:
            return None
        key, digest = found
        return self._image(key, digest, state["images"][digest])

    def digests_of(self, refs: Iterable[str]) -> set[str]:
        """The manifest digests of the images here that `refs` name, the state read once
        for all of them (image gc asks for every pod's, under the lock pod starts take); a
        reference that does not parse is left out."""
        state = self._load_state()
        digests = set()
        for ref in set(refs):
            try:
                found = self._resolve(state, ref)
            except ImageError:
                continue
            if found is not None:
                digests.add(found[1])
        return digests

    def require(self, ref: str) -> Image:
        """Like `get`, but ImageError(ErrImageNeverPull) when the image is not here."""
        image = self.get(ref)
        if image is None:
            raise ImageError(
                f"image {ref!r} is not in the node's image store (import it with "
                "`corral-agent image import`)",
                ERR_IMAGE_NEVER_PULL,
            )
        return image

    def list(self) -> list[Image]:
        """One entry per tag; images with no tag once, under a digest name."""
        state = self._load_state()
        result = []
        for digest, record in state["images"].items():
            names = sorted(k for k, v in state["names"].items() if v == digest)
            tags = [n for n in names if "@" not in n and not is_digest(n)]
            for name in tags or names[:1]:
                result.append(self._image(name, digest, record))
        return sorted(result, key=lambda i: i.ref)

    def layer_dirs(self, image: Image) -> builtins.list[Path]:  # `list` is a method here
        """The image's layer roots, top first (overlayfs `lowerdir=` order).

        A layer used twice appears once, at its topmost place (the lower copy changes
        nothing). A layer directory that went missing is unpacked again from its blob.
        """
        seen: set[str] = set()
        dirs = []
        for diff_id in reversed(image.diff_ids):
            if diff_id in seen:
                continue
            seen.add(diff_id)
            path = self.layers / digest_hex(diff_id) / "rootfs"
            if not path.is_dir():
                self._repair_layer(image, diff_id)
            dirs.append(path)
        return dirs

    def _repair_layer(self, image: Image, diff_id: str) -> None:
        record = self._load_state()["images"].get(image.digest)
        layer = next((x for x in (record or {}).get("layers", []) if x["diff_id"] == diff_id), None)
        if layer is None or not self.has_blob(layer["digest"]):
            raise ImageError(
                f"layer {diff_id} of {image.ref} is missing; import the image again",
                ERR_IMAGE_NEVER_PULL,
            )
        _LOGGER.warning("layer %s of %s was missing; unpacking it again", diff_id, image.ref)
        with self.transaction() as txn:
            txn.ensure_layer(layer["digest"], layer["media_type"], diff_id)

    # --- removal ---

    def remove(self, ref: str) -> None:
        """Drop a name (as `docker rmi` untags). A bare digest drops every name of that image.

        When a repository loses its last tag for an image, its `repo@digest` names go too;
        an image with no names left is forgotten, and gc reclaims its blobs and layers.
        """
        with self._locked():
            state = self._load_state()
            found = self._resolve(state, ref)
            if found is None:
                raise ImageError(f"no such image: {ref}", ERR_IMAGE_NEVER_PULL)
            key, digest = found
            names: dict[str, str] = state["names"]
            if is_digest(key):
                for name in [k for k, v in names.items() if v == digest]:
                    del names[name]
            else:
                del names[key]
                repo = key.split("@", 1)[0] if "@" in key else key.rsplit(":", 1)[0]
                if not any(v == digest and k.startswith(repo + ":") for k, v in names.items()):
                    for name in [k for k, v in names.items() if k.startswith(repo + "@")]:
                        if names[name] == digest:
                            del names[name]
            _prune_records(state)
            self._save_state(state)

    def gc(
        self, in_use: Iterable[str | Path] = (), *, doomed: builtins.list[Path] | None = None
    ) -> GcStats:
        """Delete blobs and layer dirs that no image refers to and no running pod uses.

        `in_use` holds layer dirs (paths from `layer_dirs`) or diff_ids (or their hex) of
        running containers: kept even when no image names them any more. Each layer dir
        is renamed into doomed/ before it is deleted, so a crash never leaves a partial
        layer under layers/. With `doomed`, the renamed dirs are added to it instead of
        deleted, for the caller to `purge` later (deleting a big tree takes seconds,
        which image gc spends outside its lock).
        """
        keep_layers = {_layer_hex(item) for item in in_use}
        moved: builtins.list[Path] = []
        with self._locked():
            self._clear_tmp()
            self.doomed.mkdir(exist_ok=True)
            state = self._load_state()
            keep_blobs: set[str] = set()
            for digest, record in state["images"].items():
                keep_blobs.update((digest, record["config"], *record["aliases"]))
                for layer in record["layers"]:
                    keep_blobs.add(layer["digest"])
                    keep_layers.add(digest_hex(layer["diff_id"]))
            blobs = layers = freed = 0
            for blob in self.blobs.iterdir():
                if "sha256:" + blob.name not in keep_blobs:
                    freed += blob.stat().st_size
                    blob.unlink()
                    blobs += 1
            for layer_dir in self.layers.iterdir():
                if layer_dir.name not in keep_layers:
                    if _HEX_RE.fullmatch(layer_dir.name):
                        freed += self.layer_size("sha256:" + layer_dir.name)
                    target = self.doomed / f"{layer_dir.name}.{os.urandom(4).hex()}"
                    os.rename(layer_dir, target)
                    moved.append(target)
                    layers += 1
        if doomed is None:
            self.purge()
        else:
            doomed.extend(moved)
        return GcStats(blobs, layers, freed)

    def purge(self) -> None:
        """Delete the layer dirs `gc` moved to doomed/ (those a crash left there too).

        Outside the store's lock, which imports and pulls wait on; under a lock of its
        own, so that two purges never delete one tree at once. Nothing else deletes in
        doomed/: a writer clears tmp/ only."""
        if not self.doomed.is_dir():
            return  # no gc yet
        with open(self.root / "purge.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for path in self.doomed.iterdir():
                _remove(path)


def _layer_hex(item: str | Path) -> str:
    text = str(item)
    if is_digest(text):
        return digest_hex(text)
    path = Path(text)
    return (path.parent if path.name == "rootfs" else path).name


def _first_name(state: dict[str, Any], digest: str) -> str:
    names = sorted(k for k, v in state["names"].items() if v == digest)
    tags = [n for n in names if "@" not in n and not is_digest(n)]
    return (tags or names or [digest])[0]


# --- command line ------------------------------------------------------------------------------


def _human_size(n: int) -> str:
    """Decimal units with four significant digits, as `docker images` prints sizes."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.4g}{unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _ls_row(image: Image) -> tuple[str, str, str, str]:
    digest = image.digest.split(":", 1)[1][:12]
    if is_digest(image.ref):
        return "<none>", "<none>", digest, _human_size(image.size)
    ref = parse_reference(image.ref)
    tag = ref.tag if ref.digest is None and ref.tag else "<none>"
    return ref.familiar_repository, tag, digest, _human_size(image.size)


def _familiar(ref: str) -> str:
    if is_digest(ref):
        return ref
    parsed = parse_reference(ref)
    suffix = f"@{parsed.digest}" if parsed.digest else f":{parsed.tag}"
    return parsed.familiar_repository + suffix


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of bytes")
    return value


def image_main(argv: list[str]) -> int:
    """`corral-agent image import PATH | pull REF | ls | rm REF... [--root DIR]`; returns the
    exit code."""
    parser = argparse.ArgumentParser(
        prog="corral-agent image", description="Manage the node's local image store."
    )
    parser.add_argument("--root", default=str(DEFAULT_ROOT), help="store directory")
    sub = parser.add_subparsers(dest="command", required=True)
    p_import = sub.add_parser("import", help="import an OCI layout, OCI archive or docker save")
    p_import.add_argument("path")
    p_import.add_argument("--name", help="also name the imported image REF")
    p_import.add_argument(
        "--max-layer-bytes",
        type=_positive_int,
        default=tarsafe.MAX_LAYER_BYTES,
        metavar="N",
        help="refuse a layer that unpacks to more than N bytes (default: %(default)s)",
    )
    p_ls = sub.add_parser("ls", help="list images")
    p_rm = sub.add_parser("rm", help="remove image names")
    p_rm.add_argument("refs", nargs="+", metavar="REF")
    p_pull = sub.add_parser("pull", help="pull an image from a registry")
    p_pull.add_argument("ref", metavar="REF")
    p_pull.add_argument("--config", help="the agent's TOML config: registries and credentials")
    p_pull.add_argument(
        "--insecure-registry", action="append", default=[], metavar="HOST", help="plain HTTP"
    )
    p_pull.add_argument("--auth-file", help="Docker config.json-style credentials file")
    for p in (p_import, p_ls, p_rm, p_pull):  # --root is accepted after the subcommand too
        p.add_argument("--root", default=argparse.SUPPRESS, help="store directory")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    store = ImageStore(args.root)
    try:
        if args.command == "import":
            store.max_layer_bytes = args.max_layer_bytes
            for image in store.import_path(args.path, name=args.name):
                print(f"imported {_familiar(image.ref)} {image.digest}")
        elif args.command == "pull":
            from agent.runtime.native.puller import pull_main  # aiohttp only when pulling

            return pull_main(store, args)
        elif args.command == "ls":
            rows = [("REPOSITORY", "TAG", "DIGEST", "SIZE"), *map(_ls_row, store.list())]
            widths = [max(len(row[i]) for row in rows) for i in range(3)]
            for row in rows:
                print(
                    "   ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                    + "   "
                    + row[3]
                )
        else:
            failed = 0
            for ref in args.refs:
                try:
                    store.remove(ref)
                    print(f"untagged {ref}")
                except ImageError as err:
                    print(f"error: {err}", file=sys.stderr)
                    failed = 1
            return failed
    except ImageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"error: {err.strerror or err}: {err.filename or args.root}", file=sys.stderr)
        return 1 if err.errno != errno.EPIPE else 0
    return 0
