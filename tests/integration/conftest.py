"""Session-wide services for the image and Docker tests: registries, dockerd, test images.

Started once per session (each costs a second or more) and only when a test asks.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.imagebuild import BusyboxMissing, build_busybox_rootfs, skip_or_fail, write_oci_layout
from tests.services import DockerDaemon, Registry

REGISTRY_USER = "alice"
REGISTRY_PASSWORD = "s3cret-Pa55-for-tests"  # must never show up in logs, events or errors


def _need_root() -> None:
    if os.geteuid() != 0:
        skip_or_fail("needs root")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem, built once."""
    try:
        return build_busybox_rootfs(tmp_path_factory.mktemp("busybox-rootfs") / "rootfs")
    except BusyboxMissing as err:
        skip_or_fail(str(err))


@pytest.fixture(scope="session")
def busybox_layout(busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """busybox as an OCI layout (single platform: this node's)."""
    return write_oci_layout(busybox_rootfs, tmp_path_factory.mktemp("busybox-oci") / "oci")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry on loopback, anonymous access."""
    _need_root()
    server = Registry(tmp_path_factory.mktemp("registry"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """docker-registry on loopback with basic auth (htpasswd, bcrypt): alice only."""
    _need_root()
    server = Registry(
        tmp_path_factory.mktemp("auth-registry"), users={REGISTRY_USER: REGISTRY_PASSWORD}
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dockerd() -> Iterator[DockerDaemon]:
    """A Docker daemon: the machine's if one runs, else ours (stopped at the end)."""
    _need_root()
    daemon = DockerDaemon.start_or_reuse()
    try:
        yield daemon
    finally:
        daemon.stop()
