"""The agent as a service: systemd notifications (READY, STATUS, WATCHDOG) and /metrics.

READY=1 is sent once the agent has joined its scheduler, or, if the scheduler cannot
be reached within READY_WAIT_SECONDS, once it serves the pods it re-adopted from its
state directory (agents are autonomous: a node must come up while the control plane
is down). STATUS= says how many pods run and whether the link is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from agent.config import AgentConfig
from agent.link import SchedulerLink
from agent.metrics import AgentMetrics, serve_metrics
from agent.supervisor import Supervisor
from common.sdnotify import Notifier, keep_alive

_LOGGER = logging.getLogger(__name__)

READY_WAIT_SECONDS = 10.0


class AgentService:
    """Created after the link (it wraps the event sink the link installs); `start` once
    the supervisor has recovered and the link runs; `close` at shutdown."""

    def __init__(
        self,
        config: AgentConfig,
        supervisor: Supervisor,
        link: SchedulerLink,
        notifier: Notifier | None = None,
    ) -> None:
        self._config = config
        self._supervisor = supervisor
        self._link = link
        self.notifier = notifier or Notifier.from_environment()
        self.metrics = AgentMetrics(supervisor, link)
        self.metrics.watch(supervisor)
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = False

    async def start(self) -> None:
        self._runner = await serve_metrics(self._config.metrics_listen, self.metrics.registry)
        if self.notifier.enabled:
            self._tasks = [
                asyncio.create_task(self._announce_ready(), name="sd-ready"),
                # Watchdog pings run from the start: joining may take READY_WAIT_SECONDS.
                asyncio.create_task(keep_alive(self.notifier, self.status), name="sd-keepalive"),
            ]

    def status(self) -> str:
        """The STATUS= line: pods running, and the link."""
        workers = list(self._supervisor.workers.values())
        running = sum(1 for w in workers if w.status().phase == "Running")
        pods = f"{running} pods running ({len(workers)} on this node)"
        if self._link.connected.is_set():
            return f"{pods}; joined {self._config.server} as {self._config.node_name}"
        if not self._ready:
            return f"{pods}; joining {self._config.server}"
        return f"{pods}; scheduler {self._config.server} unreachable, serving from local state"

    async def _announce_ready(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._link.connected.wait(), READY_WAIT_SECONDS)
        self._ready = True
        self.notifier.notify("READY=1", f"STATUS={self.status()}")

    async def close(self) -> None:
        kept = "stopping its pods" if self._config.stop_pods_on_exit else "pods keep running"
        self.notifier.notify("STOPPING=1", f"STATUS=stopping; {kept}")
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        self.notifier.close()
