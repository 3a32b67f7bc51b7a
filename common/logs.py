"""Structured logging for both daemons: one line per event, human-readable or JSON.

    setup_logging("info", "text")  # 2024-05-01T12:00:00.123Z INFO scheduler.api: GET /… 200
    setup_logging("info", "json")  # {"time": "…", "level": "info", "logger": "…", "message": "…"}

Fields passed with `extra={...}` are appended (`key=value` in text, keys in JSON).
While an API request is handled its id (`request_id`, set by the API's access-log
middleware through `REQUEST_ID`) is added to every line logged on its behalf.
Tracebacks stay on the same line (newlines escaped), so a line is always one event.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

LogFormat = Literal["text", "json"]

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields = {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        fields.setdefault("request_id", request_id)
    return fields


class TextFormatter(logging.Formatter):
    """`TIME LEVEL logger: message key=value ...` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        parts = [_time(record), record.levelname, f"{record.name}:", message]
        for key, value in _extras(record).items():
            text = str(value)
            if not text or any(c in text for c in ' "='):
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        if record.exc_info:
            parts.append("exc=" + json.dumps(self.formatException(record.exc_info)))
        elif record.stack_info:
            parts.append("stack=" + json.dumps(record.stack_info))
        return " ".join(parts).replace("\n", "\\n").replace("\r", "\\r")


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, then the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            doc.setdefault(key, value)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            doc["stack"] = record.stack_info
        return json.dumps(doc, default=str, ensure_ascii=False)


def setup_logging(
    level: str = "info", fmt: LogFormat = "text", stream: TextIO | None = None
) -> None:
    """Send every logger's records at `level` and above to `stream` (stderr) in `fmt`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiohttp's own access logger is off (ours adds request ids and hides tokens); its
    # other loggers are quiet below warning unless we debug.
    if level.lower() != "debug":
        logging.getLogger("aiohttp").setLevel(logging.WARNING)
    logging.captureWarnings(True)
