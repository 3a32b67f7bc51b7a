"""corral's version, and the Kubernetes API level it follows, as clients are shown them."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

# The Kubernetes release whose API corral's resources follow: `/version` reports it, and
# each agent as its node's kubelet version, with corral's own version after it.
KUBERNETES_MAJOR, KUBERNETES_MINOR = 1, 30


@functools.cache  # reads the package's metadata from disk: once
def corral_version() -> str:
    try:
        return metadata.version("corral")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def git_version() -> str:
    """Kubernetes' `gitVersion` shape: `v1.30.0-corral.0.1.0`."""
    return f"v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0-corral.{corral_version()}"


# platform.machine() -> GOARCH, the spelling Kubernetes and image platforms use.
_ARCH_MAP = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
    "armv7l": "arm",
    "armv6l": "arm",
    "i386": "386",
    "i686": "386",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "riscv64": "riscv64",
}


def host_arch() -> str:
    """This machine's architecture as Kubernetes and image platforms name it (amd64,
    arm64, ...)."""
    machine = platform.machine().lower()
    return _ARCH_MAP.get(machine, machine)
