"""What the agent checks before it dials: a way to authenticate, and a transport fit for it.

The agent needs a node credential (`STATE_DIR/node-credential`, from an
earlier join) or the join token. Either is a bearer secret, so the link to a
scheduler that is not on loopback must be https, unless `allow_insecure_http`
is set; then a warning is logged at every start.
"""

from __future__ import annotations

from pathlib import Path

from agent.config import AgentConfig
from agent.credentials import CredentialStore
from common.config import ConfigError
from common.tls import TLSConfigError, client_context, plain_http_problem


def join_token(config: AgentConfig) -> str | None:
    """The join token; None when there is none but the node already holds a credential."""
    if config.join_token:
        return config.join_token
    if config.join_token_file:
        try:
            return Path(config.join_token_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read join_token_file {config.join_token_file}: {exc.strerror}"
            ) from None
    if CredentialStore(Path(config.state_dir)).load() is not None:
        return None  # joined before: the credential is enough
    raise ConfigError(
        "a join token is required to join (set join_token or join_token_file); "
        f"a node that has joined uses {Path(config.state_dir) / 'node-credential'} instead"
    )


def check_transport(config: AgentConfig) -> str | None:
    """Refuse plain HTTP off loopback unless allowed (then return the warning to log);
    load the TLS files now so that a bad one is a configuration error, not a retry loop."""
    problem = plain_http_problem(config.server)
    if problem is not None and not config.allow_insecure_http:
        raise ConfigError(f"{problem}; use https (see docs/security.md) or set allow_insecure_http")
    if config.server.startswith("https://"):
        try:
            client_context(config.ca_file, config.client_cert, config.client_key)
        except TLSConfigError as exc:
            raise ConfigError(str(exc)) from None
    return f"{problem} (allowed by allow_insecure_http)" if problem else None
