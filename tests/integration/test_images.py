"""The image store with a real busybox image: import, run from a layer, overlay mount, CLI."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from agent.runtime.native.images import ImageStore
from agent.runtime.native.tarsafe import OPAQUE_XATTR
from tests.imagebuild import (
    BusyboxMissing,
    build_busybox_rootfs,
    check_root_marker,
    directory,
    file,
    opaque,
    skip_or_fail,
    whiteout,
    write_docker_save,
    write_oci_layout,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _root_marker(request: pytest.FixtureRequest) -> None:
    """Tests marked root skip without root (and fail under CI=true)."""
    check_root_marker(request)


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem (built once per module)."""
    try:
        return build_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")
    except BusyboxMissing as err:
        skip_or_fail(str(err))


def run_busybox(layer: Path, *args: str) -> str:
    """Run the busybox binary found in a layer directly (it is static: no chroot needed)."""
    done = subprocess.run([layer / "bin" / "busybox", *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_oci_layout_busybox(rootfs: Path, tmp_path: Path) -> None:
    """Imported from an OCI layout, busybox resolves by any spelling and runs from its layer."""
    store = ImageStore(tmp_path / "store")
    [image] = store.import_path(write_oci_layout(rootfs, tmp_path / "oci", ref="busybox:latest"))
    for spelling in (
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        f"busybox@{image.digest}",
    ):
        found = store.get(spelling)
        assert found is not None and found.digest == image.digest, spelling
    assert image.config.cmd == ["sh"]
    assert image.config.env[0].startswith("PATH=")
    [layer] = store.layer_dirs(image)
    assert (layer / "bin" / "busybox").is_file()
    assert os.readlink(layer / "bin" / "sh") == "busybox"
    assert stat.S_IMODE((layer / "tmp").stat().st_mode) == 0o1777
    assert run_busybox(layer, "echo", "hi") == "hi\n"


def test_docker_save_busybox(rootfs: Path, tmp_path: Path) -> None:
    """A docker save tarball of the same rootfs gives the same layer, unpacked once."""
    store = ImageStore(tmp_path / "store")
    [oci] = store.import_path(write_oci_layout(rootfs, tmp_path / "oci", ref="bb:oci"))
    [saved] = store.import_path(write_docker_save(rootfs, tmp_path / "d.tar", repo_tags=["bb:ds"]))
    assert saved.diff_ids == oci.diff_ids
    assert store.layer_dirs(saved) == store.layer_dirs(oci)
    assert run_busybox(store.layer_dirs(saved)[0], "uname", "-s") == "Linux\n"


@pytest.mark.root
def test_whiteouts_in_overlay(rootfs: Path, tmp_path: Path) -> None:
    """Whiteout and opaque markers work when the layers are stacked with overlayfs."""
    store = ImageStore(tmp_path / "store")
    changes = [
        whiteout("bin/ls"),
        directory("etc"),
        opaque("etc"),
        file("etc/hello", "hi\n"),
    ]
    layout = write_oci_layout(rootfs, tmp_path / "oci", extra_layers=[changes, [file("top", "")]])
    [image] = store.import_path(layout)
    top, middle, bottom = store.layer_dirs(image)
    assert (top / "top").exists() and (bottom / "bin" / "busybox").exists()
    st = (middle / "bin" / "ls").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(middle / "etc", OPAQUE_XATTR) == b"y"

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    lower = ":".join(str(d) for d in (top, middle, bottom))
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lower}", str(mnt)], check=True
    )
    try:
        assert not os.path.lexists(mnt / "bin" / "ls")  # deleted by the whiteout
        assert (mnt / "bin" / "cat").is_symlink()  # its neighbours stay
        assert sorted(os.listdir(mnt / "etc")) == ["hello"]  # opaque: passwd, group hidden
        inside = subprocess.run(
            ["chroot", str(mnt), "/bin/sh", "-c", "cat /etc/hello; ls /etc"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert inside.stdout == "hi\nhello\n"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_cli_subprocess(rootfs: Path, tmp_path: Path) -> None:
    """`image import`, `ls` and `rm` in a separate process, as the agent command runs them."""
    root = str(tmp_path / "store")
    entry = "import sys; from agent.runtime.native.images import image_main; "
    entry += "sys.exit(image_main(sys.argv[1:]))"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", entry, *args, "--root", root],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
        )

    tarball = write_docker_save(rootfs, tmp_path / "bb.tar", repo_tags=["busybox:1.35"])
    imported = cli("import", str(tarball))
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith("imported busybox:1.35 sha256:")
    listed = cli("ls")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["REPOSITORY", "TAG", "DIGEST", "SIZE"]
    repo, tag, digest, size = row.split()
    assert (repo, tag, len(digest)) == ("busybox", "1.35", 12)
    assert size.endswith("MB")
    assert cli("rm", "busybox:1.35").returncode == 0
    missing = cli("rm", "busybox:1.35")
    assert missing.returncode == 1 and "no such image" in missing.stderr
    assert cli("ls").stdout.splitlines()[1:] == []
