"""How the scheduler listens: TLS when configured, plain HTTP only on loopback unless allowed.

Bearer tokens, join tokens and node credentials travel in request headers, so a
plain-HTTP listener off loopback hands them to anyone on the path. The scheduler
refuses to start like that unless `allow_insecure_http` is set, and then says so
in its log at every start.
"""

from __future__ import annotations

import ssl

from common.config import ConfigError
from common.tls import TLSConfigError, is_loopback, server_context
from scheduler.config import SchedulerConfig


def listener(config: SchedulerConfig) -> tuple[ssl.SSLContext | None, str | None]:
    """(the SSL context or None, a warning to log or None); ConfigError if unfit to serve."""
    if config.tls_cert and config.tls_key:
        try:
            return server_context(config.tls_cert, config.tls_key, config.tls_client_ca), None
        except TLSConfigError as exc:
            raise ConfigError(str(exc)) from None
    if is_loopback(config.host):
        return None, None
    problem = (
        f"serving plain HTTP on {config.listen}, which is not loopback: API tokens, the join "
        "token and node credentials cross the network in the clear"
    )
    if not config.allow_insecure_http:
        raise ConfigError(
            f"{problem}; set tls_cert and tls_key (`corral certs`, docs/security.md), "
            "listen on 127.0.0.1, or set allow_insecure_http"
        )
    return None, f"{problem} (allowed by allow_insecure_http)"
