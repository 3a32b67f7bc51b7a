"""The registry client's protocol details against a small in-process registry (aiohttp):
the bearer-token challenge flow, retries, redirects, digest checks; plus pull policy,
credentials and redaction."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from agent.runtime.native.oci import Descriptor, parse_reference
from agent.runtime.native.registry import (
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
    parse_challenge,
    registry_message,
)
from agent.runtime.pulls import (
    Credentials,
    RegistryHost,
    RegistrySettings,
    pull_policy,
    redact,
)

USER, PASSWORD, TOKEN = "bob", "hunter2-Pa55", "tok-123456"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class FakeRegistry:
    """Blobs and manifests in memory; bearer auth through /token; knobs for failures."""

    blobs: dict[str, bytes] = field(default_factory=dict)
    manifests: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # ref -> type, body
    fail_first: int = 0  # answer 503 this many times
    redirect_blobs_to: str | None = None  # another origin serving the same blobs
    lie_digest: bool = False
    seen_auth: list[str | None] = field(default_factory=list)
    token_requests: int = 0
    port: int = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/token", self.token)
        app.router.add_get("/v2/{name:.+}/manifests/{ref}", self.manifest)
        app.router.add_get("/v2/{name:.+}/blobs/{digest}", self.blob)
        return app

    async def token(self, request: web.Request) -> web.Response:
        self.token_requests += 1
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return web.json_response({"details": "incorrect username or password"}, status=401)
        assert request.query["scope"] == "repository:team/app:pull"
        assert request.query["service"] == "fake"
        return web.json_response({"token": TOKEN, "expires_in": 300})

    def _challenge(self, request: web.Request) -> web.Response | None:
        auth = request.headers.get("Authorization")
        self.seen_auth.append(auth)
        if auth == f"Bearer {TOKEN}":
            return None
        realm = f"http://127.0.0.1:{self.port}/token"
        challenge = f'Bearer realm="{realm}",service="fake",scope="repository:team/app:pull"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return web.json_response(body, status=401, headers={"WWW-Authenticate": challenge})

    async def manifest(self, request: web.Request) -> web.Response:
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=503, text="busy")
        denied = self._challenge(request)
        if denied is not None:
            return denied
        found = self.manifests.get(request.match_info["ref"])
        if found is None:
            body = {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            return web.json_response(body, status=404)
        media_type, body_bytes = found
        digest = sha(body_bytes) if not self.lie_digest else sha(b"other")
        return web.Response(
            body=body_bytes, content_type=media_type, headers={"Docker-Content-Digest": digest}
        )

    async def blob(self, request: web.Request) -> web.StreamResponse:
        digest = request.match_info["digest"]
        if "signed" in request.query:
            # The storage behind the redirect must never see the registry's credentials.
            assert request.headers.get("Authorization") is None
        else:
            denied = self._challenge(request)
            if denied is not None:
                return denied
            if self.redirect_blobs_to is not None:
                name = request.match_info["name"]
                raise web.HTTPTemporaryRedirect(
                    f"{self.redirect_blobs_to}/v2/{name}/blobs/{digest}?signed=1"
                )
        data = self.blobs.get(digest)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data)


@pytest.fixture
async def fake() -> AsyncIterator[FakeRegistry]:
    registry = FakeRegistry()
    runner = web.AppRunner(registry.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    registry.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield registry
    finally:
        await runner.cleanup()


def image(registry: FakeRegistry, arch: str = "amd64") -> tuple[bytes, bytes, bytes]:
    """(config, layer, manifest) put into the registry under tag `1`."""
    layer = b"not really a tar, the client does not look"
    config = json.dumps(
        {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    registry.blobs.update({sha(config): config, sha(layer): layer})
    registry.manifests["1"] = (OCI_MANIFEST, manifest)
    registry.manifests[sha(manifest)] = (OCI_MANIFEST, manifest)
    return config, layer, manifest


def client(registry: FakeRegistry, password: str = PASSWORD) -> RegistryClient:
    host = f"127.0.0.1:{registry.port}"
    settings = RegistrySettings(
        hosts={host: RegistryHost(username=USER, password=password)}, insecure=[host]
    )
    return RegistryClient(settings, retries=3, backoff=0.01)


async def test_bearer_flow_and_blob(fake: FakeRegistry, tmp_path: Path) -> None:
    """401 + Bearer challenge -> token (with basic credentials) -> retried with the token,
    which is cached for the blobs that follow."""
    _config, layer, manifest = image(fake)
    c = client(fake)
    try:
        ref = parse_reference(f"127.0.0.1:{fake.port}/team/app:1")
        resolved = await c.resolve(ref, "amd64")
        assert resolved.manifest_digest == sha(manifest)
        desc = resolved.manifest.layers[0]
        await c.fetch_blob(ref, desc, tmp_path / "layer")
        assert (tmp_path / "layer").read_bytes() == layer
    finally:
        await c.close()
    assert fake.token_requests == 1
    assert fake.seen_auth == [None, f"Bearer {TOKEN}", f"Bearer {TOKEN}"]


async def test_wrong_password_message_has_no_secret(
    fake: FakeRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    """The token service's refusal is the error; the password is nowhere in it."""
    caplog.set_level(logging.DEBUG)
    image(fake)
    wrong = "wrong-Pa55-9876"
    c = client(fake, wrong)
    try:
        with pytest.raises(RegistryError) as info:
            await c.resolve(parse_reference(f"127.0.0.1:{fake.port}/team/app:1"), "amd64")
    finally:
        await c.close()
    message = str(info.value)
    assert "401" in message and "incorrect username or password" in message
    basic = base64.b64encode(f"{USER}:{wrong}".encode()).decode()
    for secret in (wrong, basic):
        assert secret not in message and secret not in caplog.text


async def test_retries_then_succeeds(fake: FakeRegistry) -> None:
    """503s are retried with backoff."""
    image(fake)
    fake.fail_first = 2
    c = client(fake)
    try:
        await c.resolve(parse_reference(f"127.0.0.1:{fake.port}/team/app:1"), "amd64")
    finally:
        await c.close()
    assert fake.fail_first == 0


async def test_redirect_drops_authorization(fake: FakeRegistry, tmp_path: Path) -> None:
    """A blob redirect to another origin is followed without the registry's credentials."""
    _config, layer, _manifest = image(fake)
    other = FakeRegistry(blobs=dict(fake.blobs))
    runner = web.AppRunner(other.app())
    await runner.setup()
    site = web.TCPSite(runner, "localhost", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.redirect_blobs_to = f"http://localhost:{port}"
    c = client(fake)
    try:
        ref = parse_reference(f"127.0.0.1:{fake.port}/team/app:1")
        resolved = await c.resolve(ref, "amd64")
        await c.fetch_blob(ref, resolved.manifest.layers[0], tmp_path / "layer")
    finally:
        await c.close()
        await runner.cleanup()
    assert (tmp_path / "layer").read_bytes() == layer


async def test_digest_checks(fake: FakeRegistry, tmp_path: Path) -> None:
    """A manifest whose Docker-Content-Digest disagrees, a blob whose content does not hash
    to its digest, and one longer than declared are all refused."""
    _config, layer, _manifest = image(fake)
    c = client(fake)
    ref = parse_reference(f"127.0.0.1:{fake.port}/team/app:1")
    try:
        fake.lie_digest = True
        with pytest.raises(RegistryError, match="the registry says"):
            await c.resolve(ref, "amd64")
        fake.lie_digest = False
        fake.blobs[sha(layer)] = layer[:-1] + b"X"
        desc = Descriptor("application/vnd.oci.image.layer.v1.tar", sha(layer), len(layer))
        with pytest.raises(RegistryError, match="digest mismatch"):
            await c.fetch_blob(ref, desc, tmp_path / "a")
        fake.blobs[sha(layer)] = layer + b"more"
        with pytest.raises(RegistryError, match="larger than"):
            await c.fetch_blob(ref, desc, tmp_path / "b")
        with pytest.raises(RegistryError, match="MANIFEST_UNKNOWN: manifest unknown"):
            await c.resolve(parse_reference(f"127.0.0.1:{fake.port}/team/app:2"), "amd64")
    finally:
        await c.close()


async def test_index_picks_platform(fake: FakeRegistry) -> None:
    """An index resolves to the node's platform's manifest; the index digest is kept."""
    _config, _layer, manifest = image(fake)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha(b"elsewhere"),
                    "size": 9,
                    "platform": {"os": "linux", "architecture": "s390x"},
                },
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": sha(manifest),
                    "size": len(manifest),
                    "platform": {"os": "linux", "architecture": "amd64"},
                },
            ],
        }
    ).encode()
    fake.manifests["multi"] = (OCI_INDEX, index)
    c = client(fake)
    try:
        resolved = await c.resolve(
            parse_reference(f"127.0.0.1:{fake.port}/team/app:multi"), "amd64"
        )
        assert resolved.manifest_digest == sha(manifest)
        assert resolved.index_digest == sha(index)
        with pytest.raises(RegistryError, match="no image for linux/arm64"):
            await c.resolve(parse_reference(f"127.0.0.1:{fake.port}/team/app:multi"), "arm64")
    finally:
        await c.close()


async def test_unreachable_is_its_own_error() -> None:
    """Nothing listening: RegistryUnreachable (the puller may fall back to a local image)."""
    settings = RegistrySettings(insecure=["127.0.0.1:9"])
    c = RegistryClient(settings, retries=1, backoff=0.01)
    try:
        with pytest.raises(RegistryUnreachable):
            await c.resolve(parse_reference("127.0.0.1:9/x:1"), "amd64")
    finally:
        await c.close()


# --- pure helpers --------------------------------------------------------------------------


def test_parse_challenge() -> None:
    """Docker Hub's challenge and a basic one."""
    hub = parse_challenge(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/busybox:pull"'
    )
    assert hub is not None and hub.scheme == "bearer"
    assert hub.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/busybox:pull",
    }
    basic = parse_challenge('Basic realm="corral"')
    assert basic is not None and basic.scheme == "basic" and basic.params == {"realm": "corral"}
    assert parse_challenge("") is None


def test_registry_message() -> None:
    body = b'{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}'
    assert registry_message(403, "Forbidden", body) == (
        "403 Forbidden: DENIED: requested access to the resource is denied"
    )
    assert registry_message(502, "Bad Gateway", b"<html>oops</html>") == (
        "502 Bad Gateway: <html>oops</html>"
    )


@pytest.mark.parametrize(
    ("image", "explicit", "policy"),
    [
        ("busybox", None, "Always"),
        ("busybox:latest", None, "Always"),
        ("127.0.0.1:5000/app", None, "Always"),
        ("busybox:1.36", None, "IfNotPresent"),
        ("busybox@sha256:" + "a" * 64, None, "IfNotPresent"),
        ("busybox:latest", "Never", "Never"),
        ("busybox:1", "Always", "Always"),
    ],
)
def test_pull_policy_defaults(image: str, explicit: str | None, policy: str) -> None:
    """Kubernetes' defaults: Always for :latest or no tag, else IfNotPresent."""
    assert pull_policy(image, explicit) == policy  # type: ignore[arg-type]


def test_credentials_from_config_and_auth_file(tmp_path: Path) -> None:
    """Config entries win; a config.json-style file (a pull secret) is read at each lookup."""
    auth_file = tmp_path / "auth.json"
    encoded = base64.b64encode(b"carol:from-file").decode()
    auth_file.write_text(json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": encoded}}}))
    settings = RegistrySettings(
        hosts={"ghcr.io": RegistryHost(username="dave", password="from-config")},
        auth_file=str(auth_file),
    )
    assert settings.credentials("ghcr.io") == Credentials("dave", "from-config")
    assert settings.credentials("docker.io") == Credentials("carol", "from-file")
    assert settings.credentials("quay.io") is None
    creds = settings.credentials("docker.io")
    assert "from-file" not in repr(creds) and "from-file" not in str(creds)
    assert set(settings.all_secrets()) >= {"from-config", "from-file"}


def test_redact() -> None:
    assert redact("user:hunter2 said hunter2", ["hunter2"]) == "user:<redacted> said <redacted>"
