"""Every route the scheduler serves, as listed by its own `/openapi.json`, refuses whoever
may not use it: so a route added later is covered without touching this test."""

from __future__ import annotations

import re
from typing import Any

from tests.conftest import SchedulerProcess
from tests.integration.test_auth import make_token, snapshot

# Readable without a token (scheduler/api/app.py PUBLIC_PATHS, PUBLIC_PREFIXES); the agent
# link checks its own credentials (tests/integration/test_node_credentials.py).
PUBLIC = {"/healthz", "/readyz", "/openapi.json", "/version", "/version/", "/", "/api/v1/agent"}
PUBLIC |= {"/openapi/v3"}
PUBLIC_PREFIXES = ("/openapi/v3/",)  # the OpenAPI document cut by group-version


def routes(s: SchedulerProcess) -> list[tuple[str, str]]:
    """(METHOD, concrete path) of every operation; path parameters filled in."""
    document: dict[str, Any] = s.get("/openapi.json")
    found = []
    for template, operations in document["paths"].items():
        path = re.sub(r"{namespace}", "default", template)
        path = re.sub(r"{\w+}", "probe-x", path)
        found += [(method.upper(), path) for method in operations]
    return found


def test_every_route_needs_a_token_and_writes_need_admin(
    bare_scheduler: SchedulerProcess,
) -> None:
    """No token, a wrong or revoked one: 401; a viewer writing: 403; nothing changes."""
    s = bare_scheduler
    viewer = make_token(s, "viewer")["token"]
    revoked = make_token(s, "admin")
    assert s.request("DELETE", f"/api/v1/tokens/{revoked['id']}").status == 200
    before = snapshot(s)
    checked = 0
    for method, path in routes(s):
        if path in PUBLIC or path.startswith(PUBLIC_PREFIXES):
            continue
        for token in (None, "corral_0000_wrong", revoked["token"]):
            resp = s.request(method, path, {}, token=token)
            assert resp.status == 401, (method, path, token, resp.status)
            assert resp.json()["reason"] == "Unauthorized"
        if method not in ("GET", "HEAD"):
            resp = s.request(method, path, {}, token=viewer)
            assert resp.status == 403, (method, path, resp.status, resp.body[:200])
            assert resp.json()["reason"] == "Forbidden"
        checked += 1
    assert checked >= 20, checked
    assert snapshot(s) == before
