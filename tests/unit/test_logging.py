"""Structured logging: one line per event, text or JSON, extras and request ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from common.logs import REQUEST_ID, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger back as pytest had it."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def _log(fmt: str, level: str = "info") -> tuple[io.StringIO, logging.Logger]:
    out = io.StringIO()
    setup_logging(level, fmt, out)  # type: ignore[arg-type]
    return out, logging.getLogger("corral.test")


def test_json_lines(restore_logging: None) -> None:
    """Each record is one JSON object with time, level, logger, message and the extras."""
    out, log = _log("json")
    log.info("pod %s started", "web", extra={"node": "n1", "restarts": 2})
    doc = json.loads(out.getvalue())
    assert doc["level"] == "info" and doc["logger"] == "corral.test"
    assert doc["message"] == "pod web started"
    assert (doc["node"], doc["restarts"]) == ("n1", 2)
    assert doc["time"].endswith("Z") and "T" in doc["time"]


def test_text_line_with_extras(restore_logging: None) -> None:
    """Text: time, level, logger, message, then key=value (quoted when needed)."""
    out, log = _log("text")
    log.warning("slow", extra={"path": "/api/v1/pods", "why": "a b"})
    line = out.getvalue().rstrip("\n")
    assert ' WARNING corral.test: slow path=/api/v1/pods why="a b"' in line


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_one_line_per_event(restore_logging: None, fmt: str) -> None:
    """Newlines in messages and tracebacks never split an event over lines."""
    out, log = _log(fmt)
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        log.exception("failed:\nhere")
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert "Traceback" in lines[0] and "boom" in lines[0]


def test_request_id_is_added(restore_logging: None) -> None:
    """While a request is handled, every line carries its id."""
    out, log = _log("json")
    token = REQUEST_ID.set("req-1")
    try:
        log.info("inside")
    finally:
        REQUEST_ID.reset(token)
    log.info("outside")
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["request_id"] == "req-1"
    assert "request_id" not in outside


def test_levels(restore_logging: None) -> None:
    """Below the configured level nothing is written."""
    out, log = _log("text", "warning")
    log.info("quiet")
    log.error("loud")
    assert "quiet" not in out.getvalue() and "loud" in out.getvalue()
