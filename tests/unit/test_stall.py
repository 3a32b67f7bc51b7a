"""The stall rule the node lifecycle controller and the hub's link check share."""

from __future__ import annotations

import pytest

from scheduler.stall import woke_from_stall


@pytest.mark.parametrize(
    ("due", "woke", "limit", "stalled"),
    [
        (97.5, 100.0, 5.0, True),  # exactly half the limit late: a stall
        (97.6, 100.0, 5.0, False),  # a little less: a slow timer
        (0.0, 40.0, 5.0, True),
        (100.0, 100.0, 5.0, False),  # on time
        (100.5, 100.0, 5.0, False),  # early: asyncio may run a timer a clock tick early
        (0.0, 15.0, 30.0, True),  # the links' silence limit
        (0.0, 14.9, 30.0, False),
    ],
)
def test_a_timer_half_its_limit_late_or_more_woke_from_a_stall(
    due: float, woke: float, limit: float, stalled: bool
) -> None:
    assert woke_from_stall(due, woke, limit) is stalled
