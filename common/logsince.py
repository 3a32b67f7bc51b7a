"""Where a log read starts (`sinceSeconds`, `sinceTime`), and the times log records carry.

The kubelet applies both on the node, to its own records' stamps and by its own clock
(`sinceSeconds` counted back from its now): so does the agent, from protocol 7. For an
older agent the scheduler filters what it relays (scheduler/logfilter.py), by its clock.
"""

from __future__ import annotations

from datetime import datetime, timedelta


def parse_stamp(stamp: str) -> datetime | None:
    """The time of an RFC 3339 stamp with an offset (`...Z`, nanoseconds cut to
    microseconds); None if it is not one."""
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def log_start(since_seconds: int | None, since_time: str | None, now: datetime) -> datetime | None:
    """The earliest record time a read shows: `since_seconds` before `now`, or
    `since_time`; None for the whole log."""
    if since_time is not None:
        return parse_stamp(since_time)
    if since_seconds is not None:
        try:
            return now - timedelta(seconds=since_seconds)
        except OverflowError:
            return datetime.min.replace(tzinfo=now.tzinfo)  # before any log
    return None
