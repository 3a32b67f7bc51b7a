"""Bad requests get a 4xx `Status` naming what is wrong, and the scheduler keeps serving."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import quote

import aiohttp
import msgpack
import pytest

from common.protocol import PROTOCOL_VERSION
from tests.conftest import TOKEN, SchedulerProcess, deployment_manifest, wait_for
from tests.integration.test_api import pod

PODS = "/api/v1/namespaces/default/pods"


def status_of(resp_body: bytes) -> dict[str, object]:
    body = json.loads(resp_body)
    assert body["kind"] == "Status" and body["apiVersion"] == "v1" and body["status"] == "Failure"
    return body


def causes(body: dict[str, object]) -> list[str]:
    details = body.get("details") or {}
    assert isinstance(details, dict)
    return [c["field"] for c in details.get("causes", [])]


@pytest.mark.parametrize(
    ("body", "content_type", "code", "needle"),
    [
        (
            b'{"apiVersion": "v1", "kind": "Pod", ',
            "application/json",
            400,
            "malformed JSON at line 1",
        ),
        (b"kind: Pod\n  bad: [indent", "application/yaml", 400, "malformed YAML at line"),
        (b"", "application/json", 400, "empty"),
        (b"\xff\xfe\x00", "application/json", 400, "UTF-8"),
        (b"[1, 2, 3]", "application/json", 400, "expected an object"),
        (
            b"apiVersion: v1\nkind: Pod\n---\napiVersion: v1\nkind: Pod\n",
            "application/yaml",
            400,
            "one object",
        ),
    ],
)
def test_malformed_bodies(
    bare_scheduler: SchedulerProcess, body: bytes, content_type: str, code: int, needle: str
) -> None:
    """Malformed JSON/YAML is answered 400 with where it broke."""
    resp = bare_scheduler.request("POST", PODS, body, content_type=content_type)
    assert resp.status in (code, 422), resp.body
    message = str(status_of(resp.body)["message"])
    if resp.status == code:
        assert needle in message, message
    assert bare_scheduler.request("GET", "/healthz").status == 200


@pytest.mark.parametrize(
    ("mutate", "field", "needle"),
    [
        (
            lambda p: p["spec"]["containers"][0].update(securityContext={}),
            "spec.containers[0].securityContext",
            "not supported",
        ),
        (lambda p: p["spec"]["containers"][0].pop("image"), "spec.containers[0].image", "Required"),
        (lambda p: p["metadata"].update(name="Bad_Name"), "metadata.name", "not a valid"),
        (lambda p: p["metadata"].update(name="x" * 300), "metadata.name", "253"),
        (lambda p: p["spec"].update(containers="nope"), "spec.containers", ""),
        (lambda p: p["spec"].update(restartPolicy="Sometimes"), "spec.restartPolicy", ""),
        (
            lambda p: p["spec"]["containers"][0]["resources"]["requests"].update(
                memory="12 parsecs"
            ),
            "spec.containers[0].resources.requests.memory",
            "quantity",
        ),
        (
            lambda p: p["spec"].update(terminationGracePeriodSeconds="soon"),
            "spec.terminationGracePeriodSeconds",
            "",
        ),
        (lambda p: p["metadata"].update(labels={"bad key!": "v"}), "metadata.labels", "label key"),
        (lambda p: p["metadata"].update(namespace="other"), "metadata.namespace", ""),
        (lambda p: p["spec"].update(containers=[]), "spec.containers", ""),
    ],
)
def test_invalid_pods_name_the_field(
    bare_scheduler: SchedulerProcess, mutate, field: str, needle: str
) -> None:
    """An invalid pod is refused 422 with the field's path, and nothing is stored."""
    body = pod("valid-name")
    mutate(body)
    resp = bare_scheduler.request("POST", PODS, body)
    assert resp.status == 422, resp.body
    status = status_of(resp.body)
    assert status["reason"] == "Invalid"
    assert field in causes(status), (field, status)
    assert needle in json.dumps(status), status
    assert bare_scheduler.get("/api/v1/pods")["items"] == []


def test_wrong_kind_and_namespace(bare_scheduler: SchedulerProcess) -> None:
    """A Node posted to pods, or an invalid namespace in the path, is refused."""
    resp = bare_scheduler.request(
        "POST", PODS, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}}
    )
    assert resp.status == 422
    resp = bare_scheduler.request("POST", "/api/v1/namespaces/Bad_NS/pods", pod("x"))
    assert resp.status == 422 and "namespace" in str(status_of(resp.body)["message"])
    resp = bare_scheduler.request("GET", "/api/v1/namespaces/default/pods?limit=abc")
    assert resp.status == 400
    resp = bare_scheduler.request("DELETE", f"{PODS}/x?gracePeriodSeconds=-1")
    assert resp.status == 400


def test_a_name_no_object_can_have_is_not_found(bare_scheduler: SchedulerProcess) -> None:
    """A URL naming an object by a name no object can have (Bad_Name) finds nothing: 404,
    as kube-apiserver answers. It was a 422, so `kubectl apply` of a manifest with that
    name failed reading it ("error when retrieving current configuration") instead of
    going on to the create, which names the field."""
    for method, path in [
        ("GET", f"{PODS}/Bad_Name"),
        ("DELETE", f"{PODS}/Bad_Name"),
        ("GET", f"{PODS}/Bad_Name/log"),
        ("GET", "/api/v1/nodes/Bad_Node"),
        ("GET", "/apis/apps/v1/namespaces/default/deployments/Bad_Name"),
    ]:
        resp = bare_scheduler.request(method, path)
        assert resp.status == 404, (method, path, resp.body)
        status = status_of(resp.body)
        kind = path.split("/")[-2] if not path.endswith("/log") else "pods"
        name = path.split("/")[-1] if not path.endswith("/log") else "Bad_Name"
        assert status["reason"] == "NotFound"
        assert status["message"] == f'{kind} "{name}" not found', status
    body = pod("Bad_Name")
    resp = bare_scheduler.request("POST", PODS, body)  # the create names the field
    assert resp.status == 422 and "metadata.name" in causes(status_of(resp.body))


def test_kind_and_api_version_come_from_the_url(bare_scheduler: SchedulerProcess) -> None:
    """A pod without apiVersion and kind (the Python client leaves them out unless set) is
    taken as what the URL names, as kube-apiserver does; in a batch, and on replace."""
    bare = {"metadata": {"name": "bare"}, "spec": pod("x")["spec"]}
    resp = bare_scheduler.request("POST", PODS, bare)
    assert resp.status == 201, resp.body
    assert (resp.json()["apiVersion"], resp.json()["kind"]) == ("v1", "Pod")
    batch = {"kind": "PodList", "items": [{**bare, "metadata": {"name": "in-batch"}}]}
    assert bare_scheduler.request("POST", PODS, batch).status == 201
    replace = {**bare, "metadata": {"name": "bare", "labels": {"a": "b"}}}
    resp = bare_scheduler.request("PUT", f"{PODS}/bare", replace)
    assert resp.status == 200 and resp.json()["metadata"]["labels"] == {"a": "b"}, resp.body
    wrong = {**bare, "apiVersion": "apps/v1", "metadata": {"name": "apps"}}
    assert bare_scheduler.request("POST", PODS, wrong).status == 422


@pytest.mark.parametrize("name", [False, 7, ["a"], {"a": "b"}])
def test_a_name_that_is_not_a_string_is_invalid(bare_scheduler: SchedulerProcess, name) -> None:
    """A body whose `metadata.name` is not a string is a 422 naming the field, for every
    kind (its Status used to carry the name: a 500 in making it)."""
    collections = {
        "v1/Pod": PODS,
        "v1/Namespace": "/api/v1/namespaces",
        "apps/v1/Deployment": "/apis/apps/v1/namespaces/default/deployments",
        "batch/v1/Job": "/apis/batch/v1/namespaces/default/jobs",
    }
    for kind, path in collections.items():
        api_version, _, kind_name = kind.rpartition("/")
        body = {"apiVersion": api_version, "kind": kind_name, "metadata": {"name": name}}
        resp = bare_scheduler.request("POST", path, body)
        assert resp.status == 422, (kind, resp.status, resp.body[:200])
        assert "metadata.name" in causes(status_of(resp.body)), (kind, resp.body[:300])


def test_oversized_body(tmp_path) -> None:
    """A body over max_body_bytes is answered 413 and the server keeps serving."""
    sched = SchedulerProcess(tmp_path / "s", ["--max-body-bytes", "4096"])
    sched.start()
    try:
        big = pod("big")
        big["metadata"]["annotations"] = {"junk": "x" * 10_000}
        resp = sched.request("POST", PODS, big)
        assert resp.status == 413
        assert status_of(resp.body)["reason"] == "RequestEntityTooLarge"
        assert sched.request("POST", PODS, pod("small")).status == 201
    finally:
        sched.stop()


def test_unknown_route_and_method(bare_scheduler: SchedulerProcess) -> None:
    """404 and 405 come back as Status objects too."""
    resp = bare_scheduler.request("GET", "/api/v1/widgets")
    assert resp.status == 404 and status_of(resp.body)["reason"] == "NotFound"
    resp = bare_scheduler.request("PATCH", "/api/v1/nodes")
    assert resp.status == 405 and status_of(resp.body)["reason"] == "MethodNotAllowed"


async def test_agent_link_requires_join_token(bare_scheduler: SchedulerProcess) -> None:
    """Without the join token the upgrade is refused 401 before any frame is read."""
    async with aiohttp.ClientSession() as session:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await session.ws_connect(bare_scheduler.url + "/api/v1/agent", headers=headers)
            assert info.value.status == 401


async def test_agent_link_survives_garbage(bare_scheduler: SchedulerProcess) -> None:
    """Garbage frames get an error frame; the scheduler keeps serving other clients."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session:
        for first in (
            b"\xc1garbage",
            msgpack.packb({"v": 99, "type": "hello"}),
            msgpack.packb([1, 2]),
        ):
            ws = await session.ws_connect(bare_scheduler.url + "/api/v1/agent", headers=auth)
            await ws.send_bytes(first)
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type == aiohttp.WSMsgType.BINARY
            frame = msgpack.unpackb(msg.data)
            assert frame["type"] == "error" and frame["message"]
            await ws.close()
        hello = {
            "v": PROTOCOL_VERSION,
            "type": "hello",
            "node": {
                "name": "Bad_Node",
                "capacity": {"cpu": "1", "memory": "1Gi"},
                "allocatable": {"cpu": "1", "memory": "1Gi"},
            },
        }
        ws = await session.ws_connect(bare_scheduler.url + "/api/v1/agent", headers=auth)
        await ws.send_bytes(msgpack.packb(hello))
        frame = msgpack.unpackb((await asyncio.wait_for(ws.receive(), 5)).data)
        assert frame["type"] == "error" and "Bad_Node" in frame["message"]
        await ws.close()
    assert bare_scheduler.request("GET", "/readyz").status == 200
    assert bare_scheduler.get("/api/v1/nodes")["items"] == []


def test_field_selectors_as_kubectl_writes_them(bare_scheduler: SchedulerProcess) -> None:
    """`field!=value` works for events too (`kubectl get events --field-selector
    type!=Normal`), and a term without an operator is a 400 naming it, not a filter
    for an empty value."""
    s = bare_scheduler
    assert s.request("POST", PODS, pod("lonely")).status == 201  # no nodes: FailedScheduling

    def reasons(selector: str) -> list[str]:
        return [e["reason"] for e in s.get(f"/api/v1/events?fieldSelector={selector}")["items"]]

    assert "FailedScheduling" in wait_for(lambda: reasons("type!%3DNormal"))
    assert reasons("type!%3DWarning") == [r for r in reasons("") if r != "FailedScheduling"]
    for path in (PODS, "/api/v1/events", "/api/v1/namespaces", "/apis/apps/v1/deployments"):
        resp = s.request("GET", f"{path}?fieldSelector=metadata.name")
        assert resp.status == 400, (path, resp.body)
        assert "'metadata.name' is not a term" in str(status_of(resp.body)["message"])


def test_empty_set_in_label_selector(bare_scheduler: SchedulerProcess) -> None:
    """`key in ()` and `key notin ()` are refused, as by Kubernetes (they matched none
    and all), with a 400 naming the term."""
    for selector in ("app+in+()", "app+notin+(+)", "tier%3Ddb,app+in+()"):
        for path in (PODS, "/api/v1/nodes", "/api/v1/namespaces"):
            resp = bare_scheduler.request("GET", f"{path}?labelSelector={selector}")
            assert resp.status == 400, (path, selector, resp.body)
            message = str(status_of(resp.body)["message"])
            assert message.startswith("labelSelector: 'app ") and "cannot be empty" in message


def test_watch_from_a_revision_not_yet_made(bare_scheduler: SchedulerProcess) -> None:
    """A resourceVersion past the store's latest (from another store: the state directory
    made anew) is a 410 Expired, so the client lists again, not a stream that skips every
    change up to that revision."""
    s = bare_scheduler
    current = int(s.get(PODS)["metadata"]["resourceVersion"])
    resp = s.request("GET", f"{PODS}?watch=true&resourceVersion={current + 1000}&timeoutSeconds=2")
    assert resp.status == 410, resp.body
    body = status_of(resp.body)
    assert body["reason"] == "Expired" and "too large resource version" in str(body["message"])
    # The store's own revision is still a valid start: the next change comes.
    assert s.request("POST", PODS, pod("next")).status == 201
    resp = s.request("GET", f"{PODS}?watch=true&resourceVersion={current}&timeoutSeconds=1")
    assert resp.status == 200
    events = [json.loads(line) for line in resp.body.splitlines()]
    assert events[0]["type"] == "ADDED"  # then MODIFIED: no node fits it
    assert {e["object"]["metadata"]["name"] for e in events} == {"next"}


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("POST", PODS, "application/vnd.kubernetes.protobuf"),
        ("PUT", f"{PODS}/x", "application/vnd.kubernetes.protobuf"),
        ("POST", "/api/v1/namespaces", "application/cbor"),
        ("DELETE", "/apis/apps/v1/namespaces/default/deployments/x", "application/cbor"),
    ],
)
def test_binary_encodings_are_unsupported_media(
    bare_scheduler: SchedulerProcess, method: str, path: str, content_type: str
) -> None:
    """A protobuf or CBOR body is a 415, the answer on which client-go falls back to JSON,
    not a 400 from reading it as YAML."""
    body = b"k8s\x00\n\x0f\n\x02v1\x12\x03Pod" if "protobuf" in content_type else b"\xa1dkindcPod"
    resp = bare_scheduler.request(method, path, body, content_type=content_type)
    assert resp.status == 415, resp.body
    status = status_of(resp.body)
    assert status["reason"] == "UnsupportedMediaType" and content_type in str(status["message"])


def test_a_dry_run_is_refused_not_made(bare_scheduler: SchedulerProcess) -> None:
    """`?dryRun=All` (`kubectl apply --dry-run=server`) is a 400 on every write, and
    nothing is written: corral has no dry run, and it made the change."""
    s = bare_scheduler
    for method, path, body in (
        ("POST", f"{PODS}?dryRun=All", pod("dry")),
        ("DELETE", "/api/v1/namespaces/default?dryRun=All", None),
        ("PATCH", "/api/v1/namespaces/default?dryRun=All", {"metadata": {"labels": {"a": "b"}}}),
    ):
        resp = s.request(method, path, body)
        assert resp.status == 400 and "dryRun" in str(status_of(resp.body)["message"]), path
    assert s.request("GET", f"{PODS}/dry").status == 404
    assert s.request("GET", f"{PODS}?dryRun=All").status == 200  # reads do not write anyway


DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
HUGE = "9" * 5000  # past the 4300 digits Python's int() and str() convert


POD_YAML = (
    b"apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: i}], "
)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"apiVersion": "v1", "kind": "Pod", "spec": {"x": ' + HUGE.encode() + b"}}", "json"),
        (b'{"apiVersion": "v1", "kind": "Pod", "spec": {"x": ' + HUGE.encode() + b"}}", "yaml"),
        (b"apiVersion: v1\nkind: Pod\nspec: {x: " + HUGE.encode() + b"}\n", "yaml"),
        # PyYAML reads hexadecimal and sexagesimal numbers of any length: such a grace
        # period passed validation, then could not be written as JSON.
        (POD_YAML + b"terminationGracePeriodSeconds: 0x" + b"f" * 5000 + b"}\n", "yaml"),
        (POD_YAML + b"terminationGracePeriodSeconds: " + b"1:" * 3000 + b"1}\n", "yaml"),
    ],
    ids=["json", "json-as-yaml", "yaml", "yaml-hex", "yaml-sexagesimal"],
)
def test_a_number_too_long_to_convert_is_malformed(
    bare_scheduler: SchedulerProcess, body: bytes, content_type: str
) -> None:
    """An integer of thousands of digits is a 400 saying so, not a 500 from the JSON or
    YAML parser's int() (nor, for a hexadecimal one, from writing it back as JSON)."""
    s = bare_scheduler
    resp = s.request("POST", PODS, body, content_type=f"application/{content_type}")
    assert resp.status == 400, resp.body
    status = status_of(resp.body)
    assert status["reason"] == "BadRequest"
    assert "malformed" in str(status["message"]) and "integer" in str(status["message"])
    assert s.request("GET", PODS).json()["items"] == []


def test_resource_versions_that_are_not_ascii_revisions(bare_scheduler: SchedulerProcess) -> None:
    """A resourceVersion is ASCII digits: "²" (a digit to str.isdigit(), not to int()) and
    one of 5000 digits were 500s, "٣" was read as 3. Each is a 400 (a 422 naming the field
    in a body), wherever a resourceVersion is read."""
    s = bare_scheduler
    assert s.request("POST", PODS, pod("p")).status == 201
    for raw in ("²", "٣", HUGE):
        for path in (
            PODS,
            "/api/v1/events",
            "/apis/batch/v1/jobs",
            f"{PODS}?watch=true&timeoutSeconds=1",
            f"{DEPLOYMENTS}?watch=true&timeoutSeconds=1",
        ):
            sep = "&" if "?" in path else "?"
            resp = s.request("GET", f"{path}{sep}resourceVersion={quote(raw)}")
            assert resp.status == 400, (path, raw, resp.body)
            assert "resourceVersion" in str(status_of(resp.body)["message"])
        current = s.get(f"{PODS}/p")
        current["metadata"]["resourceVersion"] = raw
        resp = s.request("PUT", f"{PODS}/p", current)
        assert resp.status == 422, (raw, resp.body)
        assert causes(status_of(resp.body)) == ["metadata.resourceVersion"]
        resp = s.request(
            "DELETE",
            f"{PODS}/p",
            {"kind": "DeleteOptions", "preconditions": {"resourceVersion": raw}},
        )
        assert resp.status == 400, (raw, resp.body)
        assert "preconditions.resourceVersion" in str(status_of(resp.body)["message"])
    assert s.request("GET", f"{PODS}/p").status == 200  # nothing was deleted


def test_integer_query_parameters_are_ascii_digits(bare_scheduler: SchedulerProcess) -> None:
    """An integer query parameter is ASCII digits, as Go's strconv reads one: int() took
    " 5", "+1", "1_0" and "٣" (as 3), and raised on 5000 digits. Each is a 400."""
    s = bare_scheduler
    asks = (
        ("GET", f"{PODS}?limit=", "limit"),
        ("GET", f"{PODS}?watch=true&timeoutSeconds=", "timeoutSeconds"),
        ("DELETE", f"{PODS}/none?gracePeriodSeconds=", "gracePeriodSeconds"),
    )
    for raw in (" 5", "+1", "1_0", "٣", "²", HUGE):
        for method, url, query in asks:
            resp = s.request(method, url + quote(raw))
            assert resp.status == 400, (query, raw, resp.body)
            assert f"query parameter {query}" in str(status_of(resp.body)["message"])
    assert s.request("GET", f"{PODS}?limit=5").status == 200


def test_the_scale_of_a_deployment_with_a_finalizer(bare_scheduler: SchedulerProcess) -> None:
    """A Deployment with a finalizer (orphan, or foregroundDeletion while it is deleted in
    the foreground) has a Scale to read and write: it was a 500, the Scale carrying the
    Deployment's finalizers, which a Scale may not have."""
    s = bare_scheduler
    manifest = deployment_manifest("fin", 0)
    manifest["metadata"]["finalizers"] = ["orphan"]
    assert s.request("POST", DEPLOYMENTS, manifest).status == 201
    scale = s.request("GET", f"{DEPLOYMENTS}/fin/scale")
    assert scale.status == 200, scale.body
    assert "finalizers" not in scale.json()["metadata"]
    resp = s.request("PUT", f"{DEPLOYMENTS}/fin/scale", {"spec": {"replicas": 0}})
    assert resp.status == 200, resp.body
    patch = {"spec": {"replicas": 0}}
    resp = s.request(
        "PATCH", f"{DEPLOYMENTS}/fin/scale", patch, content_type="application/merge-patch+json"
    )
    assert resp.status == 200, resp.body
    assert s.get(f"{DEPLOYMENTS}/fin")["metadata"]["finalizers"] == ["orphan"]


@pytest.mark.timeout(60)
def test_integers_past_kubernetes_widths(bare_scheduler: SchedulerProcess) -> None:
    """Counts are int32 and durations int64, as in Kubernetes: wider is a 422 naming the
    field (a 400 in a query). A Deployment scaled to 2**31 replicas had its controller
    build that many pods in memory: the scheduler grew by gigabytes and stopped answering."""
    s = bare_scheduler
    assert s.request("POST", DEPLOYMENTS, deployment_manifest("web", 0)).status == 201
    for replicas in (2**31, 10**30):
        for method, content_type in (("PUT", "json"), ("PATCH", "merge-patch+json")):
            resp = s.request(
                method,
                f"{DEPLOYMENTS}/web/scale",
                {"spec": {"replicas": replicas}},
                content_type=f"application/{content_type}",
            )
            assert resp.status == 422, (method, replicas, resp.body)
            assert causes(status_of(resp.body)) == ["spec.replicas"]
    wide: list[tuple[str, dict[str, Any], str]] = [
        (DEPLOYMENTS, deployment_manifest("big", 2**31), "spec.replicas"),
        (
            DEPLOYMENTS,
            deployment_manifest(
                "surge", 1, strategy={"rollingUpdate": {"maxSurge": 2**31, "maxUnavailable": 0}}
            ),
            "spec.strategy.rollingUpdate.maxSurge",
        ),
        (
            PODS,
            pod("grace", terminationGracePeriodSeconds=2**63),
            "spec.terminationGracePeriodSeconds",
        ),
    ]
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "many"},
        "spec": {
            "completions": 2**31,
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}
            },
        },
    }
    wide.append((JOBS, job, "spec.completions"))
    for path, body, field in wide:
        resp = s.request("POST", path, body)
        assert resp.status == 422, (field, resp.body)
        assert field in causes(status_of(resp.body)), resp.body
    assert s.request("POST", PODS, pod("p")).status == 201
    resp = s.request("DELETE", f"{PODS}/p?gracePeriodSeconds={2**63}")
    assert resp.status == 400 and "gracePeriodSeconds" in str(status_of(resp.body)["message"])
    resp = s.request("DELETE", f"{PODS}/p", {"kind": "DeleteOptions", "gracePeriodSeconds": 2**63})
    assert resp.status == 400 and "gracePeriodSeconds" in str(status_of(resp.body)["message"])
    assert s.get(f"{DEPLOYMENTS}/web")["spec"]["replicas"] == 0  # nothing was written
    assert s.request("GET", f"{PODS}/p").status == 200
    assert s.request("GET", "/healthz").status == 200


@pytest.mark.timeout(60)
def test_the_widest_deployment_leaves_the_scheduler_serving(
    bare_scheduler: SchedulerProcess,
) -> None:
    """2**31-1 replicas is a valid int32, as in Kubernetes: its controller creates pods a
    burst at a time (podcontrol.BURST), and the scheduler keeps answering. It built them
    all in memory in one pass: gigabytes within seconds, and no answer again."""
    s = bare_scheduler
    assert s.request("POST", DEPLOYMENTS, deployment_manifest("wide", 2**31 - 1)).status == 201
    for _ in range(10):
        resp = s.request("GET", f"{PODS}?limit=1", timeout=5)
        assert resp.status == 200
        time.sleep(0.2)
    created = s.get(f"{DEPLOYMENTS}/wide")["status"].get("replicas", 0)
    assert 0 < created < 2**31 - 1
    resp = s.request("PUT", f"{DEPLOYMENTS}/wide/scale", {"spec": {"replicas": 0}}, timeout=5)
    assert resp.status == 200, resp.body


def test_details_kind_is_the_kind_for_invalid_and_the_resource_otherwise(
    bare_scheduler: SchedulerProcess,
) -> None:
    """As kube-apiserver: a 422 (NewInvalid, given a GroupKind) says `Pod` or
    `Deployment`; a 404 or 409 (NewNotFound, NewAlreadyExists: a GroupResource) says
    `pods`."""
    s = bare_scheduler
    bad = pod("bad")
    bad["spec"]["restartPolicy"] = "Sometimes"
    resp = s.request("POST", PODS, bad)
    assert resp.status == 422 and resp.json()["details"]["kind"] == "Pod", resp.body
    manifest = deployment_manifest("bad", 1)
    manifest["spec"]["replicas"] = -1
    resp = s.request("POST", "/apis/apps/v1/namespaces/default/deployments", manifest)
    assert resp.status == 422 and resp.json()["details"]["kind"] == "Deployment", resp.body
    assert s.request("POST", PODS, pod("good")).status == 201
    changed = pod("good", memory="128Mi")
    resp = s.request("PUT", f"{PODS}/good", changed)
    assert resp.status == 422 and resp.json()["details"]["kind"] == "Pod", resp.body
    resp = s.request("GET", f"{PODS}/nosuch")
    assert resp.status == 404 and resp.json()["details"]["kind"] == "pods", resp.body
    resp = s.request("POST", PODS, pod("good"))
    assert resp.status == 409 and resp.json()["details"]["kind"] == "pods", resp.body


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/pods",
        PODS,
        "/api/v1/nodes",
        "/api/v1/events",
        "/api/v1/namespaces",
        "/apis/apps/v1/namespaces/default/deployments",
    ],
)
def test_a_list_refuses_a_timeout_that_is_not_a_number(
    bare_scheduler: SchedulerProcess, path: str
) -> None:
    """kube-apiserver parses `timeoutSeconds` for every list, a watch or not: 400 for one
    that is not an integer; a number is taken (and only bounds a watch)."""
    resp = bare_scheduler.request("GET", f"{path}?timeoutSeconds=abc")
    assert resp.status == 400, resp.body
    assert "timeoutSeconds" in str(status_of(resp.body)["message"])
    assert bare_scheduler.request("GET", f"{path}?timeoutSeconds=5").status == 200


def test_a_write_refuses_a_field_manager_kubernetes_refuses(
    bare_scheduler: SchedulerProcess,
) -> None:
    """`fieldManager` past 128 bytes, or with a character that is not printable: 422 about
    the write's options, as kube-apiserver's ValidateFieldManager; nothing is written.
    128 bytes is taken."""
    s = bare_scheduler
    longest = "m" * 128
    assert s.request("POST", f"{PODS}?fieldManager={longest}", pod("kept")).status == 201
    too_long = "m" * 129
    for method, path, body, kind in (
        ("POST", PODS, pod("refused"), "CreateOptions"),
        ("PUT", f"{PODS}/kept", pod("kept"), "UpdateOptions"),
        ("PATCH", f"{PODS}/kept", {"metadata": {"labels": {"x": "y"}}}, "PatchOptions"),
    ):
        media = "application/merge-patch+json" if method == "PATCH" else "application/json"
        resp = s.request(method, f"{path}?fieldManager={too_long}", body, content_type=media)
        assert resp.status == 422, (method, resp.body)
        status = status_of(resp.body)
        assert status["reason"] == "Invalid"
        assert status["message"] == (
            f'{kind}.meta.k8s.io "" is invalid: fieldManager: Too long: must have at most 128 bytes'
        )
        details = status["details"]
        assert isinstance(details, dict) and details["kind"] == kind
        assert causes(status) == ["fieldManager"]
    # Two bytes a character: 65 of them are 130 bytes.
    resp = s.request("POST", f"{PODS}?fieldManager={quote('é' * 65)}", pod("refused"))
    assert resp.status == 422, resp.body
    tab = quote("a\tb")
    resp = s.request("POST", f"{PODS}?fieldManager={tab}", pod("refused"))
    assert resp.status == 422, resp.body
    assert "U+0009 (at position 1)" in str(status_of(resp.body)["message"])
    names = [p["metadata"]["name"] for p in s.get("/api/v1/pods")["items"]]
    assert names == ["kept"]
    assert "x" not in s.get(f"{PODS}/kept")["metadata"]["labels"]
