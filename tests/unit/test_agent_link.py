"""The agent link's redial timing: capped by the node grace the scheduler announces."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from agent.config import AgentConfig
from agent.link import BACKOFF_CAP, BACKOFF_INITIAL, SchedulerLink, redial_cap, redial_delay


@pytest.mark.parametrize(
    ("grace", "cap"),
    [(5.0, 1.25), (40.0, BACKOFF_CAP), (0.4, BACKOFF_INITIAL), (12.0, 3.0)],
)
def test_the_redial_cap_is_a_quarter_of_the_node_grace_within_bounds(
    grace: float, cap: float
) -> None:
    assert redial_cap(grace) == cap


@pytest.mark.parametrize("cap", [BACKOFF_INITIAL, 1.25, BACKOFF_CAP])
def test_redial_delays_double_up_to_the_cap_with_jitter_down(cap: float) -> None:
    for attempt in range(1, 40):
        ceiling = min(cap, BACKOFF_INITIAL * 2**attempt)
        delays = [redial_delay(attempt, cap) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempt, min(delays))
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not in step


def test_the_welcome_s_node_grace_caps_the_redials(tmp_path: Path) -> None:
    config = AgentConfig(node_name="n1", state_dir=str(tmp_path))
    supervisor: Any = SimpleNamespace()  # the link only hooks its callbacks until it runs
    link = SchedulerLink(config, supervisor, token="t")
    assert link.redial_cap == BACKOFF_CAP  # before any welcome: nothing to stay within
    link._configure({"heartbeat_seconds": 1.0, "node_grace_seconds": 5.0})
    assert link.redial_cap == 1.25
    link._configure({"heartbeat_seconds": 8.0, "node_grace_seconds": 40.0})  # stretched
    assert (link.heartbeat_seconds, link.redial_cap) == (8.0, BACKOFF_CAP)
