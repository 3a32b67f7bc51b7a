"""RuntimeRouter: one Runtime for the supervisor, routing each pod to its own runtime.

The agent holds every runtime it has (native, docker) and routes a pod by its
`spec.runtimeClassName` (the name of a runtime), else the agent's default (`runtime` in
its config). Calls that carry only a uid go where that pod was created, or was found by
`recover` after an agent restart; a uid never seen goes to the default runtime, whose
operations are idempotent for unknown pods.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from agent.runtime.base import (
    ContainerExit,
    ContainerInfo,
    EventCallback,
    PodInfo,
    Runtime,
    RuntimeFailure,
    Usage,
)
from common.models import Pod

_LOGGER = logging.getLogger(__name__)


class RuntimeRouter:
    """A Runtime (agent/runtime/base.py) that delegates to the pod's runtime."""

    name = "router"

    def __init__(self, runtimes: dict[str, Runtime], default: str) -> None:
        if default not in runtimes:
            raise ValueError(f"default runtime {default!r} is not one of {sorted(runtimes)}")
        self.runtimes = runtimes
        self.default = default
        self._by_uid: dict[str, Runtime] = {}
        self.on_close: list[Callable[[], Awaitable[None]]] = []  # e.g. the registry client

    def for_pod(self, pod: Pod) -> Runtime:
        name = pod.spec.runtime_class_name or self.default
        runtime = self.runtimes.get(name)
        if runtime is None:
            raise RuntimeFailure(
                f'runtimeClassName "{name}" is not available on this node '
                f"(it has: {', '.join(sorted(self.runtimes))})",
                "CreatePodSandboxError",
            )
        return runtime

    def for_uid(self, uid: str) -> Runtime:
        return self._by_uid.get(uid) or self.runtimes[self.default]

    # --- lifecycle ---

    async def start(self) -> None:
        for runtime in self.runtimes.values():
            await runtime.start()

    async def close(self) -> None:
        results = await asyncio.gather(
            *(r.close() for r in self.runtimes.values()), return_exceptions=True
        )
        for name, result in zip(self.runtimes, results, strict=True):
            if isinstance(result, BaseException):
                _LOGGER.warning("closing the %s runtime: %s", name, result)
        for close in self.on_close:
            await close()

    async def recover(self) -> list[PodInfo]:
        found = []
        for runtime in self.runtimes.values():
            for info in await runtime.recover():
                self._by_uid[info.uid] = runtime
                found.append(info)
        return found

    async def known_pods(self) -> set[str]:
        known = set(self._by_uid)
        for runtime in self.runtimes.values():
            known |= await runtime.known_pods()
        return known

    # --- pods, by pod ---

    async def create_pod(self, pod: Pod) -> None:
        runtime = self.for_pod(pod)
        self._by_uid[pod.metadata.uid or ""] = runtime
        await runtime.create_pod(pod)

    async def ensure_image(self, pod: Pod, container: str, events: EventCallback) -> None:
        await self.for_pod(pod).ensure_image(pod, container, events)

    async def start_container(self, pod: Pod, container: str) -> ContainerInfo:
        return await self.for_pod(pod).start_container(pod, container)

    # --- pods, by uid ---

    async def wait_container(self, uid: str, container: str) -> ContainerExit:
        return await self.for_uid(uid).wait_container(uid, container)

    async def stop_container(self, uid: str, container: str, grace: float) -> ContainerExit | None:
        return await self.for_uid(uid).stop_container(uid, container, grace)

    async def exec_in_container(
        self,
        uid: str,
        container: str,
        argv: list[str],
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[int, bytes]:
        return await self.for_uid(uid).exec_in_container(uid, container, argv, timeout)

    def netns_path(self, uid: str) -> Path | None:
        return self.for_uid(uid).netns_path(uid)

    async def remove_pod(self, uid: str) -> None:
        await self.for_uid(uid).remove_pod(uid)
        self._by_uid.pop(uid, None)

    def usage(self, uid: str) -> Usage | None:
        return self.for_uid(uid).usage(uid)

    def log_path(self, uid: str, container: str) -> Path:
        return self.for_uid(uid).log_path(uid, container)
