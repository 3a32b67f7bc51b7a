"""rootfs.remove_tree: what a container leaves, however deep, goes; nothing outside."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from agent.runtime.native.rootfs import remove_tree

DEPTH = 1500  # past Python's recursion limit, and its path past PATH_MAX (4096)


def _deep(top: Path, depth: int) -> None:
    """`mkdir dd; cd dd` `depth` times, a file at every level, as a container can."""
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for level in range(depth):
            os.close(os.open(f"f{level}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
            os.mkdir("dd", dir_fd=fd)
            child = os.open("dd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_a_tree_deeper_than_recursion_and_path_max_goes(tmp_path: Path) -> None:
    top = tmp_path / "upper"
    _deep(top, DEPTH)
    if sys.version_info < (3, 13):  # what the runtime used: fails, ignore_errors or not
        with pytest.raises(RecursionError):
            shutil.rmtree(top, ignore_errors=True)
    remove_tree(top)
    assert not top.exists()


def test_links_are_removed_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "keep").write_text("host's")
    top = tmp_path / "trash"
    (top / "a").mkdir(parents=True)
    os.symlink(outside, top / "a" / "to-dir")
    os.symlink(outside / "sub" / "keep", top / "to-file")
    (top / "a" / "file").write_text("x")
    remove_tree(top)
    assert not top.exists()
    assert (outside / "sub" / "keep").read_text() == "host's"


def test_a_file_or_nothing(tmp_path: Path) -> None:
    lone = tmp_path / "lone"
    lone.write_text("x")
    remove_tree(lone)
    assert not lone.exists()
    remove_tree(tmp_path / "missing")  # nothing there: no error
    link = tmp_path / "link"
    os.symlink(tmp_path, link)
    remove_tree(link)  # the link goes, not what it points to
    assert not link.is_symlink() and tmp_path.is_dir()


@pytest.mark.root
def test_a_process_without_dac_override_removes_directories_it_may_not_write_or_read() -> None:
    """The image store and the runtime may run without root (development, a user
    namespace): a 0555 directory with a file in it and a 0000 one were left, where
    shutil.rmtree's callers made them writable and tried again."""
    base = Path(tempfile.mkdtemp(prefix="corral-rmtree-", dir="/tmp"))
    try:
        base.chmod(0o777)  # the unprivileged child must reach it, and remove `top` from it
        top = base / "layer"
        for sub, mode in (("readonly", 0o555), ("sealed", 0o000)):
            (top / sub).mkdir(parents=True)
            (top / sub / "f").write_text("x")
            (top / sub / "d").mkdir()
            (top / sub).chmod(mode)
        subprocess.run(["chown", "-R", "65534:65534", str(top)], check=True)
        pid = os.fork()
        if pid == 0:  # the child: nobody, no capabilities
            code = 1
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                remove_tree(top)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not top.exists()
    finally:
        subprocess.run(["chmod", "-R", "u+rwx", str(base)], check=False)
        shutil.rmtree(base)


@pytest.mark.root
def test_a_file_that_cannot_be_removed_leaves_its_directory_as_it_was(tmp_path: Path) -> None:
    """An immutable file (EPERM, even for root): left, and its directory's mode with it;
    only a directory its owner may not write (EACCES) is made writable to try again."""
    sub = tmp_path / "top" / "sub"
    sub.mkdir(parents=True)
    sub.chmod(0o755)
    (sub / "f").write_text("x")
    if subprocess.run(["chattr", "+i", str(sub / "f")], capture_output=True).returncode:
        pytest.skip("this file system has no immutable attribute")
    try:
        remove_tree(tmp_path / "top")
        assert (sub / "f").exists() and oct(sub.stat().st_mode & 0o777) == "0o755"
    finally:
        subprocess.run(["chattr", "-i", str(sub / "f")], check=True)
