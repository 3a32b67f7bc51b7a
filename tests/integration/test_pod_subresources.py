"""A pod's eviction and status subresources, against the real scheduler with hollow nodes:
what kube-apiserver answers (pkg/registry/core/pod/storage/eviction.go, the pod status
strategy), and that only an admin may write them."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SchedulerProcess, deployment_manifest, running_cluster, wait_for
from tests.integration.test_api import get_pod, pod
from tests.integration.test_auth import make_token

PODS = "/api/v1/namespaces/default/pods"
SUCCESS = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    """Three hollow nodes; each test uses pods of its own names."""
    with running_cluster(Path(tmp_path_factory.mktemp("subresources")), 3) as s:
        yield s


def running(s: SchedulerProcess, name: str) -> dict[str, Any]:
    assert s.request("POST", PODS, pod(name)).status == 201
    found: dict[str, Any] = wait_for(
        lambda: (p := get_pod(s, name))["status"]["phase"] == "Running" and p
    )
    return found


def eviction(name: str, version: str = "policy/v1", **options: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"apiVersion": version, "kind": "Eviction", "metadata": {"name": name}}
    if options:
        body["deleteOptions"] = options
    return body


def evict(s: SchedulerProcess, name: str, body: Any = None, query: str = "") -> Any:
    return s.request("POST", f"{PODS}/{name}/eviction{query}", body or eviction(name))


def test_an_eviction_is_the_pods_graceful_delete(sched: SchedulerProcess) -> None:
    """201 and a Success Status, as kube-apiserver answers without PodDisruptionBudgets;
    the pod is marked, stopped by its node, then gone; a second eviction is a 404."""
    running(sched, "evicted")
    resp = evict(sched, "evicted")
    assert resp.status == 201, resp.body
    assert resp.json() == SUCCESS
    marked = sched.request("GET", f"{PODS}/evicted")
    assert marked.status == 404 or marked.json()["metadata"]["deletionTimestamp"]
    wait_for(lambda: sched.request("GET", f"{PODS}/evicted").status == 404)
    gone = evict(sched, "evicted")
    assert gone.status == 404 and gone.json()["message"] == 'pods "evicted" not found'
    # policy/v1beta1, as kubectl before 1.22 sends it, with a grace period of 0: removed
    # at once, as `DELETE` with the same options.
    running(sched, "forced")
    resp = evict(sched, "forced", eviction("forced", "policy/v1beta1", gracePeriodSeconds=0))
    assert resp.status == 201 and resp.json() == SUCCESS
    assert sched.request("GET", f"{PODS}/forced").status == 404


def test_an_evicted_pod_of_a_deployment_is_replaced(sched: SchedulerProcess) -> None:
    """The eviction deletes the pod as DELETE does: its Deployment makes another."""
    manifest = deployment_manifest("evictdep", 1)
    assert sched.request("POST", "/apis/apps/v1/namespaces/default/deployments", manifest).status
    selected = f"{PODS}?labelSelector=app%3Devictdep"

    def pods() -> list[dict[str, Any]]:
        return list(sched.get(selected)["items"])

    [first] = wait_for(lambda: (found := pods()) and found)
    name = first["metadata"]["name"]
    assert evict(sched, name).status == 201

    def replaced() -> bool:
        names = [p["metadata"]["name"] for p in pods() if p["status"]["phase"] == "Running"]
        return name not in names and len(names) == 1

    wait_for(replaced, timeout=20)
    assert first["metadata"]["ownerReferences"][0]["kind"] == "Deployment"


def test_an_eviction_is_refused_as_kube_apiserver_refuses_it(sched: SchedulerProcess) -> None:
    """400 for an Eviction of another pod or namespace, or none at all; 409 for a failed
    precondition; nothing is deleted by any of them."""
    meta = running(sched, "kept")["metadata"]
    refused = [
        (eviction("other"), 400, "name in URL does not match name in Eviction object"),
        ({"kind": "Eviction", "metadata": {}}, 400, "name in URL does not match name"),
        (
            {**eviction("kept"), "metadata": {"name": "kept", "namespace": "kube-system"}},
            400,
            "the namespace of the provided object does not match",
        ),
        ({**eviction("kept"), "kind": "Pod"}, 400, "expected a policy/v1 (or policy/v1beta1)"),
        ({**eviction("kept"), "apiVersion": "policy/v2"}, 400, "got policy/v2/Eviction"),
        ({**eviction("kept"), "spec": {}}, 400, "spec"),
        (eviction("kept", gracePeriodSeconds=-1), 400, "deleteOptions.gracePeriodSeconds"),
        (eviction("kept", dryRun=["Some"]), 400, "deleteOptions.dryRun"),
        (
            eviction("kept", preconditions={"uid": "another-incarnation"}),
            409,
            "Precondition failed: UID in precondition: another-incarnation",
        ),
        (
            eviction("kept", preconditions={"resourceVersion": "1"}),
            409,
            "Precondition failed: ResourceVersion in precondition: 1",
        ),
    ]
    for body, code, message in refused:
        resp = evict(sched, "kept", body)
        assert resp.status == code, (body, resp.status, resp.body)
        assert message in resp.json()["message"], (body, resp.json())
        assert resp.json()["kind"] == "Status"
    assert evict(sched, "kept", ["a list"]).status == 400
    after = get_pod(sched, "kept")["metadata"]
    assert after["uid"] == meta["uid"] and "deletionTimestamp" not in after
    # The preconditions of this incarnation hold: evicted.
    exact = eviction("kept", preconditions={"uid": meta["uid"]})
    assert evict(sched, "kept", exact).status == 201
    wait_for(lambda: sched.request("GET", f"{PODS}/kept").status == 404)


def test_a_dry_run_eviction_deletes_nothing(sched: SchedulerProcess) -> None:
    """deleteOptions.dryRun or ?dryRun=All: checked, answered, not done. A DELETE still
    refuses a dry run, in its query or (as `kubectl delete --dry-run=server` sends it) its
    body: it used to delete."""
    running(sched, "tried")
    for body, query in ((eviction("tried", dryRun=["All"]), ""), (None, "?dryRun=All")):
        resp = evict(sched, "tried", body, query)
        assert resp.status == 201 and resp.json() == SUCCESS, resp.body
    assert "deletionTimestamp" not in get_pod(sched, "tried")["metadata"]
    assert evict(sched, "tried", None, "?dryRun=Maybe").status == 400
    missing = evict(sched, "nosuch", None, "?dryRun=All")
    assert missing.status == 404
    for body, query in (({"dryRun": ["All"]}, ""), (None, "?dryRun=All")):
        resp = sched.request("DELETE", f"{PODS}/tried{query}", body)
        assert resp.status == 400 and "dryRun" in resp.json()["message"], resp.body
    assert "deletionTimestamp" not in get_pod(sched, "tried")["metadata"]
    sched.request("DELETE", f"{PODS}/tried", {"gracePeriodSeconds": 0})


def test_only_an_admin_may_evict_or_write_a_status(sched: SchedulerProcess) -> None:
    """A viewer may read a pod's status, as it may read the pod; not evict it nor write
    its status (the writes a pod's delete and update need)."""
    current = running(sched, "guarded")
    viewer = make_token(sched, "viewer")["token"]
    status_path = f"{PODS}/guarded/status"
    assert sched.request("GET", status_path, token=viewer).status == 200
    writes = [
        ("POST", f"{PODS}/guarded/eviction", eviction("guarded"), "application/json"),
        ("PUT", status_path, current, "application/json"),
        ("PATCH", status_path, {"status": {"message": "x"}}, "application/merge-patch+json"),
    ]
    for method, path, body, media in writes:
        resp = sched.request(method, path, body, token=viewer, content_type=media)
        assert resp.status == 403, (method, path, resp.status)
        assert sched.request(method, path, body, token=None, content_type=media).status == 401
    after = get_pod(sched, "guarded")
    assert after["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]


def test_a_status_write_changes_the_status_not_the_spec(sched: SchedulerProcess) -> None:
    """PUT of .../status takes the body's status, labels and annotations (kube-apiserver's
    pod status strategy), keeps the stored spec and ownerReferences, and is guarded by the
    body's resourceVersion; a PUT of the pod itself keeps the stored status."""
    current = running(sched, "reported")
    path = f"{PODS}/reported/status"
    assert sched.get(path) == current  # GET: the whole pod
    wanted = copy.deepcopy(current)
    wanted["status"]["message"] = "written by a controller"
    wanted["status"]["conditions"].append(
        {"type": "example.com/Checked", "status": "True", "reason": "Tested"}
    )
    wanted["spec"]["containers"][0]["image"] = "ignored:1"
    wanted["metadata"]["labels"]["written"] = "yes"
    wanted["metadata"]["ownerReferences"] = [
        {"apiVersion": "v1", "kind": "Pod", "name": "x", "uid": "u", "controller": True}
    ]
    resp = sched.request("PUT", path, wanted)
    assert resp.status == 200, resp.body
    written = resp.json()
    assert written["status"]["message"] == "written by a controller"
    assert {"type": "example.com/Checked", "status": "True", "reason": "Tested"} in written[
        "status"
    ]["conditions"]
    assert written["spec"] == current["spec"]
    assert "ownerReferences" not in written["metadata"]
    assert written["metadata"]["labels"]["written"] == "yes"
    assert int(written["metadata"]["resourceVersion"]) > int(current["metadata"]["resourceVersion"])
    stale = sched.request("PUT", path, wanted)  # the resourceVersion read before
    assert stale.status == 409 and stale.json()["reason"] == "Conflict"
    # No spec at all: it is the stored one, as kube-apiserver resets it before checking.
    partial = {"metadata": {"name": "reported"}, "status": {"phase": "Running", "message": "m"}}
    resp = sched.request("PUT", path, partial)
    assert resp.status == 200 and resp.json()["status"]["message"] == "m", resp.body
    bad = sched.request("PUT", path, {**partial, "status": {"phase": "Sleeping"}})
    assert bad.status == 422 and bad.json()["details"]["causes"][0]["field"] == "status.phase"
    other = sched.request("PUT", path, {**partial, "metadata": {"name": "another"}})
    assert other.status == 422, other.body
    # The pod itself: a changed status in the body is not written.
    whole = get_pod(sched, "reported")
    changed = copy.deepcopy(whole)
    changed["status"]["message"] = "not through the pod"
    changed["metadata"]["labels"]["via"] = "pod"
    resp = sched.request("PUT", f"{PODS}/reported", changed)
    assert resp.status == 200, resp.body
    assert resp.json()["status"] == whole["status"]
    assert resp.json()["metadata"]["labels"]["via"] == "pod"
    patch = {"status": {"message": "not through the pod either"}}
    resp = sched.request(
        "PATCH", f"{PODS}/reported", patch, content_type="application/merge-patch+json"
    )
    assert resp.status == 200 and resp.json()["status"] == whole["status"], resp.body
    sched.request("DELETE", f"{PODS}/reported", {"gracePeriodSeconds": 0})


def test_a_status_patch_of_each_type(sched: SchedulerProcess) -> None:
    """Merge, strategic merge (conditions merged by type) and JSON patches of .../status
    change the status; one that touches the spec leaves it as it was."""
    current = running(sched, "patched")
    path = f"{PODS}/patched/status"
    kinds = {
        "application/merge-patch+json": {
            "status": {"message": "merged"},
            "spec": {"activeDeadlineSeconds": 5},
        },
        "application/strategic-merge-patch+json": {
            "status": {"conditions": [{"type": "example.com/Extra", "status": "False"}]}
        },
        "application/json-patch+json": [
            {"op": "replace", "path": "/status/message", "value": "json-patched"}
        ],
    }
    results = {}
    for media, body in kinds.items():
        resp = sched.request("PATCH", path, body, content_type=media)
        assert resp.status == 200, (media, resp.body)
        results[media] = resp.json()
        assert results[media]["spec"] == current["spec"], media
    assert results["application/merge-patch+json"]["status"]["message"] == "merged"
    types = [
        c["type"] for c in results["application/strategic-merge-patch+json"]["status"]["conditions"]
    ]
    assert "example.com/Extra" in types and "PodScheduled" in types, types
    assert results["application/json-patch+json"]["status"]["message"] == "json-patched"
    missing = sched.request(
        "PATCH",
        f"{PODS}/nosuch/status",
        {"status": {}},
        content_type="application/merge-patch+json",
    )
    assert missing.status == 404
    sched.request("DELETE", f"{PODS}/patched", {"gracePeriodSeconds": 0})


def test_a_status_write_does_not_bring_back_what_ended(sched: SchedulerProcess) -> None:
    """A terminated container of a Never pod may not run again (kube-apiserver's
    ValidateContainerStateTransition), nor may a pod leave Failed or Succeeded (corral's
    rule: its agent's reports cannot either); each such write is a 422 naming the field,
    and nothing is written."""
    assert sched.request("POST", PODS, pod("ended", restartPolicy="Never")).status == 201
    wait_for(lambda: get_pod(sched, "ended")["status"]["phase"] == "Running")
    path = f"{PODS}/ended/status"
    container = {"name": "main", "image": "busybox", "ready": False, "restartCount": 0}
    terminated = {**container, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    running = {**container, "state": {"running": {}}}

    def write(phase: str, status: dict[str, Any]) -> Any:
        body = {"metadata": {"name": "ended"}, "status": {"phase": phase, **status}}
        return sched.request("PUT", path, body)

    # Still Running as a phase, its container ended: written (the hollow agent's next
    # report would say the same of a container that exited).
    assert write("Running", {"containerStatuses": [terminated]}).status == 200
    back = write("Running", {"containerStatuses": [running]})
    assert back.status == 422, back.body
    assert back.json()["details"]["causes"][0]["field"] == "status.containerStatuses[0].state"
    assert write("Failed", {"containerStatuses": [terminated]}).status == 200
    before = get_pod(sched, "ended")
    again = write("Running", {"containerStatuses": [terminated]})
    assert again.status == 422, again.body
    assert [c["field"] for c in again.json()["details"]["causes"]] == ["status.phase"]
    assert get_pod(sched, "ended") == before
    sched.request("DELETE", f"{PODS}/ended", {"gracePeriodSeconds": 0})


def test_discovery_and_openapi_name_the_subresources(sched: SchedulerProcess) -> None:
    """`pods/eviction` and `pods/status` as kube-apiserver lists them, and the OpenAPI
    document's operations for both."""
    core = {r["name"]: r for r in sched.get("/api/v1")["resources"]}
    assert core["pods/eviction"] == {
        "name": "pods/eviction",
        "singularName": "",
        "namespaced": True,
        "group": "policy",
        "version": "v1",
        "kind": "Eviction",
        "verbs": ["create"],
    }
    assert core["pods/status"] == {
        "name": "pods/status",
        "singularName": "",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["get", "patch", "update"],
    }
    # Not the policy group: corral serves no resource of its own there (discovery.py).
    assert "policy" not in {g["name"] for g in sched.get("/apis")["groups"]}
    doc = sched.get("/openapi.json")
    post = doc["paths"][f"{PODS.replace('default', '{namespace}')}/{{name}}/eviction"]["post"]
    assert post["x-kubernetes-group-version-kind"] == {
        "group": "policy",
        "version": "v1",
        "kind": "Eviction",
    }
    assert post["x-kubernetes-action"] == "post"
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Eviction"
    )
    assert "201" in post["responses"]
    status_ops = doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/status"]
    assert set(status_ops) == {"get", "put", "patch"}
    assert status_ops["put"]["x-kubernetes-group-version-kind"]["kind"] == "Pod"
    v3 = sched.get("/openapi/v3/api/v1")
    assert "/api/v1/namespaces/{namespace}/pods/{name}/eviction" in v3["paths"]
    assert "Eviction" in v3["components"]["schemas"]
