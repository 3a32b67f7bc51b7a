"""The agent link: its redial timing (capped by the node grace the scheduler announces),
and its loops living and ending together."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from agent import stats
from agent.config import AgentConfig
from agent.link import (
    BACKOFF_CAP,
    BACKOFF_INITIAL,
    LinkFailed,
    SchedulerLink,
    redial_cap,
    redial_delay,
)
from common import protocol
from common.models import NODE_SYSTEM_INFO


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


class QuietLink:
    """What `_session` uses of a WebSocket: a welcome, then nothing more from the
    scheduler, while it keeps what the agent sends."""

    def __init__(self) -> None:
        welcome = protocol.Welcome(revision=1, pods=[], config={"heartbeat_seconds": 0.01})
        self._frames = [aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, protocol.encode(welcome), None)]
        self.sent: list[Any] = []

    async def receive(self) -> aiohttp.WSMessage:
        if self._frames:
            return self._frames.pop(0)
        await asyncio.Event().wait()  # the scheduler says nothing more
        raise AssertionError("unreachable")

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(protocol.decode(data))


async def test_a_heartbeat_loop_that_dies_ends_the_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeats failing (a measurement raising) end the link, to be dialled again,
    with the error logged. The link stayed open without heartbeats: the scheduler took
    the node for lost and ran its pods elsewhere while they still ran here."""
    config = AgentConfig(node_name="n1", state_dir=str(tmp_path))

    async def apply(*_args: Any, **_kwargs: Any) -> None:
        return None

    supervisor: Any = SimpleNamespace(workers={}, apply=apply)
    link = SchedulerLink(config, supervisor, token="t")
    ws = QuietLink()
    beats = 0

    def usage() -> dict[str, int]:
        nonlocal beats
        beats += 1
        if beats > 2:
            raise RuntimeError("psutil broke")
        return {"cpu": 0, "memory": 0}

    monkeypatch.setattr(stats, "usage", usage)
    with pytest.raises(LinkFailed, match="link-heartbeats ended: RuntimeError"):
        async with asyncio.timeout(10):
            await link._session(ws)  # type: ignore[arg-type]
    assert sum(isinstance(f, protocol.Heartbeat) for f in ws.sent) == 2


async def test_a_desired_frame_is_applied_to_its_end_when_the_link_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeats fail while a desired frame is being applied (a new pod's sandbox
    being made): the link ends only once the frame is applied. Cancelled halfway, the
    pod's worker stayed registered without its containers, ContainerCreating for good."""
    config = AgentConfig(node_name="n1", state_dir=str(tmp_path))
    applying = asyncio.Event()
    applied: list[bool] = []

    async def apply(upsert: list[Any], remove: list[str], **kwargs: Any) -> None:
        if kwargs.get("full"):
            return  # the welcome's
        applying.set()
        await asyncio.sleep(0.2)  # the sandbox
        applied.append(True)

    supervisor: Any = SimpleNamespace(workers={}, apply=apply)
    link = SchedulerLink(config, supervisor, token="t")
    ws = QuietLink()
    desired = protocol.Desired(revision=2, upsert=[], remove=["gone"])
    ws._frames.append(aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, protocol.encode(desired), None))

    def usage() -> dict[str, int]:
        if applying.is_set():
            raise RuntimeError("psutil broke")
        return {"cpu": 0, "memory": 0}

    monkeypatch.setattr(stats, "usage", usage)
    with pytest.raises(LinkFailed):
        async with asyncio.timeout(10):
            await link._session(ws)  # type: ignore[arg-type]
    assert applied == [True]


def test_the_agent_reports_every_node_system_info_key() -> None:
    """Kubernetes' clients require each key of a node's `status.nodeInfo`."""
    info = stats.node_info("native")
    assert set(NODE_SYSTEM_INFO) <= set(info)
    assert info["kubeletVersion"].startswith("v1.") and info["operatingSystem"] == "linux"
