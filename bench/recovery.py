"""Recovery benchmark: how fast corral heals, with real agents on three "machines"; JSON lines.

    python -m bench.recovery [--crashes 5] [--deaths 3] [--partitions 3] [--pods-per-node 2]
                             [--node-grace-seconds S] [--eviction-seconds S]
                             [--heartbeat-seconds S]

Run as root from the repository root. The topology is the e2e suite's
(tests/e2e/cluster.py): a bridge with a private /24, one network namespace per
agent with a veth pair, the real `corral-scheduler` (with its DEFAULT node timeouts
unless the flags say otherwise: grace 5 s, eviction 10 s, heartbeat 1 s) and three
real `corral-agent`s with busybox imported. Measured:

- `recovery.crash.exec`: SIGKILL of a running container's init (pid from the agent's
  state directory) to the new init's exec, as the monitor records it (`started.json`,
  wall clock): the agent notices the exit, decides (the first restart is immediate),
  and starts it again. A fresh pod per repetition, so every sample is a *first* restart
  (later ones back off: 1 s, 2 s, ... as CrashLoopBackOff).
- `recovery.crash.api`: the same kill to the API showing the container running with
  its restartCount incremented (GET polled every --poll-ms).
- `recovery.node_death.{not_ready,evicted,running}`: SIGKILL of an agent with all of
  its pods (agent, fork server, monitors, containers: as if the machine died) to the
  node being NotReady, to its pods being replaced (new uids), and to every replacement
  Running on the other nodes. The killed agent is started again afterwards (it stops
  its stale incarnations) and the next repetition kills the busiest node.
- `recovery.partition.{running,fenced}`: the busiest node's link taken down to every
  replacement Running elsewhere; then, once the link is back, to the stale copies'
  processes being gone on the returning node.
- `recovery.node_death.ratio.<peer>_over_corral`: the documented default times to
  replace the work of a lost node in Kubernetes (node-monitor-grace-period 40-50 s,
  then the 300 s not-ready/unreachable toleration: about 5 min 50 s), Nomad (heartbeat
  TTL and grace: about 20 s) and Swarm (5 s heartbeats x 3: about 15 s), over corral's
  measured p50. These peers are not run here: their documented defaults are compared.

Everything it starts, mounts or creates is removed at the end, also on failure or ^C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from agent.runtime.native.rootfs import mounts_below
from bench._common import (
    BenchError,
    Cleanup,
    distribution,
    emit,
    ignore_interrupts,
    interruptible,
    machine,
    note,
)
from tests.e2e.cluster import Cluster, ClusterError, LiveContainer, Node, pod_manifest
from tests.imagebuild import build_busybox_rootfs, write_oci_layout

# Documented defaults of peers: seconds from a node's loss until its work runs elsewhere.
PEERS = {
    "kubernetes": (350.0, "node-monitor-grace-period 40-50 s + 300 s default toleration"),
    "nomad": (20.0, "heartbeat TTL (min 10 s) + heartbeat_grace 10 s, then reschedule"),
    "swarm": (15.0, "dispatcher heartbeat 5 s x grace multiplier 3"),
}
DEFAULTS = {"grace": 5.0, "eviction": 10.0, "heartbeat": 1.0}  # scheduler/config.py


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.recovery", description=__doc__)
    parser.add_argument("--crashes", type=int, default=5, help="container crashes (5)")
    parser.add_argument("--deaths", type=int, default=3, help="agent deaths (3)")
    parser.add_argument("--partitions", type=int, default=3, help="partitions (3)")
    parser.add_argument("--pods-per-node", type=int, default=2, help="sleep pods per node (2)")
    parser.add_argument("--poll-ms", type=float, default=10.0, help="API poll period (10)")
    parser.add_argument("--node-grace-seconds", type=float, help="scheduler flag (default 5)")
    parser.add_argument("--eviction-seconds", type=float, help="scheduler flag (default 10)")
    parser.add_argument("--heartbeat-seconds", type=float, help="scheduler flag (default 1)")
    return parser.parse_args(argv)


def scheduler_args(args: argparse.Namespace) -> list[str]:
    """Only the flags given: the point is to measure the scheduler's own defaults."""
    out = []
    for flag in ("node_grace_seconds", "eviction_seconds", "heartbeat_seconds"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out


def wait(predicate: Callable[[], Any], timeout: float, interval: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError, KeyError):
            value = predicate()
            if value:
                return value
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")


class Bench:
    def __init__(self, cluster: Cluster, args: argparse.Namespace) -> None:
        self.c = cluster
        self.args = args
        self.poll = args.poll_ms / 1000
        self.timeout = 4 * (
            (args.eviction_seconds or DEFAULTS["eviction"])
            + (args.node_grace_seconds or DEFAULTS["grace"])
        )

    # -- container crash -----------------------------------------------------------

    def crashes(self) -> None:
        exec_s, api_s = [], []
        for i in range(self.args.crashes):
            name = f"crash-{i}"
            self.c.create_pod(pod_manifest(name))
            pod = wait(partial(self.c.running, [name]), 60, 0.05, f"{name} Running")[name]
            node = self.c.nodes[pod["spec"]["nodeName"]]
            uid = pod["metadata"]["uid"]
            cdir = node.state / "pods" / uid / "containers" / "main"
            [live] = [x for x in node.containers() if x.uid == uid]
            started_before = json.loads((cdir / "started.json").read_text())["started_at"]
            killed_wall, killed = time.time(), time.monotonic()
            os.kill(live.pid, signal.SIGKILL)

            def api_running(n: str = name) -> bool:
                p = self.c.pod(n)
                status = (p or {}).get("status", {}).get("containerStatuses") or [{}]
                first = status[0]
                return bool(first.get("restartCount") == 1 and first["state"].get("running"))

            wait(api_running, 30, self.poll, f"{name} running again in the API")
            api_s.append(time.monotonic() - killed)
            started = wait(partial(restarted_at, cdir, started_before), 10, 0.01, "restart")
            exec_s.append(started - killed_wall)
            note(f"crash {i}: exec after {exec_s[-1] * 1000:.1f} ms, API {api_s[-1] * 1000:.0f} ms")
        emit("recovery.crash.exec", "ms", **distribution([s * 1000 for s in exec_s], 1))
        emit(
            "recovery.crash.api", "ms", poll_ms=self.args.poll_ms,
            **distribution([s * 1000 for s in api_s], 1),
        )  # fmt: skip

    # -- nodes ------------------------------------------------------------------------

    def spread_pods(self) -> dict[str, dict[str, Any]]:
        names = [f"svc-{i}" for i in range(self.args.pods_per_node * len(self.c.nodes))]
        for name in names:
            self.c.create_pod(pod_manifest(name))
        return wait(partial(self.c.running, names), 60, 0.05, "every svc pod Running")

    def busiest(self, pods: dict[str, dict[str, Any]]) -> Node:
        counts = {n: 0 for n in self.c.nodes}
        for p in pods.values():
            counts[p["spec"]["nodeName"]] += 1
        return self.c.nodes[max(counts, key=lambda n: counts[n])]

    def lose(self, before: dict[str, dict[str, Any]], victim: Node) -> dict[str, float]:
        """From now (the loss) to NotReady, to replaced (new uids), to all Running."""
        start = time.monotonic()
        moved = [n for n, p in before.items() if p["spec"]["nodeName"] == victim.name]
        marks: dict[str, float] = {}
        while time.monotonic() - start < self.timeout:
            with contextlib.suppress(OSError, ValueError, KeyError):
                now = time.monotonic() - start
                if "not_ready" not in marks and not self.c.ready(victim.name):
                    marks["not_ready"] = now
                pods = self.c.pods()
                fresh = [
                    pods[n] for n in moved
                    if pods[n]["metadata"]["uid"] != before[n]["metadata"]["uid"]
                ]  # fmt: skip
                if "evicted" not in marks and len(fresh) == len(moved):
                    marks["evicted"] = now
                if len(fresh) == len(moved) and all(
                    p["status"].get("phase") == "Running" and p["spec"]["nodeName"] != victim.name
                    for p in fresh
                ):
                    marks["running"] = now
                    marks.setdefault("not_ready", now)  # missed between two polls
                    return marks
            time.sleep(self.poll)
        raise BenchError(f"{victim.name}'s pods not replaced: {self.c.describe()}")

    def deaths(self) -> list[float]:
        samples: dict[str, list[float]] = {"not_ready": [], "evicted": [], "running": []}
        moved_counts = []
        for i in range(self.args.deaths):
            before = self.c.pods()
            before = {n: p for n, p in before.items() if n.startswith("svc-")}
            victim = self.busiest(before)
            moved_counts.append(sum(p["spec"]["nodeName"] == victim.name for p in before.values()))
            victim.kill(with_pods=True)
            marks = self.lose(before, victim)
            for key, value in marks.items():
                samples[key].append(value)
            note(f"death {i} of {victim.name} ({moved_counts[-1]} pods): {marks}")
            victim.start()
            wait(partial(self.c.ready, victim.name), 60, 0.1, f"{victim.name} back")
        for key, values in samples.items():
            emit(f"recovery.node_death.{key}", "s", pods_moved=moved_counts, **distribution(values))
        return samples["running"]

    def partitions(self) -> None:
        samples: dict[str, list[float]] = {"not_ready": [], "evicted": [], "running": []}
        fenced = []
        for i in range(self.args.partitions):
            before = {n: p for n, p in self.c.pods().items() if n.startswith("svc-")}
            victim = self.busiest(before)
            stale = victim.containers()
            victim.partition()
            try:
                marks = self.lose(before, victim)
            finally:
                victim.heal()
            healed = time.monotonic()
            wait(partial(all_gone, stale), 60, self.poll, "stale copies stopped")
            fenced.append(time.monotonic() - healed)
            for key, value in marks.items():
                samples[key].append(value)
            note(f"partition {i} of {victim.name}: {marks}, fenced {fenced[-1]:.1f}s after heal")
            wait(partial(self.c.ready, victim.name), 60, 0.1, f"{victim.name} Ready again")
        for key, values in samples.items():
            emit(f"recovery.partition.{key}", "s", **distribution(values))
        emit("recovery.partition.fenced", "s", after="heal", **distribution(fenced))


def restarted_at(cdir: Path, before: float) -> float | None:
    """The container's start time (wall clock) from its monitor, once it is not `before`."""
    started = float(json.loads((cdir / "started.json").read_text())["started_at"])
    return started if started != before else None


def all_gone(containers: list[LiveContainer]) -> bool:
    return not any(x.alive() for x in containers)


def compare(running: list[float], args: argparse.Namespace) -> None:
    if not running:
        return
    p50 = sorted(running)[(len(running) - 1) // 2]
    for peer, (seconds, how) in PEERS.items():
        emit(
            f"recovery.node_death.ratio.{peer}_over_corral",
            "x",
            value=round(seconds / p50, 1),
            peer_s=seconds,
            corral_p50_s=round(p50, 2),
            peer_source=f"documented default: {how}",
        )
    summary = ", ".join(
        f"{peer} {seconds:.0f} s ({seconds / p50:.1f}x)" for peer, (seconds, _) in PEERS.items()
    )
    note(f"node loss to replacements Running: corral {p50:.1f} s (p50) vs {summary}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench.recovery: run as root (network namespaces, cgroups, mounts)", file=sys.stderr)
        return 2
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
        os.environ.pop(var, None)  # only addresses we create are ever dialled
    cleanup = Cleanup()
    cluster: Cluster | None = None
    failed = False
    settings = {
        "node_grace_seconds": args.node_grace_seconds or DEFAULTS["grace"],
        "eviction_seconds": args.eviction_seconds or DEFAULTS["eviction"],
        "heartbeat_seconds": args.heartbeat_seconds or DEFAULTS["heartbeat"],
    }
    emit("recovery.machine", **machine(), scheduler=settings)
    try:
        with interruptible():
            base = Path(tempfile.mkdtemp(prefix="corral-bench-recovery-"))
            cleanup.push("temporary directory", lambda: _rmtree(base, keep=failed))
            layout = write_oci_layout(
                build_busybox_rootfs(base / "rootfs"), base / "layout", ref="busybox:latest"
            )
            cluster = Cluster(base / "cluster", scheduler_args=scheduler_args(args))
            cleanup.push("cluster", cluster.close)
            note(f"starting the scheduler and 3 agents on a bridge (settings {settings})")
            cluster.start(layout)
            bench = Bench(cluster, args)
            if args.crashes:
                bench.crashes()
            running: list[float] = []
            if args.deaths or args.partitions:
                bench.spread_pods()
            if args.deaths:
                running = bench.deaths()
            if args.partitions:
                bench.partitions()
            compare(running, args)
    except (BenchError, ClusterError) as exc:
        failed = True
        print(f"bench.recovery: {exc}", file=sys.stderr)
        if cluster is not None:
            print(f"bench.recovery: cluster: {cluster.describe()}", file=sys.stderr)
        return 1
    except BaseException:
        failed = True
        raise
    finally:
        ignore_interrupts()
        cleanup.run()
    return 0


def _rmtree(path: Path, *, keep: bool) -> None:
    if keep:
        note(f"logs kept in {path} (scheduler/scheduler.log, node-*/agent.log)")
        return
    if not mounts_below(str(path)):  # never delete through a mount point
        shutil.rmtree(path, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
