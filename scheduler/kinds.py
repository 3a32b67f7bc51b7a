"""The kinds the API serves beside pods and nodes: where each lives in the store and the URL.

One `Kind` per resource names its store prefix, its REST path and its model, so
the generic handlers (`scheduler/api/workloads.py`), the watch stream, the
namespace cleaner and the garbage collector all agree on where things are.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.models import (
    ControllerRevision,
    Deployment,
    Event,
    Job,
    Model,
    Namespace,
    Node,
    Pod,
)


@dataclass(frozen=True, slots=True)
class Kind:
    kind: str  # "Deployment"
    plural: str  # "deployments"
    api_version: str  # "apps/v1"
    model: type[Model]
    prefix: str  # "/deployments/": keys are PREFIX + namespace/name (or PREFIX + name)
    namespaced: bool = True
    short_names: tuple[str, ...] = ()  # Kubernetes' own, for discovery (`kubectl get po`)
    categories: tuple[str, ...] = ()  # Kubernetes' own too: `all` is what `kubectl get all` lists

    def key(self, namespace: str | None, name: str) -> str:
        return f"{self.prefix}{namespace}/{name}" if self.namespaced else f"{self.prefix}{name}"

    def namespace_prefix(self, namespace: str | None) -> str:
        """The store prefix of every object of this kind in `namespace` (None: everywhere)."""
        return (
            self.prefix
            if namespace is None or not self.namespaced
            else f"{self.prefix}{namespace}/"
        )

    @property
    def group_resource(self) -> str:
        """`pods`, `deployments.apps`: the resource as kube-apiserver's messages name it."""
        group = self.api_version.rpartition("/")[0]
        return f"{self.plural}.{group}" if group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def api_root(self) -> str:
        """`/api/v1` for the core group, `/apis/GROUP/VERSION` for the others."""
        return "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection, or of one object."""
        base = self.api_root
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


PODS = Kind("Pod", "pods", "v1", Pod, "/pods/", short_names=("po",), categories=("all",))
NODES = Kind("Node", "nodes", "v1", Node, "/nodes/", namespaced=False, short_names=("no",))
EVENTS = Kind("Event", "events", "v1", Event, "/events/", short_names=("ev",))
NAMESPACES = Kind(
    "Namespace", "namespaces", "v1", Namespace, "/namespaces/", False, short_names=("ns",)
)
DEPLOYMENTS = Kind(
    "Deployment",
    "deployments",
    "apps/v1",
    Deployment,
    "/deployments/",
    short_names=("deploy",),
    categories=("all",),
)
JOBS = Kind("Job", "jobs", "batch/v1", Job, "/jobs/", categories=("all",))
REVISIONS = Kind(
    "ControllerRevision",
    "controllerrevisions",
    "apps/v1",
    ControllerRevision,
    "/controllerrevisions/",
)

# Every kind above, for discovery (scheduler/api/discovery.py).
ALL = (PODS, NODES, EVENTS, NAMESPACES, DEPLOYMENTS, JOBS, REVISIONS)

# What lives in a namespace, in the order a namespace's deletion removes it:
# owners first, so that their controllers stop replacing what is deleted next.
NAMESPACED = (DEPLOYMENTS, JOBS, REVISIONS, PODS, EVENTS)

DEFAULT_NAMESPACE = "default"
