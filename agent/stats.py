"""What this node has and uses: capacity from the machine, usage from psutil."""

from __future__ import annotations

import os
import platform
import socket

import psutil

from common.quantity import cpu_millis, format_cpu, memory_bytes
from common.version import corral_version, git_version, host_arch


def capacity() -> dict[str, int]:
    """CPU in millicores and memory in bytes, as the machine reports them."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return {"cpu": cpus * 1000, "memory": psutil.virtual_memory().total}


def node_quantities(
    cpu_reserved: str, memory_reserved: str, max_pods: int
) -> tuple[dict[str, str], dict[str, str]]:
    """(capacity, allocatable) as Kubernetes quantities; allocatable = capacity - reserve."""
    cap = capacity()
    alloc_cpu = max(0, cap["cpu"] - cpu_millis(cpu_reserved))
    alloc_mem = max(0, cap["memory"] - memory_bytes(memory_reserved))
    return (
        {"cpu": format_cpu(cap["cpu"]), "memory": str(cap["memory"]), "pods": str(max_pods)},
        {"cpu": format_cpu(alloc_cpu), "memory": str(alloc_mem), "pods": str(max_pods)},
    )


def usage() -> dict[str, int]:
    """CPU in use (millicores, since the previous call) and memory in use (bytes).

    Reads /proc; meant to run in a worker thread.
    """
    cpus = psutil.cpu_count() or 1
    percent = psutil.cpu_percent(interval=None)
    vm = psutil.virtual_memory()
    # Never below 0: the link refuses a negative usage (a container's /proc can report
    # more available than total).
    memory = max(0, vm.total - vm.available)
    return {"cpu": max(0, int(percent / 100 * cpus * 1000)), "memory": memory}


def node_info(runtime: str) -> dict[str, str]:
    """The node's `status.nodeInfo`: Kubernetes' NodeSystemInfo (every key, as its clients
    require them), and corral's own `hostname` and `agentVersion`. `runtime` is the one
    pods run in without a runtimeClassName."""
    version = corral_version()
    return {
        "machineID": _first_line("/etc/machine-id"),
        "systemUUID": _first_line("/sys/class/dmi/id/product_uuid"),
        "bootID": _first_line("/proc/sys/kernel/random/boot_id"),
        "kernelVersion": platform.release(),
        "osImage": _os_release(),
        "containerRuntimeVersion": f"corral-{runtime}://{version}",
        "kubeletVersion": git_version(),
        "kubeProxyVersion": "",
        "operatingSystem": platform.system().lower(),
        "architecture": host_arch(),
        "hostname": socket.gethostname(),
        "agentVersion": version,
    }


def _first_line(path: str) -> str:
    """A one-line system file (an id), or "" where it cannot be read (no DMI in a VM)."""
    try:
        with open(path) as f:
            return f.readline().strip()
    except OSError:
        return ""


def _os_release() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()
