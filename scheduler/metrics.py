"""Prometheus metrics of the scheduler, in a registry of its own (one per app).

A scrape is rendered on the event loop, so its cost stalls API requests and agent frames
alike. prometheus-client formats every sample through a few Python calls (a named tuple,
label-name validation and escaping, a float conversion): about 7 µs a line, which is
tens of milliseconds for the one family with a line per node. That family
(`corral_node_heartbeat_age_seconds`) is therefore written here directly, in the same text
format, after the registry's own families (`SchedulerMetrics.exposition`).
"""

from __future__ import annotations

import bisect
import gc
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

if TYPE_CHECKING:
    from scheduler.cluster import ClusterState

PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")
HEARTBEAT_AGE = "corral_node_heartbeat_age_seconds"
_HEARTBEAT_AGE_HEAD = (
    f"# HELP {HEARTBEAT_AGE} Seconds since each node's last heartbeat\n"
    f"# TYPE {HEARTBEAT_AGE} gauge\n"
)


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.scheduling_latency = Histogram(
            "corral_scheduling_latency_seconds",
            "Time from a pod becoming pending to its durable bind to a node",
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=self.registry,
        )
        self.placement_seconds = Histogram(
            "corral_placement_duration_seconds",
            "CPU time of one placement decision (filters and scores)",
            buckets=(0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01),
            registry=self.registry,
        )
        self.placement_attempts = PromCounter(
            "corral_placement_attempts_total",
            "Placement attempts by result (scheduled, unschedulable)",
            ["result"],
            registry=self.registry,
        )
        self.binds = PromCounter(
            "corral_binds_total", "Pods durably bound to a node", registry=self.registry
        )
        self.http_requests = PromCounter(
            "corral_http_requests_total",
            "API requests by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.http_latency = Histogram(
            "corral_http_request_duration_seconds",
            "API request latency",
            ["method"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        # Frames received on agent links by type, counted by the hub in a plain dict (a
        # labelled child's inc() takes a lock: a tenth of a heartbeat's own work), exported
        # at scrape time by `_FramesCollector`.
        self.agent_frames: Counter[str] = Counter()
        self.registry.register(_FramesCollector(self.agent_frames))
        self.evictions = PromCounter(
            "corral_node_evictions_total",
            "Pods taken off lost or drained nodes, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.stalls = PromCounter(
            "corral_scheduler_stalls_total",
            "Times the event loop ran nothing for half a node grace or more (node timeouts "
            "then restart from the wake)",
            registry=self.registry,
        )
        self.gc_pauses = GcPauses()
        self.registry.register(self.gc_pauses)
        self._cluster: ClusterState | None = None

    def track_cluster(self, cluster: ClusterState) -> None:
        self.registry.register(_ClusterCollector(cluster))
        self._cluster = cluster

    def exposition(self, names: Sequence[str] = ()) -> bytes:
        """The Prometheus text (format 0.0.4) of every family, or only of the families in
        `names` (`/metrics?name[]=...`, as prometheus-client's own exposition has it)."""
        registry = self.registry.restricted_registry(names) if names else self.registry
        text = generate_latest(registry)
        if self._cluster is not None and (not names or HEARTBEAT_AGE in names):
            text += heartbeat_ages(self._cluster, time.monotonic())
        return text


def observe_all(histogram: Histogram, amounts: Sequence[float]) -> None:
    """`histogram.observe(amount)` for each of `amounts`, in order (an unlabelled histogram,
    no exemplars): the same buckets and the same sum, the sum added up in the same order,
    but one increment of the sum and of each bucket touched instead of two locked
    increments and a Python frame per amount. For the per-pod timings of a scheduling
    batch, recorded once the batch is done (nothing reads the metrics in the middle)."""
    if not amounts:
        return
    bounds = histogram._upper_bounds
    counts = [0] * len(bounds)
    for amount in amounts:
        # The first bucket whose bound is >= amount, as `observe` finds it.
        counts[bisect.bisect_left(bounds, amount)] += 1
    total = histogram._sum.get()
    for amount in amounts:
        total += amount
    histogram._sum.set(total)
    buckets = histogram._buckets
    for i, count in enumerate(counts):
        if count:
            buckets[i].inc(count)


def heartbeat_ages(cluster: ClusterState, mono: float) -> bytes:
    """`corral_node_heartbeat_age_seconds{node}`, a line per node, formatted directly: a
    tenth of the cost of the same lines through prometheus-client (module docstring)."""
    nodes = cluster.nodes
    # Node names are DNS subdomains, which the text format need not escape: one scan of
    # them all instead of an escaping call per line; `_escaped` is for anything else.
    names = "".join(nodes)
    label = _escaped if "\\" in names or '"' in names or "\n" in names else str
    lines = [_HEARTBEAT_AGE_HEAD]
    lines += [
        f'{HEARTBEAT_AGE}{{node="{label(name)}"}} {mono - state.last_heartbeat:.3f}\n'
        for name, state in nodes.items()
    ]
    return "".join(lines).encode()


def _escaped(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


GC_PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GcPauses(Collector):
    """`corral_gc_pause_seconds{generation}`: how long the cyclic garbage collector stopped
    this process, a histogram per generation (Go's `go_gc_duration_seconds`, which
    prometheus-client has no counterpart of for Python).

    The scheduler keeps every object in memory, so a collection of an old generation
    traverses much of the heap and stalls the API and the agent links for as long
    (seconds, with tens of thousands of pods: docs/benchmarks.md). Recorded by a
    `gc.callbacks` hook, which runs on whichever thread allocated, in the middle of any
    allocation: it only adds to plain lists (no lock, no prometheus child, which takes
    one). CPython runs one collection at a time, so a pause's start and stop pair up.
    """

    def __init__(self) -> None:
        # Per generation: counts per bucket (the last is beyond the largest bound), sum.
        self.counts = [[0] * (len(GC_PAUSE_BUCKETS) + 1) for _ in range(3)]
        self.seconds = [0.0] * 3
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = info["generation"]
        self.seconds[generation] += pause
        # bisect_left: a pause equal to a bound belongs to that bucket (`le`).
        self.counts[generation][bisect.bisect_left(GC_PAUSE_BUCKETS, pause)] += 1

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(
            "corral_gc_pause_seconds",
            "Pauses of the cyclic garbage collector, by generation (2 traverses the heap)",
            labels=["generation"],
        )
        for generation, counts in enumerate(self.counts):
            cumulative, buckets = 0, []
            for bound, count in zip((*GC_PAUSE_BUCKETS, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            family.add_metric([str(generation)], buckets, sum_value=self.seconds[generation])
        yield family


class _FramesCollector(Collector):
    """`corral_agent_frames_total{type}` from the hub's counts."""

    def __init__(self, counts: Counter[str]) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        frames = CounterMetricFamily(
            "corral_agent_frames", "Frames received on the agent link, by type", labels=["type"]
        )
        for kind, count in sorted(self._counts.items()):
            frames.add_metric([kind], count)
        yield frames


class _ClusterCollector(Collector):
    """Gauges computed at scrape time from the in-memory cluster state; the per-node
    heartbeat ages are written by `heartbeat_ages` instead (module docstring)."""

    def __init__(self, cluster: ClusterState) -> None:
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        cluster = self._cluster
        pods = GaugeMetricFamily("corral_pods", "Pods by phase", labels=["phase"])
        for phase in PHASES:
            pods.add_metric([phase], cluster.phases.get(phase, 0))
        yield pods
        yield GaugeMetricFamily(
            "corral_pending_pods", "Pods waiting for a node", value=len(cluster.pending)
        )
        oldest = min(cluster.pending.values(), default=None)  # for "pending too long" alerts
        yield GaugeMetricFamily(
            "corral_pending_oldest_seconds",
            "How long the pod waiting longest for a node has waited (0: none waits)",
            value=0.0 if oldest is None else round(time.monotonic() - oldest, 3),
        )
        nodes = GaugeMetricFamily("corral_nodes", "Nodes by readiness", labels=["condition"])
        ready = sum(1 for n in cluster.nodes.values() if n.ready)
        nodes.add_metric(["Ready"], ready)
        nodes.add_metric(["NotReady"], len(cluster.nodes) - ready)
        yield nodes
        yield GaugeMetricFamily(
            "corral_connected_agents",
            "Agents holding a link to this scheduler",
            value=sum(1 for n in cluster.nodes.values() if n.connected),
        )
        # One gauge for all nodes, not one per node: what an alert on stuck agents needs.
        since = [n.desired_unacked_since for n in cluster.nodes.values()]
        oldest_unacked = min((t for t in since if t is not None), default=None)
        yield GaugeMetricFamily(
            "corral_agent_desired_unacked_seconds",
            "Age of the oldest desired-state change an agent has not acknowledged applying"
            " (0: every connected agent is up to date)",
            value=0.0 if oldest_unacked is None else round(time.monotonic() - oldest_unacked, 3),
        )
