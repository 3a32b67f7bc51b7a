"""Pod cgroups below the agent's own cgroup, when systemd delegates it (`Delegate=yes`).

systemd owns the cgroup tree, except the subtree of a unit with `Delegate=yes`, which
it hands to the unit's processes. The agent's unit has it and starts the agent with
`--cgroup-delegated`: `cgroup_parent` is then taken below the agent's own cgroup
(`system.slice/corral-agent.service/corral`), so systemd never finds pod cgroups it
did not make, and `systemctl status corral-agent` shows the pods as the unit's.

On a pure cgroup2 machine a cgroup with processes cannot hand controllers to its
children (the no-internal-processes rule), so the agent first moves itself into a leaf,
`<own>/agent`; its fork server and monitors start there. On cgroup v1 and hybrid
machines (these development machines) no move is needed: systemd puts a delegated
unit at the same path in every hierarchy, read here from the memory controller's.
"""

from __future__ import annotations

import logging
import os

from agent.runtime.native.cgroups import own_cgroup

_LOGGER = logging.getLogger(__name__)

ROOT = "/sys/fs/cgroup"
AGENT_LEAF = "agent"


def _v1_memory(proc_cgroup: str) -> bool:
    with open(proc_cgroup) as f:
        return any("memory" in line.split(":")[1].split(",") for line in f if line.count(":") >= 2)


def pods_parent(
    parent: str, delegated: bool, *, proc_cgroup: str = "/proc/self/cgroup", root: str = ROOT
) -> str:
    """The cgroup parent of the pods: `parent` itself, or below the agent's own cgroup
    when `delegated` (moving the agent into a leaf first on pure cgroup2). Blocking."""
    if not delegated:
        return parent
    if _v1_memory(proc_cgroup):
        own = own_cgroup("memory", proc_cgroup=proc_cgroup)
    else:
        own = own_cgroup("", proc_cgroup=proc_cgroup)
        if own and not own.endswith("/" + AGENT_LEAF):
            leaf = os.path.join(root, own, AGENT_LEAF)
            os.makedirs(leaf, exist_ok=True)
            with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
            _LOGGER.info("moved the agent into %s (no processes in a delegated parent)", leaf)
        own = own.removesuffix("/" + AGENT_LEAF)
    if not own:
        _LOGGER.warning("cgroup_delegated is set but the agent runs in the root cgroup")
        return parent
    nested = f"{own}/{parent.strip('/')}"
    _LOGGER.info("pods' cgroups go below the agent's own (delegated): %s", nested)
    return nested
