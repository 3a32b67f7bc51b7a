"""Rollout benchmark: a Deployment over hollow nodes, from apply to all Ready, then rolled.

    python -m bench.rollout [--replicas 100] [--nodes 10] [--runs 3] [--start-delay 0]

Starts `python -m scheduler.main` on a loopback port with a fresh state
directory and one hollow-agent process of N nodes (`agent.hollow`: the real
agent link, simulated pods that report Ready when Running). Each run creates a
Deployment of R replicas through the API, then changes its image; a watch on
the namespace's pods (`?watch=true`, every change in order, nothing sampled)
follows both:

- `rollout.ready`: seconds from the create request to the last of the R pods
  reporting Ready (the watch event that makes all R Ready);
- `rollout.available`: to the Deployment's status saying R available (what
  `corral rollout status` waits for);
- `rollout.update`: seconds from the update request to the Deployment being
  rolled out again (R updated, R available, no old pod left);
- `rollout.min_ready`: the fewest Ready pods (not being deleted) at any pod
  change during the update, with the floor `replicas - maxUnavailable`;
  `rollout.max_pods`: the most pods, with the ceiling `replicas + maxSurge`;
- `rollout.scheduler_cpu`: the scheduler's user+system seconds per run.

Every process it starts is stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.placement import ADMIN_TOKEN, Api, Processes, RssSampler, emit, free_port
from scheduler.controlplane import new_join_token


def deployment(name: str, replicas: int, image: str, surge: str, unavailable: str) -> Any:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable},
            },
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "ports": [{"containerPort": 80}],
                            "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
                        }
                    ]
                },
            },
        },
    }


def resolve(value: str, replicas: int, round_up: bool) -> int:
    if value.endswith("%"):
        fraction = int(value[:-1]) * replicas / 100
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(value)


def ready(pod: dict[str, Any]) -> bool:
    return pod["status"].get("phase") == "Running" and any(
        c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", [])
    )


class Watch:
    """A `?watch=true` stream in a task: each event is applied to a picture by `on_event`."""

    def __init__(self, http: aiohttp.ClientSession, url: str, on_event: Callable[[Any], None]):
        self.http, self.url, self.on_event = http, url, on_event
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with self.http.get(self.url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            resp.raise_for_status()
            async for line in resp.content:
                if line.strip():
                    self.on_event(json.loads(line))

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Pods:
    """The live (not terminating) pods of a namespace, and extremes over time."""

    def __init__(self) -> None:
        self.live: dict[str, dict[str, Any]] = {}
        self.min_ready = math.inf
        self.max_pods = 0
        self.tracking = False
        self.changed = asyncio.Event()

    def on_event(self, event: dict[str, Any]) -> None:
        obj = event["object"]
        name = obj["metadata"]["name"]
        if event["type"] == "DELETED" or obj["metadata"].get("deletionTimestamp"):
            self.live.pop(name, None)
        else:
            self.live[name] = obj
        if self.tracking:
            self.min_ready = min(self.min_ready, self.ready())
            self.max_pods = max(self.max_pods, len(self.live))
        self.changed.set()

    def ready(self) -> int:
        return sum(1 for p in self.live.values() if ready(p))

    async def until(self, check: Callable[[], bool], seconds: float) -> float:
        """Wait for `check` to hold after an event; the monotonic time it first did."""
        deadline = time.monotonic() + seconds
        while not check():
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the pods did not get there in time")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)
        return time.monotonic()


async def rolled_out(api: Api, path: str, replicas: int, seconds: float) -> float:
    """Poll the Deployment's status until it is rolled out; the time it was seen so."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        d = await api.get_json(path)
        st = d["status"]
        if (
            st.get("observedGeneration") == d["metadata"].get("generation")
            and st.get("updatedReplicas") == replicas
            and st.get("availableReplicas") == replicas
            and st.get("replicas") == replicas
        ):
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{path} was not rolled out within {seconds}s")


async def one_run(
    api: Api, http: aiohttp.ClientSession, args: argparse.Namespace, run: int, sampler: RssSampler
) -> dict[str, float]:
    ns = f"bench-{run}"
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    async with http.post(f"{api.base}/api/v1/namespaces", json=namespace) as resp:
        resp.raise_for_status()
    pods = Pods()
    watch = Watch(http, f"{api.base}/api/v1/namespaces/{ns}/pods?watch=true", pods.on_event)
    await asyncio.sleep(0.2)  # the watch is open before anything is created
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    body = deployment("web", args.replicas, "nginx:1", args.max_surge, args.max_unavailable)
    cpu_before = sampler.cpu_seconds()
    try:
        t0 = time.monotonic()
        async with http.post(api.base + path, json=body) as resp:
            resp.raise_for_status()
        t_ready = await pods.until(lambda: pods.ready() == args.replicas, args.timeout)
        t_available = await rolled_out(api, f"{path}/web", args.replicas, args.timeout)
        current = await api.get_json(f"{path}/web")
        current["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:2"
        pods.tracking = True
        t1 = time.monotonic()
        async with http.put(f"{api.base}{path}/web", json=current) as resp:
            resp.raise_for_status()
        t_updated = await rolled_out(api, f"{path}/web", args.replicas, args.timeout)
        await pods.until(lambda: len(pods.live) == args.replicas, args.timeout)
    finally:
        await watch.stop()
    return {
        "ready": t_ready - t0,
        "available": t_available - t0,
        "update": t_updated - t1,
        "min_ready": pods.min_ready,
        "max_pods": pods.max_pods,
        "cpu": sampler.cpu_seconds() - cpu_before,
    }


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="corral-bench-rollout-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "logs").mkdir()
        procs = Processes(tmp / "logs")
        port = free_port()
        token = new_join_token()
        sampler: RssSampler | None = None
        try:
            sched = await procs.spawn(
                "scheduler",
                *("-m", "scheduler.main", "--listen", f"127.0.0.1:{port}"),
                *("--state-dir", str(tmp / "state"), "--join-token", token),
                *("--admin-token", ADMIN_TOKEN),
                env={"CORRAL_SCHEDULER_LOG_LEVEL": "warning"},
            )
            sampler = RssSampler(sched.pid)
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with aiohttp.ClientSession(headers=auth) as http:
                api = Api(http, f"http://127.0.0.1:{port}")
                await api.wait_ready(sched, 30)
                await procs.spawn(
                    "hollow",
                    *("-m", "agent.hollow", "--server", api.base, "--token", token),
                    *("--nodes", str(args.nodes), "--cpu", "32", "--memory", "64Gi"),
                    *("--start-delay", str(args.start_delay)),
                )
                deadline = time.monotonic() + args.timeout
                while await api.ready_nodes() < args.nodes:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the hollow nodes did not become Ready")
                    await asyncio.sleep(0.2)
                results = [await one_run(api, http, args, i, sampler) for i in range(args.runs)]
        finally:
            if sampler is not None:
                sampler.stop()
            await procs.stop_all()
    floor = args.replicas - resolve(args.max_unavailable, args.replicas, round_up=False)
    ceiling = args.replicas + resolve(args.max_surge, args.replicas, round_up=True)
    shape = {"replicas": args.replicas, "nodes": args.nodes, "runs": args.runs}
    for key, metric in (("ready", "rollout.ready"), ("available", "rollout.available")):
        values = sorted(r[key] for r in results)
        emit(metric, "s", best=round(values[0], 3), worst=round(values[-1], 3), **shape)
    updates = sorted(r["update"] for r in results)
    emit("rollout.update", "s", best=round(updates[0], 3), worst=round(updates[-1], 3), **shape)
    emit("rollout.min_ready", "pods", value=min(r["min_ready"] for r in results), floor=floor)
    emit("rollout.max_pods", "pods", value=max(r["max_pods"] for r in results), ceiling=ceiling)
    emit(
        "rollout.scheduler_cpu",
        "s",
        value=round(sum(r["cpu"] for r in results) / len(results), 2),
        per="run (create, roll out, update)",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.rollout",
        description=(__doc__ or "").split("\n", 1)[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--replicas", type=int, default=100, help="replicas of the Deployment")
    p.add_argument("--nodes", type=int, default=10, help="hollow nodes")
    p.add_argument("--runs", type=int, default=3, help="create+update runs (a namespace each)")
    p.add_argument("--start-delay", type=float, default=0.0, help="hollow pods' start, seconds")
    p.add_argument("--max-surge", default="25%", help="the Deployment's maxSurge")
    p.add_argument("--max-unavailable", default="25%", help="the Deployment's maxUnavailable")
    p.add_argument("--timeout", type=float, default=60.0, help="limit of each phase, seconds")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(run(args))
    except (RuntimeError, TimeoutError, aiohttp.ClientError) as exc:
        print(f"bench.rollout: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
