"""The control plane's parts, wired together and run as one supervised group of tasks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from pathlib import Path

from common.statelock import StateLock, lock_state_dir
from scheduler.auth import TokenAuth
from scheduler.cluster import ClusterState
from scheduler.config import SchedulerConfig
from scheduler.context import Context
from scheduler.controllers.manager import Workloads
from scheduler.controllers.nodelifecycle import NodeLifecycleController
from scheduler.events import EventRecorder
from scheduler.hub import Hub
from scheduler.metrics import SchedulerMetrics
from scheduler.overview import Overview
from scheduler.placement import Placement
from scheduler.recent import RecentErrors
from scheduler.scheduling import Scheduler
from scheduler.store import SqliteStore

_LOGGER = logging.getLogger(__name__)


JOIN_TOKEN_PREFIX = "corraljoin_"


def new_join_token() -> str:
    """A random join token (32 bytes), prefixed as node credentials are (`corralnode_`).

    The prefix also keeps it from starting with '-': one bare `token_urlsafe` in 64
    does, and argparse takes such a value for an option, so `corral-agent --join-token
    TOKEN` and `corral install agent --token "$(cat join-token)"` refused it.
    """
    return JOIN_TOKEN_PREFIX + secrets.token_urlsafe(32)


def join_token(config: SchedulerConfig) -> str:
    """The configured join token, or one generated once and kept in the state directory."""
    if config.join_token:
        return config.join_token
    path = Path(config.state_dir) / "join-token"
    if path.exists():
        stored = path.read_text().strip()
        if stored.startswith("-"):  # generated before tokens had their prefix
            _LOGGER.warning(
                "the join token in %s starts with '-', which a command line takes for an "
                "option: pass it as --join-token=TOKEN or through join_token_file, or delete "
                "the file and restart to generate another (joined nodes keep working)",
                path,
            )
        return stored
    token = new_join_token()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    _LOGGER.info("generated a join token in %s", path)
    return token


class ControlPlane:
    """Store, cluster view, scheduler, hub and controllers; `start` then `stop`."""

    store: SqliteStore
    cluster: ClusterState
    hub: Hub

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.metrics = SchedulerMetrics()
        self.errors = RecentErrors()
        self.ready = False
        self._tasks: list[asyncio.Task[None]] = []
        self._state_lock: StateLock | None = None

    async def start(self) -> None:
        # First, so that the pauses of loading a big store are counted too; a start that
        # fails is never stopped, so it takes the hook out itself.
        self.metrics.gc_pauses.install()
        try:
            await self._start()
        except BaseException:
            self.metrics.gc_pauses.uninstall()
            if hasattr(self, "store"):  # its writer let go before the lock is
                with contextlib.suppress(Exception):
                    await self.store.close()
            if self._state_lock is not None:
                self._state_lock.release()
            raise

    async def _start(self) -> None:
        config = self.config
        # First: nothing of the state directory is read before this process owns it.
        self._state_lock = await lock_state_dir(config.state_dir, "corral-scheduler")
        token = await asyncio.to_thread(join_token, config)
        self.store = await SqliteStore.open(Path(config.state_dir) / "state.db")
        self.metrics.track_store(self.store)
        self.cluster = ClusterState(self.store)
        await self.cluster.load()
        self.overview = Overview()  # before the cluster view's watch runs
        self.overview.track(self.cluster)
        await self.overview.load_events(self.store)
        self.events = EventRecorder(self.store)
        await self.events.load()
        self.auth = TokenAuth(self.store)
        await self.auth.bootstrap(Path(config.state_dir), config.admin_token)
        ctx = Context(config, self.store, self.cluster, self.metrics, self.errors, self.events)
        self.placement = Placement(
            self.cluster.nodes, config.placement_strategy, config.placement_sample
        )
        self.cluster.node_listeners.append(self._nodes_changed)
        self.scheduler = Scheduler(ctx, self.placement)
        self.hub = Hub(ctx, token)
        self.lifecycle = NodeLifecycleController(ctx)
        self.workloads = Workloads(ctx)  # deployments, jobs, namespaces, garbage collection
        await self.workloads.load()
        self.metrics.track_cluster(self.cluster)
        for name, coro in (
            ("cluster-watch", self.cluster.run()),
            ("scheduler", self.scheduler.run()),
            ("node-lifecycle", self.lifecycle.run()),
            ("events", self.events.run()),
            *self.workloads.tasks(),
        ):
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        self.ready = True
        _LOGGER.info(
            "control plane started at revision %d: %d nodes, %d pods (%d pending)",
            self.store.revision,
            len(self.cluster.nodes),
            len(self.cluster.pods),
            len(self.cluster.pending),
        )

    def _nodes_changed(self, name: str, node: object) -> None:
        self.placement.version += 1

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # A dead loop means a silently broken scheduler: report not ready and say why.
            self.ready = False
            self.errors.add(f"{task.get_name()} stopped: {exc!r}")
            _LOGGER.error("task %s died", task.get_name(), exc_info=exc)

    async def stop(self) -> None:
        self.ready = False
        if hasattr(self, "hub"):
            await self.hub.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if hasattr(self, "events"):
            with contextlib.suppress(Exception):
                await self.events.flush()  # what was recorded last is not lost
        if hasattr(self, "store"):
            await self.store.close()
        if self._state_lock is not None:
            self._state_lock.release()
        self.metrics.gc_pauses.uninstall()
        _LOGGER.info("control plane stopped")
