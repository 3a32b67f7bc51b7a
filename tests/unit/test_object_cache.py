"""The workload controllers' object cache: by key, by uid, and by namespace."""

from __future__ import annotations

from pathlib import Path

from common.models import Deployment, Namespace
from scheduler.controllers.cache import ObjectCache
from scheduler.kinds import DEPLOYMENTS, NAMESPACES
from scheduler.objects import encode
from scheduler.store import KV, Event, SqliteStore


def _deployment(namespace: str, name: str, uid: str) -> Deployment:
    return Deployment.model_validate(
        {
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        }
    )


def _put(cache: ObjectCache[Deployment], d: Deployment, revision: int) -> None:
    key = f"{DEPLOYMENTS.prefix}{d.metadata.namespace}/{d.metadata.name}"
    cache.apply(Event("PUT", KV(key, encode(d), revision, revision), None, revision))


def _delete(cache: ObjectCache[Deployment], key: str, revision: int) -> None:
    kv = cache.kvs[key]
    cache.apply(Event("DELETE", KV(key, kv.value, kv.create_revision, revision), kv, revision))


def test_a_namespaced_cache_keeps_each_namespace_s_objects_apart() -> None:
    cache = ObjectCache(DEPLOYMENTS, Deployment)
    _put(cache, _deployment("red", "web", "u1"), 1)
    _put(cache, _deployment("red", "api", "u2"), 2)
    _put(cache, _deployment("blue", "web", "u3"), 3)
    red, blue = f"{DEPLOYMENTS.prefix}red/", f"{DEPLOYMENTS.prefix}blue/"
    assert sorted(cache.in_namespace("red")) == [red + "api", red + "web"]
    assert list(cache.in_namespace("blue")) == [blue + "web"]
    assert cache.in_namespace("green") == {}

    # Replaced (a new incarnation under the same name): the namespace holds the new one.
    _put(cache, _deployment("red", "web", "u4"), 4)
    assert cache.in_namespace("red")[red + "web"].metadata.uid == "u4"
    assert set(cache.by_uid) == {"u2", "u3", "u4"}

    _delete(cache, red + "web", 5)
    _delete(cache, blue + "web", 6)
    assert list(cache.in_namespace("red")) == [red + "api"]
    assert cache.in_namespace("blue") == {}
    assert list(cache.objects) == [red + "api"]


def test_a_cluster_scoped_cache_has_no_namespaces() -> None:
    cache = ObjectCache(NAMESPACES, Namespace)
    ns = Namespace.model_validate({"metadata": {"name": "red", "uid": "u1"}})
    key = f"{NAMESPACES.prefix}red"
    cache.apply(Event("PUT", KV(key, encode(ns), 1, 1), None, 1))
    assert list(cache.objects) == [key]
    assert cache.in_namespace("red") == {}


async def test_the_namespace_index_is_built_by_the_start_s_listing(tmp_path: Path) -> None:
    store = await SqliteStore.open(tmp_path / "state.db")
    try:
        for namespace, name, uid in (("red", "web", "u1"), ("blue", "web", "u2")):
            d = _deployment(namespace, name, uid)
            await store.put(f"{DEPLOYMENTS.prefix}{namespace}/{name}", encode(d))
        cache = ObjectCache(DEPLOYMENTS, Deployment)
        await cache.load(store)
        assert list(cache.in_namespace("red")) == [f"{DEPLOYMENTS.prefix}red/web"]
        assert list(cache.in_namespace("blue")) == [f"{DEPLOYMENTS.prefix}blue/web"]
    finally:
        await store.close()
