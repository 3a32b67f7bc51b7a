"""The scheduler's CPU per pod on one path at a time, in this process; JSON lines out.

    python -m bench.cpu_per_pod bind|status|heartbeat [--count N]

A real control plane (SQLite store in a temporary directory, cluster view, scheduler,
hub, controllers) with no HTTP and no agent processes, so that a path's own cost is
not lost in the noise of a whole benchmark (bench.placement):

- bind: N pods validated as the API's create does, stored in batches of 500, then
  placed and bound durably on 1,000 stored nodes;
- status: N `pod_status` frames, each one Running report of a pod bound to one node,
  fed through the hub's read loop (as a hollow agent packs them) until durable;
- heartbeat: N heartbeat frames from one node (ten running pods' usage).

It prints the event loop's thread CPU and the whole process's (the store's writer
thread included) per item. Those move with the machine's load; for a stable count,
run two sizes under callgrind and take the difference of instructions per item:

    PYTHONHASHSEED=0 valgrind --tool=callgrind PYTHON -m bench.cpu_per_pod status \
        --count 1000 --stored 2000
    ... the same with --count 2000

PYTHON is the interpreter's binary itself (a pyenv shim is a shell script). The hash
seed is fixed because, unseeded, dict lookups move a frame's count by about 9k, and
`--stored` keeps the setup (pods stored, each simulated once) the same in both runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import WSMessage, WSMsgType

from agent.hollow import SimPod, SimState, encode_heartbeat, encode_pod_status
from bench.placement import pod_manifest
from common.heap import GcPacer
from common.models import Node, NodeCondition, NodeStatus, ObjectMeta, Pod, now
from scheduler.api.pods import _validate
from scheduler.config import SchedulerConfig
from scheduler.controlplane import ControlPlane
from scheduler.hub import AgentSession
from scheduler.objects import encode, node_key, pod_key
from scheduler.store import Op

BATCH = 500
WAIT_SECONDS = 300.0  # for any one step, callgrind's slowdown included
_CLOSED = WSMessage(WSMsgType.CLOSED, None, None)


class FeedWS:
    """What the hub's read loop uses of a WebSocket: `frames`, then a close."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames, self.next, self.closed = frames, 0, False

    async def receive(self) -> WSMessage:
        i = self.next
        if i >= len(self.frames):
            return _CLOSED
        self.next = i + 1
        if i % 20 == 0:  # let the store commit now and then, as a live link would
            await asyncio.sleep(0)
        return WSMessage(WSMsgType.BINARY, self.frames[i], None)

    async def close(self, *, message: bytes = b"") -> bool:
        self.closed = True
        return True

    async def send_bytes(self, data: bytes) -> None:
        raise AssertionError("the hub answered a frame with an error")


async def until(condition: Callable[[], bool], what: str) -> None:
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            while True:  # polled: these conditions have no event to wait on
                if condition():
                    return
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise TimeoutError(f"timed out waiting for {what}") from None


def ready_node(name: str, cpu: str, memory: str, pods: int) -> Node:
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods)}
    return Node(
        metadata=ObjectMeta(name=name, creation_timestamp=now()),
        status=NodeStatus(
            capacity=resources,
            allocatable=dict(resources),
            conditions=[NodeCondition(type="Ready", status="True", last_heartbeat_time=now())],
        ),
    )


async def store_nodes(cp: ControlPlane, nodes: list[Node]) -> None:
    """Store ready nodes that never miss a heartbeat for the length of a run."""
    await cp.store.txn([Op("put", node_key(n.metadata.name), encode(n), n) for n in nodes])
    await until(lambda: len(cp.cluster.nodes) >= len(nodes), "the nodes in the cluster view")
    for state in cp.cluster.nodes.values():
        state.last_heartbeat = time.monotonic() + 3600


async def store_pods(cp: ControlPlane, pods: list[Pod]) -> None:
    for start in range(0, len(pods), BATCH):
        batch = pods[start : start + BATCH]
        ops = [Op("put", pod_key("default", p.metadata.name), encode(p), p, 0) for p in batch]
        await cp.store.txn(ops)


def new_pods(count: int) -> list[Pod]:
    return [_validate(pod_manifest(i, "100m", "64Mi"), "default") for i in range(count)]


async def settled(cp: ControlPlane) -> None:
    store = cp.store
    await until(
        lambda: store._next_revision == store.revision <= cp.cluster.revision,
        "the writes to be durable and in the cluster view",
    )


async def measure(count: int, work: Callable[[], Awaitable[None]]) -> dict[str, float]:
    process, loop_thread = resource.getrusage(resource.RUSAGE_SELF), time.thread_time()
    await work()
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (process.ru_utime + process.ru_stime)
    return {
        "loop_us": round(1e6 * (time.thread_time() - loop_thread) / count, 1),
        "process_us": round(1e6 * cpu / count, 1),
    }


async def bind(cp: ControlPlane, count: int, stored: int) -> dict[str, float]:
    """Create and bind `count` pods (create's validation counted) on 1,000 nodes."""
    await store_nodes(cp, [ready_node(f"n{i:04d}", "64", "256Gi", 110) for i in range(1000)])
    manifests = [pod_manifest(i, "100m", "64Mi") for i in range(count)]
    metrics = cp.metrics

    async def work() -> None:
        await store_pods(cp, [_validate(m, "default") for m in manifests])
        await until(lambda: metrics.binds_total() >= count, "every pod bound")

    return await measure(count, work)


async def on_one_node(cp: ControlPlane, count: int) -> list[SimPod]:
    """`count` pods stored bound to node n0, as the hollow agent simulates them running."""
    await store_nodes(cp, [ready_node("n0", "100000", "100000Gi", count + 10)])
    pods = new_pods(count)
    for pod in pods:
        pod.spec.node_name = "n0"
    await store_pods(cp, pods)
    await until(lambda: len(cp.cluster.pods) >= count, "the pods in the cluster view")
    sims = []
    for pod in pods:
        sim = SimPod.from_wire(pod.model_dump(mode="json", by_alias=True, exclude_none=True))
        sim.start_time = sim.started_at = now()
        sim.state = SimState.RUNNING
        sims.append(sim)
    return sims


async def feed(cp: ControlPlane, frames: list[bytes]) -> None:
    session = AgentSession("n0", FeedWS(frames))  # type: ignore[arg-type]
    cp.hub.sessions["n0"] = session
    await cp.hub._read_loop(session)
    await settled(cp)


async def status(cp: ControlPlane, count: int, stored: int) -> dict[str, float]:
    sims = (await on_one_node(cp, max(count, stored)))[:count]
    frames = [encode_pod_status([s.report_wire()], [], 100 + i) for i, s in enumerate(sims)]
    result = await measure(count, lambda: feed(cp, frames))
    running = sum(
        1 for s in sims if cp.cluster.pods[pod_key("default", s.name)].status.phase == "Running"
    )
    if running != count:
        raise RuntimeError(f"{running} of {count} pods reported Running")
    return result


async def heartbeat(cp: ControlPlane, count: int, stored: int) -> dict[str, float]:
    sims = await on_one_node(cp, 10)
    cpu = [s.cpu_millis // 2 for s in sims]
    memory = [s.memory_bytes // 2 for s in sims]
    usage = [sum(cpu), sum(memory)]
    frames = [encode_heartbeat(usage, [s.uid for s in sims], cpu, memory)] * count
    return await measure(count, lambda: feed(cp, frames))


PATHS: dict[str, Callable[[ControlPlane, int, int], Awaitable[dict[str, float]]]] = {
    "bind": bind,
    "status": status,
    "heartbeat": heartbeat,
}


async def run(path: str, count: int, stored: int = 0) -> dict[str, Any]:
    with GcPacer():  # as the scheduler's main does
        return await _run(path, count, stored)


async def _run(path: str, count: int, stored: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = SchedulerConfig(state_dir=tmp, node_grace_seconds=3600, eviction_seconds=7200)
        cp = ControlPlane(config)
        await cp.start()
        try:
            result = await PATHS[path](cp, count, stored)
        finally:
            await cp.stop()
    return {"metric": f"cpu_per_pod.{path}", "unit": "us", "count": count, **result}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("path", choices=sorted(PATHS))
    parser.add_argument("--count", type=int, default=2000, help="pods or frames")
    parser.add_argument(
        "--stored",
        type=int,
        default=0,
        help="status: pods stored on the node (at least --count); equal in two runs, it "
        "leaves their difference the frames' cost alone",
    )
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    print(json.dumps(asyncio.run(run(args.path, args.count, args.stored))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
