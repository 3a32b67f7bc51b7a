"""The bind: the bound pod's object and stored JSON, built from shared parts."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta
from types import SimpleNamespace

from pydantic import BaseModel

from common.models import (
    Container,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
    now,
)
from scheduler.metrics import SchedulerMetrics
from scheduler.objects import encode, replaced, set_fields, split_unbound_pod
from scheduler.recent import RecentErrors
from scheduler.scheduling import Scheduler, _bind, _bound
from scheduler.store import KV, Conflict, NotFound, StoreUnavailable


def pending_pod(conditions: list[PodCondition] | None = None) -> Pod:
    return Pod(
        metadata=ObjectMeta(name="p", namespace="default", uid="u1", labels={"app": "a"}),
        spec=PodSpec(containers=[Container(name="c", image="i")]),
        status=PodStatus(reason="Unschedulable", message="no room", conditions=conditions or []),
    )


def expected_bound(pod: Pod, stamp: datetime) -> Pod:
    """The bound pod built the slow, obvious way: a full copy through validation."""
    data = pod.model_dump()
    data["spec"]["node_name"] = "n1"
    data["status"].update(reason=None, message=None)
    data["status"]["conditions"] = [
        {"type": "PodScheduled", "status": "True", "last_transition_time": stamp}
    ]
    return Pod.model_validate(data)


def test_replaced_is_model_copy_with_update() -> None:
    """The cheap shallow copy gives what pydantic's model_copy(update=...) gives, and
    leaves the original alone; it relies on BaseModel's instance slots staying these."""
    assert BaseModel.__slots__ == (
        "__dict__",
        "__pydantic_fields_set__",
        "__pydantic_extra__",
        "__pydantic_private__",
    )
    pod = pending_pod()
    for obj, changes in (
        (pod, {"status": PodStatus()}),
        (pod.spec, {"node_name": "n1"}),
        (pod.status, {"reason": None, "message": None}),
    ):
        ours, theirs = replaced(obj, changes), obj.model_copy(update=changes)
        assert type(ours) is type(theirs)
        assert ours.model_fields_set == theirs.model_fields_set
        assert (ours.__pydantic_extra__, ours.__pydantic_private__) == (None, None)
        assert ours == theirs
    assert pod.spec.node_name is None and pod.status.reason == "Unschedulable"


def test_set_fields_is_assignment() -> None:
    """Setting fields together gives what assigning them one by one gives."""
    ours, theirs = pending_pod().metadata, pending_pod().metadata
    changes = {"uid": "u2", "generation": 1, "resource_version": None}
    set_fields(ours, changes)
    for name, value in changes.items():
        setattr(theirs, name, value)
    assert ours == theirs
    assert ours.model_fields_set == theirs.model_fields_set
    assert encode(ours) == encode(theirs)


def bind_after(prior: str) -> tuple[Pod, Pod, PodCondition, datetime, datetime]:
    """A pending pod whose PodScheduled condition has `prior` status since five minutes
    ago, bound to n1 with a batch's PodScheduled=True condition of now: (pod, bound,
    the batch's condition, now, five minutes ago)."""
    stamp = now()
    earlier = stamp - timedelta(minutes=5)
    pod = pending_pod(
        [PodCondition(type="PodScheduled", status=prior, last_transition_time=earlier)]
    )
    scheduled = PodCondition(type="PodScheduled", status="True", last_transition_time=stamp)
    return pod, _bound(pod, "n1", scheduled), scheduled, stamp, earlier


def test_bound_pod() -> None:
    """Bound: nodeName set, the scheduling failure cleared, PodScheduled=True replacing
    PodScheduled=False with the batch's time; the pending object is unchanged."""
    pod, bound, _, stamp, _ = bind_after("False")
    assert encode(bound) == encode(expected_bound(pod, stamp))
    assert bound.metadata is pod.metadata  # shared, not copied
    assert pod.spec.node_name is None and pod.status.conditions[0].status == "False"


def test_a_kept_transition_time_does_not_change_the_shared_condition() -> None:
    """A pod already PodScheduled=True keeps its transition time, in a copy: the batch's
    condition is shared by every pod it binds."""
    _, bound, scheduled, stamp, earlier = bind_after("True")
    assert bound.status.conditions[0].last_transition_time == earlier
    assert scheduled.last_transition_time == stamp


def varied_pods() -> list[Pod]:
    """Pending pods whose JSON differs where a splice could go wrong: conditions present or
    not, a failure reason kept, strings needing escapes and unicode, free-form keys named
    like the fields the splice looks for, volumes after the cut, an unset status."""
    stamp = now()
    tricky = 'a"b\\c\n\t\x01é😀,"status":{"terminationGracePeriodSeconds":1}'
    pods = [
        pending_pod(),
        pending_pod([PodCondition(type="PodScheduled", status="False", message=tricky)]),
        pending_pod([PodCondition(type="PodScheduled", status="True", last_transition_time=stamp)]),
        pending_pod([PodCondition(type="Ready", status="Unknown", reason="é")]),
        Pod.model_validate(
            {
                "metadata": {
                    "name": "q",
                    "namespace": "ns",
                    "labels": {"status": "x", "terminationGracePeriodSeconds": "1"},
                    "annotations": {"status": tricky, "nodeName": tricky},
                    "creationTimestamp": stamp,
                },
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "i",
                            "command": [tricky],
                            "env": [{"name": "E", "value": tricky}],
                            "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}},
                        }
                    ],
                    "nodeSelector": {"terminationGracePeriodSeconds": tricky, "status": "{"},
                    "terminationGracePeriodSeconds": 0,
                    "hostNetwork": True,
                    "volumes": [
                        {"name": "v", "hostPath": {"path": tricky}},
                        {"name": "w", "emptyDir": {"sizeLimit": "1Gi"}},
                    ],
                    "runtimeClassName": "docker",
                },
                "status": {"phase": "Pending", "message": tricky, "startTime": stamp},
            }
        ),
    ]
    return [Pod.model_validate_json(encode(pod)) for pod in pods]  # as decoded from the store


def test_bind_json_is_encode_of_the_bound_pod() -> None:
    """The spliced JSON of a bind is byte for byte what serializing the bound pod gives,
    and the bound object is `_bound`'s, whether its status is shared or made for it."""
    scheduled = PodCondition(type="PodScheduled", status="True", last_transition_time=now())
    statuses: dict[bytes, tuple[PodStatus, bytes]] = {}
    for node in ("n1", "node-é.example"):
        for pod in varied_pods() + varied_pods():  # twice: the second finds its status shared
            stored = encode(pod)
            bound, value = _bind(pod, node, stored, scheduled, statuses)
            expected = _bound(pod, node, scheduled)
            assert value == encode(expected)
            assert bound == expected
            assert bound.model_fields_set == expected.model_fields_set
            assert bound.metadata is pod.metadata
            assert encode(pod) == stored  # the pending object is unchanged
    assert len(statuses) == 5


def test_bind_json_of_json_not_shaped_as_encode_writes_it() -> None:
    """Stored JSON not cut where a pod's is (another field order, a trailing space) is not
    spliced: the bound pod is serialized whole."""
    scheduled = PodCondition(type="PodScheduled", status="True", last_transition_time=now())
    pod = pending_pod()
    expected = encode(_bound(pod, "n1", scheduled))
    for stored in (
        encode(pod) + b" ",
        pod.model_dump_json(by_alias=True, exclude_none=True, exclude={"status"}).encode(),
        b'{"kind":"Pod","status":{"phase":"Pending"}}',
    ):
        assert split_unbound_pod(stored) is None
        assert _bind(pod, "n1", stored, scheduled, {})[1] == expected


class _Forgetting:
    def __init__(self) -> None:
        self.forgotten: list[str] = []

    def forget(self, key: str) -> None:
        self.forgotten.append(key)


async def test_finish_binds_counts_each_outcome() -> None:
    """Binds that fail are forgotten (an unexpected failure also reported), the others
    counted and timed; a write still queued is waited for."""
    loop = asyncio.get_running_loop()
    cluster, metrics, errors = _Forgetting(), SchedulerMetrics(), RecentErrors()
    ctx = SimpleNamespace(store=None, cluster=cluster, metrics=metrics, errors=errors, events=None)
    scheduler = Scheduler(ctx, None)  # type: ignore[arg-type]
    outcomes: list[list[KV] | Exception] = [
        Conflict("/pods/a", 1, None),
        [KV("/pods/b", b"{}", 1, 2)],
        StoreUnavailable("disk full"),
        NotFound("/pods/d"),
        [KV("/pods/e", b"{}", 1, 2)],
    ]
    writes: list[asyncio.Future[list[KV]]] = [loop.create_future() for _ in outcomes]
    for write, outcome in zip(writes[:-1], outcomes, strict=False):
        if isinstance(outcome, Exception):
            write.set_exception(outcome)
        else:
            write.set_result(outcome)
    before = time.time()
    loop.call_later(0.01, writes[-1].set_result, [KV("/pods/e", b"{}", 1, 2)])
    keys = ["/pods/a", "/pods/b", "/pods/c", "/pods/d", "/pods/e"]
    assert metrics.registry.get_sample_value("corral_last_bind_timestamp_seconds") == 0
    await scheduler._finish_binds(
        [(key, "n1", time.monotonic(), w) for key, w in zip(keys, writes, strict=True)]
    )
    # When the last write that landed was durable, as an operator's alert reads it.
    last = metrics.registry.get_sample_value("corral_last_bind_timestamp_seconds")
    assert last is not None and before + 0.01 <= last <= time.time()
    assert cluster.forgotten == ["/pods/a", "/pods/c", "/pods/d"]
    assert [m for _, m in errors._items] == ["bind /pods/c to n1: disk full"]
    assert metrics.registry.get_sample_value("corral_binds_total") == 2
    assert metrics.binds_total() == 2
    assert sum(metrics.scheduling_latency.labels().counts) == 2


def test_bind_splice_knows_the_fields_after_node_name() -> None:
    """`split_unbound_pod` relies on no PodSpec field after terminationGracePeriodSeconds
    having free-form keys (a label key could read `,"terminationGracePeriodSeconds":`):
    a field added there must be checked against that, then listed here."""
    fields = list(PodSpec.model_fields)
    after = fields[fields.index("termination_grace_period_seconds") + 1 :]
    assert after == ["host_network", "dns_policy", "volumes", "runtime_class_name"]
    assert fields.index("node_name") == fields.index("termination_grace_period_seconds") - 1
