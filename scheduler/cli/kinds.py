"""The resources `corral` knows: their names and short names, API paths, and display names.

kubectl's spellings are accepted (`deploy`, `deployments.apps`, `ns`, `po`...);
objects are shown as kubectl shows them: `deployment.apps/web`, `job.batch/pi`,
`pod/web-7d4b9c6f58-x2x9k`.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from scheduler.cli.errors import CommandError


@dataclass(frozen=True)
class Resource:
    plural: str  # "deployments"
    singular: str  # "deployment"
    kind: str  # "Deployment"
    group: str  # "apps"; "" for the core group
    namespaced: bool
    aliases: tuple[str, ...] = ()
    version: str = "v1"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def display(self) -> str:
        """`deployment.apps`, `job.batch`, `pod`: the prefix of `NAME/...` in output."""
        return f"{self.singular}.{self.group}" if self.group else self.singular

    def ref(self, name: str) -> str:
        return f"{self.display}/{name}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The collection (in a namespace, or everywhere with None), or one object."""
        root = f"/apis/{self.group}/{self.version}" if self.group else "/api/v1"
        if self.namespaced and namespace is not None:
            root += f"/namespaces/{_quote(namespace)}"
        root += f"/{self.plural}"
        return f"{root}/{_quote(name)}" if name else root


PODS = Resource("pods", "pod", "Pod", "", True, ("po",))
NODES = Resource("nodes", "node", "Node", "", False, ("no",))
EVENTS = Resource("events", "event", "Event", "", True, ("ev",))
NAMESPACES = Resource("namespaces", "namespace", "Namespace", "", False, ("ns",))
DEPLOYMENTS = Resource("deployments", "deployment", "Deployment", "apps", True, ("deploy",))
JOBS = Resource("jobs", "job", "Job", "batch", True)
REVISIONS = Resource(
    "controllerrevisions", "controllerrevision", "ControllerRevision", "apps", True
)

ALL = (PODS, NODES, EVENTS, NAMESPACES, DEPLOYMENTS, JOBS, REVISIONS)
# What `corral get all` lists, as kubectl's `all` does: the workloads and their pods.
GET_ALL = (PODS, DEPLOYMENTS, JOBS)


def _names(res: Resource) -> set[str]:
    names = {res.plural, res.singular, *res.aliases}
    if res.group:
        names |= {f"{n}.{res.group}" for n in (res.plural, res.singular)}
    return names


_BY_NAME = {name: res for res in ALL for name in _names(res)}


def lookup(name: str) -> Resource:
    """The resource a command-line word names; CommandError listing the known ones."""
    found = _BY_NAME.get(name.lower())
    if found is None:
        known = ", ".join(r.plural for r in ALL)
        raise CommandError(
            f'the server doesn\'t have a resource type "{name}" (known: {known}, all)'
        )
    return found


def for_kind(api_version: str, kind: str) -> Resource:
    for res in ALL:
        if res.kind == kind and res.api_version == api_version:
            return res
    raise CommandError(f"{api_version}/{kind} is not a kind corral knows")


def split_ref(text: str) -> tuple[Resource | None, str]:
    """`deploy/web` -> (DEPLOYMENTS, "web"); `web` -> (None, "web")."""
    kind, slash, name = text.partition("/")
    if not slash:
        return None, text
    if not name:
        raise CommandError(f"{text!r}: a name is needed after the '/'")
    return lookup(kind), name


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")
