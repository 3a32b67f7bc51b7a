"""OCI and Docker image formats: references, JSON documents, and reading image archives.

Everything here turns bytes or strings into typed values, or refuses them with an
`ImageError` that says what was wrong. `read_images` walks an OCI layout (a directory or a
tar: an OCI archive, or Docker 25+'s docker save) or a classic docker save and hands blobs
and images to an `ImageSink`; the store (`images.py`) is the sink and does the writing.

References are normalized the way Docker does it, so `busybox`, `busybox:latest`,
`library/busybox` and `docker.io/library/busybox:latest` are one name:

    [domain/]path[:tag][@sha256:hex]
    no domain (first component has no '.' or ':' and is not 'localhost') -> docker.io
    docker.io and a single path component                                  -> library/<name>
    no tag and no digest                                                   -> :latest
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from agent.runtime.base import RuntimeFailure

# Kubernetes-style reasons carried by ImageError (shown in container status).
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"  # not in the local store (and nothing pulls it)
INVALID_IMAGE_NAME = "InvalidImageName"  # the reference does not parse
ERR_IMAGE_IMPORT = "ErrImageImport"  # the image's content is corrupt, unsafe or unsupported

MAX_JSON_DOCUMENT = 16 << 20  # manifests and configs are small; never slurp a huge "config"
DEFAULT_DOMAIN = "docker.io"
DEFAULT_TAG = "latest"

# Media types. Docker's v2 schema 2 types are the OCI ones under older names.
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES = frozenset(
    {
        OCI_LAYER,
        OCI_LAYER_GZIP,
        OCI_LAYER_ZSTD,
        # Non-distributable ("foreign") layers are ordinary tars once their blob is here.
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        DOCKER_LAYER,
        DOCKER_LAYER_GZIP,
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)

# Annotations that name an image inside an OCI layout's index.json. containerd and
# Docker (25+) put the full reference in the first; the OCI convention is a tag in the second.
ANNOTATION_FULL_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}")
_HEX_RE = re.compile(r"[a-f0-9]{64}")
_PATH_COMPONENT_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_RE = re.compile(
    r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*(?::[0-9]+)?"
)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}")


class ImageError(RuntimeFailure):
    """An image operation failed; `reason` is Kubernetes-style (ErrImageNeverPull, ...)."""

    def __init__(self, message: str, reason: str = ERR_IMAGE_IMPORT) -> None:
        super().__init__(message, reason)


def is_digest(value: str) -> bool:
    """True for a full `sha256:<64 hex>` digest (the only algorithm corral accepts)."""
    return _DIGEST_RE.fullmatch(value) is not None


def digest_hex(digest: str) -> str:
    """The hex part of a digest, after checking its form (safe to use as a file name)."""
    if not is_digest(digest):
        raise ImageError(f"unsupported or malformed digest {digest!r} (want sha256:<64 hex>)")
    return digest.split(":", 1)[1]


# --- references --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A normalized image reference: domain, path, and a tag or a digest (or both)."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """`docker.io/library/busybox`."""
        return f"{self.domain}/{self.path}"

    @property
    def familiar_repository(self) -> str:
        """The short spelling people type: `busybox`, `user/app`, `ghcr.io/o/app`."""
        if self.domain == DEFAULT_DOMAIN:
            return self.path.removeprefix("library/")
        return self.repository

    def key(self) -> str:
        """The name the store files it under: `repo@digest` when pinned, else `repo:tag`."""
        if self.digest is not None:
            return f"{self.repository}@{self.digest}"
        return f"{self.repository}:{self.tag or DEFAULT_TAG}"

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str) -> ImageRef:
    """Parse and normalize an image reference like Docker; ImageError(InvalidImageName) if bad."""

    def invalid(why: str) -> ImageError:
        return ImageError(f"invalid image reference {text!r}: {why}", INVALID_IMAGE_NAME)

    if not text or text != text.strip():
        raise invalid("empty or surrounded by whitespace")
    rest, digest = text, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_digest(digest):
            raise invalid("digest must be sha256:<64 lowercase hex>")
    tag = None
    # A colon after the last slash separates the tag; earlier colons belong to a host:port.
    slash, colon = rest.rfind("/"), rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            raise invalid(f"bad tag {tag!r}")
    first, sep, remainder = rest.partition("/")
    looks_like_host = (
        any(c in first for c in ".:") or first == "localhost" or first != first.lower()
    )
    if sep and looks_like_host:
        domain, path = first, remainder
        if not _DOMAIN_RE.fullmatch(domain):
            raise invalid(f"bad registry host {domain!r}")
    else:
        domain, path = DEFAULT_DOMAIN, rest
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    for component in path.split("/"):
        if not _PATH_COMPONENT_RE.fullmatch(component):
            if component.lower() != component:
                raise invalid("repository name must be lowercase")
            raise invalid(f"bad path component {component!r}")
    if len(domain) + 1 + len(path) > 255:
        raise invalid("name longer than 255 characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return ImageRef(domain, path, tag, digest)


# --- JSON documents ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A pointer to a blob: what it is, its digest, its size (and, in an index, its platform)."""

    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: Platform | None = None


@dataclass(frozen=True, slots=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: list[Descriptor]


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What the image says to run, from the config blob's `config` section."""

    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class ConfigBlob:
    """The parts of an image config blob that the store needs."""

    platform: Platform
    diff_ids: list[str]
    config: ImageConfig


def load_json(data: bytes, what: str) -> dict[str, Any]:
    """Parse a JSON object, or refuse naming `what` it was supposed to be."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ImageError(f"{what}: not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise ImageError(f"{what}: expected a JSON object")
    return doc


def _str_list(value: Any, what: str) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"{what}: expected a list of strings")
    return list(value)


def parse_descriptor(obj: Any, what: str) -> Descriptor:
    """Check and convert one descriptor object."""
    if not isinstance(obj, dict):
        raise ImageError(f"{what}: descriptor must be an object")
    media_type, digest, size = obj.get("mediaType"), obj.get("digest"), obj.get("size")
    if not isinstance(media_type, str) or not media_type:
        raise ImageError(f"{what}: descriptor has no mediaType")
    if not isinstance(digest, str) or not is_digest(digest):
        raise ImageError(f"{what}: unsupported or malformed digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"{what}: bad size {size!r}")
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise ImageError(f"{what}: annotations must be an object")
    plat = None
    if isinstance(obj.get("platform"), dict):
        p = obj["platform"]
        plat = Platform(str(p.get("os", "")), str(p.get("architecture", "")), p.get("variant"))
    return Descriptor(
        media_type, digest, size, {str(k): str(v) for k, v in annotations.items()}, plat
    )


def document_kind(doc: dict[str, Any], media_type: str | None, what: str) -> str:
    """`"index"` or `"manifest"`; the document's mediaType must agree with its descriptor's."""
    declared = doc.get("mediaType")
    if declared is not None and media_type is not None and declared != media_type:
        # The OCI spec requires they match; a mismatch means someone is confused or lying.
        raise ImageError(f"{what}: mediaType {declared!r} but its descriptor says {media_type!r}")
    kind = declared or media_type
    if kind in DOCKER_SCHEMA1 or doc.get("schemaVersion") == 1:
        raise ImageError(f"{what}: Docker schema 1 manifests are not supported; re-save the image")
    if kind in INDEX_TYPES or (kind is None and "manifests" in doc):
        return "index"
    if kind in MANIFEST_TYPES or (kind is None and "layers" in doc):
        return "manifest"
    raise ImageError(f"{what}: unsupported media type {kind!r}")


def parse_index(doc: dict[str, Any], what: str) -> list[Descriptor]:
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise ImageError(f"{what}: index has no manifests list")
    return [parse_descriptor(m, f"{what} manifests[{i}]") for i, m in enumerate(manifests)]


def parse_manifest(doc: dict[str, Any], what: str) -> Manifest:
    config = parse_descriptor(doc.get("config"), f"{what} config")
    if config.media_type not in CONFIG_TYPES:
        raise ImageError(f"{what}: not a container image (config media type {config.media_type})")
    raw_layers = doc.get("layers")
    if not isinstance(raw_layers, list):
        raise ImageError(f"{what}: manifest has no layers list")
    layers = [parse_descriptor(d, f"{what} layers[{i}]") for i, d in enumerate(raw_layers)]
    for layer in layers:
        if layer.media_type not in LAYER_TYPES:
            raise ImageError(
                f"{what}: layer {layer.digest} has unsupported media type {layer.media_type}"
            )
    return Manifest(str(doc.get("mediaType") or OCI_MANIFEST), config, layers)


def parse_config(data: bytes, what: str) -> ConfigBlob:
    """The platform, the layer diff_ids (bottom to top) and the run settings of an image."""
    doc = load_json(data, what)
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, dict) or rootfs.get("type") != "layers":
        raise ImageError(f"{what}: rootfs.type must be 'layers'")
    diff_ids = _str_list(rootfs.get("diff_ids"), f"{what} rootfs.diff_ids") or []
    for diff_id in diff_ids:
        if not is_digest(diff_id):
            raise ImageError(f"{what}: unsupported or malformed diff_id {diff_id!r}")
    run = doc.get("config") or {}
    if not isinstance(run, dict):
        raise ImageError(f"{what}: config must be an object")
    image_config = ImageConfig(
        entrypoint=_str_list(run.get("Entrypoint"), f"{what} config.Entrypoint"),
        cmd=_str_list(run.get("Cmd"), f"{what} config.Cmd"),
        env=_str_list(run.get("Env"), f"{what} config.Env") or [],
        working_dir=str(run.get("WorkingDir") or ""),
        user=str(run.get("User") or ""),
    )
    plat = Platform(str(doc.get("os", "")), str(doc.get("architecture", "")), doc.get("variant"))
    return ConfigBlob(plat, diff_ids, image_config)


def platform_matches(plat: Platform, arch: str) -> bool:
    return plat.os == "linux" and plat.architecture == arch


def select_platform(manifests: list[Descriptor], arch: str, what: str) -> Descriptor:
    """The manifest for linux/`arch` from an index; ImageError listing what there is otherwise."""
    matches = [
        m for m in manifests if m.platform is not None and platform_matches(m.platform, arch)
    ]
    if not matches:
        available = sorted({str(m.platform) for m in manifests if m.platform is not None})
        raise ImageError(
            f"{what}: no image for linux/{arch} (has: {', '.join(available) or 'no platforms'})"
        )
    # Several variants of one arch (arm64 v8 and unnamed): the first listed, as Docker does.
    return matches[0]


def names_from_annotations(annotations: dict[str, str]) -> list[ImageRef]:
    """The references an OCI layout's index.json gives one of its manifests.

    A bare tag in `org.opencontainers.image.ref.name` (the OCI convention) names no
    repository, so it yields nothing; the caller may supply a name instead.
    """
    full = annotations.get(ANNOTATION_FULL_NAME)
    if full:
        return [parse_reference(full)]
    ref = annotations.get(ANNOTATION_REF_NAME)
    if ref and any(c in ref for c in "/:@"):
        return [parse_reference(ref)]
    return []


# --- reading images out of OCI layouts and docker save tarballs ------------------------------

Fetch = Callable[[Descriptor], None]
"""Given a descriptor of a blob the sink lacks, put it in (through `add_blob`) or raise."""


class ImageSink(Protocol):
    """Where a source's images go: the store's import transaction (see images.py)."""

    arch: str

    def add_blob(self, src: BinaryIO, digest: str | None = None, size: int | None = None) -> str:
        """Copy a blob in, verifying `digest` and `size` when given; return its digest."""
        ...

    def read_blob(self, digest: str, what: str) -> bytes:
        """A small blob (a JSON document) that is in."""
        ...

    def open_blob(self, digest: str) -> BinaryIO:
        """A blob that is in, for reading."""
        ...

    def add_image(
        self, manifest: str, names: Iterable[ImageRef], *, fetch: Fetch, aliases: Iterable[str] = ()
    ) -> None:
        """File the image whose manifest blob is in, fetching what it refers to."""
        ...


class Source(Protocol):
    """Files of an image archive: a directory, or the members of a tar file."""

    def exists(self, name: str) -> bool: ...

    def open(self, name: str) -> BinaryIO: ...


def _clean_member(name: str) -> str:
    """A path inside a source; refuses ones that could leave it (names come from its JSON)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts:
        raise ImageError(f"refusing path {name!r} in the image archive")
    return "/".join(parts)


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _not_regular(path: Path, mode: int) -> ImageError:
    kind = next((k for test, k in _FILE_KINDS if test(mode)), "not a regular file")
    return ImageError(f"{path}: is {kind}, not a regular file; refusing to read it")


def open_regular(path: Path) -> BinaryIO:
    """`path` opened for reading, if it is a regular file (after symlinks); else ImageError.

    Archives and layouts are handed in by the operator but made by whoever built the
    image: a FIFO would block the import forever at open(), and a device such as
    /dev/zero would stream into the store without end. So the type is checked before the
    open (opening a device can have effects of its own), the open is non-blocking (a FIFO
    swapped in meanwhile cannot hang it), and checked again on the descriptor.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as err:
        raise ImageError(f"{path}: {(err.strerror or str(err)).lower()}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _not_regular(path, st.st_mode)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class _DirSource:
    """A directory (an OCI layout, or an unpacked docker save).

    Symlinks in it are followed, as skopeo and umoci follow them in a layout: the operator
    chose the directory, and what a link reaches is checked like any other content (its
    digest, or a layer's diff_id, must match what the image says). Only regular files
    are read (`open_regular`).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, name: str) -> bool:
        # Anything at that name, so that a FIFO index.json is refused by `open` naming it,
        # rather than the layout being called "not an OCI layout".
        return os.path.lexists(self.root / _clean_member(name))

    def open(self, name: str) -> BinaryIO:
        path = self.root / _clean_member(name)
        if not os.path.lexists(path):
            raise ImageError(f"{self.root}: {name} is missing")
        return open_regular(path)


class _TarSource:
    def __init__(self, path: Path, tar: tarfile.TarFile) -> None:
        self.path = path
        self.tar = tar
        self.members = {_clean_member(m.name): m for m in tar.getmembers() if not m.isdir()}

    def exists(self, name: str) -> bool:
        return _clean_member(name) in self.members

    def open(self, name: str) -> BinaryIO:
        member = self.members.get(_clean_member(name))
        try:
            src = self.tar.extractfile(member) if member is not None else None
        except (RecursionError, KeyError):  # a link member that loops, or leads nowhere
            raise ImageError(f"{self.path}: {name} is a link that loops or leads nowhere") from None
        if src is None:
            raise ImageError(f"{self.path}: {name} is missing from the archive")
        return src  # type: ignore[return-value]


@contextlib.contextmanager
def open_source(path: Path) -> Iterator[Source]:
    """A directory as it is, or a (possibly compressed) tar file's members."""
    if path.is_dir():
        yield _DirSource(path)
        return
    with open_regular(path) as raw:  # a FIFO or a device is refused, never read
        try:
            tar = tarfile.open(fileobj=raw, mode="r:*")
        except (tarfile.TarError, OSError) as err:
            raise ImageError(f"{path}: not a directory or a tar archive ({err})") from None
        with tar:
            yield _TarSource(path, tar)


def read_images(sink: ImageSink, src: Source, what: str, extra: list[ImageRef]) -> None:
    """Put every image of an OCI layout or a docker save into `sink`, plus `extra` names."""
    if src.exists("oci-layout") and src.exists("index.json"):
        _read_oci_layout(sink, src, what, extra)  # also Docker 25+'s docker save
    elif src.exists("manifest.json"):
        _read_docker_save(sink, src, what, extra)
    else:
        raise ImageError(
            f"{what}: no oci-layout + index.json, and no manifest.json: "
            "not an OCI layout, OCI archive or docker save tarball"
        )


def _read_json(src: Source, name: str, what: str) -> Any:
    with src.open(name) as f:
        data = f.read(MAX_JSON_DOCUMENT + 1)
    if len(data) > MAX_JSON_DOCUMENT:
        raise ImageError(f"{what}: {name} is too large")
    try:
        return json.loads(data)
    except ValueError as err:
        raise ImageError(f"{what}: {name} is not valid JSON ({err})") from None


def _read_oci_layout(sink: ImageSink, src: Source, what: str, extra: list[ImageRef]) -> None:
    """Every manifest index.json lists (indexes narrowed to this node's platform)."""
    layout = _read_json(src, "oci-layout", what)
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise ImageError(f"{what}: oci-layout has no imageLayoutVersion")

    def fetch(desc: Descriptor) -> None:
        with src.open(f"blobs/sha256/{digest_hex(desc.digest)}") as f:
            sink.add_blob(f, desc.digest, desc.size)

    index = _read_json(src, "index.json", what)
    if not isinstance(index, dict):
        raise ImageError(f"{what}: index.json must be an object")
    found: dict[str, tuple[list[ImageRef], list[str]]] = {}  # manifest -> names, aliases
    skipped: list[str] = []
    for desc in parse_index(index, f"{what} index.json"):
        names = names_from_annotations(desc.annotations)
        aliases: list[str] = []
        while True:  # down through nested indexes to one manifest
            fetch(desc)
            where = f"{what} {desc.digest}"
            doc = load_json(sink.read_blob(desc.digest, where), where)
            if document_kind(doc, desc.media_type, where) == "manifest":
                break
            if len(aliases) >= 4:
                raise ImageError(f"{what}: indexes nested too deeply")
            aliases.append(desc.digest)
            desc = select_platform(parse_index(doc, where), sink.arch, where)
        if desc.platform is not None and not platform_matches(desc.platform, sink.arch):
            skipped.append(str(desc.platform))
            continue
        entry = found.setdefault(desc.digest, ([], []))
        entry[0].extend(names)
        entry[1].extend(aliases)
    if not found:
        raise ImageError(
            f"{what}: no image for linux/{sink.arch} (has: {', '.join(skipped) or 'nothing'})"
        )
    _add_all(sink, found, extra, fetch, what)


def _add_all(
    sink: ImageSink,
    found: dict[str, tuple[list[ImageRef], list[str]]],
    extra: list[ImageRef],
    fetch: Fetch,
    what: str,
) -> None:
    if extra and len(found) != 1:
        raise ImageError(f"{what}: holds {len(found)} images; a name fits exactly one")
    for manifest, (names, aliases) in found.items():
        sink.add_image(manifest, [*names, *extra], fetch=fetch, aliases=aliases)


def _no_fetch(desc: Descriptor) -> None:
    raise ImageError(f"blob {desc.digest} is missing from the archive")


def _expected_digest(member: str) -> str | None:
    """The digest a docker-save member name promises: `<hex>.json` or `blobs/sha256/<hex>`."""
    base = member.rsplit("/", 1)[-1].removesuffix(".json")
    if _HEX_RE.fullmatch(base) and (member.endswith(".json") or "/sha256/" in f"/{member}"):
        return "sha256:" + base
    return None


def _docker_layer_type(head: bytes) -> str:
    if head.startswith(b"\x1f\x8b"):
        return DOCKER_LAYER_GZIP
    if head == b"\x28\xb5\x2f\xfd":
        return OCI_LAYER_ZSTD
    return DOCKER_LAYER


def _read_docker_save(sink: ImageSink, src: Source, what: str, extra: list[ImageRef]) -> None:
    """A classic `docker save` tarball: manifest.json lists a config and layer tars per image.

    It has no registry manifest, so one (Docker v2 schema 2) is made from the blobs and
    stored like any other; its digest is the image's digest in this store.
    """
    entries = _read_json(src, "manifest.json", what)
    if not isinstance(entries, list) or not entries:
        raise ImageError(f"{what}: manifest.json must be a non-empty list")
    found: dict[str, tuple[list[ImageRef], list[str]]] = {}
    for i, entry in enumerate(entries):
        where = f"{what} manifest.json[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise ImageError(f"{where}: no Config")
        layer_names = entry.get("Layers")
        if not isinstance(layer_names, list) or not all(isinstance(x, str) for x in layer_names):
            raise ImageError(f"{where}: Layers must be a list of paths")
        tags = entry.get("RepoTags") or []
        if not isinstance(tags, list):
            raise ImageError(f"{where}: RepoTags must be a list")
        descriptors = []
        for name, media_type in [(entry["Config"], DOCKER_CONFIG)] + [(n, "") for n in layer_names]:
            with src.open(name) as f:
                # Layer tars carry no digest of their own: hashed here, and checked against
                # the config's diff_ids when unpacked.
                digest = sink.add_blob(f, _expected_digest(name))
            with sink.open_blob(digest) as blob:
                media_type = media_type or _docker_layer_type(blob.read(4))
                size = blob.seek(0, io.SEEK_END)
            descriptors.append({"mediaType": media_type, "size": size, "digest": digest})
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": descriptors[0],
            "layers": descriptors[1:],
        }
        digest = sink.add_blob(io.BytesIO(json.dumps(manifest, indent=3).encode()))
        found.setdefault(digest, ([], []))[0].extend(parse_reference(str(t)) for t in tags)
    _add_all(sink, found, extra, _no_fetch, what)
