"""Tables through the real HTTP API, as `kubectl get` asks for them: lists, one object,
every namespace, pages, watch streams, the Accept header's choices. (kubectl itself:
tests/integration/test_kubectl.py.)

One scheduler with one hollow node serves the module; each test works in namespaces
of its own, so that what another creates does not show in its rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import SchedulerProcess, running_cluster
from tests.unit.test_tables import POD_COLUMNS

KUBECTL_ACCEPT = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    """A scheduler with one hollow node, Ready, shared by the module's tests."""
    with running_cluster(tmp_path_factory.mktemp("tables"), 1) as s:
        yield s


def table(s: SchedulerProcess, path: str, accept: str = KUBECTL_ACCEPT) -> dict[str, Any]:
    resp = s.request("GET", path, headers={"Accept": accept})
    assert resp.status == 200, (path, resp.status, resp.body[:300])
    assert resp.headers["Content-Type"].startswith("application/json")
    doc: dict[str, Any] = resp.json()
    assert doc["kind"] == "Table", (path, doc.get("kind"))
    return doc


def pods_in(s: SchedulerProcess, namespace: str, *names: str) -> None:
    """A namespace with a pod of each name (one container, nothing asked)."""
    resp = s.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
    assert resp.status == 201, resp.body
    for name in names:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "tables"}},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        }
        resp = s.request("POST", f"/api/v1/namespaces/{namespace}/pods", pod)
        assert resp.status == 201, resp.body


def names(doc: dict[str, Any]) -> list[str]:
    return [row["cells"][0] for row in doc["rows"]]


def test_a_list_of_pods_is_a_table_with_kubes_columns(sched: SchedulerProcess) -> None:
    """Every column (wide ones at priority 1), a row per pod with its metadata."""
    pods_in(sched, "tbl-list", "a", "b", "c")
    doc = table(sched, "/api/v1/namespaces/tbl-list/pods")
    assert doc["apiVersion"] == "meta.k8s.io/v1"
    assert doc["metadata"]["resourceVersion"].isdigit()
    assert [(c["name"], c["priority"]) for c in doc["columnDefinitions"]] == POD_COLUMNS
    assert names(doc) == ["a", "b", "c"]
    for row in doc["rows"]:
        assert len(row["cells"]) == len(POD_COLUMNS)
        assert row["cells"][1] in ("0/1", "1/1") and row["cells"][3] == "0"
        assert row["object"]["kind"] == "PartialObjectMetadata"
        assert row["object"]["apiVersion"] == "meta.k8s.io/v1"
        meta = row["object"]["metadata"]
        assert (meta["namespace"], meta["labels"]) == ("tbl-list", {"app": "tables"})
        assert meta["name"] == row["cells"][0] and meta["uid"]


def test_one_object_is_a_table_of_one_row(sched: SchedulerProcess) -> None:
    """A GET of one pod: one row, its resourceVersion; v1beta1 and includeObject honoured;
    a pod that does not exist is still a 404 Status."""
    pods_in(sched, "tbl-one", "solo")
    pod = sched.get("/api/v1/namespaces/tbl-one/pods/solo")
    doc = table(sched, "/api/v1/namespaces/tbl-one/pods/solo")
    assert names(doc) == ["solo"]
    assert int(doc["metadata"]["resourceVersion"]) >= int(pod["metadata"]["resourceVersion"])
    beta = table(
        sched,
        "/api/v1/namespaces/tbl-one/pods/solo",
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
    )
    assert beta["apiVersion"] == "meta.k8s.io/v1beta1"
    assert beta["rows"][0]["object"]["apiVersion"] == "meta.k8s.io/v1beta1"
    full = table(sched, "/api/v1/namespaces/tbl-one/pods/solo?includeObject=Object")
    obj = full["rows"][0]["object"]
    assert (obj["kind"], obj["metadata"]["name"], obj["spec"]["containers"][0]["name"]) == (
        "Pod",
        "solo",
        "app",
    )
    bare = table(sched, "/api/v1/namespaces/tbl-one/pods/solo?includeObject=None")
    assert "object" not in bare["rows"][0]
    missing = sched.request(
        "GET", "/api/v1/namespaces/tbl-one/pods/nope", headers={"Accept": KUBECTL_ACCEPT}
    )
    assert missing.status == 404 and missing.json()["kind"] == "Status"


def test_every_namespace_and_pages(sched: SchedulerProcess) -> None:
    """`-A`: rows from every namespace, each row's object naming its own; `--chunk-size`:
    pages of `limit` rows, `metadata.continue` to the next, nothing missed or repeated."""
    pods_in(sched, "tbl-pa", "p1", "p2", "p3")
    pods_in(sched, "tbl-pb", "q1")
    everywhere = table(sched, "/api/v1/pods")
    seen = {
        (r["object"]["metadata"]["namespace"], r["cells"][0])
        for r in everywhere["rows"]
        if r["object"]["metadata"]["namespace"].startswith("tbl-p")
    }
    assert seen == {("tbl-pa", "p1"), ("tbl-pa", "p2"), ("tbl-pa", "p3"), ("tbl-pb", "q1")}
    first = table(sched, "/api/v1/namespaces/tbl-pa/pods?limit=2")
    assert names(first) == ["p1", "p2"] and first["metadata"]["continue"]
    assert first["columnDefinitions"]
    token = first["metadata"]["continue"]
    rest = table(sched, f"/api/v1/namespaces/tbl-pa/pods?limit=2&continue={token}")
    assert names(rest) == ["p3"] and "continue" not in rest["metadata"]


def test_a_watch_streams_tables_of_one_row(sched: SchedulerProcess) -> None:
    """`get -w`: each event's object a Table of one row, the column definitions in the
    first event only; from a revision, or from the listing (ADDED for each object)."""
    pods_in(sched, "tbl-watch", "w1")
    start = sched.get("/api/v1/namespaces/tbl-watch/pods")["metadata"]["resourceVersion"]
    created = sched.request(
        "POST",
        "/api/v1/namespaces/tbl-watch/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "w2"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        },
    )
    assert created.status == 201
    resp = sched.request("DELETE", "/api/v1/namespaces/tbl-watch/pods/w2?gracePeriodSeconds=0")
    assert resp.status == 200, resp.body

    def events(query: str) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/tbl-watch/pods?watch=true&timeoutSeconds=1{query}"
        resp = sched.request("GET", path, headers={"Accept": KUBECTL_ACCEPT})
        assert resp.status == 200, resp.body
        return [json.loads(line) for line in resp.body.splitlines() if line.strip()]

    changes = events(f"&resourceVersion={start}&fieldSelector=metadata.name%3Dw2")
    assert changes[0]["type"] == "ADDED" and changes[-1]["type"] == "DELETED"
    for i, event in enumerate(changes):
        obj = event["object"]
        assert (obj["kind"], obj["apiVersion"]) == ("Table", "meta.k8s.io/v1")
        assert names(obj) == ["w2"] and obj["metadata"]["resourceVersion"].isdigit()
        assert obj["rows"][0]["object"]["metadata"]["namespace"] == "tbl-watch"
        if i == 0:
            assert [c["name"] for c in obj["columnDefinitions"]] == [n for n, _ in POD_COLUMNS]
        else:
            assert obj["columnDefinitions"] is None
    listed = events("")  # w1, then whatever its node reports of it within the second
    assert (listed[0]["type"], names(listed[0]["object"])) == ("ADDED", ["w1"])
    assert listed[0]["object"]["columnDefinitions"]
    assert all(e["object"]["columnDefinitions"] is None for e in listed[1:])


def test_every_list_and_its_objects_answer_a_table(sched: SchedulerProcess) -> None:
    """Each list route the API serves (read from /openapi.json) answers a Table to
    kubectl's Accept, with its resource's columns or Kubernetes' default (Name, Age)."""
    operations = sched.get("/openapi.json")["paths"]
    lists = [
        path
        for path, ops in operations.items()
        if "get" in ops and re.fullmatch(r"/api/v1/[a-z]+|/apis/[^/{}]+/[^/{}]+/[a-z]+", path)
    ]
    assert len(lists) >= 10, lists
    expected = {
        "/api/v1/nodes": ["Name", "Status", "Roles", "Age", "Version"],
        "/api/v1/namespaces": ["Name", "Status", "Age"],
        "/api/v1/events": ["Last Seen", "Type", "Reason", "Object", "Message"],
        "/apis/apps/v1/deployments": ["Name", "Ready", "Up-to-date", "Available", "Age"],
        "/apis/batch/v1/jobs": ["Name", "Status", "Completions", "Duration", "Age"],
        "/apis/apps/v1/controllerrevisions": ["Name", "Controller", "Revision", "Age"],
        "/apis/metrics.k8s.io/v1beta1/pods": ["Name", "Age"],
        "/api/v1/tokens": ["Name", "Role", "Description", "Age"],
    }
    for path in lists:
        if path in ("/api/v1/status", "/api/v1/agent"):  # not resources (api/paths.py)
            continue
        doc = table(sched, path)
        default = [c["name"] for c in doc["columnDefinitions"] if c["priority"] == 0]
        if path in expected:
            assert default == expected[path], path
        for row in doc["rows"]:
            assert len(row["cells"]) == len(doc["columnDefinitions"]), path
            assert row["object"]["metadata"]["name"], path
    for param in operations["/api/v1/namespaces/{namespace}/pods/{name}"]["get"]["parameters"]:
        if param["name"] == "includeObject":
            break
    else:
        raise AssertionError("includeObject is not in the OpenAPI document")
    nodes = table(sched, "/api/v1/nodes")["rows"]
    assert [r["cells"][1:3] for r in nodes] == [["Ready", "<none>"]]
    namespace = table(sched, "/api/v1/namespaces/default")
    assert names(namespace) == ["default"] and namespace["rows"][0]["cells"][1] == "Active"


def test_the_accept_header_decides(sched: SchedulerProcess) -> None:
    """No Table asked, or JSON first: the list as it always was. Only a Table asked of a
    subresource: 406 NotAcceptable. A bad includeObject with a Table: 400."""
    pods_in(sched, "tbl-accept", "x")
    path = "/api/v1/namespaces/tbl-accept/pods"
    for accept in (
        "application/json",
        "*/*",
        "application/json,application/json;as=Table;v=v1;g=meta.k8s.io",
        "application/json;as=Table;v=v1;g=example.com,application/json",
    ):
        resp = sched.request("GET", path, headers={"Accept": accept})
        assert resp.status == 200 and resp.json()["kind"] == "PodList", accept
    only_table = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    refused = sched.request("GET", f"{path}/x/log", headers=only_table)
    assert refused.status == 406, refused.body
    status = refused.json()
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "NotAcceptable", 406)
    bad = sched.request("GET", f"{path}?includeObject=Everything", headers=only_table)
    assert bad.status == 400 and "includeObject" in bad.json()["message"]
