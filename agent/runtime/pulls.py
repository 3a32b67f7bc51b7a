"""What every runtime needs to pull images: the pull policy, registry settings, credentials.

Runtime-agnostic and light to import (agent/config.py uses `RegistryHost`): the native
runtime pulls with its own client (native/registry.py), the Docker runtime asks dockerd,
and both decide *whether* to pull, and with which credentials, here.

Pull policy, as Kubernetes defaults it:

    imagePullPolicy set         -> that
    tag `latest`, or no tag     -> Always
    any other tag, or a digest  -> IfNotPresent

Credentials, looked up by registry host (`host[:port]`, `docker.io` for Docker Hub):

    1. [registries."host:port"] in the agent config: username + password (or password_file)
    2. registry_auth_file: a Docker `config.json`-style file, {"auths": {"host": {"auth":
       base64("user:password")}}} -- the content of a Kubernetes `kubernetes.io/
       dockerconfigjson` pull secret, so a secret's `.dockerconfigjson` can be put on the
       node as it is. Read at every pull: rotating it needs no agent restart.

Credentials never reach a log line, an event or an error message: `Credentials` hides
its password from repr/str, and `redact` scrubs every secret the agent knows from any
text that came back from a registry before it is shown.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from agent.runtime.native.oci import DEFAULT_DOMAIN, ImageError, parse_reference

_LOGGER = logging.getLogger(__name__)

PullPolicy = Literal["Always", "IfNotPresent", "Never"]

# Kubernetes' waiting reasons for image trouble (shown in container status).
ERR_IMAGE_PULL = "ErrImagePull"  # the last pull failed
IMAGE_PULL_BACKOFF = "ImagePullBackOff"  # pulls keep failing; waiting before the next one
REDACTED = "<redacted>"


class RegistryHost(BaseModel):
    """One registry's settings in the agent config: `[registries."host:port"]`."""

    model_config = ConfigDict(extra="forbid")

    username: str | None = Field(None, description="user for basic or token auth")
    password: SecretStr | None = Field(None, description="password or access token")
    password_file: str | None = Field(None, description="file holding the password")
    ca_file: str | None = Field(None, description="CA bundle for this registry's HTTPS")
    insecure: bool = Field(False, description="plain HTTP (only for registries you trust)")


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password for one registry; repr and str never show the password."""

    username: str
    password: str = field(repr=False)

    def __str__(self) -> str:
        return f"Credentials({self.username!r}, {REDACTED})"

    def basic(self) -> str:
        """The value of an `Authorization: Basic` header."""
        return base64.b64encode(f"{self.username}:{self.password}".encode()).decode()

    def secrets(self) -> list[str]:
        """Every spelling of the secret that could leak into a message."""
        return [s for s in (self.password, self.basic()) if len(s) >= 3]


def pull_policy(image: str, explicit: PullPolicy | None) -> PullPolicy:
    """The container's pull policy: `explicit`, else Kubernetes' default for `image`.

    An image reference that does not parse gets IfNotPresent; the pull (or lookup)
    then refuses it with InvalidImageName.
    """
    if explicit is not None:
        return explicit
    try:
        ref = parse_reference(image)
    except ImageError:
        return "IfNotPresent"
    if ref.digest is None and ref.tag == "latest":
        return "Always"  # parse_reference fills in `latest` when no tag was given
    return "IfNotPresent"


def registry_host(image: str) -> str:
    """The registry an image reference names: `127.0.0.1:5000`, `ghcr.io`, `docker.io`."""
    return parse_reference(image).domain


def _same_host(a: str, b: str) -> bool:
    aliases = {DEFAULT_DOMAIN, "index.docker.io", "registry-1.docker.io"}
    if a in aliases and b in aliases:
        return True
    return a.lower() == b.lower()


def _auth_file_host(key: str) -> str:
    """`https://index.docker.io/v1/` and `http://h:5000/v2/` as config.json keys them -> host."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return host.lower()


class RegistrySettings:
    """The agent's registry configuration: insecure hosts, CA files, credentials."""

    def __init__(
        self,
        *,
        hosts: dict[str, RegistryHost] | None = None,
        insecure: list[str] | None = None,
        ca_file: str | None = None,
        auth_file: str | None = None,
        max_concurrent_downloads: int = 3,
    ) -> None:
        self.hosts = {k.lower(): v for k, v in (hosts or {}).items()}
        self.insecure = {h.lower() for h in insecure or []} | {
            k for k, v in self.hosts.items() if v.insecure
        }
        self.ca_file = ca_file
        self.auth_file = auth_file
        self.max_concurrent_downloads = max(1, max_concurrent_downloads)

    def is_insecure(self, host: str) -> bool:
        return host.lower() in self.insecure

    def ca_for(self, host: str) -> str | None:
        entry = self._entry(host)
        return entry.ca_file if entry is not None and entry.ca_file else self.ca_file

    def _entry(self, host: str) -> RegistryHost | None:
        for key, entry in self.hosts.items():
            if _same_host(key, host):
                return entry
        return None

    def credentials(self, host: str) -> Credentials | None:
        """The credentials for `host`, from the config first, then the auth file; None
        for anonymous access. Blocking (reads files): call it in a thread."""
        entry = self._entry(host)
        if entry is not None and entry.username:
            password = entry.password.get_secret_value() if entry.password else ""
            if entry.password_file:
                try:
                    password = Path(entry.password_file).read_text().strip()
                except OSError as exc:
                    _LOGGER.warning(
                        "registry %s: cannot read password_file %s: %s",
                        host,
                        entry.password_file,
                        exc.strerror,
                    )
            return Credentials(entry.username, password)
        if self.auth_file:
            return _from_auth_file(Path(self.auth_file), host)
        return None

    def all_secrets(self) -> list[str]:
        """Every password this agent knows (for `redact`); blocking."""
        found: list[str] = []
        for host in self.hosts:
            creds = self.credentials(host)
            if creds is not None:
                found.extend(creds.secrets())
        if self.auth_file:
            for creds in _all_from_auth_file(Path(self.auth_file)):
                found.extend(creds.secrets())
        return found


def _auth_entries(path: Path) -> dict[str, Credentials]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # Never echo the file's content: it is full of secrets.
        _LOGGER.warning("registry auth file %s is unreadable: %s", path, type(exc).__name__)
        return {}
    auths = doc.get("auths") if isinstance(doc, dict) else None
    if not isinstance(auths, dict):
        return {}
    found = {}
    for key, value in auths.items():
        if not isinstance(value, dict):
            continue
        username, password = value.get("username"), value.get("password")
        if isinstance(value.get("auth"), str) and value["auth"]:
            try:
                decoded = base64.b64decode(value["auth"], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                _LOGGER.warning("registry auth file %s: bad auth entry for %s", path, key)
                continue
            username, _, password = decoded.partition(":")
        if isinstance(username, str) and isinstance(password, str) and username:
            found[_auth_file_host(str(key))] = Credentials(username, password)
    return found


def _from_auth_file(path: Path, host: str) -> Credentials | None:
    for key, creds in _auth_entries(path).items():
        if _same_host(key, host):
            return creds
    return None


def _all_from_auth_file(path: Path) -> list[Credentials]:
    return list(_auth_entries(path).values())


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every secret replaced (longest first, so no fragment survives)."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def settings_from(config: Any) -> RegistrySettings:
    """The registry settings of an `AgentConfig` (duck-typed: config.py imports this module)."""
    return RegistrySettings(
        hosts=dict(config.registries),
        insecure=list(config.insecure_registries),
        ca_file=config.registry_ca_file,
        auth_file=config.registry_auth_file,
        max_concurrent_downloads=config.max_concurrent_downloads,
    )


T = TypeVar("T")


async def shared_pull(
    inflight: dict[str, asyncio.Future[T]], key: str, pull: Callable[[], Awaitable[T]]
) -> T:
    """`pull()` once for every concurrent caller of the same `key` (one image): the first
    runs it, the others wait for its result or its error. If the first is cancelled (its
    pod removed), the others pull again themselves: its CancelledError reached them as
    their own, and ended their containers' tasks (ContainerCreating for good)."""
    while (running := inflight.get(key)) is not None:
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not running.cancelled() or (task is not None and task.cancelling()):
                raise  # we were cancelled, not the pull we shared
    future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
    inflight[key] = future
    try:
        result = await pull()
    except asyncio.CancelledError:
        future.cancel()  # those who share it pull again (above)
        raise
    except BaseException as exc:
        future.set_exception(exc)
        future.exception()  # retrieved: no "never retrieved" warning without waiters
        raise
    else:
        future.set_result(result)
        return result
    finally:
        inflight.pop(key, None)
