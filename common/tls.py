"""TLS for the API and the agent link: SSL contexts, and the plain-HTTP-only-on-loopback rule.

The scheduler serves HTTPS when given `tls_cert` and `tls_key` (and asks every
client for a certificate signed by `tls_client_ca` when that is set). Clients
(the agent, the CLI) verify the scheduler against `ca_file`, or the system's
trust store when none is given. Plain HTTP carries bearer tokens in the clear,
so it is only used on loopback unless `allow_insecure_http` says otherwise.
`corral certs` makes the CA and certificates (`scheduler/certs.py`).
"""

from __future__ import annotations

import ipaddress
import ssl
import urllib.parse


class TLSConfigError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names the file."""


def is_loopback(host: str) -> bool:
    """True for `localhost`, 127.0.0.0/8 and ::1 (brackets allowed); False otherwise."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plain_http_problem(url: str) -> str | None:
    """Why `url` must not be used without TLS, or None (https, or http to loopback)."""
    parts = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme == "https":
        return None
    if is_loopback(parts.hostname or ""):
        return None
    return f"{url} is plain HTTP to a host that is not loopback: tokens would cross the network"


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """The scheduler's context: TLS 1.2+, its certificate, client certificates if asked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load tls_cert {cert} / tls_key {key}: {exc}") from None
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load tls_client_ca {client_ca}: {exc}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(
    ca_file: str | None = None, cert: str | None = None, key: str | None = None
) -> ssl.SSLContext:
    """A client's context: verify the server (against `ca_file`, else the system's CAs)
    and its host name; present a client certificate when one is given."""
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise TLSConfigError(f"cannot load ca_file {ca_file}: {exc}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise TLSConfigError(f"cannot load client certificate {cert}: {exc}") from None
    return ctx
