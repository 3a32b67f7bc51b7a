"""Nobody changes the cluster without a valid token; viewers only read; revoked tokens stop."""

from __future__ import annotations

import socket
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ADMIN_TOKEN, ROOT, SchedulerProcess
from tests.integration.test_api import pod

MUTATING = [
    ("POST", "/api/v1/namespaces/default/pods", pod("intruder")),
    (
        "PUT",
        "/api/v1/namespaces/default/pods/existing",
        {**pod("existing"), "metadata": {"name": "existing", "labels": {"changed": "yes"}}},
    ),
    ("DELETE", "/api/v1/namespaces/default/pods/existing", None),
    ("POST", "/api/v1/nodes/hollow-0000/cordon", None),
    ("POST", "/api/v1/nodes/hollow-0000/drain", None),
    ("DELETE", "/api/v1/nodes/hollow-0000", None),
    ("POST", "/api/v1/tokens", {"role": "admin"}),
]
READS = ["/api/v1/pods", "/api/v1/nodes", "/api/v1/status", "/api/v1/events", "/metrics"]


def snapshot(s: SchedulerProcess) -> tuple[Any, ...]:
    """What a refused request could have changed (not the agents' status reports)."""
    pods = s.get("/api/v1/pods")["items"]
    nodes = s.get("/api/v1/nodes")["items"]
    tokens = s.get("/api/v1/tokens")["items"]
    return (
        sorted(
            (
                p["metadata"]["name"],
                p["metadata"]["uid"],
                str(p["metadata"].get("labels")),
                p["metadata"].get("deletionTimestamp"),
            )
            for p in pods
        ),
        sorted((n["metadata"]["name"], n["spec"].get("unschedulable")) for n in nodes),
        sorted(t["id"] for t in tokens),
    )


def make_token(s: SchedulerProcess, role: str) -> dict[str, Any]:
    resp = s.request("POST", "/api/v1/tokens", {"role": role, "description": f"a {role}"})
    assert resp.status == 201, resp.body
    return resp.json()


@pytest.mark.parametrize(("method", "path", "body"), MUTATING)
def test_refusals_change_nothing(
    scheduler: SchedulerProcess, method: str, path: str, body: Any
) -> None:
    """Missing, wrong, revoked and viewer tokens are refused 401/403 and nothing changes."""
    assert (
        scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("existing")).status == 201
    )
    viewer = make_token(scheduler, "viewer")
    revoked = make_token(scheduler, "admin")
    assert scheduler.request("DELETE", f"/api/v1/tokens/{revoked['id']}").status == 200
    before = snapshot(scheduler)
    for token, code in (
        (None, 401),
        ("corral_nope_not-a-real-token", 401),
        (revoked["token"], 401),
        (viewer["token"], 403),
    ):
        resp = scheduler.request(method, path, body, token=token)
        assert resp.status == code, (token, resp.status, resp.body)
        assert resp.json()["kind"] == "Status"
        assert resp.json()["reason"] == ("Unauthorized" if code == 401 else "Forbidden")
    assert snapshot(scheduler) == before


def test_viewer_reads_but_not_logs(scheduler: SchedulerProcess) -> None:
    """A viewer token reads every list and the status, but not container logs or tokens."""
    viewer = make_token(scheduler, "viewer")["token"]
    for path in READS:
        assert scheduler.request("GET", path, token=viewer).status == 200, path
        assert scheduler.request("GET", path, token=None).status == 401, path
    scheduler.request("POST", "/api/v1/namespaces/default/pods", pod("logme"))
    resp = scheduler.request("GET", "/api/v1/namespaces/default/pods/logme/log", token=viewer)
    assert resp.status == 403
    assert scheduler.request("GET", "/api/v1/tokens", token=viewer).status == 403


def test_public_paths(bare_scheduler: SchedulerProcess) -> None:
    """Health, readiness and the OpenAPI documents need no token."""
    for path in ("/healthz", "/readyz", "/openapi.json", "/openapi/v3", "/openapi/v3/api/v1"):
        assert bare_scheduler.request("GET", path, token=None).status == 200, path


def test_tokens_are_stored_hashed_and_listed_without_secrets(
    bare_scheduler: SchedulerProcess,
) -> None:
    """The store never holds a token in plain text; lists show ids and roles only."""
    created = make_token(bare_scheduler, "viewer")
    listing = bare_scheduler.get("/api/v1/tokens")
    assert created["id"] in {t["id"] for t in listing["items"]}
    assert created["token"] not in str(listing)
    bare_scheduler.stop()
    db = (bare_scheduler.state_dir / "state.db").read_bytes()
    wal = bare_scheduler.state_dir / "state.db-wal"
    data = db + (wal.read_bytes() if wal.exists() else b"")
    assert created["token"].encode() not in data
    assert ADMIN_TOKEN.encode() not in data


def test_generated_admin_token(tmp_path) -> None:
    """Without an admin_token option, one is generated into STATE_DIR/admin-token (0600)."""
    state = tmp_path / "s"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "scheduler.main",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
            str(state),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        path = state / "admin-token"
        assert path.stat().st_mode & 0o777 == 0o600
        token = path.read_text().strip()
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "scheduler.cli.main",
                "--server",
                url,
                "--token",
                token,
                "token",
                "list",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert "admin" in result.stdout and token not in result.stdout
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_cli_token_lifecycle(bare_scheduler: SchedulerProcess) -> None:
    """corral token create|list|revoke, and a revoked token stops working at once."""

    def corral(*args: str, token: str = ADMIN_TOKEN) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "scheduler.cli.main",
                "--server",
                bare_scheduler.url,
                "--token",
                token,
                *args,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )

    created = corral("token", "create", "--role", "viewer", "--description", "ci reader")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("corral_")
    assert corral("get", "pods", token=token).returncode == 0
    listing = corral("token", "list")
    assert "viewer" in listing.stdout and "ci reader" in listing.stdout
    token_id = token.split("_")[1]
    assert corral("token", "revoke", token_id).returncode == 0
    refused = corral("get", "pods", token=token)
    assert refused.returncode == 1 and "Unauthorized" in refused.stderr


@pytest.mark.parametrize("path", ["/api/v1/pods", "/api/v1/agent"])
def test_a_token_that_is_not_utf8_is_refused(bare_scheduler: SchedulerProcess, path: str) -> None:
    """Header bytes that are not UTF-8 (aiohttp reads them as lone surrogates) are a
    token like any wrong one: 401, not a 500 from hashing it."""
    host, port = bare_scheduler.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n".encode()
            + b"Authorization: Bearer corral_\xff\xfe\r\n\r\n"
        )
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert bare_scheduler.request("GET", "/readyz").status == 200
