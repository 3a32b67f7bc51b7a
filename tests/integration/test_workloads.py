"""Deployments, Jobs, namespaces, watch and usage through the real corral-scheduler process,
its HTTP API and the `corral` command, with hollow nodes running the pods.

One scheduler and one hollow process (4 nodes) serve the whole module; each test
works in its own namespace. The hollow nodes start a pod in 0.2 s, finish
OnFailure/Never pods after 0.3 s, and fail the first two runs of pods labelled
`flaky` (per value): what a Job that "fails twice then succeeds" needs.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import (
    ADMIN_TOKEN,
    SchedulerProcess,
    deployment_manifest,
    running_cluster,
    wait_for,
)
from tests.integration.test_cli import corral
from tests.integration.test_finalizers import job_manifest
from tests.unit.test_workload_models import TUTORIAL

pytestmark = pytest.mark.slow

HOLLOW = ["--cpu", "8", "--memory", "16Gi", "--start-delay", "0.2", "--complete-after", "0.3"]
FLAKY = ["--fail-first", "2", "--fail-first-key", "flaky"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    """A scheduler with four hollow nodes, shared by the module's tests."""
    state = tmp_path_factory.mktemp("workloads") / "scheduler"
    with running_cluster(state, 4, *HOLLOW, *FLAKY) as s:
        yield s


@pytest.fixture
def ns(cluster: SchedulerProcess) -> str:
    """A fresh namespace for one test."""
    name = f"t-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    resp = cluster.request("POST", "/api/v1/namespaces", body)
    assert resp.status == 201, resp.body
    return name


def deploy_path(ns: str, name: str = "") -> str:
    return f"/apis/apps/v1/namespaces/{ns}/deployments" + (f"/{name}" if name else "")


def pods(s: SchedulerProcess, ns: str, selector: str = "") -> list[dict[str, Any]]:
    query = f"?labelSelector={selector}" if selector else ""
    return s.get(f"/api/v1/namespaces/{ns}/pods{query}")["items"]


def is_ready(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


def rolled_out(s: SchedulerProcess, ns: str, name: str, replicas: int) -> dict[str, Any] | None:
    d = s.get(deploy_path(ns, name))
    st = d["status"]
    done = (
        st.get("observedGeneration") == d["metadata"]["generation"]
        and st.get("updatedReplicas")
        == st.get("availableReplicas")
        == st.get("replicas")
        == replicas
    )
    return d if done else None


class PodWatch:
    """Follows `?watch=true` on a namespace's pods in a thread, keeping the live picture and
    checking, after every event, the number of ready and of all non-terminating pods."""

    def __init__(self, s: SchedulerProcess, ns: str, since: str) -> None:
        url = f"{s.url}/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={since}"
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        self.response = urllib.request.urlopen(req, timeout=60)
        self.pods: dict[str, dict[str, Any]] = {}
        self.samples: list[tuple[int, int]] = []  # (ready, total) after each event
        self.types: set[str] = set()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed under it
            self._read()

    def _read(self) -> None:
        for line in self.response:
            event = json.loads(line)
            obj = event["object"]
            self.types.add(event["type"])
            name = obj["metadata"]["name"]
            if event["type"] == "DELETED" or obj["metadata"].get("deletionTimestamp"):
                self.pods.pop(name, None)
            else:
                self.pods[name] = obj
            live = list(self.pods.values())
            self.samples.append((sum(1 for p in live if is_ready(p)), len(live)))

    def close(self) -> None:
        close_stream(self.response)
        self.thread.join(5)


def close_stream(response: Any) -> None:
    """End a streamed response another thread is reading: shutting the socket down wakes
    the reader (closing alone would wait for its read to time out)."""
    with contextlib.suppress(AttributeError, OSError):
        response.fp.raw._sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError, ValueError):
        response.close()


def test_rolling_update_never_drops_below_min_available(cluster: SchedulerProcess, ns: str) -> None:
    """10 replicas, maxSurge 3, maxUnavailable 2, over hollow nodes: at every pod change
    there are at least 8 ready pods and at most 13 pods; it ends with 10 new ones."""
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 2}}
    body = deployment_manifest("web", 10, strategy=strategy)
    assert cluster.request("POST", deploy_path(ns), body).status == 201
    wait_for(lambda: rolled_out(cluster, ns, "web", 10), timeout=20)
    since = cluster.get(f"/api/v1/namespaces/{ns}/pods")["metadata"]["resourceVersion"]
    watch = PodWatch(cluster, ns, "0")  # ADDED for every pod first, then the changes
    wait_for(lambda: watch.samples and watch.samples[-1] == (10, 10))
    assert int(since) > 0
    start = len(watch.samples)  # from here on, the rollout
    current = cluster.get(deploy_path(ns, "web"))
    current["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    resp = cluster.request("PUT", deploy_path(ns, "web"), current)
    assert resp.status == 200, resp.body
    assert resp.json()["metadata"]["generation"] == 2
    done = wait_for(lambda: rolled_out(cluster, ns, "web", 10), timeout=30)
    wait_for(lambda: len(pods(cluster, ns)) == 10)
    watch.close()
    samples = watch.samples[start:]
    assert min(ready for ready, _ in samples) >= 8, samples
    assert max(total for _, total in samples) <= 13, samples
    assert len(samples) > 40  # the rollout was watched, not just its end
    assert {p["spec"]["containers"][0]["image"] for p in pods(cluster, ns)} == {"nginx:2"}
    assert done["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    progressing = next(c for c in done["status"]["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "NewReplicaSetAvailable"


def test_job_fails_twice_then_completes(cluster: SchedulerProcess, ns: str) -> None:
    """A Job whose pods fail twice (hollow failure injection) ends Complete within its
    backoffLimit, with the two failures counted; `corral get jobs` says Complete."""
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pi"},
        "spec": {
            "backoffLimit": 3,
            "template": {
                "metadata": {"labels": {"flaky": f"{ns}-pi"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "pi", "image": "perl", "command": ["perl"]}],
                },
            },
        },
    }
    resp = cluster.request("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", job)
    assert resp.status == 201, resp.body

    def complete() -> dict[str, Any] | None:
        got = cluster.get(f"/apis/batch/v1/namespaces/{ns}/jobs/pi")
        done = any(c["type"] == "Complete" for c in got["status"].get("conditions", []))
        return got if done else None

    got = wait_for(complete, timeout=30)
    assert (got["status"]["succeeded"], got["status"]["failed"]) == (1, 2)
    phases = sorted(p["status"]["phase"] for p in pods(cluster, ns, "job-name%3Dpi"))
    assert phases == ["Failed", "Failed", "Succeeded"]
    out = corral(cluster, "get", "jobs", "-n", ns)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].split()[:3] == ["pi", "Complete", "1/1"]
    described = corral(cluster, "describe", "job", "pi", "-n", ns)
    assert "1 Succeeded / 2 Failed" in described.stdout
    assert "Completed" in described.stdout  # the event


def test_cli_apply_rollout_history_undo_scale(
    cluster: SchedulerProcess, ns: str, tmp_path: Path
) -> None:
    """The tutorial manifest applies unchanged; apply is idempotent; a change rolls out and
    is followed by `rollout status`; history lists both revisions; undo goes back; scale."""
    manifest = yaml.safe_load(TUTORIAL_DEPLOYMENT)
    path = tmp_path / "nginx.yaml"
    path.write_text(TUTORIAL_DEPLOYMENT)
    first = corral(cluster, "apply", "-f", str(path), "-n", ns, "--wait")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[0] == "deployment.apps/nginx-deployment created"
    assert first.stdout.splitlines()[-1] == 'deployment "nginx-deployment" successfully rolled out'
    again = corral(cluster, "apply", "-f", str(path), "-n", ns)
    assert again.stdout == "deployment.apps/nginx-deployment unchanged\n", again.stderr
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.16.1"
    path.write_text(yaml.safe_dump(manifest))
    changed = corral(cluster, "apply", "-f", str(path), "-n", ns)
    assert changed.stdout == "deployment.apps/nginx-deployment configured\n", changed.stderr
    status = corral(cluster, "rollout", "status", "deployment/nginx-deployment", "-n", ns)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-1] == 'deployment "nginx-deployment" successfully rolled out'
    history = corral(cluster, "rollout", "history", "deploy/nginx-deployment", "-n", ns)
    assert [line.split()[0] for line in history.stdout.splitlines()[2:]] == ["1", "2"]
    assert corral(cluster, "rollout", "pause", "deploy/nginx-deployment", "-n", ns).returncode == 0
    refused = corral(cluster, "rollout", "undo", "deploy/nginx-deployment", "-n", ns)
    assert refused.returncode == 1  # as kubectl: resume first
    assert "you cannot rollback a paused deployment; resume it first" in refused.stderr
    assert corral(cluster, "rollout", "resume", "deploy/nginx-deployment", "-n", ns).returncode == 0
    undo = corral(cluster, "rollout", "undo", "deploy/nginx-deployment", "-n", ns)
    assert undo.stdout == "deployment.apps/nginx-deployment rolled back\n", undo.stderr
    assert corral(cluster, "rollout", "status", "deploy/nginx-deployment", "-n", ns).returncode == 0
    images = {p["spec"]["containers"][0]["image"] for p in pods(cluster, ns)}
    assert images == {"nginx:1.14.2"}
    history = corral(cluster, "rollout", "history", "deploy/nginx-deployment", "-n", ns)
    assert [line.split()[0] for line in history.stdout.splitlines()[2:]] == ["2", "3"]
    scaled = corral(cluster, "scale", "deployment/nginx-deployment", "--replicas", "5", "-n", ns)
    assert scaled.stdout == "deployment.apps/nginx-deployment scaled\n", scaled.stderr
    wait_for(lambda: rolled_out(cluster, ns, "nginx-deployment", 5), timeout=20)
    # The manifest says 3 replicas: applying it again is a change; without `replicas` it is not.
    del manifest["spec"]["replicas"]
    manifest["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.14.2"
    path.write_text(yaml.safe_dump(manifest))
    kept = corral(cluster, "apply", "-f", str(path), "-n", ns)
    assert kept.stdout == "deployment.apps/nginx-deployment unchanged\n", kept.stderr
    table = corral(cluster, "get", "all", "-n", ns)
    rows = [line.split()[:2] for line in table.stdout.splitlines()]
    assert ["deployment.apps/nginx-deployment", "5/5"] in rows, table.stdout
    described = corral(cluster, "describe", "deployment", "nginx-deployment", "-n", ns)
    assert "5 desired | 5 updated | 5 total | 5 available | 0 unavailable" in described.stdout
    assert "ScalingReplicaSet" in described.stdout
    top = corral(cluster, "top", "pods", "-n", ns)
    assert top.returncode == 0 and top.stdout.splitlines()[0].split() == [
        "NAME",
        "CPU(cores)",
        "MEMORY(bytes)",
    ]
    assert corral(cluster, "top", "nodes").stdout.startswith("NAME")


TUTORIAL_DEPLOYMENT = TUTORIAL.split("---\n")[0]  # the Kubernetes documentation's


def test_rollout_history_of_a_set_based_selector(cluster: SchedulerProcess, ns: str) -> None:
    """`rollout history` finds a Deployment's revisions by ownership: one whose selector
    has only matchExpressions writes revisions without its labels (a label query found
    none of them)."""
    body = deployment_manifest("sets", 1)
    body["spec"]["selector"] = {
        "matchExpressions": [{"key": "app", "operator": "In", "values": ["sets"]}]
    }
    assert cluster.request("POST", deploy_path(ns), body).status == 201
    wait_for(lambda: rolled_out(cluster, ns, "sets", 1), timeout=20)
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert cluster.request("PUT", deploy_path(ns, "sets"), body).status == 200
    wait_for(lambda: rolled_out(cluster, ns, "sets", 1), timeout=20)
    history = corral(cluster, "rollout", "history", "deploy/sets", "-n", ns)
    assert history.returncode == 0, history.stderr
    assert [line.split()[0] for line in history.stdout.splitlines()[2:]] == ["1", "2"]
    undo = corral(cluster, "rollout", "undo", "deploy/sets", "-n", ns)
    assert undo.stdout == "deployment.apps/sets rolled back\n", undo.stderr


def test_stuck_rollout_reports_progress_deadline(cluster: SchedulerProcess, ns: str) -> None:
    """Pods that fit nowhere: Progressing=False ProgressDeadlineExceeded; `rollout status`
    fails with kubectl's message."""
    body = deployment_manifest("huge", 1, progressDeadlineSeconds=2)
    body["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"memory": "64Gi"}
    }
    assert cluster.request("POST", deploy_path(ns), body).status == 201
    result = corral(cluster, "rollout", "status", "deploy/huge", "-n", ns)
    assert result.returncode == 1
    assert 'error: deployment "huge" exceeded its progress deadline' in result.stdout
    got = cluster.get(deploy_path(ns, "huge"))
    cond = next(c for c in got["status"]["conditions"] if c["type"] == "Progressing")
    assert (cond["status"], cond["reason"]) == ("False", "ProgressDeadlineExceeded")


def by_memory(s: SchedulerProcess, ns: str) -> dict[str, int]:
    """The namespace's pods not being deleted, counted by their memory request."""
    counts: dict[str, int] = {}
    for pod in pods(s, ns):
        if not pod["metadata"].get("deletionTimestamp"):
            memory = pod["spec"]["containers"][0]["resources"]["requests"]["memory"]
            counts[memory] = counts.get(memory, 0) + 1
    return counts


def test_scaling_a_stuck_rollout_is_proportional(cluster: SchedulerProcess, ns: str) -> None:
    """10 replicas (maxSurge 25% = 3, maxUnavailable 25% = 2) rolled to a template whose
    pods fit no node stop at 8 old pods and 5 new ones, as in Kubernetes. Scaled to 20
    through /scale, they become 15 old and 10 new, Kubernetes' proportional shares
    (worked out in tests/unit/test_workload_controllers.py), and the Deployment stays
    Available on its 15 old pods, where giving the new template all 10 left it 8."""
    assert cluster.request("POST", deploy_path(ns), deployment_manifest("web", 10)).status == 201
    wait_for(lambda: rolled_out(cluster, ns, "web", 10), timeout=20)
    current = cluster.get(deploy_path(ns, "web"))
    current["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "requests": {"cpu": "100m", "memory": "64Gi"}
    }
    assert cluster.request("PUT", deploy_path(ns, "web"), current).status == 200
    wait_for(lambda: by_memory(cluster, ns) == {"64Mi": 8, "64Gi": 5}, timeout=20)
    resp = cluster.request("PATCH", deploy_path(ns, "web") + "/scale", {"spec": {"replicas": 20}})
    assert resp.status == 200, resp.body

    def settled() -> dict[str, Any] | None:
        d = cluster.get(deploy_path(ns, "web"))
        available = any(
            c["type"] == "Available" and c["status"] == "True" for c in d["status"]["conditions"]
        )
        ok = d["status"].get("availableReplicas") == 15 and available
        return d if ok and by_memory(cluster, ns) == {"64Mi": 15, "64Gi": 10} else None

    wait_for(settled, timeout=20)
    time.sleep(1.0)  # and the rollout's next passes leave it so
    d = settled()
    assert d is not None, by_memory(cluster, ns)
    assert (d["status"]["replicas"], d["status"]["updatedReplicas"]) == (25, 10)


def test_a_jobs_counts_survive_deleting_its_finished_pods(
    cluster: SchedulerProcess, ns: str
) -> None:
    """Each pod of a 3-completion Job is deleted as soon as it has succeeded and been
    counted (its finalizer gone): the Job still completes after exactly 3 pods. Counted
    from the pods still there, it lost each deleted success and ran the work again."""
    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    assert cluster.request("POST", jobs, job_manifest("tidy", 3, 1)).status == 201
    deleted: set[str] = set()

    def complete_while_deleting() -> dict[str, Any] | None:
        for p in pods(cluster, ns, "job-name%3Dtidy"):
            name = p["metadata"]["name"]
            if p["status"]["phase"] == "Succeeded" and not p["metadata"].get("finalizers"):
                assert cluster.request("DELETE", f"/api/v1/namespaces/{ns}/pods/{name}").status in (
                    200,
                    404,
                )
                deleted.add(name)
        got = cluster.get(f"{jobs}/tidy")
        done = any(c["type"] == "Complete" for c in got["status"].get("conditions", []))
        return got if done else None

    got = wait_for(complete_while_deleting, timeout=30, interval=0.05)
    assert (got["status"]["succeeded"], got["status"]["failed"]) == (3, 0), got["status"]
    events = cluster.get(f"/api/v1/namespaces/{ns}/events")["items"]
    created = [e for e in events if e["reason"] == "SuccessfulCreate"]
    assert sum(e.get("count", 1) for e in created) == 3, created
    assert len(deleted) >= 2, deleted  # the test deleted them as it went


def test_foreground_deletion_removes_the_owner_after_its_pods(
    cluster: SchedulerProcess, ns: str
) -> None:
    """propagationPolicy=Foreground: the owner is marked (deletionTimestamp, finalizer
    foregroundDeletion), stays while any of its pods does, and goes after the last one;
    `corral delete --cascade=foreground` returns once it is gone."""
    assert cluster.request("POST", deploy_path(ns), deployment_manifest("fg", 3)).status == 201
    wait_for(lambda: len([p for p in pods(cluster, ns) if is_ready(p)]) == 3, timeout=20)
    resp = cluster.request("DELETE", deploy_path(ns, "fg") + "?propagationPolicy=Foreground")
    assert resp.status == 200, resp.body
    meta = resp.json()["metadata"]
    assert meta["finalizers"] == ["foregroundDeletion"] and meta["deletionTimestamp"], meta
    early: list[object] = []

    def owner_gone() -> bool:
        owner = cluster.request("GET", deploy_path(ns, "fg")).status
        left = pods(cluster, ns)  # after the owner: none may be left once it has gone
        if owner == 404 and left:
            early.append(left)
        return owner == 404

    wait_for(owner_gone, timeout=20)
    assert early == [] and pods(cluster, ns) == []

    jobs = f"/apis/batch/v1/namespaces/{ns}/jobs"
    assert cluster.request("POST", jobs, job_manifest("fgjob", 2, 2)).status == 201
    wait_for(lambda: len(pods(cluster, ns, "job-name%3Dfgjob")) == 2, timeout=20)
    out = corral(cluster, "delete", "job", "fgjob", "-n", ns, "--cascade=foreground")
    assert out.returncode == 0, out.stderr
    assert out.stdout == 'job.batch "fgjob" deleted\n'
    assert cluster.request("GET", f"{jobs}/fgjob").status == 404
    assert pods(cluster, ns) == []


def test_namespaces_owners_and_garbage(cluster: SchedulerProcess, ns: str) -> None:
    """Objects need their namespace; orphaned pods stay; deleting an owner deletes its pods;
    deleting the namespace deletes everything in it; default stays."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    missing = cluster.request("POST", "/api/v1/namespaces/nowhere/pods", pod)
    assert missing.status == 404 and missing.json()["details"]["kind"] == "namespaces"
    for name in ("keep", "drop"):
        assert cluster.request("POST", deploy_path(ns), deployment_manifest(name, 2)).status == 201
    wait_for(lambda: len([p for p in pods(cluster, ns) if is_ready(p)]) == 4, timeout=20)
    orphan = cluster.request("DELETE", deploy_path(ns, "keep") + "?propagationPolicy=Orphan")
    assert orphan.status == 200, orphan.body  # marked, as Kubernetes answers: then it goes
    marked = orphan.json()["metadata"]
    assert marked["finalizers"] == ["orphan"] and marked["deletionTimestamp"]
    dropped = corral(cluster, "delete", "deployment", "drop", "-n", ns)
    assert dropped.stdout == 'deployment.apps "drop" deleted\n', dropped.stderr
    # Gone once the collector has freed its pods of it.
    wait_for(lambda: cluster.request("GET", deploy_path(ns, "keep")).status == 404, timeout=15)
    wait_for(lambda: len(pods(cluster, ns)) == 2, timeout=15)
    kept = pods(cluster, ns)
    assert {p["metadata"]["labels"]["app"] for p in kept} == {"keep"}
    assert all("ownerReferences" not in p["metadata"] for p in kept)
    time.sleep(0.5)  # nothing replaces or collects orphans
    assert len(pods(cluster, ns)) == 2
    refused = cluster.request("DELETE", "/api/v1/namespaces/default")
    assert refused.status == 403
    assert cluster.request("DELETE", f"/api/v1/namespaces/{ns}").status == 200
    late = cluster.request("POST", f"/api/v1/namespaces/{ns}/pods", pod)
    assert late.status == 403 and "being terminated" in late.json()["message"]
    wait_for(lambda: cluster.request("GET", f"/api/v1/namespaces/{ns}").status == 404, timeout=15)
    assert pods(cluster, ns) == []


def revisions(s: SchedulerProcess, ns: str, app: str) -> list[dict[str, Any]]:
    path = f"/apis/apps/v1/namespaces/{ns}/controllerrevisions?labelSelector=app%3D{app}"
    return sorted(s.get(path)["items"], key=lambda r: r["revision"])


def owner_uids(obj: dict[str, Any]) -> list[str]:
    return [r["uid"] for r in obj["metadata"].get("ownerReferences", [])]


def test_an_orphan_delete_keeps_the_revisions_other_deletes_take_them(
    cluster: SchedulerProcess, ns: str
) -> None:
    """propagationPolicy=Orphan frees every dependent and deletes none, as Kubernetes
    keeps a Deployment's ReplicaSets: the ControllerRevisions stay, naming no owner, with
    the pods. A Background or Foreground delete takes the revisions with the pods."""
    body = deployment_manifest("kept", 2)
    assert cluster.request("POST", deploy_path(ns), body).status == 201
    wait_for(lambda: rolled_out(cluster, ns, "kept", 2), timeout=20)
    body["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
    assert cluster.request("PUT", deploy_path(ns, "kept"), body).status == 200
    wait_for(lambda: rolled_out(cluster, ns, "kept", 2), timeout=20)
    for name in ("bg", "fg"):
        assert cluster.request("POST", deploy_path(ns), deployment_manifest(name, 1)).status == 201
        wait_for(lambda n=name: rolled_out(cluster, ns, n, 1), timeout=20)  # type: ignore[misc]
    uid = cluster.get(deploy_path(ns, "kept"))["metadata"]["uid"]
    history = revisions(cluster, ns, "kept")
    assert [(r["revision"], owner_uids(r)) for r in history] == [(1, [uid]), (2, [uid])]
    before = {p["metadata"]["name"] for p in pods(cluster, ns, "app%3Dkept")}

    orphan = cluster.request("DELETE", deploy_path(ns, "kept") + "?propagationPolicy=Orphan")
    assert orphan.status == 200, orphan.body
    wait_for(lambda: cluster.request("GET", deploy_path(ns, "kept")).status == 404, timeout=15)

    def kept_as_they_were() -> None:
        freed = revisions(cluster, ns, "kept")
        assert [r["metadata"]["uid"] for r in freed] == [r["metadata"]["uid"] for r in history]
        assert [(r["revision"], owner_uids(r)) for r in freed] == [(1, []), (2, [])], freed
        kept = pods(cluster, ns, "app%3Dkept")
        assert {p["metadata"]["name"] for p in kept} == before
        assert all(owner_uids(p) == [] and "deletionTimestamp" not in p["metadata"] for p in kept)

    kept_as_they_were()  # freed before their owner went
    assert revisions(cluster, ns, "bg") and revisions(cluster, ns, "fg")
    assert cluster.request("DELETE", deploy_path(ns, "bg")).status == 200
    fg = cluster.request("DELETE", deploy_path(ns, "fg") + "?propagationPolicy=Foreground")
    assert fg.status == 200, fg.body
    for name in ("bg", "fg"):
        wait_for(lambda n=name: revisions(cluster, ns, n) == [], timeout=15)  # type: ignore[misc]
        wait_for(lambda n=name: pods(cluster, ns, f"app%3D{n}") == [], timeout=15)  # type: ignore[misc]
    kept_as_they_were()  # and still so, the collector having worked since


def test_delete_a_controllerrevision(cluster: SchedulerProcess, ns: str) -> None:
    """A revision freed by an Orphan delete, which nothing adopts, is removed with `corral
    delete controllerrevision`; a live Deployment's current revision, deleted, is written
    again by its controller (numbered after what is left: 1); a stale precondition is a
    409."""
    for name in ("gone", "live"):
        assert cluster.request("POST", deploy_path(ns), deployment_manifest(name, 1)).status == 201
        wait_for(lambda n=name: rolled_out(cluster, ns, n, 1), timeout=20)  # type: ignore[misc]
    [freed] = revisions(cluster, ns, "gone")
    orphan = cluster.request("DELETE", deploy_path(ns, "gone") + "?propagationPolicy=Orphan")
    assert orphan.status == 200, orphan.body
    wait_for(lambda: cluster.request("GET", deploy_path(ns, "gone")).status == 404, timeout=15)
    wait_for(lambda: owner_uids(revisions(cluster, ns, "gone")[0]) == [], timeout=15)
    name = freed["metadata"]["name"]
    path = f"/apis/apps/v1/namespaces/{ns}/controllerrevisions/{name}"
    stale = {"preconditions": {"resourceVersion": freed["metadata"]["resourceVersion"]}}
    refused = cluster.request("DELETE", path, stale)
    assert refused.status == 409, refused.body  # freed since: a newer version
    deleted = corral(cluster, "delete", "controllerrevision", name, "-n", ns)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f'controllerrevision.apps "{name}" deleted\n'
    assert cluster.request("GET", path).status == 404
    assert revisions(cluster, ns, "gone") == []

    [current] = revisions(cluster, ns, "live")
    path = f"/apis/apps/v1/namespaces/{ns}/controllerrevisions/{current['metadata']['name']}"
    answer = cluster.request("DELETE", path)
    assert answer.status == 200 and json.loads(answer.body)["kind"] == "Status", answer.body
    again = wait_for(lambda: revisions(cluster, ns, "live"), timeout=15)
    assert [r["revision"] for r in again] == [1]
    assert again[0]["metadata"]["uid"] != current["metadata"]["uid"]


def test_recreated_deployment_adopts_its_orphaned_pods(cluster: SchedulerProcess, ns: str) -> None:
    """Deleted with propagationPolicy=Orphan and created again, a Deployment takes its old
    pods and revisions back (as Kubernetes' Deployment adopts its orphaned ReplicaSets): no
    second set, and its history goes on."""
    assert cluster.request("POST", deploy_path(ns), deployment_manifest("web", 3)).status == 201
    wait_for(lambda: rolled_out(cluster, ns, "web", 3), timeout=20)
    before = {p["metadata"]["name"] for p in pods(cluster, ns)}
    [recorded] = revisions(cluster, ns, "web")
    orphan = cluster.request("DELETE", deploy_path(ns, "web") + "?propagationPolicy=Orphan")
    assert orphan.status == 200
    wait_for(lambda: cluster.request("GET", deploy_path(ns, "web")).status == 404, timeout=10)
    assert cluster.request("POST", deploy_path(ns), deployment_manifest("web", 3)).status == 201
    uid = cluster.get(deploy_path(ns, "web"))["metadata"]["uid"]

    def adopted() -> list[dict[str, Any]] | None:
        found = pods(cluster, ns)
        owners = [[r["uid"] for r in p["metadata"].get("ownerReferences", [])] for p in found]
        return found if owners and all(o == [uid] for o in owners) else None

    wait_for(adopted, timeout=15)
    done = wait_for(lambda: rolled_out(cluster, ns, "web", 3), timeout=20)
    assert {p["metadata"]["name"] for p in pods(cluster, ns)} == before
    [adopted_revision] = revisions(cluster, ns, "web")
    assert adopted_revision["metadata"]["uid"] == recorded["metadata"]["uid"]
    assert owner_uids(adopted_revision) == [uid]
    assert done["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"


def test_watch_streams_changes(cluster: SchedulerProcess, ns: str) -> None:
    """`?watch=true` on deployments sends ADDED, MODIFIED and DELETED with resourceVersions;
    `corral get deployments -w` prints a row per change."""
    since = cluster.get(deploy_path(ns))["metadata"]["resourceVersion"]
    url = f"{cluster.url}{deploy_path(ns)}?watch=true&resourceVersion={since}&timeoutSeconds=10"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    events: list[tuple[str, str, int]] = []
    response = urllib.request.urlopen(req, timeout=20)

    def read() -> None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # closed under it
            for line in response:
                event = json.loads(line)
                meta = event["object"]["metadata"]
                events.append((event["type"], meta["name"], int(meta["resourceVersion"])))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "scheduler.cli.main", "get", "deployments", "-n", ns, "-w"],
        stdout=subprocess.PIPE,
        text=True,
        env=_cli_env(cluster),
    )
    try:
        time.sleep(1.5)  # the CLI lists and starts watching
        assert cluster.request("POST", deploy_path(ns), deployment_manifest("w", 1)).status == 201
        wait_for(lambda: rolled_out(cluster, ns, "w", 1))
        assert cluster.request("DELETE", deploy_path(ns, "w")).status == 200
        wait_for(lambda: any(t == "DELETED" for t, _, _ in events))
    finally:
        close_stream(response)
        time.sleep(0.5)
        watcher.terminate()
        printed, _ = watcher.communicate(timeout=10)
    kinds = [t for t, _, _ in events]
    assert kinds[0] == "ADDED" and "MODIFIED" in kinds
    versions = [v for _, _, v in events]
    assert versions == sorted(versions)
    rows = [line.split() for line in printed.splitlines() if line.startswith("w ")]
    assert rows and rows[-1][1] == "1/1", printed


def _cli_env(s: SchedulerProcess) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env |= {"CORRAL_SERVER": s.url, "CORRAL_TOKEN": s.token, "CORRAL_CONFIG": os.devnull}
    return env


def test_scale_subresource_immutable_fields_and_metrics(cluster: SchedulerProcess, ns: str) -> None:
    """/scale reads and sets replicas; a selector or a Job template cannot change; pod usage
    is served in metrics-server's shape; the OpenAPI document lists the new routes."""
    assert cluster.request("POST", deploy_path(ns), deployment_manifest("s", 1)).status == 201
    scale = cluster.get(deploy_path(ns, "s") + "/scale")
    assert (scale["kind"], scale["spec"]["replicas"], scale["status"]["selector"]) == (
        "Scale",
        1,
        "app=s",
    )
    resp = cluster.request("PATCH", deploy_path(ns, "s") + "/scale", {"spec": {"replicas": 2}})
    assert resp.status == 200 and resp.json()["spec"]["replicas"] == 2
    wait_for(lambda: rolled_out(cluster, ns, "s", 2), timeout=15)
    current = cluster.get(deploy_path(ns, "s"))
    current["spec"]["selector"] = {"matchLabels": {"app": "s", "x": "y"}}
    current["spec"]["template"]["metadata"]["labels"]["x"] = "y"
    bad = cluster.request("PUT", deploy_path(ns, "s"), current)
    assert bad.status == 422 and bad.json()["details"]["causes"][0]["field"] == "spec.selector"

    metrics = wait_for(
        lambda: (
            len((m := cluster.get(f"/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods"))["items"])
            == 2
            and m
        )
    )
    item = metrics["items"][0]
    assert metrics["kind"] == "PodMetricsList" and item["containers"][0]["usage"]["cpu"] == "50m"
    nodes = cluster.get("/apis/metrics.k8s.io/v1beta1/nodes")
    assert len(nodes["items"]) == 4 and "usage" in nodes["items"][0]
    doc = cluster.get("/openapi.json")
    assert "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale" in doc["paths"]
    listing = doc["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs"]["get"]
    assert "watch" in {p["name"] for p in listing["parameters"]}


def test_watch_from_a_forgotten_revision_is_gone(bare_scheduler: SchedulerProcess) -> None:
    """After a restart the store keeps no history: watching from before is 410 Expired."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    assert bare_scheduler.request("POST", "/api/v1/namespaces/default/pods", pod).status == 201
    bare_scheduler.stop()
    bare_scheduler.start()
    resp = bare_scheduler.request("GET", "/api/v1/pods?watch=true&resourceVersion=1")
    assert resp.status == 410 and resp.json()["reason"] == "Expired"
    resp = bare_scheduler.request("GET", "/api/v1/pods?watch=true&timeoutSeconds=1")
    lines = [json.loads(line) for line in resp.body.splitlines()]
    seen = [(e["type"], e["object"]["metadata"]["name"]) for e in lines]
    assert seen[0] == ("ADDED", "p") and {name for _, name in seen} == {"p"}


def test_watch_with_timeout_zero_stays_open(bare_scheduler: SchedulerProcess) -> None:
    """`timeoutSeconds=0` is no timeout, as in Kubernetes (client libraries send it for
    "none"): the stream goes on past the initial listing, not ending at once, which had
    such a client list and watch again in a loop."""
    s = bare_scheduler
    url = f"{s.url}/api/v1/namespaces/default/pods?watch=true&timeoutSeconds=0"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    with urllib.request.urlopen(req, timeout=15) as stream:
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "later"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        assert s.request("POST", "/api/v1/namespaces/default/pods", pod).status == 201
        line = stream.readline()  # b"" at the end of the stream
        assert line, "the watch ended"
        event = json.loads(line)
        assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "later")


def test_a_stale_resource_version_is_a_conflict_even_for_a_no_op(
    bare_scheduler: SchedulerProcess,
) -> None:
    """A replace guarded by an old `metadata.resourceVersion` is a 409 even when it would
    change nothing, as in Kubernetes (it was a 200, which told the client its stale view
    was current); the same for `/scale`."""
    path = deploy_path("default", "d")
    created = bare_scheduler.request("POST", deploy_path("default"), deployment_manifest("d", 1))
    assert created.status == 201
    stale = bare_scheduler.get(path)
    changed = json.loads(json.dumps(stale))
    changed["metadata"]["labels"] = {"moved": "on"}
    del changed["metadata"]["resourceVersion"]  # its controller may have written meanwhile
    assert bare_scheduler.request("PUT", path, changed).status == 200
    current = bare_scheduler.get(path)
    current["metadata"]["resourceVersion"] = stale["metadata"]["resourceVersion"]
    resp = bare_scheduler.request("PUT", path, current)
    assert resp.status == 409 and resp.json()["reason"] == "Conflict"
    scale = bare_scheduler.get(path + "/scale")
    scale["metadata"]["resourceVersion"] = stale["metadata"]["resourceVersion"]
    assert bare_scheduler.request("PUT", path + "/scale", scale).status == 409
    del current["metadata"]["resourceVersion"]  # unguarded: a no-op, answered 200
    assert bare_scheduler.request("PUT", path, current).status == 200


def test_delete_preconditions_of_owners(bare_scheduler: SchedulerProcess) -> None:
    """A Deployment's or a namespace's DELETE honours DeleteOptions.preconditions, as a
    pod's does (they were silently dropped): a failed one is a 409 and nothing goes."""
    s, path = bare_scheduler, deploy_path("default", "p")
    assert s.request("POST", deploy_path("default"), deployment_manifest("p", 1)).status == 201
    uid = s.get(path)["metadata"]["uid"]
    stale = {"preconditions": {"uid": "not-" + uid}, "propagationPolicy": "Background"}
    resp = s.request("DELETE", path, stale)
    assert resp.status == 409 and "Precondition failed" in resp.json()["message"]
    assert s.request("GET", path).status == 200
    assert s.request("DELETE", path, {"propagationPolicy": "Sideways"}).status == 400
    both = s.request("DELETE", path, {"orphanDependents": True, "propagationPolicy": "Orphan"})
    assert both.status == 400 and "cannot be both set" in both.json()["message"]
    assert s.request("DELETE", f"{path}?orphanDependents=maybe").status == 400
    # The deprecated orphanDependents, as kube-apiserver still reads it: an Orphan delete.
    resp = s.request("DELETE", f"{path}?orphanDependents=true", {"preconditions": {"uid": uid}})
    assert resp.status == 200 and resp.json()["metadata"]["finalizers"] == ["orphan"]
    wait_for(lambda: s.request("GET", path).status == 404, timeout=10)
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pre"}}
    assert s.request("POST", "/api/v1/namespaces", namespace).status == 201
    old = {"preconditions": {"resourceVersion": "1"}}
    assert s.request("DELETE", "/api/v1/namespaces/pre", old).status == 409
