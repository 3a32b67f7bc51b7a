"""Image gc on a real, small filesystem (a tmpfs): what goes, in which order, what stays."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.imagegc import ImageCollector, ImageGcPolicy, disk_usage
from agent.runtime.native.cgroups import CgroupDriver, probe
from agent.runtime.native.images import ImageStore
from agent.runtime.native.runtime import ImagesInUse, NativeRuntime
from tests.conftest import SchedulerProcess, wait_for, wait_until
from tests.imagebuild import build_busybox_rootfs, check_root_marker, file, write_oci_layout
from tests.integration.test_probes import (  # noqa: F401 (fixtures)
    cgroups,
    images,
    make_pod,
    runtime,
    sh,
)
from tests.nativefixtures import busybox_store
from tests.services import AgentProcess, free_port, tmpfs

pytestmark = pytest.mark.root

IMAGE_BYTES = 4 << 20  # random, so the compressed blob is as big as the unpacked layer


@pytest.fixture(autouse=True)
def _root_marker(request: pytest.FixtureRequest) -> None:
    check_root_marker(request)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ImageStore]:
    """An image store alone on a 64 MiB tmpfs."""
    with tmpfs(tmp_path / "fs", "64m") as fs:
        yield ImageStore(fs / "images")


def add_image(store: ImageStore, tmp_path: Path, name: str) -> str:
    """Import a one-layer image of IMAGE_BYTES random bytes as `name`; its digest."""
    layer = [file("data", os.urandom(IMAGE_BYTES))]
    layout = write_oci_layout(None, tmp_path / f"oci-{name}", ref=name, extra_layers=[layer])
    (image,) = store.import_path(layout)
    return image.digest


def digests(store: ImageStore) -> set[str]:
    return {image.digest for image in store.list()}


def test_unused_images_go_least_recently_used_first_down_to_the_low_threshold(
    store: ImageStore, tmp_path: Path
) -> None:
    """Over the high threshold, the images never used go first, then the longest unused,
    each measured, until the low threshold; the image in use and the one used more
    recently than the low threshold needs stay, and their blobs and layers with them."""
    before, capacity = disk_usage(store.root.parent)
    refs = {n: f"gc.test/{n}:1" for n in "abcd"}
    made = {n: add_image(store, tmp_path, ref) for n, ref in refs.items()}
    used, _ = disk_usage(store.root)
    per_image = (used - before) // 4
    collector = ImageCollector(store, ImageGcPolicy(high_percent=99, low_percent=98))
    assert collector.collect(lambda: [refs["a"], refs["c"]]) is None  # under the threshold: a use
    # Thresholds that ask for about one and a half images back.
    low = (used - per_image * 3 // 2) * 100 // capacity
    collector.policy = ImageGcPolicy(high_percent=low + 1, low_percent=low, minimum_age=0)
    result = collector.collect(lambda: [refs["a"]])
    assert result is not None
    assert sorted(result.removed) == sorted([refs["b"], refs["d"]])  # never used: first
    assert digests(store) == {made["a"], made["c"]}
    assert result.freed >= 2 * 2 * IMAGE_BYTES  # each image's blob and its layer
    assert collector.bytes_freed == result.freed and collector.images_removed == 2
    assert result.usage_after <= low < result.usage_percent
    assert len(list(store.blobs.iterdir())) == 2 * 3  # a and c: manifest, config, layer
    assert len(list(store.layers.iterdir())) == 2
    assert collector.failures == 0


def test_images_in_use_or_too_new_stay_whatever_the_usage(
    store: ImageStore, tmp_path: Path
) -> None:
    """An image a pod names or a container on disk was started from is never removed,
    nor one first seen less than the minimum age ago; a pass that cannot get under the
    high threshold counts as a failure."""
    named = add_image(store, tmp_path, "gc.test/named:1")
    started = add_image(store, tmp_path, "gc.test/started:1")
    spare = add_image(store, tmp_path, "gc.test/spare:1")
    policy = ImageGcPolicy(high_percent=1, low_percent=0, minimum_age=3600)
    collector = ImageCollector(store, policy, in_use=lambda: ImagesInUse(frozenset({started})))
    result = collector.collect(lambda: ["gc.test/named:1"])
    assert result is not None and result.removed == []
    assert digests(store) == {named, started, spare}
    assert collector.failures == 1
    collector.policy = dataclasses.replace(policy, minimum_age=0)
    result = collector.collect(lambda: ["gc.test/named:1"])
    assert result is not None and result.removed == ["gc.test/spare:1"]
    assert digests(store) == {named, started}
    assert collector.failures == 2  # still over 1%: only those in use are left


def test_a_node_with_no_image_store_yet_has_nothing_to_collect(tmp_path: Path) -> None:
    """Before the first import or pull there is no store directory: a pass is a no-op, not
    an error every period."""
    collector = ImageCollector(ImageStore(tmp_path / "images"), ImageGcPolicy(high_percent=1))
    assert collector.collect(lambda: ["busybox"]) is None
    assert collector.failures == 0


def test_nothing_is_removed_while_an_older_agents_container_runs_an_image_removed_by_hand(
    store: ImageStore, tmp_path: Path
) -> None:
    """`corral-agent image rm` of an image a container started by an older agent (whose
    records name no layers) still runs: its layers are no longer known, so the pass
    deletes nothing at all rather than guess, and says why."""
    running = add_image(store, tmp_path, "gc.test/running:1")
    spare = add_image(store, tmp_path, "gc.test/spare:1")
    store.remove("gc.test/running:1")
    policy = ImageGcPolicy(high_percent=1, low_percent=0, minimum_age=0)
    old = ImagesInUse(frozenset({running}), unrecorded=frozenset({running}))
    collector = ImageCollector(store, policy, in_use=lambda: old)
    result = collector.collect(lambda: [])
    assert result is not None and result.removed == []
    assert result.held_by is not None and running in result.held_by
    assert digests(store) == {spare}
    assert len(list(store.layers.iterdir())) == 2  # the running image's layer is still there


async def test_a_container_of_an_image_removed_by_hand_keeps_its_layers_not_the_pass(
    cgroups: CgroupDriver,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A start records the layer dirs its container stands on (in the runtime, and in the
    run's records on disk for the next agent): when its image is removed by hand, gc
    keeps those layers and goes on collecting the rest, where it held every removal
    back until the container ended."""
    own = busybox_store(tmp_path / "images")  # its own: busybox is removed below
    (busybox,) = own.list()
    spare = add_image(own, tmp_path, "gc.test/spare:1")
    rt = NativeRuntime(tmp_path / "state", own, cgroups)
    await rt.start()
    pod = make_pod(sh("main", "sleep 600"))
    uid = str(pod.metadata.uid)
    try:
        await rt.create_pod(pod)
        await rt.start_container(pod, "main")
        (layer,) = [p.parent.name for p in own.layer_dirs(busybox)]
        record = rt.container_dir(uid, "main") / "started.json"
        await wait_until(record.exists, within=10)  # the monitor writes it once it runs
        started = json.loads(record.read_text())
        assert started["run"]["layers"] == [layer]
        own.remove("busybox")  # `corral-agent image rm busybox` while it runs
        policy = ImageGcPolicy(high_percent=1, low_percent=0, minimum_age=0)
        collector = ImageCollector(
            own,
            policy,
            in_use=rt.images_in_use,
            started=rt.images_started,
            lock=rt.image_lock,
        )
        result = await asyncio.to_thread(collector.collect, lambda: ["busybox"])
        assert result is not None and result.held_by is None
        assert result.removed == ["gc.test/spare:1"] and spare not in digests(own)
        assert [p.name for p in own.layers.iterdir()] == [layer]  # the container's
        # The next agent knows it from the records alone.
        rt._image_of.clear()
        assert layer in rt.images_in_use().layers
        assert layer not in rt.images_started().layers
    finally:
        await rt.remove_pod(uid)
        await rt.close()


def test_the_agent_collects_what_its_pods_no_longer_use(
    bare_scheduler: SchedulerProcess, tmp_path: Path
) -> None:
    """A real agent, its state on a small tmpfs, restarted with orders to keep it empty
    (high threshold 1%): from its first pass it keeps busybox, which the pod it adopted
    runs, and removes the image no pod names; once the pod is gone, busybox goes too.
    Its metrics count both."""
    s = bare_scheduler
    base = tmp_path / "image"
    layout = write_oci_layout(build_busybox_rootfs(base / "rootfs"), base / "layout")
    with tmpfs(tmp_path / "agent", "64m") as state:
        port = free_port()
        agent = AgentProcess(s, state, "gc-node", {"image_gc_high_threshold_percent": 100})
        try:
            store = ImageStore(state / "images")
            store.import_path(layout)
            agent.start()
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "sleeper"},
                "spec": {
                    "nodeName": "gc-node",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {"name": "main", "image": "busybox", "command": ["sleep", "600"]}
                    ],
                },
            }
            assert s.request("POST", "/api/v1/namespaces/default/pods", pod).status == 201
            path = "/api/v1/namespaces/default/pods/sleeper"
            wait_for(lambda: s.get(path)["status"]["phase"] == "Running", timeout=30)
            assert agent.stop() == 0  # the pod keeps running
            spare = add_image(store, tmp_path, "gc.test/spare:1")
            agent.config = {
                "image_gc_high_threshold_percent": 1,
                "image_gc_low_threshold_percent": 0,
                "image_minimum_gc_age_seconds": 0,
                "image_gc_period_seconds": 0.2,
                "metrics_listen": f"127.0.0.1:{port}",
            }
            agent.start()
            metrics = f"http://127.0.0.1:{port}/metrics"
            wait_for(lambda: "corral_agent_image_gc_removed_images_total 1.0" in fetch(metrics), 30)
            assert [i.ref for i in store.list()] == ["docker.io/library/busybox:latest"]
            assert spare not in digests(store)
            assert s.get(path)["status"]["phase"] == "Running"
            s.request("DELETE", path)
            wait_for(lambda: not store.list(), timeout=30)
            wait_for(lambda: "corral_agent_image_gc_removed_images_total 2.0" in fetch(metrics), 10)
            wait_for(lambda: not list(store.layers.iterdir()), timeout=10)
        finally:
            # The pod outlives a failed test's agent: an agent tears it down before the mount goes.
            s.request("DELETE", "/api/v1/namespaces/default/pods/sleeper?gracePeriodSeconds=0")
            if agent.proc is None or agent.proc.poll() is not None:
                agent.config = {"image_gc_high_threshold_percent": 100}
                agent.start()
            wait_for(lambda: not list((state / "pods").glob("*")), timeout=60)
            agent.stop()
            probe(agent.cgroup_parent).remove("")


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


async def test_the_runtime_holds_an_image_from_its_start_until_its_pod_goes(
    runtime: NativeRuntime,  # noqa: F811
    images: ImageStore,  # noqa: F811
) -> None:
    """The native runtime counts an image in use from the moment a start takes its layers
    (before the container's records name it) until its pod is removed; a pass over a
    store that a start took an image from since the pass began leaves that image."""
    (busybox,) = images.list()
    assert busybox.digest not in runtime.images_in_use().digests
    pod = make_pod(sh("main", "sleep 600"))
    await runtime.create_pod(pod)
    await runtime.start_container(pod, "main")
    assert busybox.digest in runtime.images_started().digests
    assert busybox.digest in runtime.images_in_use().digests
    # A start between the pass's first look and its removal: the removal looks again, at
    # what the runtime started since (the containers' records are read once a pass).
    since = ImagesInUse(frozenset({busybox.digest}))
    policy = ImageGcPolicy(high_percent=1, low_percent=0, minimum_age=0)
    whole: list[bool] = []

    def records() -> ImagesInUse:
        whole.append(True)
        return ImagesInUse()

    collector = ImageCollector(images, policy, in_use=records, started=lambda: since)
    result = collector.collect(lambda: [])
    assert result is not None and result.removed == []
    assert images.get("busybox") is not None
    assert whole == [True]  # once for the pass
    await runtime.remove_pod(str(pod.metadata.uid))
    assert busybox.digest not in runtime.images_in_use().digests


def test_a_pod_that_came_during_the_pass_keeps_its_image_and_trees_go_outside_the_lock(
    store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pods' images are read again, under the lock, before each removal: a pod told
    to the node since the pass began keeps its image. The removed image's layer trees
    are deleted after the lock is let go: pod starts wait on it, and a big tree takes
    seconds to delete."""
    came = add_image(store, tmp_path, "gc.test/came:1")
    gone = add_image(store, tmp_path, "gc.test/gone:1")
    lock = threading.Lock()
    purged_under_lock: list[bool] = []
    purge = store.purge

    def watched() -> None:
        purged_under_lock.append(lock.locked())
        purge()

    monkeypatch.setattr(store, "purge", watched)
    looks = iter([[], ["gc.test/came:1"], ["gc.test/came:1"]])
    policy = ImageGcPolicy(high_percent=1, low_percent=0, minimum_age=0)
    collector = ImageCollector(store, policy, lock=lock)
    result = collector.collect(lambda: next(looks))
    assert result is not None and result.removed == ["gc.test/gone:1"]
    assert digests(store) == {came} and gone not in digests(store)
    assert purged_under_lock == [False]
    assert len(list(store.layers.iterdir())) == 1 and not list(store.tmp.iterdir())
    assert not list(store.doomed.iterdir())


def test_the_pods_images_are_looked_up_in_one_read_of_the_store_under_the_lock(
    store: ImageStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before each removal the pods' images are read again under the lock pod starts
    take: the store's state (images.json) is read once for all of them, not once a pod's
    container (110 pods, 110 reads and parses of it, each candidate, pod starts waiting)."""
    kept = add_image(store, tmp_path, "gc.test/kept:1")
    add_image(store, tmp_path, "gc.test/spare:1")
    lock = threading.Lock()
    reads_under_lock = 0
    load = store._load_state

    def counted() -> dict[str, Any]:
        nonlocal reads_under_lock
        reads_under_lock += lock.locked()
        return load()

    monkeypatch.setattr(store, "_load_state", counted)
    pods = ["gc.test/kept:1", "docker.io/library/kept-not-here:1", "Not A Name"] * 40
    policy = ImageGcPolicy(high_percent=1, low_percent=0, minimum_age=0)
    collector = ImageCollector(store, policy, lock=lock)
    result = collector.collect(lambda: pods)
    assert result is not None and result.removed == ["gc.test/spare:1"]
    assert digests(store) == {kept}
    assert reads_under_lock <= 3  # the pods' images, the removal, the gc: once each


def test_the_containers_records_are_read_once_a_pass_not_under_the_lock(
    store: ImageStore, tmp_path: Path
) -> None:
    """What the containers on disk were started from (every container's records) is read
    once a pass, outside the lock pod starts take; under it, before each removal, only
    what the runtime started since. The whole read was done under the lock for every
    candidate, pod starts waiting on it."""
    for name in "abc":
        add_image(store, tmp_path, f"gc.test/{name}:1")
    lock = threading.Lock()
    whole: list[bool] = []  # under the lock, each time
    since: list[bool] = []

    def records() -> ImagesInUse:
        whole.append(lock.locked())
        return ImagesInUse()

    def started() -> ImagesInUse:
        since.append(lock.locked())
        return ImagesInUse()

    policy = ImageGcPolicy(high_percent=1, low_percent=0, minimum_age=0)
    collector = ImageCollector(store, policy, in_use=records, started=started, lock=lock)
    result = collector.collect(lambda: [])
    assert result is not None and len(result.removed) == 3
    assert whole == [False]
    assert since == [True, True, True]


def test_an_import_leaves_the_layers_a_pass_doomed_to_its_purge(
    store: ImageStore, tmp_path: Path
) -> None:
    """The layer trees a gc moved aside are deleted by `purge`, after the store's lock is
    let go, and by nothing else: they were in tmp/, which an import clears under that
    lock, so an import and a purge deleted the same tree at once (and the import, its
    lock held, did the purge's seconds of work)."""
    add_image(store, tmp_path, "gc.test/gone:1")
    store.remove("gc.test/gone:1")
    doomed: list[Path] = []
    store.gc(doomed=doomed)
    assert len(doomed) == 1 and doomed[0].is_dir()
    add_image(store, tmp_path, "gc.test/next:1")  # an import, before the purge
    assert doomed[0].is_dir()  # the purge's to delete
    store.purge()
    assert not doomed[0].exists() and not list(store.doomed.iterdir())
    store.gc()  # without `doomed`: deleted at once
    assert not list(store.doomed.iterdir()) and len(list(store.layers.iterdir())) == 1
