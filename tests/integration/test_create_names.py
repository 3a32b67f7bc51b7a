"""`metadata.generateName` on create, as kube-apiserver takes it (`kubectl create -f`):
the server names the object, the prefix and 5 random characters, and tries again under
another name when the one it made is taken.

The scheduler runs in this process (a real aiohttp server, control plane and SQLite
store), so that a test can choose the random characters (`scheduler.names.random_suffix`).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from scheduler import names
from scheduler.config import SchedulerConfig
from tests.conftest import deployment_manifest, scheduler_in_process

ADMIN = "corral_create_names_admin_token"
PODS = "/api/v1/namespaces/default/pods"
DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
JOBS = "/apis/batch/v1/namespaces/default/jobs"
NAMESPACES = "/api/v1/namespaces"
SUFFIX = re.compile(f"[{names.ALPHABET}]{{5}}")


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[aiohttp.ClientSession]:
    config = SchedulerConfig(
        state_dir=str(tmp_path / "state"), admin_token=ADMIN, join_token="corral-join-token"
    )
    async with scheduler_in_process(config) as (_, _, base):
        auth = {"Authorization": f"Bearer {ADMIN}"}
        async with aiohttp.ClientSession(base, headers=auth) as session:
            yield session


@pytest.fixture
def suffixes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The random characters the server draws, in order, as the test lists them (each
    draw is taken off the list; the last is kept once it is the only one)."""
    queue: list[str] = []

    def drawn(length: int = names.RANDOM_LENGTH) -> str:
        assert queue, "the server drew more names than the test gave"
        return queue.pop(0) if len(queue) > 1 else queue[0]

    monkeypatch.setattr(names, "random_suffix", drawn)
    yield queue


def pod(meta: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": "main", "image": "busybox"}], **spec},
    }


def deployment(meta: dict[str, Any]) -> dict[str, Any]:
    manifest = deployment_manifest("web", 0)
    manifest["metadata"] = meta
    return manifest


def job(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox"}],
                }
            },
        },
    }


def namespace(meta: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


# Every kind a client creates by POST: (collection, body of metadata, its group-resource).
KINDS = [
    (PODS, pod, "pods"),
    (DEPLOYMENTS, deployment, "deployments.apps"),
    (JOBS, job, "jobs.batch"),
    (NAMESPACES, namespace, "namespaces"),
]
IDS = ["pod", "deployment", "job", "namespace"]


async def post(client: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, Any]:
    async with client.post(url, json=body) as r:
        return r.status, await r.json()


@pytest.mark.parametrize(("collection", "body", "resource"), KINDS, ids=IDS)
async def test_an_object_is_named_from_its_generate_name(
    client: aiohttp.ClientSession, collection: str, body: Any, resource: str
) -> None:
    """No name and a generateName: the name is the prefix and 5 characters of Kubernetes'
    alphabet; generateName is stored and returned; each create gets a name of its own. A
    name given wins over a generateName, which is kept."""
    made = []
    for _ in range(2):
        status, obj = await post(client, collection, body({"generateName": "gen-"}))
        assert status == 201, obj
        name = obj["metadata"]["name"]
        assert name.startswith("gen-") and SUFFIX.fullmatch(name[4:]), name
        assert obj["metadata"]["generateName"] == "gen-"
        made.append(name)
    assert made[0] != made[1]
    async with client.get(f"{collection}/{made[0]}") as r:
        assert (await r.json())["metadata"]["generateName"] == "gen-"
    status, obj = await post(client, collection, body({"name": "given", "generateName": "gen-"}))
    assert status == 201, obj
    assert (obj["metadata"]["name"], obj["metadata"]["generateName"]) == ("given", "gen-")
    status, obj = await post(client, collection, body({"name": "", "generateName": "empty-"}))
    assert status == 201 and obj["metadata"]["name"].startswith("empty-"), obj


async def test_a_long_prefix_is_cut_to_58_characters(client: aiohttp.ClientSession) -> None:
    """kube-apiserver's SimpleNameGenerator: the prefix cut to 58, so the name is 63. The
    prefix itself is checked by the kind's name rule: a namespace's is a label, at most
    63 characters, so a longer one is refused, as kube-apiserver refuses it."""
    for collection, body, _ in KINDS:
        prefix = "a" * (63 if collection == NAMESPACES else 100)
        status, obj = await post(client, collection, body({"generateName": prefix}))
        assert status == 201, obj
        name = obj["metadata"]["name"]
        assert len(name) == 63 and name.startswith("a" * 58), name
        assert obj["metadata"]["generateName"] == prefix
    status, obj = await post(client, NAMESPACES, namespace({"generateName": "a" * 64}))
    assert status == 422 and obj["details"]["causes"][0]["field"] == "metadata.generateName"


@pytest.mark.parametrize(("collection", "body", "resource"), KINDS, ids=IDS)
async def test_a_generated_name_is_validated_as_a_given_one(
    client: aiohttp.ClientSession, collection: str, body: Any, resource: str
) -> None:
    """A prefix that makes an invalid name: 422 naming metadata.name (the name made of it)
    and metadata.generateName, as kube-apiserver names both; nothing is created."""
    status, obj = await post(client, collection, body({"generateName": "Web_"}))
    assert status == 422, obj
    fields = {c["field"] for c in obj["details"]["causes"]}
    assert fields == {"metadata.name", "metadata.generateName"}, obj
    assert obj["details"]["name"].startswith("Web_"), obj  # the name it was given
    async with client.get(collection) as r:
        assert not [i for i in (await r.json())["items"] if "Web" in i["metadata"]["name"]]
    # Neither a name nor a generateName: the name is required.
    status, obj = await post(client, collection, body({"labels": {"a": "b"}}))
    assert status == 422 and obj["details"]["causes"][0]["field"] == "metadata.name", obj


async def test_a_generated_name_is_checked_against_the_kinds_own_rule(
    client: aiohttp.ClientSession,
) -> None:
    """A dot is fine in a pod's name (a DNS subdomain), not in a namespace's (a label): the
    prefix is refused by that rule, and the name made of it too."""
    status, obj = await post(client, PODS, pod({"generateName": "a.b-"}))
    assert status == 201 and obj["metadata"]["name"].startswith("a.b-"), obj
    status, obj = await post(client, NAMESPACES, namespace({"generateName": "a.b-"}))
    assert status == 422, obj
    fields = {c["field"] for c in obj["details"]["causes"]}
    assert fields == {"metadata.name", "metadata.generateName"}, obj


@pytest.mark.parametrize(("collection", "body", "resource"), KINDS, ids=IDS)
async def test_a_taken_name_is_tried_again_under_another(
    client: aiohttp.ClientSession,
    suffixes: list[str],
    collection: str,
    body: Any,
    resource: str,
) -> None:
    """A generated name that is taken: the create is made again under a new name, as
    kube-apiserver does; the namespace's name label follows its name."""
    suffixes[:] = ["bbbbb", "bbbbb", "ccccc"]
    status, first = await post(client, collection, body({"generateName": "x-"}))
    assert status == 201 and first["metadata"]["name"] == "x-bbbbb", first
    status, second = await post(client, collection, body({"generateName": "x-"}))
    assert status == 201 and second["metadata"]["name"] == "x-ccccc", second
    if collection == NAMESPACES:
        assert second["metadata"]["labels"]["kubernetes.io/metadata.name"] == "x-ccccc"
    # A name given in the body is not tried again: 409 as before.
    status, taken = await post(client, collection, body({"name": "x-bbbbb"}))
    assert status == 409 and taken["reason"] == "AlreadyExists", taken
    assert taken["message"] == f'{resource} "x-bbbbb" already exists'
    assert "retryAfterSeconds" not in taken["details"]


@pytest.mark.parametrize(("collection", "body", "resource"), KINDS, ids=IDS)
async def test_eight_names_taken_is_a_409(
    client: aiohttp.ClientSession,
    suffixes: list[str],
    collection: str,
    body: Any,
    resource: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every name drawn taken: 409 AlreadyExists after 8 names (kube-apiserver's
    maxNameGenerationCreateAttempts), with its message and retryAfterSeconds."""
    suffixes[:] = ["bbbbb"]
    status, first = await post(client, collection, body({"generateName": "x-"}))
    assert status == 201, first
    draws: list[str] = []
    drawn = names.random_suffix

    def counted(length: int = names.RANDOM_LENGTH) -> str:
        draws.append(drawn(length))
        return draws[-1]

    monkeypatch.setattr(names, "random_suffix", counted)
    status, refused = await post(client, collection, body({"generateName": "x-"}))
    assert status == 409 and refused["reason"] == "AlreadyExists", refused
    assert refused["message"] == (
        f'{resource} "x-bbbbb" already exists, the server was not able to generate a unique '
        "name for the object"
    )
    assert refused["details"]["name"] == "x-bbbbb"
    assert refused["details"]["retryAfterSeconds"] == 1
    assert draws == ["bbbbb"] * 8


async def test_a_pod_list_names_each_item(
    client: aiohttp.ClientSession, suffixes: list[str]
) -> None:
    """corral's batch create: each item with a generateName is named, an item's name
    taken by another item of the batch or by a stored pod is drawn again, and the batch
    is still made in one transaction; a name given twice is still a 422, and a taken name
    given in the body a 409 that creates nothing."""
    status, obj = await post(client, PODS, pod({"name": "w-bbbbb"}))
    assert status == 201, obj
    # Item 0 draws bbbbb (stored: drawn again, ccccc); item 1 draws ccccc too (item 0
    # has it: drawn again, ddddd); item 2 is named in the body.
    suffixes[:] = ["bbbbb", "ccccc", "ccccc", "ccccc", "ddddd", "fffff"]
    batch = {
        "apiVersion": "v1",
        "kind": "PodList",
        "items": [
            pod({"generateName": "w-"}),
            pod({"generateName": "w-"}),
            pod({"name": "named"}),
        ],
    }
    status, made = await post(client, PODS, batch)
    assert status == 201, made
    got = [(i["metadata"]["name"], i["metadata"].get("generateName")) for i in made["items"]]
    assert sorted(got) == [("named", None), ("w-ccccc", "w-"), ("w-ddddd", "w-")], got
    twice = {**batch, "items": [pod({"name": "dup"}), pod({"name": "dup"})]}
    status, obj = await post(client, PODS, twice)
    assert status == 422 and obj["details"]["causes"][0]["field"] == "items[1].metadata.name"
    suffixes[:] = ["ggggg"]
    taken = {**batch, "items": [pod({"generateName": "v-"}), pod({"name": "named"})]}
    status, obj = await post(client, PODS, taken)
    assert status == 409 and obj["message"].endswith("nothing in the batch was created"), obj
    async with client.get(f"{PODS}/v-ggggg") as r:
        assert r.status == 404
    # Every name drawn taken: 409 after 8, and nothing created.
    again = {**batch, "items": [pod({"generateName": "w-"}), pod({"generateName": "z-"})]}
    suffixes[:] = ["ddddd"]
    status, obj = await post(client, PODS, again)
    assert status == 409 and obj["details"]["retryAfterSeconds"] == 1, obj
    assert obj["message"] == (
        'pods "w-ddddd" already exists, the server was not able to generate a unique name '
        "for the object; nothing in the batch was created"
    )
    async with client.get(f"{PODS}/z-ddddd") as r:
        assert r.status == 404
