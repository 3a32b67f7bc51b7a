"""The scheduler's Prometheus exposition: every family parses, the per-node heartbeat ages
included, and `?name[]=` restricts a scrape to the samples named."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from common.heap import GcPacer
from common.models import Container, Node, ObjectMeta, Pod, PodCondition, PodSpec, PodStatus
from scheduler.cluster import ClusterState, NodeState
from scheduler.config import SchedulerConfig
from scheduler.controlplane import ControlPlane
from scheduler.metrics import (
    GC_PAUSE_BUCKETS,
    HEARTBEAT_AGE,
    USE_CREATED,
    PlainHistogram,
    SchedulerMetrics,
)
from scheduler.objects import encode
from scheduler.store import KV, Event, Store


def _metrics(names: list[str]) -> SchedulerMetrics:
    """Metrics tracking a cluster of `names`, heartbeats 0, 1, 2... seconds ago."""
    cluster = ClusterState(cast(Store, None))  # no store is read here
    node = Node(metadata=ObjectMeta(name="n"))
    mono = time.monotonic()
    for i, name in enumerate(names):
        cluster.nodes[name] = NodeState(name=name, node=node, last_heartbeat=mono - i)
    metrics = SchedulerMetrics()
    metrics.track_cluster(cluster)
    metrics.scheduling_latency.observe(0.2)
    return metrics


def _families(text: bytes) -> dict[str, list[Sample]]:
    return {f.name: f.samples for f in text_string_to_metric_families(text.decode())}


def test_full_scrape_parses_with_a_line_per_node() -> None:
    """A full scrape is valid text format: the cluster's gauges and one age per node."""
    families = _families(_metrics(["a-0", "b.example", "c-2"]).exposition())
    ages = {s.labels["node"]: s.value for s in families[HEARTBEAT_AGE]}
    assert set(ages) == {"a-0", "b.example", "c-2"}
    assert 0 <= ages["a-0"] < 0.5 and 1 <= ages["b.example"] < 1.5 and 2 <= ages["c-2"] < 2.5
    assert {"corral_pods", "corral_connected_agents", "corral_scheduling_latency_seconds"} <= set(
        families
    )


def test_node_label_values_are_escaped() -> None:
    """A name the text format must escape (quote, backslash, newline) still parses back."""
    odd = 'we"ird\\name\nx'
    families = _families(_metrics([odd]).exposition())
    assert [s.labels["node"] for s in families[HEARTBEAT_AGE]] == [odd]


def test_name_restricts_the_samples() -> None:
    """`name[]` keeps only the samples named, the per-node one as the others. They are
    sample names, as prometheus-client's exposition matches them: a counter's `_total`, a
    histogram's `_sum`, and its family name matches nothing."""
    metrics = _metrics(["a", "b"])
    only = _families(metrics.exposition(["corral_connected_agents"]))
    assert set(only) == {"corral_connected_agents"}
    ages = _families(metrics.exposition([HEARTBEAT_AGE, "corral_binds_total"]))
    assert set(ages) == {HEARTBEAT_AGE, "corral_binds"}
    assert len(ages[HEARTBEAT_AGE]) == 2
    latency = "corral_scheduling_latency_seconds"
    assert _families(metrics.exposition([latency])) == {}
    sums = _families(metrics.exposition([f"{latency}_sum"]))
    assert [s.name for s in sums[latency]] == [f"{latency}_sum"]


def test_agent_frames_are_exported_as_a_counter() -> None:
    """The hub's per-type frame counts are `corral_agent_frames_total{type}`."""
    metrics = _metrics([])
    metrics.agent_frames["heartbeat"] += 2
    metrics.agent_frames["pod_status"] += 1
    families = _families(metrics.exposition(["corral_agent_frames_total"]))
    assert set(families) == {"corral_agent_frames"}
    counts = {s.labels["type"]: s.value for s in families["corral_agent_frames"]}
    assert counts == {"heartbeat": 2.0, "pod_status": 1.0}


def test_pods_by_phase_follow_the_store() -> None:
    """`corral_pods{phase}` is kept as pods are created, change phase and are deleted."""
    metrics = _metrics([])
    assert metrics._cluster is not None
    cluster = metrics._cluster

    def put(name: str, phase: str, revision: int) -> None:
        pod = Pod(
            metadata=ObjectMeta(name=name, uid=name),
            spec=PodSpec(containers=[Container(name="app", image="pause")]),
            status=PodStatus(phase=phase),
        )
        kv = KV(f"/pods/default/{name}", encode(pod), 1, revision, pod)
        cluster.apply(Event("PUT", kv, None, revision))

    put("a", "Pending", 1)
    put("b", "Pending", 2)
    put("a", "Running", 3)
    put("c", "Succeeded", 4)
    gone = cluster.pod_kvs["/pods/default/c"]
    cluster.apply(Event("DELETE", gone, gone, 5))
    samples = _families(metrics.exposition(["corral_pods"]))["corral_pods"]
    counts = {s.labels["phase"]: s.value for s in samples}
    assert counts == {"Pending": 1, "Running": 1, "Succeeded": 0, "Failed": 0, "Unknown": 0}


def test_running_unready_pods_are_counted_as_they_change() -> None:
    """`ClusterState.running_unready` (the status page's `pods.notReady`) follows pods
    that start, become ready, fail readiness, finish and go, without a recount."""
    cluster = ClusterState(cast(Store, None))
    revision = 0

    def put(name: str, phase: str, ready: str | None) -> None:
        nonlocal revision
        revision += 1
        conditions = [] if ready is None else [PodCondition(type="Ready", status=ready)]
        pod = Pod(
            metadata=ObjectMeta(name=name, uid=name),
            spec=PodSpec(containers=[Container(name="app", image="pause")]),
            status=PodStatus(phase=phase, conditions=conditions),
        )
        kv = KV(f"/pods/default/{name}", encode(pod), 1, revision, pod)
        cluster.apply(Event("PUT", kv, None, revision))

    put("a", "Pending", "False")  # not running: not counted
    put("b", "Running", None)  # no Ready condition yet: not counted
    assert cluster.running_unready == 0
    put("a", "Running", "False")
    put("b", "Running", "False")
    assert cluster.running_unready == 2
    put("a", "Running", "True")
    assert cluster.running_unready == 1
    put("b", "Failed", "False")
    assert cluster.running_unready == 0
    put("a", "Running", "False")
    gone = cluster.pod_kvs["/pods/default/a"]
    cluster.apply(Event("DELETE", gone, gone, revision + 1))
    assert cluster.running_unready == 0


def test_gc_pauses_are_a_histogram_per_generation() -> None:
    """Every collection while installed is counted under its generation, with its
    duration in the sum and the buckets; none once uninstalled."""
    metrics = SchedulerMetrics()
    pauses = metrics.gc_pauses
    gc.disable()  # only the collections asked for here
    pauses.install()
    try:
        gc.collect(2)
        gc.collect(2)
        gc.collect(0)
    finally:
        pauses.uninstall()
        gc.enable()
    gc.collect(2)  # after uninstall: not counted
    samples = _families(metrics.exposition())["corral_gc_pause_seconds"]

    def value(name: str, generation: str, le: str | None = None) -> float:
        [sample] = [
            s
            for s in samples
            if s.name == name and s.labels["generation"] == generation and s.labels.get("le") == le
        ]
        return sample.value

    assert value("corral_gc_pause_seconds_count", "2") == 2
    assert value("corral_gc_pause_seconds_count", "1") == 0
    assert value("corral_gc_pause_seconds_count", "0") == 1
    assert value("corral_gc_pause_seconds_bucket", "2", "+Inf") == 2
    assert 0 < value("corral_gc_pause_seconds_sum", "2") < 10
    buckets = [s.value for s in samples if s.name.endswith("_bucket")]
    assert len(buckets) == 3 * (len(GC_PAUSE_BUCKETS) + 1)
    assert gc.callbacks.count(pauses._callback) == 0


def test_collections_the_pacer_turned_into_freezes_are_no_pauses() -> None:
    metrics = SchedulerMetrics()
    pacer = GcPacer(min_gap=3600)
    metrics.track_gc(pacer)
    pauses = metrics.gc_pauses
    gc.disable()  # only the collections asked for here
    pacer.__enter__()  # after the hook, as the scheduler installs them: either order works
    pauses.install()
    try:
        gc.collect(0)  # run: a pause
        gc.collect(0)  # within min_gap: a freeze, not a pause
        gc.collect(0)
    finally:
        pauses.uninstall()
        pacer.__exit__(None, None, None)
        gc.unfreeze()  # as this test process was: nothing frozen
        gc.enable()
    samples = _families(metrics.exposition())["corral_gc_pause_seconds"]
    [count] = [
        s.value
        for s in samples
        if s.name == "corral_gc_pause_seconds_count" and s.labels["generation"] == "0"
    ]
    assert count == 1 and (pacer.collections, pacer.deferred) == (1, 2)


def test_the_gc_pacers_outcomes_are_counters() -> None:
    metrics = SchedulerMetrics()
    pacer = GcPacer()
    metrics.track_gc(pacer)
    pacer.collections, pacer.deferred = 3, 41
    samples = _families(metrics.exposition())["corral_gc_young"]
    counts = {s.labels["outcome"]: s.value for s in samples if s.name == "corral_gc_young_total"}
    assert counts == {"collected": 3, "frozen": 41}


async def test_the_control_plane_takes_its_gc_hook_out(tmp_path: Path) -> None:
    """Stopped, or failed to start (which nothing stops), a control plane leaves no
    hook of its own in gc.callbacks."""
    before = list(gc.callbacks)
    control = ControlPlane(SchedulerConfig(state_dir=str(tmp_path / "ok")))
    await control.start()
    assert gc.callbacks == [*before, control.metrics.gc_pauses._callback]
    await control.stop()
    assert gc.callbacks == before

    blocked = tmp_path / "file"
    blocked.write_text("a file where the state directory should be")
    failing = ControlPlane(SchedulerConfig(state_dir=str(blocked)))
    with pytest.raises(OSError):
        await failing.start()
    assert gc.callbacks == before


AMOUNTS = [0.0, 0.001, 0.0011, 0.3, 0.5, 1e-9, 59.9, 60, 61, 1e9, 0.1, 0.02]
BOUNDS = (0.001, 0.0025, 0.01, 0.1, 0.5, 1, 60)


def _text(collector: object) -> str:
    """A registry's exposition of `collector` alone, the `_created` values blanked out."""
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    return _blanked(generate_latest(registry))


def _blanked(text: bytes) -> str:
    """Exposition text with the `_created` values (each series's creation time) blanked."""
    return re.sub(r"(?m)^(\w+_created(\{.*\})?) .*$", r"\1 T", text.decode())


def test_plain_histogram_exports_what_histogram_does() -> None:
    """Fed the same amounts, the same text as prometheus-client's Histogram: bucket for
    bucket, the count, the sum to the last digit, and a `_created` unless
    PROMETHEUS_DISABLE_CREATED_SERIES is set (which both read)."""
    plain = PlainHistogram("h_seconds", "Some help", BOUNDS)
    real = Histogram("h_seconds", "Some help", buckets=BOUNDS, registry=None)
    for amount in AMOUNTS:
        plain.observe(amount)
        real.observe(amount)
    text = _text(plain)
    assert text == _text(real)
    assert 'h_seconds_bucket{le="+Inf"} 12.0' in text
    assert ("h_seconds_created " in text) == USE_CREATED
    # Empty as from the start (no observation yet), as Histogram's.
    fresh = Histogram("h_seconds", "Some help", buckets=BOUNDS, registry=None)
    assert _text(PlainHistogram("h_seconds", "Some help", BOUNDS)) == _text(fresh)


def test_plain_histogram_labels_are_series_as_histogram_ones() -> None:
    """Labelled: a series per label values, made at first use and exported in that order
    (none before), each as Histogram exports its children; `created=False` drops
    `_created` alone."""
    plain = PlainHistogram("h_seconds", "Some help", BOUNDS, ["kind", "zone"])
    real = Histogram("h_seconds", "Some help", ["kind", "zone"], buckets=BOUNDS, registry=None)
    assert _text(plain) == _text(real)
    for i, amount in enumerate(AMOUNTS):
        plain.labels("ab"[i % 2], "z").observe(amount)
        real.labels("ab"[i % 2], "z").observe(amount)
    assert _text(plain) == _text(real)
    bare = PlainHistogram("h_seconds", "Some help", BOUNDS, ["kind", "zone"], created=False)
    bare.labels("a", "z").observe(0.2)
    text = _text(bare)
    assert "_created" not in text and 'h_seconds_count{kind="a",zone="z"} 1.0' in text
    with pytest.raises(ValueError, match="label values"):
        plain.labels("a")
    with pytest.raises(ValueError, match="has labels"):
        plain.observe(1.0)


def test_plain_histogram_batch_is_observe_for_each() -> None:
    """`observe_all` in batches (an empty one too) counts and sums as `observe` per
    amount, bounds and beyond the largest included."""
    one, many = PlainHistogram("h", "h", BOUNDS), PlainHistogram("h", "h", BOUNDS)
    for amount in AMOUNTS:
        one.observe(amount)
    many.observe_all(AMOUNTS[:4])
    many.observe_all([])
    many.observe_all(AMOUNTS[4:])
    assert many.labels().counts == one.labels().counts == [3, 1, 0, 2, 2, 0, 2, 2]
    assert many.labels().sum == one.labels().sum == sum(AMOUNTS)


@pytest.mark.parametrize("buckets", [(), (1, 0.5), (-1, 1), (1, float("inf"))])
def test_plain_histogram_bounds_are_checked(buckets: tuple[float, ...]) -> None:
    """Finite, non-negative, increasing bounds only (+Inf is always added)."""
    with pytest.raises(ValueError, match="buckets"):
        PlainHistogram("h", "h", buckets)


async def test_store_commits_are_measured(tmp_path: Path) -> None:
    """A control plane's /metrics counts its store's group commits and transactions and
    has each commit's duration in a histogram."""
    histogram = "corral_store_commit_duration_seconds"

    def figures() -> tuple[float, float, float, float]:
        families = _families(control.metrics.exposition())
        timed = {s.name: s.value for s in families[histogram]}
        return (
            families["corral_store_commits"][0].value,
            families["corral_store_transactions"][0].value,
            timed[f"{histogram}_count"],
            timed[f"{histogram}_sum"],
        )

    control = ControlPlane(SchedulerConfig(state_dir=str(tmp_path)))
    await control.start()
    try:
        commits, transactions, count, total = figures()
        assert count == commits  # attached before the store's first write
        writes = [control.store.put(f"/test/{i}", b"x") for i in range(50)]
        await asyncio.wait_for(asyncio.gather(*writes), 10)
        after = figures()
        assert (after[0], after[1]) == (control.store.commits, control.store.writes)
    finally:
        await control.stop()
    assert 1 <= after[0] - commits < 50  # the 50 concurrent writes shared commits
    assert after[1] - transactions >= 50
    assert after[2] - count == after[0] - commits  # one duration per commit
    assert 0 < after[3] - total < 10


def test_binds_total_is_the_scraped_counter() -> None:
    """`binds_total()` (polled by bench.cpu_per_pod) reads what a scrape reads."""
    metrics = SchedulerMetrics()
    assert metrics.binds_total() == 0
    metrics.binds.inc(3)
    assert metrics.binds_total() == 3 == metrics.registry.get_sample_value("corral_binds_total")


def test_http_latency_exports_what_its_histogram_did() -> None:
    """`corral_http_request_duration_seconds{method}`, once a prometheus-client Histogram
    defined as below, scrapes as that Histogram fed the same requests: same help, label,
    buckets and series order, and label values escaped alike."""
    name = "corral_http_request_duration_seconds"
    registry = CollectorRegistry()
    real = Histogram(
        name,
        "API request latency",
        ["method"],
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
        registry=registry,
    )
    metrics = _metrics(["a"])
    assert _text(metrics.http_latency) == _text(real)  # no request yet: no series
    odd = 'we"ird\\method\nx'
    for i, amount in enumerate([*AMOUNTS, 0.0005, 5, 0.00049]):
        method = ("GET", "POST", odd)[i % 3]
        real.labels(method=method).observe(amount)
        metrics.http_latency.labels(method).observe(amount)
    # The scrape's own path, restricted to the family (`name[]` names samples).
    samples = [f"{name}{suffix}" for suffix in ("_bucket", "_count", "_sum", "_created")]
    text = _blanked(metrics.exposition(samples))
    assert text == _blanked(generate_latest(registry.restricted_registry(samples)))
    assert text == _text(real)
    assert 'method="we\\"ird\\\\method\\nx"' in text
    assert f'{name}_bucket{{le="0.0005",method="GET"}} 2.0' in text


# Prints the exposition of a PlainHistogram and a Histogram fed alike (unlabelled and
# labelled), and of a whole SchedulerMetrics.
_CREATED_SCRIPT = """
import json
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from scheduler.metrics import PlainHistogram, SchedulerMetrics

def text(collector):
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()

texts = {"plain": [], "real": []}
for labels in ((), ("kind",)):
    plain = PlainHistogram("h_seconds", "Some help", (0.1, 1), labels)
    real = Histogram("h_seconds", "Some help", labels, buckets=(0.1, 1), registry=None)
    for histogram in (plain, real):
        (histogram.labels("a") if labels else histogram).observe(0.5)
    texts["plain"].append(text(plain))
    texts["real"].append(text(real))
texts["scrape"] = SchedulerMetrics().exposition().decode()
print(json.dumps(texts))
"""


@pytest.mark.parametrize(
    ("setting", "created"), [("True", False), ("1", False), ("t", False), ("no", True)]
)
def test_plain_histogram_follows_prometheus_disable_created_series(
    setting: str, created: bool
) -> None:
    """`PROMETHEUS_DISABLE_CREATED_SERIES`, read at import as prometheus-client reads it
    (only "true", "1" and "t", in any case, disable): a `PlainHistogram` exports `_created`
    exactly when a Histogram does, so a scrape has none at all once it is set. In a fresh
    interpreter, as both read the variable at import."""
    root = Path(__file__).resolve().parents[2]
    path = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PROMETHEUS_DISABLE_CREATED_SERIES": setting, "PYTHONPATH": path}
    run = subprocess.run(
        [sys.executable, "-c", _CREATED_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    texts = json.loads(run.stdout)
    plain, real = ([_blanked(t.encode()) for t in texts[k]] for k in ("plain", "real"))
    assert plain == real
    assert all(("h_seconds_created" in text) is created for text in texts["real"])
    assert ("_created" in texts["scrape"]) is created
