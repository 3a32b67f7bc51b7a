"""Deployment, Job and Namespace manifests: what is accepted as people write it, what is
refused by field path, selectors, template hashes, and the small pieces the controllers
are built of (work queue, owner index, watch event types)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import yaml

from common.manifest import ManifestError, load_manifests
from common.models import Deployment, LabelSelector, OwnerReference, PodTemplateSpec
from scheduler.api.watch import event_type
from scheduler.controllers.base import WorkQueue
from scheduler.controllers.cache import OwnerIndex
from scheduler.controllers.podcontrol import generate_name, template_hash
from scheduler.store import KV

# The Deployment of the Kubernetes documentation, with the resources people add to it.
TUTORIAL = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
        resources:
          limits:
            memory: "256Mi"
            cpu: "500m"
---
apiVersion: batch/v1
kind: Job
metadata:
  name: pi
spec:
  template:
    spec:
      containers:
      - name: pi
        image: perl:5.34.0
        command: ["perl",  "-Mbignum=bpi", "-wle", "print bpi(2000)"]
      restartPolicy: Never
  backoffLimit: 4
---
apiVersion: v1
kind: Namespace
metadata:
  name: staging
"""

# What `kubectl create deployment web --image=nginx --dry-run=client -o yaml` prints.
GENERATED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  creationTimestamp: null
  labels:
    app: web
  name: web
spec:
  replicas: 1
  selector:
    matchLabels:
      app: web
  strategy: {}
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: web
    spec:
      containers:
      - image: nginx
        name: nginx
        resources: {}
status: {}
"""


def test_tutorial_manifests_load_unchanged() -> None:
    """The Kubernetes docs' Deployment and Job, and a Namespace, load as written."""
    deployment, job, namespace = load_manifests(TUTORIAL)
    assert deployment.kind == "Deployment" and job.kind == "Job" and namespace.kind == "Namespace"
    assert deployment.spec.replicas == 3
    assert deployment.spec.strategy.type == "RollingUpdate"
    assert job.spec.backoff_limit == 4
    assert load_manifests(GENERATED)[0].metadata.name == "web"


def _errors(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ManifestError) as info:
        load_manifests(yaml.safe_dump(doc))
    return {c.field or "": c.message for c in info.value.causes}


def _deployment(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = yaml.safe_load(TUTORIAL.split("---")[0])
    base["spec"].update(spec)
    return base


def test_deployment_rules_name_the_field() -> None:
    """Selector/labels mismatch, restartPolicy, strategy and deadline errors have field paths."""
    doc = _deployment(selector={"matchLabels": {"app": "other"}})
    assert _errors(doc) == {
        "spec.template.metadata.labels": "selector does not match template labels"
    }
    doc = _deployment()
    doc["spec"]["template"]["spec"]["restartPolicy"] = "Never"
    assert "spec.template.spec.restartPolicy" in _errors(doc)
    assert "spec.selector" in _errors(_deployment(selector={}))
    both_zero = {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}}
    assert "spec.strategy.rollingUpdate" in _errors(_deployment(strategy=both_zero))
    assert "spec.strategy.rollingUpdate.maxSurge" in _errors(
        _deployment(strategy={"rollingUpdate": {"maxSurge": "150%"}})
    )
    assert "spec.strategy" in _errors(
        _deployment(strategy={"type": "Recreate", "rollingUpdate": {"maxSurge": 1}})
    )
    assert "spec.progressDeadlineSeconds" in _errors(
        _deployment(minReadySeconds=30, progressDeadlineSeconds=10)
    )
    assert "spec.replicas" in _errors(_deployment(replicas=-1))


def test_job_and_namespace_rules() -> None:
    """A Job's pods may not restart Always; Indexed jobs are refused; namespaces are labels."""
    job = yaml.safe_load(TUTORIAL.split("---")[1])
    job["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    assert "spec.template.spec.restartPolicy" in _errors(job)
    job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    job["spec"]["completionMode"] = "Indexed"
    assert "spec.completionMode" in _errors(job)
    assert "metadata.name" in _errors(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}
    )


def test_label_selector_matches_and_prints() -> None:
    """matchLabels and matchExpressions are ANDed, and print as a labelSelector query."""
    selector = LabelSelector.model_validate(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert selector.matches({"app": "web", "tier": "a"})
    assert not selector.matches({"app": "web", "tier": "c"})
    assert not selector.matches({"app": "web", "tier": "a", "legacy": ""})
    assert selector.to_query() == "app=web,tier in (a,b),!legacy"
    with pytest.raises(ValueError):
        LabelSelector.model_validate(
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}
        )


def test_template_hash_ignores_spelling_and_names_fit_a_hostname() -> None:
    """Defaults written out or left out hash the same; a generated name is at most 63."""
    short = PodTemplateSpec.model_validate({"spec": {"containers": [{"name": "c", "image": "x"}]}})
    long = PodTemplateSpec.model_validate(
        {
            "metadata": {"labels": {}},
            "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "x"}]},
        }
    )
    assert template_hash(short) == template_hash(long)
    # Kubernetes' default DNS policy, written out (kubectl run, a manifest read from a
    # Kubernetes cluster), is no new template: applying it starts no rollout.
    cluster_first = PodTemplateSpec.model_validate(
        {"spec": {"dnsPolicy": "ClusterFirst", "containers": [{"name": "c", "image": "x"}]}}
    )
    assert template_hash(cluster_first) == template_hash(short)
    default = PodTemplateSpec.model_validate(
        {"spec": {"dnsPolicy": "Default", "containers": [{"name": "c", "image": "x"}]}}
    )
    assert template_hash(default) != template_hash(short)
    other = PodTemplateSpec.model_validate({"spec": {"containers": [{"name": "c", "image": "y"}]}})
    assert template_hash(short) != template_hash(other)
    name = generate_name("a" * 80 + "-" + template_hash(short))
    assert len(name) <= 63 and name[-6] == "-"


def test_deployment_round_trips_with_status() -> None:
    """What the controller writes reads back the same."""
    deployment = load_manifests(TUTORIAL)[0]
    assert isinstance(deployment, Deployment)
    again = Deployment.model_validate(deployment.to_dict())
    assert again == deployment


async def test_work_queue_dedupes_and_serializes_keys() -> None:
    """A key is queued once; added while being worked on, it comes back once, after."""
    queue = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    first = await queue.get()
    queue.add(first)  # changed while processing: not handed out twice at once
    second = await queue.get()
    assert (first, second) == ("a", "b") and len(queue) == 0
    queue.done("a")
    assert await asyncio.wait_for(queue.get(), 1) == "a"
    queue.add_after("c", 0.05)
    queue.add_after("c", 5)  # a later timer does not postpone the earlier one
    assert await asyncio.wait_for(queue.get(), 1) == "c"
    queue.close()


def test_owner_index_follows_reference_changes() -> None:
    """Dependents are found by owner uid; removing a reference (orphaning) drops them."""
    index = OwnerIndex()
    ref = OwnerReference(api_version="apps/v1", kind="Deployment", name="web", uid="u1")
    index.update("/pods/default/a", [ref])
    index.update("/pods/default/b", [ref])
    assert index.of("u1") == {"/pods/default/a", "/pods/default/b"}
    assert index.kind_of("u1") == "Deployment"
    index.update("/pods/default/a", None)
    index.update("/pods/default/b", [])
    assert index.of("u1") == set() and index.owners() == []


def test_watch_event_types_follow_the_selector() -> None:
    """An object entering the selection is ADDED, leaving it DELETED, as in Kubernetes."""

    def kv(value: bytes) -> KV:
        return KV("/pods/default/a", value, 1, 2)

    web, db = kv(b"web"), kv(b"db")

    def keep(item: KV) -> bool:
        return item.value == b"web"

    assert event_type("PUT", web, None, None) == "ADDED"
    assert event_type("PUT", web, db, None) == "MODIFIED"
    assert event_type("PUT", web, db, keep) == "ADDED"
    assert event_type("PUT", db, web, keep) == "DELETED"
    assert event_type("PUT", db, db, keep) is None
    assert event_type("DELETE", web, web, keep) == "DELETED"
    assert event_type("DELETE", db, db, keep) is None
