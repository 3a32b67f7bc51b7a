"""The real corral-scheduler process over HTTP: pods, nodes, errors, operations endpoints."""

from __future__ import annotations

import functools
import json
from typing import Any

from openapi_spec_validator import validate

from tests.conftest import SchedulerProcess, deployment_manifest, ready_nodes, wait_for


def pod(name: str, cpu: str = "100m", memory: str = "64Mi", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name.split("-")[0]}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox",
                    "resources": {"requests": {"cpu": cpu, "memory": memory}},
                }
            ],
            **spec,
        },
    }


def get_pod(s: SchedulerProcess, name: str, ns: str = "default") -> dict[str, Any]:
    return s.get(f"/api/v1/namespaces/{ns}/pods/{name}")


def test_pod_is_bound_and_running(scheduler: SchedulerProcess) -> None:
    """A created pod is placed on a Ready node and reported Running by its agent."""
    resp = scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("web"))
    assert resp.status == 201, resp.body
    created = resp.json()
    assert created["kind"] == "Pod" and created["apiVersion"] == "v1"
    assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
    running = wait_for(
        lambda: (p := get_pod(scheduler, "web"))["status"]["phase"] == "Running" and p
    )
    assert running["spec"]["nodeName"].startswith("hollow-")
    assert running["metadata"]["uid"] == created["metadata"]["uid"]
    scheduled = [c for c in running["status"]["conditions"] if c["type"] == "PodScheduled"]
    assert scheduled and scheduled[0]["status"] == "True"


def test_a_hollow_pod_has_a_log(scheduler: SchedulerProcess) -> None:
    """A hollow node answers log requests as an agent does (one line a start): `corral
    logs` and `kubectl logs` of a simulated pod waited for good."""
    assert scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("web")).status == 201
    wait_for(lambda: get_pod(scheduler, "web")["status"]["phase"] == "Running")
    path = "/api/v1/namespaces/default/pods/web/log"
    plain = scheduler.request("GET", path)
    assert plain.status == 200 and plain.body == b"hollow pod web: main started\n", plain.body
    stamped = scheduler.request("GET", path + "?timestamps=true&follow=true").body.decode()
    assert stamped.endswith("Z hollow pod web: main started\n") and stamped[:4].isdigit()
    assert scheduler.request("GET", path + "?tailLines=0").body == b""
    previous = scheduler.request("GET", path + "?previous=true")
    assert previous.status == 400 and "previous terminated" in previous.json()["message"]


def test_a_log_read_since_a_time_and_cut_at_a_size(scheduler: SchedulerProcess) -> None:
    """`kubectl logs --since=1h`, `--since-time=...` and `--limit-bytes=N` (the kubelet's
    sinceSeconds, sinceTime and limitBytes): lines older than the start are left out (the
    hollow line is stamped with its container's start), a log stops at N bytes."""
    assert scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("web")).status == 201
    wait_for(lambda: get_pod(scheduler, "web")["status"]["phase"] == "Running")
    path = "/api/v1/namespaces/default/pods/web/log"
    line = b"hollow pod web: main started\n"
    for query, body in (
        ("sinceSeconds=3600", line),
        ("sinceTime=2000-01-01T00:00:00Z", line),
        ("sinceTime=2999-01-01T00:00:00Z", b""),
        ("sinceTime=2999-01-01T00:00:00Z&follow=true", b""),
        ("limitBytes=6", b"hollow"),
        ("limitBytes=6&follow=true", b"hollow"),
        ("sinceSeconds=3600&limitBytes=10", b"hollow pod"),
    ):
        got = scheduler.request("GET", f"{path}?{query}")
        assert (got.status, got.body) == (200, body), (query, got.body)
    stamped = scheduler.request("GET", path + "?sinceSeconds=3600&timestamps=true").body
    assert stamped.endswith(b"Z " + line) and stamped[:4].isdigit(), stamped
    # A fraction of a second is dropped, as kube-apiserver passes sinceTime on: the line
    # stamped at second S is in a read since S.5.
    second = stamped.split(b" ", 1)[0].decode().removesuffix("Z")
    got = scheduler.request("GET", f"{path}?sinceTime={second}.5Z")
    assert got.body == line, got.body
    wait_for(lambda: scheduler.request("GET", path + "?sinceSeconds=1").body == b"", timeout=5)
    for query in (
        "sinceSeconds=0",
        "limitBytes=0",
        "sinceTime=yesterday",
        "sinceTime=2000-01-01T00:00:00",  # no offset
        "sinceSeconds=5&sinceTime=2000-01-01T00:00:00Z",
    ):
        refused = scheduler.request("GET", f"{path}?{query}")
        assert refused.status == 400, (query, refused.body)


def test_yaml_body_and_list_shape(scheduler: SchedulerProcess) -> None:
    """YAML bodies are accepted; lists are PodList with items and a resourceVersion."""
    manifest = (
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: yml\n  labels: {tier: db}\n"
        "spec:\n  containers:\n  - name: c\n    image: busybox\n"
    )
    resp = scheduler.request(
        "POST", "/api/v1/namespaces/default/pods", manifest, content_type="application/yaml"
    )
    assert resp.status == 201, resp.body
    listing = scheduler.get("/api/v1/namespaces/default/pods")
    assert listing["kind"] == "PodList"
    assert int(listing["metadata"]["resourceVersion"]) >= 1
    assert [p["metadata"]["name"] for p in listing["items"]] == ["yml"]


def test_batch_create_is_all_or_nothing(scheduler: SchedulerProcess) -> None:
    """A PodList is created in one transaction; one bad item creates nothing."""
    batch = {"apiVersion": "v1", "kind": "PodList", "items": [pod(f"b-{i}") for i in range(50)]}
    resp = scheduler.request("POST", "/api/v1/namespaces/default/pods", batch)
    assert resp.status == 201, resp.body
    assert len(resp.json()["items"]) == 50
    bad = {"apiVersion": "v1", "kind": "PodList", "items": [pod("c-1"), {"kind": "Pod"}]}
    resp = scheduler.request("POST", "/api/v1/namespaces/default/pods", bad)
    assert resp.status == 422
    fields = [c["field"] for c in resp.json()["details"]["causes"]]
    assert "items[1].metadata" in fields or "items[1].apiVersion" in fields
    dup = {"apiVersion": "v1", "kind": "PodList", "items": [pod("c-2"), pod("b-3")]}
    resp = scheduler.request("POST", "/api/v1/namespaces/default/pods", dup)
    assert resp.status == 409 and resp.json()["reason"] == "AlreadyExists"
    names = {p["metadata"]["name"] for p in scheduler.get("/api/v1/pods")["items"]}
    assert "c-1" not in names and "c-2" not in names


def test_selectors(scheduler: SchedulerProcess) -> None:
    """labelSelector and fieldSelector filter lists."""
    for name in ("web-1", "web-2", "db-1"):
        assert scheduler.request("POST", "/api/v1/namespaces/default/pods", pod(name)).status == 201

    def names(query: str) -> list[str]:
        return sorted(
            p["metadata"]["name"] for p in scheduler.get(f"/api/v1/pods?{query}")["items"]
        )

    assert names("labelSelector=app%3Dweb") == ["web-1", "web-2"]
    assert names("labelSelector=app%20in%20(db)") == ["db-1"]
    assert names("labelSelector=app!%3Dweb") == ["db-1"]
    wait_for(lambda: len(names("fieldSelector=status.phase%3DRunning")) == 3)
    node = get_pod(scheduler, "db-1")["spec"]["nodeName"]
    assert "db-1" in names(f"fieldSelector=spec.nodeName%3D{node}")
    bad = scheduler.request("GET", "/api/v1/pods?labelSelector=a%3D%3D%3Db")
    assert bad.status == 400 and bad.json()["kind"] == "Status"


def test_optimistic_concurrency(scheduler: SchedulerProcess) -> None:
    """A PUT with a stale resourceVersion gets 409; the spec (but its images) cannot change."""
    created = scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("occ")).json()
    current = wait_for(
        lambda: (p := get_pod(scheduler, "occ"))["status"]["phase"] == "Running" and p
    )
    stale = json.loads(json.dumps(created))
    stale["metadata"]["labels"]["x"] = "1"
    resp = scheduler.request("PUT", "/api/v1/namespaces/default/pods/occ", stale)
    assert resp.status == 409 and resp.json()["reason"] == "Conflict"
    current["metadata"]["labels"]["x"] = "2"
    resp = scheduler.request("PUT", "/api/v1/namespaces/default/pods/occ", current)
    assert resp.status == 200, resp.body
    assert resp.json()["metadata"]["labels"]["x"] == "2"
    fresh = resp.json()
    fresh["spec"]["restartPolicy"] = "Never"  # (its images may change: test_patch.py)
    resp = scheduler.request("PUT", "/api/v1/namespaces/default/pods/occ", fresh)
    assert resp.status == 422 and resp.json()["details"]["causes"][0]["field"] == "spec"


def test_unschedulable_reason_and_retry(scheduler: SchedulerProcess) -> None:
    """A pod that fits nowhere says why in kube-scheduler's words."""
    resp = scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("huge", memory="64Gi"))
    assert resp.status == 201

    def message() -> str | None:
        for cond in get_pod(scheduler, "huge")["status"]["conditions"]:
            if cond["type"] == "PodScheduled" and cond["status"] == "False":
                return str(cond["message"])
        return None

    assert wait_for(message) == "0/3 nodes are available: 3 Insufficient memory."
    status = scheduler.get("/api/v1/status")
    assert status["pods"]["pendingQueue"] == 1
    assert status["pods"]["unschedulable"][0]["message"].startswith("0/3 nodes")


def test_delete_is_graceful_and_finishes(scheduler: SchedulerProcess) -> None:
    """Deleting a running pod marks it, its agent stops it, then it is gone."""
    scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("gone"))
    wait_for(lambda: get_pod(scheduler, "gone")["status"]["phase"] == "Running")
    resp = scheduler.request("DELETE", "/api/v1/namespaces/default/pods/gone")
    assert resp.status == 200
    wait_for(lambda: scheduler.request("GET", "/api/v1/namespaces/default/pods/gone").status == 404)
    resp = scheduler.request("DELETE", "/api/v1/namespaces/default/pods/gone")
    assert resp.status == 404 and resp.json()["reason"] == "NotFound"


def test_delete_options_body_forces(scheduler: SchedulerProcess) -> None:
    """kubectl sends `--grace-period=0 --force` as a DeleteOptions body, not a query."""

    def running(name: str) -> bool:
        return bool(get_pod(scheduler, name)["status"]["phase"] == "Running")

    for name in ("forced", "graceful"):
        scheduler.request("POST", "/api/v1/namespaces/default/pods", pod(name))
        wait_for(functools.partial(running, name))
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
    resp = scheduler.request("DELETE", "/api/v1/namespaces/default/pods/forced", options)
    assert resp.status == 200, resp.body
    assert "deletionTimestamp" not in resp.json()["metadata"]  # removed, not marked
    assert scheduler.request("GET", "/api/v1/namespaces/default/pods/forced").status == 404
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
    resp = scheduler.request("DELETE", "/api/v1/namespaces/default/pods/graceful", options)
    assert resp.status == 200 and resp.json()["metadata"]["deletionTimestamp"]
    resp = scheduler.request(
        "DELETE", "/api/v1/namespaces/default/pods/graceful", {"gracePeriodSeconds": "soon"}
    )
    assert resp.status == 400 and "gracePeriodSeconds" in resp.json()["message"]


def test_delete_preconditions(scheduler: SchedulerProcess) -> None:
    """DeleteOptions.preconditions name the incarnation (uid) or version meant: a pod
    replaced in place keeps its name with a new uid, so a delete by name alone could
    remove the replacement. A precondition that fails is a 409 and nothing is deleted."""
    scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("meant"))
    path = "/api/v1/namespaces/default/pods/meant"
    meta = get_pod(scheduler, "meant")["metadata"]
    for pre in ({"uid": "someone-else"}, {"resourceVersion": "1"}):
        resp = scheduler.request("DELETE", path, {"gracePeriodSeconds": 0, "preconditions": pre})
        assert resp.status == 409 and "Precondition failed" in resp.json()["message"], pre
        assert get_pod(scheduler, "meant")["metadata"]["uid"] == meta["uid"]
    bad = scheduler.request("DELETE", path, {"preconditions": {"resourceVersion": "x"}})
    assert bad.status == 400 and "preconditions.resourceVersion" in bad.json()["message"]
    options = {"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}}
    assert scheduler.request("DELETE", path, options).status == 200
    assert scheduler.request("GET", path).status == 404


def test_cordon_and_drain(scheduler: SchedulerProcess) -> None:
    """Cordon stops new placements on a node; drain moves its pods elsewhere."""
    nodes = sorted(n["metadata"]["name"] for n in scheduler.get("/api/v1/nodes")["items"])
    for other in nodes[1:]:
        assert scheduler.request("POST", f"/api/v1/nodes/{other}/cordon").status == 200
    scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("pinned"))
    first = wait_for(
        lambda: (p := get_pod(scheduler, "pinned"))["status"]["phase"] == "Running" and p
    )
    assert first["spec"]["nodeName"] == nodes[0]
    node = scheduler.get(f"/api/v1/nodes/{nodes[1]}")
    assert node["spec"]["unschedulable"] is True
    assert scheduler.request("POST", f"/api/v1/nodes/{nodes[1]}/uncordon").status == 200
    resp = scheduler.request("POST", f"/api/v1/nodes/{nodes[0]}/drain")
    assert resp.status == 200 and "1 pods rescheduled" in resp.json()["message"]
    moved = wait_for(
        lambda: (
            (p := get_pod(scheduler, "pinned"))["status"]["phase"] == "Running"
            and p["spec"]["nodeName"] == nodes[1]
            and p
        )
    )
    assert moved["metadata"]["uid"] != first["metadata"]["uid"]
    assert scheduler.get(f"/api/v1/nodes/{nodes[0]}")["spec"]["unschedulable"] is True


def test_node_field_selectors(scheduler: SchedulerProcess) -> None:
    """`kubectl get node NAME --watch` lists and watches with fieldSelector=metadata.name:
    one node, not all of them; spec.unschedulable selects cordoned nodes."""
    nodes = sorted(n["metadata"]["name"] for n in scheduler.get("/api/v1/nodes")["items"])
    first = f"fieldSelector=metadata.name%3D{nodes[0]}"
    listed = scheduler.get(f"/api/v1/nodes?{first}")["items"]
    assert [n["metadata"]["name"] for n in listed] == nodes[:1]
    resp = scheduler.request("GET", f"/api/v1/nodes?{first}&watch=true&timeoutSeconds=1")
    watched = [json.loads(line)["object"]["metadata"]["name"] for line in resp.body.splitlines()]
    assert set(watched) == {nodes[0]}
    assert scheduler.request("POST", f"/api/v1/nodes/{nodes[1]}/cordon").status == 200
    cordoned = scheduler.get("/api/v1/nodes?fieldSelector=spec.unschedulable%3Dtrue")["items"]
    assert [n["metadata"]["name"] for n in cordoned] == [nodes[1]]
    others = scheduler.get(f"/api/v1/nodes?fieldSelector=metadata.name!%3D{nodes[0]}")["items"]
    assert [n["metadata"]["name"] for n in others] == nodes[1:]
    bad = scheduler.request("GET", "/api/v1/nodes?fieldSelector=status.phase%3DReady")
    assert bad.status == 400 and "status.phase" in bad.json()["message"]


def test_node_list_pages(scheduler: SchedulerProcess) -> None:
    """`kubectl get nodes` asks for pages of 500 (`limit`, then `continue`): they follow
    one another, with live usage, and a bad limit is a 400 (it was ignored)."""
    nodes = sorted(n["metadata"]["name"] for n in scheduler.get("/api/v1/nodes")["items"])
    seen, token = [], ""
    for _ in nodes:
        body = scheduler.get(f"/api/v1/nodes?limit=2&continue={token}")
        assert len(body["items"]) <= 2 and all("usage" in n["status"] for n in body["items"])
        seen += [n["metadata"]["name"] for n in body["items"]]
        token = body["metadata"].get("continue", "")
        if not token:
            break
    assert seen == nodes and len(nodes) > 2
    for query in ("limit=abc", "limit=0", "continue=bogus"):
        assert scheduler.request("GET", f"/api/v1/nodes?{query}").status == 400, query


def test_operations_endpoints(scheduler: SchedulerProcess) -> None:
    """healthz, readyz, status and Prometheus metrics answer."""
    assert scheduler.request("GET", "/healthz").body == b"ok"
    assert scheduler.request("GET", "/readyz").body == b"ok"
    status = scheduler.get("/api/v1/status")
    assert status["nodes"]["ready"] == 3 and status["nodes"]["connected"] == 3
    assert status["resources"]["cpuMillicores"]["allocatable"] > 0
    scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("m"))
    wait_for(lambda: get_pod(scheduler, "m")["spec"].get("nodeName"))
    # Methods outside the API's share one label value, token or not (aiohttp's parser
    # knows a few dozen, WebDAV's among them, and refuses the rest itself).
    assert scheduler.request("PROPFIND", "/api/v1/nodes", token=None).status == 401
    assert scheduler.request("PROPFIND", "/api/v1/nodes").status == 405
    text = scheduler.request("GET", "/metrics").body.decode()
    assert 'method="PROPFIND"' not in text
    assert 'corral_http_requests_total{code="401",method="other"} 1.0' in text
    assert 'corral_http_requests_total{code="405",method="other"} 1.0' in text
    for name in (
        "corral_pods{phase=",
        "corral_scheduling_latency_seconds_bucket",
        'corral_placement_attempts_total{result="scheduled"}',
        "corral_connected_agents 3.0",
        "corral_node_heartbeat_age_seconds{node=",
        'corral_http_request_duration_seconds_count{method="GET"}',
    ):
        assert name in text, name
    # `name[]` restricts a scrape to the samples named, as prometheus-client's exposition does.
    query = "/metrics?name[]=corral_binds_total&name[]=corral_connected_agents"
    only = scheduler.request("GET", query).body.decode()
    families = {line.split()[2] for line in only.splitlines() if line.startswith("# TYPE")}
    assert families == {"corral_binds_total", "corral_connected_agents"}, only
    assert "corral_connected_agents 3.0" in only and "heartbeat_age" not in only


def test_openapi_matches_routes(bare_scheduler: SchedulerProcess) -> None:
    """Every documented path is served, and the document names the models; it is valid
    OpenAPI of the version it says (3.0: pydantic's JSON Schema 2020-12 is not)."""
    doc = bare_scheduler.get("/openapi.json")
    assert doc["openapi"].startswith("3.0.")
    validate(doc)
    for path in (
        "/api/v1/namespaces/{namespace}/pods",
        "/api/v1/namespaces/{namespace}/pods/{name}",
        "/api/v1/nodes/{name}/drain",
        "/api/v1/status",
    ):
        assert path in doc["paths"], path
    assert {"Pod", "Node", "Status", "PodList"} <= set(doc["components"]["schemas"])
    post = doc["paths"]["/api/v1/namespaces/{namespace}/pods"]["post"]
    assert post["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Pod"
    )


def test_openapi_names_the_list_parameters_served(bare_scheduler: SchedulerProcess) -> None:
    """A list documents `fieldSelector`, `limit` and `continue` exactly where it takes them
    (a bad value is a 400 there), so clients generated from the document can page."""
    doc = bare_scheduler.get("/openapi.json")
    lists = [
        path
        for path, ops in doc["paths"].items()
        if "get" in ops
        and ops["get"]["responses"]
        .get("200", {})
        .get("content", {})
        .get("application/json", {})
        .get("schema", {})
        .get("$ref", "")
        .endswith("List")
    ]
    assert "/apis/apps/v1/namespaces/{namespace}/deployments" in lists
    for path in lists:
        url = path.replace("{namespace}", "default")
        named = {p["name"] for p in doc["paths"][path]["get"].get("parameters", [])}
        for param, bad in (("fieldSelector", "no.such.field%3Dx"), ("limit", "0")):
            status = bare_scheduler.request("GET", f"{url}?{param}={bad}").status
            assert (param in named) == (status == 400), (path, param, status)
    delete = doc["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs/{name}"]["delete"]
    assert "propagationPolicy" in {p["name"] for p in delete["parameters"]}


def test_events_recorded_and_listed(scheduler: SchedulerProcess) -> None:
    """Scheduling decisions are events, listed per namespace and filtered by object."""
    scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("ev"))
    scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("ev-huge", memory="64Gi"))

    def reasons(name: str) -> list[str]:
        query = f"fieldSelector=involvedObject.name%3D{name}"
        items = scheduler.get(f"/api/v1/namespaces/default/events?{query}")["items"]
        return [e["reason"] for e in items]

    assert "Scheduled" in wait_for(lambda: reasons("ev"))
    assert "FailedScheduling" in wait_for(lambda: reasons("ev-huge"))
    listing = scheduler.get("/api/v1/events")
    assert listing["kind"] == "EventList"
    scheduled = next(e for e in listing["items"] if e["reason"] == "Scheduled")
    assert scheduled["involvedObject"]["kind"] == "Pod"
    assert scheduled["message"].startswith("Successfully assigned default/ev to hollow-")
    assert scheduled["count"] == 1 and scheduled["source"]["component"] == "corral-scheduler"
    bad = scheduler.request("GET", "/api/v1/events?fieldSelector=color%3Dred")
    assert bad.status == 400
    # One by name, as kube-apiserver serves it (kubectl's `get event NAME` asks so).
    meta = scheduled["metadata"]
    one = scheduler.get(f"/api/v1/namespaces/{meta['namespace']}/events/{meta['name']}")
    assert (one["kind"], one["apiVersion"], one["reason"]) == ("Event", "v1", "Scheduled")
    assert one["metadata"]["name"] == meta["name"] and one["metadata"]["resourceVersion"]
    assert one["involvedObject"] == scheduled["involvedObject"]
    missing = scheduler.request("GET", "/api/v1/namespaces/default/events/nope")
    assert missing.status == 404 and missing.json()["message"] == 'events "nope" not found'


def test_list_resource_version_semantics(scheduler: SchedulerProcess) -> None:
    """`resourceVersion` with `resourceVersionMatch` on a list, as kube-apiserver reads
    them: at least N is served from the latest; exactly N only while N is the latest (no
    snapshots are kept: 410, list again); malformed combinations are 400s."""
    pods = "/api/v1/namespaces/default/pods"
    current = scheduler.get(pods)["metadata"]["resourceVersion"]
    for query in (f"resourceVersion={current}", f"resourceVersion={current}&"
                  "resourceVersionMatch=NotOlderThan", "resourceVersion=0"):  # fmt: skip
        assert scheduler.request("GET", f"{pods}?{query}").status == 200, query

    def exact_at_the_latest() -> bool:  # the agents' reports move it on now and then
        latest = scheduler.get(pods)["metadata"]["resourceVersion"]
        query = f"resourceVersion={latest}&resourceVersionMatch=Exact"
        return scheduler.request("GET", f"{pods}?{query}").status == 200

    wait_for(exact_at_the_latest)
    assert scheduler.request("POST", pods, pod("newer")).status == 201
    for path in (pods, "/api/v1/nodes", "/api/v1/events", "/api/v1/namespaces"):
        exact = scheduler.request("GET", f"{path}?resourceVersion={current}&"
                                  "resourceVersionMatch=Exact")  # fmt: skip
        assert exact.status == 410 and exact.json()["reason"] == "Expired", path
        ahead = scheduler.request("GET", f"{path}?resourceVersion=999999999")
        assert ahead.status == 410 and "too large" in ahead.json()["message"], path
    for query in ("resourceVersionMatch=Exact", "resourceVersion=x",
                  "resourceVersion=0&resourceVersionMatch=Exact",
                  f"resourceVersion={current}&resourceVersionMatch=Newest",
                  f"resourceVersion={current}&limit=1&continue=L3BvZHMvZGVmYXVsdC9h"):  # fmt: skip
        assert scheduler.request("GET", f"{pods}?{query}").status == 400, query


def test_a_watch_list_ends_its_listing_with_a_bookmark(scheduler: SchedulerProcess) -> None:
    """`sendInitialEvents=true` (client-go's watch-list): the listing's ADDED events, then
    the BOOKMARK annotated `k8s.io/initial-events-end` that the client waits for before
    it takes the list as whole, whatever resourceVersion it names; `false`: the changes
    only. Without `resourceVersionMatch=NotOlderThan` or `allowWatchBookmarks` it is
    kube-apiserver's 422."""
    for name in ("wl-1", "wl-2"):
        assert scheduler.request("POST", "/api/v1/namespaces/default/pods", pod(name)).status == 201
    listed = int(scheduler.get("/api/v1/pods")["metadata"]["resourceVersion"])
    base = "/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=1&labelSelector=app=wl"
    watch_list = base + "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
    for since in ("", "&resourceVersion=1", f"&resourceVersion={listed}"):
        resp = scheduler.request("GET", f"{watch_list}&allowWatchBookmarks=true{since}")
        assert resp.status == 200, resp.body
        events = [json.loads(line) for line in resp.body.splitlines()]
        added = sorted(e["object"]["metadata"]["name"] for e in events if e["type"] == "ADDED")
        assert added == ["wl-1", "wl-2"], events
        [mark] = [e for e in events if e["type"] == "BOOKMARK"]
        assert events.index(mark) == 2, events  # right after the listing
        assert mark["object"]["kind"] == "Pod" and mark["object"]["apiVersion"] == "v1"
        meta = mark["object"]["metadata"]
        assert meta["annotations"] == {"k8s.io/initial-events-end": "true"}
        assert int(meta["resourceVersion"]) >= listed
    changes_only = base.replace("timeoutSeconds=1", "timeoutSeconds=1&sendInitialEvents=false")
    resp = scheduler.request(
        "GET", changes_only + "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
    )
    assert resp.status == 200 and b"ADDED" not in resp.body, resp.body
    refused = scheduler.request("GET", base + "&sendInitialEvents=true&allowWatchBookmarks=true")
    assert refused.status == 422 and "NotOlderThan" in refused.json()["message"]
    for value in ("true", "false"):  # without the bookmark a client cannot tell the end
        refused = scheduler.request(
            "GET", f"{base}&sendInitialEvents={value}&resourceVersionMatch=NotOlderThan"
        )
        assert refused.status == 422 and "allowWatchBookmarks" in refused.json()["message"]


DNS_SUPPORTED = '"ClusterFirst", "ClusterFirstWithHostNet", "Default"'


def test_dns_policies_are_taken_as_kubernetes_takes_them(bare_scheduler: SchedulerProcess) -> None:
    """Kubernetes' policies (`kubectl run` always sends ClusterFirst): stored and returned,
    in a pod and in a Deployment's template; a pod created without one gets ClusterFirst,
    as kube-apiserver defaults it (a template without one keeps none, its pods get it), so
    that a PUT without it of a pod created with it is no change of the spec. `None`
    (which needs dnsConfig, which corral has not) and any other value: 422 naming the
    field and the values supported, reason FieldValueNotSupported, as Kubernetes says it."""
    s = bare_scheduler
    pods, deployments = (
        "/api/v1/namespaces/default/pods",
        "/apis/apps/v1/namespaces/default/deployments",
    )
    for policy in ("ClusterFirst", "ClusterFirstWithHostNet", "Default"):
        name = policy.lower()
        resp = s.request("POST", pods, pod(name, dnsPolicy=policy))
        assert resp.status == 201 and resp.json()["spec"]["dnsPolicy"] == policy, resp.body
        assert get_pod(s, name)["spec"]["dnsPolicy"] == policy
        manifest = deployment_manifest(name, 0)
        manifest["spec"]["template"]["spec"]["dnsPolicy"] = policy
        resp = s.request("POST", deployments, manifest)
        assert resp.status == 201, resp.body
        assert resp.json()["spec"]["template"]["spec"]["dnsPolicy"] == policy
    resp = s.request("POST", pods, pod("plain"))
    assert resp.status == 201 and resp.json()["spec"]["dnsPolicy"] == "ClusterFirst", resp.body
    # Created with it, replaced without it (and the other way round): the same spec.
    for name, labels in (("clusterfirst", {"v": "2"}), ("plain", {"v": "3"})):
        body = pod(name)
        body["metadata"]["labels"] = labels
        resp = s.request("PUT", f"{pods}/{name}", body)
        assert resp.status == 200 and resp.json()["metadata"]["labels"] == labels, resp.body
    body = pod("plain", dnsPolicy="ClusterFirst")
    assert s.request("PUT", f"{pods}/plain", body).status == 200
    # Any other policy is still a change of the spec.
    resp = s.request("PUT", f"{pods}/plain", pod("plain", dnsPolicy="Default"))
    assert resp.status == 422 and resp.json()["details"]["causes"][0]["field"] == "spec"
    # A Deployment's template without one keeps none; the pods made from it have it.
    resp = s.request("POST", deployments, deployment_manifest("templated", 1))
    assert resp.status == 201 and "dnsPolicy" not in resp.json()["spec"]["template"]["spec"]
    made = wait_for(lambda: s.get(f"{pods}?labelSelector=app%3Dtemplated")["items"])
    assert made[0]["spec"]["dnsPolicy"] == "ClusterFirst"
    schema = s.get("/openapi.json")["components"]["schemas"]["PodSpec"]
    assert schema["properties"]["dnsPolicy"]["enum"] == [
        "ClusterFirst",
        "ClusterFirstWithHostNet",
        "Default",
    ]
    refusals = {
        "None": 'Unsupported value: "None": corral has no spec.dnsConfig to take the '
        f"resolver from; supported values: {DNS_SUPPORTED}",
        "clusterfirst": f'Unsupported value: "clusterfirst": supported values: {DNS_SUPPORTED}',
        "": f'Unsupported value: "": supported values: {DNS_SUPPORTED}',
    }
    for policy, message in refusals.items():
        resp = s.request("POST", pods, pod("refused", dnsPolicy=policy))
        assert resp.status == 422, resp.body
        [cause] = resp.json()["details"]["causes"]
        assert cause == {
            "reason": "FieldValueNotSupported",
            "message": message,
            "field": "spec.dnsPolicy",
        }
        manifest = deployment_manifest("refused", 0)
        manifest["spec"]["template"]["spec"]["dnsPolicy"] = policy
        resp = s.request("POST", deployments, manifest)
        assert resp.status == 422, resp.body
        assert resp.json()["details"]["causes"][0]["field"] == "spec.template.spec.dnsPolicy"


def test_event_lists_come_in_pages(scheduler: SchedulerProcess) -> None:
    """`limit` and `continue` page an event list as they page pods (api/paging.py), in the
    list's own order (oldest first): the pages together are the list; a token from
    another list is refused."""
    pods = "/api/v1/namespaces/default/pods"
    for i in range(5):
        assert scheduler.request("POST", pods, pod(f"paged-{i}")).status == 201
    # Scheduled events: one per pod, never written again, so the list holds still.
    events = "/api/v1/namespaces/default/events?fieldSelector=reason%3DScheduled"
    whole = wait_for(lambda: len(items := scheduler.get(events)["items"]) == 5 and items)
    assert "continue" not in scheduler.get(events)["metadata"]
    seen: list[dict[str, Any]] = []
    token = ""
    while True:
        page = scheduler.get(f"{events}&limit=2" + (f"&continue={token}" if token else ""))
        assert len(page["items"]) <= 2
        seen += page["items"]
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert [e["metadata"]["name"] for e in seen] == [e["metadata"]["name"] for e in whole]
    assert len(scheduler.get("/api/v1/events?limit=1")["items"]) == 1
    pods_token = scheduler.get(f"{pods}?limit=1")["metadata"]["continue"]
    resp = scheduler.request("GET", f"{events}&limit=2&continue={pods_token}")
    assert resp.status == 400 and "continue" in resp.json()["message"], resp.body
    assert scheduler.request("GET", f"{events}&limit=0").status == 400


def test_a_node_is_replaced_as_it_is_patched(scheduler: SchedulerProcess) -> None:
    """PUT of a node (`kubectl replace`) writes what PATCH writes: labels, annotations and
    `spec.unschedulable`; the status in the body is ignored (the agent's), as on a PUT
    to a node in Kubernetes. Guarded by resourceVersion: 409 for a stale one."""
    name = ready_nodes(scheduler)[0]
    url = f"/api/v1/nodes/{name}"
    node = scheduler.get(url)
    stale = node["metadata"]["resourceVersion"]
    node["metadata"]["labels"]["tier"] = "gold"
    node["metadata"]["annotations"] = {"note": "replaced"}
    node["spec"]["unschedulable"] = True
    capacity = node["status"]["capacity"]
    node["status"]["capacity"] = {"cpu": "999", "memory": "1Ti"}
    resp = scheduler.request("PUT", url, node)
    assert resp.status == 200, resp.body
    after = scheduler.get(url)
    assert after["metadata"]["labels"]["tier"] == "gold"
    assert after["metadata"]["annotations"] == {"note": "replaced"}
    assert after["spec"]["unschedulable"] is True
    assert after["status"]["capacity"] == capacity
    assert after["metadata"]["resourceVersion"] != stale
    # The version it was read at is gone: 409, and nothing changes.
    node["metadata"]["labels"]["tier"] = "lead"
    resp = scheduler.request("PUT", url, node)
    assert resp.status == 409 and resp.json()["reason"] == "Conflict", resp.body
    details = resp.json()["details"]
    assert (details["name"], details["kind"]) == (name, "nodes")
    assert scheduler.get(url)["metadata"]["labels"]["tier"] == "gold"
    # Without a resourceVersion: made on the latest. A replace without `spec` uncordons.
    del node["metadata"]["resourceVersion"], node["spec"]
    assert scheduler.request("PUT", url, node).status == 200
    after = scheduler.get(url)
    assert after["metadata"]["labels"]["tier"] == "lead"
    assert after["spec"].get("unschedulable", False) is False
    node["metadata"]["name"] = "another"
    assert scheduler.request("PUT", url, node).status == 422
    assert scheduler.request("PUT", "/api/v1/nodes/nosuch", node).status == 404


def test_a_namespace_has_the_kubernetes_finalizer(bare_scheduler: SchedulerProcess) -> None:
    """Every new namespace, `default` too, has `spec.finalizers: [kubernetes]` as
    kube-apiserver gives it; an update does not change it (only `finalize` would, which
    corral does not serve); deleting the namespace still removes it."""
    s = bare_scheduler
    assert s.get("/api/v1/namespaces/default")["spec"] == {"finalizers": ["kubernetes"]}
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    resp = s.request("POST", "/api/v1/namespaces", body)
    assert resp.status == 201 and resp.json()["spec"] == {"finalizers": ["kubernetes"]}
    given = {**body, "spec": {"finalizers": ["example.com/mine"]}, "metadata": {"name": "own"}}
    resp = s.request("POST", "/api/v1/namespaces", given)
    assert resp.json()["spec"]["finalizers"] == ["example.com/mine", "kubernetes"]
    replaced = {**body, "metadata": {"name": "team", "labels": {"a": "b"}}, "spec": {}}
    resp = s.request("PUT", "/api/v1/namespaces/team", replaced)
    assert resp.status == 200 and resp.json()["spec"] == {"finalizers": ["kubernetes"]}
    assert s.request("POST", "/api/v1/namespaces/team/pods", pod("inside")).status == 201
    assert s.request("DELETE", "/api/v1/namespaces/team").status == 200
    wait_for(lambda: s.request("GET", "/api/v1/namespaces/team").status == 404, timeout=20)
