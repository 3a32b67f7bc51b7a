"""Layer unpacking: what is kept (modes, owners, links), whiteouts, and what is refused."""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from agent.runtime.native.oci import ImageError
from agent.runtime.native.tarsafe import MAX_DEPTH, MAX_HEADER_BYTES, OPAQUE_XATTR, unpack_layer
from tests.imagebuild import (
    MTIME,
    Entry,
    check_root_marker,
    device,
    directory,
    file,
    hardlink,
    layer_tar,
    opaque,
    sha256,
    symlink,
    whiteout,
)


@pytest.fixture(autouse=True)
def _root_marker(request: pytest.FixtureRequest) -> None:
    """Tests marked root skip without root (and fail under CI=true)."""
    check_root_marker(request)


def unpack(tmp_path: Path, entries: list[Entry], *, gz: bool = False) -> Path:
    """Unpack a crafted layer into tmp_path/layer and return that directory."""
    data = layer_tar(entries)
    diff_id = sha256(data)
    dest = tmp_path / "layer"
    dest.mkdir(parents=True)
    blob = gzip.compress(data) if gz else data
    unpack_layer(io.BytesIO(blob), dest, media_type="test", diff_id=diff_id, what="layer L")
    return dest


def refused(tmp_path: Path, entries: list[Entry], entry: str, why: str) -> None:
    """The layer is refused, the message naming the entry and the reason."""
    with pytest.raises(ImageError) as err:
        unpack(tmp_path, entries)
    assert f"refusing entry {entry!r}" in str(err.value)
    assert why in str(err.value)


def test_files_dirs_links_and_attributes(tmp_path: Path) -> None:
    """Modes (setuid too), mtimes, symlinks and hard links survive; gzip is detected."""
    dest = unpack(
        tmp_path,
        [
            directory("usr", mode=0o755),
            directory("usr/bin", mode=0o711),
            file("usr/bin/tool", "#!/bin/sh\n", mode=0o4755),
            hardlink("usr/bin/tool2", "usr/bin/tool"),
            symlink("usr/bin/abs", "/usr/bin/tool"),
            symlink("usr/bin/rel", "../bin/tool"),
            file("deep/implicit/parent.txt", "x"),  # no parent entries: created
            file("./dotted", "y"),
            Entry("pipe", "fifo", mode=0o640),
        ],
        gz=True,
    )
    tool = dest / "usr/bin/tool"
    assert tool.read_text() == "#!/bin/sh\n"
    assert stat.S_IMODE(tool.stat().st_mode) == 0o4755
    assert tool.stat().st_mtime == MTIME
    assert os.path.samefile(tool, dest / "usr/bin/tool2")
    assert os.readlink(dest / "usr/bin/abs") == "/usr/bin/tool"
    assert os.readlink(dest / "usr/bin/rel") == "../bin/tool"
    assert stat.S_IMODE((dest / "usr/bin").stat().st_mode) == 0o711
    assert (dest / "usr/bin").stat().st_mtime == MTIME  # set after its children were written
    assert (dest / "deep/implicit/parent.txt").read_text() == "x"
    assert (dest / "dotted").read_text() == "y"
    assert stat.S_ISFIFO((dest / "pipe").lstat().st_mode)


@pytest.mark.root
def test_ownership_kept_as_root(tmp_path: Path) -> None:
    """uid/gid come from the tar (root may chown), for files, dirs and symlinks."""
    dest = unpack(
        tmp_path,
        [
            directory("home", uid=1000, gid=1000),
            file("home/f", "x", uid=1000, gid=100, mode=0o2755),
            Entry("home/l", "symlink", target="f", uid=1001, gid=1001),
        ],
    )
    assert (dest / "home").stat().st_uid == 1000
    st = (dest / "home/f").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 100, 0o2755)
    assert (dest / "home/l").lstat().st_uid == 1001


def test_later_entry_replaces_earlier(tmp_path: Path) -> None:
    """Duplicate names: the last one wins, whatever its type."""
    dest = unpack(
        tmp_path, [file("a", "1"), directory("b"), file("b/x"), file("a", "2"), symlink("b", "a")]
    )
    assert (dest / "a").read_text() == "2"
    assert os.readlink(dest / "b") == "a"


@pytest.mark.root
def test_whiteouts_become_overlay_markers(tmp_path: Path) -> None:
    """`.wh.x` becomes a 0/0 char device x; `.wh..wh..opq` the opaque xattr on its dir."""
    dest = unpack(
        tmp_path,
        [
            directory("etc"),
            opaque("etc"),
            file("etc/new", "n"),
            whiteout("bin/ls"),
            file("keep", "k"),
            whiteout("keep"),  # a whiteout hides lower layers only, not this layer's file
            file("lib/.wh..wh.plnk"),  # AUFS metadata: ignored
        ],
    )
    st = (dest / "bin/ls").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert os.getxattr(dest / "etc", OPAQUE_XATTR) == b"y"
    assert (dest / "etc/new").read_text() == "n"
    assert (dest / "keep").read_text() == "k"
    assert not (dest / "bin/.wh.ls").exists()
    assert not (dest / "etc/.wh..wh..opq").exists()
    assert os.listdir(dest / "lib") == []


@pytest.mark.root
def test_overlay_whiteout_device_in_tar_is_accepted(tmp_path: Path) -> None:
    """A layer already in overlay form (char device 0/0) is a whiteout, not a device."""
    dest = unpack(tmp_path, [device("gone", 0, 0)])
    assert stat.S_ISCHR((dest / "gone").lstat().st_mode)


def test_traversal_refused(tmp_path: Path) -> None:
    """`..` anywhere in a name is refused; nothing lands outside."""
    refused(tmp_path, [file("ok"), file("../evil", "x")], "../evil", "'..'")
    assert not (tmp_path / "evil").exists()
    refused(tmp_path / "2", [file("a/../../evil2")], "a/../../evil2", "'..'")


def test_absolute_refused(tmp_path: Path) -> None:
    """Absolute names are refused."""
    target = tmp_path / "abs-evil"
    refused(tmp_path, [file(str(target), "x")], str(target), "absolute path")
    assert not target.exists()


def test_write_through_symlink_refused(tmp_path: Path) -> None:
    """`link -> /outside` is kept as a link, but `link/passwd` would go through it: refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    refused(
        tmp_path,
        [symlink("link", str(outside)), file("link/passwd", "pwned")],
        "link/passwd",
        "parent 'link' is a symlink",
    )
    assert list(outside.iterdir()) == []
    refused(
        tmp_path / "2",
        [directory("d"), symlink("d/up", "../.."), file("d/up/x")],
        "d/up",
        "points outside",
    )


def test_replaced_directory_attributes_stay_inside(tmp_path: Path) -> None:
    """A directory's mode, owner and mtime are set at the end; an entry that replaced it
    meanwhile (`a/`, then `a -> /outside`) must not have them applied through it."""
    outside = tmp_path / "outside"
    (outside / "c").mkdir(parents=True)
    (outside / "secret").write_text("s")
    for path in (outside, outside / "c", outside / "secret"):
        path.chmod(0o700)
    before = {p: p.stat() for p in (outside, outside / "c", outside / "secret")}
    dest = unpack(
        tmp_path,
        [
            directory("a", mode=0o6777, uid=4321, gid=4321),
            symlink("a", str(outside / "secret")),  # the directory itself replaced
            directory("b/c", mode=0o777, uid=4321, gid=4321),
            symlink("b", str(outside)),  # its parent replaced
            directory("d", mode=0o777),
            file("d", "now a file"),
            directory("e", mode=0o750),
            directory("e", mode=0o711),  # repeated: the last one wins
        ],
    )
    for path, st in before.items():
        now = path.stat()
        assert (stat.S_IMODE(now.st_mode), now.st_uid, now.st_gid, now.st_mtime_ns) == (
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_mtime_ns,
        ), path
    assert os.readlink(dest / "a") == str(outside / "secret")
    assert os.readlink(dest / "b") == str(outside)
    assert stat.S_IMODE((dest / "d").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "e").stat().st_mode) == 0o711


@pytest.mark.parametrize("target", ["..", "../x", "a/../../x", "a/b/../../../x"])
def test_relative_symlink_escape_refused(tmp_path: Path, target: str) -> None:
    """A relative symlink target that climbs above the layer root is refused."""
    refused(tmp_path, [symlink("top", target)], "top", "points outside the layer")


def test_relative_symlink_inside_accepted(tmp_path: Path) -> None:
    """Relative links that stay inside are fine, however they wander."""
    dest = unpack(tmp_path, [symlink("a/b/c", "../../x/../y"), symlink("z", "./a/./b")])
    assert os.readlink(dest / "a/b/c") == "../../x/../y"


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("/etc/passwd", "absolute path"),
        ("../../../../etc/passwd", "'..'"),
        ("not/yet/here", "is not in this layer"),
        ("dir", "is a directory"),
        ("lnk/f", "parent 'lnk' is a symlink"),
    ],
)
def test_hardlink_escape_refused(tmp_path: Path, target: str, why: str) -> None:
    """Hard links must point at something already extracted from this same layer."""
    (tmp_path / "f").write_text("secret")
    entries = [directory("dir"), symlink("lnk", str(tmp_path)), hardlink("stolen", target)]
    refused(tmp_path, entries, "stolen", why)


@pytest.mark.parametrize(
    "entry",
    [device("dev/sda", 8, 0, block=True), device("dev/null", 1, 3), device("dev/mem", 1, 1)],
)
def test_devices_refused(tmp_path: Path, entry: Entry) -> None:
    """Block and character devices (other than the 0/0 whiteout) are refused."""
    refused(tmp_path, [directory("dev"), entry], entry.name, "device files")


def test_depth_limit(tmp_path: Path) -> None:
    """Names up to MAX_DEPTH components deep unpack; deeper ones are refused."""
    dest = unpack(tmp_path, [file("/".join(["d"] * (MAX_DEPTH - 1) + ["f"]), "x")])
    assert (dest / "/".join(["d"] * (MAX_DEPTH - 1) + ["f"])).read_text() == "x"
    deeper = "/".join(["d"] * MAX_DEPTH + ["f"])
    refused(tmp_path / "2", [file(deeper)], deeper, f"more than {MAX_DEPTH} components deep")


def test_whiteout_of_dotdot_refused(tmp_path: Path) -> None:
    """`.wh..` would whiteout the parent: refused."""
    refused(tmp_path, [file("a/.wh..")], "a/.wh..", "invalid name")


def test_diff_id_mismatch_refused(tmp_path: Path) -> None:
    """The uncompressed stream must hash to the config's diff_id."""
    data = layer_tar([file("a", "1")])
    dest = tmp_path / "layer"
    dest.mkdir()
    with pytest.raises(ImageError, match="uncompressed content hashes to"):
        unpack_layer(io.BytesIO(data), dest, media_type="t", diff_id=sha256(b"other"), what="L")


def test_not_a_tar_refused(tmp_path: Path) -> None:
    """Garbage, and truncated gzip, are reported as bad layers rather than crashing."""
    dest = tmp_path / "layer"
    dest.mkdir()
    for blob in (b"\x00garbage" * 100, gzip.compress(layer_tar([file("a", "1" * 5000)]))[:200]):
        with pytest.raises(ImageError, match="L:"):
            unpack_layer(io.BytesIO(blob), dest, media_type="t", diff_id=sha256(b""), what="L")


def test_zstd_without_module_names_media_type(tmp_path: Path) -> None:
    """zstd layers need the zstandard module; without it the error says so."""
    blob = b"\x28\xb5\x2f\xfd" + b"\x00" * 64
    dest = tmp_path / "layer"
    dest.mkdir()
    try:
        import zstandard
    except ImportError:
        with pytest.raises(ImageError, match=r"tar\+zstd .*zstandard"):
            unpack_layer(
                io.BytesIO(blob),
                dest,
                media_type="application/vnd.oci.image.layer.v1.tar+zstd",
                diff_id=sha256(b""),
                what="L",
            )
        return
    data = layer_tar([file("z", "zstd!")])
    blob = zstandard.ZstdCompressor().compress(data)
    unpack_layer(io.BytesIO(blob), dest, media_type="zstd", diff_id=sha256(data), what="L")
    assert (dest / "z").read_text() == "zstd!"


def _unpack_bounded(blob: bytes, dest: Path, diff_id: str, **limits: int) -> int:
    dest.mkdir()
    return unpack_layer(
        io.BytesIO(blob), dest, media_type="t", diff_id=diff_id, what="layer L", **limits
    )


def test_uncompressed_size_bounded(tmp_path: Path) -> None:
    """At most `max_bytes` of uncompressed tar stream, counted as it is read (a gzip bomb
    stops there): exactly the stream's length passes, one byte less is refused."""
    data = layer_tar([file("zeros", b"\0" * (1 << 20))])
    blob = gzip.compress(data)
    assert len(blob) < len(data) // 100
    _unpack_bounded(blob, tmp_path / "ok", sha256(data), max_bytes=len(data))
    assert (tmp_path / "ok" / "zeros").stat().st_size == 1 << 20
    with pytest.raises(ImageError, match=f"layer L: unpacks to more than {len(data) - 1} bytes"):
        _unpack_bounded(blob, tmp_path / "short", sha256(data), max_bytes=len(data) - 1)


def test_entry_count_bounded(tmp_path: Path) -> None:
    """At most `max_entries` entries (inodes) in one layer."""
    data = layer_tar([file(f"f{i}") for i in range(5)])
    with pytest.raises(ImageError, match="layer L: more than 4 entries"):
        _unpack_bounded(data, tmp_path / "four", sha256(data), max_entries=4)
    _unpack_bounded(data, tmp_path / "five", sha256(data), max_entries=5)


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_a_sparse_member_counts_its_full_size(tmp_path: Path, fmt: str) -> None:
    """A sparse member is a few blocks of tar that tarfile writes out whole: 10 KiB of
    tar made a 2 GiB file of zeros past max_bytes. Its full size counts."""
    (tmp_path / "src").mkdir()
    subprocess.run(["truncate", "-s", "8M", "hole"], cwd=tmp_path / "src", check=True)
    subprocess.run(
        ["tar", f"--format={fmt}", "--sparse", "-cf", "../layer.tar", "hole"],
        cwd=tmp_path / "src",
        check=True,
    )
    data = (tmp_path / "layer.tar").read_bytes()
    assert len(data) < 1 << 20  # the stream alone is well under the bound
    with pytest.raises(ImageError, match=f"layer L: unpacks to more than {1 << 20} bytes"):
        _unpack_bounded(data, tmp_path / "small", sha256(data), max_bytes=1 << 20)
    _unpack_bounded(data, tmp_path / "big", sha256(data), max_bytes=8 << 20)
    assert (tmp_path / "big" / "hole").stat().st_size == 8 << 20


def test_an_extended_header_past_its_bound_is_refused(tmp_path: Path) -> None:
    """tarfile reads a pax header whole into memory: 400 MiB of one, 398 KiB gzipped, took
    the agent to 1.4 GiB. One past MAX_HEADER_BYTES is refused before it is read."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (MAX_HEADER_BYTES + 1)}
        tar.addfile(info, io.BytesIO(b""))
    data = out.getvalue()
    with pytest.raises(ImageError, match=r"layer L: not a valid tar stream \(an extended header"):
        _unpack_bounded(data, tmp_path / "x", sha256(data))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.pax_headers = {"comment": "x" * (MAX_HEADER_BYTES - 100)}
        tar.addfile(info, io.BytesIO(b""))
    _unpack_bounded(out.getvalue(), tmp_path / "y", sha256(out.getvalue()))
