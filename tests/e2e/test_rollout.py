"""Rolling update over three real agents: Ready pods never below replicas - maxUnavailable."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, poll

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPLICAS, MAX_UNAVAILABLE, MAX_SURGE = 4, 1, 1


def deployment(version: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": MAX_UNAVAILABLE, "maxSurge": MAX_SURGE},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "touch /tmp/ready; exec sleep 3600"],
                            "env": [{"name": "VERSION", "value": version}],
                            "readinessProbe": {
                                "exec": {"command": ["test", "-f", "/tmp/ready"]},
                                "periodSeconds": 1,
                            },
                            "resources": {"requests": {"cpu": "50m", "memory": "16Mi"}},
                        }
                    ],
                },
            },
        },
    }


def ready_pods(cluster: Cluster) -> dict[str, str]:
    """Ready pods of the Deployment: name -> the VERSION of their template."""
    out = {}
    for name, pod in cluster.pods().items():
        if pod["metadata"].get("labels", {}).get("app") != "web":
            continue
        if pod["metadata"].get("deletionTimestamp"):
            continue
        conditions = pod.get("status", {}).get("conditions", [])
        if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            env = pod["spec"]["containers"][0].get("env", [])
            out[name] = next((e["value"] for e in env if e["name"] == "VERSION"), "")
    return out


def test_rolling_update_keeps_availability(cluster: Cluster) -> None:
    """v1 -> v2 over real agents; Ready pods sampled throughout never fall below 3 of 4."""
    path = "/apis/apps/v1/namespaces/default/deployments"
    resp = cluster.scheduler.request("POST", path, deployment("v1"))
    assert resp.status == 201, resp.body
    poll(lambda: len(ready_pods(cluster)) == REPLICAS, timeout=60)

    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                samples.append(len(ready_pods(cluster)))
            except Exception:  # a request racing the teardown: not a sample
                pass
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for _attempt in range(20):  # the controller writes status meanwhile: retry on 409
            current = cluster.scheduler.get(f"{path}/web")
            updated = deployment("v2")
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            resp = cluster.scheduler.request("PUT", f"{path}/web", updated)
            if resp.status != 409:
                break
        assert resp.status == 200, resp.body
        poll(
            lambda: (r := ready_pods(cluster)) and len(r) == REPLICAS and set(r.values()) == {"v2"},
            timeout=90,
        )
    finally:
        stop.set()
        sampler.join(timeout=5)
    assert samples, "no availability samples taken"
    print(f"{len(samples)} samples, fewest Ready {min(samples)}, most {max(samples)}")
    assert min(samples) >= REPLICAS - MAX_UNAVAILABLE, (min(samples), samples[:50])
