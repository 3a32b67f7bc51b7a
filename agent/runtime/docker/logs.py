"""Copy a Docker container's output into corral's CRI log file, so `corral logs` is unchanged.

The choice: follow the Docker API's log stream (`GET /containers/{id}/logs?follow=1&
timestamps=1`), not the json-file on disk (which belongs to dockerd, and whose path and
format depend on its log driver). Each message arrives in a multiplexed frame:

    [stream: 1 stdout, 2 stderr][0 0 0][size: uint32 big-endian] <RFC3339Nano time> <text>

and becomes one CRI record with Docker's own timestamp (normalized to nine digits): `F` if
the text ends a line, `P` for the 16 KiB parts Docker splits long lines into.

Resuming: the follow starts `since` the last record already in the file, and records up
to that time are skipped, so an agent restart neither loses nor repeats lines (Docker
keeps the output meanwhile; its json-file is bounded by the same size settings). One
follower per container run; it ends when the container exits and its output is drained.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from datetime import UTC, datetime

import aiodocker
import aiohttp

from agent.runtime.native.logs import LogWriter, read_lines

_LOGGER = logging.getLogger(__name__)

STREAMS = {1: "stdout", 2: "stderr"}
_HEADER = struct.Struct(">BxxxI")


def normalize_stamp(stamp: str) -> str:
    """`2026-11-26T01:47:31.4740884Z` -> nine fractional digits, as corral's own logs have."""
    head, dot, frac = stamp.rstrip("Z").partition(".")
    if "+" in frac or "-" in frac or not stamp.endswith("Z"):
        # An offset instead of Z (not what dockerd sends, but be exact about it).
        parsed = datetime.fromisoformat(stamp).astimezone(UTC)
        return parsed.strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"
    return f"{head}.{(frac if dot else '').ljust(9, '0')[:9]}Z"


def since_param(stamp: str | None) -> str:
    """Docker's `since` (Unix seconds with nanoseconds) for a normalized stamp; "0" if None."""
    if stamp is None:
        return "0"
    head, _, frac = stamp.rstrip("Z").partition(".")
    seconds = int(datetime.fromisoformat(head + "+00:00").timestamp())
    return f"{seconds}.{frac or '0'}"


def last_stamp(path: str) -> str | None:
    """The time of the last record already written (blocking)."""
    lines = read_lines(path, tail=1)
    return lines[-1].timestamp if lines else None


class FrameReader:
    """Splits Docker's multiplexed stream into (stream, payload) frames."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        self._buf += data
        frames = []
        while len(self._buf) >= _HEADER.size:
            kind, size = _HEADER.unpack_from(self._buf)
            if len(self._buf) < _HEADER.size + size:
                break
            payload = bytes(self._buf[_HEADER.size : _HEADER.size + size])
            del self._buf[: _HEADER.size + size]
            frames.append((STREAMS.get(kind, "stdout"), payload))
        return frames


def records(
    frames: list[tuple[str, bytes]], after: str | None
) -> list[tuple[str, str, bool, bytes]]:
    """CRI records (stamp, stream, partial, text) from timestamped frames newer than `after`."""
    out = []
    for stream, payload in frames:
        raw_stamp, _, text = payload.partition(b" ")
        stamp = normalize_stamp(raw_stamp.decode("ascii", "replace"))
        if after is not None and stamp <= after:
            continue  # already copied before an agent restart
        partial = not text.endswith(b"\n")
        out.append((stamp, stream, partial, text[:-1] if not partial else text))
    return out


async def follow(
    docker: aiodocker.Docker, container_id: str, path: str, max_bytes: int, max_files: int
) -> None:
    """Copy the container's output into `path` until it exits (or the task is cancelled)."""
    after = await asyncio.to_thread(last_stamp, path)
    writer = await asyncio.to_thread(LogWriter, path, max_bytes, max_files)
    reader = FrameReader()
    params = {
        "follow": "1",
        "stdout": "1",
        "stderr": "1",
        "timestamps": "1",
        "since": since_param(after),
    }
    try:
        async with docker._query(
            f"containers/{container_id}/logs",
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),  # as long as it runs
        ) as resp:
            async for chunk in resp.content.iter_any():
                batch = records(reader.feed(chunk), after)
                if batch:
                    after = batch[-1][0]
                    await asyncio.to_thread(_write, writer, batch)
    except aiodocker.DockerError as exc:
        if exc.status not in (404, 409):  # the container is gone (or going): nothing to copy
            _LOGGER.warning("logs of container %s: %s", container_id[:12], exc.message)
    finally:
        await asyncio.to_thread(writer.close)


def _write(writer: LogWriter, batch: list[tuple[str, str, bool, bytes]]) -> None:
    for stamp, stream, partial, text in batch:
        writer.write_record(stamp, stream, partial, text)
