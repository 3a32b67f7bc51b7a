"""Secrets hygiene on a whole cluster: scheduler over TLS, the real agent over wss, the CLI.

Every kind of secret is used: the configured admin token, an admin and a viewer
token made with `corral token create`, a revoked token, a wrong token, the join
token, the node credential the agent receives, and a registry password in the
agent's configuration. Then every log, every CLI output, the events, `corral
describe` and every file of both state directories are searched for each of
them; the only places allowed to hold one are the files meant to (the node
credential file, the agent's config) and the answer of `corral token create`.
Along the way: an agent with the wrong CA is refused, an agent with a stored
credential needs no join token, and the agent listens on loopback only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from agent.config import AgentConfig
from agent.runtime.native.cgroups import probe
from common.tls import client_context, is_loopback
from scheduler import certs
from tests.conftest import ADMIN_TOKEN, ROOT, TOKEN, SchedulerProcess, wait_for
from tests.imagebuild import build_busybox_rootfs, write_oci_layout

pytestmark = pytest.mark.root

NODE = "sec-node"
REGISTRY_PASSWORD = "registry-pa55word-do-not-log"
WRONG_TOKEN = "corral_deadbeef_not-a-token-anyone-was-given"


class Agent:
    """corral-agent over https with a CA file; its output appended to one log."""

    def __init__(self, scheduler: SchedulerProcess, state: Path, cgroup_parent: str) -> None:
        self.scheduler, self.state, self.cgroup_parent = scheduler, state, cgroup_parent
        self.log = state.parent / "agent.log"
        self.config = state.parent / "agent.toml"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ca_file: Path, *, join: bool = True) -> None:
        args = [
            sys.executable,
            "-m",
            "agent.main",
            "--config",
            str(self.config),
            "--server",
            self.scheduler.url,
            "--ca-file",
            str(ca_file),
            "--node-name",
            NODE,
            "--state-dir",
            str(self.state),
            "--cgroup-parent",
            self.cgroup_parent,
            "--log-level",
            "debug",
        ]
        if join:
            args += ["--join-token", TOKEN]
        if "metrics_listen" in AgentConfig.model_fields:
            args += ["--metrics-listen", "127.0.0.1:0"]  # tests run side by side
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_agent_config(path: Path) -> None:
    """A registry password in the agent's config, if this agent knows registries."""
    text = ""
    if "registries" in AgentConfig.model_fields:
        text = (
            f'[registries."127.0.0.1:9"]\nusername = "corral"\npassword = "{REGISTRY_PASSWORD}"\n'
        )
    path.write_text(text)
    try:
        AgentConfig.model_validate({"state_dir": "/x", **_toml(path)})
    except ValueError:
        path.write_text("")  # another shape of registry settings: leave the password out


def _toml(path: Path) -> dict[str, Any]:
    import tomllib

    return tomllib.loads(path.read_text())


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[SchedulerProcess, Agent, Path]]:
    """A TLS scheduler (debug logs), an agent ready to start, the PKI directory."""
    pki = tmp_path / "pki"
    certs.init_ca(pki)
    certs.issue(pki, "scheduler", ["127.0.0.1"])
    sched = SchedulerProcess(
        tmp_path / "scheduler",
        [
            "--tls-cert",
            str(pki / "scheduler.crt"),
            "--tls-key",
            str(pki / "scheduler.key"),
            "--log-level",
            "debug",
        ],
    )
    sched.ssl_context = client_context(str(pki / "ca.crt"))
    # The image first: a setup that fails there (no busybox-static) leaves nothing running.
    state = tmp_path / "agent" / "state"
    state.mkdir(parents=True)
    layout = write_oci_layout(
        build_busybox_rootfs(tmp_path / "rootfs"), tmp_path / "layout", ref="busybox:latest"
    )
    subprocess.run(
        [sys.executable, "-m", "agent.main", "image", "import", str(layout), "--root",
         str(state / "images")],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    sched.start()
    agent = Agent(sched, state, f"corral-secrets-{os.getpid()}")
    write_agent_config(agent.config)
    try:
        yield sched, agent, pki
    finally:
        for item in sched.get("/api/v1/pods")["items"]:
            name = item["metadata"]["name"]
            sched.request("DELETE", f"/api/v1/namespaces/default/pods/{name}")
        try:
            wait_for(lambda: not sched.get("/api/v1/pods")["items"], timeout=60)
        finally:
            agent.stop()
            sched.stop()
            probe(agent.cgroup_parent).remove("")


def node_ready(s: SchedulerProcess) -> bool:
    resp = s.request("GET", f"/api/v1/nodes/{NODE}")
    if resp.status != 200 or s.get("/api/v1/status")["nodes"]["connected"] < 1:
        return False
    conditions = resp.json()["status"]["conditions"]
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_no_secret_in_any_log(
    cluster: tuple[SchedulerProcess, Agent, Path], tmp_path: Path
) -> None:
    """Every secret is used; none appears in logs, events, errors, describe or state files."""
    s, agent, pki = cluster
    outputs: list[str] = []  # every CLI stdout and stderr that is not a token's one showing

    def corral(*args: str, token: str | None = ADMIN_TOKEN, keep: bool = True) -> Any:
        result = subprocess.run(
            [sys.executable, "-m", "scheduler.cli.main", "--server", s.url,
             "--ca-file", str(pki / "ca.crt"), *args],
            cwd=ROOT, capture_output=True, text=True, timeout=60,
            env={**os.environ, "CORRAL_TOKEN": token or ""},
        )  # fmt: skip
        outputs.append(result.stderr)
        if keep:
            outputs.append(result.stdout)
        return result

    # An agent that does not trust the scheduler's certificate never joins.
    other = certs.init_ca(tmp_path / "other-ca")
    agent.start(other.cert)
    wait_for(lambda: "certificate verify failed" in agent.log.read_text(), timeout=30)
    assert s.request("GET", f"/api/v1/nodes/{NODE}").status == 404
    agent.stop()

    # The right CA: it joins with the join token and stores its credential (0600).
    agent.start(pki / "ca.crt")
    wait_for(lambda: node_ready(s), timeout=30)
    credential_file = agent.state / "node-credential"
    wait_for(credential_file.exists, timeout=10)
    assert credential_file.stat().st_mode & 0o777 == 0o600
    credential = credential_file.read_text().strip()
    assert credential.startswith(f"corralnode_{NODE}_")
    assert agent.proc is not None
    listening = [
        c.laddr
        for c in psutil.Process(agent.proc.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert all(is_loopback(addr.ip) for addr in listening), listening
    agent.stop()

    # Later connections need no join token: the credential is enough.
    wait_for(lambda: not node_ready(s), timeout=15)
    agent.start(pki / "ca.crt", join=False)
    wait_for(lambda: node_ready(s), timeout=30)

    # API tokens of every kind.
    created = corral("token", "create", "--role", "admin", "--description", "ci", keep=False)
    admin2 = created.stdout.strip().splitlines()[-1]
    viewed = corral("token", "create", "--role", "viewer", keep=False)
    viewer = viewed.stdout.strip().splitlines()[-1]
    doomed = corral("token", "create", "--role", "admin", keep=False)
    revoked = doomed.stdout.strip().splitlines()[-1]
    assert corral("token", "revoke", revoked.split("_")[1]).returncode == 0

    manifest = tmp_path / "pod.yaml"
    manifest.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: talker}\nspec:\n"
        "  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n"
        "    image: busybox\n    command: [sh, -c, 'echo hello; sleep 300']\n"
    )
    assert corral("apply", "-f", str(manifest), token=admin2).returncode == 0
    # Reported by its agent (whether it runs is other tests' business): the link carried it.
    wait_for(
        lambda: s.get("/api/v1/namespaces/default/pods/talker")["status"].get("containerStatuses"),
        timeout=30,
    )
    corral("logs", "talker")  # relayed by the agent over the link
    assert corral("get", "pods", "-o", "wide", token=viewer).returncode == 0
    assert corral("describe", "pod", "talker", token=viewer).returncode == 0
    assert corral("describe", "node", NODE).returncode == 0
    for token in (viewer, WRONG_TOKEN):  # refusals the CLI prints
        refused = corral("delete", "pod", "talker", token=token)
        assert refused.returncode == 1, token
    corral("logs", "talker", token=viewer)  # 403: viewers do not read logs
    talker = "/api/v1/namespaces/default/pods/talker"
    for token in (revoked, TOKEN, credential, None):  # a join token or credential is no API token
        resp = s.request("DELETE", talker, token=token)
        assert resp.status == 401, token
        outputs.append(resp.body.decode())
    s.request("GET", f"/?token={viewer}", token=None)  # the status page's sign-in link
    s.request("GET", f"/api/v1/pods?token={admin2}", token=None)  # not a way in: 401
    corral("token", "list")
    outputs.append(s.request("GET", "/api/v1/events").body.decode())
    outputs.append(s.request("GET", "/api/v1/status").body.decode())
    outputs.append(s.request("GET", "/metrics").body.decode())

    time.sleep(0.5)  # the last log lines reach the files (the agent keeps running: it must
    # still stop its pod when the fixture deletes it)
    secrets = {
        "admin token": ADMIN_TOKEN,
        "created admin token": admin2,
        "viewer token": viewer,
        "revoked token": revoked,
        "wrong token": WRONG_TOKEN,
        "join token": TOKEN,
        "node credential": credential,
        "registry password": REGISTRY_PASSWORD,
    }
    # Where a secret may be: the file that holds it, the agent's config, the CA's key.
    allowed = {credential_file.resolve(), agent.config.resolve()}
    sources: dict[str, str] = {f"cli output {i}": text for i, text in enumerate(outputs)}
    for base in (s.state_dir, agent.state.parent):
        for path in base.rglob("*"):
            if not path.is_file() or path.is_symlink() or path.resolve() in allowed:
                continue
            if {"images", "ns"} & set(path.relative_to(base).parts):
                continue  # image layers (busybox) and namespace bind mounts: no text
            try:
                sources[str(path)] = path.read_bytes().decode("utf-8", "replace")
            except OSError:
                continue  # a file of a running container that cannot be read as a file
    assert any("scheduler.log" in name for name in sources)
    assert any(name.endswith("agent.log") for name in sources)
    leaks = [
        f"{what} in {where}"
        for what, secret in secrets.items()
        for where, text in sources.items()
        if secret in text
    ]
    assert not leaks, leaks
