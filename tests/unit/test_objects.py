"""How objects are kept in the store: uids, the stored JSON, lists assembled from it, and the
server-owned fields a created pod gets."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import pytest

from common.models import Node, ObjectMeta, Pod, Status
from scheduler.api.errors import Invalid
from scheduler.api.pods import _validate
from scheduler.objects import encode, list_json, new_uids, with_resource_version
from scheduler.store import KV


def _pod_doc(name: str = "web", **extra: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "pause"}]},
        **extra,
    }


def test_new_uids_are_distinct_version_4_uuids() -> None:
    uids = new_uids(5000)
    assert len(set(uids)) == 5000
    for uid in uids:
        parsed = uuid.UUID(uid)
        assert str(parsed) == uid  # lowercase, dashed: as str(uuid4()) writes it
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
    assert new_uids(0) == []


def test_new_uids_keep_every_random_digit_random() -> None:
    uids = new_uids(4000)
    for position in (0, 15, 20, 35):  # first, after the version, after the variant, last
        assert len({u[position] for u in uids}) == 16
    assert {u[19] for u in uids} == set("89ab")  # the variant digit: 10xx


def test_encode_leaves_out_resource_version_and_none() -> None:
    pod = Pod.model_validate(_pod_doc())
    pod.metadata.resource_version = "42"
    pod.metadata.creation_timestamp = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    stored = encode(pod)
    wire = pod.model_dump_json(
        by_alias=True, exclude_none=True, exclude={"metadata": {"resource_version"}}
    ).encode()
    assert stored == wire
    assert b"resourceVersion" not in stored
    pod.metadata.resource_version = None
    assert encode(pod) == wire
    assert json.loads(stored)["metadata"]["creationTimestamp"] == "2026-01-02T03:04:05Z"
    node = Node(metadata=ObjectMeta(name="n1", resource_version="7"))
    assert b"resourceVersion" not in encode(node)
    assert (
        encode(Status(message="x"))
        == Status(message="x").model_dump_json(by_alias=True, exclude_none=True).encode()
    )


def test_list_json_splices_each_items_own_revision() -> None:
    values = [encode(Pod.model_validate(_pod_doc(f"p{i}"))) for i in range(5)]
    revisions = [3, 3, 4, 4, 3]
    pairs = enumerate(zip(values, revisions, strict=True))
    kvs = [KV(f"/pods/default/p{i}", v, r, r) for i, (v, r) in pairs]
    body = json.loads(list_json("PodList", kvs, 9))
    assert body["metadata"] == {"resourceVersion": "9"}
    assert [item["metadata"]["resourceVersion"] for item in body["items"]] == [
        "3",
        "3",
        "4",
        "4",
        "3",
    ]
    assert [json.loads(with_resource_version(kv)) for kv in kvs] == body["items"]
    assert json.loads(list_json("PodList", [], 2))["items"] == []


def test_validate_sets_the_server_owned_fields() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    doc = _pod_doc(
        status={"phase": "Running", "hostIp": "10.0.0.1"},
        metadata={
            "name": "web",
            "uid": "mine",
            "resourceVersion": "12",
            "generation": 7,
            "creationTimestamp": "2020-01-01T00:00:00Z",
            "deletionTimestamp": "2020-01-01T00:00:00Z",
        },
    )
    pod = _validate(doc, "default", created=created, uid="u-1")
    meta = pod.metadata
    assert (meta.namespace, meta.uid, meta.creation_timestamp) == ("default", "u-1", created)
    assert (meta.resource_version, meta.deletion_timestamp, meta.generation) == (None, None, 1)
    assert pod.status.phase == "Pending" and pod.status.host_ip is None
    fresh = _validate(_pod_doc(), "default")  # by default: a new uid and now
    assert uuid.UUID(fresh.metadata.uid or "").version == 4
    assert fresh.metadata.creation_timestamp is not None
    assert fresh.metadata.generation == 1 and fresh.status.phase == "Pending"


def test_validate_still_checks_what_it_then_replaces() -> None:
    """A client's status and server-owned metadata are validated before being replaced."""
    with pytest.raises(Invalid) as bad_status:
        _validate(_pod_doc(status={"phase": "Dancing"}), "default")
    assert [c.field for c in bad_status.value.causes] == ["status.phase"]
    with pytest.raises(Invalid) as bad_uid:
        _validate(_pod_doc(metadata={"name": "web", "uid": 5}), "default", "items[3].")
    assert [c.field for c in bad_uid.value.causes] == ["items[3].metadata.uid"]
    with pytest.raises(Invalid, match="does not match the namespace"):
        _validate(_pod_doc(metadata={"name": "web", "namespace": "other"}), "default")
