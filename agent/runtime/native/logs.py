"""Container logs in the CRI format, with size-based rotation, and a reader with tail/follow.

Each line of a log file is ``<RFC3339Nano UTC> <stream> <tag> <content>``, as the
kubelet's CRI runtimes write them::

    2026-11-26T00:00:00.123456789Z stdout F hello
    2026-11-26T00:00:00.123456789Z stderr P the first 16 KiB of a very long line...

The tag is ``F`` for a full line and ``P`` for a part of a longer one (the rest
follows in the next record of the same stream). When the file would grow past
`max_bytes`, it is renamed to ``.1`` (``.1`` to ``.2``, ...) and a new one is opened;
at most `max_files` files are kept, the current one included.

The writer runs in each container's monitor (forked from the fork server), so this
module imports nothing beyond `os` and `time` at load time; the reader's asyncio is
imported where it is used.
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing into every monitor
if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Callable

MAX_LINE = 16 * 1024  # longer lines are split into P records, as containerd does


def timestamp(ns: int | None = None) -> str:
    """RFC3339 with nanoseconds in UTC: ``2026-11-26T00:00:00.123456789Z``."""
    ns = time.time_ns() if ns is None else ns
    seconds, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{frac:09d}Z"


def rotated(path: str, index: int) -> str:
    """The name of the `index`-th older file (0 is the current one)."""
    return path if index == 0 else f"{path}.{index}"


def previous(path: str) -> str:
    """Where the log of a container's previous run is kept (`corral logs --previous`)."""
    return path + ".previous"


def retire(path: str, max_files: int) -> None:
    """Keep the finished run's log as `previous` and start the next run's log afresh
    (its rotated parts would otherwise read as older parts of the new run)."""
    try:
        os.replace(path, previous(path))
    except FileNotFoundError:
        return
    for index in range(1, max_files + 1):
        try:
            os.unlink(rotated(path, index))
        except FileNotFoundError:
            pass


class LogWriter:
    """Appends CRI log records for several streams to one file, rotating by size.

    Not thread-safe; one writer per file (the container's monitor).
    """

    def __init__(self, path: str, max_bytes: int = 10 * 1024 * 1024, max_files: int = 3) -> None:
        self.path = path
        self.max_bytes = max(max_bytes, 1024)
        self.max_files = max(max_files, 1)
        self._pending: dict[str, bytearray] = {}
        self._fd = -1
        self._size = 0
        self._open()

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.close(self._fd)
        if self.max_files == 1:
            os.truncate(self.path, 0)  # nowhere to keep the old lines
        else:
            # Shift from the oldest down so no rename overwrites a file still to move;
            # the rename onto the last slot drops the oldest file.
            for index in range(self.max_files - 2, -1, -1):
                try:
                    os.rename(rotated(self.path, index), rotated(self.path, index + 1))
                except FileNotFoundError:
                    pass
        self._open()

    def write(self, stream: str, data: bytes) -> None:
        """Log `data` read from `stream` ("stdout" or "stderr"); an incomplete last line
        waits for the next call (or `flush`)."""
        buf = self._pending.setdefault(stream, bytearray())
        buf += data
        records = []
        prefix = f"{timestamp()} {stream} ".encode()
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            # A line longer than MAX_LINE goes out as P records, then the F remainder.
            while end - start > MAX_LINE:
                records.append(prefix + b"P " + buf[start : start + MAX_LINE] + b"\n")
                start += MAX_LINE
            records.append(prefix + b"F " + buf[start:end] + b"\n")
            start = end + 1
        while len(buf) - start >= MAX_LINE:  # no newline yet, but too long to hold back
            records.append(prefix + b"P " + buf[start : start + MAX_LINE] + b"\n")
            start += MAX_LINE
        del buf[:start]
        self._append(records)

    def write_record(self, stamp: str, stream: str, partial: bool, text: bytes) -> None:
        """Append one record as given, with its own time: a copy of another runtime's log
        (the Docker runtime's). `text` holds no newline."""
        tag = b" P " if partial else b" F "
        self._append([stamp.encode() + b" " + stream.encode() + tag + text + b"\n"])

    def flush(self, stream: str | None = None) -> None:
        """Write what is held back of an unterminated last line (at EOF) as a full line."""
        for name in [stream] if stream else list(self._pending):
            buf = self._pending.get(name)
            if buf:
                self._append([f"{timestamp()} {name} F ".encode() + bytes(buf) + b"\n"])
                buf.clear()

    def _append(self, records: list[bytes]) -> None:
        chunk: list[bytes] = []
        size = 0
        for record in records:
            if self._size + size + len(record) > self.max_bytes and self._size + size > 0:
                self._write_all(b"".join(chunk))
                chunk, size = [], 0
                self._rotate()
            chunk.append(record)
            size += len(record)
        if chunk:
            self._write_all(b"".join(chunk))

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class LogLine:
    """One parsed record: when, which stream, whether partial, and the text."""

    __slots__ = ("partial", "stream", "text", "timestamp")

    def __init__(self, timestamp: str, stream: str, partial: bool, text: str) -> None:
        self.timestamp = timestamp
        self.stream = stream
        self.partial = partial
        self.text = text

    def __repr__(self) -> str:
        return f"LogLine({self.timestamp!r}, {self.stream!r}, {self.partial!r}, {self.text!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LogLine) and (
            (self.timestamp, self.stream, self.partial, self.text)
            == (other.timestamp, other.stream, other.partial, other.text)
        )

    __hash__ = None  # type: ignore[assignment]


def parse_line(raw: bytes) -> LogLine | None:
    """A record without its newline; None if it is not in the CRI format."""
    parts = raw.split(b" ", 3)
    if len(parts) < 3 or parts[2] not in (b"F", b"P"):
        return None
    text = parts[3] if len(parts) == 4 else b""
    return LogLine(
        parts[0].decode("ascii", "replace"),
        parts[1].decode("ascii", "replace"),
        parts[2] == b"P",
        text.decode("utf-8", "replace"),
    )


def _parse_all(data: bytes) -> list[LogLine]:
    lines = []
    for raw in data.split(b"\n"):
        line = parse_line(raw) if raw else None
        if line is not None:
            lines.append(line)
    return lines


def read_lines(path: str, tail: int | None = None, max_files: int = 64) -> list[LogLine]:
    """The records of the current file and its rotated predecessors, oldest first.

    `tail` keeps only the last so many; blocking (call it through asyncio.to_thread).
    """
    lines: list[LogLine] = []
    # Newest first, so `tail` can stop early; reversed at the end.
    for index in range(max_files):
        try:
            with open(rotated(path, index), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            if index == 0:
                continue  # rotated this instant, or not written yet
            break
        if tail is None:
            lines[:0] = _parse_all(data)
            continue
        # Only the records still wanted are parsed (newest first): parsed, the rest of a
        # 10 MiB file were 120,000 objects made and freed, the free one call that held
        # the GIL (the event loop's too) for about 30 ms.
        wanted: list[LogLine] = []
        raws = data.split(b"\n")
        while raws and len(lines) + len(wanted) < tail:
            raw = raws.pop()
            line = parse_line(raw) if raw else None
            if line is not None:
                wanted.append(line)
        wanted.reverse()
        lines[:0] = wanted
        if len(lines) >= tail:
            break
    return lines if tail is None else lines[-tail:] if tail > 0 else []


async def follow(
    path: str,
    *,
    tail: int | None = None,
    done: Callable[[], bool] | None = None,
    interval: float = 0.1,
) -> AsyncIterator[LogLine]:
    """Yield the last `tail` records (all with None), then new ones as they are written:
    `follow_batches`, a record at a time."""
    async for batch in follow_batches(path, tail=tail, done=done, interval=interval):
        for line in batch:
            yield line


async def follow_batches(
    path: str,
    *,
    tail: int | None = None,
    done: Callable[[], bool] | None = None,
    interval: float = 0.1,
) -> AsyncGenerator[list[LogLine], None]:
    """Yield the last `tail` records (all with None) as one list, then the new ones of
    each read as they are written, a list a read (never empty).

    Survives rotation: a renamed file is read to its end before switching to the new
    one. Ends once `done()` is true (the container exited) and everything is read;
    without `done` it follows until cancelled. File access and parsing run in a thread:
    one read may bring a whole rotated file (`max_bytes`, 10 MiB by default), whose
    parsing took the event loop 0.1-0.3 s.
    """
    import asyncio  # here, not at the top: the monitors never need it

    def open_current() -> tuple[int, int, int] | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        st = os.fstat(fd)
        return fd, st.st_ino, st.st_size

    def read_more(fd: int) -> bytes:
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def read_step(fd: int, ino: int, pending: bytes) -> tuple[bool, list[LogLine], bytes]:
        """(rotated, the complete records appended, the incomplete rest): the path is
        looked at before the read, so that lines written between a read and the rotation
        are not lost with the old file."""
        try:
            rotated = os.stat(path).st_ino != ino
        except FileNotFoundError:
            rotated = True  # removed: the old file is complete too
        data = read_more(fd)
        if not data:
            return rotated, [], pending
        complete, _, rest = (pending + data).rpartition(b"\n")
        return rotated, _parse_all(complete), rest

    def history_of(fd: int, size: int) -> list[LogLine]:
        os.lseek(fd, size, os.SEEK_SET)
        return read_lines(path, tail)

    opened = await asyncio.to_thread(open_current)
    try:
        if opened is not None:
            # The history up to where the open file ends, then follow from that offset.
            fd, _ino, size = opened
            history = await asyncio.to_thread(history_of, fd, size)
            if history:
                yield history
        pending = b""
        while True:
            if opened is None:
                opened = await asyncio.to_thread(open_current)
                if opened is None:
                    if done is not None and done():
                        return
                    await asyncio.sleep(interval)
                    continue
            fd, ino, _size = opened
            rotated, lines, pending = await asyncio.to_thread(read_step, fd, ino, pending)
            if lines:
                yield lines
            if rotated:  # the old file is read to its end: go on with the new one
                os.close(fd)
                opened, pending = None, b""
                continue
            if lines:
                continue
            if done is not None and done():
                return
            await asyncio.sleep(interval)
    finally:
        if opened is not None:
            os.close(opened[0])
