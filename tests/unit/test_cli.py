"""The `corral` CLI's pure parts: ages, status columns, tables, settings, spec diffs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.cli import printers
from scheduler.cli.client import ApiError, pods_path
from scheduler.cli.commands import api_error_text
from scheduler.cli.describe import describe_node, describe_pod, pod_resources
from scheduler.cli.manifests import ManifestProblem, read_pods, spec_changes
from scheduler.cli.settings import DEFAULT_SERVER, SettingsError, resolve
from scheduler.cli.status import render_status, title
from scheduler.printing import cells

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    """An API timestamp `seconds_ago` before NOW."""
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def make_pod(
    name: str = "web",
    *,
    phase: str = "Running",
    containers: int = 1,
    statuses: list[dict[str, Any]] | None = None,
    node: str | None = "node-1",
    **extra: Any,
) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "creationTimestamp": ts(300)},
        "spec": {"containers": [{"name": f"c{i}", "image": "busybox"} for i in range(containers)]},
        "status": {"phase": phase, "containerStatuses": statuses or []},
    }
    if node:
        pod["spec"]["nodeName"] = node
    for key, value in extra.items():
        pod[key].update(value)
    return pod


def running(ready: bool = True, restarts: int = 0, **last: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": "c0",
        "ready": ready,
        "restartCount": restarts,
        "state": {"running": {"startedAt": ts(60)}},
    }
    if last:
        status["lastState"] = {"terminated": last}
    return status


def make_node(name: str = "node-1", ready: str | None = "True", **spec: Any) -> dict[str, Any]:
    conditions = [] if ready is None else [{"type": "Ready", "status": ready}]
    return {
        "metadata": {"name": name, "creationTimestamp": ts(3 * 86400)},
        "spec": spec,
        "status": {
            "conditions": conditions,
            "capacity": {"cpu": "4", "memory": "8Gi"},
            "allocatable": {"cpu": "4", "memory": "8Gi"},
            "usage": {"cpu": "1", "memory": "2Gi"},
        },
    }


# --- ages ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "<invalid>"),
        (-0.5, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (20 * 3600, "20h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (2 * 86400 + 5 * 3600, "2d5h"),
        (9 * 86400, "9d"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
        (10 * 365 * 86400, "10y"),
    ],
)
def test_human_duration_matches_kubectl(seconds: float, expected: str) -> None:
    """Ages read like kubectl's: seconds, minutes, hours, days, years, with kubectl's cut-offs."""
    assert cells.human_duration(seconds) == expected


def test_age_of_missing_or_garbled_timestamp_is_unknown() -> None:
    """A pod without a creation time still gets a row."""
    assert printers.age(None, NOW) == "<unknown>"
    assert printers.age("yesterday", NOW) == "<unknown>"
    assert printers.age(ts(4 * 86400), NOW) == "4d"
    assert printers.age("2024-05-01T11:59:55+00:00", NOW) == "5s"


# --- pod columns ---------------------------------------------------------------------------


def test_status_is_phase_without_container_reasons() -> None:
    """A healthy pod shows its phase."""
    assert printers.pod_status(make_pod(statuses=[running()])) == "Running"
    assert printers.pod_status(make_pod(phase="Pending", node=None)) == "Pending"


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"waiting": {"reason": "CrashLoopBackOff"}}, "CrashLoopBackOff"),
        ({"waiting": {"reason": "ImagePullBackOff"}}, "ImagePullBackOff"),
        ({"terminated": {"exitCode": 137, "reason": "OOMKilled"}}, "OOMKilled"),
        ({"terminated": {"exitCode": 0, "reason": "Completed"}}, "Completed"),
        ({"terminated": {"exitCode": 3}}, "ExitCode:3"),
        ({"terminated": {"exitCode": 143, "signal": 15}}, "Signal:15"),
    ],
)
def test_status_shows_container_reason(state: dict[str, Any], expected: str) -> None:
    """A waiting or terminated container's reason replaces the phase."""
    pod = make_pod(statuses=[{"name": "c0", "state": state}])
    assert printers.pod_status(pod) == expected


def test_status_shows_pod_reason() -> None:
    """A pod-level reason (NodeLost, Evicted) replaces the phase."""
    pod = make_pod(phase="Unknown")
    pod["status"]["reason"] = "NodeLost"
    assert printers.pod_status(pod) == "NodeLost"


def test_status_first_container_with_a_reason_wins() -> None:
    """As in kubectl, the first container that is not running names the status."""
    pod = make_pod(
        containers=2,
        statuses=[
            {"name": "c0", "state": {"waiting": {"reason": "CrashLoopBackOff"}}},
            {"name": "c1", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}},
        ],
    )
    assert printers.pod_status(pod) == "CrashLoopBackOff"


def test_status_completed_sidecar_with_running_container() -> None:
    """One container done and another serving: Running when the pod is Ready, else NotReady."""
    statuses: list[dict[str, Any]] = [
        {"name": "c0", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "c1", "ready": True, "state": {"running": {}}},
    ]
    pod = make_pod(containers=2, statuses=statuses)
    assert printers.pod_status(pod) == "NotReady"
    pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    assert printers.pod_status(pod) == "Running"


def test_status_terminating_wins() -> None:
    """A pod being deleted shows Terminating, whatever its containers do."""
    pod = make_pod(
        statuses=[{"name": "c0", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
        metadata={"deletionTimestamp": ts(1)},
    )
    assert printers.pod_status(pod) == "Terminating"


def test_ready_and_restarts_columns() -> None:
    """READY counts ready containers over all; RESTARTS sums and gives the last restart's age."""
    pod = make_pod(containers=2, statuses=[running(restarts=2, exitCode=1, finishedAt=ts(90))])
    assert printers.pod_ready(pod) == "1/2"
    assert printers.pod_restarts(pod, NOW) == "2 (90s ago)"
    assert printers.pod_restarts(make_pod(statuses=[running()]), NOW) == "0"
    assert printers.pod_ready(make_pod(phase="Pending", node=None)) == "0/1"


def test_table_aligns_columns() -> None:
    """Columns are padded to their widest cell and separated by three spaces."""
    text = printers.table(["NAME", "AGE"], [["a-long-name", "5s"], ["b", "10d"]])
    assert text.splitlines() == [
        "NAME          AGE",
        "a-long-name   5s",
        "b             10d",
    ]


def test_pods_table() -> None:
    """The default pod table: NAME READY STATUS RESTARTS AGE."""
    pods = [make_pod("web", statuses=[running()]), make_pod("db", phase="Pending", node=None)]
    lines = printers.pods_table(pods, NOW).splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split() == ["web", "1/1", "Running", "0", "5m"]
    assert lines[2].split() == ["db", "0/1", "Pending", "0", "5m"]
    assert lines[0].index("READY") == lines[1].index("1/1")


def test_pods_table_all_namespaces_and_wide() -> None:
    """-A prefixes NAMESPACE; -o wide adds NODE, and NOMINATED only when a pod waits."""
    pods = [make_pod("web", statuses=[running()])]
    header = printers.pods_table(pods, NOW, wide=True, namespaces=True).splitlines()[0]
    assert header.split() == ["NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "AGE", "NODE"]

    waiting = make_pod("big", phase="Pending", node=None)
    waiting["status"]["conditions"] = [
        {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/3 nodes are available: 3 Insufficient cpu",
        }
    ]
    lines = printers.pods_table([*pods, waiting], NOW, wide=True).splitlines()
    assert lines[0].split()[-2:] == ["NODE", "NOMINATED"]
    assert lines[1].split()[-2:] == ["node-1", "<none>"]
    assert lines[2].endswith("<none>   Unschedulable: 0/3 nodes are available: 3 Insufficient cpu")


# --- node columns --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ready", "unschedulable", "expected"),
    [
        ("True", False, "Ready"),
        ("False", False, "NotReady"),
        ("Unknown", False, "NotReady"),
        (None, False, "Unknown"),
        ("True", True, "Ready,SchedulingDisabled"),
        ("False", True, "NotReady,SchedulingDisabled"),
    ],
)
def test_node_status(ready: str | None, unschedulable: bool, expected: str) -> None:
    """Ready/NotReady from the Ready condition, plus SchedulingDisabled when cordoned."""
    node = make_node(ready=ready, unschedulable=unschedulable)
    assert printers.node_status(node) == expected


def test_nodes_table_wide() -> None:
    """-o wide adds allocatable CPU and memory and what is in use."""
    lines = printers.nodes_table([make_node()], NOW, wide=True).splitlines()
    assert lines[0].split() == [
        "NAME",
        "STATUS",
        "AGE",
        "CPU",
        "MEMORY",
        "CPU",
        "USED",
        "MEMORY",
        "USED",
    ]
    assert lines[1].split() == [
        "node-1",
        "Ready",
        "3d",
        "4",
        "8.0Gi",
        "1",
        "(25%)",
        "2.0Gi",
        "(25%)",
    ]
    bare = make_node()
    bare["status"] = {}
    assert "<unknown>" in printers.nodes_table([bare], NOW, wide=True)


def test_dump() -> None:
    """-o json and -o yaml round-trip (-o name: tests/unit/test_cli_selection.py)."""
    import json

    import yaml

    pods = [make_pod("a"), make_pod("b")]
    assert json.loads(printers.dump(pods[0], "json")) == pods[0]
    assert yaml.safe_load(printers.dump(pods[0], "yaml")) == pods[0]


def test_format_cpu() -> None:
    """Whole cores print without a suffix, the rest in millicores."""
    assert printers.format_cpu(2000) == "2"
    assert printers.format_cpu(250) == "250m"
    assert printers.format_cpu(0) == "0"


# --- settings ------------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return {"CORRAL_CONFIG": str(path)}


def test_settings_default(tmp_path: Path) -> None:
    """Nothing set anywhere: the local default server, no token."""
    settings = resolve(None, None, {"HOME": str(tmp_path)})
    assert settings.server == DEFAULT_SERVER
    assert settings.token is None


def test_settings_precedence(tmp_path: Path) -> None:
    """Flag beats environment beats config file."""
    env = write_config(tmp_path, 'server = "http://file:1"\ntoken = "file-token"\n')
    assert resolve(None, None, env).server == "http://file:1"
    assert resolve(None, None, env).token == "file-token"
    env |= {"CORRAL_SERVER": "http://env:2", "CORRAL_TOKEN": "env-token"}
    assert resolve(None, None, env).server == "http://env:2"
    assert resolve(None, None, env).token == "env-token"
    flagged = resolve("http://flag:3/", "flag-token", env)
    assert (flagged.server, flagged.token) == ("http://flag:3", "flag-token")


def test_settings_mix_sources(tmp_path: Path) -> None:
    """Server and token are resolved independently."""
    env = write_config(tmp_path, 'token = "file-token"\n') | {"CORRAL_SERVER": "envhost:7070"}
    settings = resolve(None, None, env)
    assert settings.server == "http://envhost:7070"
    assert settings.token == "file-token"


def test_settings_default_config_location(tmp_path: Path) -> None:
    """Without CORRAL_CONFIG the file is ~/.config/corral/config.toml, optional."""
    (tmp_path / ".config" / "corral").mkdir(parents=True)
    (tmp_path / ".config" / "corral" / "config.toml").write_text('server = "http://home:9"\n')
    assert resolve(None, None, {"HOME": str(tmp_path)}).server == "http://home:9"


def test_settings_errors(tmp_path: Path) -> None:
    """A named config file must exist and hold valid TOML with string values."""
    with pytest.raises(SettingsError, match="does not exist"):
        resolve(None, None, {"CORRAL_CONFIG": str(tmp_path / "missing.toml")})
    with pytest.raises(SettingsError, match="not valid TOML"):
        resolve(None, None, write_config(tmp_path, "server = \n"))
    with pytest.raises(SettingsError, match="server must be a string"):
        resolve(None, None, write_config(tmp_path, "server = 7070\n"))


def test_settings_skip_config_when_flags_suffice(tmp_path: Path) -> None:
    """A broken config file does not matter when flags give everything."""
    env = write_config(tmp_path, "not toml [[[")
    assert resolve("http://x:1", "t", env).server == "http://x:1"


# --- errors and paths ----------------------------------------------------------------------


def test_api_error_text() -> None:
    """Server errors print as kubectl's `Error from server (Reason): message`, then causes."""
    error = ApiError.from_response(
        422,
        b'{"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,'
        b' "reason": "Invalid", "message": "Pod \\"web\\" is invalid",'
        b' "details": {"causes": [{"field": "spec.containers[0].image",'
        b' "message": "Required value"}]}}',
    )
    assert error.code == 422
    assert api_error_text(error).splitlines() == [
        'Error from server (Invalid): Pod "web" is invalid',
        "  spec.containers[0].image: Required value",
    ]


def test_api_error_from_non_status_body() -> None:
    """A body that is not a Status (a proxy's page) still gives a readable error."""
    error = ApiError.from_response(502, b"<html>Bad Gateway</html>\n")
    assert error.reason == "BadGateway"
    assert api_error_text(error) == "Error from server (BadGateway): <html>Bad Gateway</html>"


def test_api_error_from_status_with_unknown_fields() -> None:
    """A Status carrying fields this client does not model still shows its reason and message."""
    error = ApiError.from_response(
        409, b'{"kind": "Status", "reason": "Conflict", "message": "changed", "retryAfter": 1}'
    )
    assert api_error_text(error) == "Error from server (Conflict): changed"


def test_paths_quote_names() -> None:
    """Namespaces and names are path segments; all namespaces use the cluster-wide path."""
    assert pods_path(None) == "/api/v1/pods"
    assert pods_path("default", "web") == "/api/v1/namespaces/default/pods/web"
    assert pods_path("a/b") == "/api/v1/namespaces/a%2Fb/pods"


# --- manifests -----------------------------------------------------------------------------

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: {app: web}
spec:
  containers:
  - name: app
    image: nginx
    resources:
      requests: {cpu: 250m, memory: 64Mi}
"""


def test_read_pods_fills_namespace(tmp_path: Path) -> None:
    """Pods without a namespace go to -n, or to default."""
    path = tmp_path / "web.yaml"
    path.write_text(POD_YAML + "---\n" + POD_YAML.replace("web", "api"))
    pods = read_pods([str(path)], None)
    assert [(p.name, p.namespace) for p in pods] == [("web", "default"), ("api", "default")]
    assert read_pods([str(path)], "prod")[0].body()["metadata"]["namespace"] == "prod"
    assert "status" not in pods[0].body()


def test_read_pods_reports_field_path(tmp_path: Path) -> None:
    """A bad manifest is refused locally, naming the file and the field."""
    path = tmp_path / "bad.yaml"
    path.write_text(POD_YAML.replace("    image: nginx\n", ""))
    with pytest.raises(ManifestProblem) as info:
        read_pods([str(path)], None)
    assert str(path) in str(info.value)
    assert "spec.containers[0].image: Required value" in str(info.value)


def test_read_pods_refuses_namespace_mismatch_and_nodes(tmp_path: Path) -> None:
    """A manifest namespace that contradicts -n, or a Node, is refused before sending."""
    path = tmp_path / "web.yaml"
    path.write_text(POD_YAML.replace("  name: web\n", "  name: web\n  namespace: a\n"))
    with pytest.raises(ManifestProblem, match="namespace 'a'"):
        read_pods([str(path)], "b")
    node = tmp_path / "node.yaml"
    node.write_text("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n")
    with pytest.raises(ManifestProblem, match="nodes cannot be applied"):
        read_pods([str(node)], None)
    with pytest.raises(ManifestProblem, match="no such file"):
        read_pods([str(tmp_path / "nope.yaml")], None)


def test_spec_changes(tmp_path: Path) -> None:
    """Equal specs differ in nothing (a bound nodeName is not a change); edits are named."""
    path = tmp_path / "web.yaml"
    path.write_text(POD_YAML)
    wanted = read_pods([str(path)], None)[0].body()["spec"]
    server: dict[str, Any] = {
        "containers": [
            {
                "name": "app",
                "image": "nginx",
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
            }
        ],
        "nodeName": "node-1",
    }
    assert spec_changes(wanted, server) == []
    server["containers"][0]["image"] = "nginx:2"
    server["restartPolicy"] = "Never"
    assert spec_changes(wanted, server) == ["spec.containers[0].image", "spec.restartPolicy"]


# --- describe and status -------------------------------------------------------------------


def test_describe_pod() -> None:
    """describe pod shows where it runs, its containers' states, resources and conditions."""
    pod = make_pod(
        statuses=[running(restarts=1, exitCode=137, reason="OOMKilled", finishedAt=ts(70))],
        status={
            "hostIP": "10.0.0.7",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": ts(60)}],
        },
    )
    pod["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "250m"},
        "limits": {"memory": "128Mi"},
    }
    text = describe_pod(pod, NOW)
    for line in [
        "Name: web",
        "Node: node-1/10.0.0.7",
        "Image: busybox",
        "State: Running",
        "Last State: Terminated",
        "Reason: OOMKilled",
        "Exit Code: 137",
        "Restart Count: 1",
        "memory: 128Mi",
        "cpu: 250m",
        "Ready True Wed, 01 May 2024 11:59:00 +0000",
    ]:
        assert has_line(text, line), line


def test_describe_pod_shows_the_runs_ids_as_kubectl() -> None:
    """Container ID and Image ID of a container with a status, as kubectl shows them (blank
    while it has not run); neither for a container that has no status yet."""
    status = running()
    status["containerID"] = "corral://" + "a" * 64
    status["imageID"] = "docker.io/library/busybox@sha256:" + "b" * 64
    text = describe_pod(make_pod(statuses=[status]), NOW)
    assert has_line(text, f"Container ID: corral://{'a' * 64}")
    assert has_line(text, f"Image ID: docker.io/library/busybox@sha256:{'b' * 64}")
    waiting = {"name": "c0", "state": {"waiting": {"reason": "ContainerCreating"}}, "imageID": ""}
    lines = [line.strip() for line in describe_pod(make_pod(statuses=[waiting]), NOW).split("\n")]
    assert "Container ID:" in lines and "Image ID:" in lines
    assert "Container ID" not in describe_pod(make_pod(phase="Pending"), NOW)


def has_line(text: str, words: str) -> bool:
    """Whether a line of `text` holds `words`, however the columns are padded."""
    return any(words in " ".join(line.split()) for line in text.splitlines())


def test_describe_node_lists_active_pods_with_requests() -> None:
    """describe node shows capacity, usage and the requests of pods that have not finished."""
    busy = make_pod("busy")
    busy["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "1", "memory": "1Gi"}}
    done = make_pod("done", phase="Succeeded")
    text = describe_node(make_node(unschedulable=True), [busy, done], NOW)
    assert has_line(text, "Unschedulable: true")
    assert has_line(text, "Non-terminated Pods: (1 in total)")
    assert has_line(text, "default busy 1 (25%) 1 (25%) 1.0Gi (12%) 1.0Gi (12%) 5m")
    assert "done" not in text
    assert has_line(text, "cpu: 1 (25%)")  # usage
    assert has_line(text, "cpu 1 (25%) 1 (25%)")  # allocated
    assert pod_resources(busy) == (1000, 1000, 2**30, 2**30)


def test_render_status_generic() -> None:
    """The status summary renders nested objects as aligned sections; bytes are humanized."""
    text = render_status(
        {
            "nodes": {"Ready": 2, "NotReady": 1},
            "pendingPods": 4,
            "memory": {"capacity": 8 * 2**30, "requested": 2**30},
            "recentErrors": [{"time": "t", "message": "boom"}],
            "empty": [],
        }
    )
    assert text.splitlines() == [
        "Nodes:",
        "  Ready:     2",
        "  NotReady:  1",
        "Pending pods:  4",
        "Memory:",
        "  Capacity:   8.0Gi",
        "  Requested:  1.0Gi",
        "Recent errors:",
        "  - time=t, message=boom",
        "Empty:         <none>",
    ]
    assert title("pendingQueueLength") == "Pending queue length"


def test_render_status_units() -> None:
    """Keys naming millicores or bytes print their numbers as quantities, without the unit word."""
    text = render_status({"resources": {"cpuMillicores": {"used": 12000}, "memoryBytes": 2**30}})
    assert text.splitlines() == [
        "Resources:",
        "  CPU:",
        "    Used:  12",
        "  Memory:  1.0Gi",
    ]


def test_describe_events_oldest_first_ties_in_the_servers_order() -> None:
    """The Events block sorts by lastTimestamp as kubectl describe does, and keeps the
    server's order (the recording order) among events of the same second."""
    now = datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)

    def event(reason: str, second: int) -> dict[str, Any]:
        stamp = f"2026-01-01T12:00:{second:02d}Z"
        return {"type": "Normal", "reason": reason, "lastTimestamp": stamp, "message": reason}

    given = [event("Started", 5), event("Pulled", 5), event("Scheduled", 1), event("Created", 5)]
    given.insert(2, {"type": "Normal", "reason": "Undated", "message": "no time"})
    shown = printers.events_section(given, now).splitlines()[2:]
    assert [line.split()[1] for line in shown] == [
        "Undated", "Scheduled", "Started", "Pulled", "Created",
    ]  # fmt: skip
