"""Building blocks of the native-runtime test modules: a busybox image store and a
cgroup driver below a parent of the module's own (both need root)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.runtime.native.cgroups import CgroupDriver, probe
from agent.runtime.native.images import ImageStore
from tests.imagebuild import BusyboxMissing, build_busybox_rootfs, skip_or_fail, write_oci_layout


def busybox_store(base: Path, **more: dict[str, Any]) -> ImageStore:
    """An image store under `base` with busybox:latest and, for each `ref=options` in
    `more`, an image of the same tree made by `write_oci_layout(..., ref=ref, **options)`."""
    if os.geteuid() != 0:
        skip_or_fail("needs root")
    try:
        tree = build_busybox_rootfs(base / "rootfs")
    except BusyboxMissing as exc:
        skip_or_fail(str(exc))
    store = ImageStore(base / "store")
    store.import_path(write_oci_layout(tree, base / "busybox", ref="busybox:latest"))
    for i, (ref, options) in enumerate(more.items()):
        store.import_path(write_oci_layout(tree, base / f"image-{i}", ref=ref, **options))
    return store


@contextmanager
def cgroup_driver(parent: str) -> Iterator[CgroupDriver]:
    """The machine's cgroup driver below `parent`, killed and removed afterwards."""
    if os.geteuid() != 0:
        skip_or_fail("needs root")
    driver = probe(parent)
    try:
        yield driver
    finally:
        if driver.exists(""):
            driver.kill("")
            driver.remove("")
