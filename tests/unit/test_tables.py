"""Server-side printing: kube-apiserver's columns and cells, Accept negotiation, and the
Table a GET or a watch answers (scheduler/printing, scheduler/api/tables.py)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from scheduler.api import tables
from scheduler.api.errors import BadRequest, NotAcceptable
from scheduler.api.tables import Target, negotiate
from scheduler.api.watch import is_watchable, watchable
from scheduler.printing import columns
from scheduler.printing.columns import Cell, Printer, printer_for
from scheduler.store import KV

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
KUBECTL = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
TABLE_V1 = "application/json;as=Table;v=v1;g=meta.k8s.io"


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def meta(name: str, ago: float = 300, **more: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": ts(ago), **more}


def names_and_priorities(printer: Printer) -> list[tuple[str, int]]:
    return [(c.name, c.priority) for c in printer.columns]


def cells(printer: Printer, obj: dict[str, Any]) -> list[Cell]:
    row = printer.row(obj, NOW)
    assert len(row) == len(printer.columns)  # a cell for every column, the wide ones too
    return row


# kube-apiserver's pod columns and their priorities (1: -o wide's).
POD_COLUMNS = [
    ("Name", 0),
    ("Ready", 0),
    ("Status", 0),
    ("Restarts", 0),
    ("Age", 0),
    ("IP", 1),
    ("Node", 1),
    ("Nominated Node", 1),
    ("Readiness Gates", 1),
]


# --- columns and cells ---------------------------------------------------------------------


def test_pod_columns_and_cells() -> None:
    """Name Ready Status Restarts Age; wide: IP, Node, Nominated Node, Readiness Gates."""
    assert names_and_priorities(columns.PODS) == POD_COLUMNS
    assert columns.PODS.columns[0].format == "name"
    pod = {
        "metadata": meta("web-1"),
        "spec": {
            "nodeName": "node-1",
            "containers": [{"name": "app"}],
            "readinessGates": [{"conditionType": "example.com/lb"}],
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "example.com/lb", "status": "True"}],
            "containerStatuses": [
                {
                    "ready": True,
                    "restartCount": 2,
                    "state": {"running": {}},
                    "lastState": {"terminated": {"finishedAt": ts(60)}},
                }
            ],
        },
    }
    assert cells(columns.PODS, pod) == [
        "web-1",
        "1/1",
        "Running",
        "2 (60s ago)",  # a string, as kube-apiserver sends it since 1.22
        "5m",
        "<none>",
        "node-1",
        "<none>",
        "1/1",
    ]
    pod["status"]["podIPs"] = [{"ip": "10.0.0.7"}]
    pod["status"]["nominatedNodeName"] = "node-2"
    del pod["spec"]["readinessGates"]
    assert cells(columns.PODS, pod)[5:] == ["10.0.0.7", "node-1", "node-2", "<none>"]


def test_node_columns_and_cells() -> None:
    """Name Status Roles Age Version; wide: addresses and what the agent reports."""
    assert names_and_priorities(columns.NODES) == [
        ("Name", 0),
        ("Status", 0),
        ("Roles", 0),
        ("Age", 0),
        ("Version", 0),
        ("Internal-IP", 1),
        ("External-IP", 1),
        ("OS-Image", 1),
        ("Kernel-Version", 1),
        ("Container-Runtime", 1),
    ]
    node = {
        "metadata": {
            "name": "n1",
            "creationTimestamp": ts(3 * 86400),
            "labels": {
                "node-role.kubernetes.io/worker": "",
                "node-role.kubernetes.io/edge": "",
                "kubernetes.io/role": "gpu",
            },
        },
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "addresses": [{"type": "InternalIP", "address": "10.1.2.3"}],
            "nodeInfo": {"agentVersion": "0.1.0", "osImage": "Debian 12", "kernelVersion": "6.1"},
        },
    }
    assert cells(columns.NODES, node) == [
        "n1",
        "Ready,SchedulingDisabled",
        "edge,gpu,worker",
        "3d",
        "0.1.0",  # corral's agent stands where the kubelet's version would
        "10.1.2.3",
        "<none>",
        "Debian 12",
        "6.1",
        "<unknown>",
    ]
    bare = {"metadata": {"name": "n2"}}
    assert cells(columns.NODES, bare)[1:5] == ["Unknown", "<none>", "<unknown>", "<unknown>"]


def test_workload_namespace_and_revision_cells() -> None:
    """Counts are integers where Kubernetes sends them so; the rest are strings."""
    deployment = {
        "metadata": meta("web", 90),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1"}]}},
        },
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert [c.name for c in columns.DEPLOYMENTS.columns if c.priority == 0] == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
    ]
    assert cells(columns.DEPLOYMENTS, deployment) == [
        "web",
        "2/3",
        3,
        2,
        "90s",
        "app",
        "nginx:1",
        "app=web",
    ]
    job = {
        "metadata": meta("pi", 60, uid="u-1"),
        "spec": {"completions": 2, "template": {"spec": {"containers": [{"name": "pi"}]}}},
        "status": {"succeeded": 1, "startTime": ts(50)},
    }
    assert [c.name for c in columns.JOBS.columns] == [
        "Name",
        "Status",
        "Completions",
        "Duration",
        "Age",
        "Containers",
        "Images",
        "Selector",
    ]
    assert cells(columns.JOBS, job) == [
        "pi",
        "Running",
        "1/2",
        "50s",
        "60s",
        "pi",
        "<none>",
        "batch.kubernetes.io/controller-uid=u-1",
    ]
    assert cells(columns.NAMESPACES, {"metadata": meta("ns", 7200)}) == ["ns", "Active", "120m"]
    revision = {
        "metadata": meta(
            "web-abc",
            ownerReferences=[
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "controller": True}
            ],
        ),
        "revision": 4,
    }
    assert cells(columns.REVISIONS, revision) == ["web-abc", "deployment.apps/web", 4, "5m"]


def test_event_columns_default_view_and_wide() -> None:
    """The default view is kubectl's LAST SEEN TYPE REASON OBJECT MESSAGE."""
    default = [c.name for c in columns.EVENTS.columns if c.priority == 0]
    assert default == ["Last Seen", "Type", "Reason", "Object", "Message"]
    event = {
        "metadata": meta("web-1.abc"),
        "involvedObject": {"kind": "Pod", "name": "web-1"},
        "reason": "Scheduled",
        "message": "assigned",
        "type": "Normal",
        "count": 3,
        "firstTimestamp": ts(600),
        "lastTimestamp": ts(30),
        "source": {"component": "corral-scheduler", "host": "h1"},
    }
    assert cells(columns.EVENTS, event) == [
        "30s",
        "Normal",
        "Scheduled",
        "pod/web-1",
        "",
        "corral-scheduler, h1",
        "assigned",
        "10m",
        3,
        "web-1.abc",
    ]
    del event["lastTimestamp"]
    assert cells(columns.EVENTS, event)[0] == "10m"  # only the first occurrence is known


def test_every_other_resource_has_the_default_table_and_subresources_none() -> None:
    """Name and Age for what has no printer of its own; a subresource has no table."""
    assert printer_for("v1", "pods") is columns.PODS
    assert printer_for("apps/v1", "controllerrevisions") is columns.REVISIONS
    default = printer_for("metrics.k8s.io/v1beta1", "nodes")
    assert default is columns.DEFAULT
    assert cells(default, {"metadata": meta("n1", 5)}) == ["n1", "5s"]
    assert printer_for("v1", "pods/log") is None
    assert printer_for("apps/v1", "deployments/scale") is None
    token = {"id": "ab12", "role": "viewer", "description": "ci", "created": ts(120)}
    assert cells(columns.TOKENS, token) == ["ab12", "viewer", "ci", "2m"]
    assert columns.TOKENS.metadata(token) == {"name": "ab12", "creationTimestamp": ts(120)}


# --- negotiation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (KUBECTL, "meta.k8s.io/v1"),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", "meta.k8s.io/v1beta1"),
        # Parameters in any order, spaces around them; the media type's case is free.
        ("Application/JSON ; g=meta.k8s.io ; as=Table ; v=v1", "meta.k8s.io/v1"),
        ("*/*;as=Table;v=v1;g=meta.k8s.io", "meta.k8s.io/v1"),
        # Without q, the header's order decides: JSON first is the plain JSON.
        (f"application/json,{TABLE_V1}", None),
        # With q, the highest wins, whatever the order.
        (f"application/json;q=0.5,{TABLE_V1};q=0.9", "meta.k8s.io/v1"),
        (f"{TABLE_V1};q=0.1,application/json", None),
        # A Table of another group or version, or in YAML, is skipped for the next clause.
        ("application/json;as=Table;v=v1,application/json", None),
        ("application/json;as=Table;v=v2;g=meta.k8s.io,application/json", None),
        ("application/yaml;as=Table;v=v1;g=meta.k8s.io,application/json", None),
        # q=0 is "not acceptable".
        (
            f"{TABLE_V1};q=0,application/json;as=Table;v=v1beta1;g=meta.k8s.io",
            "meta.k8s.io/v1beta1",
        ),
        # A plain clause of any type is the plain JSON, as corral answers every client.
        (f"application/vnd.kubernetes.protobuf,{TABLE_V1}", None),
    ],
)
def test_accept_is_read_in_order_with_its_parameters(accept: str, expected: str | None) -> None:
    """The first acceptable clause wins: a Table (in the version asked) or the JSON."""
    assert negotiate(accept, columns.PODS) == expected


@pytest.mark.parametrize(
    ("accept", "printer"),
    [
        (TABLE_V1, None),  # a subresource has no Table
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", None),
        ("application/json;as=Table;v=v2;g=meta.k8s.io", columns.PODS),
        ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", columns.PODS),
        (f"{TABLE_V1};q=0", columns.PODS),
    ],
)
def test_nothing_acceptable_is_406(accept: str, printer: Printer | None) -> None:
    """Only a Table accepted, and no Table to give: 406 NotAcceptable, as kube-apiserver."""
    with pytest.raises(NotAcceptable) as caught:
        negotiate(accept, printer)
    assert caught.value.code == 406 and caught.value.reason == "NotAcceptable"


def test_include_object_is_checked_only_when_a_table_is_asked() -> None:
    """A bad includeObject is a 400 for a Table, ignored for the plain JSON."""
    asked = make_mocked_request("GET", "/?includeObject=All", headers={"Accept": KUBECTL})
    with pytest.raises(BadRequest, match="includeObject"):
        tables.target(asked, columns.PODS)
    plain = make_mocked_request("GET", "/?includeObject=All")
    assert tables.target(plain, columns.PODS) is None
    default = make_mocked_request("GET", "/", headers={"Accept": KUBECTL})
    assert tables.target(default, columns.PODS) == Target(columns.PODS, "meta.k8s.io/v1")


# --- the Table -----------------------------------------------------------------------------


def _pod(name: str, namespace: str = "default", **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta(name, namespace=namespace, **metadata),
        "spec": {"containers": [{"name": "app"}]},
        "status": {"phase": "Pending"},
    }


def test_a_list_is_a_table_of_its_items_with_its_list_metadata() -> None:
    """Column definitions, a row per item with its metadata, resourceVersion and continue."""
    doc: dict[str, Any] = {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"continue": "abc", "resourceVersion": "42"},
        "items": [_pod("a"), _pod("b", "other")],
    }
    table = Target(columns.PODS, "meta.k8s.io/v1").of_list(doc)
    assert (table["kind"], table["apiVersion"]) == ("Table", "meta.k8s.io/v1")
    assert table["metadata"] == {"resourceVersion": "42", "continue": "abc"}
    assert table["columnDefinitions"][0] == {
        "name": "Name",
        "type": "string",
        "format": "name",
        "description": columns.NAME.description,
        "priority": 0,
    }
    assert [d["priority"] for d in table["columnDefinitions"]] == [0] * 5 + [1] * 4
    rows = table["rows"]
    assert [r["cells"][:3] for r in rows] == [["a", "0/1", "Pending"], ["b", "0/1", "Pending"]]
    assert rows[1]["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": doc["items"][1]["metadata"],
    }
    empty = Target(columns.PODS, "meta.k8s.io/v1").of_list({"metadata": {}, "items": []})
    assert empty["rows"] == [] and len(empty["columnDefinitions"]) == 9


def test_include_object_and_v1beta1() -> None:
    """Metadata (a PartialObjectMetadata in the Table's version), Object, or None."""
    pod = _pod("a", resourceVersion="7")
    one = Target(columns.PODS, "meta.k8s.io/v1beta1").of_object(pod)
    assert one["apiVersion"] == "meta.k8s.io/v1beta1"
    assert one["metadata"] == {"resourceVersion": "7"}
    assert one["rows"][0]["object"]["apiVersion"] == "meta.k8s.io/v1beta1"
    assert (
        Target(columns.PODS, "meta.k8s.io/v1", "Object").of_object(pod)["rows"][0]["object"] == pod
    )
    assert "object" not in Target(columns.PODS, "meta.k8s.io/v1", "None").of_object(pod)["rows"][0]


def _stored(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()  # as the store keeps it


def test_a_watch_sends_the_column_definitions_with_its_first_event_only() -> None:
    """As kube-apiserver: kubectl keeps the last definitions it saw. (The store keeps no
    resourceVersion in an object: the watch sets it from the KV.)"""
    render = tables.watch_objects(Target(columns.PODS, "meta.k8s.io/v1"))
    first, second = (
        json.loads(render(KV(f"/pods/default/{n}", _stored(_pod(n)), 9, 9))) for n in ("a", "b")
    )
    assert len(first["columnDefinitions"]) == 9 and first["rows"][0]["cells"][0] == "a"
    assert second["columnDefinitions"] is None and second["rows"][0]["cells"][0] == "b"
    assert second["metadata"] == {"resourceVersion": "9"}  # the event's own revision


# --- where it is served --------------------------------------------------------------------


@watchable
async def _list(request: web.Request) -> web.Response:
    """Pods."""
    doc = {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [_pod("a")]}
    return web.json_response(doc)


async def _write(request: web.Request) -> web.Response:
    return web.Response(status=201)


def test_serving_wraps_the_gets_of_resources_only() -> None:
    """GETs of collections and objects; not writes, subresources' own routes as they are
    named, nor what is not a resource. The watch mark and docstring are kept."""
    served = tables.serving(
        [
            web.get("/api/v1/namespaces/{namespace}/pods", _list),
            web.post("/api/v1/namespaces/{namespace}/pods", _write),
            web.get("/api/v1/namespaces/{namespace}/pods/{name}/log", _write),
            web.get("/healthz", _write),
            web.get("/api/v1/status", _write),
        ]
    )
    wrapped = [tables.serves_tables(r.handler) for r in served]
    assert wrapped == [True, False, True, False, False]
    assert is_watchable(served[0].handler) and served[0].handler.__doc__ == "Pods."


async def test_a_wrapped_list_answers_a_table_only_when_asked() -> None:
    """kubectl's Accept: a Table; any other: the handler's own answer, untouched."""
    (route,) = tables.serving([web.get("/api/v1/namespaces/{namespace}/pods", _list)])
    handler: Any = route.handler
    plain = await handler(make_mocked_request("GET", "/api/v1/namespaces/default/pods"))
    assert json.loads(plain.body)["kind"] == "PodList"
    asked = make_mocked_request(
        "GET", "/api/v1/namespaces/default/pods", headers={"Accept": KUBECTL}
    )
    table = json.loads((await handler(asked)).body)
    assert table["kind"] == "Table" and table["rows"][0]["cells"][0] == "a"
    assert asked[tables.TABLE].api_version == "meta.k8s.io/v1"  # what a watch would read


async def test_a_big_lists_table_is_made_in_a_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Table of 10,000 pods (`kubectl get pods -A`) took 0.29 s of the event loop: a
    list past INLINE_JSON_BYTES is turned into its Table in a thread, a small one inline."""
    threads: list[threading.Thread] = []
    of_list = Target.of_list

    def recording(self: Target, doc: dict[str, Any]) -> dict[str, Any]:
        threads.append(threading.current_thread())
        return of_list(self, doc)

    monkeypatch.setattr(Target, "of_list", recording)

    def listing(count: int) -> Any:
        async def pods(request: web.Request) -> web.Response:
            items = [_pod(f"p{i}") for i in range(count)]
            return web.json_response({"kind": "PodList", "metadata": {}, "items": items})

        (route,) = tables.serving([web.get("/api/v1/namespaces/{namespace}/pods", pods)])
        return route.handler

    for count in (1, 1000):  # 1000 pods: about 250 KiB of JSON
        request = make_mocked_request(
            "GET", "/api/v1/namespaces/default/pods", headers={"Accept": KUBECTL}
        )
        table = json.loads((await listing(count)(request)).body)
        assert table["kind"] == "Table" and len(table["rows"]) == count
        assert table["rows"][-1]["cells"][0] == f"p{count - 1}"
    assert threads[0] is threading.current_thread()
    assert threads[1] is not threading.current_thread()
