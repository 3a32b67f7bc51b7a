"""Pulls from a real registry (Debian's docker-registry, images pushed with skopeo) into the
node's image store: formats, platforms, auth, refusals; then a pod that needs a pull, run
by the real scheduler and agent."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runtime.base import RuntimeFailure
from agent.runtime.native.images import ImageStore
from agent.runtime.native.puller import ImagePuller
from agent.runtime.native.registry import RegistryClient, RegistryError
from agent.runtime.pulls import RegistryHost, RegistrySettings
from common.version import host_arch
from tests.conftest import ROOT, SchedulerProcess, wait_for
from tests.imagebuild import (
    file,
    layer_tar,
    layout_layer_digests,
    sha256,
    symlink_escape_layer,
    traversal_layer,
    write_oci_layout,
)
from tests.integration.conftest import REGISTRY_PASSWORD, REGISTRY_USER
from tests.services import AgentProcess, Registry

pytestmark = pytest.mark.root

WRONG_PASSWORD = "not-the-Pa55word-42"


def puller_for(store_root: Path, *registries: Registry, password: str | None = None) -> ImagePuller:
    hosts = {}
    if password is not None:
        for reg in registries:
            hosts[reg.host] = RegistryHost(username=REGISTRY_USER, password=password)
    settings = RegistrySettings(hosts=hosts, insecure=[r.host for r in registries])
    return ImagePuller(ImageStore(store_root), RegistryClient(settings, backoff=0.01))


def assert_nothing_cached(store: ImageStore) -> None:
    for directory in (store.blobs, store.layers, store.root / "pulls"):
        leftovers = list(directory.iterdir()) if directory.exists() else []
        assert leftovers == [], f"{directory}: {leftovers}"
    assert store.list() == []


async def refused_pull(puller: ImagePuller, ref: str, **kwargs: Any) -> str:
    """The message of the ErrImagePull that `ref`'s pull ends in, nothing cached."""
    with pytest.raises(RegistryError) as info:
        await puller.pull(ref, **kwargs)
    assert info.value.reason == "ErrImagePull"
    assert_nothing_cached(puller.store)
    return str(info.value)


def unique_layout(rootfs: Path | None, dest: Path, marker: str, **kwargs: Any) -> Path:
    """An image with a layer of its own (so tampering with it touches no other test)."""
    extra = [*kwargs.pop("extra_layers", []), [file("marker", marker)]]
    return write_oci_layout(rootfs, dest, extra_layers=extra, **kwargs)


async def test_oci_and_docker_formats_and_platforms(
    registry: Registry, busybox_rootfs: Path, busybox_layout: Path, tmp_path: Path
) -> None:
    """OCI manifests and indexes, Docker schema 2 manifests and lists: each resolves to this
    node's image, by tag and by digest; an unchanged tag downloads nothing the second time."""
    multi = write_oci_layout(busybox_rootfs, tmp_path / "multi", platforms=["arm64", host_arch()])
    refs = {
        "oci": registry.push(busybox_layout, "fmt/oci:1"),
        "docker": registry.push(busybox_layout, "fmt/docker:1", fmt="v2s2"),
        "oci-index": registry.push(multi, "fmt/oci-index:1", all=True),
        "docker-list": registry.push(multi, "fmt/docker-list:1", all=True, fmt="v2s2"),
    }
    puller = puller_for(tmp_path / "store", registry)
    try:
        digests = {}
        for kind, ref in refs.items():
            result = await puller.pull(ref)
            assert result.image.config.cmd == ["sh"], kind
            digests[kind] = result.image.digest
            layer = puller.store.layer_dirs(result.image)[-1]
            assert (layer / "bin" / "busybox").is_file()
        # The index's entry for this node's arch is the very manifest pushed alone.
        assert digests["oci"] == digests["oci-index"]
        assert digests["docker"] == digests["docker-list"]
        again = await puller.pull(refs["oci-index"])
        assert again.downloaded == 0
        by_digest = await puller.pull(f"{registry.host}/fmt/oci@{digests['oci']}")
        assert by_digest.image.digest == digests["oci"]
    finally:
        await puller.close()


async def test_wrong_arch_only_is_refused(
    registry: Registry, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """An index without this node's platform: ErrImagePull naming what it has."""
    other = "arm64" if host_arch() != "arm64" else "amd64"
    layout = write_oci_layout(busybox_rootfs, tmp_path / "other", platforms=[other])
    ref = registry.push(layout, "fmt/other-arch:1", all=True)
    puller = puller_for(tmp_path / "store", registry)
    try:
        assert f"linux/{other}" in await refused_pull(puller, ref)
    finally:
        await puller.close()


async def test_corrupt_blob_refused_nothing_cached(
    registry: Registry, busybox_rootfs: Path, tmp_path: Path
) -> None:
    """A layer whose bytes do not hash to its digest is refused; the store stays empty."""
    layout = unique_layout(busybox_rootfs, tmp_path / "oci", "corrupt")
    ref = registry.push(layout, "bad/corrupt:1")
    digest = layout_layer_digests(layout)[-1]
    blob = registry.blob_path(digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    puller = puller_for(tmp_path / "store", registry)
    try:
        message = await refused_pull(puller, ref)
        assert "digest mismatch" in message and digest in message
    finally:
        await puller.close()


@pytest.mark.parametrize("kind", ["traversal", "symlink"])
async def test_malicious_layer_refused(
    registry: Registry, busybox_rootfs: Path, tmp_path: Path, kind: str
) -> None:
    """A pulled layer that escapes its directory ends in ErrImagePull; nothing is cached and
    nothing is written outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    layer = (
        traversal_layer("../../../evil")
        if kind == "traversal"
        else symlink_escape_layer(str(outside))
    )
    layout = unique_layout(None, tmp_path / "oci", kind, extra_layers=[layer])
    ref = registry.push(layout, f"bad/{kind}:1")
    puller = puller_for(tmp_path / "store", registry)
    try:
        await refused_pull(puller, ref)
        assert list(outside.iterdir()) == []
        assert not (tmp_path / "evil").exists() and not (tmp_path.parent / "evil").exists()
    finally:
        await puller.close()


async def test_a_layer_declared_past_the_limit_is_refused_before_its_download(
    registry: Registry, tmp_path: Path
) -> None:
    """A manifest may declare any size for a layer, and the download is bounded only by
    it: one declared past max_layer_bytes is refused before any byte of it is fetched."""
    noise = layer_tar([file("noise", os.urandom(2 << 20))])  # does not compress
    layout = unique_layout(None, tmp_path / "oci", "big", extra_layers=[noise])
    ref = registry.push(layout, "bad/big:1")
    puller = puller_for(tmp_path / "store", registry)
    puller.store.max_layer_bytes = 1 << 20
    seen: list[int] = []
    try:
        message = await refused_pull(puller, ref, progress=lambda done, _: seen.append(done))
        assert f"more than the {1 << 20} a layer may unpack to" in message
        assert seen == [] and not (puller.store.root / "pulls").exists()  # no staging made
    finally:
        await puller.close()


async def test_gzip_bomb_layer_refused(registry: Registry, tmp_path: Path) -> None:
    """A layer whose few compressed kB unpack past the store's max_layer_bytes ends in
    ErrImagePull naming the layer and the limit; nothing is cached or left in staging."""
    bomb = layer_tar([file("zeros", b"\0" * (8 << 20))])
    layout = unique_layout(None, tmp_path / "oci", "bomb", extra_layers=[bomb])
    ref = registry.push(layout, "bad/bomb:1")
    puller = puller_for(tmp_path / "store", registry)
    puller.store.max_layer_bytes = 1 << 20
    try:
        message = await refused_pull(puller, ref)
        assert f"layer {sha256(bomb)}: unpacks to more than {1 << 20} bytes" in message
        assert list(puller.store.tmp.iterdir()) == []
    finally:
        await puller.close()


async def test_basic_auth(
    auth_registry: Registry,
    busybox_layout: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Right credentials pull; none or a wrong password give ErrImagePull with the
    registry's own message, and the password appears in no message or log record."""
    caplog.set_level(logging.DEBUG)
    ref = auth_registry.push(busybox_layout, "private/busybox:1")
    wrong = "wrong-Pa55word-xyz"
    for password, needle in (
        (None, "no credentials configured"),
        (wrong, "UNAUTHORIZED: authentication required"),
    ):
        puller = puller_for(tmp_path / "store", auth_registry, password=password)
        try:
            with pytest.raises(RegistryError) as info:
                await puller.pull(ref)
        finally:
            await puller.close()
        assert info.value.reason == "ErrImagePull"
        assert "401" in str(info.value) and needle in str(info.value)
        assert wrong not in str(info.value)
        assert_nothing_cached(puller.store)
    puller = puller_for(tmp_path / "store", auth_registry, password=REGISTRY_PASSWORD)
    try:
        result = await puller.pull(ref)
        assert result.image.config.cmd == ["sh"]
    finally:
        await puller.close()
    for secret in (wrong, REGISTRY_PASSWORD):
        assert secret not in caplog.text


async def test_https_with_a_configured_ca(
    busybox_layout: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """HTTPS is verified: with the registry's CA configured the pull works; without it
    the certificate is refused (ErrImagePull), never silently accepted."""
    server = Registry(tmp_path / "tls-registry", tls=True)
    server.start()
    try:
        ref = server.push(busybox_layout, "tls/busybox:1")
        store = ImageStore(tmp_path / "store")
        for ca, ok in ((None, False), (str(server.ca_file), True)):
            hosts = {server.host: RegistryHost(ca_file=ca)} if ca else {}
            client = RegistryClient(RegistrySettings(hosts=hosts), retries=0)
            puller = ImagePuller(store, client)
            try:
                if ok:
                    assert (await puller.pull(ref)).image.config.cmd == ["sh"]
                else:
                    with pytest.raises(RegistryError) as info:
                        await puller.pull(ref)
                    assert "certificate" in str(info.value).lower()
                    assert_nothing_cached(store)
            finally:
                await puller.close()
    finally:
        server.stop()


async def test_pull_policies(registry: Registry, busybox_layout: Path, tmp_path: Path) -> None:
    """Never: only the store; IfNotPresent: no registry request once present; Always
    with a registry that cannot be reached and the image present: the stored image and a
    RegistryUnreachable warning (an answer from a registry is never papered over)."""
    events: list[tuple[str, str, str]] = []

    def record(reason: str, message: str, kind: str) -> None:
        events.append((reason, message, kind))

    store_root = tmp_path / "store"
    puller = puller_for(store_root, registry)
    ref = registry.push(busybox_layout, "policy/busybox:1")
    try:
        with pytest.raises(RuntimeFailure) as info:
            await puller.ensure(ref, "Never", record)
        assert info.value.reason == "ErrImageNeverPull"
        await puller.ensure(ref, "IfNotPresent", record)
        await puller.ensure(ref, "IfNotPresent", record)
        assert [e[0] for e in events] == ["Pulling", "Pulled", "Pulled"]
        assert "already present on machine" in events[-1][1]
        # An image named after a registry that is not there (nothing listens on port 9).
        puller.store.import_path(busybox_layout, name="127.0.0.1:9/offline/busybox:latest")
        events.clear()
        image = await puller.ensure("127.0.0.1:9/offline/busybox:latest", "Always", record)
        assert image.config.cmd == ["sh"]
        assert [(e[0], e[2]) for e in events] == [
            ("Pulling", "Normal"),
            ("RegistryUnreachable", "Warning"),
        ]
    finally:
        await puller.close()


def test_cli_pull(registry: Registry, busybox_layout: Path, tmp_path: Path) -> None:
    """`corral-agent image pull` pulls as the agent would (insecure registry from its config)."""
    ref = registry.push(busybox_layout, "cli/busybox:7")
    config = tmp_path / "agent.toml"
    config.write_text(f'insecure_registries = ["{registry.host}"]\n')
    store = tmp_path / "store"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "agent.main", "image", *args, "--root", str(store)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = cli("pull", ref, "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"pulled {ref} sha256:")
    assert "cli/busybox" in cli("ls").stdout
    refused = cli("pull", f"{registry.host}/cli/none:1", "--config", str(config))
    assert refused.returncode == 1 and "MANIFEST_UNKNOWN" in refused.stderr


# --- through the real scheduler and agent ---------------------------------------------------


@pytest.fixture(scope="module")
def pulling_agent(
    tmp_path_factory: pytest.TempPathFactory,
    registry: Registry,
    auth_registry: Registry,
    busybox_layout: Path,
) -> Iterator[AgentProcess]:
    """A scheduler and an agent that pulls from both registries, with a wrong password for
    the one that needs auth."""
    base = tmp_path_factory.mktemp("pull-e2e")
    scheduler = SchedulerProcess(base / "scheduler")
    scheduler.start()
    registry.push(busybox_layout, "e2e/busybox:latest")
    auth_registry.push(busybox_layout, "e2e/private:latest")
    agent = AgentProcess(
        scheduler,
        base / "agent",
        "puller",
        {
            "insecure_registries": [registry.host, auth_registry.host],
            "registries": {
                auth_registry.host: {"username": REGISTRY_USER, "password": WRONG_PASSWORD}
            },
        },
    )
    agent.start()
    try:
        wait_for(lambda: scheduler.get("/api/v1/status")["nodes"]["connected"] >= 1, 30)
        yield agent
    finally:
        for pod in scheduler.get("/api/v1/pods")["items"]:
            scheduler.request(
                "DELETE", f"/api/v1/namespaces/default/pods/{pod['metadata']['name']}"
            )
        wait_for(lambda: not scheduler.get("/api/v1/pods")["items"], timeout=60)
        agent.stop()
        scheduler.stop()
        from agent.runtime.docker.cgroups import remove_everywhere
        from agent.runtime.native.cgroups import probe

        remove_everywhere(probe(agent.cgroup_parent), "")


def pod(name: str, image: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script]}],
        },
    }


def events_of(s: SchedulerProcess, name: str) -> list[dict[str, Any]]:
    items = s.get("/api/v1/namespaces/default/events")["items"]
    return [e for e in items if e["involvedObject"]["name"] == name]


def test_pod_pulls_and_runs(pulling_agent: AgentProcess, registry: Registry) -> None:
    """image: <registry>/e2e/busybox:latest (pull policy Always by default) reaches Running;
    Pulling and Pulled (with its duration) are events."""
    s = pulling_agent.scheduler
    image = f"{registry.host}/e2e/busybox:latest"
    assert (
        s.request(
            "POST", "/api/v1/namespaces/default/pods", pod("pulled", image, "echo up; sleep 300")
        ).status
        == 201
    )

    def running() -> bool:
        status = s.get("/api/v1/namespaces/default/pods/pulled")["status"]
        return status.get("phase") == "Running"

    wait_for(running, timeout=60)
    reasons = wait_for(  # events are written a moment after they happen
        lambda: (
            (r := {e["reason"]: e["message"] for e in events_of(s, "pulled")}).get("Pulled") and r
        )
    )
    assert reasons.get("Pulling") == f'Pulling image "{image}"'
    assert reasons.get("Pulled", "").startswith(f'Successfully pulled image "{image}" in ')


def test_wrong_password_is_err_image_pull(
    pulling_agent: AgentProcess, auth_registry: Registry
) -> None:
    """A wrong registry password: ErrImagePull, then ImagePullBackOff, with the registry's
    message; the password is in no status, event or log line."""
    s = pulling_agent.scheduler
    image = f"{auth_registry.host}/e2e/private:latest"
    assert (
        s.request(
            "POST", "/api/v1/namespaces/default/pods", pod("denied", image, "sleep 300")
        ).status
        == 201
    )

    def waiting() -> dict[str, Any] | None:
        statuses = s.get("/api/v1/namespaces/default/pods/denied")["status"].get(
            "containerStatuses"
        ) or [{}]
        state = (statuses[0].get("state") or {}).get("waiting") or {}
        return state if state.get("reason") == "ImagePullBackOff" else None

    state = wait_for(waiting, timeout=30)
    assert "UNAUTHORIZED: authentication required" in state["message"]
    reasons = [e["reason"] for e in events_of(s, "denied")]
    assert "Failed" in reasons and "BackOff" in reasons
    seen = json.dumps(s.get("/api/v1/namespaces/default/pods/denied"))
    seen += json.dumps(s.get("/api/v1/namespaces/default/events"))
    seen += pulling_agent.log() + s.log_path.read_text()
    assert "ErrImagePull" in seen
    assert WRONG_PASSWORD not in seen
    assert REGISTRY_PASSWORD not in seen
