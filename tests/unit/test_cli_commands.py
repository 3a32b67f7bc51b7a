"""The `corral` commands end to end against a small in-process fake of the API.

The fake speaks only what the CLI uses, in the shapes of docs/api.md; the real
server is exercised by tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from scheduler.cli.main import main
from scheduler.cli.settings import resolve

Object = dict[str, Any]


def status(code: int, reason: str, message: str, causes: list[Object] | None = None) -> Object:
    body: Object = {
        "apiVersion": "v1",
        "kind": "Status",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
        "metadata": {},
    }
    if causes:
        body["details"] = {"causes": causes}
    return body


class FakeApi:
    """Pods and nodes in dicts; every request is recorded as (method, path, query, headers)."""

    def __init__(self) -> None:
        self.pods: dict[tuple[str, str], Object] = {}
        self.nodes: dict[str, Object] = {
            "node-1": {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": "node-1", "creationTimestamp": "2024-01-01T00:00:00Z"},
                "spec": {},
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "allocatable": {"cpu": "2", "memory": "4Gi"},
                },
            }
        }
        self.requests: list[tuple[str, str, dict[str, list[str]], dict[str, str]]] = []
        self.revision = 0
        # Set, a DELETE only marks the pod, and a watch of pods expires (410) as an ERROR
        # event ("event") or as the answer itself ("status"), the marked pods gone meanwhile.
        self.expire_watches: str | None = None
        self.stuck = False  # set, the marked pods never go
        # Set, every watch of pods expires (an ERROR event), and the first one calls this
        # first (the `--wait` tests: what changed while the watch was down).
        self.on_expiry: Callable[[], None] | None = None
        self.expiring = False
        # Set, the first watch of pods and the lists after it, `dropped` in all, get no
        # answer, the connection closed (a server restarting); the pods are made ready then.
        self.dropped = 0
        self.dropping = False
        self.on_list: Callable[[], None] | None = None  # called at each list of pods

    def handle(
        self, method: str, url: str, headers: dict[str, str], body: Any
    ) -> tuple[int | None, Any]:
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        self.requests.append((method, parts.path, query, headers))
        path = parts.path
        if m := re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?", path):
            return self.pods_route(method, m[1], m[2], query, body)
        if path == "/api/v1/pods" and method == "GET":
            items = list(self.pods.values())
            for selector in query.get("fieldSelector", []):
                bound = selector.removeprefix("spec.nodeName=")
                items = [p for p in items if p["spec"].get("nodeName") == bound]
            return 200, {"kind": "PodList", "apiVersion": "v1", "items": items}
        if path == "/api/v1/nodes" and method == "GET":
            return 200, {"kind": "NodeList", "items": list(self.nodes.values())}
        if m := re.fullmatch(r"/api/v1/nodes/([^/]+)(?:/(\w+))?", path):
            node = self.nodes.get(m[1])
            if node is None:
                return 404, status(404, "NotFound", f'nodes "{m[1]}" not found')
            if method == "POST" and m[2] in ("cordon", "drain"):
                node["spec"]["unschedulable"] = True
            elif method == "POST" and m[2] == "uncordon":
                node["spec"]["unschedulable"] = False
            return 200, node
        if path == "/apis/metrics.k8s.io/v1beta1/nodes" and method == "GET":
            # The fake's nodes have no labels: a selector matches none of them.
            names = [] if query.get("labelSelector") else list(self.nodes)
            items = [
                {"metadata": {"name": n}, "usage": {"cpu": "250m", "memory": "1Gi"}} for n in names
            ]
            return 200, {"kind": "NodeMetricsList", "items": items}
        if path == "/api/v1/status":
            return 200, {"nodes": {"Ready": 1}, "pods": {"Running": len(self.pods)}}
        return 404, status(404, "NotFound", "the server could not find the requested resource")

    def make_ready(self) -> None:
        for pod in self.pods.values():
            ready = [{"type": "Ready", "status": "True"}]
            pod["status"] = {"phase": "Running", "conditions": ready}
            self.revision += 1
            pod["metadata"]["resourceVersion"] = str(self.revision)

    def pods_route(
        self, method: str, ns: str, name: str | None, query: dict[str, list[str]], body: Any
    ) -> tuple[int | None, Any]:
        watching = query.get("watch") == ["true"]
        if name is None and method == "GET" and self.dropped and (watching or self.dropping):
            if not self.dropping:
                self.make_ready()
            self.dropped -= 1
            self.dropping = self.dropped > 0
            return None, b""
        if name is None and method == "GET" and query.get("watch") == ["true"]:
            if self.expiring:
                if self.on_expiry is not None:
                    self.on_expiry()
                    self.on_expiry = None
                expired = status(410, "Expired", "too old resource version")
                return 200, json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n"
            for key in [k for k, p in self.pods.items() if "deletionTimestamp" in p["metadata"]]:
                if not self.stuck:
                    del self.pods[key]
            expired = status(410, "Expired", "too old resource version")
            if self.expire_watches == "status":
                return 410, expired
            return 200, json.dumps({"type": "ERROR", "object": expired}).encode() + b"\n"
        if name is None and method == "GET":
            if self.on_list is not None:
                self.on_list()
            items = [p for (n, _), p in self.pods.items() if n == ns]
            for selector in query.get("labelSelector", []):  # `k=v,...` is all the fake reads
                wanted = dict(term.split("=", 1) for term in selector.split(","))
                items = [p for p in items if wanted.items() <= p["metadata"]["labels"].items()]
            return 200, {"kind": "PodList", "apiVersion": "v1", "items": items}
        if name is None and method == "POST":
            key = (ns, body["metadata"]["name"])
            if not body["spec"]["containers"][0]["image"].strip():
                causes = [{"field": "spec.containers[0].image", "message": "Required value"}]
                return 422, status(422, "Invalid", f'Pod "{key[1]}" is invalid', causes)
            if key in self.pods:
                return 409, status(409, "AlreadyExists", f'pods "{key[1]}" already exists')
            self.revision += 1
            body["metadata"] |= {"resourceVersion": str(self.revision), "uid": "u1"}
            body["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"
            body["spec"]["nodeName"] = "node-1"
            body["status"] = {"phase": "Pending"}
            self.pods[key] = body
            return 201, body
        pod = self.pods.get((ns, name or ""))
        if pod is None:
            return 404, status(404, "NotFound", f'pods "{name}" not found')
        if method == "PUT":
            pod["metadata"]["labels"] = body["metadata"]["labels"]
            return 200, pod
        if method == "DELETE" and self.expire_watches:
            pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
        elif method == "DELETE":
            del self.pods[(ns, name or "")]
        return 200, pod


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeApi]:
    """A FakeApi served on a free port; CORRAL_SERVER points the CLI at it."""
    fake = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, answer = fake.handle(self.command, self.path, dict(self.headers), body)
            if code is None:  # no answer: the connection is closed
                self.close_connection = True
                return
            data = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    monkeypatch.setenv("CORRAL_SERVER", f"http://127.0.0.1:{server.server_port}")
    monkeypatch.delenv("CORRAL_TOKEN", raising=False)
    monkeypatch.delenv("CORRAL_CONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    yield fake
    server.shutdown()
    server.server_close()


POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  containers:
  - name: app
    image: {image}
"""


def manifest(tmp_path: Path, name: str = "web", image: str = "nginx", extra: str = "") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(POD.format(name=name, image=image) + extra)
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_apply_create_unchanged_configured_immutable(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """apply creates, then reports unchanged, relabels in place, and refuses a spec change."""
    path = manifest(tmp_path)
    assert run(capsys, "apply", "-f", path) == (0, "pod/web created\n", "")
    assert run(capsys, "apply", "-f", path) == (0, "pod/web unchanged\n", "")

    Path(path).write_text(Path(path).read_text().replace("app: web", "app: web2"))
    assert run(capsys, "apply", "-f", path) == (0, "pod/web configured\n", "")
    assert api.pods[("default", "web")]["metadata"]["labels"] == {"app": "web2"}
    assert api.requests[-1][0] == "PUT"

    code, out, err = run(capsys, "apply", "-f", manifest(tmp_path, image="nginx:2"))
    assert code == 1 and out == ""
    assert "immutable" in err and "spec.containers[0].image" in err


def test_apply_from_stdin_with_namespace(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`-f -` reads stdin; -n sends the pods to that namespace."""
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO(POD.format(name="a", image="x")))
    assert run(capsys, "apply", "-f", "-", "-n", "prod") == (0, "pod/a created\n", "")
    assert ("prod", "a") in api.pods


def test_bad_manifest_sends_nothing(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A manifest that does not validate is reported with its field path; no request is made."""
    good = manifest(tmp_path, "good")
    bad = manifest(tmp_path, "bad", extra="  restartPolicy: Sometimes\n")
    code, out, err = run(capsys, "apply", "-f", good, "-f", bad)
    assert code == 1 and out == ""
    assert err.startswith(f"error: {bad}: Pod 'bad' is invalid")
    assert "spec.restartPolicy" in err
    assert api.requests == []


def test_server_validation_error_shows_causes(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 422 from the server prints its reason, message and each cause's field."""
    code, _, err = run(capsys, "apply", "-f", manifest(tmp_path, image="' '"))
    assert code == 1
    assert err.splitlines() == [
        'Error from server (Invalid): Pod "web" is invalid',
        "  spec.containers[0].image: Required value",
    ]


def test_get_pods_formats(api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """get pods prints a table, JSON, YAML or names; a missing pod is NotFound and exit 1."""
    run(capsys, "apply", "-f", manifest(tmp_path))
    code, out, _ = run(capsys, "get", "pods")
    assert code == 0
    assert out.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert out.splitlines()[1].split()[:3] == ["web", "0/1", "Pending"]

    code, out, _ = run(capsys, "get", "pods", "-o", "json")
    assert json.loads(out)["items"][0]["spec"]["nodeName"] == "node-1"
    assert run(capsys, "get", "po", "web", "-o", "name") == (0, "pod/web\n", "")
    code, out, _ = run(capsys, "get", "pod", "web", "-o", "yaml")
    assert "name: web" in out

    assert run(capsys, "get", "pod", "nope") == (
        1,
        "",
        'Error from server (NotFound): pods "nope" not found\n',
    )
    assert run(capsys, "get", "pods", "-n", "empty") == (
        0,
        "",
        "No resources found in empty namespace.\n",
    )


def test_get_sends_selectors(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    """-l and --field-selector become labelSelector and fieldSelector; -A lists everywhere."""
    run(capsys, "get", "pods", "-A", "-l", "app=web,tier!=db", "--field-selector", "x=y")
    method, path, query, _ = api.requests[-1]
    assert (method, path) == ("GET", "/api/v1/pods")
    assert query == {"labelSelector": ["app=web,tier!=db"], "fieldSelector": ["x=y"]}


def test_token_is_sent(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token from the environment or --token goes in an Authorization: Bearer header."""
    monkeypatch.setenv("CORRAL_TOKEN", "s3cret")
    run(capsys, "get", "nodes")
    assert api.requests[-1][3]["Authorization"] == "Bearer s3cret"
    run(capsys, "get", "nodes", "--token", "other")
    assert api.requests[-1][3]["Authorization"] == "Bearer other"


def deletes(api: FakeApi) -> list[dict[str, list[str]]]:
    """The query of each DELETE the fake was sent."""
    return [query for method, _, query, _ in api.requests if method == "DELETE"]


def test_delete(api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """delete by name (with a grace period) or by manifest; a missing pod fails the command."""
    path = manifest(tmp_path)
    run(capsys, "apply", "-f", path)
    assert run(capsys, "delete", "pod", "web", "--grace-period", "3") == (
        0,
        'pod "web" deleted\n',
        "",
    )
    assert deletes(api)[-1] == {"gracePeriodSeconds": ["3"], "propagationPolicy": ["Background"]}
    code, _, err = run(capsys, "delete", "-f", path)
    assert code == 1 and "NotFound" in err
    assert run(capsys, "delete", "-f", path, "--ignore-not-found") == (0, "", "")
    run(capsys, "apply", "-f", path)
    assert run(capsys, "delete", "-f", path) == (0, 'pod "web" deleted\n', "")


def test_get_several_names_and_kinds(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several names make one table (or a `List`); a missing one is reported after, exit 1."""
    for name in ("web", "api"):
        run(capsys, "apply", "-f", manifest(tmp_path, name))
    code, out, err = run(capsys, "get", "pods", "web", "nope", "api")
    assert (code, err) == (1, 'Error from server (NotFound): pods "nope" not found\n')
    assert [line.split()[0] for line in out.splitlines()] == ["NAME", "web", "api"]
    code, out, _ = run(capsys, "get", "pod/api", "pod/web", "-o", "json")
    listed = json.loads(out)
    assert (listed["kind"], listed["metadata"]) == ("List", {"resourceVersion": ""})
    assert [p["metadata"]["name"] for p in listed["items"]] == ["api", "web"]
    assert run(capsys, "get", "pods,nodes", "-o", "name") == (
        0,
        "pod/api\npod/web\nnode/node-1\n",
        "",
    )
    code, out, _ = run(capsys, "get", "pods,nodes")
    sections = out.split("\n\n")
    assert [s.splitlines()[1].split()[0] for s in sections] == ["pod/api", "node/node-1"]
    code, out, _ = run(capsys, "get", "pods", "--sort-by", "{.metadata.name}", "-o", "name")
    assert out == "pod/api\npod/web\n"


def test_delete_by_selector_or_all(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """-l and --all delete every match, one line each; nothing matching is no error."""
    for name in ("web", "api", "db"):
        run(capsys, "apply", "-f", manifest(tmp_path, name))
    api.pods[("default", "db")]["metadata"]["labels"] = {"app": "db"}
    assert run(capsys, "delete", "pods", "-l", "app=web") == (
        0,
        'pod "web" deleted\npod "api" deleted\n',
        "",
    )
    assert run(capsys, "delete", "pods", "-l", "app=none") == (0, "No resources found\n", "")
    assert run(capsys, "delete", "po", "--all", "--wait=false") == (0, 'pod "db" deleted\n', "")
    assert api.pods == {}


@pytest.mark.parametrize("expired_as", ["event", "status"])
def test_delete_waits_past_an_expired_watch(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str], expired_as: str
) -> None:
    """The wait's watch expiring (410, an ERROR event or the answer) is not an error: the
    wait lists again, finds the pod gone, and returns, as client-go's reflector does."""
    run(capsys, "apply", "-f", manifest(tmp_path))
    api.expire_watches = expired_as
    assert run(capsys, "delete", "pod", "web") == (0, 'pod "web" deleted\n', "")
    pods = [r for r in api.requests if r[:2] == ("GET", "/api/v1/namespaces/default/pods")]
    assert [r[2].get("watch") for r in pods] == [None, ["true"], None]


def test_delete_gives_up_when_every_watch_expires_and_nothing_goes(
    api: FakeApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that expires every watch while the pod stays does not keep the wait
    listing for ever: after len(RELIST_PAUSES) expiries in a row it fails with the error."""
    monkeypatch.setattr("scheduler.cli.getting.RELIST_PAUSES", (0.0,) * 3)
    run(capsys, "apply", "-f", manifest(tmp_path))
    api.expire_watches, api.stuck = "status", True
    code, out, err = run(capsys, "delete", "pod", "web")
    assert (code, out) == (1, 'pod "web" deleted\n')
    assert "too old resource version" in err
    pods = [r for r in api.requests if r[:2] == ("GET", "/api/v1/namespaces/default/pods")]
    assert [r[2].get("watch") for r in pods] == [None, ["true"]] * 3


def test_delete_gives_up_while_other_pods_of_the_namespace_change(
    api: FakeApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Waiting for several pods (one list of the namespace), other pods changing between
    the lists are no progress: only one of the deleted pods gone is. A busy namespace
    kept the wait from ever giving up on pods stuck behind expiring watches."""
    monkeypatch.setattr("scheduler.cli.getting.RELIST_PAUSES", (0.0,) * 3)
    for name in ("web", "api", "busy"):
        run(capsys, "apply", "-f", manifest(tmp_path, name))
    api.pods[("default", "busy")]["metadata"]["labels"] = {"app": "busy"}
    changes = 0

    def busy_changes() -> None:  # for a while: the old rule would otherwise never end
        nonlocal changes
        if changes < 20:
            changes += 1
            api.revision += 1
            api.pods[("default", "busy")]["metadata"]["resourceVersion"] = str(api.revision)

    api.on_list = busy_changes
    api.expire_watches, api.stuck = "status", True
    code, out, err = run(capsys, "delete", "pods", "-l", "app=web")
    assert (code, out) == (1, 'pod "web" deleted\npod "api" deleted\n')
    assert "too old resource version" in err
    watches = [r for r in api.requests if r[2].get("watch") == ["true"]]
    assert len(watches) == 3


def test_wait_lists_again_past_an_expired_watch(
    api: FakeApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`apply --wait` (as `rollout status` and `scale --wait`) lists again when the server
    expires its watch, and the list shows what changed meanwhile: the pod ready."""
    monkeypatch.setattr("scheduler.cli.getting.RELIST_PAUSES", (0.0,) * 5)
    api.expiring, api.on_expiry = True, api.make_ready
    code, out, err = run(capsys, "apply", "-f", manifest(tmp_path), "--wait")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "pod/web ready"
    pods = [r for r in api.requests if r[:2] == ("GET", "/api/v1/namespaces/default/pods")]
    assert [r[2].get("watch") for r in pods] == [None, ["true"], None]


def test_wait_reaches_a_server_lost_for_a_while(
    api: FakeApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that stops answering mid-wait (a restart: the watch and two lists get
    their connection closed) is tried again, and the wait ends when the list shows the
    pod ready; one lost for good ends it after RECONNECT_SECONDS with the error."""
    monkeypatch.setattr("scheduler.cli.getting.RELIST_PAUSES", (0.0,) * 5)
    api.dropped = 3
    code, out, err = run(capsys, "apply", "-f", manifest(tmp_path), "--wait")
    assert (code, err) == (0, "")
    assert out.splitlines()[-1] == "pod/web ready"
    pods = [r for r in api.requests if r[:2] == ("GET", "/api/v1/namespaces/default/pods")]
    assert [r[2].get("watch") for r in pods] == [None, ["true"], None, None, None]

    monkeypatch.setattr("scheduler.cli.getting.RECONNECT_SECONDS", 0.0)
    run(capsys, "delete", "pod", "web")
    api.dropped = 1
    code, out, err = run(capsys, "apply", "-f", manifest(tmp_path), "--wait")
    assert code == 1 and "connection" in err.lower(), err


def test_wait_sees_a_pod_deleted_while_its_watch_was_down(
    api: FakeApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pod deleted while the expired watch was down is missing from the next list:
    the wait ends with the deletion, as UntilWithSync's relist tells it, not waiting on."""
    monkeypatch.setattr("scheduler.cli.getting.RELIST_PAUSES", (0.0,) * 5)
    api.expiring, api.on_expiry = True, api.pods.clear
    code, out, _ = run(capsys, "apply", "-f", manifest(tmp_path), "--wait")
    assert code == 1
    assert out.splitlines()[-1] == "error: pod/web was deleted"


def test_wait_gives_up_when_every_watch_expires(
    api: FakeApi,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Watches that all expire, with nothing changed in between, end the wait with the
    error after len(RELIST_PAUSES) of them (the first list is no change: there is none
    before it), as `delete`'s wait does."""
    monkeypatch.setattr("scheduler.cli.getting.RELIST_PAUSES", (0.0,) * 3)
    api.expiring = True
    code, _, err = run(capsys, "apply", "-f", manifest(tmp_path), "--wait")
    assert code == 1 and "too old resource version" in err
    assert len([r for r in api.requests if r[2].get("watch") == ["true"]]) == 3


def test_delete_grace_period_force_and_now(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--now and a bare --grace-period=0 send 1 second; --force sends 0 and says so."""
    path = manifest(tmp_path)
    for flag in ("--now", "--grace-period=0"):
        run(capsys, "apply", "-f", path)
        assert run(capsys, "delete", "pod", "web", flag) == (0, 'pod "web" deleted\n', "")
        assert deletes(api)[-1]["gracePeriodSeconds"] == ["1"]
    run(capsys, "apply", "-f", path)
    code, out, err = run(capsys, "delete", "pod", "web", "--force")
    assert (code, out) == (0, 'pod "web" force deleted\n')
    assert err.startswith("warning: Immediate deletion does not wait for confirmation")
    assert deletes(api)[-1]["gracePeriodSeconds"] == ["0"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["delete", "pods"], "no name, label selector, or --all flag specified"),
        (["delete", "pods", "web", "-l", "app=web"], "name cannot be provided when a selector"),
        (["delete", "pods", "web", "--all"], "name cannot be provided when a selector"),
        (["delete", "pods", "--all", "-l", "a=b"], "cannot set --all and --selector"),
        (["delete", "pod", "web", "-A"], "cannot be retrieved by name across all namespaces"),
        (["delete", "pod", "web", "--now", "--grace-period=3"], "--now and --grace-period"),
        (["delete", "pod", "web", "--force", "--grace-period=3"], "--force and --grace-period"),
        (["delete", "pods", "--all", "-f", "x.yaml"], "either -f FILE or a resource"),
        (["get", "pods", "web", "-l", "app=web"], "name cannot be provided when a selector"),
        (["get", "pods", "pod/web"], "no need to specify a resource type"),
        (["get", "pods", "--sort-by", "{.items[*]}"], "--sort-by"),
        (["get", "pods", "a", "b", "-w"], "watch is only supported on one kind"),
    ],
)
def test_refusals_send_nothing(
    api: FakeApi, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv)
    assert (code, out) == (1, "") and message in err
    assert api.requests == []


def test_nodes_cordon_uncordon_drain(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    """cordon shows in get nodes as SchedulingDisabled; repeating it says so."""
    assert run(capsys, "cordon", "node-1") == (0, "node/node-1 cordoned\n", "")
    assert run(capsys, "cordon", "node-1") == (0, "node/node-1 already cordoned\n", "")
    _, out, _ = run(capsys, "get", "nodes")
    assert out.splitlines()[1].split()[:2] == ["node-1", "Ready,SchedulingDisabled"]
    assert run(capsys, "uncordon", "node-1") == (0, "node/node-1 uncordoned\n", "")
    assert run(capsys, "drain", "node-1") == (0, "node/node-1 cordoned\nnode/node-1 drained\n", "")
    code, _, err = run(capsys, "cordon", "ghost")
    assert code == 1 and err == 'Error from server (NotFound): nodes "ghost" not found\n'


def test_top_nodes_says_why_it_has_nothing_to_show(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """`corral top nodes -l NOMATCH` said "no node is connected" of a cluster whose node
    was connected: it is the selector that matched none."""
    code, out, _ = run(capsys, "top", "nodes")
    assert code == 0 and out.splitlines()[1].split()[:2] == ["node-1", "250m"]
    expected = "error: metrics not available yet (no connected node matches role=db)\n"
    assert run(capsys, "top", "nodes", "-l", "role=db") == (1, "", expected)
    api.nodes.clear()
    expected = "error: metrics not available yet (no node is connected)\n"
    assert run(capsys, "top", "nodes") == (1, "", expected)


def test_describe_node_asks_for_its_pods(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """describe node lists the pods bound to it, found with a spec.nodeName field selector."""
    run(capsys, "apply", "-f", manifest(tmp_path))
    code, out, _ = run(capsys, "describe", "node", "node-1")
    assert code == 0
    assert {"fieldSelector": ["spec.nodeName=node-1"]} in [r[2] for r in api.requests]
    assert "Non-terminated Pods:  (1 in total)" in out
    assert "Events:" in out
    code, out, _ = run(capsys, "describe", "pod", "web")
    assert code == 0 and "Node:" in out and "node-1" in out


def test_describe_takes_type_slash_name(
    api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`corral describe pod/web`, as kubectl takes it (and as get, delete and logs do),
    was an argparse usage error (exit 2: "the following arguments are required: NAME")."""
    run(capsys, "apply", "-f", manifest(tmp_path))
    code, out, err = run(capsys, "describe", "pod/web")
    assert (code, err) == (0, "") and out.startswith("Name:") and "node-1" in out
    code, out, err = run(capsys, "describe", "no/node-1")
    assert (code, err) == (0, "") and "Non-terminated Pods:  (1 in total)" in out
    code, out, err = run(capsys, "describe", "pod/web", "web")
    assert (code, out) == (1, "") and "resource/name form" in err
    expected = "error: say what to describe: `describe pods NAME` or `describe TYPE/NAME`\n"
    assert run(capsys, "describe", "pods") == (1, "", expected)


def test_status(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    """status renders the summary as text, or passes it through as JSON."""
    code, out, _ = run(capsys, "status")
    assert code == 0 and "Nodes:" in out and "Ready:" in out
    code, out, _ = run(capsys, "status", "-o", "json")
    assert json.loads(out) == {"nodes": {"Ready": 1}, "pods": {"Running": 0}}


def test_connection_refused_names_the_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No server listening: one line naming the address, exit 1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, out, err = run(capsys, "--server", f"127.0.0.1:{port}", "get", "pods")
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"error: cannot connect to the corral server at http://127.0.0.1:{port}")
    assert "refused" in err


def test_https_to_a_plain_http_server_says_so(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--server https://...` of a scheduler serving plain HTTP (`corral up`) failed with
    OpenSSL's "wrong version number" and the hint to set --ca-file, which cannot help."""
    http = os.environ["CORRAL_SERVER"]
    https = http.replace("http://", "https://")
    code, out, err = run(capsys, "--server", https, "get", "pods")
    assert (code, out) == (1, "") and err.count("\n") == 1
    assert err.startswith(f"error: cannot connect to the corral server at {https}: "), err
    assert err.endswith(f"(the server does not speak TLS there: is it {http}?)\n"), err
    assert "--ca-file" not in err


def test_usage_errors(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    """Unknown resources and contradictory flags are refused before any request."""
    assert run(capsys, "get", "widgets")[0] == 1
    assert run(capsys, "get", "pod", "web", "-A")[0] == 1
    assert run(capsys, "delete", "pod")[0] == 1
    assert api.requests == []


@pytest.mark.parametrize(
    ("server", "problem"),
    [
        ("http://[::1", "not a valid URL"),
        ("127.0.0.1:http", "not a valid URL"),
        ("127.0.0.1:99999", "not a valid URL"),
        ("ftp://files.example", "not an http:// or https:// URL"),
    ],
)
def test_malformed_server_is_one_line(
    server: str, problem: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --server that is no http(s) URL is an error naming it, exit 1, not a traceback."""
    code, out, err = run(capsys, "--server", server, "get", "pods")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("error: server ") and problem in err, err


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "soon"])
def test_timeout_must_be_positive_seconds(timeout: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--timeout 0, negative or not a number is a usage error (exit 2), not a traceback."""
    with pytest.raises(SystemExit) as exited:
        run(capsys, "--server", "127.0.0.1:1", "--timeout", timeout, "get", "pods")
    assert exited.value.code == 2
    assert "argument --timeout" in capsys.readouterr().err


def test_token_with_a_trailing_newline_is_trimmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A token from the config or the environment loses surrounding whitespace (a newline
    pasted with it) instead of ending in a traceback."""
    config = tmp_path / "config.toml"
    config.write_text('token = "s3cret\\n"\n')
    monkeypatch.setenv("CORRAL_CONFIG", str(config))
    monkeypatch.delenv("CORRAL_TOKEN", raising=False)
    assert resolve(None, None, os.environ).token == "s3cret"
    assert resolve(None, "  s3cret\n", {}).token == "s3cret"


@pytest.mark.parametrize(
    ("token", "secret_part"),
    [("corral_ab\ncd", "corral_ab"), ("corral_ab\rX-Evil: 1", "X-Evil"), ("s3cr\u00e9t", "s3cr")],
)
def test_token_that_cannot_be_a_header_is_refused_without_showing_it(
    token: str, secret_part: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A token with a control or non-ASCII character is an error that does not print it."""
    code, out, err = run(capsys, "--server", "127.0.0.1:1", "--token", token, "get", "pods")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("error: the API token"), err
    assert secret_part not in err
