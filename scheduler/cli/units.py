"""What `corral install` puts on a machine: the systemd units and the daemons' configs.

The texts live here, in the package, so an installed corral can install itself; the
files in `systemd/` are their rendered defaults, and a test keeps them identical.
After changing a unit or a config option, regenerate them:

    python -m scheduler.cli.units systemd/
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from agent.config import ENV_PREFIX as AGENT_ENV
from agent.config import AgentConfig
from common.config import DaemonConfig
from common.configdoc import render_toml
from scheduler.config import ENV_PREFIX as SCHEDULER_ENV
from scheduler.config import SchedulerConfig

Daemon = Literal["agent", "scheduler"]
DEFAULT_BIN_DIR = "/usr/local/bin"
CONFIG_DIR = "/etc/corral"
UNIT_DIR = "/etc/systemd/system"

AGENT_UNIT = """\
# corral-agent: runs this machine's pods for the corral scheduler.
# Installed by `corral install agent`; rendered from scheduler/cli/units.py.
[Unit]
Description=corral node agent
After=network-online.target
Wants=network-online.target

[Service]
# READY=1 once the agent has joined its scheduler, or serves the pods it re-adopted
# from its state directory when the scheduler cannot be reached (a node must come up
# while the control plane is down). STATUS= says how many pods run.
Type=notify
NotifyAccess=main
ExecStart={bin_dir}/corral-agent --config /etc/corral/agent.toml --cgroup-delegated
# Pinged from the agent's event loop: a loop stuck this long gets the agent restarted
# (which restarts no pod, see KillMode).
WatchdogSec=30s
Restart=always
RestartSec=2s
# Pods outlive the agent. Each container is waited for by a small monitor that
# double-forks away from the agent and records the exit code in the state directory,
# so the agent can be restarted or upgraded without touching a pod; the next agent
# re-adopts them. The default KillMode=control-group would kill every process of the
# unit's cgroup (monitors and pods included) on each stop or restart: `process` stops
# only the agent itself. (systemd then logs "left-over process" at start: expected.)
# To stop the pods too, drain the node first: `corral drain NODE`.
KillMode=process
# The agent owns its cgroup subtree: with --cgroup-delegated it makes the pods' cgroups
# (cpu, memory, pids) below its own, where systemd leaves them alone.
Delegate=yes
StateDirectory=corral
StateDirectoryMode=0700
TimeoutStopSec=30s
# Pods are limited by their own cgroups (pids, memory, cpu), not by this unit's
# defaults, which would count every pod's processes and files against the agent.
TasksMax=infinity
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
"""

SCHEDULER_UNIT = """\
# corral-scheduler: the corral control plane (API, store, placement, node health).
# Installed by `corral install scheduler`; rendered from scheduler/cli/units.py.
[Unit]
Description=corral scheduler (control plane)
After=network-online.target
Wants=network-online.target

[Service]
# READY=1 once the store is open and the API serves; STATUS= counts nodes and pods.
Type=notify
NotifyAccess=main
ExecStart={bin_dir}/corral-scheduler --config /etc/corral/scheduler.toml
# Pinged from the event loop while every control loop runs.
WatchdogSec=30s
Restart=always
RestartSec=2s
TimeoutStopSec=30s
# A system user of its own (created by `corral install scheduler`), which owns the
# state directory; it needs no privilege at all (the API port is above 1024).
User=corral
Group=corral
StateDirectory=corral-scheduler
StateDirectoryMode=0700
UMask=0077

# Hardening: the scheduler writes only its state directory (state.db, tokens) and
# talks TCP. Keep state_dir and ReadWritePaths in agreement.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=/var/lib/corral-scheduler
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
CapabilityBoundingSet=
AmbientCapabilities=
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# Not MemoryDenyWriteExecute: Python's ctypes/libffi may need writable code pages.

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class DaemonFiles:
    """Where one daemon's pieces go, relative to the machine's root."""

    daemon: Daemon
    unit_name: str
    unit: str
    model: type[DaemonConfig]
    env_prefix: str
    config_path: str
    state_dir: str
    examples: dict[str, Any]


AGENT = DaemonFiles(
    "agent",
    "corral-agent.service",
    AGENT_UNIT,
    AgentConfig,
    AGENT_ENV,
    f"{CONFIG_DIR}/agent.toml",
    "/var/lib/corral",
    {"node_name": "node-1", "join_token_file": f"{CONFIG_DIR}/join-token"},
)
SCHEDULER = DaemonFiles(
    "scheduler",
    "corral-scheduler.service",
    SCHEDULER_UNIT,
    SchedulerConfig,
    SCHEDULER_ENV,
    f"{CONFIG_DIR}/scheduler.toml",
    "/var/lib/corral-scheduler",
    {},
)
DAEMONS: dict[str, DaemonFiles] = {"agent": AGENT, "scheduler": SCHEDULER}


def render_unit(files: DaemonFiles, bin_dir: str = DEFAULT_BIN_DIR) -> str:
    return files.unit.format(bin_dir=bin_dir.rstrip("/"))


def render_config(files: DaemonFiles, values: dict[str, Any] | None = None) -> str:
    """The daemon's TOML config: every option documented, `values` set."""
    name = f"corral-{files.daemon}"
    header = (
        f"{name} configuration (TOML). Every option is listed with its default, commented\n"
        "out: uncomment a line to change it. An option can also be set in the environment\n"
        f"({files.env_prefix}<OPTION>) or by flag (--option); a flag wins over the\n"
        f"environment, which wins over this file. `{name} --help` lists the same options.\n"
        "Rendered from the configuration model by scheduler/cli/units.py."
    )
    return render_toml(files.model, header, values, files.examples)


def write_examples(dest: Path) -> list[Path]:
    """The files of `systemd/`: both units (ExecStart in /usr/local/bin) and example configs."""
    written = []
    for files in DAEMONS.values():
        for path, text in (
            (dest / files.unit_name, render_unit(files)),
            (dest / f"{files.daemon}.toml", render_config(files)),
        ):
            path.write_text(text)
            written.append(path)
    return written


if __name__ == "__main__":
    for written_path in write_examples(Path(sys.argv[1] if len(sys.argv) > 1 else "systemd")):
        print(written_path)
