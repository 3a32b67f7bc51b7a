"""Requests that fail leave nothing that only a full garbage collection could free.

The scheduler's collector settings (common/heap.py) freeze whatever a young collection
finds alive, so a reference cycle that is alive then and garbage later stays for good.
A request's objects are alive while it is served: if they end in a cycle, a busy
scheduler keeps some of them for good. aiohttp's router keeps the 404 or 405 it raised
on the request (`match_info`), and that error's traceback holds the frames that hold
the request. The scheduler runs in this process (a real aiohttp server, control plane
and store), its client in the same process.
"""

from __future__ import annotations

import gc
from pathlib import Path

import aiohttp
from aiohttp import web

from scheduler.api.app import create_app
from scheduler.config import SchedulerConfig

ADMIN = "corral_request_cycles_admin_token"


def cyclic_garbage_of(kind: type) -> list[object]:
    """The objects of `kind` that only the cyclic collector could free, now."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        return [o for o in gc.garbage if isinstance(o, kind)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


def a_pod(name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": "busybox"}], **spec},
    }


async def test_failed_requests_are_freed_without_the_cyclic_collector(tmp_path: Path) -> None:
    config = SchedulerConfig(
        state_dir=str(tmp_path / "state"), admin_token=ADMIN, max_body_bytes=64 * 1024
    )
    runner = web.AppRunner(create_app(config), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"
    pods = f"{base}/api/v1/namespaces/default/pods"
    auth = {"Authorization": f"Bearer {ADMIN}"}
    as_json = {**auth, "Content-Type": "application/json"}
    failing = [
        ("GET", f"{base}/api/v1/no-such-resource", auth, None, 404),  # the router's 404
        ("PUT", f"{base}/api/v1/nodes", auth, None, 405),  # the router's 405
        ("GET", f"{pods}/missing", auth, None, 404),
        ("POST", pods, as_json, b"{not json", 400),
        ("POST", pods, as_json, b'{"kind": "Pod", "apiVersion": "v1", "metadata": {}}', 422),
        ("POST", pods, as_json, b"x" * (128 * 1024), 413),
        ("GET", pods, {}, None, 401),
    ]
    try:
        async with aiohttp.ClientSession() as client:
            async with client.post(pods, json=a_pod("web"), headers=auth) as created:
                assert created.status == 201
            failing.append(("POST", pods, as_json, b'{"apiVersion": "v1", "kind": "Pod", '
                            b'"metadata": {"name": "web"}, "spec": {"containers": '
                            b'[{"name": "app", "image": "busybox"}]}}', 409))  # fmt: skip
            cyclic_garbage_of(object)  # whatever the setup left, out of the way
            gc.disable()  # nothing collected while the requests are served: all is left
            try:
                for method, url, headers, body, status in failing:
                    async with client.request(method, url, headers=headers, data=body) as r:
                        await r.read()
                        assert r.status == status, (method, url, r.status)
                assert cyclic_garbage_of(web.Request) == []
            finally:
                gc.enable()
    finally:
        await runner.cleanup()
