"""Serve container logs over the agent link (`logs` requests from the scheduler)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable

from agent.runtime.native.logs import LogLine, follow, previous, read_lines
from agent.supervisor import Supervisor
from common import protocol

_LOGGER = logging.getLogger(__name__)

CHUNK_BYTES = 32 * 1024

Send = Callable[[protocol.Frame], Awaitable[None]]


def render(line: LogLine, timestamps: bool) -> str:
    text = line.text if line.partial else line.text + "\n"
    return f"{line.timestamp} {text}" if timestamps else text


class LogServer:
    """One task per open log stream, cancelled by `logs_cancel` or when the link drops."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._streams: dict[int, asyncio.Task[None]] = {}

    def open(self, request: protocol.LogsRequest, send: Send) -> None:
        self.cancel(request.id)
        task = asyncio.create_task(self._serve(request, send), name=f"logs-{request.id}")
        self._streams[request.id] = task
        task.add_done_callback(lambda _t: self._streams.pop(request.id, None))

    def cancel(self, stream_id: int) -> None:
        task = self._streams.pop(stream_id, None)
        if task is not None:
            task.cancel()

    async def close(self) -> None:
        tasks = list(self._streams.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _ended(self, request: protocol.LogsRequest) -> bool:
        """Whether the container will write no more: its pod is gone from this node, or
        it has exited for good (a followed log then ends, as kubectl's does)."""
        worker = self._supervisor.workers.get(request.uid)
        return worker is None or worker.containers[request.container].finished

    async def _serve(self, request: protocol.LogsRequest, send: Send) -> None:
        worker = self._supervisor.workers.get(request.uid)
        if worker is None or request.container not in worker.containers:
            await send(
                protocol.LogsChunk(
                    id=request.id,
                    eof=True,
                    error=f"pod {request.uid} has no container {request.container} on this node",
                )
            )
            return
        path = str(self._supervisor.runtime.log_path(request.uid, request.container))
        if request.previous:
            path = previous(path)
            if not await asyncio.to_thread(os.path.exists, path):
                await send(
                    protocol.LogsChunk(
                        id=request.id,
                        eof=True,
                        error=f"previous terminated container {request.container!r} not found",
                    )
                )
                return
            request = request.model_copy(update={"follow": False})
        buffer: list[str] = []
        size = 0

        async def flush() -> None:
            nonlocal size
            if buffer:
                await send(protocol.LogsChunk(id=request.id, data="".join(buffer)))
                buffer.clear()
                size = 0

        try:
            if not request.follow:
                for line in await asyncio.to_thread(read_lines, path, request.tail_lines):
                    buffer.append(render(line, request.timestamps))
                    size += len(buffer[-1])
                    if size >= CHUNK_BYTES:
                        await flush()
            else:
                stream = follow(path, tail=request.tail_lines, done=lambda: self._ended(request))
                async for line in stream:
                    buffer.append(render(line, request.timestamps))
                    size += len(buffer[-1])
                    if size >= CHUNK_BYTES:
                        await flush()
                    else:
                        await asyncio.sleep(0)  # let a burst gather into one chunk
                        await flush()
            await flush()
            await send(protocol.LogsChunk(id=request.id, eof=True))
        except (ConnectionError, RuntimeError) as exc:
            _LOGGER.debug("log stream %d ended: %s", request.id, exc)
