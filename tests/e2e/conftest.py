"""Fixtures of the several-nodes-on-one-machine suite: a real scheduler and three real agents.

Each test gets a fresh cluster (tests/e2e/cluster.py): a bridge with a private /24,
three network namespaces, `corral-scheduler` with short timeouts, and three
`corral-agent`s with busybox in their image stores. Everything is removed afterwards,
whatever the test did to it. Needs root; under CI=true a missing prerequisite fails
instead of skipping.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import Cluster
from tests.imagebuild import (
    BusyboxMissing,
    build_busybox_rootfs,
    skip_or_fail,
    write_oci_layout,
)

GRACE = 2.0  # --node-grace-seconds
EVICTION = 4.0  # --eviction-seconds
HEARTBEAT = 0.5  # --heartbeat-seconds
SCHEDULER_ARGS = (
    "--node-grace-seconds",
    str(GRACE),
    "--eviction-seconds",
    str(EVICTION),
    "--heartbeat-seconds",
    str(HEARTBEAT),
)


@pytest.fixture(scope="session")
def e2e_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox:latest OCI layout, built once for the session."""
    if os.geteuid() != 0:
        skip_or_fail("needs root")
    base = tmp_path_factory.mktemp("e2e-image")
    try:
        rootfs = build_busybox_rootfs(base / "rootfs")
    except BusyboxMissing as exc:
        skip_or_fail(str(exc))
    return write_oci_layout(rootfs, base / "layout", ref="busybox:latest")


@pytest.fixture
def cluster(tmp_path: Path, e2e_image: Path) -> Iterator[Cluster]:
    """A scheduler (grace 2 s, eviction 4 s, heartbeat 0.5 s) and node-a/b/c, all Ready."""
    if os.geteuid() != 0:
        skip_or_fail("needs root")
    c = Cluster(tmp_path / "cluster", scheduler_args=SCHEDULER_ARGS)
    try:
        c.start(e2e_image)
        yield c
    finally:
        c.close()
