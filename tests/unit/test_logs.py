"""Container log files: CRI records, partial lines, size-based rotation, tail and follow."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.native import logs

RECORD = re.compile(rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z (stdout|stderr) [FP] ")


def _records(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


async def _until(predicate: Callable[[], bool]) -> None:
    """Poll until `predicate()` holds (the caller bounds the time)."""
    while True:
        if predicate():
            return
        await asyncio.sleep(0.01)


def test_timestamp_is_rfc3339_nano_utc() -> None:
    """Nanoseconds, UTC 'Z', as the kubelet writes them."""
    assert logs.timestamp(1_764_115_200_123_456_789) == "2025-11-26T00:00:00.123456789Z"


def test_lines_get_timestamp_stream_and_tag(tmp_path: Path) -> None:
    """Each complete line is one F record of its stream; a split line waits for its end."""
    path = tmp_path / "c.log"
    writer = logs.LogWriter(str(path))
    writer.write("stdout", b"hello\nwor")
    writer.write("stderr", b"oops\n")
    writer.write("stdout", b"ld\n")
    writer.close()
    records = _records(path)
    assert all(RECORD.match(r) for r in records)
    assert [r.split(b" ", 1)[1] for r in records] == [
        b"stdout F hello",
        b"stderr F oops",
        b"stdout F world",
    ]


def test_unterminated_last_line_is_flushed_on_close(tmp_path: Path) -> None:
    """Output without a final newline still reaches the log when the stream ends."""
    path = tmp_path / "c.log"
    writer = logs.LogWriter(str(path))
    writer.write("stdout", b"no newline")
    writer.close()
    assert _records(path)[0].endswith(b"stdout F no newline")


def test_long_lines_are_split_into_partial_records(tmp_path: Path) -> None:
    """A line longer than 16 KiB becomes P records and a final F record."""
    path = tmp_path / "c.log"
    writer = logs.LogWriter(str(path), max_bytes=1 << 20)
    writer.write("stdout", b"x" * (logs.MAX_LINE * 2 + 10) + b"\n")
    writer.close()
    lines = logs.read_lines(str(path))
    assert [line.partial for line in lines] == [True, True, False]
    assert "".join(line.text for line in lines) == "x" * (logs.MAX_LINE * 2 + 10)


def test_rotation_keeps_max_files_each_below_max_bytes(tmp_path: Path) -> None:
    """Past max_bytes the file moves to .1 (.1 to .2 ...); at most max_files remain."""
    path = tmp_path / "c.log"
    writer = logs.LogWriter(str(path), max_bytes=2048, max_files=3)
    for i in range(400):
        writer.write("stdout", f"line {i:04d} {'.' * 40}\n".encode())
    writer.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["c.log", "c.log.1", "c.log.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 2048
    lines = logs.read_lines(str(path))
    numbers = [int(line.text.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 400))  # oldest first, nothing lost in between
    assert numbers[0] > 0  # the oldest file was dropped


def test_single_file_truncates(tmp_path: Path) -> None:
    """With max_files=1 there is nowhere to rotate to: the file starts over."""
    path = tmp_path / "c.log"
    writer = logs.LogWriter(str(path), max_bytes=1024, max_files=1)
    for i in range(100):
        writer.write("stdout", f"{i:03d} {'.' * 50}\n".encode())
    writer.close()
    assert [p.name for p in tmp_path.iterdir()] == ["c.log"]
    assert path.stat().st_size <= 1024
    assert logs.read_lines(str(path))[-1].text.startswith("099")


def test_read_lines_tail_spans_rotated_files(tmp_path: Path) -> None:
    """tail=N returns the last N records, reaching into older files when needed."""
    path = tmp_path / "c.log"
    writer = logs.LogWriter(str(path), max_bytes=1024, max_files=5)
    for i in range(60):
        writer.write("stdout", f"n{i}\n".encode())
    writer.close()
    assert (tmp_path / "c.log.1").exists()
    current = len(_records(path))
    tail = logs.read_lines(str(path), tail=current + 3)
    assert [line.text for line in tail] == [f"n{i}" for i in range(60 - current - 3, 60)]
    assert logs.read_lines(str(path), tail=0) == []
    assert logs.read_lines(str(tmp_path / "missing.log")) == []


def test_parse_line_rejects_other_formats() -> None:
    """Only CRI records parse; an empty message is allowed."""
    assert logs.parse_line(b"garbage") is None
    line = logs.parse_line(b"2026-01-01T00:00:00.000000000Z stderr F ")
    assert line is not None and line.stream == "stderr" and line.text == ""


async def test_follow_reads_history_then_new_lines_across_rotation(tmp_path: Path) -> None:
    """follow yields the tail, then lines written later, also after the file rotates."""
    path = tmp_path / "c.log"
    writer = logs.LogWriter(str(path), max_bytes=1024, max_files=3)
    writer.write("stdout", b"old-1\nold-2\n")
    finished = False
    got: list[str] = []

    async def reader() -> None:
        async for line in logs.follow(str(path), tail=1, done=lambda: finished, interval=0.01):
            got.append(line.text)

    def read_at_least(n: int) -> Callable[[], bool]:
        return lambda: len(got) >= n

    task = asyncio.create_task(reader())
    async with asyncio.timeout(10):
        await _until(lambda: got == ["old-2"])
        for i in range(100):  # about 6 KB: several rotations
            writer.write("stdout", f"new-{i:03d} {'.' * 40}\n".encode())
            if i % 10 == 9:
                # Half a file at a time, then let the reader catch up: follow reopens the
                # path after a rotation, so a reader a whole file behind skips that file
                # (as kubectl logs -f would), and on a loaded machine a reader can fall
                # that far behind a writer that does not wait.
                await _until(read_at_least(i + 2))  # old-2, then new-000 to new-{i}
        writer.close()
        await _until(lambda: len(got) >= 101)
        finished = True
        await task
    assert got == ["old-2"] + [f"new-{i:03d} {'.' * 40}" for i in range(100)]


async def test_follow_keeps_lines_written_just_before_a_rotation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line written to the file and rotated away after the reader's last read is still
    read: follow looks at the path before it reads, not after."""
    path = tmp_path / "c.log"
    writer = logs.LogWriter(str(path), max_bytes=1024, max_files=3)
    writer.write("stdout", b"first\n")
    got: list[str] = []
    finished = False
    real_stat = os.stat
    injected = False

    def stat(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        # The timing that lost lines, made certain: the writer appends and rotates just
        # as the reader, having read everything, looks at the path.
        nonlocal injected
        if str(target) == str(path) and got == ["first"] and not injected:
            injected = True
            writer.write("stdout", b"between\n")
            writer._rotate()
        return real_stat(target, *args, **kwargs)

    monkeypatch.setattr(logs.os, "stat", stat)

    async def reader() -> None:
        async for line in logs.follow(str(path), done=lambda: finished, interval=0.01):
            got.append(line.text)

    task = asyncio.create_task(reader())
    async with asyncio.timeout(10):
        await _until(lambda: injected)
        writer.write("stdout", b"after\n")
        writer.close()
        await _until(lambda: "after" in got)
        finished = True
        await task
    assert got == ["first", "between", "after"]


async def test_follow_waits_for_a_file_not_yet_written(tmp_path: Path) -> None:
    """A container that has not logged yet: follow waits for the file, ends when done."""
    path = tmp_path / "later.log"
    done = False
    got: list[str] = []

    async def reader() -> None:
        async for line in logs.follow(str(path), done=lambda: done, interval=0.01):
            got.append(line.text)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0.05)
    writer = logs.LogWriter(str(path))
    writer.write("stderr", b"first\n")
    writer.close()
    async with asyncio.timeout(10):
        await _until(lambda: bool(got))
        done = True
        await task
    assert got == ["first"]
