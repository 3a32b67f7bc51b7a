"""Objects an older corral stored that this one no longer reads do not stop its start."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from common.limits import INT32_MAX
from common.models import Pod
from scheduler.api.deleting import DeleteOptions, readable_or_removed
from scheduler.api.errors import ConflictError
from scheduler.config import SchedulerConfig
from scheduler.controlplane import ControlPlane
from scheduler.kinds import DEPLOYMENTS, PODS
from scheduler.store import Op
from tests.conftest import deployment_manifest, wait_until


async def test_a_start_leaves_out_what_it_cannot_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Deployment and a pod stored with a count past int32 (the API took any integer
    before the limits of Kubernetes' widths): the scheduler starts, leaves them out with
    a warning naming each, and serves the rest. Their decoding stopped the start."""
    config = SchedulerConfig(state_dir=str(tmp_path))
    first = ControlPlane(config)
    await first.start()
    try:
        meta = {"namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"}
        wide = deployment_manifest("wide", 1, progressDeadlineSeconds=INT32_MAX + 1)
        wide["metadata"] |= meta | {"uid": "u-wide", "generation": 1}
        fine = deployment_manifest("fine", 0)
        fine["metadata"] |= meta | {"uid": "u-fine", "generation": 1}
        probe = {"exec": {"command": ["true"]}, "periodSeconds": INT32_MAX + 1}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta | {"name": "probed", "uid": "u-pod"},
            "spec": {"containers": [{"name": "c", "image": "x", "livenessProbe": probe}]},
        }
        ops = [
            Op("put", DEPLOYMENTS.key("default", "wide"), json.dumps(wide).encode()),
            Op("put", DEPLOYMENTS.key("default", "fine"), json.dumps(fine).encode()),
            Op("put", PODS.key("default", "probed"), json.dumps(pod).encode()),
        ]
        await first.store.txn(ops)
    finally:
        await first.stop()

    again = ControlPlane(config)
    with caplog.at_level(logging.WARNING):
        await again.start()
    try:
        deployments = again.workloads.deployments.objects
        assert list(deployments) == [DEPLOYMENTS.key("default", "fine")]
        assert PODS.key("default", "probed") not in again.cluster.pods
        for key in (DEPLOYMENTS.key("default", "wide"), PODS.key("default", "probed")):
            assert any(key in r.getMessage() for r in caplog.records), caplog.text
    finally:
        await again.stop()


async def test_an_unreadable_write_does_not_stop_the_cluster_view(tmp_path: Path) -> None:
    """A pod written past the API (by hand) that this corral cannot read is left out of the
    cluster view with a warning; the view goes on with the writes after it. It ended the
    view's watch, which every controller and placement read."""
    plane = ControlPlane(SchedulerConfig(state_dir=str(tmp_path)))
    await plane.start()
    try:
        meta = {"namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"}
        wide = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta | {"name": "wide", "uid": "u-wide"},
            "spec": {
                "containers": [{"name": "c", "image": "x"}],
                "terminationGracePeriodSeconds": 2**64,
            },
        }
        fine = wide | {
            "metadata": meta | {"name": "fine", "uid": "u-fine"},
            "spec": {"containers": [{"name": "c", "image": "x"}]},
        }
        await plane.store.txn([Op("put", PODS.key("default", "wide"), json.dumps(wide).encode())])
        await plane.store.txn([Op("put", PODS.key("default", "fine"), json.dumps(fine).encode())])
        await wait_until(lambda: PODS.key("default", "fine") in plane.cluster.pods, within=5)
        assert PODS.key("default", "wide") not in plane.cluster.pods
        assert plane.cluster.phases["Pending"] == 1
    finally:
        await plane.stop()


async def test_the_unsafe_delete_removes_only_the_version_it_read(tmp_path: Path) -> None:
    """An unreadable pod repaired (written again) after a DELETE read it: the delete that
    disregards read errors is a 409, and the repaired pod stays. It removed any version."""
    plane = ControlPlane(SchedulerConfig(state_dir=str(tmp_path)))
    await plane.start()
    try:
        key = PODS.key("default", "wide")
        meta = {"name": "wide", "namespace": "default", "uid": "u-wide"}
        spec: dict[str, object] = {"containers": [{"name": "c", "image": "x"}]}
        wide = {"metadata": meta, "spec": spec | {"terminationGracePeriodSeconds": 2**64}}
        await plane.store.txn([Op("put", key, json.dumps(wide).encode())])
        read = await plane.store.get(key)
        assert read is not None
        repaired = json.dumps({"metadata": meta, "spec": spec}).encode()
        await plane.store.txn([Op("put", key, repaired, expect=read.mod_revision)])
        with pytest.raises(ConflictError, match="changed while it was being deleted"):
            await readable_or_removed(plane.store, read, Pod, DeleteOptions(ignore_read_error=True))
        kept = await plane.store.get(key)
        assert kept is not None and kept.value == repaired
    finally:
        await plane.stop()
