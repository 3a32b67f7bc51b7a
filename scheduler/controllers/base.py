"""The shape every workload controller shares: a work queue of keys, workers, a resync.

Level-triggered, as DESIGN.md asks: a controller is told only *which* object
may need attention (a key, from a watch event, a timer or the periodic
resync), never what changed; `reconcile(key)` looks at the whole current state
of that object and acts on the difference. A key is queued at most once and
reconciled by one worker at a time, so a burst of pod events for one
Deployment becomes one pass.

The caches a controller reads follow the store through a watch, so right after
a write they may lag behind it. A controller records the revision of its own
writes per key (`wrote`) and its next pass over that key waits until the
cluster view has caught up, so it never acts twice on a stale picture (what
client-go calls expectations).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from scheduler.context import Context
from scheduler.store import KV, Conflict, NotFound

_LOGGER = logging.getLogger(__name__)

CATCH_UP_SECONDS = 5.0
CONFLICT_RETRY_SECONDS = 0.05
ERROR_RETRY_SECONDS = 1.0
# A key whose passes keep failing is retried later and later, doubling up to this, as
# client-go's per-item rate limiter does: a stale or broken object (one stored past what
# this corral decodes conflicts at every write) must not spin a worker.
MAX_RETRY_SECONDS = 60.0


class WorkQueue:
    """Keys to reconcile: each queued at most once, never handed to two workers at once."""

    def __init__(self) -> None:
        self._ready: dict[str, None] = {}  # insertion-ordered set
        self._processing: set[str] = set()
        self._dirty: set[str] = set()  # added while processing: queued again when done
        self._wake = asyncio.Event()
        self._timers: dict[str, tuple[float, asyncio.TimerHandle]] = {}

    def __len__(self) -> int:
        return len(self._ready)

    def add(self, key: str) -> None:
        if key in self._processing:
            self._dirty.add(key)
            return
        self._ready[key] = None
        self._wake.set()

    def add_after(self, key: str, delay: float) -> None:
        """Queue `key` in `delay` seconds; an earlier pending timer for it wins."""
        if delay <= 0:
            self.add(key)
            return
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        pending = self._timers.get(key)
        if pending is not None:
            if pending[0] <= when:
                return
            pending[1].cancel()
        self._timers[key] = (when, loop.call_at(when, self._fire, key))

    def _fire(self, key: str) -> None:
        self._timers.pop(key, None)
        self.add(key)

    async def get(self) -> str:
        while not self._ready:
            self._wake.clear()
            await self._wake.wait()
        key = next(iter(self._ready))
        del self._ready[key]
        self._processing.add(key)
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    def close(self) -> None:
        for _, handle in self._timers.values():
            handle.cancel()
        self._timers.clear()


class Controller:
    """A controller: subclasses name themselves, list their keys and reconcile one key.

    `reconcile` is called by a worker, for one key at a time, whenever the key was
    queued; it must be idempotent (it may run again with nothing changed) and returns
    the seconds after which to look again (None: only when something changes).
    """

    name = "controller"
    workers = 4
    resync_seconds = 30.0

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.cluster = ctx.cluster
        self.events = ctx.events
        self.queue = WorkQueue()
        self._written: dict[str, int] = {}
        self._failures: dict[str, int] = {}  # key -> passes in a row that failed

    def keys(self) -> Iterable[str]:
        """Every key this controller is responsible for (the periodic resync queues them)."""
        return ()

    async def reconcile(self, key: str) -> float | None:
        raise NotImplementedError

    def wrote(self, key: str, kvs: Iterable[KV]) -> None:
        """Remember that this pass wrote up to these revisions for `key`."""
        top = max((kv.mod_revision for kv in kvs), default=0)
        if top > self._written.get(key, 0):
            self._written[key] = top

    async def run(self) -> None:
        """Workers and the resync, until cancelled."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._resync(), name=f"{self.name}-resync")
                for i in range(self.workers):
                    tg.create_task(self._worker(), name=f"{self.name}-worker-{i}")
        finally:
            self.queue.close()

    async def _resync(self) -> None:
        while True:
            keys = set(self.keys())
            for key in keys:
                self.queue.add(key)
            for key in [k for k in self._written if k not in keys]:
                del self._written[key]
            for key in [k for k in self._failures if k not in keys]:
                del self._failures[key]
            await asyncio.sleep(self.resync_seconds)

    async def _worker(self) -> None:
        while True:
            key = await self.queue.get()
            delay: float | None
            try:
                await self._caught_up(key)
                delay = await self.reconcile(key)
                self._failures.pop(key, None)
            except (Conflict, NotFound):
                # Something changed under this pass; its watch event brings the news.
                delay = self._backoff(key, CONFLICT_RETRY_SECONDS)
            except Exception as exc:  # one bad object must not stop the controller
                _LOGGER.exception("%s: reconciling %s failed", self.name, key)
                self.ctx.errors.add(f"{self.name} controller: {key}: {exc!r}")
                delay = self._backoff(key, ERROR_RETRY_SECONDS)
            finally:
                self.queue.done(key)
            if delay is not None:
                self.queue.add_after(key, delay)

    def _backoff(self, key: str, base: float) -> float:
        failed = self._failures.get(key, 0)
        self._failures[key] = failed + 1
        return min(base * 2 ** min(failed, 20), MAX_RETRY_SECONDS)

    async def _caught_up(self, key: str) -> None:
        want = self._written.get(key, 0)
        if self.cluster.revision >= want:
            return
        # The watch delivers within a loop iteration or two; polling is cheaper than an
        # event per revision on the cluster's hot path. Give up after CATCH_UP_SECONDS.
        for _ in range(int(CATCH_UP_SECONDS / 0.002)):
            await asyncio.sleep(0.002)
            if self.cluster.revision >= want:
                return
