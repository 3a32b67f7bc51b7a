"""Prometheus metrics of the scheduler, in a registry of its own (one per app).

A scrape is rendered on the event loop, so its cost stalls API requests and agent frames
alike. prometheus-client formats every sample through a few Python calls (a named tuple,
label-name validation and escaping, a float conversion): about 7 µs a line, which is
tens of milliseconds for the one family with a line per node. That family
(`corral_node_heartbeat_age_seconds`) is therefore written here directly, in the same text
format, after the registry's own families (`SchedulerMetrics.exposition`).
"""

from __future__ import annotations

import gc
import itertools
import math
import os
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    Sample,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from common.models import POD_PHASES

if TYPE_CHECKING:
    from common.heap import GcPacer
    from scheduler.cluster import ClusterState
    from scheduler.store import SqliteStore

HEARTBEAT_AGE = "corral_node_heartbeat_age_seconds"
_HEARTBEAT_AGE_HEAD = (
    f"# HELP {HEARTBEAT_AGE} Seconds since each node's last heartbeat\n"
    f"# TYPE {HEARTBEAT_AGE} gauge\n"
)
# Whether a `PlainHistogram` exports `_created` series: `PROMETHEUS_DISABLE_CREATED_SERIES`
# read at import with prometheus-client's own test (`prometheus_client.metrics`), so that
# the setting drops them from these histograms as from the registry's Counters. That
# module's `disable_created_metrics()` is not followed: it flips a private global, and
# nothing here calls it.
_DISABLE_CREATED = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
USE_CREATED = _DISABLE_CREATED.lower() not in ("true", "1", "t")


class SchedulerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # Observed a batch at a time, on the event loop thread (`PlainHistogram`).
        self.scheduling_latency = PlainHistogram(
            "corral_scheduling_latency_seconds",
            "Time from a pod becoming pending to its durable bind to a node",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.registry.register(self.scheduling_latency)
        self.placement_seconds = PlainHistogram(
            "corral_placement_duration_seconds",
            "CPU time of one placement decision (filters and scores)",
            (0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.01),
        )
        self.registry.register(self.placement_seconds)
        self.placement_attempts = PromCounter(
            "corral_placement_attempts_total",
            "Placement attempts by result (scheduled, unschedulable)",
            ["result"],
            registry=self.registry,
        )
        self.binds = PromCounter(
            "corral_binds_total", "Pods durably bound to a node", registry=self.registry
        )
        self.last_bind = PromGauge(
            "corral_last_bind_timestamp_seconds",
            "Unix time at which the latest bind was durable (0: none since the scheduler started)",
            registry=self.registry,
        )
        self.http_requests = PromCounter(
            "corral_http_requests_total",
            "API requests by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        # Observed once per request, on the event loop thread (`PlainHistogram`).
        self.http_latency = PlainHistogram(
            "corral_http_request_duration_seconds",
            "API request latency",
            (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            ["method"],
        )
        self.registry.register(self.http_latency)
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
        # Fed by the node lifecycle controller's timer, which wakes at least twice a second.
        self.loop_lag = PlainHistogram(
            "corral_event_loop_lag_seconds",
            "How late the event loop ran a timer that was due: what every API request and "
            "agent frame also waits behind when the scheduler is saturated",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.registry.register(self.loop_lag)
        self.gc_pauses = GcPauseHook()
        self.registry.register(self.gc_pauses.histogram)
        self._cluster: ClusterState | None = None

    def binds_total(self) -> float:
        """`corral_binds_total` as a scrape has it, through the counter's own `collect()`:
        cheap enough to poll (bench.cpu_per_pod does, inside the CPU it measures), where
        `registry.get_sample_value` would collect every family, the cluster's included."""
        for family in self.binds.collect():
            for sample in family.samples:
                if sample.name == "corral_binds_total":
                    return sample.value
        raise LookupError("corral_binds_total has no sample")

    def track_cluster(self, cluster: ClusterState) -> None:
        self.registry.register(_ClusterCollector(cluster))
        self._cluster = cluster

    def track_store(self, store: SqliteStore) -> None:
        """The store's group commits: how long each takes as its writers see it (every
        acknowledged write waited for one), how many there were and how many transactions
        they carried. Attach before the store's first write, so that the histogram's count
        is the commits counter's."""
        commit_seconds = PlainHistogram(
            "corral_store_commit_duration_seconds",
            "Time one group commit of the store took, from taking the queued writes to "
            "their being durable and published on the event loop (the transaction, its "
            "fsync, and the hand-back to the loop)",
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.registry.register(commit_seconds)
        self.registry.register(_StoreCollector(store))
        store.on_commit = commit_seconds.observe

    def track_gc(self, pacer: GcPacer) -> None:
        """The process's paced young collections (`common.heap.GcPacer`)."""
        self.registry.register(_GcPacerCollector(pacer))
        self.gc_pauses.pacer = pacer

    def exposition(self, names: Sequence[str] = ()) -> bytes:
        """The Prometheus text (format 0.0.4) of every family, or only the samples named in
        `names` (`/metrics?name[]=...`). As in prometheus-client's own exposition, these are
        sample names: a counter's `corral_binds_total`, a histogram's `..._bucket`, `..._sum`
        and `..._count` (its family name alone matches nothing)."""
        registry = self.registry.restricted_registry(names) if names else self.registry
        text = generate_latest(registry)
        if self._cluster is not None and (not names or HEARTBEAT_AGE in names):
            text += heartbeat_ages(self._cluster, time.monotonic())
        return text


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


class PlainHistogram(Collector):
    """A histogram kept as plain counts per bucket and a sum, optionally in series by
    labels, exported as prometheus-client's `Histogram` exports one: the same samples
    (`_bucket` per bound and +Inf, `_count`, `_sum`, `_created` unless `created` is
    false or `PROMETHEUS_DISABLE_CREATED_SERIES` set, `USE_CREATED`), so the same text.

    `Histogram.observe` takes two locks and walks the bounds in Python; here an amount is
    one bisection, one increment and one addition, and `observe_all` records a batch in
    one pass. Nothing is locked, so each user must have one writer at a time, and a
    scrape that runs while a write is under way may see an amount counted and not yet
    summed: the scheduling, store commit, API request and loop lag histograms are written
    and scraped on the event loop thread (no interleaving at all), the GC pauses written by
    the GC callback alone (`GcPauseHook`).
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        labelnames: Sequence[str] = (),
        *,
        created: bool = True,
    ) -> None:
        bounds = tuple(float(bound) for bound in buckets)
        # Non-negative, as Histogram exports `_sum` only then (and finite: +Inf is added).
        if not bounds or list(bounds) != sorted(bounds) or bounds[0] < 0 or bounds[-1] == math.inf:
            raise ValueError(f"{name}: buckets must be finite, non-negative and increasing")
        self.name, self.documentation = name, documentation
        self.labelnames = tuple(labelnames)
        self._bounds = bounds
        self._les = [*(floatToGoString(bound) for bound in bounds), "+Inf"]
        self._created = created and USE_CREATED
        self._series: dict[tuple[str, ...], HistogramSeries] = {}
        if not self.labelnames:
            self.labels()  # exported from the start, as Histogram's unlabelled series

    def labels(self, *values: str) -> HistogramSeries:
        """The series of these label values (in `labelnames` order), made at first use."""
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: label values for {self.labelnames} expected")
            created = time.time() if self._created else None
            series = self._series[values] = HistogramSeries(self._bounds, created)
        return series

    def observe(self, amount: float) -> None:
        self._unlabelled().observe(amount)

    def observe_all(self, amounts: Iterable[float]) -> None:
        self._unlabelled().observe_all(amounts)

    def _unlabelled(self) -> HistogramSeries:
        if self.labelnames:
            raise ValueError(f"{self.name} has labels: observe through labels()")
        return self._series[()]

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, series in self._series.items():
            cumulative = itertools.accumulate(series.counts)
            family.add_metric(values, list(zip(self._les, cumulative, strict=True)), series.sum)
            if series.created is not None:
                labels = dict(zip(self.labelnames, values, strict=True))
                family.samples.append(Sample(f"{self.name}_created", labels, series.created))
        yield family


class HistogramSeries:
    """One series of a `PlainHistogram`: plain counts per bucket (the last for amounts
    beyond the largest bound) and the sum."""

    __slots__ = ("bounds", "counts", "created", "sum")

    def __init__(self, bounds: tuple[float, ...], created: float | None) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.created = created

    def observe(self, amount: float) -> None:
        # bisect_left: an amount equal to a bound belongs to its bucket (`le`).
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount

    def observe_all(self, amounts: Iterable[float]) -> None:
        """`observe` each of `amounts`, in order (so the same sum, to the last bit), in
        one pass with no call per amount but the bisection: for the per-pod timings of a
        scheduling batch, recorded once the batch is done."""
        bounds, counts, total, find = self.bounds, self.counts, self.sum, bisect_left
        for amount in amounts:
            counts[find(bounds, amount)] += 1
            total += amount
        self.sum = total


GC_PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class GcPauseHook:
    """`corral_gc_pause_seconds{generation}`: how long the cyclic garbage collector stopped
    this process, a histogram per generation (Go's `go_gc_duration_seconds`, which
    prometheus-client has no counterpart of for Python).

    The scheduler keeps every object in memory: a collection that traversed it would
    stall the API and the agent links for seconds with tens of thousands of pods, which
    is why what survives a young collection is frozen (`common/heap.py`); this says
    whether that holds. Recorded by a
    `gc.callbacks` hook, which runs on whichever thread allocated, in the middle of any
    allocation: so into a `PlainHistogram` (no lock, no prometheus child, which takes
    one). CPython runs one collection at a time, so a pause's start and stop pair up and
    the hook is the histogram's only writer at any moment.
    """

    def __init__(self) -> None:
        # No `_created`: the family never had one, and a scrape's text stays as it was.
        self.histogram = PlainHistogram(
            "corral_gc_pause_seconds",
            "Pauses of the cyclic garbage collector, by generation (2 traverses the heap)",
            GC_PAUSE_BUCKETS,
            ["generation"],
            created=False,
        )
        self._generations = [self.histogram.labels(str(g)) for g in range(3)]
        self._started = 0.0
        # The process's pacer, if it has one: a collection it turned into a freeze
        # traversed nothing, and is no pause (`corral_gc_young_total` counts those).
        self.pacer: GcPacer | None = None

    def install(self) -> None:
        gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        if self.pacer is not None and self.pacer.deferring:
            return
        self._generations[info["generation"]].observe(time.perf_counter() - self._started)


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


class _GcPacerCollector(Collector):
    """What the pacer did with young generations past its threshold, read at scrape time.
    (Not the count of frozen objects: `gc.get_freeze_count()` walks them all, 20 ms for
    three million.)"""

    def __init__(self, pacer: GcPacer) -> None:
        self._pacer = pacer

    def collect(self) -> Iterator[Metric]:
        young = CounterMetricFamily(
            "corral_gc_young",
            "Young generations past the threshold: collected, or frozen uncollected because "
            "one was collected less than a second before (the event loop was busy)",
            labels=["outcome"],
        )
        young.add_metric(["collected"], self._pacer.collections)
        young.add_metric(["frozen"], self._pacer.deferred)
        yield young


class _StoreCollector(Collector):
    """The store's own counts of commits and transactions, read at scrape time."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "corral_store_commits",
            "Group commits (transactions and fsyncs) the store wrote",
            value=self._store.commits,
        )
        yield CounterMetricFamily(
            "corral_store_transactions",
            "Write transactions the store made durable (many share a commit)",
            value=self._store.writes,
        )


class _ClusterCollector(Collector):
    """Gauges computed at scrape time from the in-memory cluster state; the per-node
    heartbeat ages are written by `heartbeat_ages` instead (module docstring)."""

    def __init__(self, cluster: ClusterState) -> None:
        self._cluster = cluster

    def collect(self) -> Iterator[Metric]:
        cluster = self._cluster
        pods = GaugeMetricFamily("corral_pods", "Pods by phase", labels=["phase"])
        for phase in POD_PHASES:
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
        ready = cluster.totals.ready
        nodes.add_metric(["Ready"], ready)
        nodes.add_metric(["NotReady"], len(cluster.nodes) - ready)
        yield nodes
        yield GaugeMetricFamily(
            "corral_connected_agents",
            "Agents holding a link to this scheduler",
            value=cluster.totals.connected,
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
