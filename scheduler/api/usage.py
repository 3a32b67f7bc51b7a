"""Reported usage in metrics-server's shape (`metrics.k8s.io/v1beta1`), for `corral top`.

    GET /apis/metrics.k8s.io/v1beta1/nodes[/{name}]                       NodeMetrics
    GET /apis/metrics.k8s.io/v1beta1/pods                                 PodMetrics, everywhere
    GET /apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods[/{name}]        (labelSelector)

Usage comes from the agents' heartbeats and is kept in the scheduler's memory
only (never in the store): a node's CPU and memory, and each running pod's (a
finished pod, Succeeded or Failed, has none, though its node still measures it).
An agent measures a pod's cgroup as a whole, so each PodMetrics has one entry
in `containers`, named after the pod's first container, holding the pod's
total. Pods on nodes that are not connected have no metrics and are left out,
as metrics-server leaves out pods it has not scraped.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from common.models import Pod
from common.quantity import format_cpu
from common.selector import SelectorError, parse_selector
from common.selector import matches as selector_matches
from scheduler.api.common import json_response, name_param, namespace_param, plane
from scheduler.api.errors import BadRequest, NotFoundError
from scheduler.cluster import NodeState
from scheduler.controlplane import ControlPlane

API_VERSION = "metrics.k8s.io/v1beta1"
ROOT = f"/apis/{API_VERSION}"


def _stamp() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _usage(cpu: int, memory: int) -> dict[str, str]:
    return {"cpu": format_cpu(max(cpu, 0)), "memory": f"{max(memory, 0) // 1024}Ki"}


def _window(cp: ControlPlane) -> str:
    return f"{cp.config.heartbeat_seconds:g}s"


def _node_metrics(cp: ControlPlane, state: NodeState) -> dict[str, Any]:
    meta = state.node.metadata
    return {
        "metadata": {
            "name": state.name,
            "labels": meta.labels,
            "creationTimestamp": _stamp(),
        },
        "timestamp": _stamp(),
        "window": _window(cp),
        "usage": _usage(state.usage_cpu, state.usage_mem),
    }


def _pod_metrics(
    cp: ControlPlane, pod: Pod, paired: dict[str, dict[str, tuple[int, int]]]
) -> dict[str, Any] | None:
    """`paired`: each node's `pod_usage()`, filled as nodes come up (once per request).

    None for a pod that is not Running: its node keeps a finished pod's cgroup (and
    reports it) until the pod is deleted, and makes one for a pod still waiting for its
    image, but metrics-server, and so `kubectl top`, shows pods with running containers."""
    if pod.status.phase != "Running":
        return None
    node = pod.spec.node_name or ""
    state = cp.cluster.nodes.get(node)
    if state is None or not state.connected:
        return None
    usage = paired.get(node)
    if usage is None:
        usage = paired[node] = state.pod_usage()
    used = usage.get(pod.metadata.uid or "")
    if used is None:
        return None
    return {
        "metadata": {
            "name": pod.metadata.name,
            "namespace": pod.metadata.namespace,
            "labels": pod.metadata.labels,
            "creationTimestamp": _stamp(),
        },
        "timestamp": _stamp(),
        "window": _window(cp),
        "containers": [
            {
                "name": pod.spec.containers[0].name,
                "usage": _usage(*used),
            }
        ],
    }


def _list(kind: str, items: list[dict[str, Any]]) -> web.Response:
    return json_response({"apiVersion": API_VERSION, "kind": kind, "metadata": {}, "items": items})


def _selector(request: web.Request) -> Any:
    try:
        return parse_selector(request.query.get("labelSelector"))
    except SelectorError as exc:
        raise BadRequest(f"labelSelector: {exc}") from None


async def node_metrics(request: web.Request) -> web.Response:
    """Each connected node's reported CPU and memory (NodeMetricsList)."""
    cp = plane(request)
    selector = _selector(request)
    items = [
        _node_metrics(cp, state)
        for _, state in sorted(cp.cluster.nodes.items())
        if state.connected and selector_matches(selector, state.node.metadata.labels)
    ]
    return _list("NodeMetricsList", items)


async def one_node_metrics(request: web.Request) -> web.Response:
    """One node's reported usage."""
    cp = plane(request)
    name = name_param(request)
    state = cp.cluster.nodes.get(name)
    if state is None or not state.connected:
        raise NotFoundError(f'nodemetrics.metrics.k8s.io "{name}" not found', name=name)
    return json_response(
        {"apiVersion": API_VERSION, "kind": "NodeMetrics", **_node_metrics(cp, state)}
    )


async def pod_metrics(request: web.Request) -> web.Response:
    """Each running pod's reported usage (PodMetricsList), in a namespace or everywhere."""
    cp = plane(request)
    namespace = namespace_param(request) if "namespace" in request.match_info else None
    selector = _selector(request)
    items = []
    paired: dict[str, dict[str, tuple[int, int]]] = {}
    for pod in cp.cluster.pods.values():
        if namespace is not None and pod.metadata.namespace != namespace:
            continue
        if selector and not selector_matches(selector, pod.metadata.labels):
            continue
        metrics = _pod_metrics(cp, pod, paired)
        if metrics is not None:
            items.append(metrics)
    items.sort(key=lambda m: (m["metadata"]["namespace"], m["metadata"]["name"]))
    return _list("PodMetricsList", items)


async def one_pod_metrics(request: web.Request) -> web.Response:
    """One pod's reported usage."""
    cp = plane(request)
    namespace, name = namespace_param(request), name_param(request)
    pod = cp.cluster.pods.get(f"/pods/{namespace}/{name}")
    metrics = _pod_metrics(cp, pod, {}) if pod is not None else None
    if metrics is None:
        raise NotFoundError(f'podmetrics.metrics.k8s.io "{namespace}/{name}" not found', name=name)
    return json_response({"apiVersion": API_VERSION, "kind": "PodMetrics", **metrics})


ROUTES = [
    web.get(f"{ROOT}/nodes", node_metrics),
    web.get(f"{ROOT}/nodes/{{name}}", one_node_metrics),
    web.get(f"{ROOT}/pods", pod_metrics),
    web.get(f"{ROOT}/namespaces/{{namespace}}/pods", pod_metrics),
    web.get(f"{ROOT}/namespaces/{{namespace}}/pods/{{name}}", one_pod_metrics),
]
