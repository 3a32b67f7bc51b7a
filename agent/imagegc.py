"""Image garbage collection on the node, as the kubelet's.

Every `image_gc_period_seconds` (5 minutes, the kubelet's period) the agent looks at the
filesystem of its image store. When more of it is used than
`image_gc_high_threshold_percent` (85), images no pod uses are removed, least recently
used first, until the usage is back at `image_gc_low_threshold_percent` (80) or no
image is left to remove; then the blobs and layers nothing refers to any more are
deleted. An image is never removed within `image_minimum_gc_age_seconds` (2 minutes)
of the pass that first saw it, so one pulled for a pod that has yet to start stays. A
high threshold of 100 turns collection off.

An image is in use while a pod of the node names it (running, starting, or told to
run) or a container on disk was started from it (a pod being torn down). As in the
kubelet, when an image was last used is known to a pass's precision: each pass marks
the images in use then, and after a restart the images count from the first pass.

What a pass must not do is remove an image between a pod start's lookup of it and the
mount of its layers. The native runtime takes an image for a start under its
`image_lock`, and records it then (`images_started`); a pass removes each image under
the same lock, after reading again, under it, what the pods name and what the runtime
started since (cheap: no I/O but the store's names). What the containers on disk were
started from (`images_in_use`: every container's records) is read once a pass, before
the removals: those records change only through starts, which `images_started`
already has. Each start records the layer dirs it stands on, so the layers of a
container whose image was removed by hand (`corral-agent image rm`) are kept while the
rest is collected; only a container started by an older agent, which recorded none,
holds the whole pass back until it is gone (what it stands on is unknown).

Only the native runtime's store is collected: dockerd keeps its own images, for reasons
docs/operations.md gives (prune them with `docker image prune`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.config import AgentConfig
from agent.runtime.native.images import ImageError, ImageStore
from agent.runtime.native.runtime import ImagesInUse, NativeRuntime
from agent.runtime.router import RuntimeRouter
from common.models import Pod

_LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ImageGcPolicy:
    high_percent: int = 85
    low_percent: int = 80
    minimum_age: float = 120.0  # seconds from the pass that first saw an image
    period: float = 300.0  # seconds between passes

    @property
    def enabled(self) -> bool:
        return self.high_percent < 100


@dataclass(slots=True)
class GcPass:
    """What one pass that found the store's filesystem too full did."""

    usage_percent: float  # of the filesystem, when the pass began
    removed: list[str] = field(default_factory=list)  # the images removed, by name
    freed: int = 0  # bytes of blobs and layers deleted
    usage_after: float = 0.0
    held_by: str | None = None  # why nothing could be removed, if so


def disk_usage(path: Path) -> tuple[int, int]:
    """(used, capacity) bytes of the filesystem holding `path`; used counts the blocks an
    unprivileged user cannot have (capacity minus available), as the kubelet does."""
    st = os.statvfs(path)
    capacity = st.f_blocks * st.f_frsize
    return capacity - st.f_bavail * st.f_frsize, capacity


class ImageCollector:
    """Passes over one image store. `collect` blocks (disk): run it in a thread."""

    def __init__(
        self,
        store: ImageStore,
        policy: ImageGcPolicy,
        *,
        in_use: Callable[[], ImagesInUse] = ImagesInUse,
        started: Callable[[], ImagesInUse] | None = None,
        lock: AbstractContextManager[object] | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        # What the runtime's containers use: all of it once a pass (blocking), and what
        # it started since (`started`, cheap; `in_use` again if None) under `lock` before
        # each removal: the runtime takes an image for a start under it.
        self._runtime_in_use = in_use
        self._runtime_started = started or in_use
        self._lock = lock if lock is not None else threading.Lock()
        self._first_seen: dict[str, float] = {}  # digest -> clock of the first pass seeing it
        self._last_used: dict[str, float] = {}  # digest -> clock of the last pass it was in use
        self.images_removed = 0
        self.bytes_freed = 0
        self.failures = 0  # passes that could not bring the usage under the high threshold

    def collect(self, refs_in_use: Callable[[], Iterable[str]]) -> GcPass | None:
        """One pass; `refs_in_use` gives the images the node's pods name (called from
        this thread: it must be safe there), read again before each removal, so a pod
        that arrived meanwhile keeps its image. None when the filesystem was not over the
        high threshold (nothing removed)."""
        if not self.store.root.is_dir():
            return None  # nothing imported or pulled yet
        now = time.monotonic()
        names: dict[str, list[str]] = {}  # digest -> its names
        for image in self.store.list():
            names.setdefault(image.digest, []).append(image.ref)
        runtime = self._runtime_in_use()  # the containers' records: once a pass
        in_use = runtime.digests | self.store.digests_of(refs_in_use())
        for gone in set(self._first_seen) - set(names):
            del self._first_seen[gone]
            self._last_used.pop(gone, None)
        for digest in names:
            self._first_seen.setdefault(digest, now)
            if digest in in_use:
                self._last_used[digest] = now
        used, capacity = disk_usage(self.store.root)
        if not capacity or used * 100 <= capacity * self.policy.high_percent:
            return None
        result = GcPass(usage_percent=100 * used / capacity, usage_after=100 * used / capacity)
        unknown = runtime.unrecorded - set(names)
        if unknown:
            # A container started by an older agent runs an image removed by hand: which
            # layers it stands on is recorded nowhere, so nothing is deleted until it is gone.
            result.held_by = f"in use but no longer in the store: {', '.join(sorted(unknown))}"
            self.failures += 1
            return result
        target = capacity * self.policy.low_percent // 100
        # Never used first (as the kubelet: a last use of zero), then the longest unused.
        candidates = sorted(
            (
                digest
                for digest in names
                if digest not in in_use
                and now - self._first_seen[digest] >= self.policy.minimum_age
            ),
            key=lambda d: (self._last_used.get(d, -math.inf), self._first_seen[d], d),
        )
        # One image at a time, measured after each: what an image frees depends on the
        # layers it shares with the images that stay.
        for digest in candidates:
            if used <= target:
                break
            freed = self._remove(digest, runtime, refs_in_use)
            if freed is None:
                continue
            result.removed.extend(names[digest])
            result.freed += freed
            used, capacity = disk_usage(self.store.root)
        if not result.removed:
            # What images removed by hand (or imports that failed) left: each removal's
            # gc takes it too, but there was none.
            result.freed += self._remove(None, runtime, refs_in_use) or 0
            used, capacity = disk_usage(self.store.root)
        result.usage_after = 100 * used / capacity
        if used * 100 > capacity * self.policy.high_percent:
            self.failures += 1
        return result

    def _remove(
        self,
        digest: str | None,
        runtime: ImagesInUse,
        refs_in_use: Callable[[], Iterable[str]],
    ) -> int | None:
        """Remove the image `digest` (None: none) if still unused, then the blobs and layers
        nothing refers to any more; the bytes freed, None if the image stays."""
        with self._lock:
            now_used = runtime | self._runtime_started()
            if digest is not None:
                # A name that does not parse is left out: that pod's start fails on it
                # anyway. The store's names are read once for all the pods.
                if digest in now_used.digests or digest in self.store.digests_of(refs_in_use()):
                    return None  # a pod came for it, or started from it, since the pass began
                try:
                    self.store.remove(digest)  # a bare digest drops every name of the image
                except ImageError:
                    return None  # removed meanwhile (`corral-agent image rm`)
            # The layers containers stand on stay, whatever names their images have.
            freed = self.store.gc(now_used.layers, doomed=[]).bytes_freed
        # Out of the lock, which holds pod starts: the layer trees, moved aside, go now.
        self.store.purge()
        if digest is not None:
            self.images_removed += 1
        self.bytes_freed += freed
        return freed


def image_collector(config: AgentConfig, runtime: object) -> ImageCollector | None:
    """The collector of the native runtime's store, by the agent's options; None for a
    runtime without one."""
    native = runtime.runtimes.get("native") if isinstance(runtime, RuntimeRouter) else None
    if not isinstance(native, NativeRuntime):
        return None
    policy = ImageGcPolicy(
        high_percent=config.image_gc_high_threshold_percent,
        low_percent=config.image_gc_low_threshold_percent,
        minimum_age=config.image_minimum_gc_age_seconds,
        period=config.image_gc_period_seconds,
    )
    return ImageCollector(
        native.images,
        policy,
        in_use=native.images_in_use,
        started=native.images_started,
        lock=native.image_lock,
    )


def pod_images(pods: Iterable[Pod]) -> list[str]:
    """The images the pods' containers name."""
    return [container.image for pod in pods for container in pod.spec.containers]


async def run_image_gc(collector: ImageCollector, refs_in_use: Callable[[], list[str]]) -> None:
    """A pass at once, then one every policy.period seconds, until cancelled. The first
    sees the images (as the kubelet detects them at its start), so their minimum age
    counts from the agent's start, not from a period later. A pass runs in a thread, and
    calls `refs_in_use` there."""
    while True:
        try:
            result = await asyncio.to_thread(collector.collect, refs_in_use)
        except Exception as exc:
            # Whatever it is (a disk error; images.json corrupt, a config blob missing: an
            # ImageError), it must not end the task for good: nothing awaits it until the
            # agent stops, so it would end without a word and gc never run again.
            collector.failures += 1
            _LOGGER.error("image gc failed: %s", exc, exc_info=not isinstance(exc, OSError))
        else:
            if result is not None:
                log_pass(result, collector.policy)
        await asyncio.sleep(collector.policy.period)


def log_pass(result: GcPass, policy: ImageGcPolicy) -> None:
    removed = ", ".join(result.removed) or "none"
    message = (
        f"image gc: the image store's filesystem was {result.usage_percent:.1f}% used (over "
        f"{policy.high_percent}%); removed images: {removed}; freed {result.freed} bytes; "
        f"now {result.usage_after:.1f}% used"
    )
    if result.held_by:
        message += f"; nothing removed ({result.held_by})"
    if result.usage_after > policy.high_percent:
        _LOGGER.warning("%s; still over %d%%", message, policy.high_percent)
    else:
        _LOGGER.info("%s", message)


class ImageGcMetrics(Collector):
    """The collector's counters, read at scrape time."""

    def __init__(self, collector: ImageCollector) -> None:
        self._collector = collector

    def collect(self) -> Iterable[Metric]:
        c = self._collector
        yield CounterMetricFamily(
            "corral_agent_image_gc_removed_images",
            "Images removed by image gc",
            value=c.images_removed,
        )
        yield CounterMetricFamily(
            "corral_agent_image_gc_freed_bytes",
            "Bytes of blobs and layers image gc deleted",
            value=c.bytes_freed,
        )
        yield CounterMetricFamily(
            "corral_agent_image_gc_failures",
            "Image gc passes that left the image store's filesystem over the high threshold "
            "(or failed)",
            value=c.failures,
        )
