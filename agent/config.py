"""corral-agent's options: the same loader as the scheduler (defaults < TOML < env < flags)."""

from __future__ import annotations

import json
import socket
from typing import Literal

from pydantic import Field, field_validator, model_validator

from agent.runtime.pulls import RegistryHost
from common.config import DaemonConfig
from common.limits import MAX_LAYER_BYTES
from common.models import check_dns_subdomain
from common.nodelabels import check_agent_labels
from common.quantity import QuantityError, cpu_millis, memory_bytes

ENV_PREFIX = "CORRAL_AGENT_"


def _hostname() -> str:
    return socket.gethostname().split(".")[0].lower()


class AgentConfig(DaemonConfig):
    server: str = Field("http://127.0.0.1:7070", description="the scheduler's base URL")
    join_token: str | None = Field(
        None, description="the scheduler's join token (or join_token_file)"
    )
    join_token_file: str | None = Field(None, description="file holding the join token")
    ca_file: str | None = Field(
        None, description="CA certificate to verify an https scheduler with (default: system CAs)"
    )
    client_cert: str | None = Field(
        None, description="client certificate for a scheduler that sets tls_client_ca"
    )
    client_key: str | None = Field(None, description="the client certificate's key")
    allow_insecure_http: bool = Field(
        False,
        description="allow an http:// server that is not loopback (the join token and node "
        "credential then cross the network in the clear)",
    )
    node_name: str = Field(default_factory=_hostname, description="this node's name")
    labels: dict[str, str] = Field(default_factory=dict, description="node labels (TOML table)")
    state_dir: str = Field("/var/lib/corral", description="pods' state, images, exit records")
    log_dir: str | None = Field(None, description="container logs (default STATE_DIR/logs)")
    log_max_bytes: int = Field(10 * 1024 * 1024, gt=0, description="rotate a container log at")
    log_max_files: int = Field(3, ge=1, description="rotated log files kept per container")
    cpu_reserved: str = Field("100m", description="CPU kept back from pods (quantity)")
    memory_reserved: str = Field("256Mi", description="memory kept back from pods (quantity)")
    max_pods: int = Field(110, gt=0, description="pods this node accepts")
    pids_limit: int = Field(1024, gt=0, description="default pids limit of each pod")
    cgroup_parent: str = Field(
        "corral", description="cgroup subtree of the pods (below the agent's own under systemd)"
    )
    cgroup_delegated: bool = Field(
        False,
        description="the agent's cgroup is delegated to it (systemd's Delegate=yes; the unit "
        "sets this): cgroup_parent is then below the agent's own cgroup",
    )
    allowed_host_paths: list[str] = Field(
        default_factory=list, description="prefixes hostPath volumes may use (none by default)"
    )
    stop_pods_on_exit: bool = Field(
        False,
        description="stop every pod when the agent exits (for `corral up`); by default pods "
        "keep running and the next agent re-adopts them",
    )
    runtime: Literal["native", "docker"] = Field(
        "native", description="runtime of pods without a runtimeClassName (native or docker)"
    )
    docker_host: str = Field(
        "unix:///var/run/docker.sock", description="the Docker daemon, for docker pods"
    )
    docker_pause_image: str | None = Field(
        None,
        description="infra (pause) image of docker pods (default: built from the node's "
        "static busybox)",
    )
    insecure_registries: list[str] = Field(
        default_factory=list, description="registries (HOST:PORT) pulled from over plain HTTP"
    )
    registry_ca_file: str | None = Field(None, description="extra CA bundle for registries")
    registry_auth_file: str | None = Field(
        None, description="registry credentials, Docker config.json style (a pull secret)"
    )
    registries: dict[str, RegistryHost] = Field(
        default_factory=dict,
        description='per-registry settings, [registries."HOST:PORT"] username, password, '
        "password_file, ca_file, insecure",
    )
    max_concurrent_downloads: int = Field(3, gt=0, description="layer downloads per pull")
    max_layer_bytes: int = Field(
        MAX_LAYER_BYTES,
        gt=0,
        description="bytes one image layer may unpack to (its uncompressed tar): a pull of "
        "a bigger layer fails and keeps nothing of it (image import: --max-layer-bytes)",
    )
    image_gc_high_threshold_percent: int = Field(
        85,
        ge=1,
        le=100,
        description="when the image store's filesystem is fuller than this, images no pod "
        "uses are removed, least recently used first (the kubelet's "
        "imageGCHighThresholdPercent; 100 turns image gc off)",
    )
    image_gc_low_threshold_percent: int = Field(
        80,
        ge=0,
        le=99,
        description="image gc removes images until the filesystem is this full (below the "
        "high threshold)",
    )
    image_minimum_gc_age_seconds: float = Field(
        120.0,
        ge=0,
        description="an image is not removed until this long after image gc first saw it",
    )
    image_gc_period_seconds: float = Field(
        300.0, gt=0, description="seconds between image gc passes"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    log_format: Literal["text", "json"] = Field(
        "text", description="log lines: text (for people) or json (one object a line)"
    )
    metrics_listen: str = Field(
        "127.0.0.1:7071",
        description="HOST:PORT of Prometheus /metrics (the agent's only listening socket; "
        'loopback by default; "" disables it)',
    )

    @field_validator("node_name")
    @classmethod
    def _name(cls, value: str) -> str:
        return check_dns_subdomain(value)

    @field_validator("cpu_reserved")
    @classmethod
    def _cpu(cls, value: str) -> str:
        try:
            cpu_millis(value)
        except QuantityError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("memory_reserved")
    @classmethod
    def _memory(cls, value: str) -> str:
        try:
            memory_bytes(value)
        except QuantityError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: object) -> object:
        if isinstance(value, str):  # from a flag or the environment: k=v,k2=v2
            pairs = [item.split("=", 1) for item in value.split(",") if item]
            return {k.strip(): v.strip() for k, v in pairs}
        return value

    @field_validator("labels")
    @classmethod
    def _own_labels(cls, value: dict[str, str]) -> dict[str, str]:
        # Refused at start, as the kubelet refuses such --node-labels, rather than by the
        # scheduler at every connection.
        check_agent_labels(value)
        return value

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if value and (not sep or not host or not port.isdigit() or int(port) > 65535):
            raise ValueError(f"{value!r} is not HOST:PORT (or empty to disable)")
        return value

    @field_validator("allowed_host_paths", mode="before")
    @classmethod
    def _paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [p for p in value.split(",") if p]
        return value

    @field_validator("insecure_registries", mode="before")
    @classmethod
    def _registries_list(cls, value: object) -> object:
        if isinstance(value, str):  # from a flag or the environment: h1:5000,h2
            return [h.strip() for h in value.split(",") if h.strip()]
        return value

    @field_validator("registries", mode="before")
    @classmethod
    def _registries(cls, value: object) -> object:
        if isinstance(value, str):  # from a flag or the environment: JSON
            try:
                return json.loads(value)
            except ValueError:
                raise ValueError("expected a JSON object of HOST: {username, ...}") from None
        return value

    @model_validator(mode="after")
    def _image_gc_thresholds(self) -> AgentConfig:
        if self.image_gc_low_threshold_percent >= self.image_gc_high_threshold_percent:
            raise ValueError(
                f"image_gc_low_threshold_percent ({self.image_gc_low_threshold_percent}) must "
                f"be below image_gc_high_threshold_percent "
                f"({self.image_gc_high_threshold_percent})"
            )
        return self
