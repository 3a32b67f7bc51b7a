"""Mount targets resolved inside a container's root (agent/runtime/native/rootfs.py
`in_root`), on a real directory tree standing for the new root."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from agent.runtime.native.rootfs import MAX_SYMLINKS, OLD_ROOT, STAGING, SetupError, in_root


@pytest.fixture
def root(tmp_path: Path) -> str:
    """A root with a Debian-like `var/run -> /run`, a relative link, and links that try
    to climb out of it."""
    for d in ("run", "etc", "srv/data", "dev/.oldroot/tmp"):
        (tmp_path / d).mkdir(parents=True)
    os.symlink("/run", tmp_path / "var-run")
    (tmp_path / "var").mkdir()
    os.symlink("/run", tmp_path / "var/run")
    os.symlink("../srv/data", tmp_path / "etc/data")
    os.symlink("../../../../../srv", tmp_path / "etc/climb")
    os.symlink("/dev/.oldroot/tmp/probe", tmp_path / "data")
    os.symlink("data/../..", tmp_path / "up")
    os.symlink("loop-b", tmp_path / "loop-a")
    os.symlink("loop-a", tmp_path / "loop-b")
    return str(tmp_path)


@pytest.mark.parametrize(
    ("target", "resolved"),
    [
        ("/etc/hostname", "/etc/hostname"),  # missing: made there
        ("/var/run/secrets/token", "/run/secrets/token"),  # an absolute link, from the root
        ("/etc/data/x", "/srv/data/x"),  # a relative one, from its directory
        ("/etc/climb/data", "/srv/data"),  # `..` stops at the root
        ("/../../etc/hosts", "/etc/hosts"),
        ("/new/dirs/../made", "/new/made"),
        ("/srv/./data/", "/srv/data"),
    ],
)
def test_a_target_resolves_as_the_container_sees_it(root: str, target: str, resolved: str) -> None:
    assert in_root(target, root) == resolved


@pytest.mark.parametrize("target", ["/data/made/by/image", "/data", "/up/dev/.oldroot/x"])
def test_a_target_through_a_link_to_the_parked_host_root_is_refused(root: str, target: str) -> None:
    """An image's `data -> /dev/.oldroot/...` made the init create the volume's directories
    on the host (found by an audit), when the host's tree was parked there while volumes
    were bound. It still is while /proc and /sys are resolved: refused by name."""
    with pytest.raises(SetupError, match=re.escape(f"resolves into {OLD_ROOT}, outside")):
        in_root(target, root)


@pytest.mark.parametrize("target", ["/dev/.mounts", "/dev/.mounts/0", "/var/run/../dev/.mounts/x"])
def test_a_target_in_the_staging_directory_is_refused(root: str, target: str) -> None:
    """Where the volumes wait to be moved: a volume moved onto it covered the others, and
    the clean-up looked into it (tests/integration/test_native.py)."""
    with pytest.raises(SetupError, match=re.escape(f"resolves into {STAGING}, where corral")):
        in_root(target, root)


def test_nothing_in_the_parked_host_root_is_looked_at(root: str) -> None:
    """Refused at the parked root itself, before any lstat or readlink below it: the
    message says nothing of the host's files (`.../etc/shadow/x` was ENOTDIR, a missing
    path not, and a link's target was quoted)."""
    os.symlink("/dev/.oldroot/etc/shadow/x", Path(root) / "peek")
    with pytest.raises(SetupError) as caught:
        in_root("/peek", root)
    assert str(caught.value) == (
        f"mount target /peek resolves into {OLD_ROOT}, outside the container"
    )


def test_a_symlink_loop_is_refused(root: str) -> None:
    with pytest.raises(SetupError, match=f"more than {MAX_SYMLINKS} symlinks"):
        in_root("/loop-a/x", root)
