"""Agents that go away without closing their link (killed: the socket reset) leave nothing
behind that only a full garbage collection could free.

The scheduler's collector settings (common/heap.py) never collect the old objects of a
long-lived link, so a reference cycle left by a dead link stays for good: aiohttp keeps
the error its `close()` raised, whose traceback holds the response. The scheduler runs
in this process (a real aiohttp server, control plane and store), the agents in a
`agent.hollow` process killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from aiohttp import web

from scheduler.api.common import CONTROL_PLANE
from scheduler.config import SchedulerConfig
from scheduler.hub import Hub
from tests.conftest import ROOT, cyclic_garbage_of, scheduler_in_process, wait_until

NODES = 5
TOKEN = "link-reset-join-token"


async def test_killed_agents_links_are_freed_without_the_cyclic_collector(
    tmp_path: Path,
) -> None:
    config = SchedulerConfig(state_dir=str(tmp_path / "state"), join_token=TOKEN)
    async with scheduler_in_process(config) as (app, runner, base):
        await _kill_and_check(app[CONTROL_PLANE].hub, runner, base)


async def _kill_and_check(hub: Hub, runner: web.AppRunner, base: str) -> None:
    cyclic_garbage_of(object)  # whatever the setup left, out of the way
    hollow = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "agent.hollow", "--server", base),
        *("--token", TOKEN, "--nodes", str(NODES), "--ramp-seconds", "0"),
        cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_until(lambda: len(hub.sessions) == NODES, 30)
        hollow.send_signal(signal.SIGKILL)
        await hollow.wait()
        await wait_until(lambda: not hub.sessions, 30)  # every link ended
        server = runner.server
        assert server is not None
        await wait_until(lambda: not server.connections, 30)  # their handlers returned
        assert cyclic_garbage_of(web.WebSocketResponse) == []
    finally:
        if hollow.returncode is None:
            hollow.kill()
            await hollow.wait()
