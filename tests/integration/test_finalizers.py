"""Pod finalizers, as in Kubernetes: a deleted pod that names any is only marked, is
stopped where it ran (and set Failed), and goes once the last finalizer is removed."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from common.models import Deployment, Job, Pod
from scheduler.kinds import DEPLOYMENTS as DEPLOYMENTS_KIND
from scheduler.kinds import JOBS as JOBS_KIND
from scheduler.objects import encode, pod_key
from scheduler.podfinal import STOPPED_HELD
from scheduler.store import Op
from scheduler.store.sqlite import SqliteStore
from tests.conftest import SchedulerProcess, deployment_manifest, running_cluster, wait_for
from tests.integration.test_api import pod
from tests.integration.test_cli import corral_running

MERGE = "application/merge-patch+json"
PODS = "/api/v1/namespaces/default/pods"
HOLD = "example.com/hold"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SchedulerProcess]:
    with running_cluster(tmp_path_factory.mktemp("finalizers"), 1) as s:
        yield s


def held_pod(s: SchedulerProcess, name: str, **spec: Any) -> None:
    body = pod(name, **spec)
    body["metadata"]["finalizers"] = [HOLD]
    resp = s.request("POST", PODS, body)
    assert resp.status == 201, resp.body
    assert resp.json()["metadata"]["finalizers"] == [HOLD]


def phase(s: SchedulerProcess, name: str) -> str | None:
    resp = s.request("GET", f"{PODS}/{name}")
    return resp.json()["status"]["phase"] if resp.status == 200 else None


def release(s: SchedulerProcess, name: str) -> None:
    """Remove the pod's finalizers; it is gone soon after."""
    resp = s.request(
        "PATCH", f"{PODS}/{name}", {"metadata": {"finalizers": None}}, content_type=MERGE
    )
    assert resp.status == 200, resp.body
    wait_for(lambda: s.request("GET", f"{PODS}/{name}").status == 404, timeout=10)


@pytest.mark.parametrize("grace", [None, 0])
def test_a_deleted_running_pod_is_stopped_and_kept_until_its_finalizers_go(
    cluster: SchedulerProcess, grace: int | None
) -> None:
    """Deleted, gracefully or by force: marked, stopped by its agent and set Failed, and
    kept; no finalizer can be added any more; removing the last one removes the pod."""
    s = cluster
    name = "held-graceful" if grace is None else "held-forced"
    held_pod(s, name)
    wait_for(lambda: phase(s, name) == "Running", timeout=10)
    query = "" if grace is None else f"?gracePeriodSeconds={grace}"
    resp = s.request("DELETE", f"{PODS}/{name}{query}")
    assert resp.status == 200, resp.body
    assert resp.json()["metadata"]["deletionTimestamp"]
    wait_for(lambda: phase(s, name) == "Failed", timeout=10)  # its agent stopped it
    got = s.get(f"{PODS}/{name}")
    assert got["status"]["message"] == STOPPED_HELD
    (main,) = got["status"]["containerStatuses"]  # ended, as the kubelet says of an unseen end
    assert main["state"]["terminated"]["reason"] == "ContainerStatusUnknown", main
    assert main["ready"] is False
    ready = next(c for c in got["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False", got["status"]
    assert got["metadata"]["finalizers"] == [HOLD] and got["metadata"]["deletionTimestamp"]

    more = {"metadata": {"finalizers": [HOLD, "example.com/another"]}}
    resp = s.request("PATCH", f"{PODS}/{name}", more, content_type=MERGE)
    assert resp.status == 422, resp.body
    cause = resp.json()["details"]["causes"][0]
    assert cause["field"] == "metadata.finalizers" and "no new finalizers" in cause["message"]
    assert s.request("DELETE", f"{PODS}/{name}").status == 200  # again: still marked
    assert phase(s, name) == "Failed"
    release(s, name)


def test_a_deleted_pod_that_never_ran_is_set_failed_and_kept(cluster: SchedulerProcess) -> None:
    """A pod that fits nowhere (Pending, unbound) is held as well, and does not get placed
    while it waits for its finalizers."""
    s = cluster
    held_pod(s, "nowhere", nodeSelector={"disk": "none-has-it"})
    assert s.request("DELETE", f"{PODS}/nowhere").status == 200
    wait_for(lambda: phase(s, "nowhere") == "Failed", timeout=10)
    assert s.get(f"{PODS}/nowhere")["spec"].get("nodeName") is None
    release(s, "nowhere")


def test_finalizers_are_set_and_removed_like_labels(cluster: SchedulerProcess) -> None:
    """Added to a pod that is not being deleted and removed again, and a delete then
    removes it at once; another kind refuses them."""
    s = cluster
    assert s.request("POST", PODS, pod("plain", nodeSelector={"disk": "none"})).status == 201
    hold = {"metadata": {"finalizers": [HOLD]}}
    resp = s.request("PATCH", f"{PODS}/plain", hold, content_type=MERGE)
    assert resp.status == 200 and resp.json()["metadata"]["finalizers"] == [HOLD], resp.body
    unhold: dict[str, Any] = {"metadata": {"finalizers": []}}
    resp = s.request("PATCH", f"{PODS}/plain", unhold, content_type=MERGE)
    assert resp.status == 200 and "finalizers" not in resp.json()["metadata"], resp.body
    assert s.request("DELETE", f"{PODS}/plain").status == 200
    assert s.request("GET", f"{PODS}/plain").status == 404

    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "held", "finalizers": [HOLD]},
        "spec": {"template": {"spec": {**pod("x")["spec"], "restartPolicy": "Never"}}},
    }
    resp = s.request("POST", "/apis/batch/v1/namespaces/default/jobs", job)
    assert resp.status == 422, resp.body
    (cause,) = resp.json()["details"]["causes"]
    assert cause["field"] == "metadata" and "only foregroundDeletion" in cause["message"]


def test_a_held_pod_survives_a_restart_of_the_scheduler(tmp_path: Path) -> None:
    """The marks are durable: a held, stopped pod is still there, held, after a restart,
    and goes once released."""
    with running_cluster(tmp_path / "s", 1) as s:
        held_pod(s, "durable")
        wait_for(lambda: phase(s, "durable") == "Running", timeout=10)
        assert s.request("DELETE", f"{PODS}/durable").status == 200
        wait_for(lambda: phase(s, "durable") == "Failed", timeout=10)
        s.stop()
        s.start()
        got = s.get(f"{PODS}/durable")
        assert got["metadata"]["finalizers"] == [HOLD] and got["metadata"]["deletionTimestamp"]
        release(s, "durable")


# --- the Job controller's finalizer (batch.kubernetes.io/job-tracking) -----------------------

JOBS = "/apis/batch/v1/namespaces/default/jobs"


def job_manifest(name: str, completions: int, parallelism: int) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completions": completions,
            "parallelism": parallelism,
            "template": {"spec": {**pod("x")["spec"], "restartPolicy": "Never"}},
        },
    }


def job_pods(s: SchedulerProcess, job: str) -> list[dict[str, Any]]:
    return s.get(f"{PODS}?labelSelector=job-name%3D{job}")["items"]


def test_a_deleted_running_job_pod_counts_as_failed_and_is_replaced(
    cluster: SchedulerProcess,
) -> None:
    """A Job's pods carry its finalizer. One deleted while it runs is held until it has
    stopped, counted as failed (once: uncountedTerminatedPods first), freed and removed,
    and replaced; suspending stops the rest without counting them; deleting the Job
    frees and removes every pod."""
    s = cluster
    assert s.request("POST", JOBS, job_manifest("runs", 4, 2)).status == 201
    running = wait_for(
        lambda: [p for p in job_pods(s, "runs") if p["status"]["phase"] == "Running"] or None,
        timeout=10,
    )
    victim = running[0]["metadata"]["name"]
    assert running[0]["metadata"]["finalizers"] == ["batch.kubernetes.io/job-tracking"]
    assert s.request("DELETE", f"{PODS}/{victim}").status == 200
    wait_for(lambda: s.request("GET", f"{PODS}/{victim}").status == 404, timeout=10)
    status = wait_for(lambda: (st := s.get(f"{JOBS}/runs")["status"])["failed"] == 1 and st)
    assert "uncountedTerminatedPods" not in status, status
    wait_for(
        lambda: len(job_pods(s, "runs")) == 2 and s.get(f"{JOBS}/runs")["status"]["active"] == 2
    )

    suspend = {"spec": {"suspend": True}}
    assert s.request("PATCH", f"{JOBS}/runs", suspend, content_type=MERGE).status == 200
    wait_for(lambda: job_pods(s, "runs") == [], timeout=10)
    assert s.get(f"{JOBS}/runs")["status"]["failed"] == 1  # stopped by the Job: no failure
    resume = {"spec": {"suspend": False}}
    assert s.request("PATCH", f"{JOBS}/runs", resume, content_type=MERGE).status == 200
    wait_for(lambda: len(job_pods(s, "runs")) == 2, timeout=10)
    assert s.request("DELETE", f"{JOBS}/runs").status == 200
    wait_for(lambda: job_pods(s, "runs") == [], timeout=10)


def test_pods_freed_from_their_job_lose_its_finalizer(cluster: SchedulerProcess) -> None:
    """A Job deleted with propagationPolicy=Orphan leaves its pods running, without an
    owner and without its finalizer, so that they can be deleted later."""
    s = cluster
    job = job_manifest("lets-go", 2, 2)
    job["spec"]["template"]["metadata"] = {"finalizers": [HOLD]}  # copied to each pod
    assert s.request("POST", JOBS, job).status == 201
    made = wait_for(lambda: len(found := job_pods(s, "lets-go")) == 2 and found, timeout=10)
    assert {tuple(p["metadata"]["finalizers"]) for p in made} == {
        (HOLD, "batch.kubernetes.io/job-tracking")
    }
    assert s.request("DELETE", f"{JOBS}/lets-go?propagationPolicy=Orphan").status == 200

    def freed() -> bool:
        found = job_pods(s, "lets-go")
        return len(found) == 2 and all(
            "ownerReferences" not in p["metadata"] and p["metadata"]["finalizers"] == [HOLD]
            for p in found
        )

    wait_for(freed, timeout=10)
    for p in job_pods(s, "lets-go"):  # held by the template's own finalizer, until released
        assert s.request("DELETE", f"{PODS}/{p['metadata']['name']}").status == 200
        release(s, p["metadata"]["name"])
    wait_for(lambda: job_pods(s, "lets-go") == [], timeout=10)


def test_a_pod_whose_job_went_while_the_scheduler_was_down_is_freed(tmp_path: Path) -> None:
    """A deleted pod held by the Job finalizer, its Job gone (the scheduler stopped before
    it freed the pod): the scheduler frees and removes it when it starts. Nothing about
    the pod changes after the start, so only the start can tell."""
    s = SchedulerProcess(tmp_path / "s")
    s.start()
    s.stop()  # the store made: write the state the crash left, by the store's own API
    left = Pod.model_validate(
        {
            "metadata": {
                "name": "left",
                "namespace": "default",
                "uid": "u-left",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "deletionTimestamp": "2026-01-01T00:00:01Z",
                "finalizers": ["batch.kubernetes.io/job-tracking"],
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": "gone",
                        "uid": "u-gone",
                        "controller": True,
                    }
                ],
            },
            "spec": pod("left")["spec"],
            "status": {"phase": "Failed"},
        }
    )

    asyncio.run(store_offline(s, pod_key("default", "left"), left))
    s.start()
    try:
        wait_for(lambda: s.request("GET", f"{PODS}/left").status == 404, timeout=10)
    finally:
        s.stop()


# --- owners deleted in the foreground ----------------------------------------------------------

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"


def test_an_owner_being_deleted_in_the_foreground_survives_a_restart(tmp_path: Path) -> None:
    """A Deployment deleted in the foreground whose pods a finalizer of their own holds:
    still there, marked, after a restart (its stored form is read back), and released
    by removing its finalizer (it goes at once, its pods after their own release). A
    marked Job left without dependents by a crash goes when the scheduler starts."""
    with running_cluster(tmp_path / "s", 1) as s:
        body = deployment_manifest("held", 2)
        body["spec"]["template"]["metadata"]["finalizers"] = [HOLD]
        assert s.request("POST", DEPLOYMENTS, body).status == 201
        wait_for(lambda: len(s.get(f"{PODS}?labelSelector=app%3Dheld")["items"]) == 2)
        before = s.get(DEPLOYMENTS)["metadata"]["resourceVersion"]
        resp = s.request("DELETE", f"{DEPLOYMENTS}/held?propagationPolicy=Foreground")
        assert resp.status == 200 and resp.json()["kind"] == "Deployment", resp.body
        wait_for(lambda: all(p["status"]["phase"] == "Failed" for p in s.get(PODS)["items"]))
        # A filtered watch replays the marked version, read back from its stored form.
        since = f"watch=1&labelSelector=app%3Dheld&resourceVersion={before}&timeoutSeconds=1"
        watched = s.request("GET", f"{DEPLOYMENTS}?{since}")
        assert watched.status == 200 and b'"foregroundDeletion"' in watched.body, watched.body
        s.stop()
        s.start()
        marked = s.get(f"{DEPLOYMENTS}/held")["metadata"]
        assert marked["finalizers"] == ["foregroundDeletion"] and marked["deletionTimestamp"]
        unmark = {"metadata": {"finalizers": None}}
        resp = s.request("PATCH", f"{DEPLOYMENTS}/held", unmark, content_type=MERGE)
        assert resp.status == 200, resp.body
        assert s.request("GET", f"{DEPLOYMENTS}/held").status == 404
        for p in s.get(f"{PODS}?labelSelector=app%3Dheld")["items"]:
            release(s, p["metadata"]["name"])

        job = job_manifest("own", 1, 1)
        job["spec"]["suspend"] = True  # no pods
        job["metadata"]["finalizers"] = ["foregroundDeletion"]  # its own policy: Foreground
        assert s.request("POST", JOBS, job).status == 201
        resp = s.request("DELETE", f"{JOBS}/own")
        assert resp.status == 200 and resp.json()["kind"] == "Job", resp.body
        wait_for(lambda: s.request("GET", f"{JOBS}/own").status == 404, timeout=10)

        s.stop()  # as if it crashed with a Job marked and no dependent left to tell
        left = Job.model_validate(
            {
                **job_manifest("left", 1, 1),
                "metadata": {
                    "name": "left",
                    "namespace": "default",
                    "uid": "u-left-job",
                    "creationTimestamp": "2026-01-01T00:00:00Z",
                    "deletionTimestamp": "2026-01-01T00:00:01Z",
                    "finalizers": ["foregroundDeletion"],
                },
            }
        )
        asyncio.run(store_offline(s, JOBS_KIND.key("default", "left"), left))
        s.start()
        wait_for(lambda: s.request("GET", f"{JOBS}/left").status == 404, timeout=10)


@pytest.mark.parametrize("blocks", [True, False])
def test_a_foreground_delete_waits_only_for_dependents_that_block_it(
    tmp_path: Path, blocks: bool
) -> None:
    """A pod that names a Deployment as its owner (not as its controller: the Deployment
    leaves it be), held by a finalizer of its own after it is stopped: a Foreground delete
    of the Deployment waits for it only if its ownerReference says blockOwnerDeletion, as
    in Kubernetes (the controllers' own pods do); otherwise the Deployment goes once its
    own pod has, and the held pod is collected after it."""
    with running_cluster(tmp_path / "s", 1) as s:
        _waits_only_for_blocking(s, f"blocked-{str(blocks).lower()}", blocks)


def _waits_only_for_blocking(s: SchedulerProcess, name: str, blocks: bool) -> None:
    assert s.request("POST", DEPLOYMENTS, deployment_manifest(name, 1)).status == 201
    uid = s.get(f"{DEPLOYMENTS}/{name}")["metadata"]["uid"]
    extra = pod(f"{name}-extra")
    extra["metadata"]["finalizers"] = [HOLD]
    extra["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "uid": uid,
         "blockOwnerDeletion": blocks}
    ]  # fmt: skip
    assert s.request("POST", PODS, extra).status == 201
    wait_for(lambda: phase(s, f"{name}-extra") == "Running", timeout=20)
    # Not the Deployment's to manage (no `controller: true`): once its own replica is
    # available, it neither counts the pod nor scales it down as an old one.
    wait_for(lambda: s.get(f"{DEPLOYMENTS}/{name}")["status"].get("availableReplicas") == 1)
    assert s.get(f"{DEPLOYMENTS}/{name}")["status"]["replicas"] == 1
    assert "deletionTimestamp" not in s.get(f"{PODS}/{name}-extra")["metadata"]
    resp = s.request("DELETE", f"{DEPLOYMENTS}/{name}?propagationPolicy=Foreground")
    assert resp.status == 200, resp.body
    wait_for(lambda: phase(s, f"{name}-extra") == "Failed", timeout=10)  # stopped, held
    if blocks:
        assert s.request("GET", f"{DEPLOYMENTS}/{name}").status == 200  # held with it
        release(s, f"{name}-extra")
        wait_for(lambda: s.request("GET", f"{DEPLOYMENTS}/{name}").status == 404, timeout=10)
    else:
        wait_for(lambda: s.request("GET", f"{DEPLOYMENTS}/{name}").status == 404, timeout=10)
        assert phase(s, f"{name}-extra") == "Failed"  # still held by its own finalizer
        release(s, f"{name}-extra")


# --- owners deleted with their dependents kept ------------------------------------------------


@pytest.mark.parametrize("mark", [["orphan"], None], ids=["orphan", "before-the-finalizer"])
def test_an_orphan_delete_the_scheduler_stopped_in_is_finished_at_its_start(
    tmp_path: Path, mark: list[str] | None
) -> None:
    """An owner whose own finalizer is orphan keeps its pods when deleted without a
    policy, as in Kubernetes. And a Deployment and a Job marked for an Orphan delete (a
    deletionTimestamp and the finalizer orphan; or no finalizer, as the API marked them
    before), the scheduler stopped before it freed the pods: at the start the collector
    frees them (and the Deployment's revisions) and deletes the owners; they run on (the
    Job's without its finalizer), and the revisions stay, as a ReplicaSet would."""
    with running_cluster(tmp_path / "s", 1) as s:
        own = deployment_manifest("own", 1)
        own["metadata"]["finalizers"] = ["orphan"]  # its own policy: Orphan
        for body in (own, deployment_manifest("kept", 2)):
            assert s.request("POST", DEPLOYMENTS, body).status == 201

        def running(app: str, count: int) -> list[dict[str, Any]] | None:
            found = s.get(f"{PODS}?labelSelector=app%3D{app}")["items"]
            ok = len(found) == count and all(p["status"].get("phase") == "Running" for p in found)
            return found if ok else None

        first = wait_for(lambda: running("own", 1), timeout=10)
        resp = s.request("DELETE", f"{DEPLOYMENTS}/own")
        assert resp.status == 200 and resp.json()["metadata"]["deletionTimestamp"], resp.body
        wait_for(lambda: s.request("GET", f"{DEPLOYMENTS}/own").status == 404, timeout=10)
        [freed] = s.get(f"{PODS}?labelSelector=app%3Down")["items"]
        assert freed["metadata"]["name"] == first[0]["metadata"]["name"]
        assert "ownerReferences" not in freed["metadata"]
        # Both finalizers at once ask opposite things: refused, as Kubernetes refuses them.
        both = deployment_manifest("both", 1)
        both["metadata"]["finalizers"] = ["orphan", "foregroundDeletion"]
        refused = s.request("POST", DEPLOYMENTS, both)
        causes = refused.json()["details"]["causes"]
        assert refused.status == 422 and "cannot be both set" in causes[0]["message"], causes

        before = {p["metadata"]["name"] for p in wait_for(lambda: running("kept", 2), timeout=10)}
        meta = s.get(f"{DEPLOYMENTS}/kept")["metadata"]
        marked = Deployment.model_validate(
            {
                **deployment_manifest("kept", 2),
                "metadata": {
                    **{k: meta[k] for k in ("name", "namespace", "uid", "creationTimestamp")},
                    "labels": meta.get("labels"),
                    "deletionTimestamp": "2026-01-01T00:00:01Z",
                    "finalizers": mark,
                },
            }
        )
        revisions = "/apis/apps/v1/namespaces/default/controllerrevisions"
        history = s.get(f"{revisions}?labelSelector=app%3Dkept")["items"]
        assert [r["metadata"]["ownerReferences"][0]["uid"] for r in history] == [meta["uid"]]
        # A Job too: its pod carries the Job's tracking finalizer, which goes with the Job.
        assert s.request("POST", JOBS, job_manifest("kept-job", 1, 1)).status == 201
        [job_pod] = wait_for(
            lambda: [p for p in job_pods(s, "kept-job") if p["status"].get("phase") == "Running"],
            timeout=10,
        )
        assert job_pod["metadata"]["finalizers"] == ["batch.kubernetes.io/job-tracking"]
        stored_job = s.get(f"{JOBS}/kept-job")
        stored_job["metadata"] |= {"deletionTimestamp": "2026-01-01T00:00:01Z", "finalizers": mark}
        marked_job = Job.model_validate(stored_job)
        s.stop()  # as if it stopped after marking them, before freeing their pods
        for kind, name, obj in (
            (DEPLOYMENTS_KIND, "kept", marked),
            (JOBS_KIND, "kept-job", marked_job),
        ):
            asyncio.run(store_offline(s, kind.key("default", name), obj, new=False))
        s.start()
        wait_for(lambda: s.request("GET", f"{DEPLOYMENTS}/kept").status == 404, timeout=10)
        wait_for(lambda: s.request("GET", f"{JOBS}/kept-job").status == 404, timeout=10)

        def kept_as_they_were() -> None:
            # Freed before their owner went: nothing names it that the collector would take.
            kept = s.get(f"{PODS}?labelSelector=app%3Dkept")["items"]
            assert {p["metadata"]["name"] for p in kept} == before
            for p in kept:
                assert "ownerReferences" not in p["metadata"], p["metadata"]
                assert "deletionTimestamp" not in p["metadata"], p["metadata"]
                assert p["status"]["phase"] == "Running"
            freed = s.get(f"{revisions}?labelSelector=app%3Dkept")["items"]
            assert [r["metadata"]["uid"] for r in freed] == [r["metadata"]["uid"] for r in history]
            assert all("ownerReferences" not in r["metadata"] for r in freed), freed

        kept_as_they_were()

        def job_pod_freed() -> bool:
            meta = s.get(f"{PODS}/{job_pod['metadata']['name']}")["metadata"]
            return "ownerReferences" not in meta and not meta.get("finalizers")

        wait_for(job_pod_freed, timeout=10)
        still = s.get(f"{PODS}/{job_pod['metadata']['name']}")
        assert "deletionTimestamp" not in still["metadata"]
        assert still["status"]["phase"] == "Running"
        kept_as_they_were()  # and still so, a while later


async def store_offline(s: SchedulerProcess, key: str, obj: Any, *, new: bool = True) -> None:
    """Write `obj` into the stopped scheduler's store, by the store's own API: a new key,
    or (`new=False`) over what is there."""
    store = await SqliteStore.open(s.state_dir / "state.db")
    try:
        await store.txn([Op("put", key, encode(obj), obj, expect=0 if new else None)])
    finally:
        await store.close()


def test_delete_waits_across_a_restart_of_the_scheduler(tmp_path: Path) -> None:
    """`corral delete` waiting for a held pod outlives a restart of the scheduler (kill -9,
    then the same port): it lists again once the server answers, and returns when the
    finalizer goes, as kubectl's wait does through its reflector."""
    s = SchedulerProcess(tmp_path / "restarted")
    s.start()
    waiting: subprocess.Popen[str] | None = None
    try:
        held_pod(s, "held")
        waiting = corral_running(s, "delete", "pod", "held")
        assert waiting.stdout is not None
        assert waiting.stdout.readline() == 'pod "held" deleted\n'  # marked; now it waits
        s.kill()
        s.start()
        assert waiting.poll() is None
        release(s, "held")
        assert waiting.wait(timeout=30) == 0, waiting.stderr and waiting.stderr.read()
    finally:
        if waiting is not None:
            if waiting.poll() is None:
                waiting.kill()
            waiting.communicate()
        s.stop()
