"""What one agent link sends cannot break the scheduler for everyone else: its frames are
taken or refused one by one, and what is taken is in a shape the rest of the scheduler
can use. The "agents" are raw WebSocket clients (`test_node_credentials.RawAgent`)."""

from __future__ import annotations

import json

import aiohttp

from common import protocol
from tests.conftest import SchedulerProcess, wait_for
from tests.integration.test_api import pod
from tests.integration.test_node_credentials import http, join  # noqa: F401 (fixture)


async def test_an_event_stamped_without_a_utc_offset_breaks_no_event_list(
    http: aiohttp.ClientSession,  # noqa: F811
    bare_scheduler: SchedulerProcess,
) -> None:
    """An agent's event whose timestamp has no offset (not RFC 3339) is recorded at the
    time it was received: stored naive, it made every event list (sorted by time) a 500."""
    s = bare_scheduler
    agent, _ = await join(http, s, "node-a")
    spec = pod("web", nodeSelector={"kubernetes.io/hostname": "node-a"})
    assert s.request("POST", "/api/v1/namespaces/default/pods", spec).status == 201
    desired = await agent.receive_type(protocol.Desired)
    uid = json.loads(desired.upsert[0])["metadata"]["uid"]
    event = protocol.EventReport(
        uid=uid, namespace="default", name="web", reason="Pulled", timestamp="2026-01-01T00:00:00"
    )
    await agent.send(protocol.PodEvents(events=[event]))

    def pulled() -> list[dict[str, object]]:
        resp = s.request("GET", "/api/v1/events")
        assert resp.status == 200, resp.body
        return [e for e in resp.json()["items"] if e["reason"] == "Pulled"]

    (recorded,) = wait_for(pulled, timeout=10)
    assert str(recorded["lastTimestamp"]).endswith("Z"), recorded
    assert s.request("GET", "/api/v1/namespaces/default/events").status == 200
    await agent.ws.close()
