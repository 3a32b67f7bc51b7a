"""Both daemons as services, for real: sd_notify datagrams, agent /metrics, logs and secrets.

One module-scoped cluster: a corral-scheduler (JSON logs) and a real corral-agent,
each started with NOTIFY_SOCKET pointing at an AF_UNIX datagram socket the test
reads (an abstract one for the scheduler, a path for the agent) and WATCHDOG_USEC
set, as systemd would. The agent runs busybox pods that start, crash, run out of
memory and fail a probe, so its metrics have something to count.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent.runtime.native.cgroups import probe
from tests.conftest import ADMIN_TOKEN, ROOT, TOKEN, wait_for
from tests.imagebuild import build_busybox_rootfs, write_oci_layout

pytestmark = [pytest.mark.root, pytest.mark.timeout(120)]

WATCHDOG_USEC = 200_000  # pings every 0.1 s
NODE = "node-ops"
BAD_TOKEN = "corral_bad_not-a-real-token-9f8e7d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NotifySocket:
    """The systemd end of sd_notify: a datagram socket read by a thread (as systemd reads
    it all the time: an unread socket fills up and drops messages), and what it got."""

    def __init__(self, address: str) -> None:
        self.address = address  # NOTIFY_SOCKET's value: a path, or "@name" (abstract)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address[0] == "@" else address)
        self.seen: list[tuple[float, str]] = []  # (monotonic time, message)
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                return  # closed
            with self._changed:
                self.seen.append((time.monotonic(), data.decode()))
                self._changed.notify_all()

    def wait(self, predicate: Callable[[str], bool], timeout: float = 30.0) -> str:
        """The first message (received so far or within `timeout`) satisfying `predicate`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for _, message in self.seen:
                    if predicate(message):
                        return message
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such notification; last: {self.seen[-5:]}")
                self._changed.wait(left)

    def count(self, text: str) -> int:
        with self._changed:
            return sum(text in m for _, m in self.seen)

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._reader.join(timeout=5)


def get(
    port: int, path: str, token: str | None = ADMIN_TOKEN, headers: dict[str, str] | None = None
) -> tuple[int, bytes, http.client.HTTPMessage]:
    """One GET on loopback with http.client (no proxy, no redirects)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    hdrs = dict(headers or {})
    if token is not None:
        hdrs["Authorization"] = f"Bearer {token}"
    conn.request("GET", path, headers=hdrs)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, body, resp.headers


def call(port: int, method: str, path: str, body: Any = None, token: str = ADMIN_TOKEN) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    conn.request(
        method,
        path,
        body=data,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    resp = conn.getresponse()
    payload = resp.read()
    conn.close()
    return resp.status, json.loads(payload) if payload else None


@dataclass
class Cluster:
    base: Path
    api_port: int
    metrics_port: int
    sched_notify: NotifySocket
    agent_notify: NotifySocket
    scheduler: subprocess.Popen[bytes]
    agent: subprocess.Popen[bytes] | None = None
    cgroup_parent: str = ""
    ready_then_serving: bool = False  # /readyz answered 200 at the moment READY=1 came
    joined_at_ready: bool = False  # the node was known and Ready when the agent said READY
    viewer_token: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def scheduler_log(self) -> Path:
        return self.base / "scheduler.log"

    @property
    def agent_log(self) -> Path:
        return self.base / "agent.log"

    def pod(self, name: str) -> dict[str, Any]:
        status, body = call(self.api_port, "GET", f"/api/v1/namespaces/default/pods/{name}")
        assert status == 200, body
        pod: dict[str, Any] = body
        return pod

    def metrics(self) -> dict[str, float]:
        """The agent's /metrics as {'name{label="v",...}': value}."""
        status, body, headers = get(self.metrics_port, "/metrics", token=None)
        assert status == 200
        assert headers["Content-Type"].startswith("text/plain")
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return samples


def _env(notify: NotifySocket) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    env.update(NOTIFY_SOCKET=notify.address, WATCHDOG_USEC=str(WATCHDOG_USEC))
    return env


def _node_ready(port: int) -> bool:
    status, body = call(port, "GET", f"/api/v1/nodes/{NODE}")
    return status == 200 and any(
        c["type"] == "Ready" and c["status"] == "True" for c in body["status"]["conditions"]
    )


def _pods() -> list[dict[str, Any]]:
    def container(name: str, script: str, **fields: Any) -> dict[str, Any]:
        return {"name": name, "image": "busybox", "command": ["sh", "-c", script], **fields}

    def pod(name: str, policy: str, main: dict[str, Any]) -> dict[str, Any]:
        spec = {"restartPolicy": policy, "terminationGracePeriodSeconds": 1, "containers": [main]}
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}

    never_ready = {"exec": {"command": ["false"]}, "periodSeconds": 1}
    hog = "a=0123456789; while :; do a=$a$a; done"
    return [
        pod("steady", "Always", container("main", "sleep 300", readinessProbe=never_ready)),
        pod("crasher", "OnFailure", container("main", "sleep 0.2; exit 3")),
        pod("hog", "Never", container("main", hog, resources={"limits": {"memory": "32Mi"}})),
    ]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The scheduler and agent, started as systemd would start them; pods applied."""
    base = tmp_path_factory.mktemp("service")
    layout = write_oci_layout(
        build_busybox_rootfs(base / "rootfs"), base / "layout", ref="busybox:latest"
    )
    state = base / "agent"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.main",
            "image",
            "import",
            str(layout),
            "--root",
            str(state / "images"),
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    api_port, metrics_port = free_port(), free_port()
    sched_notify = NotifySocket(f"@corral-test-{os.getpid()}-{api_port}")
    agent_notify = NotifySocket(str(base / "agent-notify.sock"))
    scheduler = subprocess.Popen(
        [
            sys.executable, "-m", "scheduler.main",
            "--listen", f"127.0.0.1:{api_port}",
            "--state-dir", str(base / "scheduler"),
            "--join-token", TOKEN,
            "--admin-token", ADMIN_TOKEN,
            "--log-format", "json",
        ],
        cwd=ROOT,
        env=_env(sched_notify),
        stdout=subprocess.DEVNULL,
        stderr=open(base / "scheduler.log", "wb"),
    )  # fmt: skip
    c = Cluster(base, api_port, metrics_port, sched_notify, agent_notify, scheduler)
    try:
        sched_notify.wait(lambda m: "READY=1" in m)
        # At once, no retry: READY=1 must mean the API already serves.
        c.ready_then_serving = get(api_port, "/readyz", token=None)[0] == 200
        c.cgroup_parent = f"corral-service-{os.getpid()}"
        c.agent = subprocess.Popen(
            [
                sys.executable, "-m", "agent.main",
                "--server", f"http://127.0.0.1:{api_port}",
                "--join-token", TOKEN,
                "--node-name", NODE,
                "--state-dir", str(state),
                "--cgroup-parent", c.cgroup_parent,
                "--metrics-listen", f"127.0.0.1:{metrics_port}",
            ],
            cwd=ROOT,
            env=_env(agent_notify),
            stdout=open(base / "agent.log", "wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        agent_notify.wait(lambda m: "READY=1" in m)
        c.joined_at_ready = _node_ready(api_port)
        for pod in _pods():
            status, body = call(api_port, "POST", "/api/v1/namespaces/default/pods", pod)
            assert status == 201, body
        yield c
    finally:
        try:
            _stop(c)
        finally:
            if c.agent is not None and c.agent.poll() is None:
                c.agent.kill()
            if c.scheduler.poll() is None:
                c.scheduler.kill()
            sched_notify.close()
            agent_notify.close()


def _stop(c: Cluster) -> None:
    """Remove the pods, SIGTERM the agent, then the scheduler; note what they said. Idempotent."""
    if c.agent is not None and c.agent.poll() is None:
        for name in ("steady", "crasher", "hog"):
            call(
                c.api_port, "DELETE", f"/api/v1/namespaces/default/pods/{name}?gracePeriodSeconds=0"
            )
        wait_for(lambda: not call(c.api_port, "GET", "/api/v1/pods")[1]["items"], timeout=60)
        c.agent.send_signal(signal.SIGTERM)
        c.facts["agent_exit"] = c.agent.wait(timeout=30)
        c.facts["agent_said"] = c.agent_notify.wait(lambda m: m.startswith("STOPPING=1"), 5)
        probe(c.cgroup_parent).remove("")
    if c.scheduler.poll() is None:
        c.scheduler.send_signal(signal.SIGTERM)
        c.facts["scheduler_exit"] = c.scheduler.wait(timeout=30)
        c.facts["scheduler_said"] = c.sched_notify.wait(lambda m: m.startswith("STOPPING=1"), 5)


def test_scheduler_notifies_ready_status_and_watchdog(cluster: Cluster) -> None:
    """READY=1 once the API serves, with a STATUS= line; WATCHDOG=1 again and again."""
    assert cluster.ready_then_serving
    first = cluster.sched_notify.seen[0][1]
    assert first.startswith("READY=1\n")
    assert f"STATUS=serving on http://127.0.0.1:{cluster.api_port}" in first
    cluster.sched_notify.wait(lambda m: "STATUS=" in m and "nodes ready" in m and "READY" not in m)
    before = cluster.sched_notify.count("WATCHDOG=1")
    time.sleep(0.6)
    assert cluster.sched_notify.count("WATCHDOG=1") - before >= 3  # every 0.1 s: about 6


def test_agent_notifies_once_joined(cluster: Cluster) -> None:
    """The agent's READY=1 comes once it has joined; STATUS= counts running pods."""
    assert cluster.joined_at_ready
    ready = cluster.agent_notify.wait(lambda m: "READY=1" in m)
    assert f"joined http://127.0.0.1:{cluster.api_port} as {NODE}" in ready
    wait_for(lambda: cluster.pod("steady")["status"]["phase"] == "Running", timeout=30)
    status = cluster.agent_notify.wait(
        lambda m: bool(re.search(r"STATUS=[1-9]\d* pods running", m))
    )
    assert "joined" in status
    before = cluster.agent_notify.count("WATCHDOG=1")
    time.sleep(0.6)
    assert cluster.agent_notify.count("WATCHDOG=1") - before >= 3


def test_agent_metrics(cluster: Cluster) -> None:
    """/metrics on the agent's loopback port counts pods, restarts, OOM kills, probe
    failures and launch latency."""

    def restarted() -> bool:
        statuses = cluster.pod("crasher")["status"].get("containerStatuses") or [{}]
        return statuses[0].get("restartCount", 0) >= 1

    def oom_killed() -> bool:
        statuses = cluster.pod("hog")["status"].get("containerStatuses") or [{}]
        return statuses[0].get("state", {}).get("terminated", {}).get("reason") == "OOMKilled"

    wait_for(lambda: cluster.pod("steady")["status"]["phase"] == "Running", timeout=30)
    wait_for(restarted, timeout=30)
    wait_for(oom_killed, timeout=30)
    m = wait_for(
        lambda: (
            (m := cluster.metrics())
            and m['corral_agent_probe_failures_total{probe="readiness"}'] >= 1
            and m
        ),
        timeout=15,
    )
    assert m['corral_agent_pods{phase="Running"}'] >= 1
    assert m['corral_agent_containers{state="running"}'] >= 1
    # The crasher waits out its back-off between runs, or runs.
    assert (
        m['corral_agent_containers_waiting{reason="CrashLoopBackOff"}']
        + m['corral_agent_containers{state="running"}']
        >= 2
    )
    restarts = (
        'corral_agent_container_restarts_total{container="main",namespace="default",pod="crasher"}'
    )
    assert m[restarts] >= 1
    assert m["corral_agent_oom_kills_total"] >= 1
    assert m["corral_agent_container_launch_seconds_count"] >= 3  # steady, crasher, hog
    assert 0 < m["corral_agent_container_launch_seconds_sum"] < 60
    assert m["corral_agent_container_starts_total"] >= 4  # crasher restarted
    assert m["corral_agent_scheduler_connected"] == 1
    assert "corral_agent_image_pull_duration_seconds_count" in m
    # Only on loopback: the agent has no port reachable from the network.
    listening = subprocess.run(
        ["ss", "-Hltnp"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    agent_pid = f"pid={cluster.agent.pid}," if cluster.agent else "?"
    mine = [line.split()[3] for line in listening if agent_pid in line]
    assert mine == [f"127.0.0.1:{cluster.metrics_port}"]


def test_access_log_has_request_ids(cluster: Cluster) -> None:
    """Every API response carries X-Request-Id (the client's, if sane); the access line
    of that request has it, with method, path, status and duration, as JSON."""
    status, _, headers = get(cluster.api_port, "/api/v1/pods", headers={"X-Request-Id": "ops-42"})
    assert status == 200 and headers["X-Request-Id"] == "ops-42"
    status, _, headers = get(
        cluster.api_port, "/api/v1/nodes", headers={"X-Request-Id": "<b>x</b>"}
    )
    generated = headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", generated)
    assert get(cluster.api_port, "/no/such/path")[2]["X-Request-Id"]

    def access_lines() -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in cluster.scheduler_log.read_text().splitlines()]
        return [doc for doc in lines if doc["logger"] == "corral.access"]

    mine = wait_for(lambda: [d for d in access_lines() if d.get("request_id") == "ops-42"])
    assert len(mine) == 1
    line = mine[0]
    assert line["level"] == "info" and line["message"].startswith("GET /api/v1/pods 200 ")
    assert (line["method"], line["path"], line["status"]) == ("GET", "/api/v1/pods", 200)
    assert line["duration_ms"] >= 0 and line["time"].endswith("Z")
    assert any(d.get("request_id") == generated for d in access_lines())
    for text in cluster.scheduler_log.read_text().splitlines():  # all of it is JSON lines
        doc = json.loads(text)
        assert {"time", "level", "logger", "message"} <= doc.keys()


def test_no_secret_reaches_a_log(cluster: Cluster) -> None:
    """Tokens in headers, in the page's ?token=, created by the API, refused ones, the
    join token and the node's credential: none is written to either daemon's log."""
    port = cluster.api_port
    status, created = call(port, "POST", "/api/v1/tokens", {"role": "viewer", "description": "x"})
    assert status == 201
    viewer = created["token"]
    assert get(port, "/api/v1/status", token=viewer)[0] == 200
    assert get(port, "/api/v1/pods", token=BAD_TOKEN)[0] == 401
    assert get(port, f"/?token={ADMIN_TOKEN}", token=None)[0] == 303
    assert get(port, f"/?token={BAD_TOKEN}&x=1", token=None)[0] == 401
    assert get(port, "/", token=None, headers={"Cookie": f"corral_token={viewer}"})[0] == 200
    assert get(port, "/api/v1/namespaces/default/pods/steady/log")[0] == 200
    assert get(port, "/metrics")[0] == 200
    time.sleep(0.3)  # the last access lines are written after the responses
    logs = cluster.scheduler_log.read_text() + cluster.agent_log.read_text()
    # corral_<id>_<secret>: the secret alone too (it may hold "_" itself, being urlsafe).
    secrets = [ADMIN_TOKEN, TOKEN, viewer, BAD_TOKEN, viewer.split("_", 2)[2]]
    credential = cluster.base / "agent" / "node-credential"  # issued at join (security)
    if credential.exists():
        secrets.append(credential.read_text().strip())
    for secret in secrets:
        assert secret not in logs, f"a token is in a log: {secret[:12]}..."
    assert "token=REDACTED" in logs  # the page's request was logged, without its token


def test_sigterm_says_stopping_and_exits_zero(cluster: Cluster) -> None:
    """SIGTERM: both daemons send STOPPING=1 and exit 0 (last: it stops the cluster)."""
    _stop(cluster)
    assert (cluster.facts["agent_exit"], cluster.facts["scheduler_exit"]) == (0, 0)
    assert "STATUS=stopping" in cluster.facts["agent_said"]
    assert "STATUS=shutting down" in cluster.facts["scheduler_said"]
