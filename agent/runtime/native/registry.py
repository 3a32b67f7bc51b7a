"""A client of the OCI Distribution HTTP API (aiohttp): resolve references, fetch blobs.

    resolve    GET /v2/<name>/manifests/<tag|digest>, accepting OCI and Docker v2 manifests,
               indexes and manifest lists; an index is narrowed to the node's platform and
               that manifest fetched by digest. Every document is checked against its digest
               (the one asked for, or the registry's Docker-Content-Digest).
    fetch_blob GET /v2/<name>/blobs/<digest> into a file, hashed while it streams: more bytes
               than declared, or a digest mismatch, refuses the blob.

Authentication follows the registry's `WWW-Authenticate` challenge, as Docker does:

    request ──401 Basic──> retry with the registry's credentials (agent config) ──401──> error
            ──401 Bearer realm=R,service=S,scope=X──> GET R?service=S&scope=X (with the
                 credentials, if any) -> token ──> retry with `Authorization: Bearer` ──> ...

Tokens and schemes are cached per host and scope, so later requests skip the round trip.
HTTPS is the default (verified, with an optional CA bundle per registry); plain HTTP only
for registries the config marks insecure. Connection errors, timeouts, 429 and 5xx are
retried with exponential backoff and jitter; a name that does not resolve is not (it will
not resolve in a second either). Redirects (blob storage behind a CDN) are followed by
hand so that the Authorization header never goes to another host.

Every error is a `RegistryError` (reason ErrImagePull) carrying the registry's own message
(`UNAUTHORIZED: authentication required`), with every known secret scrubbed out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit

import aiohttp

from agent.runtime.native.oci import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    MAX_JSON_DOCUMENT,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    ImageError,
    ImageRef,
    Manifest,
    document_kind,
    load_json,
    parse_index,
    parse_manifest,
    select_platform,
)
from agent.runtime.pulls import ERR_IMAGE_PULL, Credentials, RegistrySettings, redact

_LOGGER = logging.getLogger(__name__)

ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
DOCKER_HUB_API = "registry-1.docker.io"
USER_AGENT = "corral-agent/0.1"
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
MAX_ERROR_BODY = 64 * 1024
MAX_RETRY_AFTER = 10.0
CHUNK = 1 << 20  # bytes written (and hashed) per thread hop
TOKEN_MARGIN = 10.0  # refresh a bearer token this many seconds before it expires

Progress = Callable[[int], None]  # bytes just received


class RegistryError(ImageError):
    """A pull failed; the message is the registry's answer (secrets scrubbed)."""

    def __init__(self, message: str, reason: str = ERR_IMAGE_PULL) -> None:
        super().__init__(message, reason)


class RegistryUnreachable(RegistryError):
    """No answer at all: the name did not resolve, the connection failed or timed out."""


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str  # lower case: "basic", "bearer"
    params: dict[str, str]


_CHALLENGE_RE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9_-]*)\s*(.*)$", re.S)
_PARAM_RE = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))')


def parse_challenge(header: str | None) -> Challenge | None:
    """`Bearer realm="...",service="...",scope="..."` -> Challenge; None if unparseable."""
    if not header:
        return None
    match = _CHALLENGE_RE.match(header)
    if match is None:
        return None
    params = {}
    for key, quoted, bare in _PARAM_RE.findall(match.group(2)):
        value = quoted if quoted or not bare else bare
        params[key.lower()] = re.sub(r"\\(.)", r"\1", value)
    return Challenge(match.group(1).lower(), params)


def registry_message(status: int, reason: str | None, body: bytes) -> str:
    """`401 Unauthorized: UNAUTHORIZED: authentication required` from an error response."""
    head = f"{status} {reason or ''}".strip()
    detail = ""
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("errors"), list):
        parts = []
        for err in doc["errors"]:
            if isinstance(err, dict):
                code, message = err.get("code"), err.get("message")
                parts.append(": ".join(str(x) for x in (code, message) if x))
        detail = "; ".join(p for p in parts if p)
    elif isinstance(doc, dict) and isinstance(doc.get("details") or doc.get("error"), str):
        detail = str(doc.get("details") or doc.get("error"))  # token servers' style
    elif body:
        text = body.decode("utf-8", "replace").strip()
        detail = text.splitlines()[0][:200] if text else ""
    return f"{head}: {detail}" if detail else head


@dataclass(frozen=True, slots=True)
class Resolved:
    """What a reference names: the manifest for this node, and the index that led there."""

    manifest_digest: str
    manifest_bytes: bytes
    manifest: Manifest
    index_digest: str | None = None
    index_bytes: bytes | None = None


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class RegistryClient:
    """One per agent; holds the connection pool and the auth cache. `close()` when done."""

    def __init__(
        self,
        settings: RegistrySettings,
        *,
        retries: int = 3,
        backoff: float = 0.25,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.retries = retries
        self.backoff = backoff
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._session: aiohttp.ClientSession | None = None
        self._auth: dict[tuple[str, str], tuple[str, float]] = {}  # header, expiry (monotonic)
        self._basic_hosts: set[str] = set()  # hosts that asked for Basic: send it up front
        self._ssl: dict[str, ssl.SSLContext | bool] = {}
        self._secrets: list[str] = []  # every credential used so far, to scrub from messages

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                headers={"User-Agent": USER_AGENT},
                auto_decompress=False,  # a blob's bytes are hashed as the registry sent them
                trust_env=True,  # HTTPS_PROXY / NO_PROXY, as Docker honours them
            )
        return self._session

    # --- URLs, TLS, messages ---

    def base_url(self, host: str) -> str:
        api = DOCKER_HUB_API if host == "docker.io" else host
        scheme = "http" if self.settings.is_insecure(host) else "https"
        return f"{scheme}://{api}"

    def _ssl_for(self, host: str) -> ssl.SSLContext | bool:
        if self.settings.is_insecure(host):
            return False
        if host not in self._ssl:
            ca = self.settings.ca_for(host)
            self._ssl[host] = ssl.create_default_context(cafile=ca) if ca else True
        return self._ssl[host]

    def scrub(self, text: str) -> str:
        return redact(text, self._secrets)

    def _error(self, text: str, cls: type[RegistryError] = RegistryError) -> RegistryError:
        return cls(self.scrub(text))

    # --- auth ---

    async def _credentials(self, host: str) -> Credentials | None:
        creds = await asyncio.to_thread(self.settings.credentials, host)
        if creds is not None:
            for secret in creds.secrets():
                if secret not in self._secrets:
                    self._secrets.append(secret)
        return creds

    def _cached_auth(self, host: str, scope: str) -> str | None:
        entry = self._auth.get((host, scope))
        if entry is None:
            return None
        header, expiry = entry
        if time.monotonic() >= expiry:
            del self._auth[(host, scope)]
            return None
        return header

    async def _authorization(self, host: str, scope: str) -> str | None:
        header = self._cached_auth(host, scope)
        if header is None and host in self._basic_hosts:
            creds = await self._credentials(host)
            if creds is not None:
                header = "Basic " + creds.basic()
        return header

    async def _answer(self, host: str, scope: str, challenge: Challenge | None, why: str) -> None:
        """Obtain what the registry's 401 challenge asks for, or raise with its message."""
        if challenge is None:
            raise self._error(f"{why} (and no WWW-Authenticate challenge to answer)")
        creds = await self._credentials(host)
        if challenge.scheme == "basic":
            if creds is None:
                raise self._error(f"{why} (no credentials configured for {host})")
            self._basic_hosts.add(host)
            self._auth[(host, scope)] = ("Basic " + creds.basic(), float("inf"))
            return
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise self._error(f"{why} (unsupported auth scheme {challenge.scheme!r})")
        token, lifetime = await self._token(host, challenge, scope, creds)
        expiry = time.monotonic() + max(1.0, lifetime - TOKEN_MARGIN)
        self._auth[(host, scope)] = ("Bearer " + token, expiry)

    async def _token(
        self, host: str, challenge: Challenge, scope: str, creds: Credentials | None
    ) -> tuple[str, float]:
        """A bearer token from the challenge's realm (with Basic credentials if we have any)."""
        realm = challenge.params["realm"]
        query = {"service": challenge.params.get("service", ""), "scope": scope}
        url = (
            realm
            + ("&" if "?" in realm else "?")
            + urlencode({k: v for k, v in query.items() if v})
        )
        headers = {"Authorization": "Basic " + creds.basic()} if creds else {}
        for attempt in range(self.retries + 1):
            try:
                async with self._http().get(url, headers=headers, ssl=self._ssl_for(host)) as resp:
                    body = await resp.content.read(MAX_ERROR_BODY)
                    status, reason = resp.status, resp.reason
            except aiohttp.ClientConnectorDNSError as exc:
                raise self._error(f"token service {realm}: {exc}", RegistryUnreachable) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt == self.retries:
                    raise self._error(
                        f"token service {realm}: {exc or type(exc).__name__}", RegistryUnreachable
                    ) from None
                await self._sleep(attempt)
                continue
            if status in RETRYABLE_STATUS and attempt < self.retries:
                await self._sleep(attempt)
                continue
            if status != 200:
                raise self._error(
                    f"token service {realm}: {registry_message(status, reason, body)}"
                )
            try:
                doc = json.loads(body)
                token = doc.get("token") or doc.get("access_token")
                lifetime = float(doc.get("expires_in") or 60)
            except (ValueError, AttributeError, TypeError):
                token, lifetime = None, 0.0
            if not isinstance(token, str) or not token:
                raise self._error(f"token service {realm}: answered without a token")
            self._secrets.append(token)
            return token, lifetime
        raise AssertionError("unreachable")

    # --- requests ---

    async def _sleep(self, attempt: int, at_least: float = 0.0) -> None:
        delay = self.backoff * (2**attempt) * random.uniform(0.5, 1.0)
        await asyncio.sleep(max(delay, at_least))

    async def _follow(
        self, method: str, url: str, headers: dict[str, str], host: str
    ) -> aiohttp.ClientResponse:
        """One request, following redirects; Authorization stays with the registry's origin."""
        origin = urlsplit(url)[:2]
        for _ in range(MAX_REDIRECTS + 1):
            resp = await self._http().request(
                method, url, headers=headers, ssl=self._ssl_for(host), allow_redirects=False
            )
            if resp.status not in (301, 302, 303, 307, 308) or "Location" not in resp.headers:
                return resp
            location = urljoin(url, resp.headers["Location"])
            resp.release()
            if urlsplit(location)[:2] != origin:
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            url = location
        raise self._error(f"{method} {url}: too many redirects")

    async def _open(
        self, host: str, repo: str, path: str, *, accept: str | None = None
    ) -> aiohttp.ClientResponse:
        """GET `/v2/<repo>/<path>`: auth, retries, redirects. The caller releases the response."""
        url = f"{self.base_url(host)}/v2/{repo}/{path}"
        what = f"GET /v2/{repo}/{path}"
        scope = f"repository:{repo}:pull"
        challenged = False
        attempt = 0
        while True:
            headers = {"Accept": accept} if accept else {}
            authorization = await self._authorization(host, scope)
            if authorization:
                headers["Authorization"] = authorization
            try:
                resp = await self._follow("GET", url, headers, host)
            except aiohttp.ClientConnectorDNSError as exc:
                raise self._error(f"{what}: {exc}", RegistryUnreachable) from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                if attempt >= self.retries:
                    cls = (
                        RegistryUnreachable
                        if isinstance(exc, aiohttp.ClientConnectionError | TimeoutError)
                        else RegistryError
                    )
                    raise self._error(
                        f"{what}: {exc or type(exc).__name__} (after {attempt + 1} attempts)",
                        cls,
                    ) from None
                _LOGGER.debug("%s: %s; retrying", what, exc or type(exc).__name__)
                await self._sleep(attempt)
                attempt += 1
                continue
            if resp.status < 400:
                return resp
            body = await resp.content.read(MAX_ERROR_BODY)
            resp.release()
            message = f"{what}: {registry_message(resp.status, resp.reason, body)}"
            if resp.status == 401 and not challenged:
                challenged = True
                self._auth.pop((host, scope), None)
                challenge = parse_challenge(resp.headers.get("WWW-Authenticate"))
                await self._answer(host, scope, challenge, message)
                continue
            if resp.status in RETRYABLE_STATUS and attempt < self.retries:
                retry_after = resp.headers.get("Retry-After", "")
                wait = float(retry_after) if retry_after.isdigit() else 0.0
                _LOGGER.debug("%s; retrying", message)
                await self._sleep(attempt, min(wait, MAX_RETRY_AFTER))
                attempt += 1
                continue
            raise self._error(message)

    async def _document(
        self, ref: ImageRef, reference: str, expect: str | None
    ) -> tuple[bytes, str, str | None]:
        """A manifest or index: (bytes, digest, media type), its digest checked."""
        resp = await self._open(ref.domain, ref.path, f"manifests/{reference}", accept=ACCEPT)
        try:
            body = await resp.content.read(MAX_JSON_DOCUMENT + 1)
            media_type = resp.headers.get("Content-Type", "").split(";")[0].strip() or None
            header_digest = resp.headers.get("Docker-Content-Digest")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._error(f"manifest {reference}: {exc}") from None
        finally:
            resp.release()
        if len(body) > MAX_JSON_DOCUMENT:
            raise self._error(f"manifest {reference}: larger than {MAX_JSON_DOCUMENT} bytes")
        digest = _sha256(body)
        if expect is not None and digest != expect:
            raise self._error(f"manifest {expect}: digest mismatch (content hashes to {digest})")
        if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
            raise self._error(
                f"manifest {reference}: the registry says {header_digest}, content hashes "
                f"to {digest}"
            )
        return body, digest, media_type

    async def resolve(self, ref: ImageRef, arch: str) -> Resolved:
        """The manifest `ref` names for linux/`arch` (through an index if there is one)."""
        reference = ref.digest or ref.tag or "latest"
        body, digest, media_type = await self._document(ref, reference, ref.digest)
        what = f"{ref} ({digest})"
        try:
            doc = load_json(body, what)
            if document_kind(doc, _known(media_type), what) == "manifest":
                return Resolved(digest, body, parse_manifest(doc, what))
            chosen = select_platform(parse_index(doc, what), arch, what)
            m_body, m_digest, m_type = await self._document(ref, chosen.digest, chosen.digest)
            m_what = f"{ref} ({m_digest})"
            m_doc = load_json(m_body, m_what)
            if document_kind(m_doc, _known(m_type), m_what) != "manifest":
                raise ImageError(f"{m_what}: nested indexes are not supported")
            return Resolved(m_digest, m_body, parse_manifest(m_doc, m_what), digest, body)
        except RegistryError:
            raise
        except ImageError as exc:
            raise self._error(str(exc)) from None

    async def fetch_blob(
        self, ref: ImageRef, desc: Descriptor, dest: Path, progress: Progress | None = None
    ) -> None:
        """Download one blob to `dest`, refusing one that is longer than declared or whose
        content does not hash to its digest. Transient failures restart the download."""
        attempt = 0
        while True:
            try:
                await self._fetch_once(ref, desc, dest, progress)
                return
            except RegistryUnreachable:
                raise
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                if attempt >= self.retries:
                    raise self._error(
                        f"blob {desc.digest}: {exc or type(exc).__name__} "
                        f"(after {attempt + 1} attempts)"
                    ) from None
                _LOGGER.debug("blob %s: %s; retrying", desc.digest, exc)
                await self._sleep(attempt)
                attempt += 1

    async def _fetch_once(
        self, ref: ImageRef, desc: Descriptor, dest: Path, progress: Progress | None
    ) -> None:
        resp = await self._open(ref.domain, ref.path, f"blobs/{desc.digest}")
        h = hashlib.sha256()
        n = 0
        try:
            with await asyncio.to_thread(open, dest, "wb") as out:

                def write(data: bytes) -> None:
                    h.update(data)
                    out.write(data)

                buffer = bytearray()
                async for chunk in resp.content.iter_any():
                    n += len(chunk)
                    if n > desc.size:
                        raise self._error(
                            f"blob {desc.digest}: larger than the {desc.size} bytes declared"
                        )
                    buffer += chunk
                    if progress is not None:
                        progress(len(chunk))
                    if len(buffer) >= CHUNK:
                        data, buffer = bytes(buffer), bytearray()
                        await asyncio.to_thread(write, data)  # disk and hashing off the loop
                if buffer:
                    await asyncio.to_thread(write, bytes(buffer))
        finally:
            resp.release()
        got = "sha256:" + h.hexdigest()
        if n != desc.size:
            raise self._error(f"blob {desc.digest}: {n} bytes, {desc.size} declared")
        if got != desc.digest:
            raise self._error(f"blob {desc.digest}: digest mismatch (content hashes to {got})")


def _known(media_type: str | None) -> str | None:
    """The Content-Type if it is a manifest type (registries may answer text/plain or json)."""
    if media_type in (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST):
        return media_type
    return None
