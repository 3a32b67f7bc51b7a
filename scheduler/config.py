"""corral-scheduler's options: every one has a default, so the embedded defaults run a cluster."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from common.config import DaemonConfig

ENV_PREFIX = "CORRAL_SCHEDULER_"


class SchedulerConfig(DaemonConfig):
    listen: str = Field(
        "127.0.0.1:7070", description="HOST:PORT the API and the agent link listen on"
    )
    state_dir: str = Field(
        "/var/lib/corral-scheduler", description="directory of the SQLite store (state.db)"
    )
    join_token: str | None = Field(
        None,
        description="token agents must present to join; if unset, one is generated at start "
        "and written to STATE_DIR/join-token (mode 0600)",
    )
    admin_token: str | None = Field(
        None,
        description="an admin API token to accept (stored hashed); if unset and no admin "
        "token exists, one is generated at first start into STATE_DIR/admin-token (0600)",
    )
    tls_cert: str | None = Field(
        None, description="certificate (PEM) to serve the API and the agent link over TLS"
    )
    tls_key: str | None = Field(None, description="the certificate's private key (PEM)")
    tls_client_ca: str | None = Field(
        None,
        description="require every client (agents, CLI) to present a certificate signed by "
        "this CA (mutual TLS), in addition to its token",
    )
    allow_insecure_http: bool = Field(
        False,
        description="serve plain HTTP on an address that is not loopback (tokens then cross "
        "the network in the clear; a warning is logged)",
    )
    allow_host_network: bool = Field(
        False, description="accept pods with hostNetwork: true (they see the node's network)"
    )
    allowed_host_path_prefixes: list[str] = Field(
        default_factory=list,
        description="prefixes hostPath volumes may use (comma-separated; none by default: "
        "every hostPath is refused). Each agent checks its own allowed_host_paths too",
    )
    metrics_public: bool = Field(
        False, description="serve /metrics without a token (for a scraper on a trusted network)"
    )
    node_grace_seconds: float = Field(
        5.0, gt=0, description="a node missing heartbeats this long becomes NotReady"
    )
    eviction_seconds: float = Field(
        10.0,
        gt=0,
        description="a node's pods are replaced (or marked NodeLost) once it has sent no "
        "heartbeat for this long; at least node_grace_seconds",
    )
    failover_grace_seconds: float = Field(
        15.0,
        gt=0,
        description="after the scheduler starts, the nodes it knows get at least this long "
        "to reconnect before any is marked NotReady (Nomad's failover_heartbeat_ttl): agents "
        "redial with backoff (up to 5 s apart), so a scheduler that was down for a while "
        "must not take a late agent for a lost machine and run its pods twice",
    )
    heartbeat_seconds: float = Field(
        1.0, gt=0, description="how often agents are told to send heartbeats"
    )
    max_heartbeats_per_second: float = Field(
        1000.0,
        gt=0,
        description="the agents' heartbeats together stay under this rate: a node joining a "
        "cluster of N nodes is told to heartbeat every max(heartbeat_seconds, N / this) "
        "seconds, and its grace and eviction timeouts stretch by the same factor (Nomad's "
        "max_heartbeats_per_second)",
    )
    agent_answer_seconds: float = Field(
        10.0,
        gt=0,
        description="how long a request relayed to an agent (a log that is not followed) "
        "waits for the agent's first answer before it fails (kube-apiserver's "
        "--kubelet-timeout)",
    )
    placement_strategy: Literal["spread", "binpack"] = Field(
        "spread",
        description="spread: prefer the least allocated node; binpack: prefer the most allocated",
    )
    placement_sample: int = Field(
        0,
        ge=0,
        description="feasible nodes scored per placement (0: about log2 of the node count, "
        "at least 8, as Nomad does)",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, gt=0, description="largest request body accepted, in bytes"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines: text (for people) or json (one object a line)"
    )

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"{value!r} is not HOST:PORT")
        return value

    @field_validator("allowed_host_path_prefixes", mode="before")
    @classmethod
    def _prefixes(cls, value: object) -> object:
        if isinstance(value, str):  # from a flag or the environment: /a,/b
            value = [p for p in value.split(",") if p]
        if isinstance(value, list):
            for prefix in value:
                if not isinstance(prefix, str) or not prefix.startswith("/"):
                    raise ValueError(f"{prefix!r} is not an absolute path")
                if ".." in prefix.split("/"):
                    raise ValueError(f"{prefix!r} must not contain '..'")
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> SchedulerConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self

    @model_validator(mode="after")
    def _eviction_after_grace(self) -> SchedulerConfig:
        if self.eviction_seconds < self.node_grace_seconds:
            raise ValueError(
                f"eviction_seconds ({self.eviction_seconds}) must be at least "
                f"node_grace_seconds ({self.node_grace_seconds})"
            )
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    def heartbeat_stretch(self, nodes: int) -> float:
        """How much longer than configured a node joining a cluster of `nodes` heartbeats
        (and waits for its grace and eviction timeouts): 1 until the heartbeats together
        would pass max_heartbeats_per_second. Nomad stretches its heartbeat TTL the same way,
        so that a large cluster's heartbeats cannot swamp the servers."""
        return max(1.0, nodes / (self.max_heartbeats_per_second * self.heartbeat_seconds))
