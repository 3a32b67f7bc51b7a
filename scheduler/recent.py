"""A bounded list of recent errors for operators (`/api/v1/status`)."""

from __future__ import annotations

import logging
from collections import deque
from datetime import datetime

from common.models import now

_LOGGER = logging.getLogger(__name__)


class RecentErrors:
    """The last `size` errors, newest last, each with its time; also logged."""

    def __init__(self, size: int = 50) -> None:
        self._items: deque[tuple[datetime, str]] = deque(maxlen=size)

    def add(self, message: str) -> None:
        _LOGGER.warning("%s", message)
        self._items.append((now(), message))

    def to_list(self) -> list[dict[str, str]]:
        return [
            {"time": t.isoformat().replace("+00:00", "Z"), "message": m} for t, m in self._items
        ]
