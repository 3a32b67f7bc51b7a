"""PATCH through the real corral-scheduler process: merge, strategic merge and JSON patches
on pods, nodes, namespaces, Deployments, Jobs and the `/scale` subresource, sent as
kubectl and client libraries send them, and every way a patch is refused.

One scheduler (bodies limited to 64 KiB) and two hollow nodes serve the module; each test
works in its own namespace.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    HollowProcess,
    SchedulerProcess,
    deployment_manifest,
    ready_nodes,
    running_cluster,
    wait_for,
)

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
MAX_BODY = 65536


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    """A scheduler with two hollow nodes, shared by the module's tests."""
    state = tmp_path_factory.mktemp("patch") / "scheduler"
    with running_cluster(state, 2, scheduler_args=["--max-body-bytes", str(MAX_BODY)]) as s:
        yield s


@pytest.fixture
def ns(sched: SchedulerProcess) -> str:
    """A fresh namespace for one test."""
    name = f"p-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    assert sched.request("POST", "/api/v1/namespaces", body).status == 201
    return name


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "env": [{"name": "A", "value": "1"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ]
        },
    }


def _job(name: str) -> dict[str, Any]:
    template = _pod(name)
    template["spec"]["restartPolicy"] = "Never"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {"template": {"metadata": template["metadata"], "spec": template["spec"]}},
    }


def _pod_path(ns: str, name: str) -> str:
    return f"/api/v1/namespaces/{ns}/pods/{name}"


def _deploy_path(ns: str, name: str) -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments/{name}"


def _patch(s: SchedulerProcess, path: str, body: Any, media: str) -> Any:
    return s.request("PATCH", path, body, content_type=media)


def _ok(s: SchedulerProcess, path: str, body: Any, media: str) -> dict[str, Any]:
    resp = _patch(s, path, body, media)
    assert resp.status == 200, (resp.status, resp.body)
    answer: dict[str, Any] = resp.json()
    return answer


def _refused(s: SchedulerProcess, path: str, body: Any, media: str, code: int) -> dict[str, Any]:
    """The Status of a refused patch, after checking the object did not change."""
    before = s.get(path)
    resp = _patch(s, path, body, media)
    assert resp.status == code, (resp.status, resp.body)
    status: dict[str, Any] = resp.json()
    assert status["kind"] == "Status" and status["code"] == code, status
    assert _patchable(s.get(path)) == _patchable(before)
    return status


def _patchable(obj: dict[str, Any]) -> Any:
    """What a patch may change (the agents and controllers write status meanwhile)."""
    if obj.get("kind") == "Scale":  # its metadata is the Deployment's, which its controller writes
        return obj.get("spec")
    meta = obj["metadata"]
    return meta.get("labels"), meta.get("annotations"), meta.get("generation"), obj.get("spec")


def _make_pod(s: SchedulerProcess, ns: str, name: str) -> dict[str, Any]:
    resp = s.request("POST", f"/api/v1/namespaces/{ns}/pods", _pod(name))
    assert resp.status == 201, resp.body
    created: dict[str, Any] = resp.json()
    # Bound first: the binding is a spec change of the scheduler's, which would otherwise
    # land between a test's reads.
    wait_for(lambda: s.get(_pod_path(ns, name))["spec"].get("nodeName"))
    return created


def test_kubectl_label_and_annotate_on_a_pod(sched: SchedulerProcess, ns: str) -> None:
    """What `kubectl label` and `kubectl annotate --overwrite` send (merge patches, and the
    strategic form other clients send): keys set, overwritten and removed with `null`."""
    created = _make_pod(sched, ns, "web")
    path = _pod_path(ns, "web") + "?fieldManager=kubectl-label"  # as kubectl sends it
    for media in (MERGE, STRATEGIC):
        pod = _ok(sched, path, {"metadata": {"labels": {"k": "v"}}}, media)
        assert pod["metadata"]["labels"] == {"app": "web", "k": "v"}
        pod = _ok(sched, path, {"metadata": {"annotations": {"a": "1"}}}, media)
        pod = _ok(sched, path, {"metadata": {"annotations": {"a": "2"}}}, media)
        assert pod["metadata"]["annotations"] == {"a": "2"}
        pod = _ok(
            sched, path, {"metadata": {"labels": {"k": None}, "annotations": {"a": None}}}, media
        )
        assert pod["metadata"]["labels"] == {"app": "web"}
        assert not pod["metadata"].get("annotations")
    assert pod["spec"] == sched.get(_pod_path(ns, "web"))["spec"]
    assert pod["metadata"]["uid"] == created["metadata"]["uid"]
    assert int(pod["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    listed = sched.get(f"/api/v1/namespaces/{ns}/pods?labelSelector=app=web")["items"]
    assert [p["metadata"]["name"] for p in listed] == ["web"]

    def a_no_op_keeps_the_version() -> bool:  # (the pod's agent may report in between)
        before = sched.get(path)["metadata"]["resourceVersion"]
        again = _ok(sched, path, {"metadata": {"labels": {"app": "web"}}}, MERGE)
        return bool(again["metadata"]["resourceVersion"] == before)

    wait_for(a_no_op_keeps_the_version)


def test_json_patch_on_a_pod(sched: SchedulerProcess, ns: str) -> None:
    """RFC 6902: add, replace, copy, move, remove and a passing test, applied in order."""
    _make_pod(sched, ns, "jp")
    path = _pod_path(ns, "jp")
    ops = [
        {"op": "test", "path": "/metadata/labels/app", "value": "jp"},
        {"op": "add", "path": "/metadata/labels/a", "value": "1"},
        {"op": "copy", "from": "/metadata/labels/a", "path": "/metadata/labels/b"},
        {"op": "move", "from": "/metadata/labels/b", "path": "/metadata/labels/c"},
        {"op": "replace", "path": "/metadata/labels/a", "value": "2"},
        {"op": "add", "path": "/metadata/annotations", "value": {"x/y": "z"}},
        {"op": "remove", "path": "/metadata/labels/app"},
    ]
    pod = _ok(sched, path, ops, JSON_PATCH)
    assert pod["metadata"]["labels"] == {"a": "2", "c": "1"}
    assert pod["metadata"]["annotations"] == {"x/y": "z"}


def test_failing_json_patch_test_is_422(sched: SchedulerProcess, ns: str) -> None:
    """A `test` that fails (or a path that is not there) is a 422, as kube-apiserver
    answers, and nothing of the patch is applied."""
    _make_pod(sched, ns, "t")
    path = _pod_path(ns, "t")
    failing = [
        {"op": "add", "path": "/metadata/labels/x", "value": "1"},
        {"op": "test", "path": "/metadata/labels/app", "value": "nope"},
    ]
    status = _refused(sched, path, failing, JSON_PATCH, 422)
    assert status["reason"] == "Invalid"
    # Said in JSON, not in the patch library's Python ("'t' (<class 'str'>) is not...").
    assert status["message"] == (
        'the JSON patch cannot be applied: test of /metadata/labels/app failed: it is "t", '
        'not "nope"'
    ), status
    absent = [{"op": "test", "path": "/metadata/labels/absent", "value": None}]
    status = _refused(sched, path, absent, JSON_PATCH, 422)
    assert status["message"].endswith(
        "test of /metadata/labels/absent failed: it is not there, not null"
    )
    missing = [{"op": "remove", "path": "/metadata/labels/absent"}]
    assert _refused(sched, path, missing, JSON_PATCH, 422)["reason"] == "Invalid"
    into_a_string = [{"op": "remove", "path": "/metadata/name/0"}]  # a 500 from jsonpatch
    assert _refused(sched, path, into_a_string, JSON_PATCH, 422)["reason"] == "Invalid"
    assert "x" not in sched.get(path)["metadata"]["labels"]


def test_json_patch_copies_are_bounded(sched: SchedulerProcess, ns: str) -> None:
    """`copy` operations that copy a field into itself double the object each time: past
    8 MiB copied in all they are a 413, at once, not an event loop busy for hours."""
    _make_pod(sched, ns, "c")
    path = _pod_path(ns, "c")
    ops = [{"op": "add", "path": "/metadata/annotations/x", "value": "x" * 1000}]
    ops += [{"op": "copy", "from": "/metadata", "path": f"/metadata/m{i}"} for i in range(40)]
    assert _refused(sched, path, ops, JSON_PATCH, 413)["reason"] == "RequestEntityTooLarge"
    assert sched.request("GET", "/readyz").status == 200


UPDATABLE = "pod updates may not change fields other than `spec.containers[*].image`"


def _running_image(s: SchedulerProcess, path: str) -> tuple[str, int] | None:
    """(image, restartCount) of the pod's running container, as its node reports it."""
    statuses = s.get(path).get("status", {}).get("containerStatuses") or []
    if not statuses or "running" not in statuses[0]["state"]:
        return None
    return statuses[0]["image"], statuses[0]["restartCount"]


def test_a_pods_images_may_change_by_put_and_every_patch(sched: SchedulerProcess, ns: str) -> None:
    """As kube-apiserver's ValidatePodUpdate allows: `spec.containers[*].image` changes on a
    PUT, a strategic merge patch (what `kubectl set image pod/...` sends) and a JSON patch;
    the rest of the spec stays, `metadata.generation` counts the change, and the pod's
    (hollow) node reports the container restarted with the new image."""
    _make_pod(sched, ns, "img")
    path = _pod_path(ns, "img")
    wait_for(lambda: _running_image(sched, path) == ("busybox", 0), timeout=30)
    current = sched.get(path)
    current["spec"]["containers"][0]["image"] = "busybox:1.36"
    # Unconditional: the pod's agent may report a status between the read and the PUT.
    del current["metadata"]["resourceVersion"]
    put = sched.request("PUT", path, current)
    assert put.status == 200, put.body
    updated = put.json()
    assert updated["spec"] == current["spec"]
    assert updated["metadata"]["generation"] == 2
    assert sched.get(path)["spec"]["containers"][0]["image"] == "busybox:1.36"
    wait_for(lambda: _running_image(sched, path) == ("busybox:1.36", 1), timeout=30)

    strategic = {"spec": {"containers": [{"name": "main", "image": "busybox:1.37"}]}}
    patched = _ok(sched, path, strategic, STRATEGIC)
    assert patched["spec"]["containers"][0]["image"] == "busybox:1.37"
    assert patched["spec"]["containers"][0]["env"] == [{"name": "A", "value": "1"}]
    assert patched["metadata"]["generation"] == 3
    wait_for(lambda: _running_image(sched, path) == ("busybox:1.37", 2), timeout=30)

    replace = [{"op": "replace", "path": "/spec/containers/0/image", "value": "busybox"}]
    assert _ok(sched, path, replace, JSON_PATCH)["spec"]["containers"][0]["image"] == "busybox"
    wait_for(lambda: _running_image(sched, path) == ("busybox", 3), timeout=30)
    # The same image again is no change: no new generation, no restart.
    again = {"spec": {"containers": [{"name": "main", "image": "busybox"}]}}
    assert _ok(sched, path, again, STRATEGIC)["metadata"]["generation"] == 4
    assert _running_image(sched, path) == ("busybox", 3)


def test_the_rest_of_a_pods_spec_is_refused_naming_what_may_change(
    sched: SchedulerProcess, ns: str
) -> None:
    """Any other spec change gets a 422 (field `spec`) whose message says what may change,
    as kube-apiserver's does, and names the field that changed; an image changed together
    with another field is refused as a whole."""
    _make_pod(sched, ns, "imm")
    path = _pod_path(ns, "imm")
    current = sched.get(path)
    del current["metadata"]["resourceVersion"]
    current["spec"]["containers"][0]["image"] = "busybox:2"
    current["spec"]["containers"][0]["command"] = ["sleep", "1"]
    put = sched.request("PUT", path, current)
    assert put.status == 422, put.body
    status = put.json()
    [cause] = status["details"]["causes"]
    assert (cause["reason"], cause["field"]) == ("FieldValueForbidden", "spec")
    assert UPDATABLE in cause["message"] and "spec.containers[0].command" in cause["message"]
    assert status["message"].startswith('Pod "imm" is invalid: spec: Forbidden: ' + UPDATABLE)
    assert sched.get(path)["spec"]["containers"][0]["image"] == "busybox"
    refusals = [
        # A merge patch replaces the list: the container loses its env and resources.
        ({"spec": {"containers": [{"name": "main", "image": "busybox:2"}]}}, MERGE, "env"),
        ({"spec": {"restartPolicy": "Never"}}, STRATEGIC, "spec.restartPolicy"),
        ({"spec": {"terminationGracePeriodSeconds": 5}}, MERGE, "terminationGracePeriod"),
        (
            [{"op": "replace", "path": "/spec/containers/0/name", "value": "other"}],
            JSON_PATCH,
            "spec.containers[0].name",
        ),
    ]
    for body, media, named in refusals:
        refused = _refused(sched, path, body, media, 422)
        [cause] = refused["details"]["causes"]
        assert cause["field"] == "spec" and UPDATABLE in cause["message"], refused
        assert named in cause["message"], (named, cause)
    # Adding a container (or removing one) is kube's own message, on spec.containers.
    added = {"name": "side", "image": "busybox"}
    refused = _refused(
        sched, path, [{"op": "add", "path": "/spec/containers/-", "value": added}], JSON_PATCH, 422
    )
    [cause] = refused["details"]["causes"]
    assert cause["field"] == "spec.containers"
    assert cause["message"] == "pod updates may not add or remove containers"
    # An invalid object is PUT's 422 too, naming the field.
    status = _refused(sched, path, {"metadata": {"labels": {"bad key!": "v"}}}, MERGE, 422)
    assert any("metadata.labels" in c["field"] for c in status["details"]["causes"])
    renamed = _refused(sched, path, {"metadata": {"name": "other"}}, MERGE, 422)
    assert renamed["details"]["causes"][0]["field"] == "metadata.name"


def test_a_new_image_is_validated(sched: SchedulerProcess, ns: str) -> None:
    """The new image is checked as on create (required), and, as kube-apiserver's
    ValidateContainerUpdates has it, without leading or trailing whitespace: 422s naming
    `spec.containers[0].image`, the pod unchanged."""
    _make_pod(sched, ns, "bad")
    path = _pod_path(ns, "bad")
    for image in ("", " busybox:2", "busybox:2\n"):
        body = [{"op": "replace", "path": "/spec/containers/0/image", "value": image}]
        refused = _refused(sched, path, body, JSON_PATCH, 422)
        fields = [c["field"] for c in refused["details"]["causes"]]
        assert fields == ["spec.containers[0].image"], (image, refused)
    removed = [{"op": "remove", "path": "/spec/containers/0/image"}]
    refused = _refused(sched, path, removed, JSON_PATCH, 422)
    assert [c["field"] for c in refused["details"]["causes"]] == ["spec.containers[0].image"]


def test_strategic_merge_keeps_the_pods_lists(sched: SchedulerProcess, ns: str) -> None:
    """A strategic patch naming a container by `name` with what it already has is no
    change: the list is merged by key, not replaced (a merge patch would replace it)."""
    _make_pod(sched, ns, "smp")
    path = _pod_path(ns, "smp")
    same = {
        "metadata": {"labels": {"s": "1"}},
        "spec": {"containers": [{"name": "main", "env": [{"name": "A", "value": "1"}]}]},
    }
    assert _ok(sched, path, same, STRATEGIC)["metadata"]["labels"]["s"] == "1"
    # The same as a merge patch replaces `containers` with an image-less container: 422.
    _refused(sched, path, same, MERGE, 422)


def test_unsupported_content_types_are_415(sched: SchedulerProcess, ns: str) -> None:
    """Any other Content-Type on PATCH is 415, naming the accepted ones (server-side apply
    among the refused)."""
    _make_pod(sched, ns, "ct")
    paths = [_pod_path(ns, "ct"), "/api/v1/namespaces/" + ns, "/api/v1/nodes/hollow-0000"]
    for path in paths:
        for media in ("application/json", "application/apply-patch+yaml", "text/plain"):
            status = _refused(sched, path, {"metadata": {"labels": {"k": "v"}}}, media, 415)
            assert status["reason"] == "UnsupportedMediaType"
            assert MERGE in status["message"] and JSON_PATCH in status["message"]
    with_charset = f"{MERGE}; charset=utf-8"  # parameters do not matter
    assert _ok(sched, paths[0], {"metadata": {"labels": {"k": "v"}}}, with_charset)


@pytest.mark.parametrize(
    ("body", "media", "named"),
    [
        (b"{not json", MERGE, "not valid JSON"),
        (b"", MERGE, "empty"),
        (b'{"a": 1, "a": 2}', STRATEGIC, "duplicate key"),
        (b"[1, 2]", MERGE, "must be a JSON object"),
        (b'"labels"', STRATEGIC, "must be a JSON object"),
        (b'{"metadata": {"labels": {"$setElementOrder/x": []}}}', STRATEGIC, "$setElementOrder"),
        (b'{"metadata": {"$frobnicate": 1}}', STRATEGIC, "metadata.$frobnicate"),
        (b'{"spec": {"containers": [{"image": "x"}]}}', STRATEGIC, "merge key 'name'"),
        (b'{"metadata": {"labels": {"$patch": "merge"}}}', STRATEGIC, "'merge'"),
        (b'{"op": "add"}', JSON_PATCH, "array of operations"),
        (b'[{"op": "frob", "path": "/a"}]', JSON_PATCH, "'frob'"),
        (b'[{"op": "add", "path": "/metadata/labels/a"}]', JSON_PATCH, "'value'"),
        (b'[{"op": "remove"}]', JSON_PATCH, "'path'"),
        (b'[{"op": "move", "path": "/a"}]', JSON_PATCH, "'from'"),
        (b'[{"op": "remove", "path": "metadata"}]', JSON_PATCH, "JSON pointer"),
        (b"[1]", JSON_PATCH, "operation 0"),
        (b"[" * 30_000 + b"]" * 30_000, JSON_PATCH, "nested too deeply"),
        (b'{"metadata": {"annotations": {"a": "' + b"x" * MAX_BODY + b'"}}}', MERGE, "larger"),
    ],
)
def test_malformed_patches_are_400(
    sched: SchedulerProcess, ns: str, body: bytes, media: str, named: str
) -> None:
    """A malformed patch is a 400 saying what is wrong (a directive by name), and the object
    is unchanged; one past the body limit is a 413."""
    name = f"m-{uuid.uuid4().hex[:6]}"
    _make_pod(sched, ns, name)
    path = _pod_path(ns, name)
    code = 413 if len(body) > MAX_BODY else 400
    status = _refused(sched, path, body, media, code)
    assert named in status["message"], status


def test_resource_version_is_a_precondition(sched: SchedulerProcess, ns: str) -> None:
    """`metadata.resourceVersion` in a patch must be the object's (409 otherwise, 422 if it
    is not a number); without one the patch applies to the latest version."""
    created = _make_pod(sched, ns, "rv")
    path = _pod_path(ns, "rv")
    stale = created["metadata"]["resourceVersion"]
    _ok(sched, path, {"metadata": {"labels": {"v": "1"}}}, MERGE)
    for body, media in (
        ({"metadata": {"resourceVersion": stale, "labels": {"v": "2"}}}, MERGE),
        ({"metadata": {"resourceVersion": stale, "labels": {"v": "2"}}}, STRATEGIC),
        (
            [
                {"op": "replace", "path": "/metadata/resourceVersion", "value": stale},
                {"op": "add", "path": "/metadata/labels/v", "value": "2"},
            ],
            JSON_PATCH,
        ),
    ):
        status = _refused(sched, path, body, media, 409)
        assert status["reason"] == "Conflict", status
    # Stale even where the patch would change nothing: 409, as for PUT.
    _refused(sched, path, {"metadata": {"resourceVersion": stale}}, STRATEGIC, 409)

    def a_current_version_applies() -> bool:  # (the pod's agent may report in between)
        current = sched.get(path)["metadata"]["resourceVersion"]
        fresh = {"metadata": {"resourceVersion": current, "labels": {"v": "3"}}}
        return bool(_patch(sched, path, fresh, MERGE).status == 200)

    wait_for(a_current_version_applies)
    assert sched.get(path)["metadata"]["labels"]["v"] == "3"
    bogus = {"metadata": {"resourceVersion": "abc"}}
    assert _refused(sched, path, bogus, MERGE, 422)["details"]["causes"][0]["field"] == (
        "metadata.resourceVersion"
    )


def test_kubectl_cordon_and_label_on_a_node(sched: SchedulerProcess, ns: str) -> None:
    """`kubectl cordon`'s strategic patch makes a node unschedulable (no new pod lands on
    it), uncordon's undoes it; labels and annotations patch; the rest is the agent's."""
    path = "/api/v1/nodes/hollow-0000"
    node = _ok(sched, path, {"spec": {"unschedulable": True}}, STRATEGIC)
    assert node["spec"]["unschedulable"] is True
    cordoned = sched.get("/api/v1/nodes?fieldSelector=spec.unschedulable=true")["items"]
    assert [n["metadata"]["name"] for n in cordoned] == ["hollow-0000"]
    try:
        for i in range(4):
            _make_pod(sched, ns, f"c{i}")
        bound = wait_for(
            lambda: (
                (
                    all(p["spec"].get("nodeName") for p in items)
                    and items
                    and [p["spec"]["nodeName"] for p in items]
                )
                if len(items := sched.get(f"/api/v1/namespaces/{ns}/pods")["items"]) == 4
                else None
            )
        )
        assert set(bound) == {"hollow-0001"}
    finally:
        node = _ok(sched, path, {"spec": {"unschedulable": None}}, MERGE)
    assert not node["spec"].get("unschedulable")

    node = _ok(sched, path, {"metadata": {"labels": {"disk": "ssd"}}}, MERGE)
    assert node["metadata"]["labels"]["disk"] == "ssd"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == "hollow-0000"
    assert node["status"]["capacity"]  # the agent's status, untouched
    listed = sched.get("/api/v1/nodes?labelSelector=disk=ssd")["items"]
    assert [n["metadata"]["name"] for n in listed] == ["hollow-0000"]
    ops = [{"op": "add", "path": "/metadata/annotations", "value": {"note": "x"}}]
    assert _ok(sched, path, ops, JSON_PATCH)["metadata"]["annotations"] == {"note": "x"}
    ignored = _ok(sched, path, {"status": {"capacity": {"cpu": "999"}}}, MERGE)
    assert ignored["status"]["capacity"]["cpu"] != "999"
    node = _ok(sched, path, {"metadata": {"labels": {"disk": None}, "annotations": None}}, MERGE)
    assert "disk" not in node["metadata"]["labels"] and not node["metadata"].get("annotations")
    status = _refused(sched, path, {"metadata": {"name": "hollow-9999"}}, MERGE, 422)
    assert status["details"]["causes"][0]["field"] == "metadata.name"
    assert _patch(sched, "/api/v1/nodes/nope", {}, MERGE).status == 404


def test_node_labels_outlive_the_agent_registering_again(tmp_path: Path) -> None:
    """A label set through the API is kept when the node's agent registers again (on a new
    link, here after the scheduler restarted), as a kubelet keeps it."""
    s = SchedulerProcess(tmp_path / "scheduler")
    s.start()
    hollow = HollowProcess(s, 1)
    path = "/api/v1/nodes/hollow-0000"
    try:
        wait_for(lambda: ready_nodes(s) == ["hollow-0000"], timeout=20)
        node = _ok(s, path, {"metadata": {"labels": {"disk": "ssd"}}}, STRATEGIC)
        before = int(node["metadata"]["resourceVersion"])
        s.stop()
        s.start()  # the same port and state: the agent links again, and says hello
        wait_for(lambda: int(s.get(path)["metadata"]["resourceVersion"]) > before, timeout=30)
        labels = s.get(path)["metadata"]["labels"]
        assert labels["disk"] == "ssd" and labels["kubernetes.io/hostname"] == "hollow-0000"
    finally:
        hollow.stop()
        s.stop()
        s.stop()


def test_namespace_patches(sched: SchedulerProcess, ns: str) -> None:
    """Namespaces take every patch type; the `kubernetes.io/metadata.name` label stays."""
    path = f"/api/v1/namespaces/{ns}"
    assert _ok(sched, path, {"metadata": {"labels": {"team": "a"}}}, STRATEGIC)
    ops = [{"op": "replace", "path": "/metadata/labels/team", "value": "b"}]
    assert _ok(sched, path, ops, JSON_PATCH)["metadata"]["labels"]["team"] == "b"
    labels = _ok(sched, path, {"metadata": {"labels": None}}, MERGE)["metadata"]["labels"]
    assert labels == {"kubernetes.io/metadata.name": ns}
    status = _refused(sched, path, {"metadata": {"name": "other"}}, MERGE, 422)
    assert status["details"]["causes"][0]["field"] == "metadata.name"


def test_deployment_patches(sched: SchedulerProcess, ns: str) -> None:
    """A Deployment's spec patches by every type (the template's containers merged by name,
    as `kubectl set image` sends it); the generation counts spec changes only; the selector
    is immutable, as on PUT."""
    root = f"/apis/apps/v1/namespaces/{ns}/deployments"
    assert sched.request("POST", root, deployment_manifest("d", 1)).status == 201
    path = _deploy_path(ns, "d")
    labelled = _ok(sched, path, {"metadata": {"labels": {"x": "y"}}}, MERGE)
    assert labelled["metadata"]["generation"] == 1
    set_image = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "main"}],
                    "containers": [{"name": "main", "image": "nginx:2"}],
                }
            }
        }
    }
    d = _ok(sched, path, set_image, STRATEGIC)
    container = d["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "nginx:2" and container["resources"]["requests"]["cpu"] == "100m"
    assert d["metadata"]["generation"] == 2
    ops = [{"op": "replace", "path": "/spec/replicas", "value": 2}]
    assert _ok(sched, path, ops, JSON_PATCH)["spec"]["replicas"] == 2
    wait_for(
        lambda: (
            (st := sched.get(path)["status"]).get("availableReplicas") == 2
            and st.get("updatedReplicas") == 2
            and st.get("replicas") == 2  # the old template's pod gone too, not stopping
        ),
        timeout=20,
    )
    selector = {
        "spec": {
            "selector": {"matchLabels": {"app": "d", "x": "y"}},
            "template": {"metadata": {"labels": {"x": "y"}}},
        }
    }
    status = _refused(sched, path, selector, STRATEGIC, 422)
    assert status["details"]["causes"][0]["field"] == "spec.selector"
    # Status is the controller's: a patch of it changes nothing.
    kept = _ok(sched, path, {"status": {"replicas": 99}}, MERGE)
    assert kept["status"]["replicas"] == 2


def test_job_patches(sched: SchedulerProcess, ns: str) -> None:
    """A Job's metadata and mutable spec patch by every type; its template and completions
    are immutable, as on PUT."""
    root = f"/apis/batch/v1/namespaces/{ns}/jobs"
    assert sched.request("POST", root, _job("j")).status == 201
    path = f"{root}/j"
    assert _ok(sched, path, {"metadata": {"labels": {"x": "y"}}}, STRATEGIC)["metadata"][
        "labels"
    ] == {"x": "y"}
    job = _ok(sched, path, {"metadata": {"annotations": {"a": "1"}}}, MERGE)
    assert job["metadata"]["annotations"] == {"a": "1"}
    ops = [{"op": "add", "path": "/spec/parallelism", "value": 2}]
    job = _ok(sched, path, ops, JSON_PATCH)
    assert job["spec"]["parallelism"] == 2 and job["metadata"]["generation"] == 2
    image = {"spec": {"template": {"spec": {"containers": [{"name": "main", "image": "b:2"}]}}}}
    for media in (MERGE, STRATEGIC):
        status = _refused(sched, path, image, media, 422)
        assert status["details"]["causes"][0]["field"] == "spec.template", status
    ops = [{"op": "add", "path": "/spec/completions", "value": 3}]
    status = _refused(sched, path, ops, JSON_PATCH, 422)
    assert status["details"]["causes"][0]["field"] == "spec.completions"


def test_scale_patches(sched: SchedulerProcess, ns: str) -> None:
    """`kubectl scale`'s merge patch of `/scale`, and the other types; `application/json`
    is taken as a merge patch there (what earlier `corral scale` sent); bad replicas 422."""
    root = f"/apis/apps/v1/namespaces/{ns}/deployments"
    assert sched.request("POST", root, deployment_manifest("s", 1)).status == 201
    path = _deploy_path(ns, "s") + "/scale"
    scale = _ok(sched, path, {"spec": {"replicas": 2}}, MERGE)
    assert (scale["kind"], scale["spec"]["replicas"]) == ("Scale", 2)
    assert sched.get(_deploy_path(ns, "s"))["spec"]["replicas"] == 2
    assert _ok(sched, path, {"spec": {"replicas": 3}}, STRATEGIC)["spec"]["replicas"] == 3
    ops = [
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 1},
    ]
    assert _ok(sched, path, ops, JSON_PATCH)["spec"]["replicas"] == 1
    assert _ok(sched, path, {"spec": {"replicas": 0}}, "application/json")["spec"]["replicas"] == 0
    status = _refused(sched, path, {"spec": {"replicas": -1}}, MERGE, 422)
    assert status["details"]["causes"][0]["field"] == "spec.replicas"
    assert _refused(sched, path, {"spec": {"replicas": 1}}, "text/plain", 415)
    stale = {"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 4}}
    assert _refused(sched, path, stale, MERGE, 409)["reason"] == "Conflict"
    assert _patch(sched, _deploy_path(ns, "nope") + "/scale", {}, MERGE).status == 404


def test_openapi_describes_the_patch_routes(sched: SchedulerProcess) -> None:
    """Every PATCH route is in `/openapi.json` with the three patch types as its body."""
    paths = sched.get("/openapi.json")["paths"]
    for path in (
        "/api/v1/namespaces/{namespace}/pods/{name}",
        "/api/v1/nodes/{name}",
        "/api/v1/namespaces/{name}",
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        "/apis/batch/v1/namespaces/{namespace}/jobs/{name}",
        "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
    ):
        content = paths[path]["patch"]["requestBody"]["content"]
        assert set(content) == {MERGE, STRATEGIC, JSON_PATCH}, path
