"""The status page's parts without a server: which pods are listed, why, and escaping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.cpu_per_pod import ready_node
from common.models import Event, Pod
from scheduler.api import ui
from scheduler.cluster import ClusterState
from scheduler.objects import encode, node_key
from scheduler.overview import Overview
from scheduler.store import Event as StoreEvent
from scheduler.store import Op
from scheduler.store.sqlite import SqliteStore

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
EVIL = '<script>alert("x")</script>'


def pod(name: str = "web", node: str | None = "node-1", **status: Any) -> Pod:
    return Pod.model_validate(
        {
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"containers": [{"name": "main", "image": "busybox"}], "nodeName": node},
            "status": status,
        }
    )


def waiting(reason: str, message: str = "", restarts: int = 0) -> dict[str, Any]:
    return {
        "name": "main",
        "restartCount": restarts,
        "state": {"waiting": {"reason": reason, "message": message}},
    }


def test_healthy_pods_are_not_listed() -> None:
    """Running and ready, or finished well: nothing to say."""
    running = {"name": "main", "state": {"running": {}}, "ready": True}
    assert ui.problem(pod(phase="Running", containerStatuses=[running]), {}, NOW) is None
    assert ui.problem(pod(phase="Succeeded"), {}, NOW) is None
    creating = waiting("ContainerCreating")
    assert ui.problem(pod(phase="Pending", containerStatuses=[creating]), {}, NOW) is None


def test_reasons() -> None:
    """Failed exits, waiting reasons, recent crash loops and unschedulable pods, each with
    the reason people know, most severe first."""
    failed = pod(
        phase="Failed",
        containerStatuses=[
            {"name": "main", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
        ],
    )
    assert ui.problem(failed, {}, NOW) == (0, "OOMKilled", "container main exited 137")
    looping = pod(
        phase="Running",
        containerStatuses=[waiting("CrashLoopBackOff", "back-off 10s", restarts=4)],
    )
    severity, reason, _ = ui.problem(looping, {}, NOW) or (9, "", "")
    assert (severity, reason) == (1, "CrashLoopBackOff")
    recent: dict[str, Any] = {
        "name": "main",
        "restartCount": 2,
        "state": {"running": {}},
        "lastState": {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "finishedAt": (NOW - timedelta(seconds=30)).isoformat(),
            }
        },
    }
    listed = ui.problem(pod(phase="Running", containerStatuses=[recent]), {}, NOW)
    assert listed is not None and "restarted 2 times" in listed[2] and "30s ago" in listed[2]
    old = {**recent, "lastState": {"terminated": {**recent["lastState"]["terminated"]}}}
    old["lastState"]["terminated"]["finishedAt"] = (NOW - timedelta(hours=2)).isoformat()
    assert ui.problem(pod(phase="Running", containerStatuses=[old]), {}, NOW) is None
    assert ui.problem(pod(node=None, phase="Pending"), {}, NOW) == (
        2,
        "Pending",
        "waiting for a node",
    )
    unschedulable = pod(
        node=None,
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient cpu.",
            }
        ],
    )
    assert ui.problem(unschedulable, {}, NOW) == (
        2,
        "Unschedulable",
        "0/3 nodes are available: 3 Insufficient cpu.",
    )


def test_everything_is_escaped() -> None:
    """Messages from agents and events are shown as text, never as markup."""
    bad = pod(phase="Pending", containerStatuses=[waiting("ErrImagePull", EVIL)])
    html = ui._problems([bad], {})
    assert EVIL not in html and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    event = Event.model_validate(
        {
            "metadata": {"name": "e1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web", "namespace": "default"},
            "reason": "Failed",
            "message": EVIL,
            "type": "Warning",
            "lastTimestamp": NOW.isoformat(),
        }
    )
    assert EVIL not in ui._events([event])
    assert EVIL not in ui._errors([{"time": "now", "message": EVIL}])
    assert ui.e(EVIL) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"


def test_bars_are_bounded() -> None:
    """Usage above capacity or zero capacity never draws a bar past its box."""
    html = ui._bar(requested=5000, allocatable=4000, used=9000, capacity=0, fmt="cpu")
    assert "width:100.0%" in html and "width:0.0%" in html


def test_a_time_without_an_offset_is_taken_as_utc() -> None:
    """An agent's restart time without a UTC offset counts as UTC (kept naive, the page
    failed on it: naive and aware times do not compare)."""
    restarted = {
        "name": "main",
        "restartCount": 1,
        "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:59:00"}},
    }
    listed = ui.problem(pod(phase="Running", containerStatuses=[restarted]), {}, NOW)
    assert listed is not None and listed[2].endswith("exit 1 (Error) 60s ago")


async def test_a_large_cluster_shows_the_nodes_needing_attention_first(tmp_path: Path) -> None:
    """Past MAX_NODES nodes the table is cut, NotReady, disconnected and cordoned nodes
    kept whatever their names, and the page says how many are left out. They are found
    from the cluster view's indexes, kept as nodes change (joins, links, removals)."""
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        cluster = ClusterState(store)
        nodes = [ready_node(f"node-{i:04d}", "4", "8Gi", 110) for i in range(ui.MAX_NODES + 50)]
        nodes[-1].status.conditions = []  # node-0149: NotReady
        nodes[-3].spec.unschedulable = True  # node-0147: cordoned
        nodes.append(ready_node("gone", "4", "8Gi", 110))
        await store.txn([Op("put", node_key(n.metadata.name), encode(n), n) for n in nodes])
        await cluster.load()
        for state in cluster.nodes.values():
            cluster.set_connected(state, True)
        cluster.set_connected(cluster.nodes["node-0148"], False)
        cluster.set_connected(cluster.nodes["gone"], False)
        deleted = await store.delete(node_key("gone"))
        cluster.apply(StoreEvent("DELETE", deleted, None, deleted.mod_revision))

        html = ui._nodes(ui.nodes_shown(cluster), len(cluster.nodes))
        assert html.count("<tr><td>node-") == ui.MAX_NODES
        for name in ("node-0147", "node-0148", "node-0149"):
            assert f"<tr><td>{name}</td>" in html
        assert f"<tr><td>node-{ui.MAX_NODES - 3:04d}</td>" not in html  # the first healthy out
        assert f"<tr><td>node-{ui.MAX_NODES - 4:04d}</td>" in html
        assert f"{ui.MAX_NODES} of {ui.MAX_NODES + 50} nodes shown" in html
        shown = ui.nodes_shown(cluster)
        assert "nodes shown" not in ui._nodes(shown, len(shown))
        assert "gone" not in cluster.attention and "gone" not in cluster.names
    finally:
        await store.close()


def test_pods_are_counted_by_namespace_and_phase() -> None:
    """A row per namespace, sorted, a column per phase and the total."""
    pods = [pod("a", phase="Running"), pod("b", phase="Running"), pod("c", phase="Failed")]
    pending = pod("d", phase="Pending")
    pending.metadata.namespace = "batch"
    pods.append(pending)
    overview = Overview()
    for p in pods:
        overview.pod_changed(f"/pods/{p.metadata.namespace}/{p.metadata.name}", None, p)
    html = ui._namespaces(overview.by_namespace)
    cells = '<td class="num">{}</td>'
    batch = "".join(cells.format(n) for n in (1, 0, 0, 0, 0, 1))
    default = "".join(cells.format(n) for n in (0, 2, 0, 1, 0, 3))
    assert f"<tr><td>batch</td>{batch}</tr><tr><td>default</td>{default}</tr>" in html
