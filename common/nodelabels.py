"""The labels an agent may set on its own node, as Kubernetes' NodeRestriction allows a
kubelet's.

Labels in the `kubernetes.io` and `k8s.io` namespaces mean something to the cluster:
`node-restriction.kubernetes.io/...` exists so that an administrator can label nodes
for workloads that must run only there, which a node must not be able to claim for
itself; `node-role.kubernetes.io/...` says what a node is for. An agent may set the
few of them that describe the machine (its hostname, OS, architecture, zone, instance
type) and any in `kubelet.kubernetes.io` or `node.kubernetes.io`; labels outside
those namespaces (`disk=ssd`, `example.com/gpu`) are its own. Administrators set the
rest through the API (`corral label node` / `kubectl label node`).
"""

from __future__ import annotations

# k8s.io/kubelet's kubeletLabels: what a kubelet may set in the restricted namespaces.
ALLOWED = frozenset(
    {
        "kubernetes.io/hostname",
        "kubernetes.io/arch",
        "kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
    }
)
ALLOWED_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")
_RESTRICTED = ("kubernetes.io", "k8s.io")


def _within(namespace: str, domains: tuple[str, ...]) -> bool:
    return any(namespace == d or namespace.endswith("." + d) for d in domains)


def restricted(key: str) -> bool:
    """Whether an agent may not set the label `key` on its node."""
    namespace, slash, _ = key.rpartition("/")
    if not slash or not _within(namespace, _RESTRICTED):
        return False
    return key not in ALLOWED and not _within(namespace, ALLOWED_NAMESPACES)


def restricted_keys(labels: dict[str, str]) -> list[str]:
    """The keys of `labels` an agent may not set on its node, sorted."""
    return sorted(key for key in labels if restricted(key))


def describe(keys: list[str]) -> str:
    """`keys` (restricted ones) for a message: the first few, cut, and how many more."""
    # Cut: the keys come from the agent, of any length until the label check.
    shown = ", ".join(key[:100] for key in keys[:5])
    return shown + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


def check_agent_labels(labels: dict[str, str]) -> None:
    """ValueError naming the labels an agent may not set on its own node."""
    refused = restricted_keys(labels)
    if refused:
        raise ValueError(
            f"labels in the kubernetes.io and k8s.io namespaces that a node may not set on "
            f"itself: {describe(refused)} (an administrator sets them through the API, as "
            f"`kubectl label node` does; a node may set {', '.join(ALLOWED_NAMESPACES)} "
            "labels and kubernetes.io/hostname, arch, os, topology and instance-type)"
        )
