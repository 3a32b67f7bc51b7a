"""OpenAPI v3 as kubectl (1.29 and later) reads it before `apply` and `create -f`, and the
`fieldValidation` parameter it then sends.

kubectl's default `--validate=strict` looks, in the document of the object's
group-version, for a PATCH operation carrying the object's
`x-kubernetes-group-version-kind` and a `fieldValidation` parameter
(k8s.io/cli-runtime/pkg/resource/query_param_verifier_v3.go); found, it sends the object
with `?fieldValidation=Strict` and leaves the validation to the server. The lookup is
done here as kubectl does it, over HTTP, from `/openapi/v3`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.conftest import SchedulerProcess

ACCEPT_JSON = {"Accept": "application/json"}  # what client-go's openapi3.Root sends
# What kubectl validates (`kubectl apply -f`, `create -f`) and needs found: (group, version, kind).
KINDS = [
    ("", "v1", "Pod"),
    ("apps", "v1", "Deployment"),
    ("batch", "v1", "Job"),
    ("", "v1", "Namespace"),
    ("", "v1", "Node"),
]
WRITES = ("post", "put", "patch")


@pytest.fixture(scope="module")
def sched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    """A scheduler with no agents, shared by this module's tests."""
    s = SchedulerProcess(tmp_path_factory.mktemp("openapi-v3"))
    s.start()
    yield s
    s.stop()


def group_versions(s: SchedulerProcess) -> list[str]:
    """Every group-version discovery lists."""
    return ["v1"] + [v["groupVersion"] for g in s.get("/apis")["groups"] for v in g["versions"]]


def api_path(group_version: str) -> str:
    return "api/v1" if group_version == "v1" else f"apis/{group_version}"


def gv_document(s: SchedulerProcess, group_version: str) -> dict[str, Any] | None:
    """The group-version's document as client-go's openapi3.Root.GVSpec fetches it (None if
    `/openapi/v3` does not list it): from the serverRelativeURL, as JSON, without a token."""
    listed = s.request("GET", "/openapi/v3", token=None)
    assert listed.status == 200, listed.body[:300]
    entry = listed.json()["paths"].get(api_path(group_version))
    if entry is None:
        return None
    resp = s.request("GET", entry["serverRelativeURL"], headers=ACCEPT_JSON, token=None)
    assert resp.status == 200, (group_version, resp.status, resp.body[:300])
    assert resp.headers["Content-Type"].startswith("application/json")
    document: dict[str, Any] = resp.json()
    return document


def supports_field_validation(document: dict[str, Any], gvk: dict[str, str]) -> bool:
    """kubectl's supportsQueryParamV3: the first PATCH operation for the kind (in Go's map
    order, so any of them) takes `fieldValidation`. Here: there is one, and all do."""
    found = [
        op["patch"]
        for op in document["paths"].values()
        if op.get("patch", {}).get("x-kubernetes-group-version-kind") == gvk
    ]
    return bool(found) and all(
        "fieldValidation" in {p["name"] for p in op.get("parameters", [])} for op in found
    )


def test_v3_lists_each_served_group_version_with_its_hash(sched: SchedulerProcess) -> None:
    """`/openapi/v3` names exactly the group-versions discovery lists, each document at a
    URL whose `hash` is the SHA-512 of the document served there; no token needed."""
    listed = sched.request("GET", "/openapi/v3", token=None)
    assert listed.status == 200
    paths = listed.json()["paths"]
    served = {api_path(gv) for gv in group_versions(sched)}
    assert set(paths) == served
    assert {"api/v1", "apis/apps/v1", "apis/batch/v1"} <= served
    for path, entry in paths.items():
        url = entry["serverRelativeURL"]
        prefix = f"/openapi/v3/{path}?hash="
        assert url.startswith(prefix), url
        body = sched.request("GET", url, headers=ACCEPT_JSON, token=None).body
        assert url.removeprefix(prefix) == hashlib.sha512(body).hexdigest().upper(), path


def test_group_version_documents_are_valid_openapi_3(sched: SchedulerProcess) -> None:
    """Each document is valid OpenAPI 3.0, holds its group-version's routes only, every
    operation with its kind and kube's action and every write with `fieldValidation`;
    every kind it serves is a schema with its GVK."""
    for gv in group_versions(sched):
        document = gv_document(sched, gv)
        assert document is not None, gv
        assert document["openapi"].startswith("3.0."), gv
        validate(document)
        root = "/api/v1/" if gv == "v1" else f"/apis/{gv}/"
        schemas = document["components"]["schemas"]
        kinds = {
            json.dumps(gvk, sort_keys=True)
            for schema in schemas.values()
            for gvk in schema.get("x-kubernetes-group-version-kind", [])
        }
        assert document["paths"], gv
        for path, operations in document["paths"].items():
            assert path.startswith(root), (gv, path)
            for method, op in operations.items():
                assert op["x-kubernetes-action"] in (
                    {"get", "list", "post", "put", "patch", "delete", "deletecollection"}
                ), (path, method)
                gvk = op["x-kubernetes-group-version-kind"]
                assert set(gvk) == {"group", "version", "kind"}, (path, method)
                names = {p["name"] for p in op.get("parameters", [])}
                assert ("fieldValidation" in names) == (method in WRITES), (path, method)
                # Refused everywhere but on an eviction (scheduler/api/evictions.py): not
                # advertised elsewhere.
                assert ("dryRun" in names) == path.endswith("/eviction"), (path, method)
                # The kind's schema is there, as `kubectl explain` looks it up.
                has_schema = json.dumps(gvk, sort_keys=True) in kinds
                assert has_schema or gv.startswith("metrics.k8s.io/") or gvk["kind"] == "Token"


def test_every_patchable_kind_is_found_as_kubectl_looks(sched: SchedulerProcess) -> None:
    """For every resource discovery says can be patched, and the kinds kubectl is asked to
    apply, kubectl's lookup finds server-side field validation; not for a kind corral does
    not serve (kubectl would then validate on its own, with OpenAPI v2)."""
    for group, version, kind in KINDS:
        gv = f"{group}/{version}" if group else version
        document = gv_document(sched, gv)
        assert document is not None, gv
        gvk = {"group": group, "version": version, "kind": kind}
        assert supports_field_validation(document, gvk), gvk
    for gv in group_versions(sched):
        document = gv_document(sched, gv)
        assert document is not None
        listing = sched.get("/api/v1" if gv == "v1" else f"/apis/{gv}")["resources"]
        for resource in listing:
            if "patch" in resource["verbs"]:
                group, _, version = gv.rpartition("/")
                gvk = {
                    "group": resource.get("group", group),
                    "version": resource.get("version", version),
                    "kind": resource["kind"],
                }
                assert supports_field_validation(document, gvk), (gv, resource["name"])
    core = gv_document(sched, "v1")
    assert core is not None
    assert not supports_field_validation(core, {"group": "", "version": "v1", "kind": "Service"})
    assert gv_document(sched, "networking.k8s.io/v1") is None


@pytest.mark.parametrize(
    ("resource", "gvk"),
    [
        ("api/v1/pods", {"group": "", "version": "v1", "kind": "Pod"}),
        ("api/v1/nodes", {"group": "", "version": "v1", "kind": "Node"}),
        ("api/v1/namespaces", {"group": "", "version": "v1", "kind": "Namespace"}),
        ("apis/apps/v1/deployments", {"group": "apps", "version": "v1", "kind": "Deployment"}),
        ("apis/batch/v1/jobs", {"group": "batch", "version": "v1", "kind": "Job"}),
    ],
)
def test_explain_finds_the_kind_and_its_schema(
    sched: SchedulerProcess, resource: str, gvk: dict[str, str]
) -> None:
    """`kubectl explain` (its plaintext template): the kind from the GVK of an operation on
    the resource's path, then the schema whose GVK list holds it, with its fields."""
    gv, _, plural = resource.removeprefix("api/").removeprefix("apis/").rpartition("/")
    document = gv_document(sched, gv)
    assert document is not None
    paths = document["paths"]
    root = "/" + resource.removesuffix("/" + plural)
    candidates = [f"{root}/{plural}", f"{root}/namespaces/{{namespace}}/{plural}"]
    found = [
        op["x-kubernetes-group-version-kind"]
        for path in candidates
        for op in paths.get(path, {}).values()
    ]
    assert found and found[0] == gvk, (resource, found)
    schemas = [
        s
        for s in document["components"]["schemas"].values()
        if gvk in s.get("x-kubernetes-group-version-kind", [])
    ]
    assert len(schemas) == 1, resource
    assert {"apiVersion", "kind", "metadata"} <= set(schemas[0]["properties"])


def test_lists_patched_by_key_are_marked_as_kube_marks_them(sched: SchedulerProcess) -> None:
    """kubectl computes `apply`'s patch from the document: without the merge keys it sent
    a pod's whole `containers` list again and called an unchanged pod `configured`."""
    schemas = gv_document(sched, "v1")["components"]["schemas"]  # type: ignore[index]
    marked = {
        (name, prop): (
            spec.get("x-kubernetes-patch-merge-key"),
            spec.get("x-kubernetes-patch-strategy"),
        )
        for name, schema in schemas.items()
        for prop, spec in (schema.get("properties") or {}).items()
        if "x-kubernetes-patch-strategy" in spec
    }
    assert marked[("PodSpec", "containers")] == ("name", "merge")
    assert marked[("ObjectMeta", "finalizers")] == (None, "merge")  # values, no key
    assert marked[("Container", "env")] == ("name", "merge")
    assert marked[("Container", "ports")] == ("containerPort", "merge")
    assert marked[("PodSpec", "volumes")] == ("name", "merge")
    assert ("Container", "command") not in marked  # a list of strings: replaced whole


def test_documents_are_cached_as_kube_apiserver_caches_them(sched: SchedulerProcess) -> None:
    """An ETag (and 304 for it); with the current hash a response kept for good; with
    another a 301 to the current; 406 to a client that takes no JSON; 404 for a
    group-version not served."""
    listed = sched.request("GET", "/openapi/v3", token=None)
    etag = listed.headers["ETag"]
    again = sched.request("GET", "/openapi/v3", headers={"If-None-Match": etag}, token=None)
    assert again.status == 304 and again.body == b""
    url = listed.json()["paths"]["apis/apps/v1"]["serverRelativeURL"]
    digest = url.rpartition("=")[2]
    current = sched.request("GET", url, headers=ACCEPT_JSON, token=None)
    assert current.headers["ETag"] == f'"{digest}"'
    assert current.headers["Cache-Control"] == "public, immutable"
    assert current.headers["Vary"] == "Accept" and "Expires" in current.headers
    unhashed = sched.request("GET", "/openapi/v3/apis/apps/v1", token=None)
    assert unhashed.body == current.body and "Cache-Control" not in unhashed.headers
    conditional = {"If-None-Match": f'"{digest}"', **ACCEPT_JSON}
    assert sched.request("GET", url, headers=conditional, token=None).status == 304
    conn = http.client.HTTPConnection("127.0.0.1", sched.port, timeout=10)
    try:  # urllib would follow the redirect
        conn.request("GET", "/openapi/v3/apis/apps/v1?hash=0123ABCD", headers=ACCEPT_JSON)
        moved = conn.getresponse()
        moved.read()
        assert (moved.status, moved.getheader("Location")) == (301, url)
    finally:
        conn.close()
    protobuf = {"Accept": "application/com.github.proto-openapi.spec.v3.v1.0+protobuf"}
    refused = sched.request("GET", url, headers=protobuf, token=None)
    assert (refused.status, refused.json()["reason"]) == (406, "NotAcceptable")
    for missing in ("/openapi/v3/apis/networking.k8s.io/v1", "/openapi/v3/api/v2"):
        resp = sched.request("GET", missing, token=None)
        assert (resp.status, resp.json()["reason"]) == (404, "NotFound"), missing


def _namespace(name: str, **extra: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, **extra}


def _refused(s: SchedulerProcess, value: str) -> None:
    """`value` is a 400 naming the parameter and the values it takes, on every write
    method, and nothing is written; reads do not look at it (as kube-apiserver)."""
    query = f"?fieldValidation={value}"
    writes = [
        ("POST", "/api/v1/namespaces", _namespace("fv-refused")),
        ("PUT", "/api/v1/namespaces/default", _namespace("default")),
        ("PATCH", "/api/v1/namespaces/default", {"metadata": {"labels": {"x": "y"}}}),
        ("POST", "/apis/apps/v1/namespaces/default/deployments", {}),
    ]
    for method, path, body in writes:
        media = "application/merge-patch+json" if method == "PATCH" else "application/json"
        resp = s.request(method, path + query, body, content_type=media)
        assert resp.status == 400, (value, method, path, resp.status, resp.body[:300])
        status = resp.json()
        assert status["reason"] == "BadRequest"
        assert "fieldValidation" in status["message"] and value in status["message"]
        for allowed in ("Strict", "Warn", "Ignore"):
            assert f'"{allowed}"' in status["message"], status["message"]
        assert status["details"]["causes"][0]["field"] == "fieldValidation"
    assert s.request("GET", "/api/v1/namespaces/fv-refused").status == 404
    assert "x" not in s.get("/api/v1/namespaces/default")["metadata"].get("labels", {})
    assert s.request("GET", "/api/v1/namespaces" + query).status == 200


def _accepted_and_strict(s: SchedulerProcess, value: str) -> None:
    """`value` is taken on every write, and an unknown field is still refused naming its
    path, never dropped."""
    name = f"fv-{value.lower() or 'unset'}"
    query = f"?fieldValidation={value}"
    resp = s.request("POST", "/api/v1/namespaces" + query, _namespace(name, extra=1))
    assert resp.status == 422, (value, resp.body)
    assert [c["field"] for c in resp.json()["details"]["causes"]] == ["extra"], value
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox", "securityContext": {}}]},
    }
    resp = s.request("POST", f"/api/v1/namespaces/default/pods{query}", pod)
    assert resp.status == 422, (value, resp.body)
    causes = resp.json()["details"]["causes"]
    assert [c["field"] for c in causes] == ["spec.containers[0].securityContext"], value
    assert s.request("POST", "/api/v1/namespaces" + query, _namespace(name)).status == 201
    path = f"/api/v1/namespaces/{name}{query}"
    labelled = _namespace(name) | {"metadata": {"name": name, "labels": {"a": "b"}}}
    assert s.request("PUT", path, labelled).status == 200, value
    merge = "application/merge-patch+json"
    patch = s.request("PATCH", path, {"metadata": {"labels": {"c": "d"}}}, content_type=merge)
    assert patch.status == 200, (value, patch.body)


def test_field_validation_values(sched: SchedulerProcess) -> None:
    """kube-apiserver's values (Strict, Warn, Ignore, or empty) are accepted, and corral
    stays strict whichever is given; any other value is refused."""
    for value in ("Bogus", "strict", "Strict,Warn"):
        _refused(sched, value)
    for value in ("Strict", "Warn", "Ignore", ""):
        _accepted_and_strict(sched, value)
