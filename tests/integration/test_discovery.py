"""Kubernetes API discovery as kubectl and client-go read it: the documents' shapes, and
that they say exactly what the routes serve.

The routes are read from the scheduler's own `/openapi.json` (built from its router,
scheduler/api/openapi.py), so a route added later is checked without touching this test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import SchedulerProcess
from tests.integration.test_auth import make_token

# What kubectl sends first (client-go discovery: aggregated, then the v1 shapes).
AGGREGATED_ACCEPT = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)
# Under a group-version's root but not resources (scheduler/api/paths.py NON_RESOURCES).
NON_RESOURCES = {"/api/v1/status", "/api/v1/agent"}
COLLECTION_VERBS = {"GET": "list", "POST": "create", "DELETE": "deletecollection"}
ITEM_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
ROUTER_404 = "the server could not find the requested resource"


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    """A scheduler with no agents, shared by this module's tests (they change nothing)."""
    s = SchedulerProcess(tmp_path_factory.mktemp("discovery"))
    s.start()
    yield s
    s.stop()


def served(s: SchedulerProcess) -> dict[tuple[str, str], dict[str, Any]]:
    """(groupVersion, resource) -> {"namespaced", "collection", "item": methods, "paths"} of
    every route under `/api/v1` or `/apis/GROUP/VERSION`, read from `/openapi.json`."""
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path, operations in s.get("/openapi.json")["paths"].items():
        if path in NON_RESOURCES:
            continue
        m = re.fullmatch(r"/api/v1/(.+)|/apis/([^/{}]+/[^/{}]+)/(.+)", path)
        if m is None:
            continue
        group_version, rest = ("v1", m[1]) if m[1] else (m[2], m[3])
        namespaced = rest.startswith("namespaces/{namespace}/")
        segments = rest.removeprefix("namespaces/{namespace}/").split("/")
        assert len(segments) <= 3, path  # a layout discovery cannot name
        name = segments[0] if len(segments) < 3 else f"{segments[0]}/{segments[2]}"
        entry = found.setdefault(
            (group_version, name),
            {"namespaced": False, "collection": set(), "item": set(), "paths": {}},
        )
        entry["namespaced"] |= namespaced
        table = "collection" if len(segments) == 1 else "item"
        entry[table] |= {method.upper() for method in operations}
        entry["paths"].setdefault(table, []).append(path)
    return found


def discovered(s: SchedulerProcess) -> dict[tuple[str, str], dict[str, Any]]:
    """(groupVersion, resource) -> its APIResource, over every group-version discovery names."""
    group_versions = ["v1"] + [
        version["groupVersion"]
        for group in s.get("/apis")["groups"]
        for version in group["versions"]
    ]
    found = {}
    for gv in group_versions:
        listing = s.get("/api/v1" if gv == "v1" else f"/apis/{gv}")
        assert listing["groupVersion"] == gv
        for resource in listing["resources"]:
            found[(gv, resource["name"])] = resource
    return found


def concrete(path: str) -> str:
    return (
        path.replace("{namespace}", "default")
        .replace("{name}", "probe-x")
        .replace("{id}", "probe-x")
    )


def test_discovery_documents_have_kubernetes_shapes(sched: SchedulerProcess) -> None:
    """APIVersions, APIGroupList, APIGroup and APIResourceList as metav1 spells them, in
    plain application/json even when kubectl asks for aggregated discovery first."""
    for path in ("/api", "/apis", "/apis/apps", "/api/v1", "/apis/apps/v1"):
        resp = sched.request("GET", path, headers={"Accept": AGGREGATED_ACCEPT})
        assert resp.status == 200, (path, resp.body)
        assert resp.headers["Content-Type"].startswith("application/json"), path
        assert "apidiscovery" not in resp.headers["Content-Type"], path
    for path in ("/api", "/apis", "/apis/batch", "/api/v1", "/apis/batch/v1", "/version"):
        # kube-apiserver answers both; the official Python client asks for `/version/`.
        assert sched.get(path + "/") == sched.get(path), path
    versions = sched.get("/api")
    assert versions["kind"] == "APIVersions" and versions["versions"] == ["v1"]
    assert versions["serverAddressByClientCIDRs"] == [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{sched.port}"}
    ]
    groups = sched.get("/apis")
    assert groups["kind"] == "APIGroupList" and groups["apiVersion"] == "v1"
    by_name = {g["name"]: g for g in groups["groups"]}
    assert set(by_name) == {"apps", "batch", "metrics.k8s.io"}
    for name, group in by_name.items():
        assert group["kind"] == "APIGroup"
        assert group["preferredVersion"] == group["versions"][0]
        for version in group["versions"]:
            assert version["groupVersion"] == f"{name}/{version['version']}"
        assert sched.get(f"/apis/{name}") == group
    assert by_name["metrics.k8s.io"]["preferredVersion"]["version"] == "v1beta1"
    core = sched.get("/api/v1")
    assert core["kind"] == "APIResourceList" and core["apiVersion"] == "v1"
    assert core["groupVersion"] == "v1"
    pods = {r["name"]: r for r in core["resources"]}["pods"]
    assert pods == {
        "name": "pods",
        "singularName": "pod",
        "namespaced": True,
        "kind": "Pod",
        "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        "shortNames": ["po"],
        "categories": ["all"],  # `kubectl get all`
    }
    short = {r["name"]: r.get("shortNames") for r in core["resources"]}
    assert short["nodes"] == ["no"] and short["namespaces"] == ["ns"]
    assert short["events"] == ["ev"]
    log = {r["name"]: r for r in core["resources"]}["pods/log"]
    assert log["verbs"] == ["get"] and log["kind"] == "Pod" and log["singularName"] == ""
    apps = {r["name"]: r for r in sched.get("/apis/apps/v1")["resources"]}
    assert apps["deployments"]["shortNames"] == ["deploy"]
    assert apps["deployments"]["categories"] == ["all"]
    scale = apps["deployments/scale"]
    assert (scale["group"], scale["version"], scale["kind"]) == ("autoscaling", "v1", "Scale")
    assert scale["verbs"] == ["get", "patch", "update"]


def test_groups_are_those_the_routes_serve(sched: SchedulerProcess) -> None:
    """`/apis` lists exactly the groups some route is under, each with its versions."""
    from_routes: dict[str, set[str]] = {}
    for gv, _ in served(sched):
        if "/" in gv:
            group, version = gv.split("/")
            from_routes.setdefault(group, set()).add(version)
    listed = {
        g["name"]: {v["version"] for v in g["versions"]} for g in sched.get("/apis")["groups"]
    }
    assert listed == from_routes


def test_every_route_is_a_resource_with_its_verbs(sched: SchedulerProcess) -> None:
    """Each route under a group-version is a resource (or subresource) whose verbs are
    its methods in Kubernetes' words, `watch` exactly where `?watch=true` streams."""
    routes, resources = served(sched), discovered(sched)
    assert set(resources) == set(routes)
    for key, route in routes.items():
        resource = resources[key]
        assert resource["namespaced"] == route["namespaced"], key
        assert resource["kind"], key
        expected = {COLLECTION_VERBS[m] for m in route["collection"] if m in COLLECTION_VERBS}
        expected |= {ITEM_VERBS[m] for m in route["item"] if m in ITEM_VERBS}
        if "GET" in route["collection"]:
            # A watch is a stream of events, not the list object a plain GET answers.
            # The namespaced collection if there is one (pods are listed from both).
            path = concrete(route["paths"]["collection"][-1])
            resp = sched.request("GET", f"{path}?watch=true&timeoutSeconds=1")
            assert resp.status == 200, (key, resp.status, resp.body[:200])
            body = resp.body.strip()
            streamed = not body or "type" in json.loads(body.splitlines()[0])
            if streamed:
                expected.add("watch")
        assert set(resource["verbs"]) == expected, (key, resource["verbs"], expected)
    assert len(routes) >= 15, sorted(routes)


def test_listed_verbs_are_answered_and_others_refused(sched: SchedulerProcess) -> None:
    """A listed verb's method is routed (never a 405 or the router's 404); the write verbs
    a resource does not list are. Writes go to objects that do not exist, or carry an
    empty body: nothing is changed."""
    before = sched.get("/api/v1/namespaces")["items"]
    routes = served(sched)
    for key, resource in discovered(sched).items():
        paths = routes[key]["paths"]
        for verb, method, table in (
            ("list", "GET", "collection"),
            ("create", "POST", "collection" if "/" not in key[1] else "item"),
            ("deletecollection", "DELETE", "collection"),
            ("get", "GET", "item"),
            ("update", "PUT", "item"),
            ("patch", "PATCH", "item"),
            ("delete", "DELETE", "item"),
        ):
            # Listed: some route of the resource answers the method; not listed: none does.
            answered = []
            for path in paths.get(table, []):
                resp = sched.request(method, concrete(path), {})
                assert resp.status not in (200, 201) or method == "GET", (key, verb, resp.body)
                if resp.status != 405 and not (
                    resp.status == 404 and ROUTER_404 in resp.json()["message"]
                ):
                    answered.append(path)
            assert bool(answered) == (verb in resource["verbs"]), (key, verb, paths)
    assert sched.get("/api/v1/namespaces")["items"] == before


def test_discovery_needs_a_token_and_version_does_not(sched: SchedulerProcess) -> None:
    """`/api`, `/apis` and the resource lists are 401 without a token (as kube-apiserver's
    defaults); a viewer may read them; `/version` is public, as its public-info-viewer."""
    viewer = make_token(sched, "viewer")["token"]
    for path in ("/api", "/apis", "/apis/apps", "/api/v1", "/apis/batch/v1", "/apis/x/v1"):
        resp = sched.request("GET", path, token=None)
        assert resp.status == 401, (path, resp.status)
        assert resp.json()["reason"] == "Unauthorized"
        if path != "/apis/x/v1":
            assert sched.request("GET", path, token=viewer).status == 200, path
    assert sched.request("GET", "/version", token=None).status == 200


def test_version_shape(sched: SchedulerProcess) -> None:
    """`/version` is a version.Info: Kubernetes' API level, corral's version after it."""
    info = sched.request("GET", "/version", token=None).json()
    assert set(info) == {
        "major",
        "minor",
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
    }
    assert all(isinstance(value, str) for value in info.values())
    m = re.fullmatch(r"v(\d+)\.(\d+)\.0-corral\.(\d+\.\d+\.\d+.*)", info["gitVersion"])
    assert m and (m[1], m[2]) == (info["major"], info["minor"]), info
    assert info["goVersion"].startswith("python3.")
    assert re.fullmatch(r"\w+/\w+", info["platform"]), info


def test_unknown_groups_are_not_found(sched: SchedulerProcess) -> None:
    """A group or version corral does not serve is a 404 Status, as kube-apiserver's."""
    for path in ("/apis/nosuch.example.com", "/apis/apps/v2", "/apis/policy/v1"):
        resp = sched.request("GET", path)
        assert resp.status == 404, (path, resp.status)
        assert resp.json()["kind"] == "Status" and resp.json()["reason"] == "NotFound"
