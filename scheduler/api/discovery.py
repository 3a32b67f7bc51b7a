"""Kubernetes API discovery, read off the router: what kubectl and client-go ask first.

    GET /api                       APIVersions     {"versions": ["v1"], ...}
    GET /apis                      APIGroupList    every group a route serves
    GET /apis/{group}              APIGroup
    GET /api/v1                    APIResourceList the core group's resources
    GET /apis/{group}/{version}    APIResourceList
    GET /version                   version.Info    (public, as kube-apiserver's)

each also with a trailing slash (`/apis/`), as kube-apiserver answers both.

Nothing here is a list kept by hand: each request walks the application's
routes, so a route added later is discovered without touching this module.
A route path is read as Kubernetes lays them out (scheduler/api/paths.py:
`ROOT[/namespaces/{namespace}]/PLURAL[/{name}[/SUB]]`). A resource is namespaced if
any of its routes is under `/namespaces/{namespace}`. Its verbs are the methods
its routes answer, in Kubernetes' words: GET on the collection is `list` (and
`watch` where the handler streams `?watch=true`: `watch.watchable`), POST
`create`, DELETE on the collection `deletecollection`; on an item GET is `get`,
PUT `update`, PATCH `patch`, DELETE `delete`. The kind and short names come
from `scheduler.kinds` (or `_OTHER_KINDS` for resources that have no `Kind`).

Only the unaggregated (v1) shapes are served, as `application/json`. kubectl asks
for aggregated discovery first (`Accept: application/json;g=apidiscovery.k8s.io;
v=v2;as=APIGroupDiscoveryList,application/json`); client-go decides by the
response's Content-Type, and a plain `application/json` is read as the v1 shape,
after which it fetches each group-version's APIResourceList
(client-go discovery/discovery_client.go: downloadLegacy, downloadAPIs).
"""

from __future__ import annotations

import functools
import platform
import sys
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from common.version import KUBERNETES_MAJOR, KUBERNETES_MINOR, git_version, host_arch
from scheduler.api import paths
from scheduler.api.common import json_response
from scheduler.api.errors import NotFoundError
from scheduler.api.watch import is_watchable
from scheduler.kinds import ALL

# (groupVersion, plural) -> kind, for resources without a `scheduler.kinds.Kind`.
_OTHER_KINDS = {
    ("v1", "tokens"): "Token",  # scheduler/api/tokens.py
    ("metrics.k8s.io/v1beta1", "nodes"): "NodeMetrics",  # scheduler/api/usage.py
    ("metrics.k8s.io/v1beta1", "pods"): "PodMetrics",
}
# Subresources whose object is not their parent's kind: (group, version, kind). Their
# group-version is not listed in `/apis` when no route is under it (policy/v1: corral has
# no PodDisruptionBudgets): kubectl 1.30's discovery fails on a group-version of no
# resources ("received empty response for: policy/v1"), which costs kubectl before 1.22
# its evictions: it evicts only where `/apis` lists the policy group, and `drain`
# deletes the pods instead (the same delete: scheduler/api/evictions.py).
_SUBRESOURCE_KINDS = {
    "scale": ("autoscaling", "v1", "Scale"),
    "eviction": ("policy", "v1", "Eviction"),
}

_COLLECTION_VERBS = {"GET": "list", "POST": "create", "DELETE": "deletecollection"}
_ITEM_VERBS = {
    "GET": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
# Kubernetes' order, so that a listing reads as kube-apiserver's does.
_VERB_ORDER = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass
class Resource:
    """One resource (or subresource) of a group-version, as its routes serve it."""

    group_version: str
    name: str  # "pods", or "pods/log" for a subresource
    namespaced: bool = False
    verbs: set[str] = field(default_factory=set)


def resources(app: web.Application) -> dict[str, list[Resource]]:
    """groupVersion -> its resources, from the routes registered on `app`."""
    found: dict[tuple[str, str], Resource] = {}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        if not path or route.method == "HEAD":
            continue
        read = paths.read(path)
        if read is None:
            continue
        group_version, name, namespaced, table = read
        res = found.setdefault((group_version, name), Resource(group_version, name))
        res.namespaced |= namespaced
        verbs = _COLLECTION_VERBS if table == "collection" else _ITEM_VERBS
        if route.method in verbs:
            res.verbs.add(verbs[route.method])
        if table == "collection" and route.method == "GET" and is_watchable(route.handler):
            res.verbs.add("watch")
    by_group: dict[str, list[Resource]] = {}
    for key in sorted(found):
        by_group.setdefault(key[0], []).append(found[key])
    return by_group


def _kind_of(group_version: str, plural: str) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    """The kind, short names and categories of a resource, a guess from its name if
    nothing says."""
    for kind in ALL:
        if kind.api_version == group_version and kind.plural == plural:
            return kind.kind, kind.short_names, kind.categories
    other = _OTHER_KINDS.get((group_version, plural))
    return other or plural.removesuffix("s").capitalize(), (), ()


@dataclass(frozen=True)
class RouteKind:
    """What a resource route serves, as kube-apiserver's OpenAPI names it."""

    group_version: str  # of the route's root: "apps/v1" for .../deployments/{name}/scale
    gvk: dict[str, str]  # {"group", "version", "kind"} of the object it takes and returns
    collection: bool  # the collection's route, not an item's


def route_kind(path: str) -> RouteKind | None:
    """The group-version and kind of a route path, None if it is not a resource's.
    A subresource's kind is its own where it has one (/scale: autoscaling/v1 Scale),
    else its parent's (pods/log: Pod), as in kube-apiserver's OpenAPI."""
    read = paths.read(path)
    if read is None:
        return None
    group_version, name, _, table = read
    plural, _, sub = name.partition("/")
    if sub in _SUBRESOURCE_KINDS:
        group, version, kind = _SUBRESOURCE_KINDS[sub]
    else:
        kind = _kind_of(group_version, plural)[0]
        group, _, version = group_version.rpartition("/")
    gvk = {"group": group, "version": version, "kind": kind}
    return RouteKind(group_version, gvk, table == "collection")


def _resource_doc(res: Resource) -> dict[str, Any]:
    """One `APIResource`."""
    plural, _, sub = res.name.partition("/")
    kind, short_names, categories = _kind_of(res.group_version, plural)
    doc: dict[str, Any] = {"name": res.name, "singularName": "" if sub else kind.lower()}
    doc["namespaced"] = res.namespaced
    if sub in _SUBRESOURCE_KINDS:
        doc["group"], doc["version"], kind = _SUBRESOURCE_KINDS[sub]
    doc["kind"] = kind
    doc["verbs"] = [verb for verb in _VERB_ORDER if verb in res.verbs]
    if short_names and not sub:
        doc["shortNames"] = list(short_names)
    if categories and not sub:
        doc["categories"] = list(categories)
    return doc


def _addresses(request: web.Request) -> list[dict[str, str]]:
    """`serverAddressByClientCIDRs`: the address the client reached (its Host header)."""
    return [{"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]


def _group_doc(group: str, versions: list[str], request: web.Request) -> dict[str, Any]:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
        "serverAddressByClientCIDRs": _addresses(request),
    }


def _groups(app: web.Application) -> dict[str, list[str]]:
    """Every named group (not the core one) -> its versions."""
    groups: dict[str, list[str]] = {}
    for group_version in resources(app):
        if "/" in group_version:
            group, version = group_version.split("/", 1)
            groups.setdefault(group, []).append(version)
    return groups


async def api_versions(request: web.Request) -> web.Response:
    """APIVersions of the core group (`/api`)."""
    return json_response(
        {
            "kind": "APIVersions",
            "apiVersion": "v1",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": _addresses(request),
        }
    )


async def api_groups(request: web.Request) -> web.Response:
    """APIGroupList of the named groups served (`/apis`)."""
    groups = _groups(request.app)
    return json_response(
        {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_group_doc(g, v, request) for g, v in sorted(groups.items())],
        }
    )


async def api_group(request: web.Request) -> web.Response:
    """APIGroup of one named group."""
    group = request.match_info["group"]
    versions = _groups(request.app).get(group)
    if versions is None:
        raise NotFoundError(f"the server does not serve the API group {group!r}")
    return json_response(_group_doc(group, versions, request))


def _resource_list(request: web.Request, group_version: str) -> web.Response:
    found = resources(request.app).get(group_version)
    if found is None:
        raise NotFoundError(f"the server does not serve the API group-version {group_version!r}")
    return json_response(
        {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": [_resource_doc(res) for res in found],
        }
    )


async def core_resources(request: web.Request) -> web.Response:
    """APIResourceList of the core group (`/api/v1`)."""
    return _resource_list(request, "v1")


async def group_resources(request: web.Request) -> web.Response:
    """APIResourceList of one named group-version."""
    info = request.match_info
    return _resource_list(request, f"{info['group']}/{info['version']}")


@functools.cache  # built once, not per (public) request
def version_info() -> dict[str, str]:
    """Kubernetes' `version.Info`: the API level corral follows, corral's own version
    in the pre-release part, and the Python that runs it where Go's version would be."""
    return {
        "major": str(KUBERNETES_MAJOR),
        "minor": str(KUBERNETES_MINOR),
        "gitVersion": git_version(),
        "gitCommit": "",
        "gitTreeState": "",
        "buildDate": "",
        "goVersion": f"python{platform.python_version()}",
        "compiler": platform.python_implementation().lower(),
        "platform": f"{sys.platform}/{host_arch()}",
    }


async def version(request: web.Request) -> web.Response:
    """The server's version (`kubectl version`), readable without a token."""
    return json_response(version_info())


# Each also with a trailing slash, as kube-apiserver answers both: the official Python
# client asks for `/version/`, `/api/` and `/apis/`.
ROUTES = [
    web.get(path + slash, handler)
    for path, handler in (
        ("/api", api_versions),
        ("/apis", api_groups),
        ("/apis/{group}", api_group),
        (paths.CORE_ROOT, core_resources),
        ("/apis/{group}/{version}", group_resources),
        ("/version", version),
    )
    for slash in ("", "/")
]
