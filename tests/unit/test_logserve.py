"""The agent's log server: a container's log sent over the link in chunks, read, parsed
and rendered off the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent import logserve
from agent.logserve import CHUNK_BYTES, INLINE_RECORDS, LogServer
from agent.runtime.native import logs
from common import protocol

LINE = "a record of a chatty container, 64 characters long, more or less"


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll until `predicate()` holds (the caller bounds the time)."""
    while True:
        if predicate():
            return
        await asyncio.sleep(0.01)


def server(path: Path, finished: bool = True) -> tuple[LogServer, SimpleNamespace]:
    container = SimpleNamespace(finished=finished)
    supervisor = SimpleNamespace(
        workers={"uid": SimpleNamespace(containers={"c": container})},
        runtime=SimpleNamespace(log_path=lambda uid, name: path),
    )
    return LogServer(supervisor), container  # type: ignore[arg-type]


async def serve(srv: LogServer, **request: Any) -> list[protocol.LogsChunk]:
    """Every frame the server sends for one request, up to its end."""
    frames: list[protocol.LogsChunk] = []
    ended = asyncio.Event()

    async def send(frame: protocol.Frame) -> None:
        assert isinstance(frame, protocol.LogsChunk)
        frames.append(frame)
        if frame.eof:
            ended.set()

    srv.open(protocol.LogsRequest(id=1, uid="uid", container="c", **request), send)
    async with asyncio.timeout(30):
        await ended.wait()
    return frames


def write_log(path: Path, records: int) -> None:
    writer = logs.LogWriter(str(path), max_bytes=1 << 30)
    writer.write("stdout", f"{LINE}\n".encode() * records)
    writer.close()


@pytest.mark.parametrize("follow", [False, True])
async def test_a_log_goes_in_chunks_not_a_frame_per_record(tmp_path: Path, follow: bool) -> None:
    """A followed log's history (and each read of it) goes in CHUNK_BYTES frames, as an
    unfollowed one does: a frame per record made `kubectl logs -f` of a chatty container
    353,000 frames for 30 MiB, at both ends of the link."""
    path = tmp_path / "c.log"
    records = 5000
    write_log(path, records)
    srv, _ = server(path)
    frames = await serve(srv, follow=follow)
    text = "".join(f.data or "" for f in frames)
    assert text == f"{LINE}\n" * records
    assert len(frames) <= len(text) // CHUNK_BYTES + 2  # the chunks, the rest and the eof
    assert frames[-1].eof and frames[-1].error is None


async def test_records_written_while_followed_go_a_read_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    write_log(path, 1)
    srv, container = server(path, finished=False)
    frames: list[protocol.LogsChunk] = []

    async def send(frame: protocol.Frame) -> None:
        assert isinstance(frame, protocol.LogsChunk)
        frames.append(frame)

    srv.open(protocol.LogsRequest(id=1, uid="uid", container="c", follow=True), send)
    async with asyncio.timeout(10):
        await _until(lambda: bool(frames))
        writer = logs.LogWriter(str(path), max_bytes=1 << 30)
        writer.write("stdout", f"{LINE}\n".encode() * 100)  # one burst: one read
        writer.close()
        await _until(lambda: sum((f.data or "").count("\n") for f in frames) >= 101)
        container.finished = True
        await _until(lambda: frames[-1].eof)
    assert len(frames) == 3  # the history, the burst, the eof


@pytest.mark.parametrize("follow", [False, True])
async def test_a_big_log_is_parsed_and_rendered_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, follow: bool
) -> None:
    """A whole log (30 MiB at the default rotation) took the agent's event loop, and with
    it the link's heartbeats and every probe, 0.1-0.35 s to parse and render."""
    path = tmp_path / "c.log"
    write_log(path, INLINE_RECORDS * 4)
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    real_render, real_parse = logserve.render, logs.parse_line

    def render(line: logs.LogLine, timestamps: bool) -> str:
        threads.add(threading.get_ident())
        return real_render(line, timestamps)

    def parse_line(raw: bytes) -> logs.LogLine | None:
        threads.add(threading.get_ident())
        return real_parse(raw)

    monkeypatch.setattr(logserve, "render", render)
    monkeypatch.setattr(logs, "parse_line", parse_line)
    srv, _ = server(path)
    frames = await serve(srv, follow=follow)
    assert "".join(f.data or "" for f in frames).count("\n") == INLINE_RECORDS * 4
    assert threads and loop_thread not in threads


async def test_a_followed_burst_is_parsed_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a read brings (up to a whole rotated file, 10 MiB) is parsed in the thread that
    read it."""
    path = tmp_path / "c.log"
    loop_thread = threading.get_ident()
    parsed_on_loop = 0
    real_parse = logs.parse_line

    def parse_line(raw: bytes) -> logs.LogLine | None:
        nonlocal parsed_on_loop
        parsed_on_loop += threading.get_ident() == loop_thread
        return real_parse(raw)

    monkeypatch.setattr(logs, "parse_line", parse_line)
    finished = False
    got = 0

    async def reader() -> None:
        nonlocal got
        async for batch in logs.follow_batches(str(path), done=lambda: finished, interval=0.01):
            got += len(batch)

    task = asyncio.create_task(reader())
    async with asyncio.timeout(10):
        await asyncio.sleep(0.05)
        write_log(path, 1000)
        await _until(lambda: got >= 1000)
        finished = True
        await task
    assert parsed_on_loop == 0


async def test_a_stream_opened_again_under_its_id_stays_owned(tmp_path: Path) -> None:
    """A request for an id that is streaming replaces the stream; the old one's end took
    the new one out of the server's streams: `close` (the link dropped) left it running."""
    path = tmp_path / "c.log"
    write_log(path, 3)
    srv, _ = server(path, finished=False)  # followed until cancelled

    async def send(frame: protocol.Frame) -> None:
        pass

    request = protocol.LogsRequest(id=7, uid="uid", container="c", follow=True)
    srv.open(request, send)
    first = srv._streams[7]
    srv.open(request, send)  # the same id again: the first is cancelled
    second = srv._streams[7]
    await asyncio.wait({first})
    await asyncio.sleep(0)  # the first's done callbacks
    assert srv._streams.get(7) is second
    await srv.close()
    assert second.cancelled()


async def test_a_stream_that_fails_is_logged_not_left_unretrieved(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "c.log"
    write_log(path, 3)
    srv, _ = server(path)

    async def send(frame: protocol.Frame) -> None:
        raise ValueError("a frame that cannot go")

    srv.open(protocol.LogsRequest(id=3, uid="uid", container="c"), send)
    task = srv._streams[3]
    await asyncio.wait({task})
    await asyncio.sleep(0)  # its done callbacks
    assert task._log_traceback is False  # retrieved
    assert "log stream 3 failed: ValueError('a frame that cannot go')" in caplog.text


@pytest.mark.parametrize("follow", [False, True])
async def test_since_is_applied_by_the_node_to_its_records(tmp_path: Path, follow: bool) -> None:
    """Protocol 7: the agent leaves out the records older than `since_time` (or
    `since_seconds` ago, by its own clock), by each record's stamp, as the kubelet does.
    A line the runtime split into parts comes out whole, with no stamp inside it: the
    scheduler, filtering an older agent's stamped records, left the later parts' stamps
    in the text."""
    path = tmp_path / "c.log"
    path.write_text(
        "2024-05-01T10:00:00.000000001Z stdout F old\n"
        "2024-05-01T10:00:05.000000001Z stdout P new, long: \n"
        "2024-05-01T10:00:05.000000002Z stdout F the rest of it\n"
        "2024-05-01T10:00:06.000000001Z stderr F newer\n"
    )
    srv, _ = server(path)
    frames = await serve(srv, follow=follow, since_time="2024-05-01T10:00:05Z")
    text = "".join(f.data or "" for f in frames)
    assert text == "new, long: the rest of it\nnewer\n"
    stamped = await serve(srv, follow=follow, since_time="2024-05-01T10:00:06Z", timestamps=True)
    assert "".join(f.data or "" for f in stamped) == "2024-05-01T10:00:06.000000001Z newer\n"
    recent = await serve(srv, follow=follow, since_seconds=3600)  # 2024 is long ago
    assert "".join(f.data or "" for f in recent) == ""
    everything = await serve(srv, follow=follow, since_seconds=10**12)  # before any log
    assert "".join(f.data or "" for f in everything).startswith("old\n")


async def test_a_big_followed_history_since_a_time_is_filtered_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`since` reads every record's stamp: a followed log's history (the whole log, 30 MiB
    at the default rotation) had them read on the event loop, and the batch's records
    freed there at once."""
    path = tmp_path / "c.log"
    write_log(path, INLINE_RECORDS * 4)
    loop_thread = threading.get_ident()
    threads: set[int] = set()
    real_parse = logserve.parse_stamp

    def parse_stamp(stamp: str) -> Any:
        threads.add(threading.get_ident())
        return real_parse(stamp)

    monkeypatch.setattr(logserve, "parse_stamp", parse_stamp)
    srv, _ = server(path)
    frames = await serve(srv, follow=True, since_seconds=3600)
    assert "".join(f.data or "" for f in frames).count("\n") == INLINE_RECORDS * 4
    assert threads and loop_thread not in threads
