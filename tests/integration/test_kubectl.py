"""kubectl pointed at the real scheduler (over https, as kubectl sends a token only there)
with two hollow nodes: the commands people type every day work against corral.

Whatever kubectl is on PATH: CI installs Debian's (1.20) where the machine has none, and
these tests must then run, not skip. Old and new kubectl differ (1.20 validates with
OpenAPI v2, which corral does not serve), so `apply` here says `--validate=false`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from tests.conftest import ADMIN_TOKEN, HollowProcess, wait_for
from tests.integration.test_tls import make_pki, tls_scheduler

KUBECTL = shutil.which("kubectl")

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: hello, labels: {app: hello}}
spec:
  containers:
  - {name: app, image: busybox, command: [sh, -c, "echo hi; sleep 1000"]}
"""

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: busybox
        resources: {requests: {cpu: 100m, memory: 64Mi}}
"""


class Kubectl:
    def __init__(self, kubeconfig: Path, workdir: Path) -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        assert KUBECTL is not None
        return subprocess.run(
            [KUBECTL, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=self.workdir,
            # No cache of discovery between tests' servers; no proxy from the environment.
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig), "HOME": str(self.workdir)},
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    def json(self, *args: str) -> dict[str, object]:
        out: dict[str, object] = json.loads(self.ok(*args, "-o", "json"))
        return out


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    if KUBECTL is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubectl is not installed, and CI must run these tests (.ci/run)")
        pytest.skip("kubectl is not installed")
    root = tmp_path_factory.mktemp("kubectl")
    pki = make_pki(root / "pki")
    sched = tls_scheduler(root / "scheduler", pki)
    hollow = HollowProcess(sched, 2, env={"SSL_CERT_FILE": str(pki / "ca.crt")})
    try:
        kubeconfig = root / "kubeconfig"
        kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "corral",
                            "cluster": {
                                "server": sched.url,
                                "certificate-authority": str(pki / "ca.crt"),
                            },
                        }
                    ],
                    "users": [{"name": "admin", "user": {"token": ADMIN_TOKEN}}],
                    "contexts": [
                        {
                            "name": "corral",
                            "context": {
                                "cluster": "corral",
                                "user": "admin",
                                "namespace": "default",
                            },
                        }
                    ],
                    "current-context": "corral",
                }
            )
        )
        k = Kubectl(kubeconfig, root)
        wait_for(lambda: len(ready(k)) == 2, timeout=20)
        yield k
    finally:
        hollow.stop()
        sched.stop()


def ready(k: Kubectl) -> list[str]:
    nodes = k.json("get", "nodes")["items"]
    assert isinstance(nodes, list)
    return [
        n["metadata"]["name"]
        for n in nodes
        if any(c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"])
    ]


def test_version_and_discovery(kubectl: Kubectl) -> None:
    version = json.loads(kubectl.ok("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"].startswith("v1.30.0-corral.")
    resources = kubectl.ok("api-resources")
    for name in ("pods", "nodes", "namespaces", "deployments", "jobs", "events"):
        assert f"\n{name} " in resources, resources


def test_pod_applied_described_logged_and_deleted(kubectl: Kubectl) -> None:
    assert "pod/hello created" in kubectl.ok("apply", "--validate=false", "-f", "-", stdin=POD)
    path = "jsonpath={.status.phase}"
    wait_for(lambda: kubectl.ok("get", "pod", "hello", "-o", path) == "Running")
    described = kubectl.ok("describe", "pod", "hello")
    assert "Node:         hollow-" in described and "Scheduled" in described, described
    assert kubectl.ok("logs", "hello") == "hollow pod hello: app started\n"
    assert "unchanged" in kubectl.ok("apply", "--validate=false", "-f", "-", stdin=POD)
    assert "pod/hello labeled" in kubectl.ok("label", "pod", "hello", "tier=front")
    assert kubectl.ok("get", "pods", "-l", "tier=front", "-o", "name") == "pod/hello\n"
    assert 'pod "hello" deleted' in kubectl.ok("delete", "pod", "hello", "--grace-period=0")
    wait_for(lambda: "No resources found" in kubectl("get", "pods").stderr)


def columns(text: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in text.splitlines()]


def test_get_prints_kubernetes_columns(kubectl: Kubectl) -> None:
    """The server's Tables: READY STATUS RESTARTS, -o wide's IP NODE..., -A's NAMESPACE."""
    kubectl.ok("apply", "--validate=false", "-f", "-", stdin=POD.replace("hello", "cols"))
    path = "jsonpath={.status.phase}"
    wait_for(lambda: kubectl.ok("get", "pod", "cols", "-o", path) == "Running")
    header, row = columns(kubectl.ok("get", "pods", "-l", "app=cols"))
    assert header == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row[:4] == ["cols", "1/1", "Running", "0"] and re.fullmatch(r"\d+s", row[4]), row
    wide = columns(kubectl.ok("get", "pods", "-l", "app=cols", "-o", "wide"))
    assert wide[0][-4:] == ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]
    assert wide[1][-3].startswith("hollow-"), wide
    assert columns(kubectl.ok("get", "pods", "-A", "-l", "app=cols"))[0][:2] == [
        "NAMESPACE",
        "NAME",
    ]
    assert columns(kubectl.ok("get", "namespaces"))[0] == ["NAME", "STATUS", "AGE"]
    assert columns(kubectl.ok("get", "nodes"))[0] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    kubectl.ok("delete", "pod", "cols", "--grace-period=0")


def test_deployment_scaled_and_nodes_cordoned(kubectl: Kubectl) -> None:
    out = kubectl.ok("apply", "--validate=false", "-f", "-", stdin=DEPLOYMENT)
    assert "deployment.apps/web created" in out
    assert "deployment.apps/web scaled" in kubectl.ok("scale", "deployment", "web", "--replicas=3")
    path = "jsonpath={.status.availableReplicas}"
    wait_for(lambda: kubectl.ok("get", "deployment", "web", "-o", path) == "3", timeout=20)
    assert len(kubectl.json("get", "pods", "-l", "app=web")["items"]) == 3  # type: ignore[arg-type]
    node = ready(kubectl)[0]
    assert f"node/{node} cordoned" in kubectl.ok("cordon", node)
    assert kubectl.ok("get", "node", node, "-o", "jsonpath={.spec.unschedulable}") == "true"
    assert f"node/{node} uncordoned" in kubectl.ok("uncordon", node)
    everything = kubectl.ok("get", "all", "-o", "name")  # the `all` category
    assert "deployment.apps/web" in everything and everything.count("pod/web-") == 3
    top = kubectl.ok("top", "nodes")
    assert node in top and "CPU" in top, top
    # Foreground: kubectl waits for the Deployment to go, which it does after its pods.
    out = kubectl.ok("delete", "deployment", "web", "--cascade=foreground")
    assert 'deployment.apps "web" deleted' in out
    assert kubectl.json("get", "pods", "-l", "app=web")["items"] == []
    # Orphan: kubectl waits for it to go too, which it does once its pod is freed of it.
    kept = DEPLOYMENT.replace("web", "kept")
    assert "deployment.apps/kept created" in kubectl.ok(
        "apply", "--validate=false", "-f", "-", stdin=kept
    )
    wait_for(lambda: len(kubectl.json("get", "pods", "-l", "app=kept")["items"]) == 1)  # type: ignore[arg-type]
    out = kubectl.ok("delete", "deployment", "kept", "--cascade=orphan")
    assert 'deployment.apps "kept" deleted' in out
    assert kubectl("get", "deployment", "kept").returncode != 0  # waited until it was gone
    [pod] = cast(list[dict[str, Any]], kubectl.json("get", "pods", "-l", "app=kept")["items"])
    assert "ownerReferences" not in pod["metadata"] and "deletionTimestamp" not in pod["metadata"]
    kubectl.ok("delete", "pod", pod["metadata"]["name"], "--grace-period=0", "--force")


def test_apply_with_kubectls_own_validation(kubectl: Kubectl) -> None:
    """Without `--validate=false`: kubectl 1.29 and later find in /openapi/v3 that the
    server validates (`fieldValidation`) and leave it to corral, whose 422 names an unknown
    field; older ones look for OpenAPI v2, which corral does not serve, and fail before
    sending anything (docs/api.md)."""
    version = json.loads(kubectl.ok("version", "-o", "json"))["clientVersion"]
    minor = int(version["minor"].rstrip("+"))
    pod = POD.replace("hello", "checked")
    result = kubectl("apply", "-f", "-", stdin=pod)
    if minor >= 29:
        assert result.returncode == 0 and "pod/checked created" in result.stdout, result
        bad = pod.replace("name: checked", "name: unknown").replace(
            "image: busybox,", "image: busybox, bogusField: 1,"
        )
        refused = kubectl("apply", "-f", "-", stdin=bad)
        assert refused.returncode == 1 and "spec.containers[0].bogusField" in refused.stderr
        kubectl.ok("delete", "pod", "checked", "--grace-period=0")
    else:
        assert result.returncode == 1 and "could not find the requested resource" in result.stderr


def test_kubectl_run_starts_pods(kubectl: Kubectl) -> None:
    """`kubectl run` sends `dnsPolicy: ClusterFirst` (and `restartPolicy`, `resources: {}`,
    `status: {}`...) whatever the flags: its pods are created and run, with the labels,
    command, environment and ports it was given, and the policy is returned."""
    assert "pod/run-plain created" in kubectl.ok("run", "run-plain", "--image=busybox")
    out = kubectl.ok(
        "run",
        "run-once",
        "--image=busybox",
        "--restart=Never",
        "--labels=app=once,tier=batch",
        "--env=GREETING=hello",
        "--env=COUNT=3",
        "--port=8080",
        "--command",
        "--",
        "sh",
        "-c",
        "echo $GREETING; sleep 1000",
    )
    assert "pod/run-once created" in out
    phases = ["get", "pods", "run-plain", "run-once", "-o", "jsonpath={.items[*].status.phase}"]
    wait_for(lambda: kubectl.ok(*phases) == "Running Running")
    plain = cast(dict[str, Any], kubectl.json("get", "pod", "run-plain"))
    assert plain["metadata"]["labels"] == {"run": "run-plain"}
    assert plain["spec"]["dnsPolicy"] == "ClusterFirst"
    assert plain["spec"]["restartPolicy"] == "Always"
    once = cast(dict[str, Any], kubectl.json("get", "pod", "run-once"))
    [container] = once["spec"]["containers"]
    assert once["metadata"]["labels"] == {"app": "once", "tier": "batch"}
    assert once["spec"]["restartPolicy"] == "Never"
    assert container["command"] == ["sh", "-c", "echo $GREETING; sleep 1000"]
    assert container["env"] == [
        {"name": "GREETING", "value": "hello"},
        {"name": "COUNT", "value": "3"},
    ]
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    for name in ("run-plain", "run-once"):
        kubectl.ok("delete", "pod", name, "--grace-period=0", "--force")


SUFFIX = "[bcdfghjklmnpqrstvwxz2456789]{5}"  # Kubernetes' alphabet of generated names
GENERATED = """\
apiVersion: v1
kind: Pod
metadata: {generateName: gen-, labels: {app: gen}}
spec:
  dnsPolicy: Default
  containers:
  - {name: app, image: busybox}
---
apiVersion: apps/v1
kind: Deployment
metadata: {generateName: gendeploy-}
spec:
  replicas: 1
  selector: {matchLabels: {app: gendeploy}}
  template:
    metadata: {labels: {app: gendeploy}}
    spec:
      containers:
      - {name: app, image: busybox}
"""


def test_create_names_objects_from_their_generate_name(kubectl: Kubectl) -> None:
    """`kubectl create -f` of a manifest with generateName and no name (which `apply`
    refuses): each create makes new objects, named by the server; the pods run.
    (`--validate=false`: kubectl before 1.29 validates with OpenAPI v2, as for `apply`.)"""
    names: list[str] = []
    for _ in range(2):
        out = kubectl.ok("create", "--validate=false", "-f", "-", "-o", "name", stdin=GENERATED)
        pod, deployment = out.split()
        assert re.fullmatch(rf"pod/gen-{SUFFIX}", pod), out
        assert re.fullmatch(rf"deployment.apps/gendeploy-{SUFFIX}", deployment), out
        names += [pod, deployment]
    assert len(set(names)) == 4, names
    pods = cast(list[dict[str, Any]], kubectl.json("get", "pods", "-l", "app=gen")["items"])
    assert sorted(p["metadata"]["name"] for p in pods) == sorted(
        n.removeprefix("pod/") for n in names if n.startswith("pod/")
    )
    assert {p["metadata"]["generateName"] for p in pods} == {"gen-"}
    assert {p["spec"]["dnsPolicy"] for p in pods} == {"Default"}

    def running() -> bool:
        listed = kubectl.json("get", "pods", "-l", "app in (gen,gendeploy)")["items"]
        phases = [p["status"]["phase"] for p in cast(list[dict[str, Any]], listed)]
        return phases == ["Running"] * 4

    wait_for(running, timeout=20)
    for name in names:
        kubectl.ok("delete", name, "--grace-period=0", "--force")


def test_errors_are_shown_as_the_server_says(kubectl: Kubectl) -> None:
    bad = POD.replace("name: hello", "name: bad").replace(
        "image: busybox,", "image: busybox, securityContext: {privileged: true},"
    )
    result = kubectl("apply", "--validate=false", "-f", "-", stdin=bad)
    assert result.returncode == 1
    assert "spec.containers[0].securityContext" in result.stderr, result.stderr
    missing = kubectl("get", "pod", "nosuch")
    assert missing.returncode == 1 and 'pods "nosuch" not found' in missing.stderr


def test_replace_and_what_kubectl_shows_as_kubernetes_serves_it(kubectl: Kubectl) -> None:
    """`kubectl replace` of a node (PUT) changes its labels and cordons it; a namespace
    shows `spec.finalizers: [kubernetes]`; a pod replaced without the `dnsPolicy` it was
    created with is no spec change (ClusterFirst is the default); `kubectl get events`
    in chunks (`limit`, `continue`) shows every event."""
    node = ready(kubectl)[0]
    manifest = json.loads(kubectl.ok("get", "node", node, "-o", "json"))
    manifest["metadata"]["labels"]["tier"] = "gold"
    manifest["spec"]["unschedulable"] = True
    out = kubectl.ok("replace", "-f", "-", stdin=json.dumps(manifest))
    assert f"node/{node} replaced" in out
    assert kubectl.ok("get", "node", node, "-o", "jsonpath={.metadata.labels.tier}") == "gold"
    assert f"node/{node} uncordoned" in kubectl.ok("uncordon", node)
    stale = kubectl("replace", "-f", "-", stdin=json.dumps(manifest))  # its version is gone
    assert stale.returncode == 1 and "the object has been modified" in stale.stderr
    finalizers = kubectl.ok("get", "namespace", "default", "-o", "jsonpath={.spec.finalizers}")
    assert json.loads(finalizers) == ["kubernetes"]
    with_policy = POD.replace("hello", "replaced").replace(
        "spec:\n", "spec:\n  dnsPolicy: ClusterFirst\n"
    )
    assert "pod/replaced created" in kubectl.ok("create", "-f", "-", stdin=with_policy)
    relabelled = POD.replace("hello", "replaced").replace("{app: replaced}", "{app: other}")
    assert "pod/replaced replaced" in kubectl.ok("replace", "-f", "-", stdin=relabelled)
    assert kubectl.ok("get", "pod", "replaced", "-o", "jsonpath={.metadata.labels.app}") == "other"
    # Scheduled events are written once: the list holds still while it is read in chunks.
    scheduled = ("get", "events", "-A", "--field-selector=reason=Scheduled", "-o", "name")
    wait_for(lambda: "replaced" in kubectl.ok(*scheduled, "--chunk-size=0"))
    kubectl.ok("delete", "pod", "replaced", "--grace-period=0", "--force")
    whole = kubectl.ok(*scheduled, "--chunk-size=0").split()
    assert kubectl.ok(*scheduled, "--chunk-size=1").split() == whole


def test_set_image_on_a_pod_restarts_its_container_with_it(kubectl: Kubectl) -> None:
    """`kubectl set image pod/NAME c=IMAGE` (a strategic merge patch of the image) is
    taken, as kube-apiserver takes it; the pod's (hollow) node reports the container run
    again under the new image. Any other change of the spec is refused with the server's
    word on what may change."""
    kubectl.ok("apply", "--validate=false", "-f", "-", stdin=POD.replace("hello", "imaged"))
    path = "jsonpath={.status.phase}"
    wait_for(lambda: kubectl.ok("get", "pod", "imaged", "-o", path) == "Running")
    assert "pod/imaged image updated" in kubectl.ok("set", "image", "pod/imaged", "app=busybox:2")
    spec_image = "jsonpath={.spec.containers[0].image}"
    assert kubectl.ok("get", "pod", "imaged", "-o", spec_image) == "busybox:2"
    shown = (
        "jsonpath={.status.containerStatuses[0].image} {.status.containerStatuses[0].restartCount}"
    )
    wait_for(lambda: kubectl.ok("get", "pod", "imaged", "-o", shown) == "busybox:2 1")
    refused = kubectl("set", "env", "pod/imaged", "A=1")
    assert refused.returncode == 1
    assert "pod updates may not change fields other than `spec.containers[*].image`" in (
        refused.stderr
    ), refused.stderr
    kubectl.ok("delete", "pod", "imaged", "--grace-period=0", "--force")


def client_minor(kubectl: Kubectl) -> int:
    version = json.loads(kubectl.ok("version", "-o", "json"))["clientVersion"]
    return int(version["minor"].rstrip("+"))


def took_off(drain_output: str, pod: str, evicts: bool) -> bool:
    """kubectl's word that `pod` went: evicted (pods/eviction) where it evicts, deleted
    where it does not (kubectl before 1.22 looks for the policy group in `/apis`, which
    corral does not list: scheduler/api/discovery.py)."""
    if evicts:
        return (
            f"evicting pod default/{pod}" in drain_output and f"pod/{pod} evicted" in drain_output
        )
    return f"pod/{pod} deleted" in drain_output


def finished(drain_output: str, node: str) -> bool:
    """kubectl's last word on a drain: `drained`; kubectl 1.20 says there what it did to
    the pods (`evicted` or `deleted`), not to the node."""
    return any(
        f"node/{node} {word}\n" in drain_output for word in ("drained", "evicted", "deleted")
    )


def test_drain_evicts_pods_and_refuses_unmanaged_ones_without_force(kubectl: Kubectl) -> None:
    """`kubectl drain` cordons the node, lists its pods (`spec.nodeName` field selector),
    evicts them (pods/eviction, found in `/api/v1`'s discovery; kubectl 1.20 deletes them
    instead) and waits until they are gone. A pod no controller owns stops a plain drain,
    as kubectl says; `--force` takes it too. A Deployment's pods come back on the other
    node."""
    evicts = client_minor(kubectl) >= 22
    deployment = DEPLOYMENT.replace("web", "drained").replace("replicas: 1", "replicas: 2")
    kubectl.ok("apply", "--validate=false", "-f", "-", stdin=deployment)
    kubectl.ok("apply", "--validate=false", "-f", "-", stdin=POD.replace("hello", "loner"))

    def phases(selector: str) -> list[tuple[str, str, str]]:
        listed = kubectl.json("get", "pods", "-l", selector)["items"]
        return sorted(
            (p["metadata"]["name"], p["status"]["phase"], p["spec"].get("nodeName", ""))
            for p in cast(list[dict[str, Any]], listed)
        )

    wait_for(lambda: [p[1] for p in phases("app in (drained,loner)")] == ["Running"] * 3)
    node = kubectl.ok("get", "pod", "loner", "-o", "jsonpath={.spec.nodeName}")
    [other] = [n for n in ready(kubectl) if n != node]
    refused = kubectl("drain", node, "--timeout=50s")
    assert refused.returncode == 1, refused
    assert "default/loner" in refused.stderr and "--force" in refused.stderr, refused.stderr
    assert kubectl.ok("get", "node", node, "-o", "jsonpath={.spec.unschedulable}") == "true"
    assert "loner" in kubectl.ok("get", "pods", "--field-selector", f"spec.nodeName={node}")

    out = kubectl.ok(
        "drain",
        node,
        "--ignore-daemonsets",
        "--delete-emptydir-data",
        "--force",
        "--timeout=50s",
    )
    assert took_off(out, "loner", evicts) and finished(out, node), out
    assert kubectl("get", "pod", "loner").returncode == 1  # waited for until gone
    on_node = kubectl.ok("get", "pods", "--field-selector", f"spec.nodeName={node}", "-o", "name")
    assert on_node == "", on_node

    def moved() -> bool:
        return [(p[1], p[2]) for p in phases("app=drained")] == [("Running", other)] * 2

    wait_for(moved, timeout=20)
    # A plain drain of a node whose pods a controller owns: evicted, and back on the first.
    kubectl.ok("uncordon", node)
    names = [p[0] for p in phases("app=drained")]
    out = kubectl.ok("drain", other, "--timeout=50s")
    assert all(took_off(out, name, evicts) for name in names) and finished(out, other), out
    wait_for(lambda: [(p[1], p[2]) for p in phases("app=drained")] == [("Running", node)] * 2)
    kubectl.ok("uncordon", other)
    kubectl.ok("delete", "deployment", "drained")
