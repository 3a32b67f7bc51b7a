# The client's models make every field optional; a None here is a failure anyway.
# mypy: disable-error-code="union-attr"
"""The official Kubernetes Python client (`kubernetes`) pointed at the real scheduler with
hollow nodes: what a program written for Kubernetes does first works against corral.

Its models check what they read (a container status without `imageID` made every pod
list fail once a pod ran), and the objects it sends leave `apiVersion` and `kind` out
unless the caller sets them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.conftest import ADMIN_TOKEN, SchedulerProcess, wait_for


@pytest.fixture
def api(scheduler: SchedulerProcess) -> Iterator[client.ApiClient]:
    config = client.Configuration()
    config.host = scheduler.url
    config.api_key = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with client.ApiClient(config) as api_client:
        yield api_client


def container(name: str = "main") -> client.V1Container:
    return client.V1Container(
        name=name,
        image="busybox",
        resources=client.V1ResourceRequirements(requests={"cpu": "100m", "memory": "64Mi"}),
    )


def test_pods_created_read_and_deleted(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    sent = client.V1Pod(  # no api_version, no kind: the URL says what it is
        metadata=client.V1ObjectMeta(name="web", labels={"app": "web"}),
        spec=client.V1PodSpec(containers=[container()]),
    )
    created = core.create_namespaced_pod("default", sent)
    assert created.metadata.uid and created.kind == "Pod"

    def running() -> client.V1Pod | None:
        pods = core.list_namespaced_pod("default", label_selector="app=web").items
        return pods[0] if pods and pods[0].status.phase == "Running" else None

    pod = wait_for(running)
    assert pod.spec.node_name.startswith("hollow-")
    (status,) = pod.status.container_statuses
    assert status.name == "main" and status.ready and status.image_id == ""
    assert core.read_namespaced_pod_log("web", "default") == "hollow pod web: main started\n"
    nodes = {n.metadata.name for n in core.list_node().items}
    assert pod.spec.node_name in nodes
    wait_for(lambda: "Scheduled" in {e.reason for e in core.list_namespaced_event("default").items})
    core.delete_namespaced_pod("web", "default", grace_period_seconds=0)
    wait_for(lambda: not core.list_namespaced_pod("default").items)


def test_deployment_scaled_through_its_scale(api: client.ApiClient) -> None:
    apps = client.AppsV1Api(api)
    labels = {"app": "api"}
    deployment = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="api"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[container()]),
            ),
        ),
    )
    apps.create_namespaced_deployment("default", deployment)
    apps.patch_namespaced_deployment_scale("api", "default", {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment_scale("api", "default").spec.replicas == 3

    def available() -> bool:
        status = apps.read_namespaced_deployment("api", "default").status
        return status.available_replicas == 3

    wait_for(available, timeout=20)
    pods = client.CoreV1Api(api).list_namespaced_pod("default", label_selector="app=api")
    assert len(pods.items) == 3
