"""The scheduler's part of a log read: lines since a time, and at most N bytes."""

from __future__ import annotations

from datetime import UTC, datetime

from scheduler.logfilter import LogFilter

LOG = (
    "2024-05-01T10:00:00.5Z old\n"
    "2024-05-01T10:00:01.123456789Z new one\n"
    "2024-05-01T10:00:02Z new two\n"
)
SINCE = datetime(2024, 5, 1, 10, 0, 1, tzinfo=UTC)


def read(shown: LogFilter, pieces: list[str]) -> bytes:
    return b"".join(shown.feed(p) for p in pieces) + shown.flush()


def test_lines_since_a_time_whatever_the_pieces_they_come_in() -> None:
    for size in (1, 7, len(LOG)):
        pieces = [LOG[i : i + size] for i in range(0, len(LOG), size)]
        assert read(LogFilter(SINCE, False, None), pieces) == b"new one\nnew two\n"
        stamped = read(LogFilter(SINCE, True, None), pieces)
        assert stamped == LOG.split("\n", 1)[1].encode()


def test_a_last_line_without_its_newline_and_a_size_limit() -> None:
    assert read(LogFilter(SINCE, False, None), [LOG + "2024-05-01T10:00:03Z tail"]).endswith(
        b"new two\ntail"
    )
    shown = LogFilter(SINCE, False, 10)
    assert shown.feed(LOG) == b"new one\nne" and shown.done
    assert shown.feed("more\n") == b"" and shown.flush() == b""
    assert read(LogFilter(None, False, 3), ["ab", "cd"]) == b"abc"
    assert read(LogFilter(None, False, None), ["ab", "cd"]) == b"abcd"


def test_a_line_with_no_end_is_streamed_not_held() -> None:
    """A container that prints no newline (progress output), followed with --since: the
    line was held whole until its end, in the scheduler's memory, and nothing shown."""
    chunk = "x" * 16384
    shown = LogFilter(SINCE, False, None)
    out = shown.feed("2024-05-01T10:00:02Z ") + b"".join(shown.feed(chunk) for _ in range(64))
    assert out == b"x" * len(out) and len(out) >= 16384 * 60  # all but what is held
    assert shown.feed("y\n2024-05-01T10:00:03Z next\n") == b"y\nnext\n"
    old = LogFilter(SINCE, False, None)
    assert b"".join(old.feed(p) for p in ["2024-05-01T10:00:00Z ", *[chunk] * 64]) == b""
    assert old.feed("y\n2024-05-01T10:00:03Z next\n") == b"next\n"
