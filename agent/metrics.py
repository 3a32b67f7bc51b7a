"""The agent's Prometheus metrics, served on a small loopback-only HTTP server (`metrics_listen`).

Gauges are computed at scrape time from the supervisor (pods by phase, containers by
state, restart counts); counters and histograms are fed by the pod events the
supervisor emits anyway (Started, Failed, OOMKilled, Unhealthy), so the supervisor
needs no hooks of its own. docs/operations.md lists every metric.

The server is the agent's only listening socket and binds to 127.0.0.1 by default:
a node exposes nothing to the network unless its operator says so.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from common.models import Pod

if TYPE_CHECKING:
    from agent.link import SchedulerLink
    from agent.supervisor import EventSink, Supervisor

_LOGGER = logging.getLogger(__name__)

PHASES = ("Pending", "Running", "Succeeded", "Failed")
# The runtimes' Pulled event after a pull: 'Successfully pulled image "x" in 1.234s ...'.
_PULLED = re.compile(r"^Successfully pulled image .* in ([0-9.]+)s\b")
PROBES = ("liveness", "readiness", "startup")
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
PULL_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class AgentMetrics:
    """The agent's registry; `watch` feeds it from the supervisor's events."""

    def __init__(self, supervisor: Supervisor, link: SchedulerLink | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._supervisor = supervisor
        self.launch_latency = Histogram(
            "corral_agent_container_launch_seconds",
            "Time from the agent creating a pod to each of its containers first running",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.image_pull = Histogram(
            "corral_agent_image_pull_duration_seconds",
            "Time to pull an image into the node's store (from the runtimes' Pulled events)",
            buckets=PULL_BUCKETS,
            registry=self.registry,
        )
        self.starts = PromCounter(
            "corral_agent_container_starts_total",
            "Containers started (first starts and restarts)",
            registry=self.registry,
        )
        self.start_failures = PromCounter(
            "corral_agent_container_start_failures_total",
            "Containers that could not be started, by reason (ErrImageNeverPull, ...)",
            ["reason"],
            registry=self.registry,
        )
        self.oom_kills = PromCounter(
            "corral_agent_oom_kills_total",
            "Containers killed for exceeding their memory limit",
            registry=self.registry,
        )
        self.probe_failures = PromCounter(
            "corral_agent_probe_failures_total",
            "Failed probe attempts, by probe (liveness, readiness, startup)",
            ["probe"],
            registry=self.registry,
        )
        for probe in PROBES:
            self.probe_failures.labels(probe=probe)  # present at 0 from the start
        self.registry.register(_PodCollector(supervisor, link))

    def watch(self, supervisor: Supervisor) -> None:
        """Observe every pod event before it goes on to its current sink (the link)."""
        downstream: EventSink = supervisor.on_event

        def on_event(pod: Pod, reason: str, message: str, kind: str) -> None:
            try:
                self.observe(pod, reason, message)
            except Exception:  # a metric must never break event delivery
                _LOGGER.exception("metrics: observing %s failed", reason)
            downstream(pod, reason, message, kind)

        supervisor.on_event = on_event

    def observe(self, pod: Pod, reason: str, message: str) -> None:
        if reason == "Started":
            self.starts.inc()
            self._launched(pod, message.removeprefix("Started container "))
        elif reason == "Failed":
            # "Error: <reason>: <text>" (supervisor): the runtime's reason is the label.
            failure = message.removeprefix("Error: ").split(":", 1)[0].strip()
            self.start_failures.labels(reason=failure if failure.isalnum() else "Other").inc()
        elif reason == "OOMKilled":
            self.oom_kills.inc()
        elif reason == "Pulled" and (pulled := _PULLED.search(message)):
            self.image_pull.observe(float(pulled.group(1)))
        elif reason == "Unhealthy":
            probe = message.split(" ", 1)[0].lower()  # "Liveness probe failed: ..."
            if probe in PROBES:
                self.probe_failures.labels(probe=probe).inc()

    def _launched(self, pod: Pod, container: str) -> None:
        """First start of a container of this incarnation: create → running."""
        worker = self._supervisor.workers.get(pod.metadata.uid or "")
        if worker is None or worker.start_time is None:
            return
        record = worker.containers.get(container)
        # The event comes before the record is marked started, and restarts count up
        # before they start: a first start is one never started with no restarts.
        if record is None or record.ever_started or record.restart_count:
            return
        elapsed = (datetime.now(UTC) - worker.start_time).total_seconds()
        self.launch_latency.observe(max(0.0, elapsed))


class _PodCollector(Collector):
    """Gauges of what runs now, computed from the supervisor at scrape time."""

    def __init__(self, supervisor: Supervisor, link: SchedulerLink | None) -> None:
        self._supervisor = supervisor
        self._link = link

    def collect(self) -> Iterator[Metric]:
        phases: Counter[str] = Counter()
        states: Counter[str] = Counter()
        waiting: Counter[str] = Counter()
        restarts = CounterMetricFamily(
            "corral_agent_container_restarts",
            "Restarts of each container of each pod on this node",
            labels=["namespace", "pod", "container"],
        )
        for worker in list(self._supervisor.workers.values()):
            status = worker.status()
            phases[status.phase] += 1
            meta = worker.pod.metadata
            for cs in status.container_statuses:
                if cs.state.running is not None:
                    states["running"] += 1
                elif cs.state.terminated is not None:
                    states["terminated"] += 1
                else:
                    states["waiting"] += 1
                    waiting[(cs.state.waiting and cs.state.waiting.reason) or "Unknown"] += 1
                restarts.add_metric(
                    [meta.namespace or "default", meta.name, cs.name], cs.restart_count
                )
        pods = GaugeMetricFamily(
            "corral_agent_pods", "Pods on this node by phase", labels=["phase"]
        )
        for phase in PHASES:
            pods.add_metric([phase], phases.get(phase, 0))
        yield pods
        containers = GaugeMetricFamily(
            "corral_agent_containers", "Containers on this node by state", labels=["state"]
        )
        for state in ("running", "waiting", "terminated"):
            containers.add_metric([state], states.get(state, 0))
        yield containers
        reasons = GaugeMetricFamily(
            "corral_agent_containers_waiting",
            "Waiting containers by reason (CrashLoopBackOff, ContainerCreating, ...)",
            labels=["reason"],
        )
        for reason, count in sorted(waiting.items()):
            reasons.add_metric([reason], count)
        yield reasons
        yield restarts
        yield GaugeMetricFamily(
            "corral_agent_stopping_pods",
            "Pods being stopped (grace period running)",
            value=len(self._supervisor._stopping),
        )
        if self._link is not None:
            yield GaugeMetricFamily(
                "corral_agent_scheduler_connected",
                "1 while the agent holds its link to the scheduler",
                value=1 if self._link.connected.is_set() else 0,
            )


async def serve_metrics(listen: str, registry: CollectorRegistry) -> web.AppRunner | None:
    """Serve `/metrics` on HOST:PORT; None when `listen` is empty (disabled).

    A port already in use is logged, not fatal: pods matter more than their metrics."""
    if not listen:
        return None
    host, _, port = listen.rpartition(":")

    async def metrics(request: web.Request) -> web.Response:
        started = time.perf_counter()
        body = generate_latest(registry)
        _LOGGER.debug("metrics scraped in %.1fms", (time.perf_counter() - started) * 1000)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host.strip("[]"), int(port), reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        _LOGGER.error("cannot serve metrics on %s: %s; running without them", listen, exc)
        await runner.cleanup()
        return None
    for sock in getattr(site._server, "sockets", None) or []:  # the real port if 0 was asked
        bound_host, bound_port = sock.getsockname()[:2]
        _LOGGER.info("serving metrics on http://%s:%d/metrics", bound_host, bound_port)
    return runner
