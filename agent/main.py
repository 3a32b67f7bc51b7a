"""corral-agent: run this node's pods for the scheduler; `corral-agent image ...` manages images.

SIGTERM or SIGINT stops the agent and leaves every pod running: the next agent
re-adopts them (pods outlive the agent process).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import ENV_PREFIX, AgentConfig
from common import eventloop
from common.config import ConfigError, load_config
from common.logs import setup_logging
from common.sdnotify import Notifier
from common.statelock import StateDirLocked, lock_state_dir

if TYPE_CHECKING:
    from agent.link import SchedulerLink
    from agent.runtime.native.cgroups import CgroupDriver
    from agent.runtime.router import RuntimeRouter
    from agent.supervisor import Supervisor

_LOGGER = logging.getLogger("agent")
TRIM_WAIT_SECONDS = 10.0  # as READY=1 (agent/service.py): joined, or serving without it


def trim_memory() -> None:
    """Give the heap pages freed since the start back to the kernel. glibc keeps freed
    memory in the process until malloc_trim: the garbage of startup (compiling modules
    that have no .pyc, building pydantic schemas, the first sync with the scheduler)
    stays resident otherwise, about 1.2 MiB measured on an idle agent. No gc.collect()
    first: it blocked the event loop for 70 ms and freed nothing more that was measured."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc (musl): nothing to do
        ctypes.CDLL(None).malloc_trim(0)


async def _trim_after_start(link: SchedulerLink) -> None:
    """Once, after the first sync with the scheduler (or after waiting for it as long as
    READY=1 does), when the startup garbage exists and the pods are applied."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(link.connected.wait(), TRIM_WAIT_SECONDS)
    trim_memory()


async def housekeeping(
    runtime: RuntimeRouter,
    supervisor: Supervisor,
    config: AgentConfig,
    state: Path,
    cgroups: CgroupDriver,
) -> None:
    """Remove what pods that no runtime knows left behind (agent/housekeeping.py)."""
    from agent.housekeeping import log_swept, sweep
    from agent.runtime.setup import log_dir_of

    log_dir = log_dir_of(config, state)
    try:
        known = await runtime.known_pods() | set(supervisor.workers)
        swept = await asyncio.to_thread(sweep, known, log_dir, supervisor.records_dir, cgroups)
    except Exception as exc:  # the agent runs its pods whatever is left here
        _LOGGER.error("housekeeping failed: %s", exc, exc_info=not isinstance(exc, OSError))
        return
    log_swept(swept)


def read_token(config: AgentConfig) -> str | None:
    """The join token (None if the node holds a credential already); see agent/security.py."""
    from agent.security import join_token

    return join_token(config)


async def run(config: AgentConfig, token: str | None) -> None:
    # Taken out of the environment before anything is started: the fork server,
    # monitors and pods must not inherit systemd's notification socket.
    notifier = Notifier.from_environment()
    # The signals before anything else: a SIGTERM while the agent started (its imports,
    # the fork server, 0.5-1 s) killed it outright, exit status -15. Now it stops it.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    state = Path(config.state_dir)
    try:
        # First: nothing of the state directory (the pods' records) is read before this
        # process owns it. Not inherited by the fork server, monitors or pods.
        state_lock = await lock_state_dir(state, "corral-agent")
        try:
            await _run(config, token, notifier, state, stop)
        finally:
            state_lock.release()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _run(
    config: AgentConfig, token: str | None, notifier: Notifier, state: Path, stop: asyncio.Event
) -> None:
    from agent.delegation import pods_parent
    from agent.imagegc import ImageGcMetrics, image_collector, pod_images, run_image_gc
    from agent.link import SchedulerLink
    from agent.runtime.native.cgroups import probe
    from agent.runtime.setup import build_runtime
    from agent.service import AgentService
    from agent.supervisor import Supervisor

    parent = await asyncio.to_thread(pods_parent, config.cgroup_parent, config.cgroup_delegated)
    cgroups = await asyncio.to_thread(probe, parent)
    runtime = build_runtime(config, state, cgroups)  # native and docker, routed per pod
    if stop.is_set():  # not the fork server started only to be closed
        _LOGGER.info("stopped while starting; pods left as they were")
        return
    await runtime.start()
    link: SchedulerLink | None = None
    supervisor = Supervisor(runtime, state, lambda uid: link.report(uid) if link else None)
    link = SchedulerLink(config, supervisor, token)
    service = AgentService(config, supervisor, link, notifier)  # sd_notify and /metrics
    try:
        if stop.is_set():  # nothing recovered yet: no pod is stopped, whatever the config
            _LOGGER.info("stopped while starting; pods left as they were")
            return
        await supervisor.recover()
        # Before the link: no pod can be new to the runtimes while the sweep looks.
        await housekeeping(runtime, supervisor, config, state, cgroups)
        tasks = [asyncio.create_task(link.run(), name="scheduler-link")]
        await service.start()
        tasks.append(asyncio.create_task(_trim_after_start(link), name="trim-memory"))
        collector = image_collector(config, runtime)
        if collector is not None:
            service.metrics.registry.register(ImageGcMetrics(collector))
        if collector is not None and collector.policy.enabled:
            workers = supervisor.workers
            # Called in gc's thread: the list is taken in one step, under the GIL.
            gc = run_image_gc(collector, lambda: pod_images(w.pod for w in list(workers.values())))
            tasks.append(asyncio.create_task(gc, name="image-gc"))
        _LOGGER.info("corral-agent %s running (cgroup v%d)", config.node_name, cgroups.version)
        await stop.wait()
        # `corral up` (stop_pods_on_exit) stops them in supervisor.close below.
        kept = "stopping its pods" if config.stop_pods_on_exit else "pods keep running"
        _LOGGER.info("shutting down; %s", kept)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await service.close()
        await supervisor.close(stop_pods=config.stop_pods_on_exit)
        await runtime.close()
        # The pods' cgroup parent, made by the first pod, goes with the agent once no pod
        # is left below it (`corral up` stops its pods; an agent otherwise keeps them
        # running, and so the parent). The next pod makes it again.
        if await asyncio.to_thread(cgroups.remove_parent_if_empty):
            _LOGGER.info("removed the pods' cgroup parent %s: no pod left", cgroups.parent)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["image"]:
        from agent.runtime.native.images import image_main

        return image_main(argv[1:])
    try:
        config = load_config(
            AgentConfig,
            argv,
            prog="corral-agent",
            description="corral's node agent: runs this machine's pods. "
            "`corral-agent image import|ls|rm` manages the local image store.",
            env_prefix=ENV_PREFIX,
        )
        token = read_token(config)
        from agent.security import check_transport

        insecure = check_transport(config)
    except ConfigError as exc:
        print(f"corral-agent: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    if insecure:
        _LOGGER.warning("%s", insecure)
    try:
        eventloop.run(run(config, token))
    except StateDirLocked as exc:
        print(f"corral-agent: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
