"""TLS on the API and the agent link, with certificates made by `corral certs`; plain HTTP only
on loopback unless allowed. (The real agent over wss: tests/integration/test_secrets.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from common import protocol
from common.tls import client_context
from scheduler import certs
from tests.conftest import ROOT, TOKEN, SchedulerProcess

CAPACITY = {"cpu": "1", "memory": "1Gi"}


def corral(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def make_pki(directory: Path) -> Path:
    """A CA and a server certificate for 127.0.0.1 through the CLI, and a client one."""
    for args in (("init",), ("issue", "scheduler", "--host", "127.0.0.1", "--host", "localhost")):
        result = corral("certs", *args, "--dir", str(directory))
        assert result.returncode == 0, result.stderr
        assert "written" in result.stdout
    certs.issue(directory, "ops", client=True)  # the same code, without another process
    return directory


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def wrong_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return certs.init_ca(tmp_path_factory.mktemp("other")).cert


def tls_scheduler(state: Path, pki: Path, *extra: str) -> SchedulerProcess:
    sched = SchedulerProcess(
        state,
        ["--tls-cert", str(pki / "scheduler.crt"), "--tls-key", str(pki / "scheduler.key"), *extra],
    )
    sched.ssl_context = client_context(
        str(pki / "ca.crt"),
        str(pki / "ops.crt") if extra else None,
        str(pki / "ops.key") if extra else None,
    )
    sched.start()
    return sched


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory, pki: Path) -> Iterator[SchedulerProcess]:
    """A scheduler serving https with the CA's server certificate."""
    sched = tls_scheduler(tmp_path_factory.mktemp("tls"), pki)
    yield sched
    sched.stop()


def test_cli_over_https(tls: SchedulerProcess, pki: Path, wrong_ca: Path) -> None:
    """The CLI verifies the scheduler: the cluster's CA works (flag, environment or config);
    no CA or another CA is refused with a TLS message; the token still counts."""
    assert tls.url.startswith("https://")
    ok = corral("--server", tls.url, "--ca-file", str(pki / "ca.crt"), "get", "nodes")
    assert ok.returncode == 0, ok.stderr
    config = pki.parent / "corral.toml"
    config.write_text(f'server = "{tls.url}"\nca_file = "{pki / "ca.crt"}"\n')
    by_config = corral("status", env={"CORRAL_CONFIG": str(config), "CORRAL_SERVER": ""})
    assert by_config.returncode == 0, by_config.stderr
    for extra in ((), ("--ca-file", str(wrong_ca))):
        refused = corral("--server", tls.url, *extra, "get", "nodes")
        assert refused.returncode == 1
        assert "certificate verify failed" in refused.stderr, refused.stderr
        assert "--ca-file" in refused.stderr
    assert tls.request("GET", "/api/v1/nodes", token=None).status == 401  # tokens still count


async def test_agent_link_over_wss(tls: SchedulerProcess, pki: Path, wrong_ca: Path) -> None:
    """An agent that trusts the CA joins over wss; one with another CA never sends a byte."""
    url = tls.url + "/api/v1/agent"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    hello = protocol.Hello(
        node=protocol.NodeInfo(name="wss-node", capacity=CAPACITY, allocatable=CAPACITY)
    )
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.ws_connect(url, headers=headers, ssl=client_context(str(wrong_ca)))
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.ws_connect(url, headers=headers)  # the system's CAs do not know ours
        ws = await http.ws_connect(url, headers=headers, ssl=client_context(str(pki / "ca.crt")))
        await ws.send_bytes(protocol.encode(hello))
        welcome = protocol.decode((await ws.receive(timeout=5)).data)
        assert isinstance(welcome, protocol.Welcome) and welcome.credential
        await ws.close()
    assert tls.get("/api/v1/nodes/wss-node")["metadata"]["name"] == "wss-node"


def test_mutual_tls(tmp_path: Path, pki: Path) -> None:
    """With tls_client_ca, a client without a certificate from that CA is refused."""
    sched = tls_scheduler(tmp_path / "m", pki, "--tls-client-ca", str(pki / "ca.crt"))
    try:
        base = ("--server", sched.url, "--ca-file", str(pki / "ca.crt"))
        refused = corral(*base, "get", "nodes")
        assert refused.returncode == 1
        with_cert = corral(
            *base,
            "get",
            "nodes",
            env={
                "CORRAL_CLIENT_CERT": str(pki / "ops.crt"),
                "CORRAL_CLIENT_KEY": str(pki / "ops.key"),
            },
        )
        assert with_cert.returncode == 0, with_cert.stderr
    finally:
        sched.stop()


def test_plain_http_only_on_loopback(tmp_path: Path) -> None:
    """Scheduler and agent refuse plain HTTP off loopback unless allowed; then they warn."""
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "scheduler.main",
            "--listen",
            "0.0.0.0:0",
            "--state-dir",
            str(tmp_path / "s"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "not loopback" in refused.stderr and "allow_insecure_http" in refused.stderr

    allowed = SchedulerProcess(tmp_path / "a", ["--listen", "0.0.0.0:0", "--allow-insecure-http"])
    allowed.start()
    try:
        assert allowed.request("GET", "/healthz").status == 200
    finally:
        allowed.stop()
    log = allowed.log_path.read_text()
    assert "WARNING" in log and "allowed by allow_insecure_http" in log

    agent = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.main",
            "--server",
            "http://192.0.2.1:7070",
            "--join-token",
            "x",
            "--state-dir",
            str(tmp_path / "agent"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert agent.returncode == 2
    assert "allow_insecure_http" in agent.stderr and "x" not in agent.stderr.split(":")[-1]


def test_agent_without_join_token_is_refused(tmp_path: Path) -> None:
    """An agent with neither a join token nor a stored credential does not start."""
    result = subprocess.run(
        [sys.executable, "-m", "agent.main", "--state-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "join token is required" in result.stderr
