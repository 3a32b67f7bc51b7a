"""corral-agent's options: the same loader as the scheduler (defaults < TOML < env < flags)."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import Field, field_validator

from common.config import DaemonConfig
from common.models import check_dns_subdomain
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
    allowed_host_paths: list[str] = Field(
        default_factory=list, description="prefixes hostPath volumes may use (none by default)"
    )
    stop_pods_on_exit: bool = Field(
        False,
        description="stop every pod when the agent exits (for `corral up`); by default pods "
        "keep running and the next agent re-adopts them",
    )
    runtime: Literal["native"] = Field("native", description="container runtime")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

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

    @field_validator("allowed_host_paths", mode="before")
    @classmethod
    def _paths(cls, value: object) -> object:
        if isinstance(value, str):
            return [p for p in value.split(",") if p]
        return value
