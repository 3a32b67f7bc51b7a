"""The status page at `/`: signing in with a token and its cookie, and what real Chromium shows."""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import ADMIN_TOKEN, HollowProcess, SchedulerProcess, ready_nodes, wait_for
from tests.imagebuild import skip_or_fail

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,900",
)


def fetch(
    s: SchedulerProcess, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    """One GET without following redirects (urllib would), body read."""
    conn = http.client.HTTPConnection(urlsplit(s.url).netloc, timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    conn.close()
    return response


def chromium(url: str, profile: Path, *args: str) -> str:
    """Run headless Chromium on `url` with a fresh profile; its stdout."""
    binary = shutil.which("chromium")
    if binary is None:
        skip_or_fail("chromium is not installed (apt-get install chromium; .ci/run does)")
    result = subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, url],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_page_signs_in_with_a_token_and_a_cookie(bare_scheduler: SchedulerProcess) -> None:
    """No token: a sign-in form; ?token= sets an HttpOnly SameSite=Strict cookie that only
    the page accepts; a bad or revoked token is refused."""
    s = bare_scheduler
    anonymous = fetch(s, "/")
    assert anonymous.status == 401
    assert anonymous.headers["Content-Type"].startswith("text/html")
    assert b'name="token"' in anonymous.body  # type: ignore[attr-defined]
    assert fetch(s, "/?token=not-a-token").status == 401

    signed_in = fetch(s, f"/?token={ADMIN_TOKEN}")
    assert signed_in.status == 303
    assert signed_in.headers["Location"] == "/"
    cookie = signed_in.headers["Set-Cookie"]
    assert cookie.startswith(f"corral_token={ADMIN_TOKEN};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert signed_in.headers["Referrer-Policy"] == "no-referrer"

    jar = {"Cookie": f"corral_token={ADMIN_TOKEN}"}
    page = fetch(s, "/", jar)
    assert page.status == 200
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert b'http-equiv="refresh"' in page.body  # type: ignore[attr-defined]
    assert fetch(s, "/api/v1/pods", jar).status == 401  # the cookie opens the page only
    assert fetch(s, "/", {"Authorization": f"Bearer {ADMIN_TOKEN}"}).status == 200

    created = s.request("POST", "/api/v1/tokens", {"role": "viewer", "description": "wall"})
    viewer = created.json()["token"]
    assert fetch(s, "/", {"Cookie": f"corral_token={viewer}"}).status == 200
    token_id = created.json()["id"]
    assert s.request("DELETE", f"/api/v1/tokens/{token_id}").status == 200
    revoked = fetch(s, "/", {"Cookie": f"corral_token={viewer}"})
    assert revoked.status == 401
    assert "corral_token=" in revoked.headers["Set-Cookie"]  # the stale cookie is dropped


def _pod(
    name: str, *, cpu: str = "100m", pool: str | None = None, policy: str = "Always"
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": policy,
        "containers": [
            {"name": "main", "image": "busybox", "resources": {"requests": {"cpu": cpu}}}
        ],
    }
    if pool:
        spec["nodeSelector"] = {"pool": pool}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def _pod_status(s: SchedulerProcess, name: str) -> dict[str, Any]:
    status: dict[str, Any] = s.get(f"/api/v1/namespaces/default/pods/{name}")["status"]
    return status


def test_chromium_shows_nodes_and_failing_pods(scheduler: SchedulerProcess, tmp_path: Path) -> None:
    """Headless Chromium renders the live cluster: every hollow node, a pod that fits
    nowhere with its reason, crashing and failed pods; the screenshot is kept."""
    s = scheduler
    # A pod that runs well, placed before the crashing node exists (it must not land there).
    assert (
        s.request("POST", "/api/v1/namespaces/default/pods", _pod("web", cpu="250m")).status == 201
    )
    wait_for(lambda: _pod_status(s, "web")["phase"] == "Running")
    crashy = HollowProcess(
        s,
        1,
        "--name-prefix",
        "crashy",
        "--labels",
        "pool=crashy",
        "--crash-rate",
        "1",
        "--crash-after",
        "0.2",
    )
    try:
        wait_for(lambda: len(ready_nodes(s)) == 4, timeout=20)
        for pod in (
            _pod("huge", cpu="100"),
            _pod("crasher", pool="crashy"),
            _pod("quitter", pool="crashy", policy="Never"),
        ):
            assert s.request("POST", "/api/v1/namespaces/default/pods", pod).status == 201
        wait_for(
            lambda: any(
                c["type"] == "PodScheduled" and c["status"] == "False"
                for c in _pod_status(s, "huge").get("conditions", [])
            )
        )
        wait_for(
            lambda: (
                _pod_status(s, "crasher").get("containerStatuses", [{}])[0].get("restartCount", 0)
                >= 1
            )
        )
        wait_for(lambda: _pod_status(s, "quitter")["phase"] == "Failed")
        metrics = s.request("GET", "/metrics").body.decode()
        oldest = re.search(r"^corral_pending_oldest_seconds ([0-9.e+-]+)$", metrics, re.M)
        assert oldest is not None and float(oldest.group(1)) > 0  # "huge" waits

        url = f"{s.url}/?token={ADMIN_TOKEN}"  # signs in, then redirects to /
        dom = chromium(url, tmp_path / "profile", "--dump-dom")
        for node in ("hollow-0000", "hollow-0001", "hollow-0002", "crashy-0000"):
            assert node in dom, node
        assert "Ready" in dom and "NotReady" not in dom.split("<h2>Pods by namespace")[0]
        problems = dom.split("Failing and pending pods")[1].split("Recent events")[0]
        assert "default/huge" in problems and "Insufficient cpu" in problems
        assert "default/crasher" in problems and "restarted" in problems
        assert "default/quitter" in problems and "Error" in problems
        assert "default/web" not in problems  # running well: not listed
        events = dom.split("Recent events")[1]
        assert "FailedScheduling" in events

        shot = tmp_path / "status.png"
        chromium(url, tmp_path / "profile2", f"--screenshot={shot}")
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    finally:
        crashy.stop()


@pytest.fixture(autouse=True)
def _show_screenshot_path(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Say where the screenshot is kept (the test's tmp dir), as a CI artifact would be."""
    request.node.user_properties.append(("artifacts", str(tmp_path)))
