"""Which resource a route serves, read off its path, for discovery and for Tables.

A route path is read as Kubernetes lays them out:

    ROOT[/namespaces/{namespace}]/PLURAL               collection
    ROOT[/namespaces/{namespace}]/PLURAL/{name}        item
    ROOT[/namespaces/{namespace}]/PLURAL/{name}/SUB    subresource PLURAL/SUB

where ROOT is `/api/v1` or `/apis/GROUP/VERSION`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

CORE_ROOT = "/api/v1"
# Paths under a group-version's root that are not resources: corral's status summary
# and the agents' WebSocket link (scheduler/api/ops.py, scheduler/api/app.py).
NON_RESOURCES = frozenset({"/api/v1/status", "/api/v1/agent"})


class RoutePath(NamedTuple):
    """What a route path names."""

    group_version: str
    resource: str  # "pods", or "pods/log" for a subresource
    namespaced: bool
    scope: Literal["collection", "item"]


def _split(path: str) -> tuple[str, list[str]] | None:
    """(groupVersion, the segments after the group-version's root), or None if the path
    is not under one (or is a discovery route, whose group and version are variables)."""
    if path.startswith(CORE_ROOT + "/"):
        return "v1", path[len(CORE_ROOT) + 1 :].split("/")
    parts = path.split("/")  # "", "apis", GROUP, VERSION, ...
    if len(parts) < 5 or parts[1] != "apis" or "{" in parts[2] + parts[3]:
        return None
    return f"{parts[2]}/{parts[3]}", parts[4:]


def _is_var(segment: str) -> bool:
    return segment.startswith("{") and segment.endswith("}")


def read(path: str) -> RoutePath | None:
    """The resource a route path serves, or None if it is not a resource's."""
    split = _split(path)
    if split is None or path in NON_RESOURCES:
        return None
    group_version, segments = split
    namespaced = len(segments) >= 3 and segments[:2] == ["namespaces", "{namespace}"]
    if namespaced:
        segments = segments[2:]
    if not segments[0] or _is_var(segments[0]):  # "/api/v1/" is discovery's own
        return None
    plural = segments[0]
    if len(segments) == 1:
        return RoutePath(group_version, plural, namespaced, "collection")
    if len(segments) == 2 and _is_var(segments[1]):
        return RoutePath(group_version, plural, namespaced, "item")
    if len(segments) == 3 and _is_var(segments[1]) and not _is_var(segments[2]):
        return RoutePath(group_version, f"{plural}/{segments[2]}", namespaced, "item")
    return None
