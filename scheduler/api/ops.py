"""Routes for operators: health, readiness, the status summary, Prometheus metrics."""

from __future__ import annotations

import itertools
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from common.models import POD_PHASES
from scheduler.api.common import json_response, plane
from scheduler.cluster import ClusterState

UNACKED_REPORT_SECONDS = 10.0  # an unacknowledged desired change older than this is listed


def behind_on_changes(cluster: ClusterState, mono: float) -> list[tuple[float, str]]:
    """(seconds, node) of the agents that have not acknowledged a desired change for
    UNACKED_REPORT_SECONDS or more, the longest first."""
    behind = []
    for name, state in cluster.nodes.items():
        since = state.desired_unacked_since
        if since is not None and mono - since >= UNACKED_REPORT_SECONDS:
            behind.append((mono - since, name))
    return sorted(behind, reverse=True)


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    if not plane(request).ready:
        return web.Response(text="not ready", status=503)
    return web.Response(text="ok")


async def status(request: web.Request) -> web.Response:
    """What an on-call person asks first: are the nodes up, is work running, is anything stuck."""
    cp = plane(request)
    cluster = cp.cluster
    mono = time.monotonic()
    # From sums kept as nodes change, and the NotReady nodes alone: a request costs the
    # same at 5,000 nodes as at 5.
    totals = cluster.totals
    nodes = {
        "total": len(cluster.nodes),
        "ready": totals.ready,
        "notReady": len(cluster.nodes) - totals.ready,
        "cordoned": totals.cordoned,
        "connected": totals.connected,
    }
    cpu = {
        "capacity": totals.cap_cpu,
        "allocatable": totals.alloc_cpu,
        "requested": totals.req_cpu,
        "used": totals.usage_cpu,
    }
    mem = {
        "capacity": totals.cap_mem,
        "allocatable": totals.alloc_mem,
        "requested": totals.req_mem,
        "used": totals.usage_mem,
    }
    not_ready = [
        {"name": name, "lastHeartbeatSecondsAgo": round(mono - state.last_heartbeat, 1)}
        for name in itertools.islice(cluster.not_ready, 50)
        if (state := cluster.nodes.get(name)) is not None
    ]
    unschedulable = [
        {"pod": key, "message": message}
        for key, message in list(cp.scheduler.unschedulable.items())[:20]
    ]
    body = {
        "revision": cp.store.revision,
        "nodes": {
            **nodes,
            "notReadyNodes": not_ready,  # in the order they became NotReady
            # Agents that have not applied a desired change (a pod to start or stop) for
            # a while: a healthy one acknowledges within moments.
            "desiredNotAcknowledged": [
                {"name": name, "unacknowledgedSeconds": round(age, 1)}
                for age, name in behind_on_changes(cluster, mono)[:50]
            ],
        },
        "pods": {
            "total": len(cluster.pods),
            "byPhase": {p: cluster.phases.get(p, 0) for p in POD_PHASES},
            # Running but not ready: held out of service by a readiness probe, still
            # starting, or on a NotReady node (scheduler/podready.py).
            "notReady": cluster.running_unready,
            "pendingQueue": len(cluster.pending),
            "unschedulable": unschedulable,
        },
        "resources": {"cpuMillicores": cpu, "memoryBytes": mem},
        "recentErrors": cp.errors.to_list()[-20:],
    }
    return json_response(body)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text. `?name[]=A&name[]=B` restricts it to the samples so named, as
    prometheus-client's own exposition does (`SchedulerMetrics.exposition`)."""
    data = plane(request).metrics.exposition(request.query.getall("name[]", []))
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})


ROUTES = [
    web.get("/healthz", healthz),
    web.get("/readyz", readyz),
    web.get("/api/v1/status", status),
    web.get("/metrics", metrics),
]
