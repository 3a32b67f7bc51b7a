"""The metrics API's pods (`corral top pods`): running pods only, as metrics-server."""

from __future__ import annotations

from types import SimpleNamespace
from typing import cast

import pytest

from common.models import Node, Pod
from scheduler.api.usage import _pod_metrics
from scheduler.cluster import NodeState
from scheduler.controlplane import ControlPlane


def _pod(uid: str, phase: str) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": f"p-{uid}", "namespace": "default", "uid": uid},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]},
            "status": {"phase": phase},
        }
    )


@pytest.fixture
def plane() -> ControlPlane:
    """A control plane with one connected node that reports four pods' cgroups."""
    state = NodeState(
        name="n1",
        node=Node.model_validate({"metadata": {"name": "n1"}}),
        pod_uids=["run", "done", "failed", "waiting"],
        pod_cpu=[50, 0, 0, 0],
        pod_memory=[4 << 20, 400 << 10, 0, 0],
        connected=True,
    )
    cluster = SimpleNamespace(nodes={"n1": state})
    return cast(
        ControlPlane,
        SimpleNamespace(cluster=cluster, config=SimpleNamespace(heartbeat_seconds=1.0)),
    )


def test_a_running_pod_has_its_usage(plane: ControlPlane) -> None:
    metrics = _pod_metrics(plane, _pod("run", "Running"), {})
    assert metrics is not None
    assert metrics["containers"] == [{"name": "c", "usage": {"cpu": "50m", "memory": "4096Ki"}}]


@pytest.mark.parametrize(("uid", "phase"), [("done", "Succeeded"), ("failed", "Failed")])
def test_a_finished_pod_has_none(plane: ControlPlane, uid: str, phase: str) -> None:
    """After the quickstart's Job, `corral top pods` listed its Completed pods (0m, 0Mi):
    their node keeps their cgroups, and reports them, until they are deleted. The
    metrics API serves running pods (docs/api.md), as metrics-server does."""
    assert _pod_metrics(plane, _pod(uid, phase), {}) is None


def test_a_pod_waiting_for_its_image_has_none(plane: ControlPlane) -> None:
    """On a fresh node the quickstart's Deployment waits in ImagePullBackOff (Pending) until
    busybox is imported; `corral top pods` listed its pods at 0m: the agent reports the
    cgroup it made for them, but no container runs."""
    assert _pod_metrics(plane, _pod("waiting", "Pending"), {}) is None
