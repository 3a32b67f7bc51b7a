"""Serve container logs over the agent link (`logs` requests from the scheduler)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from agent.runtime.native.logs import LogLine, follow_batches, previous, read_lines
from agent.supervisor import Supervisor
from common import protocol
from common.logsince import log_start, parse_stamp

_LOGGER = logging.getLogger(__name__)

CHUNK_BYTES = 32 * 1024
# A batch of more records than this is rendered in a thread: a whole log (up to
# log_max_bytes x log_max_files, 30 MiB by default) took the event loop 0.1-0.35 s.
INLINE_RECORDS = 512

Send = Callable[[protocol.Frame], Awaitable[None]]


def render(line: LogLine, timestamps: bool) -> str:
    text = line.text if line.partial else line.text + "\n"
    return f"{line.timestamp} {text}" if timestamps else text


def since(lines: list[LogLine], start: datetime | None) -> list[LogLine]:
    """The records not older than `start` (all of them without one), as the kubelet
    keeps them: by each record's stamp (a record without a readable one is kept)."""
    if start is None:
        return lines
    # Empties `lines` as it goes, as `chunks` does: a whole log's records, left in the
    # caller's list, were freed at once, on the event loop.
    kept = []
    lines.reverse()
    while lines:
        line = lines.pop()
        when = parse_stamp(line.timestamp)
        if when is None or when >= start:
            kept.append(line)
    return kept


def chunks(lines: list[LogLine], timestamps: bool) -> list[str]:
    """The records rendered and joined into chunks of CHUNK_BYTES or a little more (a
    chunk ends with the record that takes it to CHUNK_BYTES): a frame each.

    Empties `lines` as it goes, so that each record is freed on its own: a list of a
    whole log's records (350,000 for 30 MiB) freed at once is one call that holds the
    GIL, the event loop's too, for 80 ms, in whichever thread drops it."""
    out: list[str] = []
    buffer: list[str] = []
    size = 0
    lines.reverse()
    while lines:
        text = render(lines.pop(), timestamps)
        buffer.append(text)
        size += len(text)
        if size >= CHUNK_BYTES:
            out.append("".join(buffer))
            buffer.clear()
            size = 0
    if buffer:
        out.append("".join(buffer))
    return out


class LogServer:
    """One task per open log stream, cancelled by `logs_cancel` or when the link drops."""

    def __init__(self, supervisor: Supervisor) -> None:
        self._supervisor = supervisor
        self._streams: dict[int, asyncio.Task[None]] = {}

    def open(self, request: protocol.LogsRequest, send: Send) -> None:
        self.cancel(request.id)
        task = asyncio.create_task(self._serve(request, send), name=f"logs-{request.id}")
        self._streams[request.id] = task
        task.add_done_callback(functools.partial(self._ended_stream, request.id))

    def _ended_stream(self, stream_id: int, task: asyncio.Task[None]) -> None:
        # Only if it is still this task's: one cancelled for a request of the same id
        # ends after the new one was registered, and took the new one out of
        # `_streams` (no longer cancelled by `cancel`, nor by `close` when the link drops).
        if self._streams.get(stream_id) is task:
            del self._streams[stream_id]
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Retrieved here: a stream's unforeseen failure (a log file it may not read)
            # was left to the garbage collector's "Task exception was never retrieved".
            _LOGGER.warning("log stream %d failed: %r", stream_id, exc)

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
        timestamps = request.timestamps
        start = log_start(request.since_seconds, request.since_time, datetime.now(UTC))

        async def send_lines(lines: list[LogLine]) -> None:
            # A followed log's history is the whole log: its stamps are read in the thread.
            if len(lines) > INLINE_RECORDS:
                rendered = await asyncio.to_thread(lambda: chunks(since(lines, start), timestamps))
            else:
                rendered = chunks(since(lines, start), timestamps)
            for data in rendered:
                await send(protocol.LogsChunk(id=request.id, data=data))

        try:
            if not request.follow:
                # Read, parsed and rendered in one thread: only the sends are left here.
                tail = request.tail_lines
                for data in await asyncio.to_thread(
                    lambda: chunks(since(read_lines(path, tail), start), timestamps)
                ):
                    await send(protocol.LogsChunk(id=request.id, data=data))
            else:
                # A frame per read of the file (or per CHUNK_BYTES of it), not per record:
                # a container that writes fast has its records sent a read at a time.
                done = lambda: self._ended(request)  # noqa: E731
                batches = follow_batches(path, tail=request.tail_lines, done=done)
                async with contextlib.aclosing(batches):  # its file closed at once, if cancelled
                    async for batch in batches:
                        await send_lines(batch)
            await send(protocol.LogsChunk(id=request.id, eof=True))
        except (ConnectionError, RuntimeError) as exc:
            _LOGGER.debug("log stream %d ended: %s", request.id, exc)
