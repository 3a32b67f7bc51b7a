"""The workload side of `corral`, without a server: kinds, tables, rollout states, apply's
comparison, log targets, the progress line and the completion script."""

from __future__ import annotations

import io
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.cli import completion, kinds, tables
from scheduler.cli.apply import apply_one, read_objects
from scheduler.cli.client import ApiError
from scheduler.cli.errors import CommandError
from scheduler.cli.main import build_parser
from scheduler.cli.manifests import ManifestProblem
from scheduler.cli.rollout import Progress, deployment_state, job_state, pod_state, wait_seconds
from scheduler.cli.verbs import resolve_log_target
from scheduler.printing import cells
from tests.unit.test_workload_models import TUTORIAL

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def deployment(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "web", "generation": 2, "creationTimestamp": ts(90)},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1"}]}},
        },
        "status": {"observedGeneration": 2, **status},
    }


def test_kinds_accept_kubectl_spellings() -> None:
    """Short names, plurals and group-qualified names; paths per API group."""
    assert kinds.lookup("deploy") is kinds.DEPLOYMENTS
    assert kinds.lookup("deployments.apps") is kinds.DEPLOYMENTS
    assert kinds.lookup("ns") is kinds.NAMESPACES
    assert kinds.split_ref("job/pi") == (kinds.JOBS, "pi")
    assert kinds.DEPLOYMENTS.path("a", "web") == "/apis/apps/v1/namespaces/a/deployments/web"
    assert kinds.JOBS.path(None) == "/apis/batch/v1/jobs"
    assert kinds.NAMESPACES.path("ignored", "x") == "/api/v1/namespaces/x"
    assert kinds.DEPLOYMENTS.ref("web") == "deployment.apps/web"
    with pytest.raises(CommandError, match="widgets"):
        kinds.lookup("widgets")


def test_tables_in_kubectl_shapes() -> None:
    """Deployments: READY UP-TO-DATE AVAILABLE; jobs: STATUS COMPLETIONS DURATION."""
    d = deployment(readyReplicas=2, updatedReplicas=3, availableReplicas=2)
    text = tables.deployments_table([d], NOW, wide=True)
    assert text.splitlines()[0].split() == [
        "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"
    ]  # fmt: skip
    assert text.splitlines()[1].split() == [
        "web",
        "2/3",
        "3",
        "2",
        "90s",
        "nginx",
        "nginx:1",
        "app=web",
    ]
    job = {
        "metadata": {"name": "pi", "creationTimestamp": ts(60)},
        "spec": {"completions": 3},
        "status": {
            "succeeded": 3,
            "startTime": ts(50),
            "completionTime": ts(20),
            "conditions": [{"type": "Complete", "status": "True"}],
        },
    }
    assert tables.jobs_table([job], NOW).splitlines()[1].split() == [
        "pi",
        "Complete",
        "3/3",
        "30s",
        "60s",
    ]
    queue = {"metadata": {"name": "q"}, "spec": {"parallelism": 4}, "status": {}}
    assert cells.job_completions(queue) == "0/1 of 4"
    revs = [{"revision": 2, "metadata": {"annotations": {"kubernetes.io/change-cause": "v2"}}}]
    assert tables.history_table(revs).splitlines()[1].split() == ["2", "v2"]


def test_top_tables() -> None:
    """CPU in millicores and memory in Mi, with percentages of what nodes allocate."""
    metrics = [{"metadata": {"name": "n1"}, "usage": {"cpu": "500m", "memory": "1048576Ki"}}]
    nodes = {"n1": {"status": {"allocatable": {"cpu": "2", "memory": "4Gi"}}}}
    assert tables.top_nodes_table(metrics, nodes).splitlines()[1].split() == [
        "n1", "500m", "25%", "1024Mi", "25%"
    ]  # fmt: skip
    pods = [
        {
            "metadata": {"name": "p", "namespace": "a"},
            "containers": [{"usage": {"cpu": "3m", "memory": "2Mi"}}],
        }
    ]
    assert tables.top_pods_table(pods, namespaces=True).splitlines()[1].split() == [
        "a",
        "p",
        "3m",
        "2Mi",
    ]


def test_rollout_states_use_kubectls_words() -> None:
    """Each stage of a rollout, done, and a missed progress deadline."""
    assert deployment_state({**deployment(), "status": {"observedGeneration": 1}})[1] == (
        "Waiting for deployment spec update to be observed..."
    )
    assert deployment_state(deployment(updatedReplicas=1, replicas=4))[1].endswith(
        "1 out of 3 new replicas have been updated..."
    )
    assert deployment_state(deployment(updatedReplicas=3, replicas=4))[1].endswith(
        "1 old replicas are pending termination..."
    )
    assert deployment_state(deployment(updatedReplicas=3, replicas=3, availableReplicas=2))[
        1
    ].endswith("2 of 3 updated replicas are available...")
    assert deployment_state(deployment(updatedReplicas=3, replicas=3, availableReplicas=3)) == (
        "done",
        'deployment "web" successfully rolled out',
    )
    stuck = deployment(conditions=[{"type": "Progressing", "reason": "ProgressDeadlineExceeded"}])
    assert deployment_state(stuck)[0] == "failed"
    failed = {"metadata": {"name": "pi"}, "status": {"conditions": [
        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "m"}
    ]}}  # fmt: skip
    assert job_state(failed) == ("failed", "job.batch/pi failed: BackoffLimitExceeded: m")
    running = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    assert pod_state(running) == ("done", "pod/p ready")


def test_progress_line_in_place_or_one_line_each() -> None:
    """A terminal gets one rewritten line; a pipe gets each new message once."""
    piped = io.StringIO()
    progress = Progress(piped)
    for message in ("a", "a", "b"):
        progress.show(message)
    progress.finish("done")
    assert piped.getvalue() == "a\nb\ndone\n"

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    progress = Progress(tty)
    progress.show("a")
    progress.finish("done")
    assert tty.getvalue() == "\r\x1b[Ka\r\x1b[Kdone\n"


def test_read_objects_every_kind_with_namespaces(tmp_path: Path) -> None:
    """Deployments, Jobs and Namespaces are read; -n fills namespaces; nodes are refused."""
    path = tmp_path / "app.yaml"
    path.write_text(TUTORIAL)
    found = read_objects([str(path)], "prod")
    assert [(m.ref, m.namespace) for m in found] == [
        ("deployment.apps/nginx-deployment", "prod"),
        ("job.batch/pi", "prod"),
        ("namespace/staging", None),
    ]
    path.write_text("apiVersion: v1\nkind: Node\nmetadata: {name: n}\n")
    with pytest.raises(ManifestProblem, match="nodes cannot be applied"):
        read_objects([str(path)], None)


class StubClient:
    """Answers GETs from a dict; records writes; POST of an existing object is 409."""

    def __init__(self, objects: dict[str, Any]) -> None:
        self.objects = objects
        self.writes: list[tuple[str, str, Any]] = []

    def get(self, path: str, **query: Any) -> Any:
        return self.objects[
            path + ("?" + query["labelSelector"] if query.get("labelSelector") else "")
        ]

    def post(self, path: str, body: Any) -> Any:
        from common.models import Status

        self.writes.append(("POST", path, body))
        raise ApiError(Status(code=409, reason="AlreadyExists", message="exists"))

    def put(self, path: str, body: Any) -> Any:
        self.writes.append(("PUT", path, body))
        return body


def test_apply_compares_with_defaults_and_keeps_scaled_replicas(tmp_path: Path) -> None:
    """The live object (server defaults, revision annotation, scaled replicas) is
    `unchanged` against a manifest without replicas; an image change is `configured`."""
    path = tmp_path / "d.yaml"
    path.write_text(TUTORIAL.split("---")[0].replace("  replicas: 3\n", ""))
    item = read_objects([str(path)], None)[0]
    live = item.body()
    live["spec"]["replicas"] = 7  # scaled by hand
    live["metadata"]["annotations"] = {"deployment.kubernetes.io/revision": "2"}
    live["metadata"]["resourceVersion"] = "42"
    live["status"] = {"replicas": 7}
    client = StubClient({item.res.path("default", item.name): live})
    verb, _ = apply_one(client, item)  # type: ignore[arg-type]
    assert verb == "unchanged" and [w[0] for w in client.writes] == ["POST"]
    path.write_text(path.read_text().replace("nginx:1.14.2", "nginx:1.16"))
    item = read_objects([str(path)], None)[0]
    verb, body = apply_one(client, item)  # type: ignore[arg-type]
    assert verb == "configured"
    assert body["spec"]["replicas"] == 7 and body["metadata"]["resourceVersion"] == "42"
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.16"


def test_logs_of_a_deployment_pick_a_ready_pod(capsys: pytest.CaptureFixture[str]) -> None:
    """`logs deploy/web` reads the oldest running, ready pod of the deployment."""
    import argparse

    def pod(name: str, ready: bool, created: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [{"name": "c"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "c", "ready": ready, "state": {"running": {}}}],
            },
        }

    client = StubClient(
        {
            "/apis/apps/v1/namespaces/default/deployments/web": deployment(),
            "/api/v1/namespaces/default/pods?app=web": {
                "items": [pod("b", True, ts(10)), pod("a", False, ts(50)), pod("c", True, ts(30))]
            },
        }
    )
    args = argparse.Namespace(pod="deploy/web", namespace=None)
    assert resolve_log_target(client, args) == "c"  # type: ignore[arg-type]
    assert "Found 3 pods, using pod/c" in capsys.readouterr().err
    assert resolve_log_target(client, argparse.Namespace(pod="pod/x", namespace=None)) == "x"  # type: ignore[arg-type]


def test_completion_scripts_parse() -> None:
    """The bash script is valid bash and completes commands, resources and names."""
    flags = completion.flags_by_command(build_parser())
    script = completion.script("bash", flags)
    assert "complete -F _corral corral" in script and "deployments" in script
    assert "rollout" in script and "@COMMANDS@" not in script and "@FLAGS@" not in script
    assert completion.script("zsh", flags).startswith("# corral zsh completion")
    bash = shutil.which("bash")
    if bash:
        subprocess.run([bash, "-n"], input=script, text=True, check=True)


def test_describe_pod_names_its_controller() -> None:
    """A controller's pod says who controls it, as kubectl's `Controlled By`."""
    from scheduler.cli.describe import describe_pod

    pod = {
        "metadata": {
            "name": "web-abc-x",
            "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}],
        },
        "spec": {"containers": []},
        "status": {},
    }
    lines = [" ".join(line.split()) for line in describe_pod(pod, NOW).splitlines()]
    assert "Controlled By: Deployment/web" in lines


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("1.5", 1.5), ("5m", 300.0), ("1h", 3600.0), ("0", None)],
)
def test_wait_timeout_takes_seconds_and_kubectl_durations(
    given: str, seconds: float | None
) -> None:
    assert wait_seconds(given) == seconds


@pytest.mark.parametrize("given", ["soon", "5x", "", "nan", "inf", "-1"])
def test_wait_timeout_refuses_what_is_no_duration(
    given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--wait-timeout 5m` (kubectl's --timeout form) or a typo was argparse's "invalid
    wait_seconds value" (the name of a function), and `nan` was taken: a wait that never
    timed out. Each is a usage error that says what a duration is."""
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["apply", "-f", "-", "--wait", "--wait-timeout", given])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --wait-timeout: " in err and "wait_seconds" not in err, err
    assert "must be 0 (no limit) or more seconds" in err or "is not a number of seconds" in err
