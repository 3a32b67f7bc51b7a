"""A stored object this corral cannot read (an older corral stored it with a value past a
limit added since): the API names it in a 500 `StorageReadError`, and a DELETE with
Kubernetes' `ignoreStoreReadErrorWithClusterBreakingPotential` removes it as it is. Before,
such an object could only be removed from the store by hand, with the scheduler stopped."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.limits import INT32_MAX
from scheduler.config import SchedulerConfig
from scheduler.controlplane import ControlPlane
from scheduler.kinds import DEPLOYMENTS, NAMESPACES, NODES, PODS
from scheduler.store import Op
from tests.conftest import SchedulerProcess, deployment_manifest
from tests.integration.test_api import pod

META = {"creationTimestamp": "2026-01-01T00:00:00Z"}
UNSAFE = "ignoreStoreReadErrorWithClusterBreakingPotential"


def unreadable_objects() -> dict[str, dict[str, Any]]:
    """API path -> an object with a count past int32, which the API took before session 17."""
    probe = {"exec": {"command": ["true"]}, "periodSeconds": INT32_MAX + 1}
    wide_pod = pod("probed")
    wide_pod["metadata"] |= META | {"namespace": "default", "uid": "u-pod"}
    wide_pod["spec"]["containers"][0]["livenessProbe"] = probe
    wide_deploy = deployment_manifest("wide", 0, progressDeadlineSeconds=INT32_MAX + 1)
    wide_deploy["metadata"] |= META | {"namespace": "default", "uid": "u-wide", "generation": 1}
    labels = {f"l{i}": "x" for i in range(100)}  # past 64 labels
    crowded: dict[str, Any] = META | {"name": "crowded", "labels": labels}
    crowded_ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": crowded | {"uid": "u-ns"}}
    crowded_node = {"apiVersion": "v1", "kind": "Node", "metadata": crowded}
    return {
        "/api/v1/namespaces/default/pods/probed": wide_pod,
        "/apis/apps/v1/namespaces/default/deployments/wide": wide_deploy,
        "/api/v1/namespaces/crowded": crowded_ns,
        "/api/v1/nodes/crowded": crowded_node,
    }


KEYS = {
    "/api/v1/namespaces/default/pods/probed": PODS.key("default", "probed"),
    "/apis/apps/v1/namespaces/default/deployments/wide": DEPLOYMENTS.key("default", "wide"),
    "/api/v1/namespaces/crowded": NAMESPACES.key(None, "crowded"),
    "/api/v1/nodes/crowded": NODES.key(None, "crowded"),
}


@pytest.fixture
async def stored_unreadable(tmp_path: Path) -> Path:
    """A state directory holding the unreadable objects and a readable pod."""
    state = tmp_path / "scheduler"
    plane = ControlPlane(SchedulerConfig(state_dir=str(state)))
    await plane.start()
    try:
        readable = pod("fine")
        readable["metadata"] |= META | {"namespace": "default", "uid": "u-fine"}
        ops = [
            Op("put", KEYS[p], json.dumps(obj).encode()) for p, obj in unreadable_objects().items()
        ]
        ops.append(Op("put", PODS.key("default", "fine"), json.dumps(readable).encode()))
        await plane.store.txn(ops)
    finally:
        await plane.stop()
    return state


async def test_an_unreadable_object_is_named_and_deleted_only_when_asked(
    stored_unreadable: Path,
) -> None:
    s = SchedulerProcess(stored_unreadable)
    s.start()
    try:
        for path, key in KEYS.items():
            refused = s.request("DELETE", path)
            assert refused.status == 500, (path, refused.body)
            status = refused.json()
            assert status["reason"] == "StorageReadError", status
            assert f"corrupt object: {key} cannot be read by this corral" in status["message"]
            assert UNSAFE in status["message"]
            assert status["details"]["causes"][0]["field"] == key
            assert s.request("DELETE", f"{path}?{UNSAFE}=maybe").status == 400
        # The query parameter, or the same field of a DeleteOptions body, as kubectl sends.
        for i, path in enumerate(KEYS):
            if i % 2:
                gone = s.request("DELETE", f"{path}?{UNSAFE}=true")
            else:
                body = {"kind": "DeleteOptions", "apiVersion": "v1", UNSAFE: True}
                gone = s.request("DELETE", path, body)
            assert gone.status == 200, (path, gone.body)
            answer = gone.json()
            assert answer["kind"] == "Status" and answer["status"] == "Success", answer
            assert s.request("GET", path).status == 404, path
        # A readable object asked so is deleted the usual way: a pod the scheduler knows,
        # not running anywhere, goes at once and the answer is the pod.
        fine = s.request("DELETE", f"/api/v1/namespaces/default/pods/fine?{UNSAFE}=true")
        assert fine.status == 200 and fine.json()["metadata"]["name"] == "fine", fine.body
        assert s.request("GET", "/readyz").status == 200
    finally:
        s.stop()
    # The next start has nothing to leave out.
    again = SchedulerProcess(stored_unreadable)
    logged = len(again.log_path.read_text())
    again.start()
    try:
        assert again.get("/api/v1/namespaces/default/pods")["items"] == []
    finally:
        again.stop()
    assert "does not decode" not in again.log_path.read_text()[logged:]
