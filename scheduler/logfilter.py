"""`limitBytes` of a pod's log, applied by the scheduler to what the agent sends; and
`sinceSeconds`/`sinceTime` for an agent before protocol 7, whose `logs` request cannot
carry them (from 7 the agent applies them itself, by its clock: common/logsince.py).

For a start time such an agent is asked for timestamps, every record's (`<RFC 3339> text`):
lines before the start are left out, as the kubelet leaves them out, and the stamp is
taken off again unless the client asked for it too. The kubelet applies `tailLines` before
the start time, as the agent here (the last N lines, then those not older than the start).
A record the runtime split (a line longer than its buffer) is one line here.
"""

from __future__ import annotations

from datetime import datetime

from common.logsince import parse_stamp

# What a log read that failed midway ends with (its node lost or failing, its reader too
# slow), then `REASON]\n`, before the scheduler cuts the response short: the reason, for
# whoever reads the body (`corral logs` says it on stderr: `ended_because`).
LOG_ENDED_PREFIX = "\n[corral: log stream ended: "


def ended_because(tail: bytes) -> str | None:
    """The reason a log read that was cut short gives at its end (`tail`: its last
    bytes), or None if it ends otherwise."""
    text = tail.decode(errors="replace")
    start = text.rfind(LOG_ENDED_PREFIX)
    if start < 0 or not text.endswith("]\n"):
        return None
    return text[start + len(LOG_ENDED_PREFIX) : -2] or None


def stamp_of(line: str) -> datetime | None:
    """The time a timestamped line starts with; None if it starts with none."""
    stamp, space, _ = line.partition(" ")
    return parse_stamp(stamp) if space else None


# The most of a line held back until its end comes; a longer one is judged by its stamp
# without it (a container printing no newline would have its log held whole).
MAX_PENDING = 64 * 1024


class LogFilter:
    """What of a log stream is written: `feed` each piece as it comes, `flush` at the end."""

    def __init__(self, since: datetime | None, timestamps: bool, limit: int | None) -> None:
        self._since = since
        self._timestamps = timestamps
        self._remaining = limit
        self._pending = ""  # the start of a line whose end has not come yet
        self._started = since is None  # a line not older than `since` has been seen
        # Within a line too long to hold whose start was judged: True, the rest is kept;
        # False, left out; None, at the start of a line.
        self._rest: bool | None = None

    @property
    def done(self) -> bool:
        """Whether `limitBytes` have been written: nothing more will be."""
        return self._remaining == 0

    def feed(self, data: str) -> bytes:
        if self._since is None:
            return self._limited(data)
        text, self._pending = self._pending + data, ""
        since = self._since
        out = []
        start = 0
        while start < len(text):
            end = text.find("\n", start)
            if self._rest is not None:  # the rest of a line judged already
                piece = text[start:] if end < 0 else text[start : end + 1]
                if self._rest:
                    out.append(piece)
                if end < 0:
                    break
                self._rest = None
            elif end >= 0:
                out.append(self._line(text[start : end + 1], since))
            elif len(text) - start < MAX_PENDING:
                self._pending = text[start:]  # its stamp (or its end) is yet to come
                break
            else:
                # A line with no end in sight (output without newlines, followed): judged
                # by its stamp now, not held whole.
                out.append(self._line(text[start:], since))
                self._rest = self._started
                break
            start = end + 1
        return self._limited("".join(out))

    def flush(self) -> bytes:
        """The last line, if the log does not end with a newline."""
        pending, self._pending = self._pending, ""
        if not pending or self._since is None:
            return b""
        return self._limited(self._line(pending, self._since))

    def _line(self, line: str, since: datetime) -> str:
        stamp = stamp_of(line)
        if not self._started:
            if stamp is None or stamp < since:
                return ""
            self._started = True  # a log is in time order: every later line is kept
        if self._timestamps or stamp is None:
            return line
        return line.partition(" ")[2]

    def _limited(self, text: str) -> bytes:
        data = text.encode()
        if self._remaining is None:
            return data
        data = data[: self._remaining]
        self._remaining -= len(data)
        return data
