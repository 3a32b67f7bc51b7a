"""The real `corral` CLI, run as a process, against a real corral-scheduler with hollow agents.

Uses the `scheduler` fixture (tests/conftest.py): an object whose `.url` is the
base URL of a running scheduler (and `.token`, if the API wants one).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import aiohttp
import pytest
import yaml

from common import protocol
from tests.conftest import HollowProcess, SchedulerProcess, ready_nodes, wait_until
from tests.integration.test_node_credentials import http, join  # noqa: F401 (http: a fixture)

T = TypeVar("T")

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: cli-test
spec:
  containers:
  - name: app
    image: busybox:1.36
    command: ["sleep", "3600"]
    resources:
      requests:
        cpu: 10m
        memory: 8Mi
"""


Answer = tuple[int, dict[str, str], bytes]  # a stand-in server's (status, headers, body)


def corral(
    scheduler: Any, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m scheduler.cli.main ARGS` pointed at the test scheduler."""
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(scheduler),
        timeout=30,
    )


def cli_env(scheduler: Any) -> dict[str, str]:
    """The environment of a `corral` pointed at the test scheduler, and at nothing else."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env["CORRAL_SERVER"] = scheduler.url
    env["CORRAL_CONFIG"] = os.devnull  # an empty TOML file: no user config leaks in
    token = getattr(scheduler, "token", None)
    if token:
        env["CORRAL_TOKEN"] = token
    return env


def corral_running(scheduler: Any, *args: str) -> subprocess.Popen[str]:
    """`corral ARGS` started against the test scheduler, its output piped, not awaited."""
    return subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(scheduler),
    )


def eventually(check: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    """Call `check` until it returns something other than None or False."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        result = check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def write_pod(tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(POD.format(name=name))
    return path


def test_apply_get_describe_delete(scheduler: Any, tmp_path: Path) -> None:
    """A pod applied with the CLI is placed, shown, described, re-applied unchanged and deleted."""
    name = unique("cli")
    path = write_pod(tmp_path, name)
    result = corral(scheduler, "apply", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"pod/{name} created\n"

    def bound() -> str | None:
        got = corral(scheduler, "get", "pods", "-o", "json")
        assert got.returncode == 0, got.stderr
        pods = {p["metadata"]["name"]: p for p in json.loads(got.stdout)["items"]}
        node: str | None = pods[name]["spec"].get("nodeName")
        return node

    node = eventually(bound, what=f"{name} to get a spec.nodeName")

    table = corral(scheduler, "get", "pods", "-o", "wide")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    row = next(r.split() for r in rows if r.split()[0] == name)
    assert node in row

    described = corral(scheduler, "describe", "pod", name)
    assert described.returncode == 0, described.stderr
    lines = [" ".join(line.split()) for line in described.stdout.splitlines()]
    assert f"Name: {name}" in lines
    assert "Namespace: default" in lines
    assert any(line.startswith(f"Node: {node}") for line in lines)
    assert "Image: busybox:1.36" in lines

    again = corral(scheduler, "apply", "-f", "-", stdin=path.read_text())
    assert (again.returncode, again.stdout) == (0, f"pod/{name} unchanged\n"), again.stderr

    deleted = corral(scheduler, "delete", "pod", name)
    assert (deleted.returncode, deleted.stdout) == (0, f'pod "{name}" deleted\n'), deleted.stderr

    def gone() -> bool:
        got = corral(scheduler, "get", "pod", name)
        return got.returncode == 1 and "NotFound" in got.stderr

    eventually(gone, what=f"{name} to be removed")


def test_delete_by_manifest(scheduler: Any, tmp_path: Path) -> None:
    """`delete -f` removes what `apply -f` created."""
    name = unique("cli-f")
    path = write_pod(tmp_path, name)
    assert corral(scheduler, "apply", "-f", str(path)).returncode == 0
    result = corral(scheduler, "delete", "-f", str(path), "--grace-period", "0")
    assert (result.returncode, result.stdout) == (0, f'pod "{name}" deleted\n'), result.stderr


def test_bad_manifest_is_refused_locally(scheduler: Any, tmp_path: Path) -> None:
    """A manifest missing a required field exits 1 naming the field; nothing is created."""
    name = unique("cli-bad")
    path = tmp_path / "bad.yaml"
    path.write_text(POD.format(name=name).replace("    image: busybox:1.36\n", ""))
    result = corral(scheduler, "apply", "-f", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    assert "spec.containers[0].image" in result.stderr
    assert "Traceback" not in result.stderr
    missing = corral(scheduler, "get", "pod", name)
    assert missing.returncode == 1 and "NotFound" in missing.stderr


def test_unknown_pod_is_not_found(scheduler: Any) -> None:
    """Asking for a pod that does not exist prints the server's NotFound and exits 1."""
    name = unique("nope")
    for args in (["get", "pod", name], ["describe", "pod", name], ["delete", "pod", name]):
        result = corral(scheduler, *args)
        assert result.returncode == 1, args
        assert result.stderr.startswith("Error from server (NotFound): "), result.stderr
        assert name in result.stderr


def test_cordon_shows_scheduling_disabled(scheduler: Any) -> None:
    """cordon marks a node SchedulingDisabled in `get nodes`; uncordon clears it."""
    listed = corral(scheduler, "get", "nodes", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    node = json.loads(listed.stdout)["items"][0]["metadata"]["name"]

    def status_of(node_name: str) -> str:
        table = corral(scheduler, "get", "nodes")
        assert table.returncode == 0, table.stderr
        rows = [line.split() for line in table.stdout.splitlines()[1:]]
        return next(r[1] for r in rows if r[0] == node_name)

    try:
        result = corral(scheduler, "cordon", node)
        assert (result.returncode, result.stdout) == (0, f"node/{node} cordoned\n"), result.stderr
        assert status_of(node).endswith(",SchedulingDisabled")
        described = corral(scheduler, "describe", "node", node)
        assert described.returncode == 0, described.stderr
        assert "Unschedulable:" in described.stdout and "true" in described.stdout
    finally:
        result = corral(scheduler, "uncordon", node)
        assert result.returncode == 0, result.stderr
    assert "SchedulingDisabled" not in status_of(node)


def test_status_summary(scheduler: Any) -> None:
    """status prints a readable summary, and the server's JSON with -o json."""
    text = corral(scheduler, "status")
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith(f"Server: {scheduler.url.rstrip('/')}")
    raw = corral(scheduler, "status", "-o", "json")
    assert raw.returncode == 0, raw.stderr
    assert isinstance(json.loads(raw.stdout), dict)


def test_unreachable_server_is_one_line(tmp_path: Path) -> None:
    """With nothing listening, the CLI names the server in one line and exits 1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    class Nowhere:
        url = f"http://127.0.0.1:{port}"

    result = corral(Nowhere(), "get", "pods")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert f"http://127.0.0.1:{port}" in result.stderr


@contextlib.contextmanager
def stand_in(answer: Callable[[BaseHTTPRequestHandler], Answer]) -> Iterator[str]:
    """A local HTTP server that is not corral (a login page, a redirect): every GET is
    answered `answer(request)`, (status, headers, body); yields its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, headers, body = answer(self)
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_that_is_not_corral_is_one_line() -> None:
    """A 200 that is not JSON (a proxy's login page) is an error naming the server, not a
    traceback."""
    login: Answer = (200, {"Content-Type": "text/html"}, b"<html>Please log in</html>")
    with stand_in(lambda _: login) as url:
        for args in (["get", "pods"], ["get", "deployments", "-o", "json"], ["status"]):
            result = corral(SimpleNamespace(url=url), *args)
            assert result.returncode == 1, args
            assert "Traceback" not in result.stderr, result.stderr
            assert result.stderr.count("\n") == 1, result.stderr
            assert url in result.stderr and "text/html" in result.stderr
            assert result.stdout == ""


def test_watch_cut_short_by_a_dead_server_is_one_line(bare_scheduler: Any) -> None:
    """`get -w` whose server dies mid-stream says the connection was lost and exits 1,
    without a traceback."""
    watcher = corral_running(bare_scheduler, "get", "namespaces", "-w")
    try:
        assert watcher.stdout is not None
        assert watcher.stdout.readline().split()[0] == "NAME"
        assert watcher.stdout.readline().split()[0] == "default"
        # A row for a namespace created now proves the watch stream is open.
        name = unique("watched")
        created = bare_scheduler.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
        )
        assert created.status == 201, created.body
        assert watcher.stdout.readline().split()[0] == name
        bare_scheduler.kill()
        assert watcher.wait(timeout=20) == 1
        stderr = watcher.stderr.read() if watcher.stderr else ""
        assert "Traceback" not in stderr, stderr
        assert stderr.count("\n") == 1 and "connection lost" in stderr, stderr
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.wait()
        for stream in (watcher.stdout, watcher.stderr):
            if stream is not None:
                stream.close()


def test_get_events_by_name_label_and_output_name(scheduler: Any, tmp_path: Path) -> None:
    """`get events` honours NAME, -l and -o name as it does for every other kind."""
    name = unique("cli-ev")
    assert corral(scheduler, "apply", "-f", str(write_pod(tmp_path, name))).returncode == 0

    def scheduled_event() -> str | None:
        got = corral(
            scheduler,
            "get",
            "events",
            "--field-selector",
            f"involvedObject.name={name}",
            "-o",
            "json",
        )
        assert got.returncode == 0, got.stderr
        items = [e for e in json.loads(got.stdout)["items"] if e["reason"] == "Scheduled"]
        return str(items[0]["metadata"]["name"]) if items else None

    event = eventually(scheduled_event, what=f"a Scheduled event for {name}")
    other = corral(scheduler, "get", "events", "-o", "json")
    assert len(json.loads(other.stdout)["items"]) > 1  # the nodes joined, too

    one = corral(scheduler, "get", "events", event)
    assert one.returncode == 0, one.stderr
    header, *rows = one.stdout.splitlines()
    assert header.split()[:3] == ["LAST", "SEEN", "TYPE"]
    assert len(rows) == 1 and f"pod/{name}" in rows[0], one.stdout
    as_json = corral(scheduler, "get", "event", event, "-o", "json")
    assert json.loads(as_json.stdout)["metadata"]["name"] == event
    # -o wide: kubectl's extra columns, in its order (its event printer's priority 1 ones).
    wide = corral(scheduler, "get", "events", event, "-o", "wide")
    assert wide.returncode == 0, wide.stderr
    header, row = wide.stdout.splitlines()
    starts = [header.index(c) for c in ("SUBOBJECT", "SOURCE", "MESSAGE", "FIRST SEEN", "COUNT")]
    assert starts == sorted(starts) and header.rstrip().endswith("COUNT   NAME"), header
    assert row.split()[-2:] == ["1", event], row  # COUNT, then NAME
    assert row[header.index("SOURCE") :].startswith("corral-scheduler"), row

    missing = corral(scheduler, "get", "event", "nope")
    assert missing.returncode == 1
    assert missing.stderr == 'Error from server (NotFound): events "nope" not found\n'

    unlabelled = corral(scheduler, "get", "events", "-l", "app=no-such-app")
    assert (unlabelled.returncode, unlabelled.stdout) == (0, ""), unlabelled.stdout
    assert unlabelled.stderr == "No resources found in default namespace.\n"

    names = corral(scheduler, "get", "events", "-o", "name")
    assert names.returncode == 0, names.stderr
    lines = names.stdout.splitlines()
    assert f"event/{event}" in lines and all(line.startswith("event/") for line in lines)


def test_watch_of_an_empty_list_prints_the_header_with_the_first_row(
    bare_scheduler: Any,
) -> None:
    """`get pods -w` where there is nothing yet prints the column header before the first row."""
    ns = unique("empty")
    created = bare_scheduler.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
    )
    assert created.status == 201, created.body
    watcher = corral_running(bare_scheduler, "get", "pods", "-n", ns, "-w")
    try:
        # The watch starts at the version of its list: a pod created once the list was
        # answered comes as a change, not in the list.
        listed = f"GET /api/v1/namespaces/{ns}/pods 200"
        eventually(lambda: listed in bare_scheduler.log_path.read_text(), what="the list")
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "first"},
            "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
        }
        answer = bare_scheduler.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
        assert answer.status == 201, answer.body
        assert watcher.stdout is not None
        assert watcher.stdout.readline().split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        assert watcher.stdout.readline().split()[:3] == ["first", "0/1", "Pending"]
    finally:
        watcher.kill()
        watcher.wait()
        for stream in (watcher.stdout, watcher.stderr):
            if stream is not None:
                stream.close()


def test_rollout_status_of_a_missing_object_is_not_found(bare_scheduler: Any) -> None:
    """`rollout status` of a deployment or job that does not exist says NotFound and exits 1
    at once, instead of waiting for it."""
    for target, plural in (("deployment/nope", "deployments"), ("job/nope", "jobs")):
        result = corral(bare_scheduler, "rollout", "status", target, "--wait-timeout", "10")
        assert result.returncode == 1, result.stdout
        assert result.stderr == f'Error from server (NotFound): {plural} "nope" not found\n'


def test_a_redirect_is_refused_and_the_token_stays_home() -> None:
    """A server that redirects elsewhere gets an error, and the bearer token is not sent to
    where it points."""
    seen: list[str | None] = []

    def elsewhere(request: BaseHTTPRequestHandler) -> Answer:
        seen.append(request.headers.get("Authorization"))
        body = b'{"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}'
        return 200, {"Content-Type": "application/json"}, body

    with stand_in(elsewhere) as target:
        other_host = target.replace("127.0.0.1", "localhost")
        with stand_in(lambda r: (302, {"Location": other_host + r.path}, b"")) as url:
            redirecting = SimpleNamespace(url=url, token="corral_secret-that-must-stay-home")
            for args in (["get", "pods"], ["logs", "web", "-f"]):
                result = corral(redirecting, *args)
                assert result.returncode == 1, (args, result.stdout)
                assert "Traceback" not in result.stderr, result.stderr
                assert result.stderr.count("\n") == 1 and "redirect (302)" in result.stderr
                assert redirecting.token not in result.stderr
    assert seen == []


def test_apply_output_of_several_objects_parses_back(bare_scheduler: Any, tmp_path: Path) -> None:
    """`apply -o json|yaml` of a multi-document file prints one List that `apply -f -` takes."""
    import yaml

    first, second = unique("out-a"), unique("out-b")
    path = tmp_path / "two.yaml"
    path.write_text(POD.format(name=first) + "---\n" + POD.format(name=second))
    for fmt, parse in (("yaml", yaml.safe_load), ("json", json.loads)):
        result = corral(bare_scheduler, "apply", "-f", str(path), "-o", fmt)
        assert result.returncode == 0, result.stderr
        document = parse(result.stdout)
        assert document["kind"] == "List"
        assert [i["metadata"]["name"] for i in document["items"]] == [first, second]
        again = corral(bare_scheduler, "apply", "-f", "-", stdin=result.stdout)
        assert again.returncode == 0, again.stderr
        assert again.stdout == f"pod/{first} unchanged\npod/{second} unchanged\n"


def test_watch_as_yaml_separates_documents(bare_scheduler: Any) -> None:
    """`get -w -o yaml` prints `---` between objects, so the stream reads back as YAML."""
    import yaml

    watcher = corral_running(bare_scheduler, "get", "namespaces", "-w", "-o", "yaml")
    try:
        assert watcher.stdout is not None
        lines = [watcher.stdout.readline()]
        while lines[-1].rstrip() != "  name: default":
            lines.append(watcher.stdout.readline())
            assert lines[-1], "the watch ended: " + "".join(lines)
        ns = unique("yaml")
        created = bare_scheduler.request(
            "POST",
            "/api/v1/namespaces",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )
        assert created.status == 201, created.body
        while lines[-1].rstrip() != f"  name: {ns}":
            lines.append(watcher.stdout.readline())
            assert lines[-1], "the watch ended: " + "".join(lines)
        assert "---\n" in lines, "".join(lines)
        first = "".join(lines[: lines.index("---\n")])
        assert yaml.safe_load(first)["metadata"]["name"] == "default"
    finally:
        watcher.kill()
        watcher.wait()
        for stream in (watcher.stdout, watcher.stderr):
            if stream is not None:
                stream.close()


def manifest(name: str, labels: dict[str, str], namespace: str = "default") -> str:
    """A pod of `name` with `labels`, as YAML (busybox sleeping; hollow nodes only pretend)."""
    lines = "".join(f"    {key}: '{value}'\n" for key, value in labels.items())
    return POD.format(name=name).replace(
        "  labels:\n    app: cli-test\n", f"  namespace: {namespace}\n  labels:\n{lines}"
    )


def present(scheduler: Any, path: str) -> bool:
    return bool(scheduler.request("GET", path).status == 200)


def running(scheduler: Any, *names: str, namespace: str = "default") -> bool:
    """Every pod of `names` reported Running by its node."""
    pods = scheduler.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    phases = {p["metadata"]["name"]: p["status"].get("phase") for p in pods}
    return all(phases.get(name) == "Running" for name in names)


def test_get_several_names_kinds_and_sort_by(scheduler: Any) -> None:
    """`get TYPE NAME NAME`, `get TYPE/NAME...`, `get KIND,KIND` and --sort-by, in every
    output format, against the real API."""
    ranks = {"sort-a": "3", "sort-b": "10", "sort-c": "2"}  # by rank: c, a, b; as text: b, c, a
    docs = [manifest(name, {"app": "sorted", "rank": rank}) for name, rank in ranks.items()]
    applied = corral(scheduler, "apply", "-f", "-", stdin="---\n".join(docs))
    assert applied.returncode == 0, applied.stderr

    two = corral(scheduler, "get", "pods", "sort-b", "sort-a")
    assert two.returncode == 0, two.stderr
    assert [line.split()[0] for line in two.stdout.splitlines()] == ["NAME", "sort-b", "sort-a"]
    wide = corral(scheduler, "get", "pod/sort-a", "pod/sort-c", "-o", "wide")
    assert wide.stdout.splitlines()[0].split()[-1] == "NODE", wide.stderr
    listed = json.loads(corral(scheduler, "get", "pods", "sort-a", "sort-c", "-o", "json").stdout)
    assert listed["kind"] == "List"
    assert [p["metadata"]["name"] for p in listed["items"]] == ["sort-a", "sort-c"]
    one = json.loads(corral(scheduler, "get", "pod/sort-a", "-o", "json").stdout)
    assert (one["kind"], one["metadata"]["name"]) == ("Pod", "sort-a")
    as_yaml = yaml.safe_load(
        corral(scheduler, "get", "pods,nodes", "-l", "app=sorted", "-o", "yaml").stdout
    )
    assert as_yaml["kind"] == "List"
    assert [(p["kind"], p["metadata"]["name"]) for p in as_yaml["items"]] == [
        ("Pod", "sort-a"),
        ("Pod", "sort-b"),
        ("Pod", "sort-c"),
    ]

    mixed = corral(scheduler, "get", "pods,nodes", "-l", "app=sorted")
    assert mixed.returncode == 0, mixed.stderr
    assert [line.split()[0] for line in mixed.stdout.splitlines()] == [
        "NAME",
        "pod/sort-a",
        "pod/sort-b",
        "pod/sort-c",
    ]
    refs = corral(scheduler, "get", "nodes,pods", "-o", "name")
    lines = refs.stdout.splitlines()
    assert lines[:3] == ["node/hollow-0000", "node/hollow-0001", "node/hollow-0002"]
    assert {"pod/sort-a", "pod/sort-b", "pod/sort-c"} <= set(lines[3:])

    missing = corral(scheduler, "get", "pods", "sort-a", "nope")
    assert missing.returncode == 1
    assert missing.stderr == 'Error from server (NotFound): pods "nope" not found\n'
    assert [line.split()[0] for line in missing.stdout.splitlines()] == ["NAME", "sort-a"]

    for expression in ("{.metadata.labels.rank}", ".metadata.labels.rank"):
        table = corral(scheduler, "get", "pods", "-l", "app=sorted", "--sort-by", expression)
        assert table.returncode == 0, table.stderr
        rows = [line.split()[0] for line in table.stdout.splitlines()[1:]]
        assert rows == ["sort-c", "sort-a", "sort-b"], table.stdout
    sort = "--sort-by=metadata.labels.rank"
    by_name = corral(scheduler, "get", "po", "-l", "app=sorted", sort, "-o", "name")
    assert by_name.stdout == "pod/sort-c\npod/sort-a\npod/sort-b\n", by_name.stderr
    typo = corral(scheduler, "get", "pods", "-l", "app=sorted", "--sort-by", "{.spec.nope}")
    assert typo.returncode == 1
    assert typo.stderr == (
        'error: couldn\'t find any field with path "{.spec.nope}" in the list of objects\n'
    )


def test_delete_by_selector_all_and_every_namespace(scheduler: Any, tmp_path: Path) -> None:
    """`delete KIND -l SELECTOR`, `--all` and `--all -A` delete every match, one line each,
    and return once they are gone; nothing matching prints kubectl's `No resources found`."""
    other = unique("cli-ns")
    team = (
        f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {other}\n"
        "  labels:\n    team: cli-delete\n"
    )
    front = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: front\n"
        "  labels:\n    tier: front\nspec:\n  replicas: 1\n"
        "  selector:\n    matchLabels:\n      app: front\n"
        "  template:\n    metadata:\n      labels:\n        app: front\n"
        "    spec:\n      containers:\n      - name: c\n        image: busybox\n"
    )
    docs = [
        team,
        front,
        manifest("del-a", {"app": "a"}),
        manifest("del-b1", {"app": "b"}),
        manifest("del-b2", {"app": "b"}),
        manifest("del-o", {"app": "b"}, namespace=other),
    ]
    applied = corral(scheduler, "apply", "-f", "-", stdin="---\n".join(docs))
    assert applied.returncode == 0, applied.stderr
    eventually(lambda: running(scheduler, "del-a", "del-b1", "del-b2"), what="pods Running")
    eventually(lambda: running(scheduler, "del-o", namespace=other), what="del-o Running")

    by_label = corral(scheduler, "delete", "pods", "-l", "app=b")
    assert by_label.returncode == 0, by_label.stderr
    assert by_label.stdout == 'pod "del-b1" deleted\npod "del-b2" deleted\n'
    # Waited for: gone by the time the command returns, not merely Terminating.
    for name in ("del-b1", "del-b2"):
        assert not present(scheduler, f"/api/v1/namespaces/default/pods/{name}")
    assert present(scheduler, f"/api/v1/namespaces/{other}/pods/del-o")  # another namespace

    nothing = corral(scheduler, "delete", "pods,deployments", "-l", "app=none")
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (0, "No resources found\n", "")
    nodes = corral(scheduler, "delete", "nodes", "-l", "corral.test/none=x")
    assert (nodes.returncode, nodes.stdout) == (0, "No resources found\n"), nodes.stderr

    deployments = corral(scheduler, "delete", "deploy", "-l", "tier=front")
    assert deployments.stdout == 'deployment.apps "front" deleted\n', deployments.stderr
    jobs = corral(scheduler, "delete", "jobs", "--all")
    assert (jobs.returncode, jobs.stdout) == (0, "No resources found\n"), jobs.stderr

    refused = corral(scheduler, "delete", "pods", "del-a", "-l", "app=a")
    assert refused.returncode == 1
    assert refused.stderr == "error: name cannot be provided when a selector is specified\n"
    assert present(scheduler, "/api/v1/namespaces/default/pods/del-a")

    everywhere = corral(scheduler, "delete", "pods", "--all", "-A", "-l", "app in (a,b)")
    assert everywhere.returncode == 1  # --all with -l is refused, as in kubectl
    assert "cannot set --all and --selector at the same time" in everywhere.stderr
    everywhere = corral(scheduler, "delete", "pods", "--all", "-A")
    assert everywhere.returncode == 0, everywhere.stderr
    lines = everywhere.stdout.splitlines()
    assert {'pod "del-a" deleted', 'pod "del-o" deleted'} <= set(lines)
    assert scheduler.get("/api/v1/pods")["items"] == []

    namespaces = corral(scheduler, "delete", "namespaces", "-l", "team=cli-delete")
    assert namespaces.stdout == f'namespace "{other}" deleted\n', namespaces.stderr
    assert not present(scheduler, f"/api/v1/namespaces/{other}")  # Terminating until empty


def test_delete_waits_force_now_and_timeout(tmp_path: Path) -> None:
    """With the node's agent frozen a pod's delete cannot complete: --wait=false returns at
    once, --wait-timeout gives up with a clear error, --now and a bare --grace-period=0 ask
    for 1 s, --force removes it at once; the default wait returns once the agent confirms."""
    # Long node timeouts: a frozen agent's node stays Ready, its pods Terminating.
    sched = SchedulerProcess(
        tmp_path / "scheduler", ["--node-grace-seconds", "60", "--eviction-seconds", "120"]
    )
    sched.start()
    hollow = HollowProcess(sched, 1)
    try:
        eventually(lambda: ready_nodes(sched) == ["hollow-0000"], what="the node to be Ready")
        names = ("slow-a", "slow-b", "slow-c", "slow-d", "slow-e")
        docs = [manifest(name, {"app": "slow"}) for name in names]
        assert corral(sched, "apply", "-f", "-", stdin="---\n".join(docs)).returncode == 0
        eventually(lambda: running(sched, *names), what="the pods to run")
        hollow.proc.send_signal(signal.SIGSTOP)

        def pod(name: str) -> dict[str, Any]:
            got: dict[str, Any] = sched.get(f"/api/v1/namespaces/default/pods/{name}")
            return got

        at_once = corral(sched, "delete", "pod", "slow-a", "--wait=false")
        assert (at_once.returncode, at_once.stdout) == (0, 'pod "slow-a" deleted\n'), at_once.stderr
        assert pod("slow-a")["metadata"]["deletionTimestamp"]  # Terminating, not gone

        started = time.monotonic()
        late = corral(sched, "delete", "pod", "slow-b", "--wait-timeout", "1")
        assert late.returncode == 1 and late.stdout == 'pod "slow-b" deleted\n'
        assert late.stderr == 'error: timed out after 1s waiting for pod "slow-b" to be deleted\n'
        assert time.monotonic() - started < 15

        for name, flags in (("slow-c", ["--now"]), ("slow-d", ["--grace-period=0"])):
            quick = corral(sched, "delete", "pod", name, *flags, "--wait=false")
            assert quick.returncode == 0, quick.stderr
            assert pod(name)["spec"]["terminationGracePeriodSeconds"] == 1

        forced = corral(sched, "delete", "pod", "slow-e", "--force")
        assert (forced.returncode, forced.stdout) == (0, 'pod "slow-e" force deleted\n')
        assert forced.stderr.startswith("warning: Immediate deletion does not wait")
        assert not present(sched, "/api/v1/namespaces/default/pods/slow-e")

        waiting = corral_running(sched, "delete", "pods", "-l", "app=slow")
        try:
            assert waiting.stdout is not None
            deleted = [waiting.stdout.readline() for _ in names[:4]]
            assert deleted == [f'pod "{name}" deleted\n' for name in names[:4]]
            assert waiting.poll() is None  # the agent cannot confirm: still waiting
            hollow.proc.send_signal(signal.SIGCONT)
            assert waiting.wait(timeout=30) == 0, waiting.stderr and waiting.stderr.read()
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.wait()
            for stream in (waiting.stdout, waiting.stderr):
                if stream is not None:
                    stream.close()
        assert sched.get("/api/v1/pods")["items"] == []  # returned only once they were gone
    finally:
        hollow.proc.send_signal(signal.SIGCONT)
        hollow.stop()
        sched.stop()


async def test_describe_lists_the_events_of_one_second_in_recorded_order(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """A node reports a pod's events of one second in one frame (they are stamped to the
    second, and written by one flush in one revision): the event list, and so `describe`,
    give them in the order they happened, as kubectl describe (stable by lastTimestamp).
    They came in the order of their names, which are digests."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    spec = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "node-a"},
            "containers": [{"name": "main", "image": "busybox"}],
        },
    }
    assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    desired = await agent.receive_type(protocol.Desired)
    uid = json.loads(desired.upsert[0])["metadata"]["uid"]
    stamp = datetime.now(UTC).replace(microsecond=0).isoformat()
    reasons = [f"Step{i:02d}" for i in range(16)]
    happened = [
        protocol.EventReport(
            uid=uid, namespace="default", name="web", reason=r, message=r, timestamp=stamp
        )
        for r in reasons
    ]
    await agent.send(protocol.PodEvents(events=happened))

    def listed() -> list[str] | None:
        items = s.get("/api/v1/namespaces/default/events")["items"]
        steps = [e["reason"] for e in items if e["reason"].startswith("Step")]
        return steps if len(steps) == len(reasons) else None

    assert await wait_until(listed, within=10) == reasons
    described = await asyncio.to_thread(corral, s, "describe", "pod", "web")
    assert described.returncode == 0, described.stderr
    block = described.stdout.split("Events:", 1)[1]
    shown = [line.split()[1] for line in block.splitlines() if "Step" in line]
    assert shown == reasons, block
    await agent.ws.close()
